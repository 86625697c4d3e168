"""The train / eval / train_and_eval loops behind main.py, importable and testable.

Life cycle of a run directory (`model_dir`):
* `config.yaml`: the resolved hparams (label map included), written on every run and read back
  as the base config by later runs, eval, export and inference on that directory.
* checkpoints, TensorBoard summaries (losses, learning rate, examples/sec; eval metrics).
* `eval_history.json`: the checkpoint steps already evaluated, so a restarted train_and_eval
  never replays an evaluation.
* `archive/`: the best checkpoint by AP, with `best_eval.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging

import dataloader
import det_model_fn
import hparams_config

tf1 = tf.compat.v1


class UsageError(ValueError):
    """A bad flag combination or input found before training starts."""


USER_ERRORS = (UsageError, hparams_config.HparamsError, det_model_fn.NonFiniteLossError,
               ValueError)


@dataclasses.dataclass
class RunOptions:
    """main.py's flags, as plain values."""

    mode: str = "train"
    model_name: str = "efficientdet-d1"
    model_dir: Optional[str] = None
    hparams: str = ""
    training_file_pattern: Optional[str] = None
    validation_file_pattern: Optional[str] = None
    val_json_file: Optional[str] = None
    testdev_dir: Optional[str] = None
    backbone_ckpt: str = ""
    ckpt: Optional[str] = None
    train_batch_size: int = 64
    eval_batch_size: int = 1
    eval_samples: int = 5000
    num_examples_per_epoch: int = 120000
    num_epochs: Optional[int] = None
    eval_after_training: bool = False
    eval_continuous: bool = False
    min_eval_interval: int = 180
    eval_timeout: Optional[int] = None
    tf_random_seed: Optional[int] = None
    save_checkpoints_steps: Optional[int] = None
    keep_checkpoint_max: int = 5
    use_fake_data: bool = False
    use_xla: bool = False
    strategy: str = "default"
    cpu_replicas: int = 0
    use_tpu: bool = False
    tpu: Optional[str] = None
    gcp_project: Optional[str] = None
    tpu_zone: Optional[str] = None
    eval_master: str = ""
    num_cores: int = 8
    iterations_per_loop: int = 100
    use_spatial_partition: bool = False
    num_cores_per_replica: int = 8
    input_partition_dims: Optional[List[int]] = None

    @classmethod
    def from_flags(cls, flags_obj) -> RunOptions:
        values = {f.name: getattr(flags_obj, f.name) for f in dataclasses.fields(cls)}
        return cls(**values)


# -------------------------------------------------------------------------------------------------
# Checks before anything is built
# -------------------------------------------------------------------------------------------------
def _check_pattern(pattern: Optional[str], flag: str) -> List[str]:
    if not pattern:
        raise UsageError(f"--{flag} is required for this --mode.")
    files = [f for f in sorted(tf.io.gfile.glob(pattern)) if not f.endswith(".json")]
    if not files:
        raise UsageError(f"--{flag}={pattern} matches no TFRecord file; make records with "
                         f"dataset/create_coco_tfrecord.py or create_pascal_tfrecord.py.")
    empty = [f for f in files if tf.io.gfile.stat(f).length == 0]
    if len(empty) == len(files):
        raise UsageError(f"--{flag}={pattern}: every matching file is empty ({empty[0]} ...).")
    return files


def _max_label_in_records(files: List[str], limit: int = 2000) -> int:
    """Largest class label in the first `limit` records (a quick up-front consistency check)."""
    best = 0
    count = 0
    for path in files:
        for raw in tf.data.TFRecordDataset(path).take(limit - count).as_numpy_iterator():
            example = tf.train.Example.FromString(raw)
            labels = example.features.feature["image/object/class/label"].int64_list.value
            if labels:
                best = max(best, max(labels))
            count += 1
        if count >= limit:
            break
    return best


def check_num_classes(config: Any, files: List[str]) -> None:
    """num_classes must cover the label map and the labels found in the records."""
    label_map = _label_map_dict(config)
    if label_map and max(label_map) > config.num_classes:
        raise UsageError(f"the label map has class id {max(label_map)} but num_classes is "
                         f"{config.num_classes}; "
                         f"set num_classes to the number of real classes (ids run "
                         f"1..num_classes).")
    top = _max_label_in_records(files)
    if top > config.num_classes:
        raise UsageError(f"records {files[0]} ... hold class id {top} but num_classes is "
                         f"{config.num_classes}; pass --hparams=num_classes={top} (ids run "
                         f"1..num_classes, no background entry).")


def resolve_config(opts: RunOptions) -> hparams_config.Config:
    config = hparams_config.load_run_config(opts.model_name, opts.hparams, opts.model_dir)
    if opts.num_epochs is not None:
        config.num_epochs = opts.num_epochs
    config.use_tpu = opts.use_tpu
    config.strategy = opts.strategy
    if config.label_map is None:
        config.label_map = "coco" if config.num_classes == 90 else None
    import vfpn

    vfpn.get_fpn_builder(config.fpn_name)  # an unknown name fails here, before any graph
    return config


def write_config(config: hparams_config.Config, model_dir: str) -> str:
    tf.io.gfile.makedirs(model_dir)
    path = hparams_config.default_config_path(model_dir)
    config.save_to_yaml(path)
    return path


# -------------------------------------------------------------------------------------------------
# Estimator
# -------------------------------------------------------------------------------------------------
_STRATEGIES: Dict[str, Any] = {}


def _strategy(opts: RunOptions):
    """The tf.distribute strategy of --strategy (made once per process)."""
    if opts.strategy not in _STRATEGIES:
        _STRATEGIES[opts.strategy] = _make_strategy(opts)
    return _STRATEGIES[opts.strategy]


def _make_strategy(opts: RunOptions):
    if opts.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus])
        cpus = tf.config.list_logical_devices("CPU")[:max(1, opts.cpu_replicas)]
        # The default all-reduce for CPU replicas deadlocks under Estimator in TF 2.15; an
        # explicit reduction to the first device does not.
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in cpus],
            cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0].name))
    if opts.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster and task of each worker).")
        return tf.distribute.experimental.MultiWorkerMirroredStrategy()
    return None


def num_replicas(strategy) -> int:
    return strategy.num_replicas_in_sync if strategy is not None else 1


def build_params(config: hparams_config.Config, opts: RunOptions,
                 replicas: int) -> Dict[str, Any]:
    params = config.as_dict()
    params.update(
        batch_size=opts.train_batch_size, eval_batch_size=opts.eval_batch_size,
        model_dir=opts.model_dir, num_examples_per_epoch=opts.num_examples_per_epoch,
        backbone_ckpt=opts.backbone_ckpt or None, ckpt=opts.ckpt,
        val_json_file=opts.val_json_file, testdev_dir=opts.testdev_dir, num_shards=replicas,
        log_every_n_steps=opts.iterations_per_loop,
        label_map_dict=_label_map_dict(config))
    return params


def _label_map_dict(config) -> Optional[Dict[int, str]]:
    from dataset import label_maps

    if config.label_map is None:
        return None
    return label_maps.get_label_map(config.label_map)


def steps_per_epoch(opts: RunOptions) -> int:
    return max(1, opts.num_examples_per_epoch // opts.train_batch_size)


def build_estimator(config: hparams_config.Config, opts: RunOptions):
    strategy = _strategy(opts)
    replicas = num_replicas(strategy)
    params = build_params(config, opts, replicas)
    # Replicas block in all-reduce while holding an inter-op thread: leave room for all of them.
    session = tf1.ConfigProto(allow_soft_placement=True,
                              inter_op_parallelism_threads=max(2, 2 * replicas)
                              if replicas > 1 else 0)
    if opts.use_xla and not opts.use_tpu:
        session.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    save_steps = opts.save_checkpoints_steps or min(steps_per_epoch(opts), 1000)
    if opts.use_tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            opts.tpu, zone=opts.tpu_zone, project=opts.gcp_project)
        tpu_config = tf1.estimator.tpu.TPUConfig(
            opts.iterations_per_loop,
            num_shards=(opts.num_cores // opts.num_cores_per_replica
                        if opts.use_spatial_partition else opts.num_cores),
            num_cores_per_replica=opts.num_cores_per_replica if opts.use_spatial_partition
            else None,
            input_partition_dims=[opts.input_partition_dims, None]
            if opts.use_spatial_partition else None,
            per_host_input_for_training=tf1.estimator.tpu.InputPipelineConfig.PER_HOST_V2)
        run_config = tf1.estimator.tpu.RunConfig(
            cluster=resolver, evaluation_master=opts.eval_master, model_dir=opts.model_dir,
            tf_random_seed=opts.tf_random_seed, save_checkpoints_steps=save_steps,
            keep_checkpoint_max=opts.keep_checkpoint_max, tpu_config=tpu_config,
            log_step_count_steps=opts.iterations_per_loop)
        params.pop("batch_size")  # TPUEstimator sets the per-shard batch itself
        params["num_shards"] = tpu_config.num_shards  # cross-replica BN groups
        return tf1.estimator.tpu.TPUEstimator(
            model_fn=det_model_fn.model_fn, use_tpu=True, train_batch_size=opts.train_batch_size,
            eval_batch_size=opts.eval_batch_size, config=run_config, params=params)
    run_config = tf.estimator.RunConfig(
        model_dir=opts.model_dir, tf_random_seed=opts.tf_random_seed,
        save_checkpoints_steps=save_steps, keep_checkpoint_max=opts.keep_checkpoint_max,
        log_step_count_steps=min(opts.iterations_per_loop, save_steps),
        save_summary_steps=min(opts.iterations_per_loop, save_steps),
        train_distribute=strategy, session_config=session)
    return tf.estimator.Estimator(model_fn=det_model_fn.model_fn, config=run_config,
                                  params=params)


def _input_fn(pattern: str, training: bool, config, opts: RunOptions, replicas: int):
    # Eval reads --eval_samples images (fewer when the split is smaller), every one of them:
    # the dataloader fills the last batch with blanks that the metric skips.
    reader = dataloader.InputReader(pattern, training, config,
                                    use_fake_data=opts.use_fake_data and training,
                                    max_images=None if training else opts.eval_samples)
    global_batch = opts.train_batch_size if training else opts.eval_batch_size
    per_replica = max(1, global_batch // replicas) if training else global_batch

    def input_fn(params=None, input_context=None):
        # Under a distribution strategy Estimator feeds each replica its own per-replica batch.
        return reader(params, input_context=input_context, batch_size=per_replica)

    return input_fn


# -------------------------------------------------------------------------------------------------
# Evaluation bookkeeping
# -------------------------------------------------------------------------------------------------
def _history_path(model_dir: str) -> str:
    return os.path.join(model_dir, "eval_history.json")


def read_eval_history(model_dir: str) -> Dict[str, Dict[str, float]]:
    path = _history_path(model_dir)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def record_eval(model_dir: str, step: int, metrics: Dict[str, Any]) -> None:
    history = read_eval_history(model_dir)
    history[str(step)] = {k: float(v) for k, v in metrics.items()
                          if isinstance(v, (int, float)) or hasattr(v, "dtype")}
    tmp = _history_path(model_dir) + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(history, f, indent=1, sort_keys=True)
    tf.io.gfile.rename(tmp, _history_path(model_dir), overwrite=True)


def archive_if_best(model_dir: str, ckpt_path: str, metrics: Dict[str, Any],
                    objective: str = "AP") -> bool:
    """Copy `ckpt_path` into model_dir/archive when its `objective` beats the archived one."""
    if objective not in metrics:
        return False
    value = float(metrics[objective])
    archive = os.path.join(model_dir, "archive")
    best_file = os.path.join(archive, "best_eval.json")
    if tf.io.gfile.exists(best_file):
        with tf.io.gfile.GFile(best_file) as f:
            if value <= json.load(f)[objective]:
                return False
    if tf.io.gfile.exists(archive):
        for old in tf.io.gfile.glob(os.path.join(archive, "*")):
            tf.io.gfile.remove(old)
    tf.io.gfile.makedirs(archive)
    for src in tf.io.gfile.glob(ckpt_path + ".*"):
        tf.io.gfile.copy(src, os.path.join(archive, os.path.basename(src)), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(archive, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{os.path.basename(ckpt_path)}"\n')
    with tf.io.gfile.GFile(best_file, "w") as f:
        json.dump({objective: value, "checkpoint": os.path.basename(ckpt_path),
                   "metrics": {k: float(v) for k, v in metrics.items()
                               if isinstance(v, (int, float)) or hasattr(v, "dtype")}}, f,
                  indent=1)
    logging.warning("New best %s %.4f: archived %s", objective, value, ckpt_path)
    return True


def evaluate_checkpoint(estimator, eval_input_fn, opts: RunOptions,
                        ckpt_path: str) -> Dict[str, Any]:
    steps = -(-opts.eval_samples // opts.eval_batch_size)  # the last batch may hold blanks
    metrics = estimator.evaluate(eval_input_fn, steps=steps, checkpoint_path=ckpt_path)
    step = int(metrics.get("global_step", 0))
    shown = ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items())
                      if k in ("AP", "AP50", "AP75", "loss"))
    print(f"eval at step {step}: {shown}", flush=True)
    record_eval(opts.model_dir, step, metrics)
    archive_if_best(opts.model_dir, ckpt_path, metrics)
    return metrics


# -------------------------------------------------------------------------------------------------
# Modes
# -------------------------------------------------------------------------------------------------
def run(opts: RunOptions) -> Optional[Dict[str, Any]]:
    """Run `opts.mode`; returns the last eval metrics, if any."""
    if opts.tpu:
        opts.use_tpu = True
    if opts.strategy == "multi_worker":
        # Collective ops must be configured before TensorFlow runs anything (the checks below
        # read records), so the strategy is made first.
        _strategy(opts)
    if not opts.model_dir:
        raise UsageError("--model_dir is required (checkpoints, summaries and config.yaml).")
    if opts.ckpt and opts.backbone_ckpt:
        raise UsageError("--backbone_ckpt and --ckpt cannot be used together: --backbone_ckpt "
                         "starts from a classifier, --ckpt from a detector.")
    if opts.train_batch_size < 1 or opts.eval_batch_size < 1:
        raise UsageError("--train_batch_size and --eval_batch_size must be >= 1.")
    if opts.eval_samples < 1:
        raise UsageError(f"--eval_samples must be >= 1, got {opts.eval_samples} (it is the "
                         "number of validation images per evaluation).")
    train_files = eval_files = None
    if opts.mode in ("train", "train_and_eval"):
        train_files = _check_pattern(opts.training_file_pattern, "training_file_pattern")
    if opts.mode in ("eval", "train_and_eval") or opts.eval_after_training:
        eval_files = _check_pattern(opts.validation_file_pattern, "validation_file_pattern")
    if opts.val_json_file and not tf.io.gfile.exists(opts.val_json_file):
        raise UsageError(f"--val_json_file={opts.val_json_file} does not exist.")

    config = resolve_config(opts)
    check_num_classes(config, train_files or eval_files)
    write_config(config, opts.model_dir)

    eval_config = hparams_config.Config(config.as_dict())
    eval_config.is_training_bn = False
    eval_config.input_rand_hflip = False
    estimator = build_estimator(config, opts)
    replicas = num_replicas(estimator.config.train_distribute) if not opts.use_tpu else 1
    total_steps = opts.num_examples_per_epoch * config.num_epochs // opts.train_batch_size
    per_epoch = steps_per_epoch(opts)
    last = None

    if opts.mode == "train":
        train_fn = _input_fn(opts.training_file_pattern, True, config, opts, replicas)
        if opts.strategy == "multi_worker":
            # Estimator runs multi-worker training only through train_and_evaluate, which
            # starts each worker's part from TF_CONFIG; the chief writes the checkpoints.
            tf.estimator.train_and_evaluate(
                estimator, tf.estimator.TrainSpec(train_fn, max_steps=total_steps),
                tf.estimator.EvalSpec(_input_fn(opts.training_file_pattern, False,
                                                eval_config, opts, 1), steps=None,
                                      start_delay_secs=10 ** 9, throttle_secs=10 ** 9))
        else:
            estimator.train(train_fn, max_steps=total_steps)
        if opts.eval_after_training:
            eval_fn = _input_fn(opts.validation_file_pattern, False, eval_config, opts, 1)
            last = evaluate_checkpoint(estimator, eval_fn, opts,
                                       tf.train.latest_checkpoint(opts.model_dir))
    elif opts.mode == "eval":
        eval_fn = _input_fn(opts.validation_file_pattern, False, eval_config, opts, 1)
        if not opts.eval_continuous:
            ckpt = tf.train.latest_checkpoint(opts.model_dir)
            if not ckpt:
                raise UsageError(f"--model_dir={opts.model_dir} holds no checkpoint to "
                                 f"evaluate; train first, or pass --eval_continuous to wait "
                                 f"for one.")
            last = evaluate_checkpoint(estimator, eval_fn, opts, ckpt)
        else:
            logging.warning("Waiting for new checkpoints in %s (every %ds%s).", opts.model_dir,
                            opts.min_eval_interval,
                            f", timeout {opts.eval_timeout}s" if opts.eval_timeout else "")
            for ckpt in tf.train.checkpoints_iterator(opts.model_dir, opts.min_eval_interval,
                                                      timeout=opts.eval_timeout):
                last = evaluate_checkpoint(estimator, eval_fn, opts, ckpt)
                step = int(os.path.basename(ckpt).split("-")[-1])
                if step >= total_steps:
                    break
                logging.warning("Waiting for the next checkpoint in %s.", opts.model_dir)
    else:  # train_and_eval
        train_fn = _input_fn(opts.training_file_pattern, True, config, opts, replicas)
        eval_fn = _input_fn(opts.validation_file_pattern, False, eval_config, opts, 1)
        history = read_eval_history(opts.model_dir)
        num_epochs = max(1, total_steps // per_epoch)
        for epoch in range(1, num_epochs + 1):
            end = total_steps if epoch == num_epochs else epoch * per_epoch
            if str(end) in history:
                continue  # evaluated before a restart: never replayed
            start = time.time()
            estimator.train(train_fn, max_steps=end)
            logging.warning("epoch %d/%d trained to step %d in %.0fs", epoch, num_epochs, end,
                            time.time() - start)
            last = evaluate_checkpoint(estimator, eval_fn, opts,
                                       tf.train.latest_checkpoint(opts.model_dir))
    return last


def list_checkpoint_steps(model_dir: str) -> List[int]:
    state = tf.train.get_checkpoint_state(model_dir)
    if not state:
        return []
    return sorted(int(p.split("-")[-1]) for p in state.all_model_checkpoint_paths)


def short_tf_error(error: tf.errors.OpError) -> str:
    """One line from a TensorFlow runtime error: our own message when we raised it."""
    import coco_metric

    ours = coco_metric.metric_error_message(error)
    if ours:
        return ours
    nonfinite = det_model_fn.parse_nonfinite(error.message or "")
    if nonfinite:
        return str(nonfinite)
    message = (error.message or str(error)).strip()
    # Graph errors append op context ("\n\t [[node ...]]"); the first line carries the cause.
    return message.split("\n")[0].strip()

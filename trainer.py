"""The train / eval / train_and_eval runs behind main.py, importable and testable in-process.

`run(RunOptions(...))` checks the options, resolves the config (the model directory's own
`config.yaml` when it has one), checks the records and checkpoints against it, and only then
creates or writes anything, through the table `MODES = {mode: function}`. A training run that
fails before its first step completes removes what it created; a read-only model directory is
evaluated without recording anything. What a model directory holds and who may write what there
is `run_dir.py`'s contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import tensorflow as tf
from absl import logging

import bn_calibration
import checkpoint_io
import cluster
import coco_json
import coco_metric
import dataloader
import det_model_fn
import errors
import evaluator
import outputs
import record_checks
import record_files
import run_dir
import run_options
import sessions
import train_hooks
from hparams_config import Config
from run_options import RunOptions

tf1 = tf.compat.v1


@dataclasses.dataclass
class Prepared:
    """A checked run: options, configs, record files and what it will evaluate."""

    opts: RunOptions
    config: Config
    eval_config: Config
    run: det_model_fn.RunContext
    train_files: Optional[List[str]]
    eval_files: Optional[List[str]]
    eval_set: Optional[run_dir.EvalSet]
    total_steps: int
    task: Optional[cluster.Task] = None  # this process's place in a multi-worker cluster
    # Eval of a model directory this process cannot write: nothing is recorded there, and the
    # Estimator's own files go into `scratch_dir`, removed at the end of the run.
    read_only: bool = False
    scratch_dir: Optional[str] = None
    summary_writer: Any = None  # one per run, made by the first training call
    evaluator: Any = None  # evaluator.Evaluator, built by the run's first evaluation
    recalibrator: Any = None  # bn_calibration.Recalibrator, built by its first recalibration
    progress_hook: Any = None  # the training call's train_hooks.ProgressHook

    @property
    def writes_model_dir(self) -> bool:
        """Whether this process writes the model directory: always on one machine; only the
        chief of a multi-worker cluster (the other tasks train and write nothing there)."""
        return self.task is None or self.task.is_chief


# -------------------------------------------------------------------------------------------------
# Checks before anything is read or written
# -------------------------------------------------------------------------------------------------
def check_outputs(opts: RunOptions) -> None:
    """The one file main.py writes outside --model_dir, the test-dev results json, follows
    outputs.py's policy: an existing one is replaced only with --overwrite. No I/O but stats."""
    if not opts.testdev_dir:
        return
    path = os.path.join(opts.testdev_dir, coco_metric.TESTDEV_RESULTS_FILENAME)
    inputs = [("val_json_file", opts.val_json_file)] if opts.val_json_file else []
    outputs.check_plan([outputs.Planned("testdev_dir", opts.testdev_dir, (path,),
                                        directory=True)], inputs, opts.overwrite)


def check_start_checkpoint(config: Config, opts: RunOptions) -> None:
    """--ckpt / --backbone_ckpt must exist, be whole and hold this model's backbone; --ckpt
    also its feature network and heads (the class and box outputs may differ when
    skip_mismatch starts them afresh). Cheap: shapes only; model_fn checks every variable
    when it builds the graph."""
    flag, path = (("ckpt", opts.ckpt) if opts.ckpt else ("backbone_ckpt", opts.backbone_ckpt))
    if not path:
        return
    prefix = checkpoint_io.resolve_checkpoint(path, flag)
    scope = (config.backbone_name if flag == "ckpt"
             else config.ckpt_var_scope or config.backbone_name) + "/"
    names = [name for name, _ in tf.train.list_variables(prefix)]
    if not any(name.startswith(scope) for name in names):
        found = sorted({name.split("/")[0] for name in names if "/" in name})[:4]
        raise errors.CheckpointError(
            f"--{flag}={path}: the checkpoint holds no '{scope}' variables (it has "
            f"{', '.join(found) or 'none'}), so it does not fit this model ({config.name}, "
            f"backbone {config.backbone_name}). Use the --model_name of the run that wrote it.")
    if flag == "ckpt":
        checkpoint_io.check_detector_fits(prefix, config, f"--ckpt={path}",
                                          new_head=config.skip_mismatch)


def check_model_dir_checkpoint(config: Config, opts: RunOptions) -> None:
    """The model directory's latest checkpoint (resumed or evaluated), if any, must be whole,
    be a training checkpoint (the Estimator restores its global_step) and be the model
    `config` builds; else one line says what it holds."""
    if not tf.io.gfile.isdir(opts.model_dir) or not tf.train.latest_checkpoint(opts.model_dir):
        return
    flag = f"--model_dir={opts.model_dir}"
    prefix = checkpoint_io.resolve_checkpoint(opts.model_dir, f"model_dir={opts.model_dir}")
    checkpoint_io.check_detector_fits(prefix, config, flag)  # the model first: it says more
    if "global_step" not in checkpoint_io.read_shapes(prefix):
        raise errors.CheckpointError(
            f"{flag}: checkpoint '{prefix}' has no global_step: it was not written by training "
            f"(e.g. model_inspect.py --export_ckpt); run it with model_inspect.py "
            f"--ckpt_path, or train from it into a new --model_dir with --ckpt")


def prepare(opts: RunOptions) -> Prepared:
    """Everything a mode needs, checked, before anything is created or written."""
    training = opts.mode in ("train", "train_and_eval")
    problem = run_dir.directory_problem(opts.model_dir, training)  # --testdev_dir: outputs
    if problem:
        raise errors.UsageError(f"--model_dir={opts.model_dir} {problem}; choose another "
                                f"directory")
    exists = tf.io.gfile.isdir(opts.model_dir)
    if not training and not exists and not opts.eval_continuous:
        raise errors.UsageError(f"--model_dir={opts.model_dir} does not exist; train into it "
                                f"first (only training creates a model directory).")
    train_files = eval_files = None
    if training:
        train_files = record_files.list_record_files(opts.training_file_pattern,
                                                     "--training_file_pattern")
    if opts.mode != "train" or opts.eval_after_training:
        eval_files = record_files.list_record_files(opts.validation_file_pattern,
                                                    "--validation_file_pattern")
    problem = opts.val_json_file and coco_json.gt_json_problem(opts.val_json_file)
    if problem:
        raise errors.UsageError(f"--val_json_file={opts.val_json_file} {problem}.")

    config = run_dir.load_run_config(opts.model_name, opts.hparams, opts.model_dir,
                                     training=training)
    if opts.num_epochs is not None:
        config.num_epochs = opts.num_epochs
    record_checks.check_records_and_label_map(config, opts, train_files or eval_files)
    if train_files:
        record_checks.check_training_records(config, opts, train_files)
    if eval_files:
        record_checks.check_eval_records(config, opts, eval_files)
    if training:
        check_start_checkpoint(config, opts)
        _check_batch_split(opts)
    check_model_dir_checkpoint(config, opts)
    run = _run_context(opts)
    total_steps = det_model_fn.schedule_steps(config, run).total_steps
    if training and total_steps < 1:
        raise errors.UsageError(
            f"--num_examples_per_epoch={opts.num_examples_per_epoch} x num_epochs="
            f"{config.num_epochs} is less than one batch of --train_batch_size="
            f"{opts.train_batch_size}: no training step would run.")
    eval_config = Config(config.as_dict())
    eval_config.is_training_bn = False
    eval_config.input_rand_hflip = False
    eval_set = (run_dir.EvalSet.describe(eval_files, opts.val_json_file, opts.eval_samples)
                if eval_files else None)
    return Prepared(opts, config, eval_config, run, train_files, eval_files, eval_set,
                    total_steps,
                    read_only=exists and not training and not run_dir.is_writable(opts.model_dir))


def _check_batch_split(opts: RunOptions) -> None:
    """--train_batch_size is the global batch: it must split evenly over the replicas of a
    distribution strategy (else the batch trained and the learning rate's scaling disagree)."""
    if opts.strategy == "default" or opts.use_tpu or opts.tpu:
        return
    replicas = num_replicas(_strategy(opts))
    if opts.train_batch_size % replicas:
        raise errors.UsageError(
            f"--train_batch_size={opts.train_batch_size} does not split over the {replicas} "
            f"replicas of --strategy={opts.strategy}; give a multiple of {replicas} (it is the "
            f"global batch).")


def _run_context(opts: RunOptions) -> det_model_fn.RunContext:
    use_tpu = bool(opts.use_tpu or opts.tpu)
    shards = 1
    if use_tpu:
        shards = (opts.num_cores // opts.num_cores_per_replica if opts.use_spatial_partition
                  else opts.num_cores)
    return det_model_fn.RunContext(
        model_dir=opts.model_dir, train_batch_size=opts.train_batch_size,
        eval_batch_size=opts.eval_batch_size, num_examples_per_epoch=opts.num_examples_per_epoch,
        backbone_ckpt=opts.backbone_ckpt or None, ckpt=opts.ckpt,
        val_json_file=opts.val_json_file, testdev_dir=opts.testdev_dir, num_shards=shards,
        use_tpu=use_tpu, log_every_n_steps=opts.log_every_n_steps,
        log_every_secs=opts.log_every_secs)


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
        # Starts this task's server on its TF_CONFIG address (run checks the address first).
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def num_replicas(strategy) -> int:
    return strategy.num_replicas_in_sync if strategy is not None else 1


def save_interval(p: Prepared) -> int:
    """Steps between checkpoints: --save_checkpoints_steps, else an epoch's steps (at most
    1000)."""
    return p.opts.save_checkpoints_steps or min(det_model_fn.steps_per_epoch(p.run), 1000)


def session_config(opts: RunOptions, replicas: int = 1) -> tf1.ConfigProto:
    """The ConfigProto of the run's sessions (training, and evaluation with replicas=1)."""
    # Replicas block in all-reduce while holding an inter-op thread: leave room for all of them.
    return sessions.session_config(jit_level=1 if opts.use_xla else 0, soft_placement=True,
                                   inter_op_threads=max(2, 2 * replicas) if replicas > 1 else 0)


def build_estimator(p: Prepared):
    """The Estimator of the run; it writes into --model_dir, or for a read-only eval into a
    scratch directory (its eval summaries), since it reads the checkpoint by path."""
    opts, run = p.opts, p.run
    model_dir = opts.model_dir
    if p.read_only:
        p.scratch_dir = model_dir = tempfile.mkdtemp(prefix="vfpn-eval-")
    strategy = _strategy(opts) if not run.use_tpu else None
    replicas = num_replicas(strategy)
    model_fn = det_model_fn.make_model_fn(p.config, run)
    save_steps = save_interval(p)
    if run.use_tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            opts.tpu, zone=opts.tpu_zone, project=opts.gcp_project)
        tpu_config = tf1.estimator.tpu.TPUConfig(
            opts.iterations_per_loop, num_shards=run.num_shards,
            num_cores_per_replica=opts.num_cores_per_replica if opts.use_spatial_partition
            else None,
            input_partition_dims=[opts.input_partition_dims, None]
            if opts.use_spatial_partition else None,
            per_host_input_for_training=tf1.estimator.tpu.InputPipelineConfig.PER_HOST_V2)
        run_config = tf1.estimator.tpu.RunConfig(
            cluster=resolver, evaluation_master=opts.eval_master, model_dir=opts.model_dir,
            tf_random_seed=opts.tf_random_seed, save_checkpoints_steps=save_steps,
            keep_checkpoint_max=opts.keep_checkpoint_max, tpu_config=tpu_config,
            log_step_count_steps=opts.iterations_per_loop, checkpoint_save_graph_def=False)
        return tf1.estimator.tpu.TPUEstimator(
            model_fn=model_fn, use_tpu=True, train_batch_size=opts.train_batch_size,
            eval_batch_size=opts.eval_batch_size, config=run_config)
    session = session_config(opts, replicas)
    # Summaries and checkpoints are written by the hooks of _hooks(): the graph (tens of MB
    # for d0) goes into the events file once per model directory, not into graph.pbtxt, a
    # .meta file per checkpoint and the events file once per epoch.
    run_config = tf.estimator.RunConfig(
        model_dir=model_dir, tf_random_seed=opts.tf_random_seed,
        save_checkpoints_steps=save_steps, keep_checkpoint_max=opts.keep_checkpoint_max,
        log_step_count_steps=None, save_summary_steps=None, train_distribute=strategy,
        session_config=session, checkpoint_save_graph_def=False)
    return tf.estimator.Estimator(model_fn=model_fn, config=run_config, params={})


def _data_seed(opts: RunOptions, start_step: int) -> Optional[int]:
    """The input pipeline's seed: from --tf_random_seed and the step training resumes at.

    The graph-level seed alone does not fix the order (the pipeline runs non-deterministic
    parallel maps); and one fixed seed would replay the same order and augmentation in every
    epoch of train_and_eval, which builds the pipeline anew for each.
    """
    if opts.tf_random_seed is None:
        return None
    return (opts.tf_random_seed * 1_000_003 + start_step) % (2 ** 31 - 1)


def _current_step(model_dir: str) -> int:
    step = checkpoint_io.latest_step(model_dir)
    return 0 if step is None else step


def _input_fn(p: Prepared, training: bool, seed: Optional[int] = None):
    opts = p.opts
    config = p.config if training else p.eval_config
    files = p.train_files if training else p.eval_files
    # Eval reads --eval_samples images (fewer when the split is smaller), every one of them:
    # the dataloader fills the last batch with blanks that the metric skips.
    reader = dataloader.InputReader(files, training, config,
                                    use_fake_data=opts.use_fake_data and training,
                                    max_images=None if training else opts.eval_samples,
                                    seed=seed)
    replicas = num_replicas(_strategy(opts)) if training and not p.run.use_tpu else 1
    global_batch = opts.train_batch_size if training else opts.eval_batch_size
    per_replica = max(1, global_batch // replicas) if training else global_batch

    def input_fn(params=None, input_context=None):
        # Under a distribution strategy Estimator feeds each replica its own per-replica batch.
        return reader(params, input_context=input_context, batch_size=per_replica)

    return input_fn


class _GraphOnceHook(tf1.train.SessionRunHook):
    """Adds the training graph to the events file when it is the directory's first."""

    def __init__(self, writer):
        self._writer = writer

    def after_create_session(self, session, coord):
        self._writer.add_graph(session.graph)
        self._writer.flush()


def _hooks(p: Prepared, evaluations: Optional[_EpochEvaluations] = None
           ) -> List[tf1.train.SessionRunHook]:
    """Progress lines, summaries and checkpoints through one graph-less writer (see
    train_hooks): the events file grows by scalars, not by a graph per epoch. With
    `evaluations`, a checkpoint is also saved at each of its steps and evaluated there."""
    opts = p.opts
    hooks: List[tf1.train.SessionRunHook] = []
    if p.summary_writer is None and p.writes_model_dir:
        first = not tf.io.gfile.glob(os.path.join(opts.model_dir, "events.out.tfevents.*"))
        with tf.Graph().as_default():  # the writer is graph-free; this only passes its check
            p.summary_writer = tf1.summary.FileWriter(opts.model_dir)
        if first:
            hooks.append(_GraphOnceHook(p.summary_writer))
    p.progress_hook = train_hooks.ProgressHook(
        opts.train_batch_size, p.total_steps, opts.log_every_n_steps, opts.log_every_secs,
        p.summary_writer, p.run.progress,
        eta_extra=evaluations.seconds_after if evaluations else None)
    hooks.append(p.progress_hook)
    if p.writes_model_dir:
        hooks.append(train_hooks.QuietCheckpointSaverHook(
            opts.model_dir, save_interval(p), p.summary_writer,
            also_at=evaluations.steps if evaluations else (),
            listeners=[evaluations] if evaluations else None))
    return hooks


def _train(p: Prepared, estimator, max_steps: int,
           evaluations: Optional[_EpochEvaluations] = None) -> float:
    """Train to `max_steps` with progress lines (and `evaluations` on the way); returns the
    seconds it took, evaluations excluded."""
    start = time.time()
    hooks = _hooks(p, evaluations)
    train_fn = _input_fn(p, True, _data_seed(p.opts, _current_step(p.opts.model_dir)))
    with tf_errors(p):
        if p.opts.strategy == "multi_worker":
            # Estimator runs multi-worker training only through train_and_evaluate, which
            # starts each task's part from TF_CONFIG. The checkpoints come from our saver hook
            # on the chief: the Estimator adds its own only when summaries are saved too.
            tf.estimator.train_and_evaluate(
                estimator, tf.estimator.TrainSpec(train_fn, max_steps=max_steps, hooks=hooks),
                tf.estimator.EvalSpec(_input_fn(p, True), steps=None,
                                      start_delay_secs=10 ** 9, throttle_secs=10 ** 9))
        else:
            estimator.train(train_fn, max_steps=max_steps, hooks=hooks)
    if p.summary_writer is not None:
        p.summary_writer.flush()
    return time.time() - start - (evaluations.seconds if evaluations else 0.0)


# -------------------------------------------------------------------------------------------------
# TensorFlow errors we can attribute to the user's input
# -------------------------------------------------------------------------------------------------
def attribute_tf_error(error: tf.errors.OpError, p: Prepared) -> Optional[errors.UserError]:
    """The user error behind a TensorFlow runtime error, or None when it is not one we know: a
    check in the graph (errors.from_tf_error), a corrupted record file, memory."""
    marked = errors.from_tf_error(error)
    if marked is not None:
        return marked
    if isinstance(error, tf.errors.DataLossError):
        files = (p.train_files or []) + (p.eval_files or [])
        broken = record_files.find_broken_record_file(files)
        where = f"{broken[0]}: {broken[1]}" if broken else ", ".join(files[:3])
        return errors.DataError(f"a TFRecord file is corrupted or truncated ({where}); "
                                f"re-create it with the dataset converters.")
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return errors.TrainingError(
            f"out of memory ({errors.first_line(error.message)}); lower --train_batch_size or "
            f"--eval_batch_size, the image_size hparam, or use precision=mixed_float16 on a GPU.")
    return None


@contextlib.contextmanager
def tf_errors(p: Prepared):
    """Turn attributable TensorFlow errors into user errors (the original stays the cause)."""
    try:
        yield
    except tf.errors.OpError as e:
        user = attribute_tf_error(e, p)
        if user is None:
            raise
        raise user from e


# -------------------------------------------------------------------------------------------------
# Modes
# -------------------------------------------------------------------------------------------------
def evaluate_checkpoint(p: Prepared, estimator, ckpt_path: str,
                        claim_archive: bool = False) -> Dict[str, Any]:
    """Evaluate one checkpoint on the validation set; record it, archive it if best."""
    opts = p.opts
    steps = -(-opts.eval_samples // opts.eval_batch_size)  # the last batch may hold blanks
    with tf_errors(p):
        if p.run.use_tpu:
            metrics = estimator.evaluate(_input_fn(p, False), steps=steps,
                                         checkpoint_path=ckpt_path)
        else:
            metrics = _evaluator(p).evaluate(ckpt_path)
    step = int(metrics.get("global_step", 0))
    shown = ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items())
                      if k in ("AP", "AP50", "AP75", "loss"))
    print(f"eval at step {step}: {shown}", flush=True)
    if opts.testdev_dir or p.read_only:
        return metrics  # test-dev has no ground truth; a read-only directory takes nothing
    run_dir.record_eval(opts.model_dir, p.eval_set, step, metrics, claim_archive)
    run_dir.archive_if_best(opts.model_dir, p.eval_set, ckpt_path, metrics)
    return metrics


def _evaluator(p: Prepared) -> evaluator.Evaluator:
    """The run's evaluation graph and session (built by its first evaluation, then reused)."""
    if p.evaluator is None:
        p.evaluator = evaluator.Evaluator(
            det_model_fn.make_model_fn(p.config, p.run), _input_fn(p, False),
            steps=-(-p.opts.eval_samples // p.opts.eval_batch_size),  # last batch: blanks
            session_config=session_config(p.opts),
            summary_dir=None if p.read_only else evaluator.summary_dir(p.opts.model_dir))
    return p.evaluator


class _EpochEvaluations(tf1.train.CheckpointSaverListener):
    """train_and_eval's evaluations inside one training call: after the checkpoint of each of
    `steps` is saved, recalibrate it (if configured), evaluate, record and archive it, while
    the training session waits. `seconds` is the time they took; `seconds_after(step)`
    estimates what the evaluations after `step` will take (for the ETA)."""

    def __init__(self, p: Prepared, steps: Sequence[int]):
        self._p = p
        self._ends = _epoch_ends(p)
        self.steps = sorted(steps)
        self.seconds = 0.0
        self.count = 0
        self.last: Optional[Dict[str, Any]] = None

    def after_save(self, session, global_step_value):
        step = int(global_step_value)
        if step not in self.steps:
            return
        start = time.time()
        ckpt = os.path.join(self._p.opts.model_dir, f"model.ckpt-{step}")
        _recalibrate(self._p, ckpt)
        logging.info("epoch %d/%d: trained to step %d", self._ends.index(step) + 1,
                     len(self._ends), step)
        self.last = evaluate_checkpoint(self._p, None, ckpt, claim_archive=True)
        took = time.time() - start
        self.seconds += took
        self.count += 1
        if self._p.progress_hook is not None:
            self._p.progress_hook.exclude(took)

    def seconds_after(self, step: int) -> float:
        remaining = sum(s > step for s in self.steps)
        # Before the first evaluation: assume one costs what it will (unknown), i.e. nothing.
        return remaining * self.seconds / self.count if self.count else 0.0


def _start(p: Prepared) -> Any:
    """Create/record what this run owns in model_dir (the chief alone, in a multi-worker
    cluster); then build the estimator."""
    opts = p.opts
    if not p.writes_model_dir:
        logging.info("%s of %d tasks: training; the chief writes %s", p.task.name,
                     len(p.task.addresses), opts.model_dir)
        return build_estimator(p)
    if opts.mode in ("train", "train_and_eval"):
        if run_dir.create_for_training(opts.model_dir, p.config):
            logging.info("wrote %s", run_dir.config_path(opts.model_dir))
    if not p.read_only:
        options = {k: v for k, v in dataclasses.asdict(opts).items() if v not in (None, "")}
        options.update(cluster.describe(p.task))
        run_dir.write_run_record(opts.model_dir, opts.mode, options, p.config)
    return build_estimator(p)


def _wait_for_checkpoint(p: Prepared, step: int, timeout: float = 3600.0) -> None:
    """A multi-worker task other than the chief waits for the chief's checkpoint of `step`
    before training on: every task must restore the same weights (nothing syncs them)."""
    deadline = time.time() + timeout
    while _current_step(p.opts.model_dir) < step:
        if time.time() > deadline:
            raise errors.TrainingError(
                f"{p.task.name}: the chief's checkpoint of step {step} did not appear in "
                f"{p.opts.model_dir} within {timeout:.0f} s; is the chief still running?")
        time.sleep(1.0)


def _recalibrate(p: Prepared, ckpt: str) -> None:
    """With `bn_recalibration_images` > 0, recompute the moving batch-norm statistics of
    checkpoint `ckpt` from that many training images (bn_calibration.py) before it is
    evaluated. Recalibrating twice gives the same statistics (training-mode batch norm does not
    read them), so a resumed run may recalibrate a checkpoint again."""
    num_images = p.config.bn_recalibration_images
    if not num_images or p.opts.strategy == "multi_worker":
        return  # off, or another worker may still read the checkpoint
    start = time.time()
    with tf_errors(p):
        if p.recalibrator is None:
            p.recalibrator = bn_calibration.Recalibrator(p.config, p.train_files, num_images)
        layers = p.recalibrator.recalibrate(ckpt)
    logging.info("recalibrated the batch-norm statistics of %s (%d layers, %d training "
                 "images) in %.1f s", os.path.basename(ckpt), layers,
                 p.recalibrator.num_images, time.time() - start)


def _closing_train_line(p: Prepared, seconds: float) -> None:
    state = p.run.progress
    loss = state.values.get("loss")
    print(f"trained to step {state.last_step} in {seconds:.0f} s"
          + (f", last loss {loss:.4f}" if loss is not None else ""), flush=True)


def run_train(p: Prepared) -> Optional[Dict[str, Any]]:
    estimator = _start(p)
    seconds = _train(p, estimator, p.total_steps)
    if p.run.progress.last_step is not None and p.writes_model_dir:
        _recalibrate(p, tf.train.latest_checkpoint(p.opts.model_dir))
    if p.run.progress.last_step is None:
        print(f"nothing to train: {p.opts.model_dir} is already at step {p.total_steps}",
              flush=True)
    else:
        _closing_train_line(p, seconds)
    if not p.opts.eval_after_training or not p.writes_model_dir:
        return None
    return evaluate_checkpoint(p, estimator, tf.train.latest_checkpoint(p.opts.model_dir),
                               claim_archive=True)


def run_eval(p: Prepared) -> Optional[Dict[str, Any]]:
    metrics = _run_eval(p)
    if p.read_only:
        logging.warning("--model_dir=%s is read-only: nothing was recorded there (no run "
                        "record, eval_history.json entry or archive).", p.opts.model_dir)
    return metrics


def _run_eval(p: Prepared) -> Optional[Dict[str, Any]]:
    opts = p.opts
    if not opts.eval_continuous:
        ckpt = tf.train.latest_checkpoint(opts.model_dir)
        if not ckpt:
            raise errors.UsageError(f"--model_dir={opts.model_dir} holds no checkpoint to "
                                    f"evaluate; train first, or pass --eval_continuous to wait "
                                    f"for one.")
        return evaluate_checkpoint(p, _start(p), ckpt)
    logging.info("Waiting for new checkpoints in %s (every %ds%s).", opts.model_dir,
                 opts.min_eval_interval,
                 f", timeout {opts.eval_timeout}s" if opts.eval_timeout else "")
    estimator, last = None, None
    for ckpt in tf.train.checkpoints_iterator(opts.model_dir, opts.min_eval_interval,
                                              timeout=opts.eval_timeout):
        estimator = estimator or _start(p)  # model_dir exists now: training made it
        last = evaluate_checkpoint(p, estimator, ckpt)
        if checkpoint_io.step_of(ckpt) >= p.total_steps:
            break
        logging.info("Waiting for the next checkpoint in %s.", opts.model_dir)
    return last


def _epoch_ends(p: Prepared) -> List[int]:
    """The steps at which train_and_eval evaluates: every epoch's last, the run's last."""
    per_epoch = det_model_fn.steps_per_epoch(p.run)
    num_epochs = max(1, p.total_steps // per_epoch)
    return [epoch * per_epoch for epoch in range(1, num_epochs)] + [p.total_steps]


def run_train_and_eval(p: Prepared) -> Optional[Dict[str, Any]]:
    """Train to the last step in one training call, evaluating each epoch's checkpoint as it
    is saved, with one evaluation graph and session (`_EpochEvaluations`).

    The order of one run: [evaluate the checkpoint a killed run left unevaluated] -> train;
    at each epoch end: save -> recalibrate BN -> evaluate -> record -> archive if best -> go
    on; after the last: the closing line and the best AP. Multi-worker and TPU runs keep one
    training call per epoch (`_train_and_eval_per_epoch`).
    """
    if p.task is not None or p.run.use_tpu:
        return _train_and_eval_per_epoch(p)
    opts = p.opts
    estimator = _start(p)
    done = set(run_dir.evaluated_steps(opts.model_dir, p.eval_set))
    pending = [end for end in _epoch_ends(p) if end not in done]  # never replayed
    latest = _current_step(opts.model_dir)
    evaluations = _EpochEvaluations(p, [end for end in pending if end > latest])
    last = None
    if latest in pending:  # saved at an epoch end, then killed before it was evaluated
        ckpt = tf.train.latest_checkpoint(opts.model_dir)
        _recalibrate(p, ckpt)
        last = evaluate_checkpoint(p, estimator, ckpt, claim_archive=True)
    trained = _train(p, estimator, p.total_steps, evaluations) if evaluations.steps else 0.0
    return _close_train_and_eval(p, evaluations.last or last, trained)


def _train_and_eval_per_epoch(p: Prepared) -> Optional[Dict[str, Any]]:
    """train_and_eval as one training call per epoch, each followed by an evaluation (on the
    chief of a multi-worker cluster)."""
    opts = p.opts
    estimator = _start(p)
    done = set(run_dir.evaluated_steps(opts.model_dir, p.eval_set))
    ends = _epoch_ends(p)
    last, trained = None, 0.0
    for epoch, end in enumerate(ends, 1):
        if end in done:
            continue  # evaluated before a restart: never replayed
        if not p.writes_model_dir and epoch > 1:
            _wait_for_checkpoint(p, ends[epoch - 2])
        trained += _train(p, estimator, end)
        logging.info("epoch %d/%d: trained to step %d", epoch, len(ends), end)
        if not p.writes_model_dir:
            continue  # the chief evaluates and records
        ckpt = tf.train.latest_checkpoint(opts.model_dir)
        _recalibrate(p, ckpt)
        last = evaluate_checkpoint(p, estimator, ckpt, claim_archive=True)
    return _close_train_and_eval(p, last, trained)


def _close_train_and_eval(p: Prepared, last: Optional[Dict[str, Any]],
                          trained: float) -> Optional[Dict[str, Any]]:
    """The closing lines of train_and_eval: steps trained, then the best AP and its archive."""
    opts = p.opts
    if p.run.progress.last_step is not None:
        _closing_train_line(p, trained)
    best = run_dir.best_on(opts.model_dir, p.eval_set) if p.writes_model_dir else None
    if best:
        archived = run_dir.read_history(opts.model_dir).get("archive_set") == p.eval_set.key
        where = (f"archived in {os.path.join(opts.model_dir, run_dir.ARCHIVE_DIR)}" if archived
                 else "not archived: archive/ belongs to another validation set")
        print(f"best AP {best['AP']:.4f} at step {best['step']} on validation set "
              f"{p.eval_set.key}; {where}", flush=True)
    return last


MODES: Dict[str, Callable[[Prepared], Optional[Dict[str, Any]]]] = {
    "train": run_train,
    "eval": run_eval,
    "train_and_eval": run_train_and_eval,
}


def run(opts: RunOptions) -> Optional[Dict[str, Any]]:
    """Run `opts.mode`; returns the last eval metrics, if any."""
    if opts.mode not in MODES:
        raise errors.UsageError(f"unknown --mode={opts.mode}; valid: {', '.join(MODES)}.")
    run_options.check_options(opts)
    check_outputs(opts)
    task = None
    if opts.strategy == "multi_worker":
        task = cluster.read_task()
        cluster.check_port_free(task)
        # Collective ops must be configured before TensorFlow runs anything (prepare reads
        # records), so the strategy is made first.
        _strategy(opts)
    prepared = prepare(opts)
    if task is not None:
        cluster.agree(task, opts.model_dir)
        prepared.task = task
    started = (run_dir.StartedFiles(opts.model_dir)
               if opts.mode != "eval" and task is None else None)
    try:
        result = MODES[opts.mode](prepared)
        if task is not None:
            cluster.barrier(task)
        return result
    except BaseException:
        if started is not None and prepared.run.progress.last_step is None:
            _take_back(prepared, started)
        raise
    finally:
        for owned in (prepared.summary_writer, prepared.evaluator, prepared.recalibrator):
            if owned is not None:
                owned.close()
        if prepared.scratch_dir:
            shutil.rmtree(prepared.scratch_dir, ignore_errors=True)


def _take_back(p: Prepared, started: run_dir.StartedFiles) -> None:
    """A training run failed before its first step completed: remove what it created, so the
    next run is not bound by a config.yaml (or a step-0 checkpoint) nothing was trained into.
    (Not under multi_worker, where workers share the directory.)"""
    if p.summary_writer is not None:
        p.summary_writer.close()  # its events file is among what is removed
        p.summary_writer = None
    removed = started.remove()
    if removed:
        logging.warning("training failed before its first step: removed what this run had "
                        "written to %s (%s)%s", p.opts.model_dir, ", ".join(removed[:4]),
                        "" if tf.io.gfile.exists(p.opts.model_dir) else ", and the directory")

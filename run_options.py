"""main.py's options: one dataclass whose fields are the flags (name, default, help).

Kept free of TensorFlow so that `python main.py --help` and flag errors return at once. Tests
and notebooks build `RunOptions(...)` and call `trainer.run` with it. `check_options` checks
the flags alone (no I/O) before trainer.run reads or writes anything.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import cli
import errors

field = cli.field

MODES_HELP = "train, eval (the latest checkpoint once, or --eval_continuous) or train_and_eval."
STRATEGIES = ("default", "mirrored", "multi_worker")
# A global batch: far past any accelerator pod's (a larger number is a typo, not a batch).
BATCH = "[1, 65536]"


@dataclasses.dataclass
class RunOptions:
    """main.py's flags: each default and help text is written here once."""

    # What to run.
    mode: str = field("train", MODES_HELP, choices=("train", "eval", "train_and_eval"))
    model_name: str = field("efficientdet-d0", "efficientdet-d0 .. efficientdet-d7.")
    model_dir: Optional[str] = field(None, "Checkpoints, summaries, config.yaml, eval history.")
    hparams: str = field("", "Overrides: 'k=v,k2=v2', a .yaml file, or both.")
    # Data.
    training_file_pattern: Optional[str] = field(
        None, "Training TFRecords: a glob, or several separated by commas.")
    validation_file_pattern: Optional[str] = field(
        None, "Evaluation TFRecords: a glob, or several separated by commas.")
    val_json_file: Optional[str] = field(
        None, "COCO ground-truth json; if unset, ground truth comes from the records.")
    testdev_dir: Optional[str] = field(
        None, "Write detections_test-dev2017_test_results.json here (no metrics); an existing "
              "one is replaced only with --overwrite.")
    overwrite: bool = field(False, "Replace an existing test-dev results json in --testdev_dir "
                                   "(the one file main.py writes outside --model_dir).")
    # Starting points.
    backbone_ckpt: str = field("", "EfficientNet classifier checkpoint (dir or prefix) for the "
                                   "backbone.")
    ckpt: Optional[str] = field(None, "EfficientDet checkpoint (dir or prefix) to finetune from.")
    # Schedule and evaluation.
    train_batch_size: int = field(64, "Global training batch size.", bounds=BATCH)
    eval_batch_size: int = field(1, "Global evaluation batch size.", bounds=BATCH)
    eval_samples: int = field(5000, "Images per evaluation: the validation split's first N, or "
                                    "all of it when smaller. Any batch size evaluates all N.",
                              bounds="[1, inf)")
    num_examples_per_epoch: int = field(120000, "Images per epoch (steps, LR schedule).",
                                        bounds="[1, inf)")
    num_epochs: Optional[int] = field(None, "Epochs; overrides the num_epochs hparam.",
                                      bounds="[1, inf)")
    eval_after_training: bool = field(False, "Evaluate once after --mode=train.")
    eval_continuous: bool = field(False, "--mode=eval: keep evaluating new checkpoints until "
                                         "the last step.")
    min_eval_interval: int = field(180, "Seconds between checkpoint polls (eval).",
                                   bounds="[0, inf)")
    eval_timeout: Optional[int] = field(None, "Stop continuous eval after this many idle "
                                              "seconds.", bounds="(0, inf)")
    tf_random_seed: Optional[int] = field(None, "Graph-level random seed (weights and data "
                                                "order).", bounds="[0, 2147483647]")
    save_checkpoints_steps: Optional[int] = field(
        None, "Checkpoint every N steps (default: once per epoch, at least every 1000).",
        bounds="[1, inf)")
    keep_checkpoint_max: int = field(5, "Checkpoints kept in model_dir (0: every one).",
                                     bounds="[0, inf)")
    log_every_n_steps: int = field(100, "A progress line every N training steps ...",
                                   bounds="[1, inf)")
    log_every_secs: float = field(30.0, "... or every this many seconds, whichever is first.",
                                  bounds="[0, inf)")
    use_fake_data: bool = field(False, "Train every step on the first batch (debugging).")
    # Devices and distribution.
    use_xla: bool = field(False, "XLA JIT compilation (not on TPU).")
    strategy: str = field("default", "default: one device; mirrored: all local GPUs (or "
                                     "--cpu_replicas CPUs); multi_worker: "
                                     "MultiWorkerMirroredStrategy over the hosts in TF_CONFIG.",
                          choices=STRATEGIES)
    cpu_replicas: int = field(0, "Split the CPU into this many logical devices and mirror over "
                                 "them (CPU-only machines; for trying distribution).",
                              bounds="[0, 64]")
    # Cloud TPU.
    use_tpu: bool = field(False, "Train on TPU (TPUEstimator). Set by --tpu.")
    tpu: Optional[str] = field(None, "Cloud TPU name or grpc://ip:8470 address; implies "
                                     "--use_tpu.")
    gcp_project: Optional[str] = field(None, "GCP project of the TPU (auto-detected if unset).")
    tpu_zone: Optional[str] = field(None, "GCE zone of the TPU (auto-detected if unset).")
    eval_master: str = field("", "GRPC address of the eval master.")
    num_cores: int = field(8, "TPU cores.", bounds="[1, 4096]")
    iterations_per_loop: int = field(100, "TPU: steps per loop on the device.",
                                     bounds="[1, inf)")
    use_spatial_partition: bool = field(False, "TPU spatial partitioning.")
    num_cores_per_replica: int = field(8, "Cores per replica with spatial partitioning.",
                                       bounds="[1, 4096]")
    input_partition_dims: List[int] = field([1, 4, 2, 1], "Partition dims of images and "
                                                          "per-level targets (TPU).",
                                            bounds="[1, 4096]")


def check_options(opts: RunOptions) -> None:
    """Flag-only checks (no I/O); each error names the flag."""
    if not opts.model_dir:
        raise errors.UsageError("--model_dir is required (checkpoints, summaries and "
                                "config.yaml).")
    if opts.ckpt and opts.backbone_ckpt:
        raise errors.UsageError("--backbone_ckpt and --ckpt cannot be used together: "
                                "--backbone_ckpt starts from a classifier, --ckpt from a "
                                "detector.")
    cli.check_bounds(opts)  # every number against its field's range
    if opts.strategy == "multi_worker" and opts.mode == "eval":
        raise errors.UsageError("--strategy=multi_worker trains (--mode=train or "
                                "train_and_eval, which evaluates on the chief); run --mode=eval "
                                "as one process without --strategy.")
    needs_train = opts.mode in ("train", "train_and_eval")
    needs_eval = opts.mode in ("eval", "train_and_eval") or opts.eval_after_training
    if needs_train and not opts.training_file_pattern:
        raise errors.UsageError(f"--training_file_pattern is required for --mode={opts.mode}.")
    if needs_eval and not opts.validation_file_pattern:
        raise errors.UsageError(f"--validation_file_pattern is required for --mode={opts.mode}"
                                + (" with --eval_after_training" if opts.mode == "train"
                                   else "") + ".")

r"""Train and evaluate detectors on TFRecords with the TF Estimator (or TPUEstimator).

    python main.py --mode=train_and_eval \
        --training_file_pattern=tfrecord/pascal*.tfrecord \
        --validation_file_pattern=tfrecord/pascal*.tfrecord \
        --val_json_file=tfrecord/json_pascal.json \
        --model_name=efficientdet-d0 --model_dir=/tmp/efficientdet-d0-scratch \
        --backbone_ckpt=efficientnet-b0 --train_batch_size=8 --eval_batch_size=8 \
        --eval_samples=512 --num_examples_per_epoch=5717 --num_epochs=1 \
        --hparams="num_classes=20,moving_average_decay=0" --use_tpu=False

The logic lives in `trainer.py`; this file parses flags and reports errors in one line.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

MODES = ("train", "eval", "train_and_eval")
STRATEGIES = ("default", "mirrored", "multi_worker")

# Cloud TPU.
flags.DEFINE_string("tpu", None, "Cloud TPU name or grpc://ip:8470 address; implies --use_tpu.")
flags.DEFINE_string("gcp_project", None, "GCP project of the TPU (auto-detected if unset).")
flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU (auto-detected if unset).")
flags.DEFINE_string("eval_master", "", "GRPC address of the eval master.")
flags.DEFINE_bool("use_tpu", False, "Train on TPU (TPUEstimator). Set by --tpu.")
flags.DEFINE_integer("num_cores", 8, "TPU cores.")
flags.DEFINE_bool("use_spatial_partition", False, "TPU spatial partitioning.")
flags.DEFINE_integer("num_cores_per_replica", 8, "Cores per replica with spatial partitioning.")
flags.DEFINE_multi_integer("input_partition_dims", [1, 4, 2, 1],
                           "Partition dims of images and per-level targets (TPU).")
flags.DEFINE_integer("iterations_per_loop", 100, "TPU loop size; also the logging interval.")
# Devices and distribution.
flags.DEFINE_enum("strategy", "default", STRATEGIES,
                  "default: one device; mirrored: all local GPUs (or --cpu_replicas CPUs); "
                  "multi_worker: MultiWorkerMirroredStrategy over the hosts in TF_CONFIG.")
flags.DEFINE_integer("cpu_replicas", 0,
                     "Split the CPU into this many logical devices and mirror over them "
                     "(CPU-only machines; for trying distribution without GPUs).")
flags.DEFINE_bool("use_xla", False, "XLA JIT compilation (not on TPU).")
flags.DEFINE_bool("use_fake_data", False, "Train every step on the first batch (debugging).")
# Model and data.
flags.DEFINE_string("model_name", "efficientdet-d1", "efficientdet-d0 .. efficientdet-d7.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and config.yaml.")
flags.DEFINE_string("backbone_ckpt", "",
                    "EfficientNet classifier checkpoint (dir or prefix) for the backbone.")
flags.DEFINE_string("ckpt", None, "EfficientDet checkpoint (dir or prefix) to finetune from.")
flags.DEFINE_string("hparams", "", "Overrides: 'k=v,k2=v2', a .yaml file, or both.")
flags.DEFINE_string("training_file_pattern", None, "Training TFRecords glob.")
flags.DEFINE_string("validation_file_pattern", None, "Evaluation TFRecords glob.")
flags.DEFINE_string("val_json_file", None,
                    "COCO ground-truth json; if unset, ground truth comes from the records.")
flags.DEFINE_string("testdev_dir", None,
                    "Write detections_test-dev2017_test_results.json here (no metrics).")
flags.DEFINE_integer("train_batch_size", 64, "Global training batch size.")
flags.DEFINE_integer("eval_batch_size", 1, "Global evaluation batch size.")
flags.DEFINE_integer("eval_samples", 5000, "Images per evaluation: the validation split's first "
                     "N, or all of it when smaller. Any batch size evaluates all N.")
flags.DEFINE_integer("num_examples_per_epoch", 120000, "Images per epoch (steps, LR schedule).")
flags.DEFINE_integer("num_epochs", None, "Epochs; overrides the num_epochs hparam.")
flags.DEFINE_enum("mode", "train", MODES, "What to run.")
flags.DEFINE_bool("eval_after_training", False, "Evaluate once after --mode=train.")
flags.DEFINE_bool("eval_continuous", False,
                  "--mode=eval: keep evaluating new checkpoints until the last step.")
flags.DEFINE_integer("tf_random_seed", None, "Graph-level random seed.")
flags.DEFINE_integer("min_eval_interval", 180, "Seconds between checkpoint polls (eval).")
flags.DEFINE_integer("eval_timeout", None, "Stop continuous eval after this many idle seconds.")
flags.DEFINE_integer("save_checkpoints_steps", None,
                     "Checkpoint every N steps (default: once per epoch, at least every 1000).")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in model_dir.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.cpu_replicas:
        import tensorflow as tf

        # Must happen before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_replicas)
    import tensorflow as tf

    import trainer

    tf.get_logger().setLevel("ERROR")
    try:
        trainer.run(trainer.RunOptions.from_flags(FLAGS))
    except trainer.USER_ERRORS as e:
        sys.exit(f"main.py: error: {e}")
    except tf.errors.OpError as e:
        sys.exit(f"main.py: error: {trainer.short_tf_error(e)}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

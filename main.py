r"""Train and evaluate detectors on TFRecords with the TF Estimator (or TPUEstimator).

    python main.py --mode=train_and_eval \
        --training_file_pattern=tfrecord/pascal*.tfrecord \
        --validation_file_pattern=tfrecord/pascal*.tfrecord \
        --val_json_file=tfrecord/json_pascal.json \
        --model_name=efficientdet-d0 --model_dir=/tmp/efficientdet-d0-scratch \
        --backbone_ckpt=efficientnet-b0 --train_batch_size=8 --eval_batch_size=8 \
        --eval_samples=512 --num_examples_per_epoch=5717 --num_epochs=1 \
        --hparams="num_classes=20,moving_average_decay=0" --use_tpu=False

The flags are the fields of `trainer.RunOptions`; the logic lives in `trainer.py`. A user error
(bad flag, file, record, hparam or checkpoint) is reported in one line with exit status 1; any
other error keeps its traceback.
"""

from __future__ import annotations

from absl import app, flags

import cli
import run_options

cli.define_flags(run_options.RunOptions)
flags.DEFINE_bool("verbose", False, "Also log DEBUG lines.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.setup_logging(FLAGS.verbose)
    tf = cli.import_tensorflow()
    if FLAGS.cpu_replicas:
        # Must happen before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_replicas)
    import trainer

    opts = cli.options_from_flags(run_options.RunOptions)
    cli.run_and_report("main.py", trainer.run, opts)


if __name__ == "__main__":
    app.run(main)

r"""Inspect a detector: save it (dry), freeze it, or benchmark its network latency (bm).

    python model_inspect.py --runmode=bm --model_name=efficientdet-d0
    python model_inspect.py --runmode=bm --model_name=efficientdet-d0 \
        --hparams="precision=mixed-float16"
    python model_inspect.py --runmode=freeze --model_name=efficientdet-d0 --logdir=/tmp/deff

The logic lives in `inference.py`; this file only parses flags and reports.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

RUNMODES = ("dry", "freeze", "bm")

flags.DEFINE_string("model_name", "efficientdet-d0", "Model: efficientdet-d0 .. efficientdet-d7.")
flags.DEFINE_string("logdir", "/tmp/deff/", "Output directory for dry and freeze. Never deleted.")
flags.DEFINE_enum("runmode", "dry", RUNMODES, "What to do.")
flags.DEFINE_string("hparams", "", "Overrides: 'k=v,k2=v2', a .yaml file, or both.")
flags.DEFINE_integer("batch_size", 1, "Batch size of the network input.")
flags.DEFINE_integer("bm_runs", 10, "Timed runs in bm (after 5 warm-up runs).")
flags.DEFINE_integer("threads", 0, "Intra-op threads for bm (0: TensorFlow's default).")
flags.DEFINE_bool("xla", False, "Run with XLA JIT (global_jit_level ON_2).")
flags.DEFINE_string("ckpt_path", None,
                    "Checkpoint prefix or directory to restore; '_' or unset: random weights.")
flags.DEFINE_string("trace_filename", None, "bm: also write a Chrome trace of one run here.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    # Imported here so that --help and flag errors come back without loading TensorFlow.
    import tensorflow as tf

    import hparams_config
    import inference
    import vfpn

    tf.get_logger().setLevel("ERROR")

    model_dir = FLAGS.ckpt_path if FLAGS.ckpt_path and os.path.isdir(FLAGS.ckpt_path) else None
    try:
        config = hparams_config.load_run_config(FLAGS.model_name, FLAGS.hparams, model_dir)
        vfpn.get_fpn_builder(config.fpn_name)
    except ValueError as e:
        sys.exit(f"model_inspect.py: error: {e}")
    config.is_training_bn = False
    if FLAGS.batch_size < 1:
        sys.exit("model_inspect.py: error: --batch_size must be >= 1 for dry, freeze and bm.")
    logging.info("config:\n%s", config)
    try:
        if FLAGS.runmode == "dry":
            out = inference.save_dry_run(config, FLAGS.logdir, FLAGS.model_name,
                                         FLAGS.ckpt_path, FLAGS.batch_size)
            print(f"wrote checkpoint {out['checkpoint']} and graph {out['graph']}")
        elif FLAGS.runmode == "freeze":
            path = inference.save_frozen(config, FLAGS.logdir, FLAGS.model_name,
                                         FLAGS.ckpt_path, FLAGS.batch_size)
            print(f"wrote frozen graph {path}")
        elif FLAGS.runmode == "bm":
            result = inference.benchmark_network(
                config, FLAGS.batch_size, FLAGS.bm_runs, threads=FLAGS.threads, xla=FLAGS.xla,
                ckpt_path=FLAGS.ckpt_path, trace_filename=FLAGS.trace_filename)
            print(result.summary())
    except inference.CheckpointError as e:
        sys.exit(f"model_inspect.py: error: {e}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

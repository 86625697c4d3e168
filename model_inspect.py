r"""Inspect, export and run a detector.

    # network latency, then end-to-end latency (pre-processing + network + NMS)
    python model_inspect.py --runmode=bm --model_name=efficientdet-d0
    python model_inspect.py --runmode=saved_model --model_name=efficientdet-d0 \
        --ckpt_path=efficientdet-d0 --saved_model_dir=/tmp/benchmark/
    python model_inspect.py --runmode=saved_model_benchmark \
        --saved_model_dir=/tmp/benchmark/efficientdet-d0_frozen.pb \
        --model_name=efficientdet-d0 --input_image=testdata/img1.jpg --output_image_dir=/tmp/
    # images and videos
    python model_inspect.py --runmode=infer --ckpt_path=efficientdet-d0 \
        --input_image='imgs/*.jpg' --output_image_dir=/tmp/out
    python model_inspect.py --runmode=saved_model_infer --saved_model_dir=/tmp/saved_model \
        --input_image=img.png --output_image_dir=/tmp/
    python model_inspect.py --runmode=saved_model_video --saved_model_dir=/tmp/savedmodel \
        --input_video=input.mov --output_video=output.mov
    # ONNX (tf2onnx; run it with saved_model_infer --saved_model_dir=<file>.onnx)
    python model_inspect.py --runmode=onnx --ckpt_path=efficientdet-d0 --onnx_path=/tmp/d0.onnx

Runmodes: dry, freeze and bm work on the raw network; ckpt restores (EMA-aware) and can
re-export a checkpoint; infer runs a checkpoint on images; saved_model exports a SavedModel
(signatures serving_default on uint8 arrays and serving_base64 on encoded images) plus
<model_name>_frozen.pb beside it and, with --tflite_path, a TFLite model; saved_model_infer,
saved_model_benchmark and saved_model_video run an exported model, given as a SavedModel
directory or a .pb, .tflite or .onnx file. --batch_size=0 exports a dynamic-batch model.

Score threshold and detections per image: --min_score_thresh (default nms_configs.score_thresh,
0.4) and --max_boxes_to_draw (default nms_configs.max_output_size, 100). An export records them
as its defaults (in export_settings.yaml beside the model): the threshold stays a run-time input
(tensor 'score_thresh') of the SavedModel, frozen graph and ONNX model, while a TFLite model
keeps it fixed (it can be raised afterwards, not lowered). --max_boxes_to_draw at export fixes
the number of output rows.

saved_model_video without --output_video shows the frames when a display is available; where
there is none (e.g. opencv-python-headless or no DISPLAY), it says so and still runs detection
on every frame, then reports the speed (exit status 0).

Inputs that fail (a missing or corrupt image among several) are reported by name, the others are
processed, and the exit status is 1. The logic lives in `inference.py` and the modules below it
(export, detectors, visualize); this file only parses flags and reports.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

RUNMODES = ("dry", "freeze", "bm", "ckpt", "infer", "saved_model", "saved_model_infer",
            "saved_model_benchmark", "saved_model_video", "onnx")

flags.DEFINE_string("model_name", "efficientdet-d0", "Model: efficientdet-d0 .. efficientdet-d7.")
flags.DEFINE_string("logdir", "/tmp/deff/", "Output directory for dry and freeze. Never deleted.")
flags.DEFINE_enum("runmode", "dry", RUNMODES, "What to do.")
flags.DEFINE_string("hparams", "", "Overrides: 'k=v,k2=v2', a .yaml file, or both.")
flags.DEFINE_integer("batch_size", 1, "Batch size. 0 exports a dynamic-batch model "
                     "(saved_model, onnx); dry, freeze and bm need >= 1.")
flags.DEFINE_integer("bm_runs", 10, "Timed runs in bm and saved_model_benchmark (after 5 "
                     "warm-up runs).")
flags.DEFINE_integer("threads", 0, "Intra-op threads (0: TensorFlow's default).")
flags.DEFINE_bool("xla", False, "bm: run with XLA JIT (global_jit_level ON_2).")
flags.DEFINE_string("ckpt_path", None,
                    "Checkpoint prefix or directory to restore; '_' or unset: random weights. A "
                    "directory's config.yaml (written by training) sets the hparams.")
flags.DEFINE_string("export_ckpt", None, "ckpt: save the restored (EMA) weights as a new "
                    "checkpoint with this prefix.")
flags.DEFINE_string("trace_filename", None, "bm, saved_model_benchmark: also write a Chrome "
                    "trace of one run here.")
flags.DEFINE_string("input_image", None, "Image path, glob pattern, or comma-separated list of "
                    "them (infer, saved_model_infer, saved_model_benchmark).")
flags.DEFINE_string("output_image_dir", None, "Where annotated images are written as <i>.jpg.")
flags.DEFINE_string("input_video", None, "saved_model_video: the input video file.")
flags.DEFINE_string("output_video", None, "saved_model_video: write the annotated video here "
                    "(mp4v codec).")
flags.DEFINE_integer("line_thickness", None, "Box line thickness in pixels (default: scaled to "
                     "the image).")
flags.DEFINE_integer("max_boxes_to_draw", None, "Most detections per image (default "
                     "nms_configs.max_output_size); at export, the number of output rows.")
flags.DEFINE_float("min_score_thresh", None, "Score threshold (default "
                   "nms_configs.score_thresh); at export, the model's default threshold.")
flags.DEFINE_string("saved_model_dir", "/tmp/saved_model", "SavedModel directory (exported "
                    "or read), or a .pb, .tflite or .onnx file to read.")
flags.DEFINE_string("tflite_path", None, "saved_model: also convert to TFLite here.")
flags.DEFINE_string("onnx_path", None, "onnx: output file (default "
                    "<saved_model_dir>/<model_name>.onnx).")
FLAGS = flags.FLAGS

PROG = "model_inspect.py"


def fail(message: str) -> None:
    sys.exit(f"{PROG}: error: {message}")


def _ckpt_model_dir(ckpt_path: str) -> str:
    """The directory whose config.yaml describes `ckpt_path` (a directory or a prefix)."""
    if not ckpt_path or ckpt_path == "_":
        return ""
    if os.path.isdir(ckpt_path):
        return ckpt_path
    parent = os.path.dirname(ckpt_path) or "."
    return parent if os.path.isfile(os.path.join(parent, "config.yaml")) else ""


def _model_config(hparams_config, path: str):
    """Config for an exported model: its own config.yaml when there is one (then --hparams)."""
    where = path if os.path.isdir(path) else os.path.dirname(path) or "."
    saved = os.path.join(where, "config.yaml")
    if os.path.isfile(saved):
        name = hparams_config.Config.load_from_yaml(saved).get("name") or FLAGS.model_name
        return hparams_config.load_run_config(name, FLAGS.hparams, where)
    return hparams_config.load_run_config(FLAGS.model_name, FLAGS.hparams,
                                          _ckpt_model_dir(FLAGS.ckpt_path) or None)


def _batch_size(allow_dynamic: bool):
    if FLAGS.batch_size < 0 or (FLAGS.batch_size == 0 and not allow_dynamic):
        fail(f"--batch_size must be >= 1 for --runmode={FLAGS.runmode}"
             + (" (0, a dynamic batch, is for export runmodes)" if not allow_dynamic else ""))
    return FLAGS.batch_size or None


def _require(flag: str) -> str:
    value = getattr(FLAGS, flag)
    if not value:
        fail(f"--runmode={FLAGS.runmode} needs --{flag}")
    return value


def _report_failures(problems) -> None:
    if problems:
        for p in problems:
            print(f"{PROG}: skipped {p}", file=sys.stderr)
        print(f"{PROG}: {len(problems)} input(s) failed (see above); the others were processed.",
              file=sys.stderr)
        sys.exit(1)


def _run_images(detector, config) -> None:
    import inference
    import visualize
    from dataset import label_maps

    paths, problems = visualize.expand_image_inputs(_require("input_image"))
    summary = inference.detect_images(
        detector, paths, FLAGS.output_image_dir, label_maps.for_config(config),
        FLAGS.min_score_thresh, FLAGS.max_boxes_to_draw, FLAGS.line_thickness,
        batch_size=max(1, FLAGS.batch_size))
    n = len(summary.written)
    where = f" to {FLAGS.output_image_dir}" if FLAGS.output_image_dir else ""
    print(f"processed {n} image(s){where}")
    _report_failures(problems + summary.failed)


def _run() -> None:
    import tensorflow as tf

    import detectors
    import export
    import hparams_config
    import inference
    import postprocess
    import vfpn

    mode = FLAGS.runmode
    exported_model_modes = ("saved_model_infer", "saved_model_benchmark", "saved_model_video")
    if mode in exported_model_modes:
        config = _model_config(hparams_config, FLAGS.saved_model_dir)
    else:
        config = hparams_config.load_run_config(FLAGS.model_name, FLAGS.hparams,
                                                _ckpt_model_dir(FLAGS.ckpt_path) or None)
    vfpn.get_fpn_builder(config.fpn_name)
    config.is_training_bn = False
    logging.info("config:\n%s", config)

    if mode == "dry":
        out = export.save_dry_run(config, FLAGS.logdir, FLAGS.model_name, FLAGS.ckpt_path,
                                     _batch_size(False))
        print(f"wrote checkpoint {out['checkpoint']} and graph {out['graph']}")
    elif mode == "freeze":
        path = export.save_frozen(config, FLAGS.logdir, FLAGS.model_name, FLAGS.ckpt_path,
                                     _batch_size(False))
        print(f"wrote frozen graph {path}")
    elif mode == "bm":
        result = inference.benchmark_network(
            config, _batch_size(False), FLAGS.bm_runs, threads=FLAGS.threads, xla=FLAGS.xla,
            ckpt_path=FLAGS.ckpt_path, trace_filename=FLAGS.trace_filename)
        print(result.summary())
    elif mode == "ckpt":
        info = export.eval_ckpt(config, _require("ckpt_path"), FLAGS.export_ckpt)
        print(f"restored {info['variables']} variables from {info['checkpoint']} "
              f"({'EMA values' if info['ema'] else 'raw values, no EMA shadows found'})")
        if info["exported"]:
            print(f"wrote checkpoint {info['exported']}")
    elif mode == "infer":
        if not FLAGS.ckpt_path or FLAGS.ckpt_path == "_":
            print(f"{PROG}: no --ckpt_path: running with random weights", file=sys.stderr)
        print(postprocess.nms_description(config, FLAGS.min_score_thresh,
                                                    FLAGS.max_boxes_to_draw))
        with detectors.CheckpointDetector(config, FLAGS.ckpt_path, 1, FLAGS.min_score_thresh,
                                          FLAGS.max_boxes_to_draw, FLAGS.threads) as det:
            _run_images(det, config)
    elif mode == "saved_model":
        result = export.export_saved_model(
            config, FLAGS.saved_model_dir, FLAGS.model_name, FLAGS.ckpt_path,
            _batch_size(True), FLAGS.min_score_thresh, FLAGS.max_boxes_to_draw,
            FLAGS.tflite_path)
        s = result.settings
        print(f"wrote SavedModel {result.saved_model_dir} (signatures serving_default: uint8 "
              f"image_arrays, serving_base64: encoded image_files; batch {s['batch_size']})")
        print(f"wrote frozen graph {result.frozen_graph}")
        if result.tflite:
            print(f"wrote TFLite model {result.tflite} (builtin ops only; score threshold "
                  f"fixed at {s['score_thresh']})")
        print(f"export settings: {s['nms']}; feed tensor 'score_thresh' to change the "
              f"threshold at run time")
    elif mode == "onnx":
        path = FLAGS.onnx_path or os.path.join(FLAGS.saved_model_dir, f"{FLAGS.model_name}.onnx")
        export.export_onnx(config, path, FLAGS.ckpt_path, _batch_size(True),
                              FLAGS.min_score_thresh, FLAGS.max_boxes_to_draw)
        print(f"wrote ONNX model {path} (input image_arrays:0 uint8 [B, h, w, 3]; optional "
              f"input score_thresh:0)")
    else:
        if not tf.io.gfile.exists(FLAGS.saved_model_dir):
            fail(f"--saved_model_dir '{FLAGS.saved_model_dir}' does not exist: give a SavedModel "
                 f"directory or a .pb, .tflite or .onnx file written by --runmode=saved_model or "
                 f"onnx")
        settings = export.read_export_settings(FLAGS.saved_model_dir)
        if settings.get("nms"):
            print(f"model {FLAGS.saved_model_dir}: {settings['nms']}")
        with detectors.load_detector(FLAGS.saved_model_dir, FLAGS.threads) as det:
            if mode == "saved_model_infer":
                _run_images(det, config)
            elif mode == "saved_model_benchmark":
                _benchmark(det, config)
            else:
                _video(det, config)


def _benchmark(det, config) -> None:
    import numpy as np

    import inference
    import visualize
    from dataset import label_maps

    paths, problems = visualize.expand_image_inputs(_require("input_image"))
    images, failed = [], []
    for path in paths:
        try:
            images.append(visualize.read_image(path))
        except visualize.ImageReadError as e:
            failed.append(str(e))
    if not images:
        _report_failures(problems + failed)
    first = images[0]
    same = [im for im in images if im.shape == first.shape]
    if len(same) < len(images):
        print(f"{PROG}: benchmarking the {len(same)} image(s) of size {first.shape[1]}x"
              f"{first.shape[0]} (a batch holds one size)", file=sys.stderr)
    result = inference.benchmark_detector(det, np.stack(same), max(1, FLAGS.batch_size),
                                          FLAGS.bm_runs, name=FLAGS.saved_model_dir,
                                          trace_filename=FLAGS.trace_filename,
                                          score_thresh=FLAGS.min_score_thresh)
    print(result.summary())
    if FLAGS.output_image_dir:
        found = det.predict(first[None], FLAGS.min_score_thresh)[0]
        thresh = det.score_thresh if FLAGS.min_score_thresh is None else FLAGS.min_score_thresh
        out = os.path.join(FLAGS.output_image_dir, "0.jpg")
        visualize.write_image(visualize.draw_detections(
            first, found, label_maps.for_config(config), thresh, FLAGS.max_boxes_to_draw,
            FLAGS.line_thickness), out)
        print(f"wrote {out} ({len(found.filter(thresh))} detections)")
    _report_failures(problems + failed)


def _video(det, config) -> None:
    import inference
    import visualize
    from dataset import label_maps

    video = _require("input_video")
    show = False
    if not FLAGS.output_video:
        show, why = visualize.display_available()
        if not show:
            print(f"{PROG}: cannot show the frames: {why}. Running detection on every frame "
                  f"without showing it; pass --output_video=out.mp4 to save the annotated "
                  f"video.", file=sys.stderr)
    summary = inference.detect_video(det, video, FLAGS.output_video,
                                     label_maps.for_config(config), FLAGS.min_score_thresh,
                                     FLAGS.max_boxes_to_draw, FLAGS.line_thickness, show=show)
    fps = summary.frames / summary.seconds if summary.seconds else 0.0
    print(f"processed {summary.frames} frames of {video} ({fps:.1f} frames/s)"
          + (f"; wrote {summary.output}" if summary.output else ""))


def main(argv):
    del argv
    # Imported here so that --help and flag errors come back without loading TensorFlow.
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        _run()
    except ValueError as e:  # errors.UserError and the fpn_name check
        fail(str(e))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

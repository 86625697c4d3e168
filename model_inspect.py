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
    # OpenVINO IR (.xml + .bin; or beside a SavedModel: --runmode=saved_model --openvino_path=)
    python model_inspect.py --runmode=openvino --ckpt_path=efficientdet-d0 \
        --openvino_path=/tmp/d0/model.xml
    python model_inspect.py --runmode=saved_model_benchmark --saved_model_dir=/tmp/d0/model.xml \
        --input_image=img.png --openvino_precision=bf16
    # int8 by post-training quantisation (OpenVINO beside the f32 IR; TFLite full-integer),
    # then its COCO AP against the float model's
    python model_inspect.py --runmode=openvino --ckpt_path=efficientdet-d0 \
        --openvino_path=/tmp/d0/model.xml --openvino_int8_calibration='data/train-*.tfrecord'
    python model_inspect.py --runmode=saved_model_eval --saved_model_dir=/tmp/d0/model_int8.xml \
        --compare_to=/tmp/d0/model.xml --val_json_file=val.json --image_dir=val_images/

Runmodes: dry, freeze and bm work on the raw network; ckpt restores (EMA-aware) and can
re-export a checkpoint; infer runs a checkpoint on images; saved_model exports a SavedModel
(signatures serving_default on uint8 arrays and serving_base64 on encoded images) plus
<model_name>_frozen.pb beside it and, with --tflite_path, a TFLite model and, with
--openvino_path, OpenVINO IR; onnx and openvino export those alone; saved_model_infer,
saved_model_benchmark and saved_model_video run an exported model, given as a SavedModel
directory or a .pb, .tflite, .onnx or .xml (OpenVINO) file. --batch_size=0 exports a
dynamic-batch model. --tflite_input_size=WxH fixes the TFLite model's image size, which makes
it static so that TFLite runs it on XNNPACK (a model for any size runs on TFLite's own kernels).

--openvino_int8_calibration=PATTERN (TFRecords of the training split, or an image glob) also
writes an int8 IR beside the f32 one (model.xml -> model_int8.xml), calibrated on
--calibration_images of them (quantize.py); --tflite_int8_calibration makes the --tflite_path
model full-integer int8. saved_model_eval reports an exported model's COCO AP on
--val_json_file's images in --image_dir and, with --compare_to, another model's and the
difference.

--openvino_precision sets OpenVINO's inference precision: f32 (when unset, so that detections
are the checkpoint's), bf16, or auto (the runtime's own choice: bf16 on CPUs with native bf16,
else f32). A CPU without bf16 runs a bf16 request in f32; the benchmark line says which
precision ran.

Score threshold and detections per image: --min_score_thresh (default nms_configs.score_thresh,
0.4) and --max_boxes_to_draw (default nms_configs.max_output_size, 100). An export records them
as its defaults (in export_settings.yaml beside the model): the threshold stays a run-time input
(tensor 'score_thresh') of the SavedModel, frozen graph, ONNX and OpenVINO models, while a
TFLite model
keeps it fixed (it can be raised afterwards, not lowered). --max_boxes_to_draw at export fixes
the number of output rows.

saved_model_video without --output_video shows the frames when a display is available; where
there is none (e.g. opencv-python-headless or no DISPLAY), it says so and still runs detection
on every frame, then reports the speed (exit status 0).

Options are checked before any graph is built (`check_options`): every number against its
flag's range, the flags each runmode needs, and every file the runmode will write (outputs.py's
policy, one line naming the flag): an existing file is replaced only with --overwrite, an input
(image, video, checkpoint, model, hparams file) never. Then the config, and a --ckpt_path
checkpoint against it (`load_config`). Annotated pictures are named after their inputs
(<stem>.jpg). dry and freeze never write into a --logdir that holds another run's config.yaml or
checkpoint, and saved_model never into a non-empty --saved_model_dir, whatever --overwrite says.
Inputs that fail (a missing or corrupt image among several) are reported by name, the others are
processed, and the exit status is 1.

`run(InspectOptions(...))` runs one runmode in-process and returns the exit status; the work
is done by inference.py and the modules below it. --verbose also logs the resolved config.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app, logging

import cli
import errors
import outputs

if TYPE_CHECKING:
    from detectors import Detector
    from hparams_config import Config

PROG = "model_inspect.py"
# Runmodes that run an exported model given by --saved_model_dir.
EXPORTED_MODEL_MODES = ("saved_model_infer", "saved_model_benchmark", "saved_model_video",
                        "saved_model_eval")


# -------------------------------------------------------------------------------------------------
# The config of a run
# -------------------------------------------------------------------------------------------------
def config_dir(path: Optional[str]) -> Optional[str]:
    """The directory whose config.yaml describes `path` (a model or SavedModel directory, or a
    checkpoint prefix or model file inside one), or None. Read through tf.io.gfile (gs:// too).
    """
    import tensorflow as tf

    import run_dir

    if not path or path == "_":
        return None
    directory = path if tf.io.gfile.isdir(path) else os.path.dirname(path) or "."
    return (directory if tf.io.gfile.exists(run_dir.config_path(directory))
     else None)


def load_config(opts: InspectOptions) -> Config:
    """The model's config: --model_name, then the config.yaml of the exported model (for the
    runmodes that run one) or of --ckpt_path's directory, then --hparams. An exported model
    without config.yaml beside it takes its classes from its export settings. Validated, and,
    for a runmode that restores --ckpt_path, compared with what the checkpoint holds (one line
    naming the model it looks like), all before any graph is built."""
    import checkpoint_io
    import run_dir

    exported = opts.runmode in EXPORTED_MODEL_MODES
    model_dir = config_dir(opts.saved_model_dir) if exported else None
    # An export knows its model, whatever --model_name says.
    name = None if model_dir else opts.model_name
    config = run_dir.load_run_config(name, opts.hparams,
                                     model_dir or config_dir(opts.ckpt_path))
    if exported and not model_dir:  # a copied export: its settings know its classes
        import export

        config = export.with_recorded_classes(config, opts.saved_model_dir)
    if opts.runmode in _RESTORING and _is_set(opts.ckpt_path):
        checkpoint_io.check_detector_fits(checkpoint_io.resolve_checkpoint(opts.ckpt_path),
                                          config, f"--ckpt_path={opts.ckpt_path}")
    config.is_training_bn = False
    logging.debug("config:\n%s", config)
    return config


# -------------------------------------------------------------------------------------------------
# Runmodes: each takes the options and returns the exit status
# -------------------------------------------------------------------------------------------------
def _report_failures(problems: Sequence[str]) -> int:
    """Print each failed input and a summary to stderr; the exit status (1 if any failed)."""
    for p in problems:
        print(f"{PROG}: skipped {p}", file=sys.stderr)
    if problems:
        print(f"{PROG}: {len(problems)} input(s) failed (see above); the others were processed.",
              file=sys.stderr)
    return 1 if problems else 0


def _dry(opts: InspectOptions) -> int:
    import export

    out = export.save_dry_run(load_config(opts), opts.logdir, opts.model_name, opts.ckpt_path,
                              opts.batch_size, opts.overwrite)
    print(f"wrote checkpoint {out['checkpoint']} and graph {out['graph']}")
    return 0


def _freeze(opts: InspectOptions) -> int:
    import export

    path = export.save_frozen(load_config(opts), opts.logdir, opts.model_name, opts.ckpt_path,
                              opts.batch_size, opts.overwrite)
    print(f"wrote frozen graph {path}")
    return 0


def _bm(opts: InspectOptions) -> int:
    import inference

    result = inference.benchmark_network(
        load_config(opts), opts.batch_size, opts.bm_runs, threads=opts.threads, xla=opts.xla,
        ckpt_path=opts.ckpt_path, trace_filename=opts.trace_filename, overwrite=opts.overwrite)
    print(result.summary())
    return 0


def _ckpt(opts: InspectOptions) -> int:
    import export

    info = export.eval_ckpt(load_config(opts), opts.ckpt_path, opts.export_ckpt, opts.overwrite)
    print(f"restored {info['variables']} variables from {info['checkpoint']} "
          f"({'EMA values' if info['ema'] else 'raw values, no EMA shadows found'})")
    if info["exported"]:
        print(f"wrote checkpoint {info['exported']}")
    return 0


def _detect_images(opts: InspectOptions, detector: Detector, config: Config) -> int:
    import inference
    import visualize
    from dataset import label_maps

    paths, problems = visualize.expand_image_inputs(opts.input_image)
    summary = inference.detect_images(
        detector, paths, opts.output_image_dir, label_maps.for_config(config),
        opts.min_score_thresh, opts.max_boxes_to_draw, opts.line_thickness,
        batch_size=max(1, opts.batch_size), overwrite=opts.overwrite)
    where = f" to {opts.output_image_dir}" if opts.output_image_dir else ""
    print(f"processed {len(summary.written)} image(s){where}")
    return _report_failures(problems + summary.failed)


def _infer(opts: InspectOptions) -> int:
    import detectors
    import postprocess
    import serving

    config = load_config(opts)
    if not serving.has_checkpoint(opts.ckpt_path):
        print(f"{PROG}: no --ckpt_path: running with random weights", file=sys.stderr)
    print(postprocess.nms_description(config, opts.min_score_thresh, opts.max_boxes_to_draw))
    with detectors.CheckpointDetector(config, opts.ckpt_path, 1, opts.min_score_thresh,
                                      opts.max_boxes_to_draw, opts.threads) as det:
        return _detect_images(opts, det, config)


def _calibration(opts: InspectOptions, flag: str):
    """The calibration set of --<flag> (quantize.read_calibration: read and checked before any
    graph is built), or None when the flag is unset."""
    import quantize

    if not _is_set(getattr(opts, flag)):
        return None
    return quantize.read_calibration(getattr(opts, flag), opts.calibration_images,
                                     load_config(opts), flag)


def _write_openvino_int8(xml_path: str, calibration, overwrite: bool) -> None:
    import quantize

    path = quantize.quantize_openvino(xml_path, calibration, overwrite=overwrite)
    print(f"wrote int8 OpenVINO model {path} (+ .bin; NNCF post-training quantisation "
          f"calibrated on {len(calibration)} image(s) of {calibration.pattern}; "
          f"{quantize.FLOAT_PARTS})")


def _saved_model(opts: InspectOptions) -> int:
    import export
    import quantize

    openvino_calibration = _calibration(opts, "openvino_int8_calibration")
    tflite_calibration = _calibration(opts, "tflite_int8_calibration")
    quantizer = (quantize.TFLiteInt8(tflite_calibration, opts.batch_size or None,
                                     tflite_input_size(opts)) if tflite_calibration else None)
    result = export.export_saved_model(
        load_config(opts), opts.saved_model_dir, opts.model_name, opts.ckpt_path,
        opts.batch_size or None, opts.min_score_thresh, opts.max_boxes_to_draw,
        opts.tflite_path, opts.openvino_path, tflite_input_size(opts), opts.overwrite,
        tflite_quantizer=quantizer)
    s = result.settings
    print(f"wrote SavedModel {result.saved_model_dir} (signatures serving_default: uint8 "
          f"image_arrays, serving_base64: encoded image_files; batch {s['batch_size']})")
    print(f"wrote frozen graph {result.frozen_graph}")
    if result.tflite:
        size = (f"{opts.tflite_input_size} images only, XNNPACK" if opts.tflite_input_size
                else "images of any size, no XNNPACK")
        kind = (f"int8 calibrated on {len(tflite_calibration)} image(s) of "
                f"{tflite_calibration.pattern}: {quantize.FLOAT_PARTS}; {quantizer.summary}"
                if quantizer else "builtin ops only")
        print(f"wrote TFLite model {result.tflite} ({kind}; score threshold fixed at "
              f"{s['score_thresh']}; {size})")
    if result.openvino:
        print(f"wrote OpenVINO model {result.openvino} (+ .bin; inputs image_arrays:0, "
              f"score_thresh:0)")
        if openvino_calibration:
            _write_openvino_int8(result.openvino, openvino_calibration, opts.overwrite)
    print(f"export settings: {s['nms']}; feed tensor 'score_thresh' to change the "
          f"threshold at run time")
    return 0


# The single-file export runmodes: {runmode: (output flag, default suffix, export function
# name in export.py, what the file holds)}.
_FILE_EXPORTS = {
    "onnx": ("onnx_path", ".onnx", "export_onnx", "ONNX model {path} (input image_arrays:0 uint8 "
             "[B, h, w, 3]; optional input score_thresh:0)"),
    "openvino": ("openvino_path", ".xml", "export_openvino", "OpenVINO model {path} (+ .bin; "
                 "inputs image_arrays:0 uint8 [B, h, w, 3], score_thresh:0)"),
}


def _file_export_path(opts: InspectOptions) -> Tuple[str, str]:
    """(flag, path) of a single-file export: its flag (--onnx_path, --openvino_path), else
    <saved_model_dir>/<model_name><suffix>."""
    flag, suffix, _, _ = _FILE_EXPORTS[opts.runmode]
    if getattr(opts, flag):
        return flag, getattr(opts, flag)
    return "saved_model_dir", os.path.join(opts.saved_model_dir, f"{opts.model_name}{suffix}")


def _file_export(opts: InspectOptions) -> int:
    import export

    calibration = _calibration(opts, "openvino_int8_calibration")
    _, _, function, what = _FILE_EXPORTS[opts.runmode]
    path = getattr(export, function)(load_config(opts), _file_export_path(opts)[1],
                                     opts.ckpt_path, opts.batch_size or None,
                                     opts.min_score_thresh, opts.max_boxes_to_draw,
                                     overwrite=opts.overwrite)
    print("wrote " + what.format(path=path))
    if calibration:
        _write_openvino_int8(path, calibration, opts.overwrite)
    return 0


def _run_exported(opts: InspectOptions, body: Callable[..., int]) -> int:
    """Load the exported model of --saved_model_dir and call `body(opts, detector, config)`."""
    import detectors
    import export

    config = load_config(opts)
    settings = export.read_export_settings(opts.saved_model_dir)
    if settings.get("nms"):
        print(f"model {opts.saved_model_dir}: {settings['nms']}")
    with detectors.load_detector(opts.saved_model_dir, opts.threads,
                                 opts.openvino_precision) as det:
        if det.note:
            print(f"model {opts.saved_model_dir}: {det.note}")
        return body(opts, det, config)


def _read_same_size(paths: Sequence[str], failed: List[str]):
    """(index in `paths`, image) of the images that have the first readable image's size (a
    batch holds one)."""
    import visualize

    images = []
    for index, path in enumerate(paths):
        try:
            images.append((index, visualize.read_image(path)))
        except visualize.ImageReadError as e:
            failed.append(str(e))
    same = [(i, im) for i, im in images if im.shape == images[0][1].shape] if images else []
    if len(same) < len(images):
        h, w = images[0][1].shape[:2]
        print(f"{PROG}: benchmarking the {len(same)} image(s) of size {w}x{h} (a batch holds "
              f"one size)", file=sys.stderr)
    return same


def _draw_first(opts: InspectOptions, det: Detector, config: Config, paths: Sequence[str],
                index: int, image) -> None:
    """saved_model_benchmark --output_image_dir: draw the first benchmarked image into
    <dir>/<its stem>.jpg (checked up front for the first input; again here in case that one
    could not be read)."""
    import inference
    import visualize
    from dataset import label_maps

    plan, inputs = inference.image_plan(paths, opts.output_image_dir)
    out = plan[0].files[index]
    outputs.check_plan([dataclasses.replace(plan[0], files=(out,))], inputs, opts.overwrite)
    found = det.predict(image[None], opts.min_score_thresh)[0]
    thresh = det.score_thresh if opts.min_score_thresh is None else opts.min_score_thresh
    visualize.write_image(visualize.draw_detections(
        image, found, label_maps.for_config(config), thresh, opts.max_boxes_to_draw,
        opts.line_thickness), out)
    print(f"wrote {out} ({len(found.filter(thresh))} detections)")


def _benchmark_exported(opts: InspectOptions, det: Detector, config: Config) -> int:
    import numpy as np

    import inference
    import visualize

    paths, problems = visualize.expand_image_inputs(opts.input_image)
    failed: List[str] = []
    images = _read_same_size(paths, failed)
    if not images:
        return _report_failures(problems + failed)
    result = inference.benchmark_detector(det, np.stack([im for _, im in images]),
                                          max(1, opts.batch_size), opts.bm_runs,
                                          name=opts.saved_model_dir,
                                          trace_filename=opts.trace_filename,
                                          score_thresh=opts.min_score_thresh,
                                          overwrite=opts.overwrite)
    print(result.summary())
    if opts.output_image_dir:
        _draw_first(opts, det, config, paths, *images[0])
    return _report_failures(problems + failed)


def _video_exported(opts: InspectOptions, det: Detector, config: Config) -> int:
    import inference
    import visualize
    from dataset import label_maps

    show = False
    if not opts.output_video:
        show, why = visualize.display_available()
        if not show:
            print(f"{PROG}: cannot show the frames: {why}. Running detection on every frame "
                  f"without showing it; pass --output_video=out.mp4 to save the annotated "
                  f"video.", file=sys.stderr)
    summary = inference.detect_video(det, opts.input_video, opts.output_video,
                                     label_maps.for_config(config), opts.min_score_thresh,
                                     opts.max_boxes_to_draw, opts.line_thickness, show=show,
                                     overwrite=opts.overwrite)
    fps = summary.frames / summary.seconds if summary.seconds else 0.0
    print(f"processed {summary.frames} frames of {opts.input_video} ({fps:.1f} frames/s)"
          + (f"; wrote {summary.output}" if summary.output else ""))
    return 0


def _eval_exported(opts: InspectOptions, det: Detector, config: Config) -> int:
    """COCO AP of `det` on --val_json_file's images and, with --compare_to, of that model too,
    and the difference."""
    import detectors
    import inference

    del config
    found = inference.evaluate_detector(det, opts.val_json_file, opts.image_dir,
                                        opts.min_score_thresh)
    print(f"{opts.saved_model_dir}: {found.summary()}")
    failed = list(found.failed)
    if _is_set(opts.compare_to):
        precision = opts.openvino_precision if opts.compare_to.lower().endswith(".xml") else None
        with detectors.load_detector(opts.compare_to, opts.threads, precision) as other:
            if other.note:
                print(f"model {opts.compare_to}: {other.note}")
            base = inference.evaluate_detector(other, opts.val_json_file, opts.image_dir,
                                               opts.min_score_thresh)
        print(f"{opts.compare_to}: {base.summary()}")
        print(f"difference ({os.path.basename(opts.saved_model_dir)} - "
              f"{os.path.basename(opts.compare_to)}): "
              + ", ".join(f"{k} {found.metrics[k] - base.metrics[k]:+.3f}"
                          for k in inference.CocoEvaluation.KEYS))
    return _report_failures(failed)


RUNMODES: Dict[str, Callable[[InspectOptions], int]] = {
    "dry": _dry,
    "freeze": _freeze,
    "bm": _bm,
    "ckpt": _ckpt,
    "infer": _infer,
    "saved_model": _saved_model,
    "saved_model_infer": lambda opts: _run_exported(opts, _detect_images),
    "saved_model_benchmark": lambda opts: _run_exported(opts, _benchmark_exported),
    "saved_model_video": lambda opts: _run_exported(opts, _video_exported),
    "onnx": _file_export,
    "openvino": _file_export,
    "saved_model_eval": lambda opts: _run_exported(opts, _eval_exported),
}


# -------------------------------------------------------------------------------------------------
# Options: the flags
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class InspectOptions:
    """One field per command-line flag (same name and default)."""

    runmode: str = cli.field("dry", "What to do.", choices=tuple(RUNMODES))
    model_name: str = cli.field("efficientdet-d0", "Model: efficientdet-d0 .. efficientdet-d7.")
    logdir: str = cli.field("/tmp/deff/", "Output directory for dry and freeze; never one that "
                            "holds another run's config.yaml or checkpoint. Never deleted.")
    hparams: str = cli.field("", "Overrides: 'k=v,k2=v2', a .yaml file, or both.")
    batch_size: int = cli.field(1, "Batch size. 0 exports a dynamic-batch model (saved_model, "
                                "onnx, openvino); dry, freeze and bm need >= 1.",
                                bounds="[0, 65536]")
    bm_runs: int = cli.field(10, "Timed runs in bm and saved_model_benchmark (after 5 warm-up "
                             "runs).", bounds="[1, inf)")
    threads: int = cli.field(0, "Intra-op threads (0: TensorFlow's default).",
                             bounds="[0, 1024]")
    xla: bool = cli.field(False, "bm: run with XLA JIT (global_jit_level ON_2).")
    ckpt_path: Optional[str] = cli.field(
        None, "Checkpoint prefix or directory to restore; '_' or unset: random weights. A "
        "directory's config.yaml (written by training) sets the hparams.")
    export_ckpt: Optional[str] = cli.field(None, "ckpt: save the restored (EMA) weights as a "
                                           "new checkpoint with this prefix.")
    trace_filename: Optional[str] = cli.field(None, "bm, saved_model_benchmark: also write a "
                                              "Chrome trace of one run here.")
    input_image: Optional[str] = cli.field(
        None, "Image path, glob pattern, or comma-separated list of them (infer, "
        "saved_model_infer, saved_model_benchmark).")
    output_image_dir: Optional[str] = cli.field(
        None, "Where annotated images are written, named after their inputs: <stem>.jpg (x.jpg, "
        "x-1.jpg when two inputs share a stem); never over an input.")
    input_video: Optional[str] = cli.field(None, "saved_model_video: the input video file.")
    output_video: Optional[str] = cli.field(None, "saved_model_video: write the annotated "
                                            "video here (mp4v codec); never the input video.")
    line_thickness: Optional[int] = cli.field(None, "Box line thickness in pixels (default: "
                                              "scaled to the image).", bounds="[1, 100]")
    # The ranges of the hparams they replace (pinned by a test).
    max_boxes_to_draw: Optional[int] = cli.field(
        None, "Most detections per image (default nms_configs.max_output_size); at export, the "
        "number of output rows.", bounds="[1, 10000]")
    min_score_thresh: Optional[float] = cli.field(
        None, "Score threshold (default nms_configs.score_thresh); at export, the model's "
        "default threshold.", bounds="[0, 1]")
    saved_model_dir: str = cli.field("/tmp/saved_model", "SavedModel directory (exported or "
                                     "read), or a .pb, .tflite, .onnx or .xml file to read.")
    tflite_path: Optional[str] = cli.field(None, "saved_model: also convert to TFLite here.")
    tflite_input_size: Optional[str] = cli.field(
        None, "saved_model: fix the TFLite model's image size, 'WxH' (e.g. 1280x720, a "
        "camera's frames; needs --batch_size >= 1). Every tensor is then static, so TFLite runs "
        "the model on its XNNPACK delegate; the model takes only images of that size.")
    onnx_path: Optional[str] = cli.field(None, "onnx: output file (default "
                                         "<saved_model_dir>/<model_name>.onnx).")
    openvino_path: Optional[str] = cli.field(
        None, "saved_model: also write OpenVINO IR here (.xml, plus .bin beside it); openvino: "
        "the output .xml (default <saved_model_dir>/<model_name>.xml).")
    openvino_precision: Optional[str] = cli.field(
        None, "Inference precision when running an OpenVINO .xml model: f32 (when unset: the "
        "checkpoint's detections), bf16 (run in f32 on CPUs without native bf16; the benchmark "
        "line says so), or auto (the runtime's own choice: bf16 on CPUs with native bf16).",
        choices=("f32", "bf16", "auto"))
    overwrite: bool = cli.field(
        False, "Replace output files that already exist (pictures, video, export files, trace, "
        "exported checkpoint). Never an input, a non-empty --saved_model_dir or another run's "
        "checkpoint or config.yaml.")
    verbose: bool = cli.field(False, "Log debug lines too, among them the resolved config.")
    openvino_int8_calibration: Optional[str] = cli.field(
        None, "openvino, or saved_model with --openvino_path: also write an int8 IR beside the "
        "f32 one (<name>_int8.xml + .bin) by post-training quantisation, calibrated on these "
        "images: a glob of TFRecord shards of the training split, or of image files "
        "(comma-separated globs).")
    tflite_int8_calibration: Optional[str] = cli.field(
        None, "saved_model with --tflite_path: make the TFLite model full-integer int8, "
        "calibrated on these images (TFRecord shards of the training split, or image files); "
        "ops without int8 kernels stay float.")
    calibration_images: int = cli.field(
        300, "Most calibration images read from --openvino_int8_calibration or "
        "--tflite_int8_calibration (all of them when the set holds fewer).", bounds="[1, inf)")
    compare_to: Optional[str] = cli.field(
        None, "saved_model_eval: also evaluate this exported model (e.g. the float model a "
        "quantised one was made from) and print the difference.")
    val_json_file: Optional[str] = cli.field(
        None, "saved_model_eval: COCO instances json of the images to evaluate on (its image "
        "ids and file names).")
    image_dir: Optional[str] = cli.field(
        None, "saved_model_eval: the directory holding --val_json_file's images (by "
        "file_name).")


# -------------------------------------------------------------------------------------------------
# Checking the options before any work
# -------------------------------------------------------------------------------------------------
# Flags each runmode cannot run without.
_REQUIRED = {"infer": ("input_image",), "saved_model_infer": ("input_image",),
             "saved_model_benchmark": ("input_image",), "saved_model_video": ("input_video",),
             "ckpt": ("ckpt_path",), "saved_model_eval": ("val_json_file", "image_dir")}
# Runmodes that build the raw network with a static batch.
_STATIC_BATCH = ("dry", "freeze", "bm")
# Runmodes that restore --ckpt_path when it is given.
_RESTORING = ("dry", "freeze", "bm", "ckpt", "infer", "saved_model", "onnx", "openvino")
# What each runmode writes: (flag, is a directory).
_OUTPUTS = {
    "dry": (("logdir", True),), "freeze": (("logdir", True),),
    "bm": (("trace_filename", False),), "ckpt": (("export_ckpt", False),),
    "infer": (("output_image_dir", True),),
    "saved_model": (("saved_model_dir", True), ("tflite_path", False),
                    ("openvino_path", False)),
    "onnx": (("onnx_path", False),),
    "openvino": (("openvino_path", False),),
    "saved_model_infer": (("output_image_dir", True),),
    "saved_model_benchmark": (("output_image_dir", True), ("trace_filename", False)),
    "saved_model_video": (("output_video", False),),
    "saved_model_eval": (),
}


def _is_set(value: Optional[str]) -> bool:
    return bool(value) and value != "_"


def _check_numbers(opts: InspectOptions) -> None:
    """Every number in its flag's range (InspectOptions), then the runmode's own rule."""
    cli.check_bounds(opts)
    if opts.batch_size == 0 and opts.runmode in _STATIC_BATCH:
        raise errors.UsageError(
            f"--batch_size must be >= 1 for --runmode={opts.runmode} (0, a dynamic batch, is "
            f"for the export runmodes saved_model, onnx and openvino)")


def tflite_input_size(opts: InspectOptions) -> Optional[Tuple[int, int]]:
    """--tflite_input_size as (height, width), or None; UsageError naming the flag."""
    import hparams_config
    import utils

    if not _is_set(opts.tflite_input_size):
        return None
    if opts.runmode != "saved_model" or not _is_set(opts.tflite_path):
        raise errors.UsageError("--tflite_input_size applies to --runmode=saved_model with "
                                "--tflite_path")
    if opts.batch_size < 1:
        raise errors.UsageError("--tflite_input_size needs --batch_size >= 1: a dynamic batch "
                                "keeps the TFLite model's tensors dynamic")
    try:
        height, width = utils.parse_image_size(opts.tflite_input_size)
    except errors.UserError:
        raise errors.UsageError(f"--tflite_input_size '{opts.tflite_input_size}' must look "
                                f"like WxH, e.g. 1280x720") from None
    if max(height, width) > hparams_config.MAX_IMAGE_SIZE:
        raise errors.UsageError(f"--tflite_input_size '{opts.tflite_input_size}': each side "
                                f"must be <= {hparams_config.MAX_IMAGE_SIZE}, as image_size's")
    return height, width


def _check_openvino(opts: InspectOptions) -> None:
    """--openvino_path must name an .xml file; --openvino_precision needs an .xml to run."""
    writes = opts.runmode in ("saved_model", "openvino")
    if writes and _is_set(opts.openvino_path) and not opts.openvino_path.endswith(".xml"):
        raise errors.UsageError(f"--openvino_path '{opts.openvino_path}' must end in .xml (the "
                                f"weights go into the .bin beside it)")
    if opts.openvino_precision is not None and not (
            opts.runmode in EXPORTED_MODEL_MODES
            and opts.saved_model_dir.lower().endswith(".xml")):
        raise errors.UsageError(
            f"--openvino_precision={opts.openvino_precision} applies to running an OpenVINO "
            f"model: --runmode={'|'.join(EXPORTED_MODEL_MODES)} with --saved_model_dir=<model>.xml")


# The runmodes (and the output flag each needs there) of the int8 calibration flags.
_INT8_RUNMODES = {"openvino_int8_calibration": {"openvino": None, "saved_model": "openvino_path"},
                  "tflite_int8_calibration": {"saved_model": "tflite_path"}}


def _check_int8(opts: InspectOptions) -> None:
    """A calibration flag goes with the export it quantises."""
    for flag, modes in _INT8_RUNMODES.items():
        if not _is_set(getattr(opts, flag)):
            continue
        needs = modes.get(opts.runmode, "")
        if needs == "" or (needs and not _is_set(getattr(opts, needs))):
            uses = " or ".join(f"--runmode={m}" + (f" with --{n}" if n else "")
                               for m, n in modes.items())
            raise errors.UsageError(f"--{flag} applies to {uses}")


def _check_eval(opts: InspectOptions) -> None:
    """saved_model_eval's json, image directory and second model exist; --compare_to is its."""
    if _is_set(opts.compare_to) and opts.runmode != "saved_model_eval":
        raise errors.UsageError("--compare_to applies to --runmode=saved_model_eval")
    if opts.runmode != "saved_model_eval":
        return
    import tensorflow as tf

    if not tf.io.gfile.exists(opts.val_json_file) or tf.io.gfile.isdir(opts.val_json_file):
        raise errors.UsageError(f"--val_json_file '{opts.val_json_file}': no such file")
    if not tf.io.gfile.isdir(opts.image_dir):
        raise errors.UsageError(f"--image_dir '{opts.image_dir}': no such directory")
    if _is_set(opts.compare_to) and not tf.io.gfile.exists(opts.compare_to):
        raise errors.UsageError(f"--compare_to '{opts.compare_to}' does not exist: give an "
                                f"exported model (a SavedModel directory or a .pb, .tflite, "
                                f".onnx or .xml file)")


def _check_inputs(opts: InspectOptions) -> None:
    import tensorflow as tf

    import checkpoint_io

    for flag in _REQUIRED.get(opts.runmode, ()):
        if not _is_set(getattr(opts, flag)):
            raise errors.UsageError(f"--runmode={opts.runmode} needs --{flag}")
    if opts.runmode in _RESTORING and _is_set(opts.ckpt_path):
        try:
            checkpoint_io.resolve_checkpoint(opts.ckpt_path)
        except errors.CheckpointError as e:
            raise errors.UsageError(f"--ckpt_path: {e}") from None
    if opts.runmode in EXPORTED_MODEL_MODES and not tf.io.gfile.exists(opts.saved_model_dir):
        raise errors.UsageError(
            f"--saved_model_dir '{opts.saved_model_dir}' does not exist: give a SavedModel "
            f"directory or a .pb, .tflite, .onnx or .xml file written by --runmode=saved_model, "
            f"onnx or openvino")
    if opts.runmode == "saved_model_video" and not os.path.isfile(opts.input_video):
        raise errors.UsageError(f"--input_video '{opts.input_video}': no such file")


def _output_locations(opts: InspectOptions) -> List[Tuple[str, str, bool]]:
    """(flag, path, is a directory) of every location the runmode writes."""
    out = []
    for flag, is_dir in _OUTPUTS[opts.runmode]:
        path = getattr(opts, flag)
        if opts.runmode in _FILE_EXPORTS and flag == _FILE_EXPORTS[opts.runmode][0]:
            flag, path = _file_export_path(opts)
        if path:
            out.append((flag, path, is_dir))
    return out + _int8_locations(opts)


def _int8_locations(opts: InspectOptions) -> List[Tuple[str, str, bool]]:
    """The int8 IR written beside the f32 one (named by --openvino_path, the flag that places
    it), when --openvino_int8_calibration asks for it."""
    import quantize

    if not (_is_set(opts.openvino_int8_calibration)
            and opts.runmode in _INT8_RUNMODES["openvino_int8_calibration"]):
        return []
    flag, path = (_file_export_path(opts) if opts.runmode == "openvino"
                  else ("openvino_path", opts.openvino_path))
    return [(flag, quantize.int8_path(path), False)] if path else []


def _files_of(opts: InspectOptions, flag: str, value: str) -> List[str]:
    """The files the runmode writes through `flag`, whose value is `value`."""
    import export
    import inference
    import visualize

    mode = opts.runmode
    if flag == "logdir":
        return export.raw_network_outputs(value, opts.model_name, frozen=mode == "freeze")
    if flag == "export_ckpt":
        return export.checkpoint_outputs(value)
    if flag == "output_image_dir":
        names = inference.image_outputs(visualize.expand_image_inputs(opts.input_image)[0],
                                        value)
        return names[:1] if mode == "saved_model_benchmark" else names
    if flag == "openvino_path" or mode == "openvino":
        return export.openvino_outputs(value)
    if flag in ("tflite_path", "onnx_path") or mode == "onnx":
        return export.model_file_outputs(value)
    if flag == "saved_model_dir":
        return export.saved_model_outputs(value, opts.model_name)
    return [value]  # trace_filename, output_video


def planned_outputs(opts: InspectOptions) -> List[outputs.Planned]:
    """Every file the runmode will write, by flag (outputs.check_plan checks them)."""
    return [outputs.Planned(flag, path, tuple(_files_of(opts, flag, path)), is_dir)
            for flag, path, is_dir in _output_locations(opts)]


def _model_files(path: str) -> List[str]:
    """The files of an exported model (a SavedModel directory, or a file and what lies beside
    it: settings, OpenVINO weights)."""
    import export

    if os.path.isdir(path):
        return [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
    if path.lower().endswith(".xml"):
        return export.openvino_outputs(path)
    return export.model_file_outputs(path)


def run_inputs(opts: InspectOptions) -> List[Tuple[str, str]]:
    """(flag, file) of every file the runmode reads; no output may land on one of them."""
    import run_dir
    import visualize

    mode = opts.runmode
    found = [("hparams", piece.strip()) for piece in opts.hparams.split(",")
             if piece.strip().lower().endswith((".yaml", ".yml"))]
    if mode in _RESTORING and _is_set(opts.ckpt_path):
        found += [("ckpt_path", f) for f in run_dir.checkpoint_inputs(opts.ckpt_path)]
    if mode in EXPORTED_MODEL_MODES:
        found += [("saved_model_dir", f) for f in _model_files(opts.saved_model_dir)]
    if "input_image" in _REQUIRED.get(mode, ()):
        found += [("input_image", p)
                  for p in visualize.expand_image_inputs(opts.input_image)[0]]
    if mode == "saved_model_video":
        found.append(("input_video", opts.input_video))
    for flag in _INT8_RUNMODES:
        if _is_set(getattr(opts, flag)):
            import quantize

            found += [(flag, p) for p in quantize.calibration_files(getattr(opts, flag))]
    return found


def _check_outputs(opts: InspectOptions) -> None:
    import run_dir

    plan = planned_outputs(opts)
    outputs.check_locations(plan)
    for p in plan:  # the model-directory contract: --overwrite does not lift it
        if p.flag == "logdir":
            problem = run_dir.other_run_problem(p.value)
        elif p.flag == "export_ckpt":
            problem = run_dir.other_run_problem(os.path.dirname(p.value) or ".")
        elif opts.runmode == "saved_model" and p.flag == "saved_model_dir":
            problem = outputs.nonempty_dir_problem(p.value)
        else:
            problem = None
        if problem:
            where = p.value if p.flag != "export_ckpt" else os.path.dirname(p.value) or "."
            raise errors.OutputError(f"--{p.flag} '{where}' {problem}")
    outputs.check_plan(plan, run_inputs(opts), opts.overwrite)


def check_options(opts: InspectOptions) -> None:
    """Raise errors.UsageError (batch sizes, missing flags or inputs) or errors.OutputError
    (outputs that cannot be written, would replace an input, exist without --overwrite, or land
    in another run's directory), naming the flag and what to do. Creates nothing."""
    if opts.runmode not in RUNMODES:
        raise errors.UsageError(f"--runmode '{opts.runmode}' is unknown; valid runmodes: "
                                f"{', '.join(RUNMODES)}")
    _check_numbers(opts)
    tflite_input_size(opts)
    _check_inputs(opts)
    _check_int8(opts)
    _check_eval(opts)
    _check_outputs(opts)
    _check_openvino(opts)


def run(opts: InspectOptions) -> int:
    """Check the options, then run the runmode; returns the exit status (1: some inputs
    failed). A user mistake raises errors.UserError; anything else is a bug."""
    check_options(opts)
    return RUNMODES[opts.runmode](opts)


def main(argv: Sequence[str]) -> int:
    del argv
    opts = cli.options_from_flags(InspectOptions)
    cli.setup_logging(opts.verbose)
    cli.import_tensorflow()
    return cli.run_and_report(PROG, run, opts)


if __name__ == "__main__":
    cli.define_flags(InspectOptions)
    app.run(main)

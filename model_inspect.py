r"""Inspect, export and run a detector: the command line over inference.py, export.py, quantize.py.

    python model_inspect.py --runmode=bm --model_name=efficientdet-d0
    python model_inspect.py --runmode=saved_model --ckpt_path=efficientdet-d0 \
        --saved_model_dir=/tmp/saved_model
    python model_inspect.py --runmode=saved_model_infer --saved_model_dir=/tmp/saved_model \
        --input_image='imgs/*.jpg' --output_image_dir=/tmp/out

README.md and docs/serving.md describe the runmodes and their flags. Every flag, input and output is
checked before any graph is built; an existing file is replaced only with --overwrite, an input
never. In Python, `run(InspectOptions(...))` runs one runmode (`RUNMODES`; what it needs, writes
and restores is its record in inspect_options.RUNMODE_OPTIONS) and returns the exit status (1
when some inputs failed; the others are processed).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, Sequence, Union

from absl import app, logging

import cli
import inspect_options
import outputs
from inspect_options import (
    OPENVINO_INT8,
    RUNMODE_OPTIONS,
    InspectOptions,
    file_export_path,
    is_set,
    tflite_input_size,
)

if TYPE_CHECKING:
    from detectors import Detector
    from hparams_config import Config
    from inference import BenchmarkResult, EndToEndResult

PROG = "model_inspect.py"


# -------------------------------------------------------------------------------------------------
# The config of a run
# -------------------------------------------------------------------------------------------------
def load_config(opts: InspectOptions) -> Config:
    """The model's config (run_dir.inference_config): --model_name, then the config.yaml of the
    exported model (for the runmodes that run one) or of --ckpt_path's directory, then
    --hparams; validated and, for a runmode that restores --ckpt_path, compared with what the
    checkpoint holds. An exported model without config.yaml beside it takes its classes from
    its export settings. --verbose logs it."""
    import run_dir

    mode = RUNMODE_OPTIONS[opts.runmode]
    exported = opts.saved_model_dir if mode.exported else None
    config = run_dir.inference_config(opts.model_name, opts.hparams, opts.ckpt_path, exported,
                                      restores=mode.restores)
    if exported and not run_dir.config_dir(exported):  # a copied export: settings know classes
        import export

        config = export.with_recorded_classes(config, exported)
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


def _write_results_json(opts: InspectOptions,
                        result: Union[BenchmarkResult, EndToEndResult]) -> None:
    """--results_json: a timing result (inference.BenchmarkResult or EndToEndResult) as JSON,
    for scripts such as benchmarks/; the file was checked by outputs.py's policy up front."""
    if opts.results_json:
        outputs.write_file(opts.results_json, json.dumps(result.as_dict(), indent=1) + "\n")


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
    _write_results_json(opts, result)
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
    """The calibration set of --<flag> (read and checked before any graph is built), or None."""
    import quantize

    if not is_set(getattr(opts, flag)):
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

    openvino_calibration = _calibration(opts, OPENVINO_INT8)
    tflite_calibration = _calibration(opts, "tflite_int8_calibration")
    size = tflite_input_size(opts)
    quantizer = (quantize.TFLiteInt8(tflite_calibration, opts.batch_size or None, size)
                 if tflite_calibration else None)
    result = export.export_saved_model(
        load_config(opts), opts.saved_model_dir, opts.model_name, opts.ckpt_path,
        opts.batch_size or None, opts.min_score_thresh, opts.max_boxes_to_draw,
        opts.tflite_path, opts.openvino_path, size, opts.overwrite, tflite_quantizer=quantizer)
    s = result.settings
    print(f"wrote SavedModel {result.saved_model_dir} (signatures serving_default: uint8 "
          f"image_arrays, serving_base64: encoded image_files; batch {s['batch_size']})")
    print(f"wrote frozen graph {result.frozen_graph}")
    if result.tflite:
        runs_on = (f"{opts.tflite_input_size} images only, XNNPACK" if size
                   else "images of any size, no XNNPACK")
        kind = (f"int8 calibrated on {len(tflite_calibration)} image(s) of "
                f"{tflite_calibration.pattern}: {quantize.FLOAT_PARTS}; {quantizer.summary}"
                if quantizer else "builtin ops only")
        print(f"wrote TFLite model {result.tflite} ({kind}; score threshold fixed at "
              f"{s['score_thresh']}; {runs_on})")
    if result.openvino:
        print(f"wrote OpenVINO model {result.openvino} (+ .bin; inputs image_arrays:0, "
              f"score_thresh:0)")
        if openvino_calibration:
            _write_openvino_int8(result.openvino, openvino_calibration, opts.overwrite)
    print(f"export settings: {s['nms']}; feed tensor 'score_thresh' to change the "
          f"threshold at run time")
    return 0


def _file_export(opts: InspectOptions, export_fn: Callable[..., str], wrote: str) -> int:
    """A single-file export: `export_fn` into --<its flag> (or the default file), then the line
    'wrote <wrote>'; with --openvino_int8_calibration, the int8 IR beside it too."""
    calibration = _calibration(opts, OPENVINO_INT8)
    path = export_fn(load_config(opts), file_export_path(opts)[1], opts.ckpt_path,
                     opts.batch_size or None, opts.min_score_thresh, opts.max_boxes_to_draw,
                     overwrite=opts.overwrite)
    print("wrote " + wrote.format(path=path))
    if calibration:
        _write_openvino_int8(path, calibration, opts.overwrite)
    return 0


def _onnx(opts: InspectOptions) -> int:
    import export

    return _file_export(opts, export.export_onnx, "ONNX model {path} (input image_arrays:0 "
                        "uint8 [B, h, w, 3]; optional input score_thresh:0)")


def _openvino(opts: InspectOptions) -> int:
    import export

    return _file_export(opts, export.export_openvino, "OpenVINO model {path} (+ .bin; inputs "
                        "image_arrays:0 uint8 [B, h, w, 3], score_thresh:0)")


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


def _benchmark_exported(opts: InspectOptions, det: Detector, config: Config) -> int:
    import numpy as np

    import inference
    import visualize
    from dataset import label_maps

    paths, problems = visualize.expand_image_inputs(opts.input_image)
    images, failed = inference.read_same_size(paths)
    if not images:
        return _report_failures(problems + failed)
    if len(images) < len(paths) - len(failed):
        h, w = images[0][1].shape[:2]
        print(f"{PROG}: benchmarking the {len(images)} image(s) of size {w}x{h} (a batch holds "
              f"one size)", file=sys.stderr)
    result = inference.benchmark_detector(
        det, np.stack([im for _, im in images]), max(1, opts.batch_size), opts.bm_runs,
        name=opts.saved_model_dir, trace_filename=opts.trace_filename,
        score_thresh=opts.min_score_thresh, overwrite=opts.overwrite)
    print(result.summary())
    _write_results_json(opts, result)
    if opts.output_image_dir:
        out, count = inference.draw_one(
            det, paths, *images[0], opts.output_image_dir, label_maps.for_config(config),
            opts.min_score_thresh, opts.max_boxes_to_draw, opts.line_thickness, opts.overwrite)
        print(f"wrote {out} ({count} detections)")
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
    if is_set(opts.compare_to):
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
    return _report_failures(list(found.failed))


def _saved_model_infer(opts: InspectOptions) -> int:
    return _run_exported(opts, _detect_images)


def _saved_model_benchmark(opts: InspectOptions) -> int:
    return _run_exported(opts, _benchmark_exported)


def _saved_model_video(opts: InspectOptions) -> int:
    return _run_exported(opts, _video_exported)


def _saved_model_eval(opts: InspectOptions) -> int:
    return _run_exported(opts, _eval_exported)


# The function doing each runmode's work; what it needs, writes and restores is its record in
# inspect_options.RUNMODE_OPTIONS (same names, same order).
RUNMODES: Dict[str, Callable[[InspectOptions], int]] = {
    "dry": _dry,
    "freeze": _freeze,
    "bm": _bm,
    "ckpt": _ckpt,
    "infer": _infer,
    "saved_model": _saved_model,
    "saved_model_infer": _saved_model_infer,
    "saved_model_benchmark": _saved_model_benchmark,
    "saved_model_video": _saved_model_video,
    "onnx": _onnx,
    "openvino": _openvino,
    "saved_model_eval": _saved_model_eval,
}


def run(opts: InspectOptions) -> int:
    """Check the options (inspect_options.check_options), then run the runmode; returns the
    exit status (1: some inputs failed). A user mistake raises errors.UserError; anything else
    is a bug."""
    inspect_options.check_options(opts)
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

"""model_inspect.py's options, what each runmode takes and gives, and the checks before any work.

* `InspectOptions`: one field per flag (name, default, help, allowed range), as main.py's
  RunOptions (run_options.py).
* `RUNMODE_OPTIONS`: one `Runmode` record per runmode (the flags it needs, what it writes and
  restores); model_inspect.RUNMODES maps the same names to the functions that do the work.
* `check_options(opts)`: every number against its flag's range, the flags and inputs the
  runmode needs, and every file it will write (outputs.py's policy, one line naming the flag):
  an existing file is replaced only with --overwrite, an input (image, video, checkpoint, model,
  hparams file, calibration image) never; dry and freeze never write into a directory holding
  another run's config.yaml or checkpoint, nor saved_model into a non-empty --saved_model_dir,
  whatever --overwrite says. Only reads: creates nothing.

Kept free of TensorFlow at import time, so `--help` and flag errors return at once.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Tuple

import cli
import errors
import outputs

OPENVINO_INT8 = "openvino_int8_calibration"
# The int8 calibration flags, in the order they are checked.
_CALIBRATIONS = (OPENVINO_INT8, "tflite_int8_calibration")


@dataclasses.dataclass(frozen=True)
class Output:
    """A location a runmode writes: its flag, and what it holds (a kind `_files_of` knows)."""

    flag: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Runmode:
    """What one runmode takes and gives; the checks read nothing else about it.

    needs:          flags it cannot run without
    writes:         its outputs, checked by outputs.py's policy before any work
    restores:       it restores --ckpt_path when given
    exported:       it runs the exported model of --saved_model_dir
    static_batch:   it builds the raw network with a static batch (--batch_size >= 1)
    calibrates:     {int8 calibration flag: the output flag of the model it quantises (None:
                    the runmode's own file)}
    default_suffix: a single-file export's file when its flag (writes[0]) is unset:
                    <saved_model_dir>/<model_name><suffix>
    """

    needs: Tuple[str, ...] = ()
    writes: Tuple[Output, ...] = ()
    restores: bool = False
    exported: bool = False
    static_batch: bool = False
    calibrates: Mapping[str, Optional[str]] = dataclasses.field(default_factory=dict)
    default_suffix: str = ""


_TIMING = (Output("trace_filename", "file"), Output("results_json", "file"))
_PICTURES = Output("output_image_dir", "pictures")
# One record per runmode, in the order --help lists them.
RUNMODE_OPTIONS: Dict[str, Runmode] = {
    "dry": Runmode(writes=(Output("logdir", "raw_network"),), restores=True, static_batch=True),
    "freeze": Runmode(writes=(Output("logdir", "frozen_network"),), restores=True,
                      static_batch=True),
    "bm": Runmode(writes=_TIMING, restores=True, static_batch=True),
    "ckpt": Runmode(needs=("ckpt_path",), writes=(Output("export_ckpt", "checkpoint"),),
                    restores=True),
    "infer": Runmode(needs=("input_image",), writes=(_PICTURES,), restores=True),
    "saved_model": Runmode(
        writes=(Output("saved_model_dir", "saved_model"), Output("tflite_path", "model_file"),
                Output("openvino_path", "openvino")), restores=True,
        calibrates={OPENVINO_INT8: "openvino_path", "tflite_int8_calibration": "tflite_path"}),
    "saved_model_infer": Runmode(needs=("input_image",), writes=(_PICTURES,), exported=True),
    "saved_model_benchmark": Runmode(
        needs=("input_image",), writes=(Output("output_image_dir", "first_picture"), *_TIMING),
        exported=True),
    "saved_model_video": Runmode(needs=("input_video",), writes=(Output("output_video", "file"),),
                                 exported=True),
    "onnx": Runmode(writes=(Output("onnx_path", "model_file"),), restores=True,
                    default_suffix=".onnx"),
    "openvino": Runmode(writes=(Output("openvino_path", "openvino"),), restores=True,
                        calibrates={OPENVINO_INT8: None}, default_suffix=".xml"),
    "saved_model_eval": Runmode(needs=("val_json_file", "image_dir"), exported=True),
}


@dataclasses.dataclass
class InspectOptions:
    """One field per command-line flag (same name and default)."""

    runmode: str = cli.field("dry", "What to do.", choices=tuple(RUNMODE_OPTIONS))
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
    results_json: Optional[str] = cli.field(
        None, "bm, saved_model_benchmark: also write the timing result here as JSON, for "
        "scripts: the printed line's numbers (mean_image_ms, median_image_ms, fps; bm: params, "
        "flops_per_image) and the run's settings.")


# -------------------------------------------------------------------------------------------------
# Checking the options before any work
# -------------------------------------------------------------------------------------------------
# Output kinds that are directories (the files go inside).
_DIRECTORIES = ("raw_network", "frozen_network", "pictures", "first_picture", "saved_model")


def is_set(value: Optional[str]) -> bool:
    """Whether a path flag names something ('_', like unset, means random weights)."""
    return bool(value) and value != "_"


def check_options(opts: InspectOptions) -> None:
    """Raise errors.UsageError (batch sizes, missing flags or inputs) or errors.OutputError
    (outputs that cannot be written, would replace an input, exist without --overwrite, or land
    in another run's directory), naming the flag and what to do. Creates nothing."""
    if opts.runmode not in RUNMODE_OPTIONS:
        raise errors.UsageError(f"--runmode '{opts.runmode}' is unknown; valid runmodes: "
                                f"{', '.join(RUNMODE_OPTIONS)}")
    mode = RUNMODE_OPTIONS[opts.runmode]
    _check_numbers(opts, mode)
    tflite_input_size(opts)
    _check_timing_outputs(opts, mode)
    _check_inputs(opts, mode)
    _check_int8(opts, mode)
    _check_eval(opts)
    _check_outputs(opts, mode)
    _check_openvino(opts, mode)


def _check_numbers(opts: InspectOptions, mode: Runmode) -> None:
    """Every number in its flag's range (InspectOptions), then the runmode's own rule."""
    cli.check_bounds(opts)
    if opts.batch_size == 0 and mode.static_batch:
        raise errors.UsageError(
            f"--batch_size must be >= 1 for --runmode={opts.runmode} (0, a dynamic batch, is "
            f"for the export runmodes saved_model, onnx and openvino)")


def _writes(mode: Runmode, flag: str) -> bool:
    return any(output.flag == flag for output in mode.writes)


def tflite_input_size(opts: InspectOptions) -> Optional[Tuple[int, int]]:
    """--tflite_input_size as (height, width), or None; UsageError naming the flag."""
    import hparams_config
    import utils

    if not is_set(opts.tflite_input_size):
        return None
    if not (_writes(RUNMODE_OPTIONS[opts.runmode], "tflite_path") and is_set(opts.tflite_path)):
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


def _check_timing_outputs(opts: InspectOptions, mode: Runmode) -> None:
    """A user or script waits for --results_json or --trace_filename: a runmode that writes
    neither says so at once."""
    for flag in ("results_json", "trace_filename"):
        if getattr(opts, flag) and not _writes(mode, flag):
            runs = " or ".join(f"--runmode={name}" for name, m in RUNMODE_OPTIONS.items()
                               if _writes(m, flag))
            raise errors.UsageError(f"--{flag} applies to {runs}")


def _check_inputs(opts: InspectOptions, mode: Runmode) -> None:
    import tensorflow as tf

    import checkpoint_io

    for flag in mode.needs:
        if not is_set(getattr(opts, flag)):
            raise errors.UsageError(f"--runmode={opts.runmode} needs --{flag}")
    if mode.restores and is_set(opts.ckpt_path):
        try:
            checkpoint_io.resolve_checkpoint(opts.ckpt_path)
        except errors.CheckpointError as e:
            raise errors.UsageError(f"--ckpt_path: {e}") from None
    if mode.exported and not tf.io.gfile.exists(opts.saved_model_dir):
        raise errors.UsageError(
            f"--saved_model_dir '{opts.saved_model_dir}' does not exist: give a SavedModel "
            f"directory or a .pb, .tflite, .onnx or .xml file written by --runmode=saved_model, "
            f"onnx or openvino")
    if "input_video" in mode.needs and not os.path.isfile(opts.input_video):
        raise errors.UsageError(f"--input_video '{opts.input_video}': no such file")


def _check_int8(opts: InspectOptions, mode: Runmode) -> None:
    """A calibration flag goes with the export it quantises (`Runmode.calibrates`)."""
    for flag in _CALIBRATIONS:
        if not is_set(getattr(opts, flag)):
            continue
        target = mode.calibrates.get(flag, "")
        if target == "" or (target and not is_set(getattr(opts, target))):
            # The runmodes quantising their own file are named first.
            uses = sorted(((name, m.calibrates[flag]) for name, m in RUNMODE_OPTIONS.items()
                           if flag in m.calibrates), key=lambda use: use[1] is not None)
            raise errors.UsageError(f"--{flag} applies to " + " or ".join(
                f"--runmode={name}" + (f" with --{needs}" if needs else "")
                for name, needs in uses))


def _check_eval(opts: InspectOptions) -> None:
    """saved_model_eval's json, image directory and second model exist; --compare_to is its."""
    if is_set(opts.compare_to) and opts.runmode != "saved_model_eval":
        raise errors.UsageError("--compare_to applies to --runmode=saved_model_eval")
    if opts.runmode != "saved_model_eval":
        return
    import tensorflow as tf

    import coco_json

    problem = coco_json.gt_json_problem(opts.val_json_file)
    if problem:
        raise errors.UsageError(f"--val_json_file '{opts.val_json_file}' {problem}")
    if not tf.io.gfile.isdir(opts.image_dir):
        raise errors.UsageError(f"--image_dir '{opts.image_dir}': no such directory")
    if is_set(opts.compare_to) and not tf.io.gfile.exists(opts.compare_to):
        raise errors.UsageError(f"--compare_to '{opts.compare_to}' does not exist: give an "
                                f"exported model (a SavedModel directory or a .pb, .tflite, "
                                f".onnx or .xml file)")


def _check_openvino(opts: InspectOptions, mode: Runmode) -> None:
    """--openvino_path must name an .xml file; --openvino_precision needs an .xml to run."""
    path = opts.openvino_path
    if _writes(mode, "openvino_path") and is_set(path) and not path.endswith(".xml"):
        raise errors.UsageError(f"--openvino_path '{path}' must end in .xml (the weights go "
                                f"into the .bin beside it)")
    if opts.openvino_precision is not None and not (
            mode.exported and opts.saved_model_dir.lower().endswith(".xml")):
        runs = "|".join(name for name, m in RUNMODE_OPTIONS.items() if m.exported)
        raise errors.UsageError(
            f"--openvino_precision={opts.openvino_precision} applies to running an OpenVINO "
            f"model: --runmode={runs} with --saved_model_dir=<model>.xml")


# -------------------------------------------------------------------------------------------------
# What a runmode writes and reads
# -------------------------------------------------------------------------------------------------
def file_export_path(opts: InspectOptions) -> Tuple[str, str]:
    """(flag, path) of a single-file export (onnx, openvino): its flag (--onnx_path,
    --openvino_path), else <saved_model_dir>/<model_name><suffix>."""
    mode = RUNMODE_OPTIONS[opts.runmode]
    flag = mode.writes[0].flag
    if getattr(opts, flag):
        return flag, getattr(opts, flag)
    return "saved_model_dir", os.path.join(opts.saved_model_dir,
                                           f"{opts.model_name}{mode.default_suffix}")


def _locations(opts: InspectOptions, mode: Runmode) -> List[Tuple[str, str, str]]:
    """(flag, path, kind) of every location the runmode writes; the int8 IR of
    --openvino_int8_calibration goes beside the f32 one (under the flag that places it)."""
    import quantize

    found = []
    for output in mode.writes:
        own_file = mode.default_suffix and output == mode.writes[0]
        flag, path = (file_export_path(opts) if own_file
                      else (output.flag, getattr(opts, output.flag)))
        if path:
            found.append((flag, path, output.kind))
    if OPENVINO_INT8 in mode.calibrates and is_set(opts.openvino_int8_calibration):
        target = mode.calibrates[OPENVINO_INT8]
        flag, path = (target, getattr(opts, target)) if target else file_export_path(opts)
        if path:
            found.append((flag, quantize.int8_path(path), "openvino"))
    return found


def _files_of(opts: InspectOptions, kind: str, path: str) -> List[str]:
    """The files an output of `kind` at `path` consists of."""
    import export
    import inference
    import visualize

    if kind in ("raw_network", "frozen_network"):
        return export.raw_network_outputs(path, opts.model_name, kind == "frozen_network")
    if kind == "checkpoint":
        return export.checkpoint_outputs(path)
    if kind in ("pictures", "first_picture"):
        names = inference.image_outputs(visualize.expand_image_inputs(opts.input_image)[0], path)
        return names[:1] if kind == "first_picture" else names
    if kind == "openvino":
        return export.openvino_outputs(path)
    if kind == "model_file":
        return export.model_file_outputs(path)
    if kind == "saved_model":
        return export.saved_model_outputs(path, opts.model_name)
    return [path]  # a file


def _plan(opts: InspectOptions, mode: Runmode) -> List[Tuple[outputs.Planned, str]]:
    """Every file the runmode will write, by flag, with its output's kind."""
    return [(outputs.Planned(flag, path, tuple(_files_of(opts, kind, path)),
                             kind in _DIRECTORIES), kind)
            for flag, path, kind in _locations(opts, mode)]


def _run_inputs(opts: InspectOptions, mode: Runmode) -> List[Tuple[str, str]]:
    """(flag, file) of every file the runmode reads; no output may land on one of them."""
    import export
    import quantize
    import run_dir
    import visualize

    found = [("hparams", piece.strip()) for piece in opts.hparams.split(",")
             if piece.strip().lower().endswith((".yaml", ".yml"))]
    if mode.restores and is_set(opts.ckpt_path):
        found += [("ckpt_path", f) for f in run_dir.checkpoint_inputs(opts.ckpt_path)]
    if mode.exported:
        found += [("saved_model_dir", f) for f in export.exported_model_files(opts.saved_model_dir)]
    if "input_image" in mode.needs:
        found += [("input_image", p) for p in visualize.expand_image_inputs(opts.input_image)[0]]
    if "input_video" in mode.needs:
        found.append(("input_video", opts.input_video))
    for flag in _CALIBRATIONS:
        if is_set(getattr(opts, flag)):
            found += [(flag, p) for p in quantize.calibration_files(getattr(opts, flag))]
    return found


def _check_outputs(opts: InspectOptions, mode: Runmode) -> None:
    """outputs.py's policy, then the model-directory contract (--overwrite does not lift it):
    no raw network or checkpoint where another run's are, no SavedModel into a non-empty
    directory."""
    import run_dir

    plan = _plan(opts, mode)
    outputs.check_locations([p for p, _ in plan])
    for p, kind in plan:
        where = (os.path.dirname(p.value) or ".") if kind == "checkpoint" else p.value
        if kind in ("raw_network", "frozen_network", "checkpoint"):
            problem = run_dir.other_run_problem(where)
        else:
            problem = outputs.nonempty_dir_problem(where) if kind == "saved_model" else None
        if problem:
            raise errors.OutputError(f"--{p.flag} '{where}' {problem}")
    outputs.check_plan([p for p, _ in plan], _run_inputs(opts, mode), opts.overwrite)

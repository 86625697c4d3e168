"""Every export format, the settings file an export leaves beside it, and writing outputs.

* `save_dry_run`: a checkpoint, the graph and `config.yaml` of the raw network.
* `save_frozen`: the raw network frozen to `<logdir>/<model_name>_frozen.pb`.
* `export_saved_model`: the frozen serving graph (see serving.py; weights as constants) as a
  SavedModel with the signatures `serving_default` (uint8 `image_arrays`) and `serving_base64`
  (encoded `image_files`), the same frozen graph `<model_name>_frozen.pb`, `config.yaml` and,
  optionally, TFLite and OpenVINO models.
* `export_tflite`, `export_tflite_fixed_size`, `export_onnx`: the serving graph for TFLite (builtin
  ops; any image size, or one size on XNNPACK; float, or quantised by a `TFLiteQuantizer` such
  as quantize.TFLiteInt8) and ONNX (tf2onnx).
* `export_openvino`: the frozen serving graph as OpenVINO IR (`.xml` + `.bin`), through ONNX;
  `export_saved_model(openvino_path=...)` writes the same IR beside a SavedModel.
  `import_openvino` imports OpenVINO with its usage telemetry off.
* `eval_ckpt`: restore a checkpoint (EMA-aware) and optionally save its weights as a new one.
* `write_export_settings` / `read_export_settings`: `export_settings.yaml` beside an export
  records its score threshold, detections per image and NMS, so detectors can report them, and
  the model's classes (`num_classes`, `label_map` {id: name}, empty when the model has no
  names), so that any copy of an export names its detections as the checkpoint does
  (`with_recorded_classes`).

Outputs follow outputs.py's policy: each export first checks every file it will write
(`*_outputs` name them) with `outputs.check_plan` (an existing file is replaced only with
`overwrite`, a file the run reads never), then writes each atomically. A SavedModel goes into a
new or empty directory, and the raw network is never written where a training run (or an
earlier dry run) left `config.yaml` or a checkpoint (`run_dir.other_run_problem`), whatever
`overwrite` says.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import tensorflow as tf
import yaml

import checkpoint_io
import errors
import hparams_config
import outputs
import postprocess
import run_dir
import serving
import sessions
import utils
from dataset import label_maps

tf1 = tf.compat.v1

EXPORT_SETTINGS = "export_settings.yaml"


# -------------------------------------------------------------------------------------------------
# What each export writes (checked by outputs.check_plan before anything is built)
# -------------------------------------------------------------------------------------------------
def model_file_outputs(model_path: str) -> List[str]:
    """The files a single-file export (.onnx, .tflite, .pb) at `model_path` writes: the model
    and its settings file."""
    return [model_path, settings_path(model_path)]


def openvino_outputs(xml_path: str) -> List[str]:
    """The files an OpenVINO export at `xml_path` writes: the .xml, its .bin and settings."""
    return [xml_path, os.path.splitext(xml_path)[0] + ".bin", settings_path(xml_path)]


def saved_model_outputs(saved_model_dir: str, model_name: str) -> List[str]:
    """The files `export_saved_model` writes into its (new or empty) directory, besides the
    `variables/` of the SavedModel itself."""
    frozen = os.path.join(saved_model_dir, f"{model_name}_frozen.pb")
    return [os.path.join(saved_model_dir, "saved_model.pb"), frozen, settings_path(frozen),
            run_dir.config_path(saved_model_dir), os.path.join(saved_model_dir, EXPORT_SETTINGS)]


def raw_network_outputs(logdir: str, model_name: str, frozen: bool) -> List[str]:
    """The files `save_frozen` (frozen) or `save_dry_run` writes into `logdir` beside the
    checkpoint and config.yaml that `run_dir.other_run_problem` guards."""
    if frozen:
        return [os.path.join(logdir, f"{model_name}_frozen.pb")]
    return [os.path.join(logdir, f"{model_name}_train.pb")] + checkpoint_outputs(
        os.path.join(logdir, model_name))


def checkpoint_outputs(prefix: str) -> List[str]:
    """The files a checkpoint saved at `prefix` consists of (one data shard)."""
    return [f"{prefix}.index", f"{prefix}.data-00000-of-00001"]


def exported_model_files(path: str) -> List[str]:
    """The files of an exported model at `path`, which a run reading it reads: a SavedModel
    directory's every file, or a model file and what an export leaves beside it (settings,
    OpenVINO weights)."""
    if os.path.isdir(path):
        return [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
    if path.lower().endswith(".xml"):
        return openvino_outputs(path)
    return model_file_outputs(path)


def _ckpt_inputs(ckpt_path: Optional[str]) -> List[Tuple[str, str]]:
    """(flag, file) of every file restoring `ckpt_path` reads ([] for random weights)."""
    if not serving.has_checkpoint(ckpt_path):
        return []
    return [("ckpt_path", f) for f in run_dir.checkpoint_inputs(ckpt_path)]


def _check(plan: List[outputs.Planned], ckpt_path: Optional[str], overwrite: bool) -> None:
    outputs.check_plan(plan, _ckpt_inputs(ckpt_path), overwrite)


def _refuse(flag: str, path: str, problem: Optional[str]) -> None:
    if problem:
        raise errors.OutputError(f"--{flag} '{path}' {problem}")


# -------------------------------------------------------------------------------------------------
# Export settings
# -------------------------------------------------------------------------------------------------
def settings_path(model_path: str) -> str:
    """Where the export settings of a model file or SavedModel directory are recorded:
    `<dir>/export_settings.yaml`, or `<file name>.export_settings.yaml` beside a file (the
    whole name, so `model.tflite` and `model.onnx` in one directory keep their own)."""
    if tf.io.gfile.isdir(model_path):
        return os.path.join(model_path, EXPORT_SETTINGS)
    return f"{model_path}.{EXPORT_SETTINGS}"


def write_export_settings(model_path: str, settings: Dict[str, Any]) -> str:
    return outputs.write_file(settings_path(model_path),
                      yaml.safe_dump(settings, default_flow_style=False, sort_keys=False))


def read_export_settings(model_path: str) -> Dict[str, Any]:
    """The settings an export recorded beside the model ({} when there are none). Exports
    made before the settings file took the whole file name have `<file stem>.export_settings
    .yaml`, which is read when the new name is missing."""
    path = settings_path(model_path)
    if not tf.io.gfile.exists(path):
        path = os.path.splitext(model_path)[0] + "." + EXPORT_SETTINGS
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path, "r") as f:
        return yaml.safe_load(f) or {}


def export_settings(graph: serving.ServingGraph, ckpt_path: Optional[str]) -> Dict[str, Any]:
    """What an export of `graph` records: model, checkpoint, sizes, threshold and NMS."""
    config = graph.config
    return {
        "model_name": config.name,
        "checkpoint": ckpt_path,
        "image_size": list(utils.parse_image_size(config.image_size)),
        "batch_size": graph.batch_size if graph.batch_size is not None else "dynamic",
        "score_thresh": graph.default_score_thresh,
        "max_output_size": graph.max_output_size,
        "nms": postprocess.nms_description(config, graph.default_score_thresh,
                                           graph.max_output_size),
        "nms_method": config.nms_configs.method,
        "class_agnostic": bool(config.nms_configs.class_agnostic),
        "num_classes": int(config.num_classes),
        "label_map": label_maps.for_config(config),
    }


def recorded_classes(model_path: str) -> Optional[Tuple[int, Dict[int, str]]]:
    """(num_classes, {id: name}) that the export at `model_path` recorded, or None for an
    export made before its settings carried them. The map is empty for a model without
    names. A settings file whose classes cannot be read is a ModelFileError naming it."""
    settings = read_export_settings(model_path)
    if "num_classes" not in settings:
        return None
    where = f"{settings_path(model_path)} (the export's settings)"
    num_classes, names = settings.get("num_classes"), settings.get("label_map") or {}
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise errors.ModelFileError(f"{where}: num_classes is {num_classes!r}, not a positive "
                                    f"integer; export the model again.")
    try:
        names = label_maps.normalize_label_map(names, where) if names else {}
    except label_maps.LabelMapError as e:
        raise errors.ModelFileError(f"{e}; export the model again.") from None
    if names and max(names) > num_classes:
        raise errors.ModelFileError(f"{where}: label_map has class id {max(names)} but "
                                    f"num_classes is {num_classes}; export the model again.")
    return num_classes, names


def with_recorded_classes(config: hparams_config.Config, model_path: str
                          ) -> hparams_config.Config:
    """`config` with the classes the export at `model_path` recorded (`recorded_classes`), for
    an export without its model's config.yaml beside it. A label_map the user set in `config`
    still names the classes; an old export leaves `config` as it is."""
    recorded = recorded_classes(model_path)
    if recorded is None:
        return config
    config.num_classes = recorded[0]
    if config.label_map is None:
        config.label_map = recorded[1] or None
    return hparams_config.validate(config)


# -------------------------------------------------------------------------------------------------
# The raw network: dry run and frozen graph
# -------------------------------------------------------------------------------------------------
def save_dry_run(config: hparams_config.Config, logdir: str, model_name: str,
                 ckpt_path: Optional[str] = None, batch_size: int = 1,
                 overwrite: bool = False) -> Dict[str, str]:
    """Build, restore or initialise, run once, then write a checkpoint `<logdir>/<model_name>`,
    the graph `<logdir>/<model_name>_train.pb`, a TensorBoard graph event file and the config
    as `<logdir>/config.yaml` (so a checkpoint path of `logdir` picks the same hparams up
    later). Refuses a `logdir` holding another run's checkpoint or config.yaml, and an existing
    graph file unless `overwrite`."""
    _refuse("logdir", logdir, run_dir.other_run_problem(logdir))
    _check([outputs.Planned("logdir", logdir, tuple(raw_network_outputs(
        logdir, model_name, frozen=False)), directory=True)], ckpt_path, overwrite)
    outputs.ensure_dir(logdir)
    net = serving.build_raw_network(config, batch_size)
    with net.graph.as_default(), sessions.new_session(net.graph) as sess:
        serving.restore_or_init(net, sess, ckpt_path, config)
        sess.run(net.outputs, {net.inputs: serving.random_images(net, batch_size)})
        prefix = tf1.train.Saver().save(sess, os.path.join(logdir, model_name),
                                        write_meta_graph=False)
        graph_path = outputs.write_file(os.path.join(logdir, f"{model_name}_train.pb"),
                                        net.graph.as_graph_def().SerializeToString())
        writer = tf1.summary.FileWriter(logdir, net.graph)
        writer.flush()
        writer.close()
    run_dir.write_config(logdir, config)
    return {"checkpoint": prefix, "graph": graph_path}


def save_frozen(config: hparams_config.Config, logdir: str, model_name: str,
                ckpt_path: Optional[str] = None, batch_size: int = 1,
                overwrite: bool = False) -> str:
    """Write `<logdir>/<model_name>_frozen.pb`: the raw network with its variables folded in.
    Refuses a `logdir` holding another run's checkpoint or config.yaml, and an existing frozen
    graph unless `overwrite`."""
    _refuse("logdir", logdir, run_dir.other_run_problem(logdir))
    _check([outputs.Planned("logdir", logdir, tuple(raw_network_outputs(
        logdir, model_name, frozen=True)), directory=True)], ckpt_path, overwrite)
    net = serving.build_raw_network(config, batch_size)
    with sessions.new_session(net.graph) as sess:
        serving.restore_or_init(net, sess, ckpt_path, config)
        frozen = serving.freeze(sess, net.graph, net.output_names)
    return outputs.write_file(os.path.join(logdir, f"{model_name}_frozen.pb"),
                              frozen.SerializeToString())


# -------------------------------------------------------------------------------------------------
# The serving graph: SavedModel (+ frozen graph, TFLite), TFLite, ONNX
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExportResult:
    """Paths written by `export_saved_model` (tflite, openvino: None unless requested)."""

    saved_model_dir: str
    frozen_graph: str
    tflite: Optional[str]
    settings: Dict[str, Any]
    openvino: Optional[str] = None


def _save_saved_model(graph: serving.ServingGraph, frozen: tf1.GraphDef,
                      saved_model_dir: str) -> None:
    """Save the frozen serving graph (weights as constants) with both signatures.

    Not the graph with variables: a session running that reads every weight per step
    (~1660 variable ops for d0), cannot constant-fold batch norm into the depthwise
    convolutions or the fusion weights' normalisation, and ran 1.1x slower than the frozen
    graph of the same export. With constants, TF (and TF Serving) runs exactly the frozen
    graph's ops.
    """
    make = tf1.saved_model.signature_def_utils.predict_signature_def
    constants = tf.Graph()
    with constants.as_default():
        tf1.import_graph_def(frozen, name="")

        def same(tensors: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
            return {k: constants.get_tensor_by_name(t.name) for k, t in tensors.items()}

        signatures = {
            serving.SERVING_DEFAULT: make(same({serving.IMAGE_ARRAYS:
                                                graph.inputs[serving.IMAGE_ARRAYS]}),
                                          same(graph.outputs)),
            serving.SERVING_BASE64: make(same({serving.IMAGE_FILES:
                                               graph.inputs[serving.IMAGE_FILES]}),
                                         same(graph.base64_outputs)),
        }
        with sessions.new_session(constants) as sess:
            builder = tf1.saved_model.Builder(saved_model_dir)
            builder.add_meta_graph_and_variables(
                sess, [tf1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                clear_devices=True, strip_default_attrs=True)
            builder.save()


def export_saved_model(config: hparams_config.Config, saved_model_dir: str, model_name: str,
                       ckpt_path: Optional[str] = None, batch_size: Optional[int] = 1,
                       score_thresh: Optional[float] = None,
                       max_output_size: Optional[int] = None,
                       tflite_path: Optional[str] = None,
                       openvino_path: Optional[str] = None,
                       tflite_input_size: Optional[Tuple[int, int]] = None,
                       overwrite: bool = False,
                       tflite_quantizer: Optional[TFLiteQuantizer] = None) -> ExportResult:
    """Write a SavedModel with the signatures `serving_default` (uint8 `image_arrays`
    [B, h, w, 3]) and `serving_base64` (encoded `image_files` [B]), the frozen graph
    `<saved_model_dir>/<model_name>_frozen.pb` of the same detector, the resolved
    `config.yaml`, `export_settings.yaml` and, with `tflite_path`, a TFLite model and, with
    `openvino_path` (an `.xml`), OpenVINO IR of the `serving_default` path.

    Weights come from `ckpt_path` with EMA values when the checkpoint has them (None or '_':
    random), stored as constants (the SavedModel holds the frozen graph, so it runs as fast
    as the `.pb`; fine-tune from the checkpoint, not from an export). The score threshold is
    a run-time input with the given default; the number of detections per image is fixed at
    `max_output_size`. `saved_model_dir` must be new or empty; an existing TFLite or OpenVINO
    file is replaced only with `overwrite`. `tflite_input_size` (height, width) fixes the
    TFLite model's image size (see `export_tflite_fixed_size`).
    `tflite_quantizer` converts the TFLite model quantised (its settings are recorded beside
    it).
    """
    if tflite_input_size and batch_size is None:
        raise errors.UsageError("a TFLite model with a fixed input size needs a fixed batch "
                                "size: a dynamic batch keeps its tensors dynamic")
    _refuse("saved_model_dir", saved_model_dir, outputs.nonempty_dir_problem(saved_model_dir))
    _check(saved_model_plan(saved_model_dir, model_name, tflite_path, openvino_path), ckpt_path,
           overwrite)
    if openvino_path:
        _check_onnx_nms(config, "OpenVINO")
    graph = serving.build_serving_graph(config, batch_size, score_thresh, max_output_size)
    settings = export_settings(graph, ckpt_path)
    with sessions.new_session(graph.graph) as sess:
        serving.restore_or_init(graph, sess, ckpt_path, config)
        frozen = serving.freeze(sess, graph.graph, graph.output_node_names())
    _save_saved_model(graph, frozen, saved_model_dir)
    frozen_path = outputs.write_file(os.path.join(saved_model_dir, f"{model_name}_frozen.pb"),
                                     frozen.SerializeToString())
    run_dir.write_config(saved_model_dir, config)
    write_export_settings(saved_model_dir, settings)
    write_export_settings(frozen_path, settings)
    tflite = None
    if tflite_path:
        tflite = (export_tflite_fixed_size(frozen, graph, tflite_input_size, tflite_path,
                                           tflite_quantizer)
                  if tflite_input_size else export_tflite(saved_model_dir, tflite_path,
                                                          tflite_quantizer))
        write_export_settings(tflite, {**settings, "tflite_input_size": (
            list(tflite_input_size) if tflite_input_size else "any"),
            **(tflite_quantizer.settings if tflite_quantizer else {})})
    openvino = None
    if openvino_path:
        arrays_only = tf1.graph_util.extract_sub_graph(
            frozen, graph.output_node_names(with_base64=False))
        openvino = write_openvino(arrays_only, openvino_path, settings)
    return ExportResult(saved_model_dir, frozen_path, tflite, settings, openvino)


def saved_model_plan(saved_model_dir: str, model_name: str, tflite_path: Optional[str],
                     openvino_path: Optional[str]) -> List[outputs.Planned]:
    """Every output of `export_saved_model`, by flag."""
    plan = [outputs.Planned("saved_model_dir", saved_model_dir, tuple(saved_model_outputs(
        saved_model_dir, model_name)), directory=True)]
    if tflite_path:
        plan.append(outputs.Planned("tflite_path", tflite_path,
                                    tuple(model_file_outputs(tflite_path))))
    if openvino_path:
        plan.append(outputs.Planned("openvino_path", openvino_path,
                                    tuple(openvino_outputs(openvino_path))))
    return plan


def _fixed_size_serving_function(frozen: tf1.GraphDef, graph: serving.ServingGraph,
                                 input_size: Tuple[int, int]):
    """The `serving_default` path of the frozen serving graph as a concrete function whose
    `image_arrays` input is [B, height, width, 3] (B the export's batch): with every input
    shape known, the converter folds the pre-processing's size arithmetic into constants."""
    image_input = graph.inputs[serving.IMAGE_ARRAYS]
    frozen = tf1.GraphDef.FromString(frozen.SerializeToString())
    for node in frozen.node:
        # Shapes recorded for any size would contradict the fixed one; and the converter can
        # only write the function with its signature (into a temporary SavedModel) once the
        # ops no longer point to custom gradients, which inference never uses.
        node.attr.pop("_output_shapes", None)
        node.attr.pop("_gradient_op_type", None)

    def imported():
        images = tf1.placeholder(tf.uint8, [graph.batch_size, *input_size, 3],
                                 name=serving.IMAGE_ARRAYS)
        tf1.import_graph_def(frozen, input_map={image_input.name: images}, name="model")

    wrapped = tf1.wrap_function(imported, [])
    return wrapped.prune(
        wrapped.graph.get_tensor_by_name(f"{serving.IMAGE_ARRAYS}:0"),
        {key: wrapped.graph.get_tensor_by_name(f"model/{t.name}")
         for key, t in graph.outputs.items()})


# Runs one of the TFLite converter's conversions (a call returning the model).
Conversion = Callable[[Callable[[], bytes]], bytes]


class TFLiteQuantizer(Protocol):
    """Converts to a quantised TFLite model (e.g. quantize.TFLiteInt8): `convert` sets the
    converter up (builtin ops only) and returns the model, running each of the converter's
    own conversions through `run`; `settings` is what the export records about the
    quantisation."""

    settings: Dict[str, Any]

    def convert(self, converter: tf.lite.TFLiteConverter, run: Conversion) -> bytes:
        ...


def _convert_tflite(converter: tf.lite.TFLiteConverter, source: str, tflite_path: str,
                    quantizer: Optional[TFLiteQuantizer] = None) -> str:
    """Builtin ops only (TFLITE_BUILTINS, no SELECT_TF_OPS), float unless `quantizer`; the
    model written to `tflite_path`; a failed conversion is one ModelFileError naming
    `source`."""
    def run(conversion: Callable[[], bytes]) -> bytes:
        try:
            return conversion()
        except errors.UserError:  # e.g. a calibration image that can no longer be read
            raise
        except Exception as e:  # noqa: BLE001 - the converter raises several error types
            raise errors.ModelFileError(f"TFLite conversion of '{source}' failed: "
                                        f"{str(e).splitlines()[0]}") from None

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = quantizer.convert(converter, run) if quantizer else run(converter.convert)
    return outputs.write_file(tflite_path, model)


def export_tflite(saved_model_dir: str, tflite_path: str,
                  quantizer: Optional[TFLiteQuantizer] = None) -> str:
    """Convert the `serving_default` signature of a SavedModel to a float32 TFLite model.

    The whole detector (pre-processing, network, NMS) converts to TFLite builtin ops. The
    score threshold becomes a constant (the export setting): a TFLite model can raise it
    afterwards but not lower it.

    The model takes images of any size. Its pre-processing then computes the resize and pad
    sizes at run time, which makes those tensors dynamic, and TFLite applies its XNNPACK
    delegate only to graphs without dynamic tensors: the whole model runs on TFLite's own
    kernels. `export_tflite_fixed_size` makes a static model that XNNPACK runs
    (benchmarks/results_runtimes.md, for the measured difference).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[serving.SERVING_DEFAULT])
    return _convert_tflite(converter, saved_model_dir, tflite_path, quantizer)


def export_tflite_fixed_size(frozen: tf1.GraphDef, graph: serving.ServingGraph,
                             input_size: Tuple[int, int], tflite_path: str,
                             quantizer: Optional[TFLiteQuantizer] = None) -> str:
    """Like `export_tflite`, from the frozen serving graph `frozen` of `graph` (fixed batch),
    for images of exactly `input_size` (height, width): every tensor is static, so TFLite runs
    the model on XNNPACK; it takes no other size."""
    function = _fixed_size_serving_function(frozen, graph, input_size)
    # The module only lets the converter write the function as signature serving_default.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
    return _convert_tflite(converter, "the frozen serving graph", tflite_path, quantizer)


def _frozen_image_arrays_graph(config: hparams_config.Config, ckpt_path: Optional[str],
                               batch_size: Optional[int], score_thresh: Optional[float],
                               max_output_size: Optional[int]
                               ) -> Tuple[tf1.GraphDef, Dict[str, Any]]:
    """The serving graph's uint8 `image_arrays` path (no base64 signature), restored from
    `ckpt_path` and frozen, and its export settings: what ONNX and OpenVINO convert."""
    graph = serving.build_serving_graph(config, batch_size, score_thresh, max_output_size,
                                        with_base64=False)
    settings = export_settings(graph, ckpt_path)
    with sessions.new_session(graph.graph) as sess:
        serving.restore_or_init(graph, sess, ckpt_path, config)
        frozen = serving.freeze(sess, graph.graph, graph.output_node_names(with_base64=False))
    return frozen, settings


def export_onnx(config: hparams_config.Config, onnx_path: str, ckpt_path: Optional[str] = None,
                batch_size: Optional[int] = 1, score_thresh: Optional[float] = None,
                max_output_size: Optional[int] = None, opset: int = 15,
                overwrite: bool = False) -> str:
    """Convert the frozen serving graph (uint8 `image_arrays:0` input) to ONNX with tf2onnx.

    Outputs are `detections:0`, `boxes:0`, `scores:0`, `classes:0`, `num_detections:0` as in
    the SavedModel; `score_thresh:0` is an optional input holding the export setting. Only hard
    NMS converts (ONNX's NonMaxSuppression has no soft-NMS). An existing `onnx_path` (or its
    settings file) is replaced only with `overwrite`.
    """
    _check_onnx_nms(config, "ONNX")
    _check([outputs.Planned("onnx_path", onnx_path, tuple(model_file_outputs(onnx_path)))],
           ckpt_path, overwrite)
    frozen, settings = _frozen_image_arrays_graph(config, ckpt_path, batch_size, score_thresh,
                                                  max_output_size)
    with outputs.atomic_path(onnx_path) as tmp:
        _tf2onnx(frozen, tmp, [f"{serving.IMAGE_ARRAYS}:0"], opset, "ONNX")
    write_export_settings(onnx_path, settings)
    return onnx_path


def _check_onnx_nms(config: hparams_config.Config, what: str) -> None:
    if config.nms_configs.method != "hard":
        raise errors.ConfigError(f"{what} export needs nms_configs.method=hard: ONNX "
                                 f"NonMaxSuppression has no soft-NMS")


def _tf2onnx(frozen: tf1.GraphDef, onnx_path: str, input_names: List[str], opset: int,
             what: str) -> None:
    """Convert the frozen `image_arrays` serving graph to ONNX at local path `onnx_path`."""
    try:
        import tf2onnx
    except ImportError:
        raise errors.UsageError(f"{what} export needs tf2onnx: pip install -r requirements.txt"
                                ) from None
    outputs = [f"{k}:0" for k in serving.OUTPUT_KEYS]
    tf2onnx.convert.from_graph_def(frozen, input_names=input_names, output_names=outputs,
                                   opset=opset, output_path=onnx_path)


# -------------------------------------------------------------------------------------------------
# OpenVINO
# -------------------------------------------------------------------------------------------------
# The IR's run-time information under which an export records its default score threshold, so
# that an .xml/.bin pair copied without its settings file still knows it.
OPENVINO_RT_INFO = ("vfpn_export", "score_thresh")


def import_openvino():
    """The `openvino` module, imported with OpenVINO's usage telemetry switched off.

    `import openvino` imports its model converter, whose telemetry (unless the user opted out
    beforehand) sends usage events to a web analytics service from subprocesses, on import and
    on every conversion. No run of ours may reach the network, so the telemetry package is
    made unimportable before OpenVINO is first imported: OpenVINO then uses its own no-op stub.
    A process that imported OpenVINO itself beforehand keeps whatever it chose.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    try:
        import openvino
    except ImportError:
        raise errors.UsageError("OpenVINO models need the openvino package (Python >= 3.10): "
                                "pip install -r requirements.txt") from None
    return openvino


def openvino_serving_graph(frozen: tf1.GraphDef) -> tf1.GraphDef:
    """A copy of the frozen `image_arrays` serving graph whose `score_thresh` is a plain
    placeholder: converters fold a placeholder-with-default into a constant, while the
    threshold must stay a run-time input (the detector feeds the export default)."""
    graph_def = tf1.GraphDef()
    graph_def.CopyFrom(frozen)
    for node in graph_def.node:
        if node.name == serving.SCORE_THRESH and node.op == "PlaceholderWithDefault":
            dtype, shape = node.attr["dtype"], node.attr["shape"]
            placeholder = tf1.NodeDef(name=node.name, op="Placeholder")
            placeholder.attr["dtype"].CopyFrom(dtype)
            placeholder.attr["shape"].CopyFrom(shape)
            node.CopyFrom(placeholder)
    return graph_def


def write_openvino(frozen: tf1.GraphDef, xml_path: str, settings: Dict[str, Any],
                   opset: int = 15) -> str:
    """Convert the frozen `image_arrays` serving graph to OpenVINO IR at `xml_path` (+ `.bin`)
    and write the export settings beside it.

    Which OpenVINO 2026.4 front end reads the graph depends on the batch, because each
    fails on one of them:
    * a static batch goes through ONNX (tf2onnx, as `export_onnx`) into the ONNX front end.
      The TensorFlow front end reads such a frozen graph too, but its model crashes
      (segfault, or a hang) in the CPU plugin's multi-threaded inference, in the box
      clipping before NonMaxSuppression;
    * a dynamic batch (`settings['batch_size'] == 'dynamic'`) is read by the TensorFlow front
      end: the ONNX front end cannot convert the per-image while loop (ONNX Loop) of its
      post-processing.
    Weights stay float32 (OpenVINO's save_model would halve them to float16 by default).
    Inputs `image_arrays:0` (uint8 [B, h, w, 3]) and `score_thresh:0` (float32 scalar,
    required: its default is in the IR's run-time info and the settings file); outputs as in
    the SavedModel. Only hard NMS converts.
    """
    if not xml_path.endswith(".xml"):
        raise errors.UsageError(f"an OpenVINO model path must end in .xml, got '{xml_path}'")
    ov = import_openvino()
    graph_def = openvino_serving_graph(frozen)
    with tempfile.TemporaryDirectory() as tmp:
        if settings.get("batch_size") == "dynamic":
            source = os.path.join(tmp, "serving.pb")
            with open(source, "wb") as f:
                f.write(graph_def.SerializeToString())
        else:
            source = os.path.join(tmp, "serving.onnx")
            _tf2onnx(graph_def, source, [f"{serving.IMAGE_ARRAYS}:0",
                                         f"{serving.SCORE_THRESH}:0"], opset, "OpenVINO")
        try:
            model = ov.Core().read_model(source)
        except RuntimeError as e:
            raise errors.ModelFileError(f"OpenVINO conversion for '{xml_path}' failed: "
                                        f"{errors.first_line(str(e))}") from None
        model.set_rt_info(str(settings["score_thresh"]), list(OPENVINO_RT_INFO))
        save_openvino_ir(ov, model, xml_path)  # while its source file still exists
    write_export_settings(xml_path, settings)
    return xml_path


def save_openvino_ir(ov: Any, model: Any, xml_path: str) -> None:
    """Save OpenVINO `model` as `xml_path` + .bin, weights not halved to float16. save_model
    writes one local pair: saved in a temporary directory, then each file is put in place
    atomically (the .bin first, so an .xml never lacks its weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.xml")
        try:
            ov.save_model(model, local, compress_to_fp16=False)
        except RuntimeError as e:
            raise errors.OutputError(f"cannot write '{xml_path}': {errors.first_line(str(e))}"
                                     ) from None
        for suffix in (".bin", ".xml"):
            with outputs.atomic_path(os.path.splitext(xml_path)[0] + suffix) as part:
                shutil.copyfile(os.path.splitext(local)[0] + suffix, part)


def export_openvino(config: hparams_config.Config, xml_path: str,
                    ckpt_path: Optional[str] = None, batch_size: Optional[int] = 1,
                    score_thresh: Optional[float] = None,
                    max_output_size: Optional[int] = None, overwrite: bool = False) -> str:
    """Freeze the serving graph (uint8 `image_arrays` path) and write it as OpenVINO IR
    (`xml_path` and the `.bin` beside it) with its export settings; see `write_openvino`.
    A dynamic batch (batch_size None) keeps per-image detections, as the TF formats do.
    Existing files are replaced only with `overwrite`."""
    _check_onnx_nms(config, "OpenVINO")
    _check([outputs.Planned("openvino_path", xml_path, tuple(openvino_outputs(xml_path)))],
           ckpt_path, overwrite)
    frozen, settings = _frozen_image_arrays_graph(config, ckpt_path, batch_size, score_thresh,
                                                  max_output_size)
    return write_openvino(frozen, xml_path, settings)


# -------------------------------------------------------------------------------------------------
# Checkpoint re-export
# -------------------------------------------------------------------------------------------------
def _save_folded(sess: tf1.Session, variables: List[tf.Variable], prefix: str,
                 with_shadows: bool) -> None:
    """Save each variable's current value under its name (and, with `with_shadows`, under its
    EMA shadow name), then point the directory's 'checkpoint' index file at `prefix`."""
    values = sess.run({checkpoint_io.var_name(v): v for v in variables})
    if with_shadows:
        values.update({name + checkpoint_io.EMA_SUFFIX: value
                       for name, value in list(values.items())})
    outputs.ensure_parent(prefix)
    checkpoint_io.write_checkpoint(values, prefix, update_index=True)


def eval_ckpt(config: hparams_config.Config, ckpt_path: str, export_ckpt: Optional[str] = None,
              overwrite: bool = False) -> Dict[str, Any]:
    """Restore `ckpt_path` into the network (EMA-aware) and report what was read.

    With `export_ckpt`, save a checkpoint (prefix `export_ckpt`, plus a `checkpoint` index file
    beside it) whose raw variables hold the restored (EMA) values and, when the config uses
    EMA, whose `<var>/ExponentialMovingAverage` shadows hold the same values, so it restores the
    same either way. Refuses a directory holding another run's checkpoint or config.yaml, and
    existing checkpoint files at `export_ckpt` unless `overwrite`.

    Returns {'checkpoint': prefix read, 'variables': count, 'ema': shadows were read,
    'exported': export_ckpt or None}.
    """
    if export_ckpt:
        parent = os.path.dirname(export_ckpt) or "."
        _refuse("export_ckpt", parent, run_dir.other_run_problem(parent))
        _check([outputs.Planned("export_ckpt", export_ckpt,
                                tuple(checkpoint_outputs(export_ckpt)))], ckpt_path, overwrite)
    net = serving.build_raw_network(config, 1)
    use_ema = checkpoint_io.use_ema(config)
    with net.graph.as_default(), sessions.new_session(net.graph) as sess:
        prefix = serving.restore_or_init(net, sess, ckpt_path, config)
        if prefix is None:
            raise errors.CheckpointError("restoring a checkpoint needs a checkpoint path, "
                                         f"got {ckpt_path!r}")
        model_vars = tf1.global_variables()
        info = {"checkpoint": prefix, "variables": len(model_vars),
                "ema": use_ema and checkpoint_io.has_ema_shadows(prefix, model_vars),
                "exported": None}
        if export_ckpt:
            _save_folded(sess, model_vars, export_ckpt, with_shadows=use_ema)
            info["exported"] = export_ckpt
    return info

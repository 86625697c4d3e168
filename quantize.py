"""Post-training int8 quantisation of an exported detector, and the calibration images it uses.

What is calibrated is what is served: a calibration image is the uint8 RGB image the serving
graph's `image_arrays` input receives, read from the user's TFRecords by the training input
code (`dataloader.parse_record`) or from image files as inference reads them
(`visualize.read_image`). The model does its own resize, normalisation and padding.

* `read_calibration`: a `CalibrationSet`, read and checked whole before any graph is built (no
  match, no image, a corrupt record or image: an `errors.DataError` naming the flag).
* `quantize_openvino`: NNCF post-training quantisation of OpenVINO IR written by
  `export.write_openvino`, into `<name>_int8.xml` beside it (`int8_path`). The network, from
  its first convolution to the class and box predictors, runs in int8; pre-processing (resize,
  normalise, pad) and post-processing (top-k, sigmoid, box decoding, NMS, scaling) stay float
  (`float_op_names`): they are cheap, and an int8 grid on pixel coordinates or on the scores
  NMS ranks would move every box.
* `TFLiteInt8`: full-integer TFLite conversion, handed to `export.export_saved_model` as its
  `tflite_quantizer`: int8 wherever TFLite has an int8 kernel, float elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

import bounds
import errors
import export
import hparams_config
import outputs
import serving
import visualize

# Files a calibration pattern reads as images (anything else is read as TFRecord shards).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# What stays float in an int8 model (export lines and settings say it).
FLOAT_PARTS = ("the network is int8; pre-processing (resize, normalise, pad) and post-processing "
               "(top-k, sigmoid, box decoding, NMS, scaling) are float")
# What an int8 OpenVINO export adds to its name: model.xml -> model_int8.xml.
INT8_SUFFIX = "_int8"
# The ops whose chains delimit the network (it runs from the first to the last convolution),
# in OpenVINO and in TFLite.
_CONVOLUTIONS = ("Convolution", "GroupConvolution")
_TFLITE_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


# -------------------------------------------------------------------------------------------------
# Calibration images
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CalibrationSet:
    """The calibration images of a pattern, checked and ready to be read again.

    `kind` is 'images' (`items`: file paths) or 'tfrecord' (`items`: (file, index in it,
    serialized record), parsed with `num_classes` and `max_instances` as training parses
    them). Iterating yields
    each image as uint8 RGB [h, w, 3], decoded again on every pass (a set of full-size photos
    would not fit in memory decoded).
    """

    pattern: str
    kind: str
    items: List[Any]
    num_classes: int = 0
    max_instances: int = bounds.DEFAULT_MAX_INSTANCES

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "images":
            for path in self.items:
                yield visualize.read_image(path)
            return
        for image in _record_images(self.items, self):
            yield image.numpy()

    def describe(self) -> Dict[str, Any]:
        """What an export's settings record about its calibration."""
        return {"calibration": self.pattern, "calibration_kind": self.kind,
                "calibration_images": len(self)}


def _record_images(items: Sequence[Tuple[str, int, bytes]],
                   calib: CalibrationSet) -> tf.data.Dataset:
    """The decoded uint8 images of (file, index, serialized record) items, parsed and checked
    as training parses them (a failed check names the file and record)."""
    import dataloader

    files, indices, records = (list(column) for column in zip(*items))
    return tf.data.Dataset.from_tensor_slices((files, indices, records)).map(
        lambda f, i, r: dataloader.parse_record(r, calib.num_classes, calib.max_instances,
                                                file=f, index=i)["image"])


def calibration_files(pattern: str) -> List[str]:
    """The files of a calibration pattern (comma-separated globs), in order, each once."""
    found: List[str] = []
    for piece in (p.strip() for p in pattern.split(",")):
        if piece:
            found.extend(f for f in sorted(tf.io.gfile.glob(piece)) if f not in found)
    return [f for f in found if not tf.io.gfile.isdir(f)]


def _spread(items: Sequence[str], count: int) -> List[str]:
    """`count` items evenly spaced over `items` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def _read_images(pattern: str, paths: Sequence[str], count: int, flag: str) -> CalibrationSet:
    chosen = _spread(paths, count)
    for path in chosen:  # decoded once now, so a corrupt file fails before any export
        try:
            visualize.read_image(path)
        except visualize.ImageReadError as e:
            raise errors.DataError(f"--{flag}: {e}; remove it from the calibration set"
                                   ) from None
    return CalibrationSet(pattern, "images", chosen)


def _read_records(pattern: str, count: int, config: hparams_config.Config,
                  flag: str) -> CalibrationSet:
    """The first `count` records, taken from the shards in turn, each parsed and decoded once
    (so a broken record or an image that does not decode fails here, naming the flag)."""
    from record_files import list_record_files

    files = list_record_files(pattern, f"--{flag}")

    def numbered(file: tf.Tensor) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(file).enumerate().map(lambda i, r: (file, i, r))

    shards = tf.data.Dataset.from_tensor_slices(files).interleave(
        numbered, cycle_length=len(files), block_length=1)
    items = [(f.numpy().decode(), int(i), r.numpy())
             for f, i, r in _checked(shards.take(count), files, pattern, flag)]
    calib = CalibrationSet(pattern, "tfrecord", items, config.num_classes,
                           config.max_instances_per_image)
    if items:
        for _ in _checked(_record_images(items, calib), files, pattern, flag):
            pass
    return calib


def _checked(dataset: tf.data.Dataset, files: Sequence[str], pattern: str,
             flag: str) -> Iterator[tf.Tensor]:
    """Iterate `dataset` (read from the record `files`); a broken file or record is a
    errors.DataError naming the flag and, where TensorFlow does not, the file."""
    from record_files import find_broken_record_file

    try:
        yield from dataset
    except tf.errors.DataLossError as e:
        broken = find_broken_record_file(files)
        where = f"{broken[0]}: {broken[1]}" if broken else errors.first_line(str(e))
        raise errors.DataError(f"--{flag}={pattern}: {where}; re-create the records or narrow "
                               f"the pattern") from None
    except tf.errors.InvalidArgumentError as e:  # parse_record's checks and image decoding
        what = errors.from_tf_error(e) or errors.first_line(e.message)
        raise errors.DataError(f"--{flag}={pattern}: {what}") from None


def read_calibration(pattern: str, count: int, config: hparams_config.Config,
                     flag: str) -> CalibrationSet:
    """The calibration set of `pattern` (comma-separated globs), at most `count` images.

    A pattern whose matches are all image files (`IMAGE_SUFFIXES`) is read as images: `count`
    of them, evenly spaced over the sorted matches. Any other is read as TFRecord shards (the
    training split's, parsed with `config`'s num_classes and max_instances_per_image as
    training does): the first `count` records, taking one shard after another in turn. Every
    chosen image is decoded once here, so that a set that cannot be used fails before any
    graph is built or file written: `errors.DataError` (or record_files.InputError for a
    shard pattern) naming `--flag`.
    """
    if not pattern or not pattern.strip():
        raise errors.DataError(f"--{flag} is empty: give a glob of TFRecord shards of the "
                               f"training split or of image files")
    if count < 1:
        raise errors.DataError(f"--calibration_images must be >= 1, got {count}")
    paths = calibration_files(pattern)
    if not paths:
        raise errors.DataError(f"--{flag}={pattern} matches no file; check the path (quote the "
                               f"glob so the shell does not expand it)")
    if all(p.lower().endswith(IMAGE_SUFFIXES) for p in paths):
        calib = _read_images(pattern, paths, count, flag)
    else:
        calib = _read_records(pattern, count, config, flag)
    if not len(calib):
        raise errors.DataError(f"--{flag}={pattern} holds no image (the matching record files "
                               f"are empty); give the training split's shards or images")
    return calib


# -------------------------------------------------------------------------------------------------
# OpenVINO: NNCF
# -------------------------------------------------------------------------------------------------
def int8_path(xml_path: str) -> str:
    """Where the int8 IR of `xml_path` goes: `<dir>/<name>_int8.xml` (+ .bin)."""
    stem, ext = os.path.splitext(xml_path)
    return f"{stem}{INT8_SUFFIX}{ext}"


def import_nncf():
    """The `nncf` module, imported after OpenVINO (through `export.import_openvino`, which
    switches usage telemetry off: NNCF sends its own through the same package otherwise)."""
    export.import_openvino()
    try:
        import nncf
    except ImportError:
        raise errors.UsageError("int8 OpenVINO models need the nncf package (Python >= 3.10): "
                                "pip install -r requirements.txt") from None
    # Its INFO lines name every op of the ignored scope (hundreds); warnings still show.
    nncf.set_log_level(logging.WARNING)
    return nncf


def _openvino_graph(model) -> Tuple[Dict[str, str], Dict[str, List[str]]]:
    """({op name: op type}, {op name: names of the ops it feeds}) of an OpenVINO model."""
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    consumers: Dict[str, List[str]] = {name: [] for name in types}
    for op in model.get_ops():
        for port in op.inputs():
            source = port.get_source_output().get_node().get_friendly_name()
            consumers[source].append(op.get_friendly_name())
    return types, consumers


def _reach(starts: Iterable[str], edges: Dict[str, List[str]]) -> Set[str]:
    """`starts` and every op reachable from them along `edges`."""
    seen, stack = set(starts), list(starts)
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def network_ops(types: Dict[str, str], consumers: Dict[str, List[str]],
                convolutions: Sequence[str]) -> Set[str]:
    """The network's ops in a graph ({op: type}, {op: the ops it feeds}): those on a path from a
    first convolution (one with no convolution before it: the backbone's stem) to a last one
    (no convolution after it: the class and box predictors). Found by the graph's shape
    alone, so it holds whatever names a converter gave the ops."""
    producers: Dict[str, List[str]] = {name: [] for name in consumers}
    for name, outs in consumers.items():
        for out in outs:
            producers[out].append(name)
    convs = [n for n, t in types.items() if t in convolutions]
    firsts = [n for n in convs
              if not any(types[a] in convolutions for a in _reach([n], producers) - {n})]
    lasts = [n for n in convs
             if not any(types[d] in convolutions for d in _reach([n], consumers) - {n})]
    return _reach(firsts, consumers) & _reach(lasts, producers)


def float_op_names(model) -> List[str]:
    """The ops of OpenVINO `model` kept float: every op outside `network_ops` (pre- and
    post-processing), besides inputs, constants and outputs, which NNCF does not quantise."""
    types, consumers = _openvino_graph(model)
    network = network_ops(types, consumers, _CONVOLUTIONS)
    return sorted(name for name, kind in types.items()
                  if name not in network and kind not in ("Parameter", "Constant", "Result"))


def _feeds(model, calibration: CalibrationSet, score_thresh: float):
    """The NNCF dataset of a calibration set: each image alone, repeated to a static batch
    (the repeats leave the collected statistics unchanged), with the score threshold."""
    nncf = import_nncf()
    batch = model.input(f"{serving.IMAGE_ARRAYS}:0").get_partial_shape()[0]
    repeat = batch.get_length() if batch.is_static else 1
    thresh = np.array(score_thresh, np.float32)
    return nncf.Dataset(calibration, lambda image: {
        f"{serving.IMAGE_ARRAYS}:0": np.repeat(image[None], repeat, axis=0),
        f"{serving.SCORE_THRESH}:0": thresh})


def quantize_openvino(xml_path: str, calibration: CalibrationSet,
                      out_path: Optional[str] = None, overwrite: bool = False) -> str:
    """Quantise the OpenVINO IR `xml_path` (written by export.write_openvino) to int8 and write
    it to `out_path` (default `int8_path(xml_path)`) + .bin, with the settings of `xml_path`
    plus `precision: int8`, the calibration set and the ops kept float. Existing files are
    replaced only with `overwrite` (outputs.py's policy, checked before anything is read), the
    f32 IR never.

    NNCF's post-training quantisation: min-max statistics of every quantised input over the
    calibration images, then bias correction; weights int8 per output channel, with 7 bits for
    dense convolutions (NNCF's overflow fix: CPUs without VNNI add int8 products in pairs in
    16 bits, which 8-bit weights can saturate, so the IR keeps its accuracy on any CPU). The network
    (`network_op_names`) is quantised; pre- and post-processing stay float (`float_op_names`
    is NNCF's ignored scope). Same inputs and outputs as the f32 IR, so every detector and
    runmode that takes an .xml runs it.
    """
    out_path = out_path or int8_path(xml_path)
    outputs.check_plan([outputs.Planned("openvino_path", out_path,
                                        tuple(export.openvino_outputs(out_path)))],
                       [("openvino_path", f) for f in export.openvino_outputs(xml_path)],
                       overwrite)
    ov = export.import_openvino()
    nncf = import_nncf()
    try:
        model = ov.Core().read_model(xml_path)
    except RuntimeError as e:
        raise errors.ModelFileError(f"'{xml_path}' is not a loadable OpenVINO model: "
                                    f"{errors.first_line(str(e))}") from None
    settings = export.read_export_settings(xml_path)
    kept = float_op_names(model)
    quantized = nncf.quantize(
        model, _feeds(model, calibration, float(settings.get("score_thresh", 0.0))),
        subset_size=len(calibration), ignored_scope=nncf.IgnoredScope(names=kept),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix.ENABLE))
    export.save_openvino_ir(ov, quantized, out_path)
    export.write_export_settings(out_path, {**settings, "precision": "int8",
                                            **calibration.describe(),
                                            "float": FLOAT_PARTS, "float_ops": len(kept)})
    return out_path


# -------------------------------------------------------------------------------------------------
# TFLite: full-integer conversion
# -------------------------------------------------------------------------------------------------
class TFLiteInt8:
    """Full-integer TFLite conversion calibrated on a `CalibrationSet` (an
    export.TFLiteQuantizer).

    As for OpenVINO, the network (`network_ops` of the TFLite graph) is quantised and pre- and
    post-processing stay float (the converter's denylist). Within the network, ops without an
    int8 kernel (ADD_N, DIV of the fusion weights) stay float with the converter's quantise and
    dequantise ops around them, and so does an ADD whose calibrated range TFLite's int8 kernel
    cannot take (`_unrunnable_adds`). The input stays uint8 `image_arrays`. `batch_size`
    (None: dynamic) repeats each image to the model's batch; `input_size` (height, width), for
    a fixed-size model, resizes each image to the one size that model takes.
    """

    def __init__(self, calibration: CalibrationSet, batch_size: Optional[int] = 1,
                 input_size: Optional[Sequence[int]] = None):
        self.calibration = calibration
        self.batch_size = batch_size or 1
        self.input_size = tuple(input_size) if input_size else None
        self.settings: Dict[str, Any] = {"precision": "int8", **calibration.describe()}
        self.summary = ""  # what runs int8 and what float, once converted

    def _samples(self) -> Iterator[List[np.ndarray]]:
        from PIL import Image

        for image in self.calibration:
            if self.input_size and image.shape[:2] != self.input_size:
                height, width = self.input_size
                image = np.asarray(Image.fromarray(image).resize((width, height),
                                                                 Image.BILINEAR))
            yield [np.repeat(image[None], self.batch_size, axis=0)]

    def convert(self, converter: tf.lite.TFLiteConverter, run: export.Conversion) -> bytes:
        """The int8 model (see the class docstring); `converter` as export set it up, each of
        its conversions run through `run`."""
        types, consumers = _tflite_graph(run(converter.convert))
        network = network_ops(types, consumers, _TFLITE_CONVOLUTIONS)
        float_ops = sorted(name for name in types if name not in network)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = self._samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        # The converter leaves chosen ops float only through its quantisation debugger, which
        # calibrates once (here) and can then quantise again with another list.
        debugger = run(lambda: tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=self._samples, debug_options=_keep(float_ops)))
        model = run(debugger.get_nondebug_quantized_model)
        unrunnable = _unrunnable_adds(model)
        while unrunnable:  # keeping one float can move the next ADD's requantisation
            if set(unrunnable) <= set(float_ops):
                raise errors.ModelFileError(f"TFLite int8 conversion left {unrunnable[0]} int8 "
                                            f"although it was asked to keep it float")
            float_ops += unrunnable
            model = run(functools.partial(_requantized, debugger, list(float_ops)))
            unrunnable = _unrunnable_adds(model)
        self.summary = tflite_precisions(model, network)
        self.settings["float"] = f"{FLOAT_PARTS}; {self.summary}"
        return model


def _keep(float_ops: List[str]):
    """The quantisation debugger's options that keep `float_ops` (output tensor names) float."""
    return tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_ops))


def _requantized(debugger, float_ops: List[str]) -> bytes:
    """The debugger's calibrated model quantised again, keeping `float_ops` float."""
    debugger.options = _keep(float_ops)
    return debugger.get_nondebug_quantized_model()


def _tflite_graph(model: bytes) -> Tuple[Dict[str, str], Dict[str, List[str]]]:
    """({op name: op type}, {op name: names of the ops it feeds}) of the main subgraph of a
    TFLite model; an op is named by its first output tensor, as the converter's denylists
    name it."""
    interpreter = tf.lite.Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only listing of a model's ops and their tensors
    types = {names[op["outputs"][0]]: op["op_name"] for op in ops}
    producer = {t: names[op["outputs"][0]] for op in ops for t in op["outputs"]}
    consumers: Dict[str, List[str]] = {name: [] for name in types}
    for op in ops:
        for t in op["inputs"]:
            if t in producer:
                consumers[producer[t]].append(names[op["outputs"][0]])
    return types, consumers


def _unrunnable_adds(model: bytes) -> List[str]:
    """The int8 ADD and SUB ops of a TFLite model that TFLite's kernels refuse to prepare
    (they abort the process): the kernel rescales the inputs by 2**20 / (2 * the larger input
    scale) and needs the output scale above 2 * that scale / 2**20, which a calibrated range of
    almost nothing (a feature that is constant over the calibration images) is not."""
    interpreter = tf.lite.Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    bad = []
    for op in interpreter._get_ops_details():  # as in _tflite_graph
        if op["op_name"] not in ("ADD", "SUB"):
            continue
        inputs = [tensors[i] for i in op["inputs"]]
        output = tensors[op["outputs"][0]]
        if output["dtype"] != np.int8 or any(t["dtype"] != np.int8 for t in inputs):
            continue
        largest = max(t["quantization"][0] for t in inputs)
        if 2.0 * largest >= (1 << 20) * output["quantization"][0]:
            bad.append(output["name"])
    return bad


def tflite_precisions(model: bytes, network: Set[str]) -> str:
    """Which of the `network` ops of an int8 TFLite model run int8, and which float (by op
    type), e.g. 'int8: 630 network ops; float: ADD_N x24, DIV x52'. Quantise and dequantise
    ops are not counted."""
    interpreter = tf.lite.Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    int8, kept = 0, {}
    for op in interpreter._get_ops_details():  # as in _tflite_graph
        name = tensors[op["outputs"][0]]["name"]
        if name not in network or op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(tensors[i]["dtype"] == np.int8 for i in op["inputs"] if i in tensors):
            int8 += 1
        else:
            kept[op["op_name"]] = kept.get(op["op_name"], 0) + 1
    floats = ", ".join(f"{kind} x{n}" for kind, n in sorted(kept.items())) or "none"
    return f"int8: {int8} network ops; float network ops (no int8 kernel or range): {floats}"

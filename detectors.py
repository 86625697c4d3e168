"""One detector interface over every model format.

`Detector.predict` takes uint8 RGB images [n, h, w, 3] and returns one `Detections` per image
(detections.py), whatever runs underneath: the serving graph (see serving.py) built from a
checkpoint (`CheckpointDetector`), or an export (see export.py) loaded by `load_detector`: a
SavedModel directory (`SavedModelDetector`), its frozen graph `.pb` (`FrozenGraphDetector`), a
`.tflite` file (`TFLiteDetector`), an `.onnx` file (`OnnxDetector`) or OpenVINO IR `.xml` +
`.bin` (`OpenVinoDetector`). All run the same graph, so they agree (boxes within a pixel, scores
within 1e-3).

Adding a format is one `Detector` subclass taking `(path, threads)` plus one entry in
`FORMATS` ({file suffix: class}; '' is a directory, '*' any other file).

A model that cannot be loaded is an `errors.ModelFileError` naming its path.
"""

from __future__ import annotations

import abc
import os
import struct
from typing import Any, Dict, List, Optional, Type

import numpy as np
import tensorflow as tf

import errors
import export
import hparams_config
import serving
import sessions
from detections import Detections, split_detections

tf1 = tf.compat.v1


# -------------------------------------------------------------------------------------------------
# The interface
# -------------------------------------------------------------------------------------------------
class Detector(abc.ABC):
    """Runs the serving graph on uint8 images. Subclasses implement `_run`.

    `batch_size` is the model's static batch (None: dynamic). `score_thresh` is the threshold
    the model applies by default; `predict` may raise it for any backend and lower it where the
    backend can take it as an input (`can_lower_threshold`: checkpoint, SavedModel, frozen
    graph, ONNX, OpenVINO). `kind` names the format in messages; `note` says what runs
    underneath where that is a choice (the OpenVINO precision). `int8`: the model was quantised
    to int8 (see quantize.py; its network runs int8, pre- and post-processing float).
    """

    batch_size: Optional[int] = None
    score_thresh: float = 0.0
    can_lower_threshold: bool = True
    kind: str = "model"
    # What runs underneath, for benchmark lines (e.g. the runtime and its precision).
    note: str = ""
    int8: bool = False

    @abc.abstractmethod
    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        """Raw outputs (boxes, scores, classes, num_detections) of one backend call; the
        threshold is fed when not None (only if `can_lower_threshold`)."""

    def _feed_thresh(self, score_thresh: Optional[float]) -> Optional[float]:
        """The threshold to feed the backend, or None to use its default (and filter after)."""
        if score_thresh is None or score_thresh == self.score_thresh:
            return None
        if score_thresh < self.score_thresh and not self.can_lower_threshold:
            raise errors.UsageError(
                f"this {self.kind} was exported with score threshold {self.score_thresh}; it "
                f"cannot return scores below that (asked for {score_thresh}); export it again "
                f"with a lower score threshold")
        return score_thresh if self.can_lower_threshold else None

    def predict(self, images: np.ndarray, score_thresh: Optional[float] = None
                ) -> List[Detections]:
        """Detections for each image of `images` [n, h, w, 3] uint8 RGB (one size per call).

        A static-batch model is fed in chunks of its batch size, the last one padded with
        blank images whose results are dropped.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [n, h, w, 3], got {images.dtype} "
                             f"{list(images.shape)}")
        feed_thresh = self._feed_thresh(score_thresh)
        step = self.batch_size or len(images)
        results: List[Detections] = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            real = len(chunk)
            if self.batch_size and real < self.batch_size:
                pad = np.zeros((self.batch_size - real,) + chunk.shape[1:], np.uint8)
                chunk = np.concatenate([chunk, pad])
            dets = split_detections(self._run(chunk, feed_thresh), real)
            if score_thresh is not None and feed_thresh is None:
                dets = [d.filter(score_thresh) for d in dets]
            results.extend(dets)
        return results

    def close(self) -> None:  # noqa: B027 - only some backends hold resources
        """Release the backend's resources (nothing for most backends)."""

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SessionDetector(Detector):
    """A detector running a TF1 graph in a session, by tensor names. It owns `sess`."""

    def __init__(self, graph: tf.Graph, sess: tf1.Session, input_name: str,
                 output_names: Dict[str, str], thresh_name: Optional[str]):
        self.graph, self.sess = graph, sess
        self.input = graph.get_tensor_by_name(input_name)
        self.outputs = {k: graph.get_tensor_by_name(v) for k, v in output_names.items()}
        self.thresh = graph.get_tensor_by_name(thresh_name) if thresh_name else None
        self.batch_size = self.input.shape[0]
        self.can_lower_threshold = self.thresh is not None
        if self.thresh is not None:
            self.score_thresh = float(sess.run(self.thresh))

    def feed_dict(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict:
        feed = {self.input: images}
        if score_thresh is not None and self.thresh is not None:
            feed[self.thresh] = score_thresh
        return feed

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        return self.sess.run(self.outputs, self.feed_dict(images, score_thresh))

    def close(self) -> None:
        self.sess.close()


def _session(graph: tf.Graph, threads: int) -> tf1.Session:
    return sessions.new_session(graph, threads=threads)


# -------------------------------------------------------------------------------------------------
# One class per format
# -------------------------------------------------------------------------------------------------
class CheckpointDetector(SessionDetector):
    """The serving graph built from `config` with weights restored from a checkpoint (EMA
    shadows when the config uses EMA; None or '_': random weights)."""

    kind = "checkpoint"

    def __init__(self, config: hparams_config.Config, ckpt_path: Optional[str],
                 batch_size: Optional[int] = 1, score_thresh: Optional[float] = None,
                 max_output_size: Optional[int] = None, threads: int = 0):
        graph = serving.build_serving_graph(config, batch_size, score_thresh, max_output_size,
                                            with_base64=False)
        sess = _session(graph.graph, threads)
        try:
            serving.restore_or_init(graph, sess, ckpt_path, config)
        except BaseException:
            sess.close()
            raise
        super().__init__(graph.graph, sess, graph.inputs[serving.IMAGE_ARRAYS].name,
                         {k: v.name for k, v in graph.outputs.items()}, graph.score_thresh.name)


class SavedModelDetector(SessionDetector):
    """A SavedModel directory written by `export.export_saved_model` (serving_default)."""

    kind = "SavedModel"

    def __init__(self, path: str, threads: int = 0):
        if not any(tf.io.gfile.exists(os.path.join(path, name))
                   for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise errors.ModelFileError(
                f"'{path}' holds no saved_model.pb; give a directory written by "
                f"export.export_saved_model, or a .pb, .tflite or .onnx file")
        graph = tf.Graph()
        sess = _session(graph, threads)
        try:
            with graph.as_default():
                meta = tf1.saved_model.loader.load(
                    sess, [tf1.saved_model.tag_constants.SERVING], path)
        except (OSError, RuntimeError, tf.errors.OpError) as e:
            sess.close()
            raise errors.ModelFileError(f"'{path}' is not a loadable SavedModel: "
                                        f"{str(e).splitlines()[0]}") from None
        if serving.SERVING_DEFAULT not in meta.signature_def:
            sess.close()
            raise errors.ModelFileError(
                f"SavedModel '{path}' has no '{serving.SERVING_DEFAULT}' signature; export it "
                f"with export.export_saved_model")
        sig = meta.signature_def[serving.SERVING_DEFAULT]
        names = {op.name for op in graph.get_operations()}
        super().__init__(graph, sess, sig.inputs[serving.IMAGE_ARRAYS].name,
                         {k: v.name for k, v in sig.outputs.items() if k in serving.OUTPUT_KEYS},
                         f"{serving.SCORE_THRESH}:0" if serving.SCORE_THRESH in names else None)


class FrozenGraphDetector(SessionDetector):
    """The frozen serving graph (`<model_name>_frozen.pb`) written beside a SavedModel."""

    kind = "frozen graph"

    def __init__(self, path: str, threads: int = 0):
        graph_def = tf1.GraphDef()
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                graph_def.ParseFromString(f.read())
        except Exception as e:  # noqa: BLE001 - protobuf raises several error types
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise errors.ModelFileError(f"'{path}' is not a frozen GraphDef (.pb): {reason}"
                                        ) from None
        names = {n.name for n in graph_def.node}
        missing = [n for n in (serving.IMAGE_ARRAYS, *serving.OUTPUT_KEYS) if n not in names]
        if missing:
            hint = (" It looks like the raw network alone (export.save_frozen); the full "
                    "detector's frozen graph is <model_name>_frozen.pb in a SavedModel export."
                    if serving.INPUT_NAME in names else "")
            raise errors.ModelFileError(f"frozen graph '{path}' lacks the serving nodes "
                                        f"{', '.join(missing)}.{hint}")
        graph = tf.Graph()
        with graph.as_default():
            tf1.import_graph_def(graph_def, name="")
        super().__init__(graph, _session(graph, threads), f"{serving.IMAGE_ARRAYS}:0",
                         {k: f"{k}:0" for k in serving.OUTPUT_KEYS},
                         f"{serving.SCORE_THRESH}:0" if serving.SCORE_THRESH in names else None)


class TFLiteDetector(Detector):
    """A .tflite model converted from the serving_default signature (builtin ops only). Its
    score threshold is fixed at export: it can be raised here, not lowered."""

    kind = "TFLite model"
    can_lower_threshold = False

    def __init__(self, path: str, threads: int = 0):
        # threads=0 means "all this process may use", as for the other formats, rather than
        # TFLite's own default. Measured on 2 cores it changes little (d0, street.jpg: 270 vs
        # 261 ms at batch 1, 240 vs 236 ms/img at batch 8): TFLite's gap to TF is elsewhere.
        threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1)
        check_tflite_file(path)
        try:
            self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
            # The interpreter applies its default (XNNPACK) delegate in its own
            # allocate_tensors; the signature runner only allocates its subgraph, which would
            # run every model on TFLite's reference kernels.
            self.interpreter.allocate_tensors()
            self.runner = self.interpreter.get_signature_runner(serving.SERVING_DEFAULT)
        except (ValueError, RuntimeError) as e:
            raise errors.ModelFileError(
                f"'{path}' is not a loadable TFLite model with a '{serving.SERVING_DEFAULT}' "
                f"signature: {str(e).splitlines()[0]}") from None
        self.path = path
        shape = self.runner.get_input_details()[serving.IMAGE_ARRAYS]["shape_signature"]
        self.batch_size = None if shape[0] < 0 else int(shape[0])
        # (height, width) of a model exported with a fixed input size, else None.
        self.input_size = None if min(shape[1:3]) < 0 else (int(shape[1]), int(shape[2]))
        self.int8 = any(t["dtype"] == np.int8 for t in self.interpreter.get_tensor_details())
        self.score_thresh = export.read_export_settings(path).get("score_thresh", 0.0)

    def delegated_nodes(self) -> int:
        """How many graph partitions TFLite's default (XNNPACK) delegate runs; 0 when it
        declined the model (dynamic tensors). Known after the first call."""
        # tf.lite.Interpreter lists delegate partitions only through its private op details.
        interp = self.interpreter
        return sum(interp._get_op_details(i)["op_name"] == "DELEGATE"
                   for i in range(interp._interpreter.NumNodes()))

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        if self.input_size and tuple(images.shape[1:3]) != self.input_size:
            h, w = self.input_size
            raise errors.UsageError(
                f"'{self.path}' takes {w}x{h} (WxH) images only (exported with "
                f"--tflite_input_size); this image is {images.shape[2]}x{images.shape[1]}: "
                f"export one without --tflite_input_size for images of any size")
        outputs = self.runner(**{serving.IMAGE_ARRAYS: images})
        if not self.note:
            self.note = (("int8 network, " if self.int8 else "")
                         + ("XNNPACK delegate" if self.delegated_nodes()
                            else "TFLite kernels (dynamic shapes: no XNNPACK)"))
        return outputs


def check_tflite_file(path: str) -> None:
    """ModelFileError naming `path` unless it is a whole TFLite flatbuffer: its 'TFL3'
    identifier, every vector the runtime reads inside the file, every index inside its vector.

    TFLite's interpreter maps a model without such checks, and a truncated file crashes the
    process, which no error handling can catch; so the file is checked here first, in Python.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise errors.ModelFileError(f"'{path}' is not a TFLite model (no 'TFL3' flatbuffer "
                                    f"identifier); give a .tflite file written by --tflite_path")
    try:
        problem = _tflite_problem(schema.Model.GetRootAs(data, 0), len(data))
    except struct.error:  # how the flatbuffer reader reports a read past the end
        problem = f"it refers past its end ({len(data)} bytes)"
    if problem:
        raise errors.ModelFileError(f"'{path}' is truncated or corrupted: {problem}; export "
                                    f"it again")


def _tflite_problem(model: Any, size: int) -> Optional[str]:
    """Read the last element of every vector of `model` (a schema Model over `size` bytes) that
    TFLite reads, so that one past the end raises struct.error; return an index that points
    outside its vector, else None."""
    num_buffers, num_codes = model.BuffersLength(), model.OperatorCodesLength()
    for i in range(num_codes):
        code = model.OperatorCodes(i)
        code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.Version(), code.CustomCode()
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Buffer() >= num_buffers:
            return f"metadata {i} refers to buffer {model.Metadata(i).Buffer()} of {num_buffers}"
    for i in range(num_buffers):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            buffer.Data(buffer.DataLength() - 1)
        if buffer.Offset() and buffer.Offset() + buffer.Size() > size:  # data after the table
            return f"buffer {i} ends at byte {buffer.Offset() + buffer.Size()}, past its end"
    if not model.SubgraphsLength():
        return "it has no subgraph"
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        num_tensors = graph.TensorsLength()
        for t in range(num_tensors):
            tensor = graph.Tensors(t)
            if tensor.ShapeLength():
                tensor.Shape(tensor.ShapeLength() - 1)
            if tensor.Buffer() >= num_buffers:
                return f"tensor {t} refers to buffer {tensor.Buffer()} of {num_buffers}"
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            tensors = ([op.Inputs(k) for k in range(op.InputsLength())]
                       + [op.Outputs(k) for k in range(op.OutputsLength())])
            if op.OpcodeIndex() >= num_codes or any(t >= num_tensors for t in tensors):
                return f"operator {o} of subgraph {s} refers outside the model's tables"
    for i in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(i)
        maps = ([signature.Inputs(k) for k in range(signature.InputsLength())]
                + [signature.Outputs(k) for k in range(signature.OutputsLength())])
        if signature.SubgraphIndex() >= model.SubgraphsLength() or any(
                m.TensorIndex() >= model.Subgraphs(signature.SubgraphIndex()).TensorsLength()
                for m in maps):
            return f"signature {i} refers outside the model's tables"
    return None


class OnnxDetector(Detector):
    """An .onnx model converted by tf2onnx from the frozen serving graph, run by onnxruntime."""

    kind = "ONNX model"

    def __init__(self, path: str, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise errors.ModelFileError(f"running '{path}' needs onnxruntime: pip install -r "
                                        f"requirements.txt") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
            raise errors.ModelFileError(f"'{path}' is not a loadable ONNX model: "
                                        f"{str(e).splitlines()[0]}") from None
        self.input_name = f"{serving.IMAGE_ARRAYS}:0"
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.input_name not in inputs:
            raise errors.ModelFileError(f"ONNX model '{path}' has no input '{self.input_name}'; "
                                        f"export it with export.export_onnx")
        batch = inputs[self.input_name].shape[0]
        self.batch_size = batch if isinstance(batch, int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.score_thresh = export.read_export_settings(path).get("score_thresh", 0.0)

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        feed = {self.input_name: images}
        if score_thresh is not None:
            feed[f"{serving.SCORE_THRESH}:0"] = np.array(score_thresh, np.float32)
        values = self.session.run(self.output_names, feed)
        return {name.split(":")[0]: v for name, v in zip(self.output_names, values)}


class OpenVinoDetector(Detector):
    """OpenVINO IR (`.xml` + `.bin`) written by `export.export_openvino`, run by OpenVINO's
    CPU plugin. The score threshold is a run-time input (default: the export's).

    `precision` sets OpenVINO's inference precision hint: 'f32' (the default, so that the
    detections are the checkpoint's on every CPU), 'bf16', or 'auto' (the plugin's own choice:
    bf16 on CPUs with native bf16 such as AMX or AVX-512 BF16, else f32; there bf16 moves
    scores by more than 1e-3 and can add or drop a detection near the threshold).
    A CPU without bf16 runs a bf16 request in f32; `precision` then holds what runs and
    `note` says so (OpenVINO itself accepts the hint silently).
    """

    kind = "OpenVINO model"
    PRECISIONS = ("f32", "bf16", "auto")

    def __init__(self, path: str, threads: int = 0, precision: str = "f32"):
        if precision not in self.PRECISIONS:
            raise errors.UsageError(f"OpenVINO precision must be one of "
                                    f"{', '.join(self.PRECISIONS)}, got '{precision}'")
        ov = export.import_openvino()
        weights = os.path.splitext(path)[0] + ".bin"
        if not tf.io.gfile.exists(weights):
            raise errors.ModelFileError(
                f"OpenVINO model '{path}' has no weights file '{weights}' beside it; copy the "
                f".bin written with the .xml")
        with tf.io.gfile.GFile(path, "rb") as f:
            head = f.read(1024)
        if b"<net" not in head:  # before OpenVINO tries every front end on it (noisily)
            raise errors.ModelFileError(f"'{path}' is not OpenVINO IR: it has no <net> element; "
                                        f"give the .xml written by export.export_openvino")
        core = ov.Core()
        try:
            model = core.read_model(path)
        except RuntimeError as e:
            raise errors.ModelFileError(f"'{path}' is not a loadable OpenVINO model: "
                                        f"{errors.first_line(str(e))}") from None
        names = {name for port in model.inputs for name in port.get_names()}
        self.input_name = f"{serving.IMAGE_ARRAYS}:0"
        self.thresh_name = f"{serving.SCORE_THRESH}:0"
        if not {self.input_name, self.thresh_name} <= names:
            raise errors.ModelFileError(
                f"OpenVINO model '{path}' lacks the inputs {self.input_name} and "
                f"{self.thresh_name}; export it with export.export_openvino")
        batch = model.input(self.input_name).get_partial_shape()[0]
        self.batch_size = batch.get_length() if batch.is_static else None
        # NNCF's quantisation leaves its FakeQuantize ops in the IR; the plugin runs them int8.
        self.int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.score_thresh = (float(model.get_rt_info(list(export.OPENVINO_RT_INFO)).astype(str))
                             if model.has_rt_info(list(export.OPENVINO_RT_INFO)) else
                             float(export.read_export_settings(path).get("score_thresh", 0.0)))
        options = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        if precision != "auto":
            options["INFERENCE_PRECISION_HINT"] = precision
        try:
            compiled = core.compile_model(model, "CPU", options)
        except RuntimeError as e:
            raise errors.ModelFileError(f"OpenVINO cannot compile '{path}': "
                                        f"{errors.first_line(str(e))}") from None
        self.request = compiled.create_infer_request()
        self.outputs = {key: port for port in compiled.outputs for key in serving.OUTPUT_KEYS
                        if f"{key}:0" in port.get_names()}
        self.requested_precision = precision
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.note = (f"OpenVINO {ov.get_version().split('-')[0]}, "
                     + ("int8 network, other ops at " if self.int8 else "")
                     + f"inference precision {self.precision}")
        if precision not in ("auto", self.precision):
            self.note += (f" ({precision} requested; this CPU offers "
                          f"{', '.join(capabilities)}, no native {precision})")

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        thresh = self.score_thresh if score_thresh is None else score_thresh
        results = self.request.infer({self.input_name: images,
                                      self.thresh_name: np.array(thresh, np.float32)})
        return {key: results[port] for key, port in self.outputs.items()}


# {file suffix: detector class}; '' is a directory, '*' any other file.
FORMATS: Dict[str, Type[Detector]] = {
    "": SavedModelDetector,
    ".tflite": TFLiteDetector,
    ".onnx": OnnxDetector,
    ".xml": OpenVinoDetector,
    "*": FrozenGraphDetector,
}


def load_detector(path: str, threads: int = 0, precision: Optional[str] = None) -> Detector:
    """A detector for an exported model: a SavedModel directory or a file whose suffix picks
    its class in `FORMATS` (.tflite, .onnx, .xml; any other file is read as a frozen graph).

    `precision` (None: the format's own default, f32 for OpenVINO) is passed to formats that
    offer a choice (their class lists `PRECISIONS`: OpenVINO); for any other format it is a
    UsageError.
    """
    if not path or not tf.io.gfile.exists(path):
        raise errors.ModelFileError(
            f"'{path}' does not exist: give a SavedModel directory or a "
            f"{', '.join(s for s in ('.pb', *FORMATS) if s not in ('', '*'))} file")
    key = "" if tf.io.gfile.isdir(path) else os.path.splitext(path)[1].lower()
    cls = FORMATS.get(key, FORMATS["*"])
    if precision is None:
        return cls(path, threads)
    if precision not in getattr(cls, "PRECISIONS", ()):
        raise errors.UsageError(f"precision '{precision}' cannot be chosen for a {cls.kind} "
                                f"('{path}'); only OpenVINO .xml models take one")
    return cls(path, threads, precision=precision)

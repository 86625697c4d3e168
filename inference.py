"""Everything after training: build, restore, export and run the detector.

Two graphs are built here, each in its own `tf.Graph` so that callers and tests never depend on
global graph state:

* the raw network (`build_raw_network`): a float32 placeholder `input` [B, H, W, 3] (normalised
  pixels) to the per-level head outputs `class_outputs_<l>` [B, H_l, W_l, A * num_classes] and
  `box_outputs_<l>` [B, H_l, W_l, A * 4] (see efficientdet_arch). Used by dry, freeze and bm.
* the serving graph (`build_serving_graph`): uint8 images `image_arrays` [B, h, w, 3] (any h, w;
  one size per batch) or encoded images `image_files` [B] (JPEG/PNG/GIF/BMP bytes, any sizes) ->
  pre-processing (reference §3.12) -> network -> post-processing (`postprocess.py`) -> boxes
  [B, K, 4] (yxyx, original-image pixels), scores [B, K], classes [B, K] (ids 1..num_classes),
  num_detections [B] and the reference-style `detections` [B, K, 7] rows
  (image_index, ymin, xmin, ymax, xmax, score, class). B may be None (dynamic batch); every image
  gets its own detections. The score threshold is the scalar `score_thresh` (a
  placeholder-with-default holding the export setting, so it can be fed at run time); K, the
  maximum detections per image, is an export setting.

The same serving graph backs checkpoint inference (`CheckpointDetector`), the SavedModel and its
frozen graph, the TFLite model and the ONNX model (`load_detector`), so they agree.
"""

from __future__ import annotations

import abc
import dataclasses
import glob
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import efficientdet_arch
import errors
import postprocess
import utils

tf1 = tf.compat.v1

INPUT_NAME = "input"
EMA_SUFFIX = "/ExponentialMovingAverage"


CheckpointError = errors.CheckpointError


@dataclasses.dataclass
class RawNetwork:
    """A built raw network: its graph, input placeholder and named outputs."""

    graph: tf.Graph
    inputs: tf.Tensor
    outputs: Dict[str, tf.Tensor]
    config: Any

    @property
    def output_names(self) -> List[str]:
        return [t.op.name for t in self.outputs.values()]


def build_raw_network(config: Any, batch_size: Optional[int] = 1) -> RawNetwork:
    """Build the inference network (BN in inference mode) in a new graph."""
    height, width = utils.parse_image_size(config.image_size)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf1.placeholder(tf.float32, [batch_size, height, width, 3], name=INPUT_NAME)
        class_out, box_out = efficientdet_arch.build_model(inputs, config, training=False)
        outputs = {}
        for level in sorted(class_out):
            outputs[f"class_outputs_{level}"] = tf.identity(class_out[level],
                                                            name=f"class_outputs_{level}")
            outputs[f"box_outputs_{level}"] = tf.identity(box_out[level],
                                                          name=f"box_outputs_{level}")
    return RawNetwork(graph, inputs, outputs, config)


def resolve_checkpoint(ckpt_path: str) -> str:
    """A checkpoint prefix from a prefix or a directory; CheckpointError if there is none."""
    if tf.io.gfile.isdir(ckpt_path):
        latest = tf.train.latest_checkpoint(ckpt_path)
        if not latest:
            raise CheckpointError(f"no checkpoint found in directory '{ckpt_path}' (expected a "
                                  f"'checkpoint' index file written by training or --runmode=dry)")
        return latest
    if not tf.io.gfile.exists(ckpt_path + ".index"):
        raise CheckpointError(f"checkpoint '{ckpt_path}' not found: give a checkpoint prefix "
                              f"(e.g. model_dir/model.ckpt-1000) or a directory holding one")
    return ckpt_path


def restore_variables(sess: tf1.Session, ckpt_path: str, use_ema: bool = True,
                      variables: Optional[List[tf.Variable]] = None) -> str:
    """Restore `variables` (default: all global ones) from `ckpt_path`, preferring EMA shadows.

    With `use_ema`, a variable `v` is read from `v/ExponentialMovingAverage` when the checkpoint
    has it, else from `v`. Every variable must be found with the same shape; otherwise one
    CheckpointError names the mismatch. Returns the resolved checkpoint prefix.
    """
    prefix = resolve_checkpoint(ckpt_path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    variables = variables if variables is not None else tf1.global_variables()
    var_map, missing, mismatched = {}, [], []
    for v in variables:
        name = v.op.name
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in shapes else name
        if source not in shapes:
            missing.append(name)
            continue
        if list(shapes[source]) != v.shape.as_list():
            mismatched.append(f"{name}: checkpoint {shapes[source]} vs model {v.shape.as_list()}")
            continue
        var_map[source] = v
    if missing or mismatched:
        detail = "; ".join(mismatched[:3] + [f"missing {m}" for m in missing[:3]])
        raise CheckpointError(
            f"checkpoint '{prefix}' does not fit this model ({len(missing)} variables missing, "
            f"{len(mismatched)} with another shape: {detail}). Use the --model_name and "
            f"--hparams (e.g. num_classes, fpn_name, image-independent settings) it was "
            f"trained with.")
    tf1.train.Saver(var_map).restore(sess, prefix)
    return prefix


def init_or_restore(net: RawNetwork, sess: tf1.Session, ckpt_path: Optional[str]) -> None:
    """Restore `ckpt_path` (EMA-aware) or, when it is None/'_', initialise randomly."""
    with net.graph.as_default():
        if ckpt_path and ckpt_path != "_":
            use_ema = bool(net.config.moving_average_decay and
                           net.config.moving_average_decay > 0)
            restore_variables(sess, ckpt_path, use_ema=use_ema)
        else:
            sess.run(tf1.global_variables_initializer())


def session_config(threads: int = 0, xla: bool = False) -> tf1.ConfigProto:
    """Session options: `threads` intra-op threads (0 = TF default), optional XLA JIT."""
    config = tf1.ConfigProto()
    if threads > 0:
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = 1
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_2
    return config


def random_images(net: RawNetwork, batch_size: int, seed: int = 0) -> np.ndarray:
    _, height, width, _ = net.inputs.shape.as_list()
    return np.random.RandomState(seed).randn(batch_size, height, width, 3).astype(np.float32)


def save_dry_run(config: Any, logdir: str, model_name: str, ckpt_path: Optional[str] = None,
                 batch_size: int = 1) -> Dict[str, str]:
    """Build, restore or initialise, run once, then write a checkpoint `<logdir>/<model_name>`,
    the graph `<logdir>/<model_name>_train.pb`, a TensorBoard graph event file and the config
    as `<logdir>/config.yaml` (so `--ckpt_path=<logdir>` picks the same hparams up later)."""
    tf.io.gfile.makedirs(logdir)
    net = build_raw_network(config, batch_size)
    with net.graph.as_default(), tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        sess.run(net.outputs, {net.inputs: random_images(net, batch_size)})
        prefix = tf1.train.Saver().save(sess, os.path.join(logdir, model_name),
                                        write_meta_graph=False)
        graph_path = os.path.join(logdir, f"{model_name}_train.pb")
        tf.io.write_graph(net.graph.as_graph_def(), logdir, f"{model_name}_train.pb",
                          as_text=False)
        writer = tf1.summary.FileWriter(logdir, net.graph)
        writer.flush()
        writer.close()
    config.save_to_yaml(os.path.join(logdir, "config.yaml"))
    return {"checkpoint": prefix, "graph": graph_path}


def freeze_network(net: RawNetwork, sess: tf1.Session) -> tf1.GraphDef:
    """The network's GraphDef with variables folded in as constants."""
    with net.graph.as_default():
        return tf1.graph_util.convert_variables_to_constants(
            sess, net.graph.as_graph_def(), net.output_names)


def save_frozen(config: Any, logdir: str, model_name: str, ckpt_path: Optional[str] = None,
                batch_size: int = 1) -> str:
    """Write `<logdir>/<model_name>_frozen.pb`: the raw network with its variables folded in."""
    tf.io.gfile.makedirs(logdir)
    net = build_raw_network(config, batch_size)
    with tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        frozen = freeze_network(net, sess)
    path = os.path.join(logdir, f"{model_name}_frozen.pb")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return path


class _PerImageTiming:
    """Per-image latency and FPS of a timing result with batch_size, mean_batch_s and
    median_batch_s (seconds per batch)."""

    @property
    def mean_image_ms(self) -> float:
        return 1000.0 * self.mean_batch_s / self.batch_size

    @property
    def median_image_ms(self) -> float:
        return 1000.0 * self.median_batch_s / self.batch_size

    @property
    def fps(self) -> float:
        return self.batch_size / self.mean_batch_s


@dataclasses.dataclass
class BenchmarkResult(_PerImageTiming):
    """Network latency of one configuration. Times are seconds."""

    model_name: str
    fpn_name: str
    precision: str
    batch_size: int
    runs: int
    mean_batch_s: float
    median_batch_s: float
    params: int
    flops_per_image: int

    def summary(self) -> str:
        return (f"{self.model_name} ({self.fpn_name}, {self.precision}, batch {self.batch_size}, "
                f"{self.runs} runs): per image mean {self.mean_image_ms:.2f} ms, median "
                f"{self.median_image_ms:.2f} ms, {self.fps:.2f} FPS; "
                f"params {self.params / 1e6:.3f}M, FLOPs {self.flops_per_image / 1e9:.3f}B")


def benchmark_network(config: Any, batch_size: int = 1, runs: int = 10, warmup: int = 5,
                      threads: int = 0, xla: bool = False, ckpt_path: Optional[str] = None,
                      trace_filename: Optional[str] = None) -> BenchmarkResult:
    """Network latency (first conv to last head output) of the frozen graph.

    Random weights unless `ckpt_path`; `warmup` untimed runs, then `runs` timed ones. FLOPs are
    multiply-adds per image (profiler float ops / 2) and params count trainable variables.
    """
    if runs < 1:
        raise ValueError("--bm_runs must be >= 1")
    net = build_raw_network(config, batch_size)
    params = utils.num_trainable_params(net.graph)
    flops = utils.num_flops(net.graph) // batch_size
    with tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        frozen = freeze_network(net, sess)
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(frozen, name="")
    feed_name = f"{INPUT_NAME}:0"
    fetches = [f"{n}:0" for n in net.output_names]
    images = random_images(net, batch_size)
    times = []
    with tf1.Session(graph=graph, config=session_config(threads, xla)) as sess:
        for _ in range(warmup):
            sess.run(fetches, {feed_name: images})
        for _ in range(runs):
            start = time.perf_counter()
            sess.run(fetches, {feed_name: images})
            times.append(time.perf_counter() - start)
        if trace_filename:
            _write_trace(sess, fetches, {feed_name: images}, trace_filename)
    return BenchmarkResult(config.name, config.fpn_name, config.precision or "float32",
                           batch_size, runs, statistics.mean(times), statistics.median(times),
                           params, flops)


def _write_trace(sess: tf1.Session, fetches, feed, path: str) -> None:
    """One more run with full tracing, written as a Chrome trace (chrome://tracing)."""
    from tensorflow.python.client import timeline  # not in the public API

    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    metadata = tf1.RunMetadata()
    sess.run(fetches, feed, options=options, run_metadata=metadata)
    trace = timeline.Timeline(metadata.step_stats).generate_chrome_trace_format()
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(trace)


# =================================================================================================
# Pre-processing (reference §3.12)
# =================================================================================================
IMAGE_ARRAYS = "image_arrays"
IMAGE_FILES = "image_files"
SCORE_THRESH = "score_thresh"
BASE64_SCOPE = "base64"
OUTPUT_KEYS = ("detections", "boxes", "scores", "classes", "num_detections")
SERVING_DEFAULT = "serving_default"
SERVING_BASE64 = "serving_base64"


def preprocess_images(images: tf.Tensor, config: Any) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Resize-and-pad a batch of same-sized images to the network input (reference §3.12).

    The image is scaled by s = min(H / h, W / w) (aspect ratio kept) to ceil(h * s) x
    ceil(w * s) with bilinear resizing, normalised with `mean_rgb`/`stddev_rgb` on [0, 1]
    pixels, and padded with zeros (after normalisation) at the bottom and right to H x W.

    This is the eval pre-processing of dataloader.py, which the models are trained with:
    half-pixel centres and ceil sizes, where the reference (§3.12) uses TF1 resizing without
    half-pixel centres and int() sizes. The two differ by under one original pixel. The one
    difference from the dataloader: it resizes with ScaleAndTranslate at exactly s, here
    ResizeBilinear uses the per-axis ratio of the rounded size (below 1 / size apart), because
    ResizeBilinear is a TFLite builtin and converts to ONNX while ScaleAndTranslate does not.
    Normalising after resizing equals normalising first (bilinear weights sum to one) and
    touches fewer pixels.

    Args:
      images: [B, h, w, 3] uint8 RGB (or float in [0, 255]); B may be None.
      config: hparams (image_size, mean_rgb, stddev_rgb).

    Returns:
      inputs [B, H, W, 3] float32, image_scales [B] float32 (= 1 / s, original pixels per input
      pixel) and original_sizes [B, 2] float32 (h, w).
    """
    height, width = utils.parse_image_size(config.image_size)
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    batch = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    scale = tf.minimum(height / h, width / w)
    # ceil as the dataloader: the last partial row/column still shows image; 1e-3 absorbs
    # float rounding (e.g. 636 * (512 / 636)).
    scaled_h = tf.clip_by_value(tf.cast(tf.math.ceil(h * scale - 1e-3), tf.int32), 1, height)
    scaled_w = tf.clip_by_value(tf.cast(tf.math.ceil(w * scale - 1e-3), tf.int32), 1, width)
    resized = tf1.image.resize_bilinear(images, tf.stack([scaled_h, scaled_w]),
                                        align_corners=False, half_pixel_centers=True)
    mean = tf.constant(config.mean_rgb, tf.float32)
    std = tf.constant(config.stddev_rgb, tf.float32)
    normalized = resized * (1.0 / (255.0 * std)) - mean / std  # (x / 255 - mean) / std
    padded = tf.pad(normalized, [[0, 0], [0, height - scaled_h], [0, width - scaled_w], [0, 0]])
    # A reshape (not set_shape) so that converters (TFLite, ONNX) see the static H, W, 3 too.
    padded = tf.reshape(padded, [images.shape[0] or -1, height, width, 3])
    image_scales = tf.fill([batch], 1.0 / scale)
    original_sizes = tf.tile(tf.stack([h, w])[None, :], [batch, 1])
    return padded, image_scales, original_sizes


def decode_and_preprocess(encoded: tf.Tensor, config: Any
                          ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode encoded images of any sizes and pre-process each (see `preprocess_images`).

    Args:
      encoded: [B] string, JPEG/PNG/GIF/BMP bytes. Grayscale becomes RGB; alpha is dropped.

    Returns:
      inputs [B, H, W, 3] float32, image_scales [B], original_sizes [B, 2].
    """
    height, width = utils.parse_image_size(config.image_size)

    def one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        inputs, scales, sizes = preprocess_images(tf.expand_dims(image, 0), config)
        return inputs[0], scales[0], sizes[0]

    inputs, scales, sizes = tf.map_fn(
        one, encoded, fn_output_signature=(tf.TensorSpec([height, width, 3], tf.float32),
                                           tf.TensorSpec([], tf.float32),
                                           tf.TensorSpec([2], tf.float32)))
    inputs.set_shape([encoded.shape[0], height, width, 3])
    return inputs, scales, sizes


# =================================================================================================
# Serving graph: pre-processing -> network -> post-processing
# =================================================================================================
@dataclasses.dataclass
class ServingGraph:
    """The full detector graph and its named endpoints.

    `inputs` maps 'image_arrays' (and 'image_files' when built with base64) to placeholders;
    `outputs` maps OUTPUT_KEYS to the tensors of the image_arrays path and `base64_outputs` to
    those of the image_files path.
    """

    graph: tf.Graph
    inputs: Dict[str, tf.Tensor]
    outputs: Dict[str, tf.Tensor]
    base64_outputs: Dict[str, tf.Tensor]
    score_thresh: tf.Tensor
    config: Any
    batch_size: Optional[int]
    max_output_size: int
    default_score_thresh: float

    def output_node_names(self) -> List[str]:
        """Op names of every output (both paths), e.g. to freeze the graph."""
        tensors = list(self.outputs.values()) + list(self.base64_outputs.values())
        return [t.op.name for t in tensors]


def _detection_outputs(inputs: tf.Tensor, image_scales: tf.Tensor, original_sizes: tf.Tensor,
                       config: Any, score_thresh: tf.Tensor,
                       max_output_size: int) -> Dict[str, tf.Tensor]:
    class_out, box_out = efficientdet_arch.build_model(inputs, config, training=False)
    det = postprocess.generate_detections(class_out, box_out, config, image_scales,
                                          score_thresh=score_thresh,
                                          max_output_size=max_output_size,
                                          original_sizes=original_sizes)
    batch = tf.shape(det["boxes"])[0]
    index = tf.tile(tf.expand_dims(tf.cast(tf.range(batch), tf.float32), 1),
                    [1, max_output_size])
    rows = tf.concat([tf.expand_dims(index, 2), det["boxes"], tf.expand_dims(det["scores"], 2),
                      tf.expand_dims(tf.cast(det["classes"], tf.float32), 2)], axis=-1)
    outputs = {"detections": rows, **det}
    return {k: tf.identity(outputs[k], name=k) for k in OUTPUT_KEYS}


def build_serving_graph(config: Any, batch_size: Optional[int] = 1,
                        score_thresh: Optional[float] = None,
                        max_output_size: Optional[int] = None,
                        with_base64: bool = True) -> ServingGraph:
    """Build the full detector (see the module docstring) in a new graph.

    Args:
      config: hparams of the model.
      batch_size: images per call; None for a dynamic batch.
      score_thresh: default of the `score_thresh` tensor; None: nms_configs.score_thresh.
      max_output_size: detections per image K; None: nms_configs.max_output_size.
      with_base64: also build the `image_files` path (a second tower sharing the variables).
    """
    if score_thresh is None:
        score_thresh = float(config.nms_configs.score_thresh)
    max_output_size = int(max_output_size or config.nms_configs.max_output_size)
    graph = tf.Graph()
    with graph.as_default():
        thresh = tf1.placeholder_with_default(tf.constant(float(score_thresh), tf.float32), [],
                                              name=SCORE_THRESH)
        image_arrays = tf1.placeholder(tf.uint8, [batch_size, None, None, 3], name=IMAGE_ARRAYS)
        inputs = {IMAGE_ARRAYS: image_arrays}
        pre = preprocess_images(image_arrays, config)
        outputs = _detection_outputs(*pre, config, thresh, max_output_size)
        base64_outputs = {}
        if with_base64:
            image_files = tf1.placeholder(tf.string, [batch_size], name=IMAGE_FILES)
            inputs[IMAGE_FILES] = image_files
            with tf1.variable_scope(tf1.get_variable_scope(), reuse=True), \
                    tf.name_scope(BASE64_SCOPE):
                pre = decode_and_preprocess(image_files, config)
                base64_outputs = _detection_outputs(*pre, config, thresh, max_output_size)
    return ServingGraph(graph, inputs, outputs, base64_outputs, thresh, config, batch_size,
                        max_output_size, float(score_thresh))


def _use_ema(config: Any) -> bool:
    return bool(config.moving_average_decay and config.moving_average_decay > 0)


def restore_serving_graph(serving: ServingGraph, sess: tf1.Session,
                          ckpt_path: Optional[str]) -> None:
    """Restore `ckpt_path` into a serving graph (EMA-aware); None or '_': random weights."""
    with serving.graph.as_default():
        if ckpt_path and ckpt_path != "_":
            restore_variables(sess, ckpt_path, use_ema=_use_ema(serving.config))
        else:
            sess.run(tf1.global_variables_initializer())


def freeze_serving_graph(serving: ServingGraph, sess: tf1.Session,
                         with_base64: bool = True) -> tf1.GraphDef:
    """The serving GraphDef with variables folded in as constants."""
    names = (serving.output_node_names() if with_base64
             else [t.op.name for t in serving.outputs.values()])
    with serving.graph.as_default():
        return tf1.graph_util.convert_variables_to_constants(
            sess, serving.graph.as_graph_def(), names)


# =================================================================================================
# Detections on the Python side
# =================================================================================================
@dataclasses.dataclass
class Detections:
    """Detections of one image, best first.

    boxes: [n, 4] float32 yxyx in original-image pixels; scores: [n] float32; classes: [n] int32
    class ids 1..num_classes.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def filter(self, min_score: Optional[float] = None,
               max_boxes: Optional[int] = None) -> Detections:
        """Keep scores > min_score (as the NMS threshold does), then at most max_boxes."""
        keep = np.ones(len(self), bool) if min_score is None else self.scores > min_score
        boxes, scores, classes = self.boxes[keep], self.scores[keep], self.classes[keep]
        if max_boxes is not None:
            boxes, scores, classes = boxes[:max_boxes], scores[:max_boxes], classes[:max_boxes]
        return Detections(boxes, scores, classes)


def split_detections(outputs: Dict[str, np.ndarray], count: Optional[int] = None
                     ) -> List[Detections]:
    """Per-image `Detections` from batched outputs (boxes, scores, classes, num_detections)."""
    nums = np.asarray(outputs["num_detections"]).reshape(-1).astype(int)
    count = len(nums) if count is None else count
    return [Detections(np.asarray(outputs["boxes"][i, :n], np.float32),
                       np.asarray(outputs["scores"][i, :n], np.float32),
                       np.asarray(outputs["classes"][i, :n]).astype(np.int32))
            for i, n in zip(range(count), nums)]


# =================================================================================================
# Detectors: one interface over a checkpoint, a SavedModel, a frozen graph, TFLite and ONNX
# =================================================================================================
class DetectorError(errors.ModelFileError):
    """A model file or directory that cannot be loaded; the message names it."""


class Detector(abc.ABC):
    """Runs the serving graph on uint8 images. Subclasses implement `_run`.

    `batch_size` is the model's static batch (None: dynamic). `score_thresh` is the threshold
    the model applies by default; `predict` may raise it for any backend and lower it where the
    backend can take it as an input (checkpoint, SavedModel, frozen graph, ONNX).
    """

    batch_size: Optional[int] = None
    score_thresh: float = 0.0
    can_lower_threshold: bool = True
    kind: str = "model"

    @abc.abstractmethod
    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        """Raw outputs (boxes, scores, classes, num_detections) of one backend call."""

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
        feed_thresh = None
        if score_thresh is not None and score_thresh != self.score_thresh:
            if score_thresh < self.score_thresh and not self.can_lower_threshold:
                raise DetectorError(
                    f"this {self.kind} was exported with score threshold {self.score_thresh}; "
                    f"it cannot return scores below that (asked for {score_thresh}). Export "
                    f"again with a lower --min_score_thresh.")
            feed_thresh = score_thresh if self.can_lower_threshold else None
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
                dets = [d.filter(min_score=score_thresh) for d in dets]
            results.extend(dets)
        return results

    def close(self) -> None:  # noqa: B027 - only session-backed detectors hold resources
        """Release the backend's resources (nothing for most backends)."""

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SessionDetector(Detector):
    """A detector running a TF1 graph in a session, by tensor names."""

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

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        feed = {self.input: images}
        if score_thresh is not None and self.thresh is not None:
            feed[self.thresh] = score_thresh
        return self.sess.run(self.outputs, feed)

    def close(self) -> None:
        self.sess.close()


class CheckpointDetector(_SessionDetector):
    """The serving graph built from `config` with weights restored from a checkpoint."""

    kind = "checkpoint"

    def __init__(self, config: Any, ckpt_path: Optional[str], batch_size: Optional[int] = 1,
                 score_thresh: Optional[float] = None, max_output_size: Optional[int] = None,
                 threads: int = 0):
        serving = build_serving_graph(config, batch_size, score_thresh, max_output_size,
                                      with_base64=False)
        sess = tf1.Session(graph=serving.graph, config=session_config(threads))
        try:
            restore_serving_graph(serving, sess, ckpt_path)
        except Exception:
            sess.close()
            raise
        super().__init__(serving.graph, sess, serving.inputs[IMAGE_ARRAYS].name,
                         {k: v.name for k, v in serving.outputs.items()},
                         serving.score_thresh.name)


def _load_saved_model(path: str, threads: int) -> _SessionDetector:
    graph = tf.Graph()
    sess = tf1.Session(graph=graph, config=session_config(threads))
    try:
        with graph.as_default():
            meta = tf1.saved_model.loader.load(sess, [tf1.saved_model.tag_constants.SERVING],
                                               path)
    except (OSError, RuntimeError, tf.errors.OpError) as e:
        sess.close()
        raise DetectorError(f"--saved_model_dir '{path}' is not a loadable SavedModel: "
                            f"{str(e).splitlines()[0]}") from None
    if SERVING_DEFAULT not in meta.signature_def:
        sess.close()
        raise DetectorError(f"SavedModel '{path}' has no '{SERVING_DEFAULT}' signature; export "
                            f"it with model_inspect.py --runmode=saved_model")
    sig = meta.signature_def[SERVING_DEFAULT]
    outputs = {k: v.name for k, v in sig.outputs.items() if k in OUTPUT_KEYS}
    thresh = f"{SCORE_THRESH}:0"
    try:
        graph.get_tensor_by_name(thresh)
    except KeyError:
        thresh = None
    det = _SessionDetector(graph, sess, sig.inputs[IMAGE_ARRAYS].name, outputs, thresh)
    det.kind = "SavedModel"
    return det


def _load_frozen_graph(path: str, threads: int) -> _SessionDetector:
    graph_def = tf1.GraphDef()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001 - protobuf raises several error types
        raise DetectorError(f"--saved_model_dir '{path}' is not a frozen GraphDef (.pb): "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    names = {n.name for n in graph_def.node}
    missing = [n for n in (IMAGE_ARRAYS, *OUTPUT_KEYS) if n not in names]
    if missing:
        hint = (" It looks like the raw network of --runmode=freeze; export the full detector "
                "with --runmode=saved_model (it writes <model_name>_frozen.pb)."
                if "input" in names else "")
        raise DetectorError(f"frozen graph '{path}' lacks the serving nodes "
                            f"{', '.join(missing)}.{hint}")
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(graph_def, name="")
    sess = tf1.Session(graph=graph, config=session_config(threads))
    det = _SessionDetector(graph, sess, f"{IMAGE_ARRAYS}:0",
                           {k: f"{k}:0" for k in OUTPUT_KEYS},
                           f"{SCORE_THRESH}:0" if SCORE_THRESH in names else None)
    det.kind = "frozen graph"
    return det


class TFLiteDetector(Detector):
    """A .tflite model converted from the serving_default signature (builtin ops only)."""

    kind = "TFLite model"
    can_lower_threshold = False

    def __init__(self, path: str, threads: int = 0):
        try:
            self.interpreter = tf.lite.Interpreter(model_path=path,
                                                   num_threads=threads or None)
            self.runner = self.interpreter.get_signature_runner(SERVING_DEFAULT)
        except (ValueError, RuntimeError) as e:
            raise DetectorError(f"'{path}' is not a loadable TFLite model with a "
                                f"'{SERVING_DEFAULT}' signature: {str(e).splitlines()[0]}"
                                ) from None
        shape = self.runner.get_input_details()[IMAGE_ARRAYS]["shape_signature"]
        self.batch_size = None if shape[0] < 0 else int(shape[0])
        self.score_thresh = read_export_settings(path).get("score_thresh", 0.0)

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        return self.runner(**{IMAGE_ARRAYS: images})


class OnnxDetector(Detector):
    """An .onnx model converted by tf2onnx from the frozen serving graph, run by onnxruntime."""

    kind = "ONNX model"

    def __init__(self, path: str, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DetectorError("running an .onnx model needs onnxruntime: pip install -r "
                                "requirements.txt") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
            raise DetectorError(f"'{path}' is not a loadable ONNX model: "
                                f"{str(e).splitlines()[0]}") from None
        self.input_name = f"{IMAGE_ARRAYS}:0"
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.input_name not in inputs:
            raise DetectorError(f"ONNX model '{path}' has no input '{self.input_name}'; export "
                                f"it with model_inspect.py --runmode=onnx")
        batch = inputs[self.input_name].shape[0]
        self.batch_size = batch if isinstance(batch, int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.score_thresh = read_export_settings(path).get("score_thresh", 0.0)

    def _run(self, images: np.ndarray, score_thresh: Optional[float]) -> Dict[str, np.ndarray]:
        feed = {self.input_name: images}
        if score_thresh is not None:
            feed[f"{SCORE_THRESH}:0"] = np.array(score_thresh, np.float32)
        values = self.session.run(self.output_names, feed)
        return {name.split(":")[0]: v for name, v in zip(self.output_names, values)}


def load_detector(path: str, threads: int = 0) -> Detector:
    """A detector from a SavedModel directory, a frozen `.pb`, a `.tflite` or an `.onnx` file."""
    if not path or not tf.io.gfile.exists(path):
        raise DetectorError(f"--saved_model_dir '{path}' does not exist: give a SavedModel "
                            f"directory or a .pb/.tflite/.onnx file written by --runmode="
                            f"saved_model or onnx")
    if tf.io.gfile.isdir(path):
        if not (tf.io.gfile.exists(os.path.join(path, "saved_model.pb")) or
                tf.io.gfile.exists(os.path.join(path, "saved_model.pbtxt"))):
            raise DetectorError(f"--saved_model_dir '{path}' holds no saved_model.pb; export one "
                                f"with --runmode=saved_model, or pass a .pb/.tflite/.onnx file")
        return _load_saved_model(path, threads)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".tflite":
        return TFLiteDetector(path, threads)
    if ext == ".onnx":
        return OnnxDetector(path, threads)
    return _load_frozen_graph(path, threads)


# =================================================================================================
# Export: SavedModel (+ frozen graph, TFLite), ONNX, checkpoint
# =================================================================================================
EXPORT_SETTINGS = "export_settings.yaml"


def _settings_path(model_path: str) -> str:
    """Where the export settings of a model file or SavedModel directory are recorded."""
    if tf.io.gfile.isdir(model_path):
        return os.path.join(model_path, EXPORT_SETTINGS)
    return os.path.splitext(model_path)[0] + "." + EXPORT_SETTINGS


def _write_export_settings(model_path: str, settings: Dict[str, Any]) -> None:
    import yaml

    with tf.io.gfile.GFile(_settings_path(model_path), "w") as f:
        f.write(yaml.safe_dump(settings, default_flow_style=False, sort_keys=False))


def read_export_settings(model_path: str) -> Dict[str, Any]:
    """The settings an export recorded beside the model ({} when there are none)."""
    import yaml

    path = _settings_path(model_path)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path, "r") as f:
        return yaml.safe_load(f) or {}


def _export_settings(serving: ServingGraph, ckpt_path: Optional[str]) -> Dict[str, Any]:
    nms = serving.config.nms_configs
    return {
        "model_name": serving.config.name,
        "checkpoint": ckpt_path,
        "image_size": list(utils.parse_image_size(serving.config.image_size)),
        "batch_size": serving.batch_size if serving.batch_size is not None else "dynamic",
        "score_thresh": serving.default_score_thresh,
        "max_output_size": serving.max_output_size,
        "nms": postprocess.nms_description(serving.config, None, serving.max_output_size),
        "nms_method": nms.method,
        "class_agnostic": bool(nms.class_agnostic),
    }


def _check_new_dir(path: str, flag: str) -> None:
    if tf.io.gfile.exists(path) and (not tf.io.gfile.isdir(path) or tf.io.gfile.listdir(path)):
        raise ValueError(f"{flag} '{path}' already exists and is not empty; remove it or choose "
                         f"another directory (nothing was overwritten)")


@dataclasses.dataclass
class ExportResult:
    """Paths written by `export_saved_model` (tflite is None unless requested)."""

    saved_model_dir: str
    frozen_graph: str
    tflite: Optional[str]
    settings: Dict[str, Any]


def export_saved_model(config: Any, saved_model_dir: str, model_name: str,
                       ckpt_path: Optional[str] = None, batch_size: Optional[int] = 1,
                       score_thresh: Optional[float] = None,
                       max_output_size: Optional[int] = None,
                       tflite_path: Optional[str] = None) -> ExportResult:
    """Write a SavedModel with the signatures `serving_default` (uint8 `image_arrays`
    [B, h, w, 3]) and `serving_base64` (encoded `image_files` [B]), the frozen graph
    `<saved_model_dir>/<model_name>_frozen.pb` of the same detector, the resolved
    `config.yaml`, `export_settings.yaml` and, with `tflite_path`, a TFLite model.

    Weights come from `ckpt_path` with EMA values when the checkpoint has them (None or '_':
    random). The score threshold is a run-time input with the given default; the number of
    detections per image is fixed at `max_output_size`.
    """
    _check_new_dir(saved_model_dir, "--saved_model_dir")
    serving = build_serving_graph(config, batch_size, score_thresh, max_output_size)
    settings = _export_settings(serving, ckpt_path)
    with tf1.Session(graph=serving.graph) as sess:
        restore_serving_graph(serving, sess, ckpt_path)
        with serving.graph.as_default():
            builder = tf1.saved_model.Builder(saved_model_dir)
            make = tf1.saved_model.signature_def_utils.predict_signature_def
            signatures = {
                SERVING_DEFAULT: make({IMAGE_ARRAYS: serving.inputs[IMAGE_ARRAYS]},
                                      serving.outputs),
                SERVING_BASE64: make({IMAGE_FILES: serving.inputs[IMAGE_FILES]},
                                     serving.base64_outputs),
            }
            builder.add_meta_graph_and_variables(
                sess, [tf1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                clear_devices=True, strip_default_attrs=True)
            builder.save()
        frozen = freeze_serving_graph(serving, sess)
    frozen_path = os.path.join(saved_model_dir, f"{model_name}_frozen.pb")
    with tf.io.gfile.GFile(frozen_path, "wb") as f:
        f.write(frozen.SerializeToString())
    config.save_to_yaml(os.path.join(saved_model_dir, "config.yaml"))
    _write_export_settings(saved_model_dir, settings)
    _write_export_settings(frozen_path, settings)
    tflite = None
    if tflite_path:
        tflite = export_tflite(saved_model_dir, tflite_path)
        _write_export_settings(tflite, settings)
    return ExportResult(saved_model_dir, frozen_path, tflite, settings)


def export_tflite(saved_model_dir: str, tflite_path: str) -> str:
    """Convert the `serving_default` signature of a SavedModel to a float32 TFLite model.

    The whole detector (pre-processing, network, NMS) converts to TFLite builtin ops
    (TFLITE_BUILTINS only, no SELECT_TF_OPS). The score threshold becomes a constant (the
    export setting): a TFLite model can raise it afterwards but not lower it.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[SERVING_DEFAULT])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        model = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises several error types
        raise ValueError(f"TFLite conversion of '{saved_model_dir}' failed: "
                         f"{str(e).splitlines()[0]}") from None
    parent = os.path.dirname(tflite_path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(tflite_path, "wb") as f:
        f.write(model)
    return tflite_path


def export_onnx(config: Any, onnx_path: str, ckpt_path: Optional[str] = None,
                batch_size: Optional[int] = 1, score_thresh: Optional[float] = None,
                max_output_size: Optional[int] = None, opset: int = 15) -> str:
    """Convert the frozen serving graph (uint8 `image_arrays:0` input) to ONNX with tf2onnx.

    Outputs are `detections:0`, `boxes:0`, `scores:0`, `classes:0`, `num_detections:0` as in
    the SavedModel; `score_thresh:0` is an optional input holding the export setting. Only hard
    NMS converts (ONNX's NonMaxSuppression has no soft-NMS).
    """
    if config.nms_configs.method != "hard":
        raise ValueError("ONNX export needs nms_configs.method=hard: ONNX NonMaxSuppression has "
                         "no soft-NMS (pass --hparams=nms_configs.method=hard)")
    try:
        import tf2onnx
    except ImportError:
        raise ValueError("ONNX export needs tf2onnx: pip install -r requirements.txt") from None
    serving = build_serving_graph(config, batch_size, score_thresh, max_output_size,
                                  with_base64=False)
    settings = _export_settings(serving, ckpt_path)
    with tf1.Session(graph=serving.graph) as sess:
        restore_serving_graph(serving, sess, ckpt_path)
        frozen = freeze_serving_graph(serving, sess, with_base64=False)
    parent = os.path.dirname(onnx_path)
    if parent:
        tf.io.gfile.makedirs(parent)
    outputs = [serving.outputs[k].name for k in OUTPUT_KEYS]
    tf2onnx.convert.from_graph_def(frozen, input_names=[f"{IMAGE_ARRAYS}:0"],
                                   output_names=outputs, opset=opset, output_path=onnx_path)
    _write_export_settings(onnx_path, settings)
    return onnx_path


def eval_ckpt(config: Any, ckpt_path: str, export_ckpt: Optional[str] = None
              ) -> Dict[str, Any]:
    """Restore `ckpt_path` into the network (EMA-aware). With `export_ckpt`, save a checkpoint
    (prefix `export_ckpt`, plus a `checkpoint` index file beside it) whose raw variables hold
    the restored (EMA) values and, when the config uses EMA, whose
    `<var>/ExponentialMovingAverage` shadows hold the same values, so it restores the same
    either way."""
    net = build_raw_network(config, 1)
    use_ema = _use_ema(config)
    with net.graph.as_default(), tf1.Session(graph=net.graph) as sess:
        prefix = restore_variables(sess, ckpt_path, use_ema=use_ema)
        model_vars = tf1.global_variables()
        reader = tf.train.load_checkpoint(prefix)
        ema_found = use_ema and any(
            reader.has_tensor(v.op.name + EMA_SUFFIX) for v in model_vars)
        info = {"checkpoint": prefix, "variables": len(model_vars), "ema": ema_found,
                "exported": None}
        if export_ckpt:
            names, tensors = [], []
            for v in model_vars:
                value = v.read_value()
                names.append(v.op.name)
                tensors.append(value)
                if use_ema:
                    names.append(v.op.name + EMA_SUFFIX)
                    tensors.append(value)
            parent = os.path.dirname(export_ckpt)
            if parent:
                tf.io.gfile.makedirs(parent)
            sess.run(tf.raw_ops.SaveV2(prefix=export_ckpt, tensor_names=names,
                                       shape_and_slices=[""] * len(names), tensors=tensors))
            tf1.train.update_checkpoint_state(parent or ".", export_ckpt)
            info["exported"] = export_ckpt
    return info


# =================================================================================================
# Images, label maps and drawing
# =================================================================================================
class ImageReadError(errors.DataError):
    """An input image that is missing or cannot be decoded; the message names the file."""


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB [h, w, 3]: grayscale is expanded, alpha and palettes dropped."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageReadError(f"'{path}': no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated files fail here
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"'{path}': cannot decode it as an image ({e})") from None


def expand_image_inputs(spec: str) -> Tuple[List[str], List[str]]:
    """Files named by `--input_image`: comma-separated paths and/or glob patterns.

    Returns (paths in order, problems): a pattern that matches nothing is a problem named by
    its pattern; a plain path is kept as is (a missing one fails by name when read).
    """
    paths, problems = [], []
    for piece in (p.strip() for p in (spec or "").split(",")):
        if not piece:
            continue
        if glob.has_magic(piece):
            matches = sorted(p for p in glob.glob(piece) if os.path.isfile(p))
            if matches:
                paths.extend(matches)
            else:
                problems.append(f"'{piece}': no file matches this pattern")
        else:
            paths.append(piece)
    return paths, problems


def label_map_of(config: Any) -> Dict[int, str]:
    """{class id: name} of the model: `config.label_map` ('coco' when None, 'voc', a mapping or
    a .json/.yaml path)."""
    from dataset import label_maps

    return label_maps.get_label_map(config.label_map)


_COLORS = [(255, 56, 56), (56, 56, 255), (56, 255, 56), (255, 157, 151), (255, 178, 29),
           (207, 210, 49), (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52),
           (0, 212, 187), (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255),
           (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def draw_detections(image: np.ndarray, detections: Detections, label_map: Dict[int, str],
                    min_score: float = 0.0, max_boxes: Optional[int] = None,
                    line_thickness: Optional[int] = None) -> np.ndarray:
    """A copy of `image` (uint8 RGB [h, w, 3]) with labelled boxes ('name: 87%').

    Draws the detections with score > min_score, at most max_boxes, best first. A class id
    missing from `label_map` is labelled 'class <id>'.
    """
    from PIL import Image, ImageDraw

    det = detections.filter(min_score, max_boxes)
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    h, w = image.shape[:2]
    thickness = line_thickness or max(2, round(0.003 * max(h, w)))
    font = _font(max(8, round(0.018 * max(h, w))))
    for box, score, cls in zip(det.boxes, det.scores, det.classes):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        color = _COLORS[int(cls) % len(_COLORS)]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=thickness)
        text = f"{label_map.get(int(cls), f'class {int(cls)}')}: {100 * float(score):.0f}%"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = ymin - th - 4 if ymin - th - 4 >= 0 else ymin
        draw.rectangle([xmin, ty, xmin + tw + 4, ty + th + 4], fill=color)
        draw.text((xmin + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def write_image(image: np.ndarray, path: str) -> None:
    from PIL import Image

    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


# =================================================================================================
# Drivers: images, benchmark, video
# =================================================================================================
@dataclasses.dataclass
class ImageRunSummary:
    """What `detect_images` did: outputs by input path, and the inputs that failed."""

    written: Dict[str, Optional[str]]
    detections: Dict[str, Detections]
    failed: List[str]


def _same_size_chunks(paths: Sequence[str], chunk: int, failed: List[str]
                      ) -> Iterator[List[Tuple[int, str, np.ndarray]]]:
    """Read images in order and group consecutive same-sized ones, `chunk` at most."""
    pending: List[Tuple[int, str, np.ndarray]] = []
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
        except ImageReadError as e:
            failed.append(str(e))
            continue
        if pending and (len(pending) >= chunk or pending[0][2].shape != image.shape):
            yield pending
            pending = []
        pending.append((index, path, image))
    if pending:
        yield pending


def detect_images(detector: Detector, paths: Sequence[str], output_dir: Optional[str],
                  label_map: Dict[int, str], min_score: Optional[float] = None,
                  max_boxes: Optional[int] = None, line_thickness: Optional[int] = None,
                  batch_size: int = 1, log: Callable[[str], None] = print) -> ImageRunSummary:
    """Run `detector` on image files; write `<output_dir>/<i>.jpg` (i = position in `paths`).

    A missing or undecodable file is reported by name and skipped; the others are processed.
    """
    failed: List[str] = []
    written: Dict[str, Optional[str]] = {}
    found: Dict[str, Detections] = {}
    thresh = detector.score_thresh if min_score is None else min_score
    chunk = detector.batch_size or max(1, batch_size)
    for group in _same_size_chunks(paths, chunk, failed):
        images = np.stack([g[2] for g in group])
        for (index, path, image), det in zip(group, detector.predict(images, min_score)):
            det = det.filter(thresh, max_boxes)
            found[path] = det
            out = None
            if output_dir:
                out = os.path.join(output_dir, f"{index}.jpg")
                write_image(draw_detections(image, det, label_map, thresh, max_boxes,
                                            line_thickness), out)
            written[path] = out
            names = ", ".join(f"{label_map.get(int(c), f'class {int(c)}')} {s:.2f}"
                              for c, s in zip(det.classes[:5], det.scores[:5]))
            more = " ..." if len(det) > 5 else ""
            log(f"{path}: {len(det)} detections{': ' + names + more if len(det) else ''}"
                f"{' -> ' + out if out else ''}")
    return ImageRunSummary(written, found, failed)


@dataclasses.dataclass
class EndToEndResult(_PerImageTiming):
    """End-to-end latency (uint8 image in, detections out). Times are seconds."""

    model: str
    batch_size: int
    runs: int
    mean_batch_s: float
    median_batch_s: float
    image_size: Tuple[int, int]

    def summary(self) -> str:
        h, w = self.image_size
        return (f"{self.model} end-to-end (pre-processing + network + NMS; {w}x{h} uint8 "
                f"input, batch {self.batch_size}, {self.runs} runs): per image mean "
                f"{self.mean_image_ms:.2f} ms, median {self.median_image_ms:.2f} ms, "
                f"{self.fps:.2f} FPS")


def benchmark_detector(detector: Detector, images: np.ndarray, batch_size: int = 1,
                       runs: int = 10, warmup: int = 5, name: str = "model",
                       trace_filename: Optional[str] = None,
                       score_thresh: Optional[float] = None) -> EndToEndResult:
    """Time `detector.predict` on a batch tiled from `images` [n, h, w, 3] uint8.

    The batch is the model's static batch size, or `batch_size` for a dynamic-batch model.
    `warmup` untimed calls come first. Each timed call covers feeding the uint8 batch,
    pre-processing, the network, NMS (at `score_thresh`, default: the model's) and fetching
    the detections.
    """
    if runs < 1:
        raise ValueError("--bm_runs must be >= 1")
    batch = detector.batch_size or max(1, batch_size)
    reps = -(-batch // len(images))
    batch_images = np.concatenate([images] * reps)[:batch]
    for _ in range(warmup):
        detector.predict(batch_images, score_thresh)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.predict(batch_images, score_thresh)
        times.append(time.perf_counter() - start)
    if trace_filename and isinstance(detector, _SessionDetector):
        feed = {detector.input: batch_images}
        if score_thresh is not None and detector.thresh is not None:
            feed[detector.thresh] = score_thresh
        with detector.graph.as_default():
            _write_trace(detector.sess, detector.outputs, feed, trace_filename)
    return EndToEndResult(name, batch, runs, statistics.mean(times), statistics.median(times),
                          tuple(images.shape[1:3]))


def display_available() -> Tuple[bool, str]:
    """Whether cv2.imshow can open a window here, and why not."""
    import re

    import cv2

    match = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if match and match.group(1).upper() == "NONE":
        return False, "OpenCV has no GUI support here (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                 os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY is not set)"
    return True, ""


@dataclasses.dataclass
class VideoSummary:
    frames: int
    seconds: float
    output: Optional[str]
    shown: bool


def detect_video(detector: Detector, input_video: str, output_video: Optional[str],
                 label_map: Dict[int, str], min_score: Optional[float] = None,
                 max_boxes: Optional[int] = None, line_thickness: Optional[int] = None,
                 show: bool = False, progress: bool = True) -> VideoSummary:
    """Detect on every frame of `input_video` (anything OpenCV reads).

    With `output_video`, annotated frames are written there (mp4v codec, the input's frame
    rate, 25 when unknown) under a progress bar. With `show`, they are shown in a window ('q'
    quits).
    """
    import cv2
    from tqdm import tqdm

    if not os.path.isfile(input_video):
        raise ValueError(f"--input_video '{input_video}': no such file")
    capture = cv2.VideoCapture(input_video)
    if not capture.isOpened():
        raise ValueError(f"--input_video '{input_video}': OpenCV cannot open it as a video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    thresh = detector.score_thresh if min_score is None else min_score
    frames, start = 0, time.perf_counter()
    bar = tqdm(total=total, unit="frame", disable=not progress, file=sys.stderr)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[..., ::-1])
            det = detector.predict(rgb[None], min_score)[0]
            drawn = draw_detections(rgb, det, label_map, thresh, max_boxes, line_thickness)
            bgr = np.ascontiguousarray(drawn[..., ::-1])
            if output_video:
                if writer is None:
                    parent = os.path.dirname(output_video)
                    if parent:
                        os.makedirs(parent, exist_ok=True)
                    writer = cv2.VideoWriter(output_video, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (bgr.shape[1], bgr.shape[0]))
                    if not writer.isOpened():
                        raise ValueError(f"--output_video '{output_video}': OpenCV cannot "
                                         f"write it (try a .mp4 or .mov name)")
                writer.write(bgr)
            if show:
                cv2.imshow("VFPN detections", bgr)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            frames += 1
            bar.update(1)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    if frames == 0:
        raise ValueError(f"--input_video '{input_video}': no frame could be read")
    return VideoSummary(frames, time.perf_counter() - start, output_video, show)

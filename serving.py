"""The two inference graphs, restoring weights into them, and freezing them.

Each graph is built in its own `tf.Graph`, so callers and tests never depend on global graph
state:

* the raw network (`build_raw_network`): a float32 placeholder `input` [B, H, W, 3] (normalised
  pixels) to the per-level head outputs `cls_outputs_<l>` [B, H_l, W_l, A * num_classes] and
  `box_outputs_<l>` [B, H_l, W_l, A * 4] (see efficientdet_arch). Used to time, freeze and
  check the network alone.
* the serving graph (`build_serving_graph`): uint8 images `image_arrays` [B, h, w, 3] (any h, w;
  one size per batch) or encoded images `image_files` [B] (JPEG/PNG/GIF/BMP bytes, any sizes) ->
  pre-processing (`preprocess_images`) -> network -> post-processing (`postprocess.py`) -> boxes
  [B, K, 4] (yxyx, original-image pixels), scores [B, K], classes [B, K] (ids 1..num_classes),
  num_detections [B] and the EfficientDet-style `detections` [B, K, 7] rows
  (image_index, ymin, xmin, ymax, xmax, score, class). B may be None (dynamic batch); every image
  gets its own detections. The score threshold is the scalar `score_thresh` (a
  placeholder-with-default holding the export setting, so it can be fed at run time); K, the
  number of detections per image (`max_output_size`), is fixed when the graph is built.

The same serving graph backs checkpoint inference and every export (see `export.py` and
`detectors.py`), so they agree.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import tensorflow as tf

import checkpoint_io
import efficientdet_arch
import hparams_config
import postprocess
import utils

tf1 = tf.compat.v1

INPUT_NAME = "input"
IMAGE_ARRAYS = "image_arrays"
IMAGE_FILES = "image_files"
SCORE_THRESH = "score_thresh"
BASE64_SCOPE = "base64"
OUTPUT_KEYS = ("detections", "boxes", "scores", "classes", "num_detections")
SERVING_DEFAULT = "serving_default"
SERVING_BASE64 = "serving_base64"


class GraphHolder(Protocol):
    graph: tf.Graph


# -------------------------------------------------------------------------------------------------
# The raw network
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RawNetwork:
    """A built raw network: its graph, input placeholder and named head outputs."""

    graph: tf.Graph
    inputs: tf.Tensor
    outputs: Dict[str, tf.Tensor]
    config: hparams_config.Config

    @property
    def output_names(self) -> List[str]:
        return [t.op.name for t in self.outputs.values()]


def build_raw_network(config: hparams_config.Config, batch_size: Optional[int] = 1) -> RawNetwork:
    """The network alone (batch norm in inference mode) in a new graph; see the module doc."""
    height, width = utils.parse_image_size(config.image_size)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf1.placeholder(tf.float32, [batch_size, height, width, 3], name=INPUT_NAME)
        cls_out, box_out = efficientdet_arch.build_model(inputs, config, training=False)
        outputs = {}
        for level in sorted(cls_out):
            for prefix, tensors in (("cls_outputs", cls_out), ("box_outputs", box_out)):
                name = f"{prefix}_{level}"
                outputs[name] = tf.identity(tensors[level], name=name)
    return RawNetwork(graph, inputs, outputs, config)


def random_images(net: RawNetwork, batch_size: int, seed: int = 0) -> np.ndarray:
    """Normal noise shaped like the raw network's input [batch_size, H, W, 3] float32."""
    _, height, width, _ = net.inputs.shape.as_list()
    return np.random.RandomState(seed).randn(batch_size, height, width, 3).astype(np.float32)


# -------------------------------------------------------------------------------------------------
# Sessions: weights, freezing
# -------------------------------------------------------------------------------------------------
def has_checkpoint(ckpt_path: Optional[str]) -> bool:
    """False for None, '' and '_', which mean random weights."""
    return bool(ckpt_path) and ckpt_path != "_"


def restore_or_init(holder: GraphHolder, sess: tf1.Session, ckpt_path: Optional[str],
                    config: hparams_config.Config) -> Optional[str]:
    """Restore `ckpt_path` into `holder.graph` (EMA shadows when `config` uses EMA and the
    checkpoint has them), or initialise randomly when it is None, '' or '_'.

    Returns the restored checkpoint prefix, or None for random weights.
    """
    with holder.graph.as_default():
        if has_checkpoint(ckpt_path):
            return checkpoint_io.restore_variables(sess, ckpt_path,
                                                   use_ema=checkpoint_io.use_ema(config))
        sess.run(tf1.global_variables_initializer())
        return None


def freeze(sess: tf1.Session, graph: tf.Graph, output_names: Sequence[str]) -> tf1.GraphDef:
    """`graph`'s GraphDef down to the ops `output_names`, variables folded in as constants."""
    with graph.as_default():
        return tf1.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), list(output_names))


# -------------------------------------------------------------------------------------------------
# Pre-processing
# -------------------------------------------------------------------------------------------------
def preprocess_images(images: tf.Tensor, config: hparams_config.Config
                      ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Resize-and-pad a batch of same-sized images to the network input.

    The image is scaled by s = min(H / h, W / w) (aspect ratio kept) to ceil(h * s) x
    ceil(w * s) with bilinear resizing, normalised with `mean_rgb`/`stddev_rgb` on [0, 1]
    pixels, and padded with zeros (after normalisation) at the bottom and right to H x W.

    This is the eval pre-processing of dataloader.py, which the models are trained with:
    half-pixel centres and ceil sizes (the original EfficientDet resizes without half-pixel
    centres and with int() sizes; the two differ by under one original pixel). The one
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


def decode_and_preprocess(encoded: tf.Tensor, config: hparams_config.Config
                          ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode encoded images of any sizes and pre-process each (see `preprocess_images`).

    Args:
      encoded: [B] string, JPEG/PNG/GIF/BMP bytes. Grayscale becomes RGB; alpha is dropped;
        16-bit PNGs are scaled to 8 bits by `tf.io.decode_image` (their high byte).

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


# -------------------------------------------------------------------------------------------------
# The serving graph: pre-processing -> network -> post-processing
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ServingGraph:
    """The full detector graph and its named endpoints.

    `inputs` maps 'image_arrays' (and 'image_files' when built with base64) to placeholders;
    `outputs` maps OUTPUT_KEYS to the tensors of the image_arrays path and `base64_outputs` to
    those of the image_files path. `score_thresh` is the threshold tensor (fed or default
    `default_score_thresh`).
    """

    graph: tf.Graph
    inputs: Dict[str, tf.Tensor]
    outputs: Dict[str, tf.Tensor]
    base64_outputs: Dict[str, tf.Tensor]
    score_thresh: tf.Tensor
    config: hparams_config.Config
    batch_size: Optional[int]
    max_output_size: int
    default_score_thresh: float

    def output_node_names(self, with_base64: bool = True) -> List[str]:
        """Op names of the outputs (of both paths unless not `with_base64`), e.g. to freeze."""
        tensors = list(self.outputs.values())
        if with_base64:
            tensors += list(self.base64_outputs.values())
        return [t.op.name for t in tensors]


def _detection_outputs(inputs: tf.Tensor, image_scales: tf.Tensor, original_sizes: tf.Tensor,
                       config: hparams_config.Config, score_thresh: tf.Tensor,
                       max_output_size: int) -> Dict[str, tf.Tensor]:
    cls_out, box_out = efficientdet_arch.build_model(inputs, config, training=False)
    det = postprocess.generate_detections(cls_out, box_out, config, image_scales,
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


def build_serving_graph(config: hparams_config.Config, batch_size: Optional[int] = 1,
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

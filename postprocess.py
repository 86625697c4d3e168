"""Post-processing: raw head outputs to final detections (decode, top-k, NMS), in pure TF.

One function, `generate_detections`, serves COCO eval, checkpoint inference and every export
(SavedModel, frozen graph, TFLite, ONNX), so all of them give the same detections. It follows
the EfficientDet release, with its later `nms_configs` (hard or soft NMS, class-agnostic):

1. Flatten the levels (min_level first; per level row-major positions, then anchors) to class
   logits [B, N, C] and box codes [B, N, 4], N = number of anchors.
2. Keep the `max_nms_inputs` best (anchor, class) pairs of each image by logit. This is done in
   two exact stages (best anchors by their max class logit, then the best pairs among them), which
   selects the same pairs as one top-k over all N * C logits but moves far less memory.
3. Sigmoid; decode the kept boxes against their anchors (yxyx, input pixels).
4. NMS, per class (boxes shifted apart by class, so one NMS call never mixes classes) or
   class-agnostic (`nms_configs.class_agnostic`), hard (`method='hard'`, IoU > `iou_thresh`
   suppresses) or gaussian soft-NMS (`method='gaussian'`: score *= exp(-0.5 * IoU^2 / sigma);
   TF's soft-NMS also drops any box whose IoU exceeds its iou_threshold, which is set to 1.0 here
   so gaussian decay is the only suppression). Boxes whose (decayed) score is <= the score
   threshold are dropped; at most `max_output_size` are kept, best first.
5. Clip to the network input, scale to original-image pixels by `image_scales`, and clip to the
   original image when its size is given. Padding rows: box 0, score 0, class 0.

Every image of a batch gets its own detections, for a static batch and for a dynamic (None) batch
alike (the per-image NMS runs in a `tf.while_loop` when the batch size is unknown). Nothing here
uses `py_func`, so the graph exports to TFLite (builtin ops) and ONNX and runs on any TF runtime.

Sits low in the import order (only `utils` and `anchors` are imported): det_model_fn.py uses it
for COCO eval.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
from absl import logging

import anchors as anchors_lib
import utils
from hparams_config import Config

# Class id of padding rows; real class ids run 1..num_classes.
PAD_CLASS = 0
# Box coordinates are bounded to +-this many pixels for NMS only (guards against inf).
MAX_COORDINATE = 1e6
Number = Union[int, float]

_logged_choices: set = set()


def nms_description(config: Config, score_thresh: Any = None,
                    max_output_size: Optional[int] = None) -> str:
    """One human-readable line describing the post-processing `config` selects."""
    nms = config.nms_configs
    thresh = nms.score_thresh if score_thresh is None else score_thresh
    if not isinstance(thresh, (int, float)):
        thresh = f"{nms.score_thresh} (overridable at run time)"
    scope = "class-agnostic" if nms.class_agnostic else "per-class"
    if nms.method == "gaussian":
        kind = f"gaussian soft-NMS (sigma {nms.sigma})"
    else:
        kind = f"hard NMS (IoU > {nms.iou_thresh} suppresses)"
    top_k = nms.max_nms_inputs if nms.max_nms_inputs and nms.max_nms_inputs > 0 else "all"
    return (f"post-processing: {scope} {kind}, score threshold {thresh}, at most "
            f"{max_output_size or nms.max_output_size} detections per image, top-{top_k} "
            f"(anchor, class) candidates per image")


def log_nms_choice(config: Config, score_thresh: Any = None,
                   max_output_size: Optional[int] = None) -> str:
    """Log the NMS choice once per distinct setting in this process; returns the line."""
    line = nms_description(config, score_thresh, max_output_size)
    if line not in _logged_choices:
        _logged_choices.add(line)
        logging.info(line)
    return line


def flatten_outputs(cls_outputs: Dict[int, tf.Tensor], box_outputs: Dict[int, tf.Tensor],
                    num_classes: int) -> Tuple[List[tf.Tensor], tf.Tensor]:
    """Reshape every level to anchors in anchor order.

    Args:
      cls_outputs: {level: [B, H_l, W_l, A * C]} class logits (channel = a * C + c).
      box_outputs: {level: [B, H_l, W_l, A * 4]} box codes (channel = a * 4 + k).
      num_classes: C.

    Returns:
      per-level logits [[B, N_l, C], ...] (min_level first; `top_candidates` takes the list,
      as a tensor too) and codes [B, N, 4] (ty, tx, th, tw), N = sum of N_l, float32.
    """
    logits, codes = [], []
    for level in sorted(cls_outputs):
        _, height, width, channels = cls_outputs[level].shape.as_list()
        if None in (height, width, channels):
            raise ValueError(f"level {level} class outputs need a static shape, got "
                             f"{cls_outputs[level].shape}")
        count = height * width * (channels // num_classes)  # anchors of this level
        logits.append(tf.reshape(tf.cast(cls_outputs[level], tf.float32),
                                 [-1, count, num_classes]))
        codes.append(tf.reshape(tf.cast(box_outputs[level], tf.float32), [-1, count, 4]))
    return logits, tf.concat(codes, axis=1)


def top_candidates(logits: Union[tf.Tensor, Sequence[tf.Tensor]], k: int
                   ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The `k` best (anchor, class) pairs of every image by logit, best first.

    Two stages, exact up to ties: a pair in the overall top-k has a logit >= the k-th largest,
    so its anchor's best logit is too and fewer than k anchors can beat it, i.e. its anchor is
    among the k best anchors by max logit. For d0 on COCO (N * C = 4.4M logits per image) this
    takes about 7 ms per image on a 2-core CPU, one top-k over all logits about 15 ms.

    Args:
      logits: [B, N, C] float32, or a list of per-level [B, N_l, C] in anchor order (they are
        concatenated).
      k: candidates per image; clamped to N * C.

    Returns:
      values [B, k'] logits, anchor_idx [B, k'] int32 in [0, N), class_idx [B, k'] int32 in
      [0, C), with k' = min(k, N * C).
    """
    all_logits = logits if isinstance(logits, tf.Tensor) else tf.concat(list(logits), axis=1)
    num_anchors, num_classes = all_logits.shape.as_list()[1:]
    k = min(k, num_anchors * num_classes)
    k_anchors = min(k, num_anchors)
    if num_classes > 1 and k_anchors < num_anchors:
        _, anchor_pick = tf.math.top_k(tf.reduce_max(all_logits, axis=2), k=k_anchors,
                                       sorted=False)  # [B, k_anchors]
        picked = tf.gather(all_logits, anchor_pick, batch_dims=1)  # [B, k_anchors, C]
    else:
        anchor_pick = None
        picked = all_logits
    batch = tf.shape(picked)[0]
    flat = tf.reshape(picked, [batch, -1])
    values, flat_idx = tf.math.top_k(flat, k=k, sorted=True)
    local_anchor = flat_idx // num_classes
    class_idx = flat_idx % num_classes
    if anchor_pick is None:
        anchor_idx = local_anchor
    else:
        anchor_idx = tf.gather(anchor_pick, local_anchor, batch_dims=1)
    return values, anchor_idx, class_idx


def _nms_one_image(boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor, config: Config,
                   score_thresh: Any, max_output_size: int, padded: bool
                   ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """NMS for one image; outputs padded to `max_output_size` rows (by the NMS op itself when
    `padded`, which keeps every shape static; see the comments below).

    Args:
      boxes: [K, 4] yxyx input pixels. scores: [K] in [0, 1]. classes: [K] int32 1..C.

    Returns:
      boxes [M, 4], scores [M], classes [M] int32 (PAD_CLASS in padding rows), count () int32,
      with M = max_output_size.
    """
    nms = config.nms_configs
    if nms.method == "gaussian":
        iou_thresh, sigma = 1.0, float(nms.sigma)
    else:
        iou_thresh, sigma = float(nms.iou_thresh), 0.0
    # Infinite coordinates (a diverged model) are bounded so that NMS stays defined.
    nms_boxes = tf.clip_by_value(boxes, -MAX_COORDINATE, MAX_COORDINATE)
    if not nms.class_agnostic:
        # Shift each class by class * span, span = the extent of all boxes plus one pixel, so
        # boxes of different classes never overlap and IoUs within a class are unchanged.
        span = tf.reduce_max(nms_boxes) - tf.reduce_min(nms_boxes) + 1.0
        nms_boxes = nms_boxes + tf.expand_dims(tf.cast(classes, tf.float32), 1) * span
    if padded:
        # Padded NMS (max_output_size rows, index 0 and score 0 after the `count` valid ones)
        # keeps every shape static: TFLite's XNNPACK delegate only takes graphs without
        # dynamic-sized tensors, and a pad of computed size after NMS made them dynamic.
        selected, out_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=nms_boxes, scores=scores, max_output_size=max_output_size,
            iou_threshold=iou_thresh, score_threshold=score_thresh, soft_nms_sigma=sigma,
            pad_to_max_output_size=True)
        valid = tf.range(max_output_size) < count
        selected_boxes, selected_classes = tf.gather(boxes, selected), tf.gather(classes, selected)
    else:
        # Inside the dynamic batch's while loop: tf2onnx's shape inference of the loop rejects
        # the padded op's outputs, so the rows are padded here. TFLite's NMS returns rows already
        # padded (index 0, score 0), so the valid rows are found by their score, which NMS keeps
        # > score_thresh >= 0.
        selected, out_scores = tf.image.non_max_suppression_with_scores(
            nms_boxes, scores, max_output_size, iou_threshold=iou_thresh,
            score_threshold=score_thresh, soft_nms_sigma=sigma)
        pad = max_output_size - tf.shape(selected)[0]
        out_scores = tf.reshape(tf.pad(out_scores, [[0, pad]]), [max_output_size])
        valid = out_scores > 0.0
        count = tf.reduce_sum(tf.cast(valid, tf.int32))
        selected_boxes = tf.reshape(tf.pad(tf.gather(boxes, selected), [[0, pad], [0, 0]]),
                                    [max_output_size, 4])
        selected_classes = tf.reshape(tf.pad(tf.gather(classes, selected), [[0, pad]]),
                                      [max_output_size])
    out_boxes = tf.where(tf.expand_dims(valid, 1), selected_boxes,
                         tf.zeros([max_output_size, 4]))
    out_classes = tf.where(valid, selected_classes, tf.fill([max_output_size], PAD_CLASS))
    out_scores = tf.where(valid, out_scores, tf.zeros([max_output_size]))
    return out_boxes, out_scores, out_classes, count


def _per_image_loop(fn, elems: Tuple[tf.Tensor, ...], max_output_size: int
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`fn` over the images of a dynamic batch: a while loop growing its outputs by concat.

    Used instead of `tf.map_fn` because map_fn's TensorList ops do not convert to ONNX; this
    plain loop converts to TFLite (WHILE) and ONNX (Loop) alike.
    """
    batch = tf.shape(elems[0])[0]
    m = max_output_size

    def body(i, acc_boxes, acc_scores, acc_classes, acc_counts):
        b, s, c, n = fn(tuple(tf.gather(e, i) for e in elems))
        return (i + 1, tf.concat([acc_boxes, tf.expand_dims(b, 0)], 0),
                tf.concat([acc_scores, tf.expand_dims(s, 0)], 0),
                tf.concat([acc_classes, tf.expand_dims(c, 0)], 0),
                tf.concat([acc_counts, tf.reshape(n, [1])], 0))

    start = (tf.constant(0), tf.zeros([0, m, 4]), tf.zeros([0, m]), tf.zeros([0, m], tf.int32),
             tf.zeros([0], tf.int32))
    invariants = (tf.TensorShape([]), tf.TensorShape([None, m, 4]), tf.TensorShape([None, m]),
                  tf.TensorShape([None, m]), tf.TensorShape([None]))
    _, out_boxes, out_scores, out_classes, counts = tf.while_loop(
        lambda i, *_: i < batch, body, start, shape_invariants=invariants)
    return out_boxes, out_scores, out_classes, counts


def generate_detections(cls_outputs: Dict[int, tf.Tensor], box_outputs: Dict[int, tf.Tensor],
                        config: Config, image_scales: Optional[tf.Tensor] = None,
                        score_thresh: Union[Number, tf.Tensor, None] = None,
                        max_output_size: Optional[int] = None,
                        original_sizes: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """Final detections of a batch from the raw head outputs (see the module docstring).

    Args:
      cls_outputs: {level: [B, H_l, W_l, A * C]} class logits; B may be None.
      box_outputs: {level: [B, H_l, W_l, A * 4]} box codes.
      config: hparams; uses image_size, anchors, num_classes and nms_configs.
      image_scales: [B] float, original pixels per input pixel (1 / resize scale); None: 1.
      score_thresh: keep scores > this (a negative value acts as 0); float or scalar tensor.
        None: nms_configs.score_thresh. COCO eval passes 0.0.
      max_output_size: detections per image, K. None: nms_configs.max_output_size.
      original_sizes: optional [B, 2] (height, width) of the original images in pixels; when
        given, boxes are clipped to the original image instead of the network input.

    Returns:
      dict of
        boxes: [B, K, 4] float32 yxyx in original-image pixels;
        scores: [B, K] float32, sigmoid (soft-NMS: decayed) scores, best first;
        classes: [B, K] int32 class ids 1..num_classes;
        num_detections: [B] int32, the valid rows of each image.
      Rows past num_detections are padding: box 0, score 0, class 0 (PAD_CLASS).
    """
    nms = config.nms_configs
    if score_thresh is None:
        score_thresh = float(nms.score_thresh)
    max_output_size = int(max_output_size or nms.max_output_size)
    if max_output_size < 1:
        raise ValueError(f"max_output_size must be >= 1, got {max_output_size}")
    log_nms_choice(config, score_thresh, max_output_size)
    boxes, scores, classes = _candidates(cls_outputs, box_outputs, config)
    # Scores are sigmoids: a negative threshold means 0 (and keeps padding rows recognisable).
    score_thresh = tf.maximum(tf.cast(score_thresh, tf.float32), 0.0)
    out_boxes, out_scores, out_classes, counts = _nms_batch(
        boxes, scores, classes, config, score_thresh, max_output_size)
    return {"boxes": _to_image_pixels(out_boxes, config, image_scales, original_sizes),
            "scores": out_scores, "classes": out_classes, "num_detections": counts}


def _candidates(cls_outputs: Dict[int, tf.Tensor], box_outputs: Dict[int, tf.Tensor],
                config: Config) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The NMS inputs of a batch: the top nms_configs.max_nms_inputs (anchor, class) pairs of
    each image by logit, as boxes [B, K', 4] yxyx input pixels (decoded from their anchors),
    scores [B, K'] sigmoid and classes [B, K'] int32 1..num_classes."""
    nms = config.nms_configs
    anchor_boxes = tf.constant(anchors_lib.Anchors.from_config(config).boxes)  # [N, 4]
    logits, codes = flatten_outputs(cls_outputs, box_outputs, config.num_classes)
    top_k = nms.max_nms_inputs if nms.max_nms_inputs and nms.max_nms_inputs > 0 else 1 << 30
    values, anchor_idx, class_idx = top_candidates(logits, top_k)
    scores = tf.sigmoid(values)  # [B, K']
    kept_codes = tf.gather(codes, anchor_idx, batch_dims=1)  # [B, K', 4]
    boxes = anchors_lib.decode_boxes(kept_codes, tf.gather(anchor_boxes, anchor_idx))
    return boxes, scores, class_idx + 1


def _nms_batch(boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor, config: Config,
               score_thresh: tf.Tensor, max_output_size: int
               ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`_nms_one_image` on every image: unrolled (padded NMS, static shapes) when the batch
    size is known, else in `_per_image_loop`. Returns boxes [B, M, 4], scores [B, M],
    classes [B, M], counts [B] with M = max_output_size."""

    def one(args, padded):
        return _nms_one_image(args[0], args[1], args[2], config, score_thresh, max_output_size,
                              padded)

    batch = boxes.shape[0]
    if batch is not None:
        per_image = [one((boxes[i], scores[i], classes[i]), True) for i in range(batch)]
        return tuple(tf.stack(t) for t in zip(*per_image))
    return _per_image_loop(lambda args: one(args, False), (boxes, scores, classes),
                           max_output_size)


def _to_image_pixels(boxes: tf.Tensor, config: Config, image_scales: Optional[tf.Tensor],
                     original_sizes: Optional[tf.Tensor]) -> tf.Tensor:
    """Boxes [B, M, 4] yxyx input pixels clipped to the network input, scaled by
    `image_scales` to original-image pixels and, when `original_sizes` is known, clipped to
    the original image."""
    height, width = utils.parse_image_size(config.image_size)
    scales = (tf.ones([tf.shape(boxes)[0]], tf.float32) if image_scales is None
              else tf.reshape(tf.cast(image_scales, tf.float32), [-1]))
    limit = tf.constant([height, width], tf.float32)
    boxes = tf.clip_by_value(boxes, 0.0, tf.tile(limit, [2]))
    boxes = boxes * tf.reshape(scales, [-1, 1, 1])
    if original_sizes is not None:
        sizes = tf.cast(original_sizes, tf.float32)  # [B, 2]
        boxes = tf.minimum(boxes, tf.expand_dims(tf.tile(sizes, [1, 2]), 1))
    return boxes

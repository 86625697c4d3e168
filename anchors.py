"""Anchors, the Faster R-CNN box coder, the arg-max matcher and the anchor labeler.

Boxes are [ymin, xmin, ymax, xmax] in absolute pixels of the network input unless stated.
Anchor order: level (min_level first), then position (row-major), then anchor index
a = scale_index * len(aspect_ratios) + aspect_index, as in the released checkpoints. Box targets are
(ty, tx, th, tw) = ((yc - yca) / ha, (xc - xca) / wa, log(h / ha), log(w / wa)) with no scale
factors.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

import utils
from hparams_config import Config

BOX_EPSILON = 1e-8  # added to heights/widths before division and log, as the reference coder
MATCH_THRESHOLD = 0.5


def generate_anchor_boxes(image_size: Union[int, str, Sequence[int]], min_level: int,
                          max_level: int, num_scales: int,
                          aspect_ratios: Sequence[Sequence[float]],
                          anchor_scale: float) -> Tuple[np.ndarray, List[int]]:
    """All anchors as a float32 array [N, 4] (yxyx pixels) and the count per level."""
    height, width = utils.parse_image_size(image_size)
    feat_sizes = utils.get_feat_sizes((height, width), max_level)
    per_level, counts = [], []
    for level in range(min_level, max_level + 1):
        fh, fw = feat_sizes[level]["height"], feat_sizes[level]["width"]
        stride_y, stride_x = height / fh, width / fw
        ys = np.arange(stride_y / 2, height, stride_y)[:fh]
        xs = np.arange(stride_x / 2, width, stride_x)[:fw]
        xv, yv = np.meshgrid(xs, ys)  # [fh, fw], y-major
        yv, xv = yv.reshape(-1), xv.reshape(-1)
        boxes = []
        for scale in range(num_scales):
            octave = 2 ** (scale / float(num_scales))
            for ax, ay in aspect_ratios:
                half_x = anchor_scale * stride_x * octave * ax / 2.0
                half_y = anchor_scale * stride_y * octave * ay / 2.0
                boxes.append(np.stack([yv - half_y, xv - half_x, yv + half_y, xv + half_x], -1))
        level_boxes = np.stack(boxes, axis=1).reshape(-1, 4)  # [fh*fw*A, 4]
        per_level.append(level_boxes)
        counts.append(level_boxes.shape[0])
    return np.concatenate(per_level).astype(np.float32), counts


class Anchors:
    """The anchor set of one input size and anchor configuration."""

    def __init__(self, min_level: int, max_level: int, num_scales: int,
                 aspect_ratios: Sequence[Sequence[float]], anchor_scale: float,
                 image_size: Union[int, str, Sequence[int]]):
        self.min_level, self.max_level = min_level, max_level
        self.num_scales = num_scales
        self.aspect_ratios = [tuple(a) for a in aspect_ratios]
        self.anchor_scale = anchor_scale
        self.image_size = utils.parse_image_size(image_size)
        self.boxes, self.counts = generate_anchor_boxes(
            self.image_size, min_level, max_level, num_scales, self.aspect_ratios, anchor_scale)
        self.feat_sizes = utils.get_feat_sizes(self.image_size, max_level)

    @classmethod
    def from_config(cls, config: Config) -> Anchors:
        return cls(config.min_level, config.max_level, config.num_scales, config.aspect_ratios,
                   config.anchor_scale, config.image_size)

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    @property
    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


# -------------------------------------------------------------------------------------------------
# Box coder
# -------------------------------------------------------------------------------------------------
def _center_size(boxes):
    ymin, xmin, ymax, xmax = (boxes[..., i] for i in range(4))
    h, w = ymax - ymin, xmax - xmin
    return ymin + h / 2, xmin + w / 2, h, w


def encode_boxes_np(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(ty, tx, th, tw) of `boxes` [..., 4] relative to `anchors` [..., 4] (yxyx)."""
    yc, xc, h, w = _center_size(boxes)
    yca, xca, ha, wa = _center_size(anchors)
    ha, wa, h, w = ha + BOX_EPSILON, wa + BOX_EPSILON, h + BOX_EPSILON, w + BOX_EPSILON
    return np.stack([(yc - yca) / ha, (xc - xca) / wa, np.log(h / ha), np.log(w / wa)], -1)


def decode_boxes_np(codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of `encode_boxes_np`: yxyx boxes from (ty, tx, th, tw) codes."""
    yca, xca, ha, wa = _center_size(anchors)
    ty, tx, th, tw = (codes[..., i] for i in range(4))
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    yc, xc = ty * ha + yca, tx * wa + xca
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)


def encode_boxes(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """TF version of `encode_boxes_np`."""
    yc, xc, h, w = _center_size(boxes)
    yca, xca, ha, wa = _center_size(anchors)
    ha, wa, h, w = ha + BOX_EPSILON, wa + BOX_EPSILON, h + BOX_EPSILON, w + BOX_EPSILON
    return tf.stack([(yc - yca) / ha, (xc - xca) / wa, tf.math.log(h / ha),
                     tf.math.log(w / wa)], -1)


def decode_boxes(codes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """TF version of `decode_boxes_np`; `codes` [..., 4] broadcast against `anchors` [..., 4]."""
    yca, xca, ha, wa = _center_size(anchors)
    ty, tx, th, tw = tf.unstack(codes, 4, axis=-1)
    h, w = tf.exp(th) * ha, tf.exp(tw) * wa
    yc, xc = ty * ha + yca, tx * wa + xca
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)


# -------------------------------------------------------------------------------------------------
# Matching and labeling
# -------------------------------------------------------------------------------------------------
def pairwise_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """IoU [N, M] of yxyx boxes [N, 4] and [M, 4]; 0 where the union is empty."""
    y1a, x1a, y2a, x2a = tf.split(boxes1, 4, axis=1)  # [N, 1]
    y1b, x1b, y2b, x2b = tf.unstack(boxes2, 4, axis=1)  # [M]
    ih = tf.maximum(tf.minimum(y2a, y2b) - tf.maximum(y1a, y1b), 0.0)
    iw = tf.maximum(tf.minimum(x2a, x2b) - tf.maximum(x1a, x1b), 0.0)
    inter = ih * iw
    union = (y2a - y1a) * (x2a - x1a) + (y2b - y1b) * (x2b - x1b) - inter
    return tf.where(union > 0, inter / tf.maximum(union, 1e-12), tf.zeros_like(inter))


def argmax_match(similarity: tf.Tensor, valid_rows: tf.Tensor,
                 threshold: float = MATCH_THRESHOLD) -> tf.Tensor:
    """For each column (anchor) the matched row (ground truth), or -1.

    A column matches its best row when that similarity >= `threshold` (no ignore band). Each
    valid row is also force-matched to its best column, so every ground truth gets an anchor.

    Args:
      similarity: [N, M] float; N >= 1.
      valid_rows: [N] bool; invalid rows never match.
    """
    similarity = tf.where(valid_rows[:, None], similarity, -tf.ones_like(similarity))
    best_row = tf.argmax(similarity, axis=0, output_type=tf.int32)  # [M]
    best_val = tf.reduce_max(similarity, axis=0)
    matches = tf.where(best_val >= threshold, best_row, -tf.ones_like(best_row))
    num_cols = tf.shape(similarity)[1]
    best_col = tf.argmax(similarity, axis=1, output_type=tf.int32)  # [N]
    force = tf.one_hot(best_col, num_cols, dtype=tf.int32) * tf.cast(valid_rows, tf.int32)[:, None]
    forced_row = tf.argmax(force, axis=0, output_type=tf.int32)
    return tf.where(tf.reduce_max(force, axis=0) > 0, forced_row, matches)


class AnchorLabeler:
    """Class and box targets of every anchor for one image's ground truth."""

    def __init__(self, anchors: Anchors, num_classes: int,
                 match_threshold: float = MATCH_THRESHOLD):
        self.anchors = anchors
        self.num_classes = num_classes
        self.match_threshold = match_threshold

    def label_anchors(self, gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                      valid: Optional[tf.Tensor] = None
                      ) -> Tuple[Dict[int, tf.Tensor], Dict[int, tf.Tensor], tf.Tensor]:
        """Targets for one image.

        Args:
          gt_boxes: [N, 4] float yxyx in input pixels (N may be 0).
          gt_labels: [N] int class ids 1..num_classes.
          valid: optional [N] bool; False rows (padding) are ignored.

        Returns:
          cls_targets: {level: [H_l, W_l, A] int32}, class index label-1, or -1 for background.
          box_targets: {level: [H_l, W_l, 4A] float32}, (ty, tx, th, tw) per anchor; 0 for
            background.
          num_positives: scalar float32, the number of matched anchors.
        """
        gt_boxes = tf.cast(tf.reshape(gt_boxes, [-1, 4]), tf.float32)
        gt_labels = tf.cast(tf.reshape(gt_labels, [-1]), tf.int32)
        if valid is None:
            valid = tf.ones_like(gt_labels, dtype=tf.bool)
        # A padding row keeps N >= 1 so the matcher's reductions are defined for empty images.
        gt_boxes = tf.concat([gt_boxes, tf.zeros([1, 4])], 0)
        gt_labels = tf.concat([gt_labels, [0]], 0)
        valid = tf.concat([tf.cast(tf.reshape(valid, [-1]), tf.bool), [False]], 0)
        anchor_boxes = tf.constant(self.anchors.boxes)
        matches = argmax_match(pairwise_iou(gt_boxes, anchor_boxes), valid,
                               self.match_threshold)
        positive = matches >= 0
        idx = tf.maximum(matches, 0)
        cls = tf.where(positive, tf.gather(gt_labels, idx) - 1, -tf.ones_like(matches))
        box = encode_boxes(tf.gather(gt_boxes, idx), anchor_boxes)
        box = tf.where(positive[:, None], box, tf.zeros_like(box))
        num_positives = tf.reduce_sum(tf.cast(positive, tf.float32))
        return (self._unpack(cls, 1), self._unpack(box, 4), num_positives)

    def _unpack(self, flat: tf.Tensor, depth: int) -> Dict[int, tf.Tensor]:
        """Split [N, depth] (or [N]) into {level: [H_l, W_l, A * depth]}."""
        a = self.anchors.num_anchors_per_location
        out, start = {}, 0
        for level, count in zip(self.anchors.levels, self.anchors.counts):
            size = self.anchors.feat_sizes[level]
            chunk = flat[start:start + count]
            out[level] = tf.reshape(chunk, [size["height"], size["width"], a * depth])
            start += count
        return out

"""anchors: generation, box coder, matcher and labeler."""

import numpy as np
import pytest
import tensorflow as tf

import anchors
import hparams_config
from conftest import tiny_config

tf1 = tf.compat.v1


@pytest.mark.parametrize("model,count", [("efficientdet-d0", 49104), ("efficientdet-d1", 76725),
                                         ("efficientdet-d7", 441936)])
def test_anchor_counts(model, count):
    a = anchors.Anchors.from_config(hparams_config.get_detection_config(model))
    assert len(a) == count
    assert a.boxes.dtype == np.float32


def test_anchor_layout():
    a = anchors.Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, 512)
    # level 3, stride 8: first center (4, 4), base 32
    np.testing.assert_allclose(a.boxes[0], [-12, -12, 20, 20])
    # anchor 1 is aspect (1.4, 0.7): x half 22.4, y half 11.2
    np.testing.assert_allclose(a.boxes[1], [4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4], rtol=1e-6)
    # anchor 3 is scale 2^(1/3), aspect 1
    half = 16 * 2 ** (1 / 3)
    np.testing.assert_allclose(a.boxes[3], [4 - half, 4 - half, 4 + half, 4 + half], rtol=1e-6)
    # the next position moves along x (row-major)
    np.testing.assert_allclose(a.boxes[9], [-12, -4, 20, 28])
    assert a.counts == [64 * 64 * 9, 32 * 32 * 9, 16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9]


def test_non_square_strides():
    a = anchors.Anchors(3, 7, 1, [(1.0, 1.0)], 1.0, "256x128")  # W x H
    assert a.counts[0] == 16 * 32
    np.testing.assert_allclose(a.boxes[1], [0, 8, 8, 16])


def test_box_coder_round_trip_numpy_and_tf():
    rng = np.random.RandomState(0)
    anc = np.array([[0, 0, 10, 20], [5, 5, 25, 15], [100, 50, 164, 114]], np.float32)
    boxes = anc + rng.uniform(-3, 3, anc.shape).astype(np.float32)
    codes = anchors.encode_boxes_np(boxes, anc)
    np.testing.assert_allclose(anchors.decode_boxes_np(codes, anc), boxes, atol=1e-4)
    # known value: same center, double size -> (0, 0, log 2, log 2)
    np.testing.assert_allclose(anchors.encode_boxes_np(np.array([[-5, -10, 15, 30.]]),
                                                       anc[:1]),
                               [[0, 0, np.log(2), np.log(2)]], atol=1e-6)
    with tf.Graph().as_default(), tf1.Session() as s:
        enc = s.run(anchors.encode_boxes(tf.constant(boxes), tf.constant(anc)))
        dec = s.run(anchors.decode_boxes(tf.constant(codes), tf.constant(anc)))
    np.testing.assert_allclose(enc, codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dec, boxes, atol=1e-4)


def _np_iou(a, b):
    ih = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) -
                    np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    iw = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) -
                    np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = ih * iw
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _label(config, boxes, labels, valid=None):
    a = anchors.Anchors.from_config(config)
    labeler = anchors.AnchorLabeler(a, config.num_classes)
    with tf.Graph().as_default(), tf1.Session() as s:
        out = s.run(labeler.label_anchors(tf.constant(boxes, tf.float32),
                                          tf.constant(labels, tf.int32),
                                          None if valid is None else tf.constant(valid)))
    return a, out


def _flat(per_level, depth):
    return np.concatenate([per_level[lv].reshape(-1, depth) for lv in sorted(per_level)])


def test_labeler_hand_made_case():
    config = tiny_config()  # 128x128, 9 anchors per location, 3 classes
    a = anchors.Anchors.from_config(config)
    exact = a.boxes[2400].copy()  # a level-4 anchor, used verbatim as a ground truth
    tiny = np.array([60, 60, 62, 62], np.float32)  # IoU < 0.5 with every anchor
    boxes = np.stack([exact, tiny])
    _, (cls, box, npos) = _label(config, boxes, [2, 3])
    cls_flat, box_flat = _flat(cls, 1)[:, 0], _flat(box, 4)
    iou = _np_iou(boxes, a.boxes)
    assert iou[1].max() < 0.5
    expected_pos = set(np.where(iou[0] >= 0.5)[0]) | {int(np.argmax(iou[1]))}
    assert set(np.where(cls_flat >= 0)[0]) == expected_pos
    assert npos == len(expected_pos)
    assert cls_flat[2400] == 1  # label 2 -> class index 1
    np.testing.assert_allclose(box_flat[2400], 0, atol=1e-5)  # exact match encodes to zeros
    assert cls_flat[int(np.argmax(iou[1]))] == 2  # the forced match of the tiny box
    # every positive's target decodes back to its ground truth
    for i in expected_pos:
        gt = boxes[0] if iou[0, i] >= 0.5 and i != int(np.argmax(iou[1])) else boxes[1]
        np.testing.assert_allclose(anchors.decode_boxes_np(box_flat[i], a.boxes[i]), gt,
                                   atol=1e-3)
    negatives = cls_flat < 0
    assert (cls_flat[negatives] == -1).all() and (box_flat[negatives] == 0).all()
    assert cls[3].shape == (16, 16, 9) and box[3].shape == (16, 16, 36)


def test_labeler_empty_and_padded_ground_truth():
    config = tiny_config()
    _, (cls, box, npos) = _label(config, np.zeros([0, 4]), np.zeros([0]))
    assert npos == 0 and all((c == -1).all() for c in cls.values())
    a = anchors.Anchors.from_config(config)
    boxes = np.stack([a.boxes[100], a.boxes[200]])
    _, (cls, _, npos) = _label(config, boxes, [1, 1], valid=[True, False])
    flat = _flat(cls, 1)[:, 0]
    assert flat[100] == 0 and flat[200] == -1

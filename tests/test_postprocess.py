"""postprocess: top-k, decoding, per-class / class-agnostic hard and soft NMS, padding, scaling,
static and dynamic batches, against a NumPy re-implementation of the same rules."""

import numpy as np
import pytest
import tensorflow as tf

import anchors
import postprocess
from conftest import tiny_config

tf1 = tf.compat.v1


def _levels(config):
    a = anchors.Anchors.from_config(config)
    return a, [(lv, a.feat_sizes[lv]["height"], a.feat_sizes[lv]["width"]) for lv in a.levels]


def _split(flat, config, depth):
    """[B, N, depth] in anchor order -> {level: [B, H, W, A * depth]}."""
    a, levels = _levels(config)
    out, start = {}, 0
    for (level, h, w), count in zip(levels, a.counts):
        chunk = flat[:, start:start + count]
        out[level] = chunk.reshape(flat.shape[0], h, w, a.num_anchors_per_location * depth)
        start += count
    return out


def _run(logits, codes, config, batch=None, **kwargs):
    """generate_detections on NumPy inputs [B, N, C] / [B, N, 4]; batch None: dynamic graph."""
    graph = tf.Graph()
    with graph.as_default():
        b = logits.shape[0] if batch is not None else None
        cls_ph = {lv: tf1.placeholder(tf.float32, [b] + list(v.shape[1:]))
                  for lv, v in _split(logits, config, config.num_classes).items()}
        box_ph = {lv: tf1.placeholder(tf.float32, [b] + list(v.shape[1:]))
                  for lv, v in _split(codes, config, 4).items()}
        scales = kwargs.pop("image_scales", None)
        sizes = kwargs.pop("original_sizes", None)
        det = postprocess.generate_detections(
            cls_ph, box_ph, config,
            None if scales is None else tf.constant(scales, tf.float32),
            original_sizes=None if sizes is None else tf.constant(sizes, tf.float32), **kwargs)
        feed = {}
        for lv, v in _split(logits, config, config.num_classes).items():
            feed[cls_ph[lv]] = v
        for lv, v in _split(codes, config, 4).items():
            feed[box_ph[lv]] = v
        with tf1.Session() as sess:
            return sess.run(det, feed)


def _iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _numpy_reference(logits, codes, config, score_thresh, max_out, top_k):
    """The documented rules, written plainly, for one image [N, C] / [N, 4]."""
    a = anchors.Anchors.from_config(config)
    nms = config.nms_configs
    num_classes = logits.shape[1]
    flat = logits.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:top_k]
    anchor_idx, class_idx = order // num_classes, order % num_classes
    scores = 1 / (1 + np.exp(-flat[order].astype(np.float64)))
    boxes = anchors.decode_boxes_np(codes[anchor_idx], a.boxes[anchor_idx])
    scores = scores.copy()
    alive = list(range(len(order)))
    keep = []
    while alive and len(keep) < max_out:
        best = max(alive, key=lambda i: scores[i])
        alive.remove(best)
        if scores[best] <= score_thresh:
            break
        keep.append((best, scores[best]))
        for i in list(alive):
            same = nms.class_agnostic or class_idx[i] == class_idx[best]
            if not same:
                continue
            iou = _iou(boxes[i], boxes[best])
            if nms.method == "gaussian":
                scores[i] *= np.exp(-0.5 * iou * iou / nms.sigma)
            elif iou > nms.iou_thresh:
                alive.remove(i)
    return ([boxes[i] for i, _ in keep], [s for _, s in keep],
            [class_idx[i] + 1 for i, _ in keep])


def _random_outputs(config, batch, seed=0):
    a = anchors.Anchors.from_config(config)
    rng = np.random.RandomState(seed)
    logits = rng.normal(-3.0, 2.0, (batch, len(a), config.num_classes)).astype(np.float32)
    codes = rng.normal(0.0, 0.3, (batch, len(a), 4)).astype(np.float32)
    return logits, codes


@pytest.mark.parametrize("split", [False, True])
def test_top_candidates_equal_one_big_top_k(split):
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(2, 700, 6)).astype(np.float32)
    with tf.Graph().as_default(), tf1.Session() as sess:
        inputs = ([tf.constant(logits[:, a:b]) for a, b in ((0, 400), (400, 650), (650, 700))]
                  if split else tf.constant(logits))
        values, anchor_idx, class_idx = sess.run(postprocess.top_candidates(inputs, 300))
    for b in range(2):
        flat = logits[b].reshape(-1)
        order = np.argsort(-flat)[:300]
        np.testing.assert_array_equal(anchor_idx[b], order // 6)
        np.testing.assert_array_equal(class_idx[b], order % 6)
        np.testing.assert_array_equal(values[b], flat[order])


@pytest.mark.parametrize("method,agnostic", [("hard", False), ("hard", True),
                                             ("gaussian", False)])
def test_matches_numpy_reference(method, agnostic):
    config = tiny_config()
    config.nms_configs.method = method
    config.nms_configs.class_agnostic = agnostic
    config.nms_configs.max_nms_inputs = 400
    logits, codes = _random_outputs(config, 2)
    out = _run(logits, codes, config, batch=2, score_thresh=0.3, max_output_size=30)
    for b in range(2):
        boxes, scores, classes = _numpy_reference(logits[b], codes[b], config, 0.3, 30, 400)
        n = int(out["num_detections"][b])
        assert n == len(scores) > 5
        np.testing.assert_allclose(out["scores"][b, :n], scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out["classes"][b, :n], classes)
        clipped = np.clip(np.array(boxes), 0, 128)
        np.testing.assert_allclose(out["boxes"][b, :n], clipped, atol=1e-3)
        # padding rows: box 0, score 0, class 0
        assert (out["scores"][b, n:] == 0).all() and (out["classes"][b, n:] == 0).all()
        assert (out["boxes"][b, n:] == 0).all()
    assert out["classes"].dtype == np.int32 and out["num_detections"].dtype == np.int32


def _two_box_outputs(config, classes, scores):
    """Logits so that anchors 0 and 1 (the same position, overlapping) hold the given classes
    and scores, everything else -20; zero box codes (boxes = anchors)."""
    a = anchors.Anchors.from_config(config)
    logits = np.full((1, len(a), config.num_classes), -20.0, np.float32)
    for i, (c, s) in enumerate(zip(classes, scores)):
        logits[0, i, c - 1] = np.log(s / (1 - s))
    return logits, np.zeros((1, len(a), 4), np.float32)


def test_per_class_keeps_overlaps_of_other_classes_agnostic_does_not():
    config = tiny_config()
    a = anchors.Anchors.from_config(config)
    assert _iou(a.boxes[0], a.boxes[3]) > 0.5  # same aspect, next octave: heavy overlap
    logits = np.full((1, len(a), 3), -20.0, np.float32)
    logits[0, 0, 0], logits[0, 3, 1] = 2.0, 1.0  # class 1 and class 2, overlapping
    codes = np.zeros((1, len(a), 4), np.float32)
    out = _run(logits, codes, config, batch=1, score_thresh=0.5)
    assert out["num_detections"][0] == 2
    assert list(out["classes"][0, :2]) == [1, 2]
    config.nms_configs.class_agnostic = True
    out = _run(logits, codes, config, batch=1, score_thresh=0.5)
    assert out["num_detections"][0] == 1 and out["classes"][0, 0] == 1
    # same class: suppressed by hard NMS, only decayed by gaussian soft-NMS
    config.nms_configs.class_agnostic = False
    logits[0, 3, 1], logits[0, 3, 0] = -20.0, 1.0
    assert _run(logits, codes, config, batch=1, score_thresh=0.1)["num_detections"][0] == 1
    config.nms_configs.method = "gaussian"
    out = _run(logits, codes, config, batch=1, score_thresh=0.1)
    assert out["num_detections"][0] == 2
    iou = _iou(a.boxes[0], a.boxes[3])
    expected = 1 / (1 + np.exp(-1.0)) * np.exp(-0.5 * iou * iou / config.nms_configs.sigma)
    np.testing.assert_allclose(out["scores"][0, 1], expected, rtol=1e-4)


def test_threshold_max_output_scaling_and_clipping():
    config = tiny_config()
    logits, codes = _random_outputs(config, 2, seed=3)
    base = _run(logits, codes, config, batch=2, score_thresh=0.2, max_output_size=50)
    # a higher threshold keeps exactly the rows above it
    high = _run(logits, codes, config, batch=2, score_thresh=0.6, max_output_size=50)
    for b in range(2):
        keep = base["scores"][b, :base["num_detections"][b]] > 0.6
        assert high["num_detections"][b] == keep.sum()
    # a smaller max keeps the best rows
    few = _run(logits, codes, config, batch=2, score_thresh=0.2, max_output_size=7)
    assert few["boxes"].shape == (2, 7, 4) and (few["num_detections"] == 7).all()
    np.testing.assert_allclose(few["scores"], base["scores"][:, :7])
    # boxes are clipped to the input (128 x 128), then scaled to original pixels
    assert base["boxes"].min() >= 0 and base["boxes"].max() <= 128
    scaled = _run(logits, codes, config, batch=2, score_thresh=0.2, max_output_size=50,
                  image_scales=[2.0, 0.5])
    np.testing.assert_allclose(scaled["boxes"][0], base["boxes"][0] * 2.0, rtol=1e-6)
    np.testing.assert_allclose(scaled["boxes"][1], base["boxes"][1] * 0.5, rtol=1e-6)
    # with original sizes, boxes stay inside the original image
    sized = _run(logits, codes, config, batch=2, score_thresh=0.2, max_output_size=50,
                 image_scales=[2.0, 2.0], original_sizes=[[100, 256], [256, 60]])
    assert sized["boxes"][0, :, [0, 2]].max() <= 100 and sized["boxes"][1, :, [1, 3]].max() <= 60


def test_dynamic_batch_gives_every_image_its_own_detections():
    config = tiny_config()
    logits, codes = _random_outputs(config, 3, seed=5)
    dynamic = _run(logits, codes, config, batch=None, score_thresh=0.3)
    for b in range(3):
        single = _run(logits[b:b + 1], codes[b:b + 1], config, batch=1, score_thresh=0.3)
        n = int(single["num_detections"][0])
        assert n > 0 and dynamic["num_detections"][b] == n
        for key in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(dynamic[key][b], single[key][0])
    # the three images really differ
    assert not np.array_equal(dynamic["boxes"][0], dynamic["boxes"][1])


def test_no_detection_above_threshold_gives_empty_padded_rows():
    config = tiny_config()
    logits, codes = _two_box_outputs(config, [1], [0.3])
    out = _run(logits, codes, config, batch=1)  # nms_configs.score_thresh 0.4
    assert out["num_detections"][0] == 0 and out["boxes"].shape == (1, 100, 4)
    assert not out["scores"].any() and not out["classes"].any()


def test_nms_choice_is_logged_once(monkeypatch):
    config = tiny_config()
    config.nms_configs.method = "gaussian"
    config.nms_configs.max_output_size = 17
    line = postprocess.nms_description(config)
    assert "per-class gaussian soft-NMS (sigma 0.5)" in line and "at most 17" in line
    monkeypatch.setattr(postprocess, "_logged_choices", set())
    logs = []
    monkeypatch.setattr(postprocess.logging, "info", logs.append)
    for _ in range(3):
        postprocess.log_nms_choice(config)
    assert logs == [line]

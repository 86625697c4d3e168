"""Tests for dataloader.py: round trips through the real converters, augmentation geometry,
labeler targets, fake data, error messages and graph mode.

Data comes from dataset/sample_dataset.py (exact boxes of filled shapes) converted with
dataset/create_coco_tfrecord.py and dataset/create_pascal_tfrecord.py, plus a few hand-written
records for the error cases.
"""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import anchors
import coco_metric
import dataloader
from conftest import tiny_config
from dataset import create_coco_tfrecord, create_pascal_tfrecord, sample_dataset, tfrecord_util

NUM_COCO = 6
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """6 sample images (64..160 px, not square) as COCO json + 2 TFRecord shards."""
    root = str(tmp_path_factory.mktemp("coco"))
    sample = sample_dataset.write_coco(root, NUM_COCO, seed=5)
    prefix = os.path.join(root, "tfrecord", "val")
    summary = create_coco_tfrecord.create_coco_tfrecord(create_coco_tfrecord.ConvertOptions(
        image_dir=sample.image_dir, output_file_prefix=prefix,
        object_annotations_file=sample.instances_file, num_shards=2, num_threads=1,
        num_classes=3), progress=False)
    assert summary.images_written == NUM_COCO
    with open(sample.instances_file) as f:
        gt = json.load(f)
    return sample, prefix + "-*.tfrecord", gt


def _json_boxes(gt):
    """{image id: (yxyx boxes [N, 4] original pixels, class ids [N], areas [N])} from a json."""
    out = {im["id"]: ([], [], []) for im in gt["images"]}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out[a["image_id"]][0].append([y, x, y + h, x + w])
        out[a["image_id"]][1].append(a["category_id"])
        out[a["image_id"]][2].append(a["area"])
    return {k: (np.array(b, np.float32).reshape(-1, 4), np.array(c), np.array(ar, np.float32))
            for k, (b, c, ar) in out.items()}


def _batches(reader, batch_size, num_batches=None):
    ds = reader(batch_size=batch_size)
    if num_batches is not None:
        ds = ds.take(num_batches)
    return [(im.numpy(), {k: v.numpy() for k, v in lab.items()}) for im, lab in ds]


def _per_image(batches):
    """Split batches into per-image (image, labels) pairs."""
    out = []
    for images, labels in batches:
        for i in range(images.shape[0]):
            out.append((images[i], {k: v[i] for k, v in labels.items()}))
    return out


def _positives(labels, config):
    """(decoded boxes [P, 4] network pixels, class index [P]) of the positive anchors."""
    anc = anchors.Anchors.from_config(config)
    cls = np.concatenate([labels[f"cls_targets_{lv}"].reshape(-1) for lv in anc.levels])
    box = np.concatenate([labels[f"box_targets_{lv}"].reshape(-1, 4) for lv in anc.levels])
    assert cls.shape[0] == len(anc) and box.shape[0] == len(anc)
    pos = cls >= 0
    return anchors.decode_boxes_np(box[pos], anc.boxes[pos]), cls[pos]


def _check_targets_recover(labels, config, boxes, classes, scale_back, tol):
    """Every positive decodes (times scale_back) to one of `boxes` with its class, and every box
    has at least one positive anchor."""
    decoded, cls = _positives(labels, config)
    decoded = decoded * scale_back
    assert len(boxes) == 0 or len(decoded) > 0
    hit = np.zeros(len(boxes), bool)
    for d, c in zip(decoded, cls):
        err = np.abs(boxes - d).max(axis=1) if len(boxes) else np.array([np.inf])
        j = int(np.argmin(err))
        assert err[j] <= tol, f"positive anchor decodes to {d}, nearest box {boxes[j]}"
        assert c == classes[j] - 1
        hit[j] = True
    assert hit.all(), f"boxes without a positive anchor: {boxes[~hit]}"


def _unnormalize(image):
    return (image * STD + MEAN) * 255.0


def _write_records(path, examples):
    with tf.io.TFRecordWriter(path) as w:
        for values in examples:
            w.write(tfrecord_util.make_example(values).SerializeToString())
    return path


def _jpeg(height=40, width=60, color=(120, 60, 30)):
    return tfrecord_util.encode_jpeg(Image.new("RGB", (width, height), color))


def _record(source_id="77", boxes=((0.1, 0.1, 0.5, 0.5),), labels=(1,), **extra):
    values = {"image/encoded": _jpeg(), "image/source_id": source_id, "image/height": 40,
              "image/width": 60}
    if boxes is not None:
        for i, k in enumerate(("ymin", "xmin", "ymax", "xmax")):
            values[f"image/object/bbox/{k}"] = [b[i] for b in boxes]
    if labels is not None:
        values["image/object/class/label"] = list(labels)
    values.update(extra)
    return values


# -------------------------------------------------------------------------------------------------
# Round trips through the real converters
# -------------------------------------------------------------------------------------------------
def test_eval_round_trip_coco(coco):
    sample, pattern, gt = coco
    config = tiny_config()
    images_info = {im["id"]: im for im in gt["images"]}
    expected = _json_boxes(gt)
    items = _per_image(_batches(dataloader.InputReader(pattern, False, config), 2))
    assert sorted(int(lab["source_ids"]) for _, lab in items) == sorted(images_info)
    for image, lab in items:
        image_id = int(lab["source_ids"])
        boxes, classes, areas = expected[image_id]
        info = images_info[image_id]
        scale = min(128 / info["height"], 128 / info["width"])
        assert lab["image_scales"] == pytest.approx(1 / scale, rel=1e-5)
        # groundtruth_data: original pixels, padded with -1.
        rows = lab["groundtruth_data"]
        assert rows.shape == (config.max_instances_per_image, 7)
        n = len(boxes)
        np.testing.assert_allclose(rows[:n, :4], boxes, atol=1.0)
        np.testing.assert_array_equal(rows[:n, 4], 0)
        np.testing.assert_allclose(rows[:n, 5], areas, rtol=1e-5)
        np.testing.assert_array_equal(rows[:n, 6], classes)
        assert (rows[n:] == -1).all()
        # Box targets decode back to the json boxes in original pixels.
        _check_targets_recover(lab, config, boxes, classes, lab["image_scales"], tol=1.0)
        # Pixels: the resized picture of the original, normalized; zeros in the padding.
        h, w = (int(np.ceil(info[k] * scale - 1e-3)) for k in ("height", "width"))
        assert (image[h:] == 0).all() and (image[:, w:] == 0).all()
        original = np.asarray(Image.open(os.path.join(sample.image_dir, info["file_name"])),
                              np.float32)
        ys = np.clip(np.round((np.arange(h) + 0.5) / scale - 0.5), 0, info["height"] - 1)
        xs = np.clip(np.round((np.arange(w) + 0.5) / scale - 0.5), 0, info["width"] - 1)
        nearest = original[ys.astype(int)][:, xs.astype(int)]
        assert np.median(np.abs(_unnormalize(image[:h, :w]) - nearest)) < 4.0


def test_eval_covers_every_image_and_fills_the_last_batch(coco):
    _, pattern, gt = coco
    config = tiny_config()
    all_ids = sorted(im["id"] for im in gt["images"])
    assert NUM_COCO % 4 != 0
    items = _per_image(_batches(dataloader.InputReader(pattern, False, config), 4))
    assert len(items) == 4 * -(-NUM_COCO // 4)  # static batches, no batch of blanks only
    real = [(im, lab) for im, lab in items
            if lab["source_ids"] != coco_metric.PADDING_IMAGE_ID]
    blanks = [(im, lab) for im, lab in items
              if lab["source_ids"] == coco_metric.PADDING_IMAGE_ID]
    assert sorted(int(lab["source_ids"]) for _, lab in real) == all_ids
    assert len(blanks) == len(items) - NUM_COCO
    for image, lab in blanks:  # the mean colour, no objects, nothing to learn or score
        assert (image == 0).all()
        assert (lab["groundtruth_data"] == -1).all() and lab["image_scales"] == 1
        for level in range(config.min_level, config.max_level + 1):
            assert (lab[f"cls_targets_{level}"] == -1).all()
            assert (lab[f"box_targets_{level}"] == 0).all()
    # max_images (--eval_samples) reads the split's first N images, each once.
    first = _per_image(_batches(dataloader.InputReader(pattern, False, config, max_images=3), 2))
    ids = [int(lab["source_ids"]) for _, lab in first]
    assert len(ids) == 4 and ids[3] == coco_metric.PADDING_IMAGE_ID
    assert len(set(ids[:3])) == 3 and set(ids[:3]) <= set(all_ids)
    # Batch 1 needs no blanks; a limit above the split size reads the split once.
    single = _batches(dataloader.InputReader(pattern, False, config, max_images=100), 1)
    assert sorted(int(lab["source_ids"][0]) for _, lab in single) == all_ids
    with pytest.raises(dataloader.InputError, match="max_images"):
        dataloader.InputReader(pattern, True, config, max_images=3)


def test_eval_round_trip_voc_merged(tmp_path):
    voc = sample_dataset.write_voc(str(tmp_path / "data"), 4, seed=2, years=("VOC2007", "VOC2012"))
    output = str(tmp_path / "tfrecord" / "pascal")
    summary = create_pascal_tfrecord.create_pascal_tfrecord(create_pascal_tfrecord.ConvertOptions(
        data_dir=voc.data_dir, output_path=output, set="trainval", year="merged",
        label_map_json_path=voc.label_map_file, num_shards=3, num_threads=1), progress=False)
    assert summary.images_written == 8
    with open(create_pascal_tfrecord.json_path_for(output)) as f:
        gt = json.load(f)
    # The json lies next to the shards: a broad glob must skip it (automl#141).
    pattern = str(tmp_path / "tfrecord" / "*")
    config = tiny_config(image_size="256x128")  # W x H: non-square catches H/W swaps
    reader = dataloader.InputReader(pattern, False, config)
    assert all(f.endswith(".tfrecord") for f in reader.files) and len(reader.files) == 3
    expected = _json_boxes(gt)
    items = _per_image(_batches(reader, 1))
    assert sorted(int(lab["source_ids"]) for _, lab in items) == sorted(expected) == list(
        range(1, 9))
    for image, lab in items:
        boxes, classes, areas = expected[int(lab["source_ids"])]
        assert image.shape == (128, 256, 3)
        n = len(boxes)
        np.testing.assert_allclose(lab["groundtruth_data"][:n, :4], boxes, atol=1.0)
        np.testing.assert_array_equal(lab["groundtruth_data"][:n, 6], classes)
        np.testing.assert_allclose(lab["groundtruth_data"][:n, 5], areas, rtol=1e-4)
        _check_targets_recover(lab, config, boxes, classes, lab["image_scales"], tol=1.0)


def test_missing_keys_fall_back(tmp_path):
    """VOC-style records without area/is_crowd; training reads a record without source_id
    (as -1), eval refuses it (it could not be matched with its ground truth)."""
    path = _write_records(str(tmp_path / "r.tfrecord"), [_record()])
    _, lab = _per_image(_batches(dataloader.InputReader(path, False, tiny_config()), 1))[0]
    row = lab["groundtruth_data"][0]
    np.testing.assert_allclose(row[:4], [4, 6, 20, 30], atol=1e-4)  # 40x60 image
    assert row[4] == 0  # is_crowd
    assert row[5] == pytest.approx(16 * 24, rel=1e-4)  # area in original pixels
    no_id = _write_records(str(tmp_path / "s.tfrecord"), [_record(source_id="")])
    _, lab = _batches(dataloader.InputReader(no_id, True, tiny_config()), 1, 1)[0]
    assert lab["source_ids"][0] == -1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"s\.tfrecord record 0 \(image/source_id=\(none\)\): "
                             r"image/source_id must be the image id"):
        _batches(dataloader.InputReader(no_id, False, tiny_config()), 1, 1)


def test_crowd_boxes_kept_for_eval_skipped_for_training(tmp_path):
    rec = _record(boxes=((0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 0.9, 0.9)), labels=(1, 2),
                  **{"image/object/is_crowd": [0, 1], "image/object/area": [10.0, 20.0]})
    path = _write_records(str(tmp_path / "r.tfrecord"), [rec])

    def rows(training, **overrides):
        config = tiny_config(train_scale_min=1.0, train_scale_max=1.0, **overrides)
        reader = dataloader.InputReader(path, training, config, seed=0)
        lab = _per_image(_batches(reader, 1, 1))[0][1]
        return lab["groundtruth_data"][lab["groundtruth_data"][:, 6] > 0]

    np.testing.assert_array_equal(rows(False)[:, 4], [0, 1])
    np.testing.assert_array_equal(rows(True)[:, 6], [1])
    np.testing.assert_array_equal(rows(True, skip_crowd_during_training=False)[:, 6], [1, 2])


# -------------------------------------------------------------------------------------------------
# Training: labeler on augmented batches, augmentation geometry
# -------------------------------------------------------------------------------------------------
def test_training_batches_targets_match_augmented_boxes(coco):
    _, pattern, _ = coco
    config = tiny_config(image_size=256)
    reader = dataloader.InputReader(pattern, True, config, seed=3)
    items = _per_image(_batches(reader, 3, 4))
    assert len(items) == 12
    num_boxes, scales = 0, set()
    for image, lab in items:
        assert image.shape == (256, 256, 3)
        rows = lab["groundtruth_data"]
        valid = rows[:, 6] > 0
        assert (rows[~valid] == -1).all()
        boxes = rows[valid, :4] / lab["image_scales"]  # back to network pixels
        assert (boxes >= 0).all() and (boxes <= 256).all()
        assert (boxes[:, 2] - boxes[:, 0] >= dataloader.MIN_TRAIN_BOX_SIDE).all()
        assert (boxes[:, 3] - boxes[:, 1] >= dataloader.MIN_TRAIN_BOX_SIDE).all()
        _check_targets_recover(lab, config, boxes, rows[valid, 6], 1.0, tol=1e-2)
        num_boxes += len(boxes)
        scales.add(round(float(lab["image_scales"]), 4))
    assert num_boxes >= 10 and len(scales) > 1  # augmentation really varied the scale
    # mean_num_positives: the batch mean of positive anchors, repeated per image.
    for _, lab in _batches(reader, 3, 2):
        counts = [(_positives({k: v[i] for k, v in lab.items()}, config)[1]).size
                  for i in range(3)]
        np.testing.assert_allclose(lab["mean_num_positives"], [np.mean(counts)] * 3)


def _marker_image():
    """60x90 uint8 image, dark background, a red block rows 12..29, cols 5..34; its box."""
    image = np.zeros((60, 90, 3), np.uint8)
    image[:] = (10, 20, 30)
    image[12:30, 5:35] = (250, 10, 10)
    return image, np.array([[12, 5, 30, 35]], np.float32)


def _red_extent(image):
    """[ymin, xmin, ymax, xmax] (continuous) of the red pixels of a normalized image."""
    rgb = _unnormalize(image)
    ys, xs = np.nonzero((rgb[..., 0] > 130) & (rgb[..., 2] < 100))
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)


@pytest.mark.parametrize("jitter,offset,flip", [
    (1.0, (0.0, 0.0), False), (1.0, (0.0, 0.0), True), (0.5, (0.3, 0.7), True),
    (2.0, (0.0, 0.0), False), (2.0, (0.1, 0.05), True), (1.7, (0.2, 0.1), False)])
def test_train_geometry_boxes_follow_pixels(jitter, offset, flip):
    image, box = _marker_image()
    out, boxes, keep, image_scale = dataloader.preprocess_for_train(
        tf.constant(image), tf.constant(box), (64, 64), MEAN, STD, tf.constant(jitter),
        tf.constant(offset, tf.float32), tf.constant(flip))
    out, boxes = out.numpy(), boxes.numpy()
    assert out.shape == (64, 64, 3) and bool(keep.numpy()[0])
    assert float(image_scale) == pytest.approx(1 / (jitter * min(64 / 60, 64 / 90)), rel=1e-5)
    np.testing.assert_allclose(_red_extent(out), boxes[0], atol=1.0)


def test_flip_mirrors_image_and_boxes():
    image, box = _marker_image()
    args = (tf.constant(image), tf.constant(box), (64, 64), MEAN, STD, tf.constant(1.0),
            tf.zeros([2]))
    plain, plain_boxes, _, _ = dataloader.preprocess_for_train(*args, tf.constant(False))
    flipped, flipped_boxes, _, _ = dataloader.preprocess_for_train(*args, tf.constant(True))
    width, height = 64, round(60 * 64 / 90)  # the 90x60 image fills the width, 43 of 64 rows
    np.testing.assert_array_equal(flipped.numpy()[:height], plain.numpy()[:height, ::-1])
    np.testing.assert_array_equal(flipped.numpy()[height:], 0)
    b, f = plain_boxes.numpy()[0], flipped_boxes.numpy()[0]
    np.testing.assert_allclose(f, [b[0], width - b[3], b[2], width - b[1]], atol=1e-4)
    # The marker sits in the left third; after flipping it is in the right part.
    assert b[3] < width / 2 < f[1]


def test_scale_jitter_keeps_boxes_inside_the_image():
    image, box = _marker_image()
    boxes_in = np.concatenate([box, [[0, 0, 60, 90], [40, 60, 59, 89]]]).astype(np.float32)
    fn = tf.function(lambda seed: dataloader.preprocess_for_train(
        tf.constant(image), tf.constant(boxes_in), (64, 128), MEAN, STD,
        *dataloader.sample_train_params(seed, 0.1, 2.0, True)))
    flips = 0
    for s in range(40):
        seed = tf.constant([s, 7], tf.int64)
        out, boxes, keep, image_scale = (t.numpy() for t in fn(seed))
        flips += int(dataloader.sample_train_params(seed, 0.1, 2.0, True)[2])
        rgb_rows = np.nonzero((out != 0).any(axis=(1, 2)))[0]
        rgb_cols = np.nonzero((out != 0).any(axis=(0, 2)))[0]
        visible_h, visible_w = rgb_rows.max() + 1, rgb_cols.max() + 1
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= visible_h + 1e-4).all()
        assert (boxes[:, [1, 3]] <= visible_w + 1e-4).all()
        assert keep[1]  # the full-image box always survives
        if keep[0]:
            red = (_unnormalize(out)[..., 0] > 130) & (_unnormalize(out)[..., 2] < 100)
            b = boxes[0]
            if (b[2] - b[0]) > 3 and (b[3] - b[1]) > 3:
                np.testing.assert_allclose(_red_extent(out), b, atol=1.0)
            else:
                assert red.sum() <= (b[2] - b[0] + 2) * (b[3] - b[1] + 2)
    assert 5 < flips < 35
    assert not any(bool(dataloader.sample_train_params(tf.constant([s, 1], tf.int64), 0.1, 2.0,
                                                       False)[2]) for s in range(10))


def test_fake_data_repeats_the_first_batch(coco):
    _, pattern, _ = coco
    config = tiny_config()
    fake = _batches(dataloader.InputReader(pattern, True, config, use_fake_data=True), 2, 3)
    for images, labels in fake[1:]:
        np.testing.assert_array_equal(images, fake[0][0])
        for k in labels:
            np.testing.assert_array_equal(labels[k], fake[0][1][k])
    real = _batches(dataloader.InputReader(pattern, True, config, seed=1), 2, 3)
    assert not np.array_equal(real[0][0], real[1][0])


def test_cache_gives_the_same_records(coco):
    _, pattern, _ = coco
    config = tiny_config()
    plain = _batches(dataloader.InputReader(pattern, False, config), 2)
    cached = _batches(dataloader.InputReader(pattern, False, config, cache=True), 2)
    for (a, la), (b, lb) in zip(plain, cached):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la["groundtruth_data"], lb["groundtruth_data"])
    # Training with cache: repetition goes on past the first epoch (6 records, 10 read).
    train = _batches(dataloader.InputReader(pattern, True, config, cache=True, seed=0), 2, 5)
    assert len(train) == 5
    assert {int(i) for _, lab in train for i in lab["source_ids"]} == {
        int(lab["source_ids"][0]) for _, lab in plain} | {
        int(lab["source_ids"][1]) for _, lab in plain}


# -------------------------------------------------------------------------------------------------
# Error messages
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_too_many_instances_names_record_and_hparam(tmp_path, training):
    boxes = [(0.1 * i, 0.1, 0.1 * i + 0.05, 0.2) for i in range(4)]
    path = _write_records(str(tmp_path / "r.tfrecord"),
                          [_record(boxes=boxes, labels=[1, 2, 3, 1])])
    reader = dataloader.InputReader(path, training, tiny_config(max_instances_per_image=3))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"r\.tfrecord record 0 \(image/source_id=77\) has 4 "
                             r"ground-truth instances, more than "
                             r"max_instances_per_image=3"):
        _batches(reader, 1, 1)


@pytest.mark.parametrize("record,message", [
    (_record(source_id="000123.jpg"), r"source_id=000123.jpg\): .*in digits"),
    (_record(source_id="-5"), r"source_id=-5\): .*in digits"),
    (_record(source_id="123456789"), r"source_id=123456789\): ids above 16777216"),
    (_record(labels=(4,)), r"class ids 4 outside 1..num_classes=3"),
    (_record(labels=(1, 2)), r"different lengths \(bbox/xmin 1, bbox/xmax 1, bbox/ymin 1, "
                             r"bbox/ymax 1, class/label 2\)"),
    (_record(boxes=((0.5, 0.1, 0.2, 0.3),)), r"box 0 \(ymin,xmin,ymax,xmax = "
                                             r"0.5,0.1,0.2,0.3\) with ymin >= ymax"),
    (_record(boxes=((0.2, 0.1, 0.2, 0.3),)), r"box 0 .* with ymin >= ymax"),
    (_record(boxes=((0.1, 0.1, 0.5, 5.0),)), r"box 0 \(ymin,xmin,ymax,xmax = 0.1,0.1,0.5,5\) "
                                             r"outside \[0, 1\]"),
])
def test_bad_records_give_one_readable_line(tmp_path, record, message):
    path = _write_records(str(tmp_path / "r.tfrecord"), [record])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _batches(dataloader.InputReader(path, False, tiny_config()), 1, 1)


def test_file_pattern_errors(tmp_path, coco, caplog):
    config = tiny_config()
    with pytest.raises(dataloader.InputError, match="--training_file_pattern is empty"):
        dataloader.InputReader("", True, config)
    missing = str(tmp_path / "nope-*.tfrecord")
    with pytest.raises(dataloader.InputError,
                       match=r"--validation_file_pattern=.*nope-\*\.tfrecord matches no file"):
        dataloader.InputReader(missing, False, config)
    # Only a json matches: not read as records.
    json_path = tmp_path / "instances.json"
    json_path.write_text('{"images": []}')
    with pytest.raises(dataloader.InputError, match="matches no TFRecord file, only .*json"):
        dataloader.InputReader(str(tmp_path / "*"), True, config)
    # Records and a json: the json is skipped with a warning.
    _write_records(str(tmp_path / "a.tfrecord"), [_record()])
    with caplog.at_level(logging.WARNING):
        reader = dataloader.InputReader(str(tmp_path / "*"), True, config)
    assert reader.files == [str(tmp_path / "a.tfrecord")]
    assert "instances.json" in caplog.text
    # Any other file that is not a TFRecord is an error naming it.
    (tmp_path / "notes.bin").write_bytes(b"this is not a record file")
    with pytest.raises(dataloader.InputError, match=r"notes\.bin, which is not a TFRecord"):
        dataloader.InputReader(str(tmp_path / "*"), False, config)
    # Comma-separated globs: each must match.
    _, pattern, _ = coco
    with pytest.raises(dataloader.InputError, match="nope"):
        dataloader.InputReader(f"{pattern},{missing}", True, config)
    assert len(dataloader.InputReader(f"{pattern},{tmp_path / 'a.tfrecord'}", True,
                                      config).files) == 3


def test_batch_size_is_required(coco):
    _, pattern, _ = coco
    reader = dataloader.InputReader(pattern, False, tiny_config())
    with pytest.raises(dataloader.InputError, match="needs a batch size"):
        reader()
    with pytest.raises(dataloader.InputError, match="positive integer"):
        reader(batch_size=0)


# -------------------------------------------------------------------------------------------------
# Graph mode, Estimator-style calls
# -------------------------------------------------------------------------------------------------
def test_graph_mode_with_params_and_input_context(coco):
    _, pattern, gt = coco
    config = tiny_config()
    reader = dataloader.InputReader(pattern, False, config)
    # Shard 0 of 2 pipelines reads the first file: records 0, 2, 4 (the converter's round robin).
    first_shard_ids = sorted(im["id"] for im in gt["images"])[0::2]
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    with tf.Graph().as_default():
        ds = reader({"batch_size": 2}, input_context=context)  # global 2 -> 1 per replica
        images, labels = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        assert images.shape.as_list() == [1, 128, 128, 3]
        assert labels["cls_targets_3"].shape.as_list() == [1, 16, 16, 9]
        assert labels["box_targets_7"].shape.as_list() == [1, 1, 1, 36]
        assert labels["groundtruth_data"].shape.as_list() == [1, 100, 7]
        ids = []
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    ids.append(sess.run(labels["source_ids"])[0])
                except tf.errors.OutOfRangeError:
                    break
    assert sorted(ids) == first_shard_ids
    assert tf.executing_eagerly()  # nothing leaked


def test_more_pipelines_than_files_shards_records(coco, caplog):
    _, pattern, gt = coco
    reader = dataloader.InputReader(pattern, False, tiny_config())
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=1,
                                         num_replicas_in_sync=3)
    with caplog.at_level(logging.WARNING):
        ds = reader(input_context=context, batch_size=1)  # explicit: already per replica
    assert "sharding by record" in caplog.text
    ids = [int(lab["source_ids"][0]) for _, lab in ds.as_numpy_iterator()]
    # Two files interleaved record by record (ids ascending), then every 3rd from index 1.
    assert ids == sorted(im["id"] for im in gt["images"])[1::3]


def test_training_graph_mode_static_shapes(coco):
    _, pattern, _ = coco
    config = tiny_config(image_size="256x128")
    with tf.Graph().as_default():
        ds = dataloader.InputReader(pattern, True, config)(batch_size=2)
        images, labels = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        assert images.shape.as_list() == [2, 128, 256, 3]
        assert labels["cls_targets_3"].shape.as_list() == [2, 16, 32, 9]
        assert labels["mean_num_positives"].shape.as_list() == [2]
        with tf.compat.v1.Session() as sess:
            out = sess.run(labels)
    assert np.isfinite(out["box_targets_3"]).all()


def test_records_in_eval_order_are_the_records_eval_reads(tmp_path):
    """main.py checks the records eval will read before it evaluates them: the same records,
    in the same order, as the eval pipeline (files of different lengths interleaved), each
    with its file and index."""
    files, sid = [], 0
    for name, count in (("a", 3), ("b", 1), ("c", 2)):
        records = []
        for _ in range(count):
            sid += 1
            records.append(_record(source_id=str(sid)))
        files.append(_write_records(str(tmp_path / f"{name}.tfrecord"), records))
    reader = dataloader.InputReader(files, False, tiny_config(), max_images=5)
    read = [int(lab["source_ids"][0]) for _, lab in _batches(reader, 1)]
    checked = list(dataloader.records_in_eval_order(files, 5))
    assert [int(tfrecord_util.parse_example(r.serialized)["image/source_id"][0])
            for r in checked] == read == [1, 4, 5, 2, 6]
    assert [(os.path.basename(r.file), r.index) for r in checked] == [
        ("a.tfrecord", 0), ("b.tfrecord", 0), ("c.tfrecord", 0), ("a.tfrecord", 1),
        ("c.tfrecord", 1)]

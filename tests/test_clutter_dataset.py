"""dataset/clutter_dataset.py: the harder benchmark set is deterministic, its boxes are the exact
extent of the visible pixels, every object stays at least 60% visible, and it spans the classes
and the COCO-like size range it promises; its COCO layout converts to records."""

import collections
import hashlib
import json

import numpy as np
import pytest

from dataset import clutter_dataset, create_coco_tfrecord, sample_dataset


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_image_i_depends_only_on_seed_and_i(tmp_path):
    a = sample_dataset.write_coco(str(tmp_path / "a"), 6, seed=3, kind="clutter")
    sample_dataset.write_coco(str(tmp_path / "b"), 6, seed=3, kind="clutter")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    more = sample_dataset.generate_images(9, seed=3, kind="clutter")
    for info, image in zip(a.images, more):
        assert info == image[0]
    other = sample_dataset.generate_images(2, seed=4, kind="clutter")
    assert other[0][0] != a.images[0]


def test_boxes_are_the_extent_of_pixels_no_other_object_covers():
    for i in range(12):
        rng = np.random.default_rng([7, i])
        pixels, objects = clutter_dataset.clutter_image(rng, 320, 240)
        assert pixels.shape == (240, 320, 3) and pixels.dtype == np.uint8
        assert 1 <= len(objects) <= 14
        taken = np.zeros((240, 320), bool)
        for class_id, visible, _ in reversed(objects):  # the last drawn is on top
            assert 1 <= class_id <= 10
            x, y, w, h = clutter_dataset.box_of(visible)
            ys, xs = np.nonzero(visible)
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            assert not (visible & taken).any()  # visible pixels are nobody else's
            taken |= visible


def test_every_object_keeps_most_of_its_pixels():
    """Re-drawing each object's full shape from its polygon: at least MIN_VISIBLE of it shows."""
    for i in range(12):
        rng = np.random.default_rng([11, i])
        _, objects = clutter_dataset.clutter_image(rng, 320, 240)
        for _, visible, polygon in objects:
            full = clutter_dataset._mask(list(zip(polygon[::2], polygon[1::2])), (320, 240))
            assert (visible & ~full).sum() == 0
            assert visible.sum() >= clutter_dataset.MIN_VISIBLE * full.sum()


def test_classes_and_size_spread_at_a_256_training_size():
    pairs = sample_dataset.generate_images(60, seed=0, min_size=320, max_size=480,
                                           kind="clutter")
    counts = collections.Counter(o.class_id for info, _ in pairs for o in info.objects)
    assert set(counts) == set(clutter_dataset.CLUTTER_LABEL_MAP)
    scaled = np.array([max(o.box[2], o.box[3]) * 256 / max(info.width, info.height)
                       for info, _ in pairs for o in info.objects])
    assert (scaled < 32).mean() > 0.35  # many small objects
    assert (scaled > 96).mean() > 0.01  # some large ones
    per_image = [len(info.objects) for info, _ in pairs]
    assert np.mean(per_image) > 6


@pytest.mark.parametrize("fmt", ["coco"])
def test_coco_layout_converts_to_records(tmp_path, fmt):
    sample = sample_dataset.write_coco(str(tmp_path), 8, seed=1, kind="clutter")
    data = json.loads(open(sample.instances_file).read())
    assert {c["name"] for c in data["categories"]} == set(
        clutter_dataset.CLUTTER_LABEL_MAP.values())
    summary = create_coco_tfrecord.create_coco_tfrecord(create_coco_tfrecord.ConvertOptions(
        image_dir=sample.image_dir, output_file_prefix=str(tmp_path / "rec" / "train"),
        object_annotations_file=sample.instances_file, num_shards=1, num_threads=1,
        num_classes=10, on_error="fail"), progress=False)
    assert summary.images_written == 8

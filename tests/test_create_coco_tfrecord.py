"""Tests for dataset/create_coco_tfrecord.py on the generated sample dataset."""

import collections
import glob
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import errors
from conftest import sideways_photo
from dataset import create_coco_tfrecord as coco
from dataset import sample_dataset, tfrecord_util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES = 8


@pytest.fixture
def sample(tmp_path):
    return sample_dataset.write_coco(str(tmp_path / "data"), NUM_IMAGES, seed=1)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _save(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def _convert(sample, tmp_path, **kwargs):
    prefix = str(tmp_path / "out" / "train")
    kwargs.setdefault("object_annotations_file", sample.instances_file)
    kwargs.setdefault("num_shards", 3)
    kwargs.setdefault("num_threads", 1)
    summary = coco.create_coco_tfrecord(
        coco.ConvertOptions(image_dir=sample.image_dir, output_file_prefix=prefix, **kwargs),
        progress=False)
    return summary, tfrecord_util.read_examples(prefix + "-*.tfrecord")


def _boxes_xywh(record):
    """Record boxes back in absolute pixels [x, y, w, h]."""
    w, h = record["image/width"][0], record["image/height"][0]
    b = {k: np.array(record[f"image/object/bbox/{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")}
    return np.stack([b["xmin"] * w, b["ymin"] * h, (b["xmax"] - b["xmin"]) * w,
                     (b["ymax"] - b["ymin"]) * h], axis=-1).reshape(-1, 4)


def _check_round_trip(records, instances):
    """Every record matches its json image and annotations (boxes within 1 px)."""
    images = {im["id"]: im for im in instances["images"]}
    names = {c["id"]: c["name"] for c in instances["categories"]}
    anns = collections.defaultdict(list)
    for a in instances["annotations"]:
        anns[a["image_id"]].append(a)
    for r in records:
        sid = int(r["image/source_id"][0].decode())
        im = images[sid]
        assert r["image/filename"] == [im["file_name"].encode()]
        assert (r["image/width"], r["image/height"]) == ([im["width"]], [im["height"]])
        encoded = r["image/encoded"][0]
        assert r["image/key/sha256"] == [hashlib.sha256(encoded).hexdigest().encode()]
        assert r["image/format"] == [b"jpeg"]
        decoded = Image.open(io.BytesIO(encoded))
        assert decoded.format == "JPEG" and decoded.mode == "RGB"
        assert decoded.size == (im["width"], im["height"])
        want = anns[sid]
        np.testing.assert_allclose(_boxes_xywh(r), np.array([a["bbox"] for a in want],
                                                            float).reshape(-1, 4), atol=1.0)
        assert r["image/object/class/label"] == [a["category_id"] for a in want]
        assert r["image/object/class/text"] == [names[a["category_id"]].encode() for a in want]
        assert r["image/object/is_crowd"] == [0] * len(want)
        np.testing.assert_allclose(r["image/object/area"], [a["area"] for a in want])
    return {int(r["image/source_id"][0]) for r in records}


def test_round_trip_boxes_labels_and_source_ids(sample, tmp_path):
    summary, records = _convert(sample, tmp_path)
    instances = _load(sample.instances_file)
    assert len(records) == NUM_IMAGES
    assert _check_round_trip(records, instances) == {im["id"] for im in instances["images"]}
    assert summary.images_written == NUM_IMAGES and summary.num_problems == 0
    assert summary.boxes_written == len(instances["annotations"])
    # Record i goes to shard i % 3, in image-list order.
    ids = [im["id"] for im in instances["images"]]
    files = sorted(glob.glob(str(tmp_path / "out" / "train-*")))
    assert [os.path.basename(f) for f in files] == [f"train-0000{i}-of-00003.tfrecord"
                                                    for i in range(3)]
    for k, f in enumerate(files):
        assert [int(r["image/source_id"][0]) for r in tfrecord_util.read_examples(f)] == ids[k::3]
    assert "images seen: 8, written: 8" in summary.format()


def test_worker_processes_give_identical_shards(sample, tmp_path):
    _convert(sample, tmp_path / "one", num_threads=1)
    _convert(sample, tmp_path / "two", num_threads=2)  # spawn pool
    one = sorted(glob.glob(str(tmp_path / "one" / "out" / "*.tfrecord")))
    two = sorted(glob.glob(str(tmp_path / "two" / "out" / "*.tfrecord")))
    assert [os.path.basename(f) for f in one] == [os.path.basename(f) for f in two]
    for a, b in zip(one, two):
        assert list(tfrecord_util.iter_serialized(a)) == list(tfrecord_util.iter_serialized(b))


def test_small_dataset_gets_no_empty_shards(sample, tmp_path):
    summary, records = _convert(sample, tmp_path, num_shards=32)
    files = sorted(glob.glob(str(tmp_path / "out" / "*.tfrecord")))
    assert len(files) == NUM_IMAGES and files[0].endswith("-00000-of-00008.tfrecord")
    assert all(len(tfrecord_util.read_examples(f)) == 1 for f in files)
    assert summary.notes["num_shards_reduced_to_num_images"] == 1


def test_captions_only_gives_image_only_records(sample, tmp_path):
    summary, records = _convert(sample, tmp_path, object_annotations_file="",
                                caption_annotations_file=sample.captions_file)
    captions = {a["image_id"]: a["caption"] for a in _load(sample.captions_file)["annotations"]}
    assert len(records) == NUM_IMAGES and summary.images_written == NUM_IMAGES
    for r in records:
        assert not any(k.startswith("image/object/") for k in r)
        assert r["image/caption"] == [captions[int(r["image/source_id"][0])].encode()]
    assert {int(r["image/source_id"][0]) for r in records} == set(captions)


def test_image_info_only_gives_a_record_for_every_image(sample, tmp_path):
    summary, records = _convert(sample, tmp_path, object_annotations_file="",
                                image_info_file=sample.image_info_file)
    info = _load(sample.image_info_file)
    assert sorted(int(r["image/source_id"][0]) for r in records) == sorted(
        im["id"] for im in info["images"])
    assert all("image/object/bbox/xmin" not in r and "image/caption" not in r for r in records)
    assert summary.images_written == NUM_IMAGES and summary.num_problems == 0


def test_image_info_file_defines_the_image_list(sample, tmp_path):
    info = _load(sample.image_info_file)
    info["images"] = info["images"][:3]
    _save(sample.image_info_file, info)
    summary, records = _convert(sample, tmp_path, image_info_file=sample.image_info_file)
    assert len(records) == 3
    # Annotations of the images left out are counted, never silently dropped.
    kept = {im["id"] for im in info["images"]}
    n_out = sum(a["image_id"] not in kept
                for a in _load(sample.instances_file)["annotations"])
    assert summary.problems["annotation_image_not_listed"] == n_out


def test_masks(sample, tmp_path):
    summary, records = _convert(sample, tmp_path, include_masks=True)
    assert summary.num_problems == 0
    n = 0
    for r in records:
        h, w = r["image/height"][0], r["image/width"][0]
        assert len(r["image/object/mask"]) == len(r["image/object/class/label"])
        for png, (x, y, bw, bh), area in zip(r["image/object/mask"], _boxes_xywh(r),
                                             r["image/object/area"]):
            mask = np.asarray(Image.open(io.BytesIO(png)))
            assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 1}
            ys, xs = np.nonzero(mask)
            # pycocotools rasterizes the polygon; a triangle's thin tip may lose a pixel or two.
            assert abs(xs.min() - x) <= 3 and abs(ys.min() - y) <= 3
            assert abs(xs.max() + 1 - (x + bw)) <= 3 and abs(ys.max() + 1 - (y + bh)) <= 3
            assert abs(mask.sum() - area) <= 0.25 * area  # polygon vs. rasterized shape
            n += 1
    assert n == summary.boxes_written > 0


def test_png_input_is_stored_as_jpeg(tmp_path):
    sample = sample_dataset.write_coco(str(tmp_path / "data"), 4, seed=2, image_format="png")
    summary, records = _convert(sample, tmp_path)
    assert len(records) == 4
    _check_round_trip(records, _load(sample.instances_file))
    assert summary.notes["reencoded_png_to_jpeg"] == 4 and summary.num_problems == 0


# -------------------------------------------------------------------------------------------------
# Photos with an EXIF orientation are stored upright, as annotation tools show them
# -------------------------------------------------------------------------------------------------
def _sideways_dataset(tmp_path, json_size):
    """One sideways photo (tests/conftest.sideways_photo) with the red block annotated on the
    upright view; the json gives the image size `json_size` (W, H)."""
    images = tmp_path / "photos"
    images.mkdir()
    upright = sideways_photo(images / "portrait.jpg")
    ann = tmp_path / "instances.json"
    _save(ann, {"images": [{"id": 7, "file_name": "portrait.jpg", "width": json_size[0],
                            "height": json_size[1]}],
                "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
                                 "bbox": [32, 0, 16, 24], "area": 384}],
                "categories": [{"id": 1, "name": "block"}]})
    return str(images), str(ann), upright


def test_exif_oriented_photo_is_stored_upright_with_its_boxes(tmp_path):
    import tensorflow as tf

    image_dir, ann, upright = _sideways_dataset(tmp_path, (48, 64))
    prefix = str(tmp_path / "out" / "p")
    summary = coco.create_coco_tfrecord(coco.ConvertOptions(
        image_dir=image_dir, output_file_prefix=prefix, object_annotations_file=ann,
        num_shards=1, num_threads=1), progress=False)
    assert summary.num_problems == 0 and summary.images_written == 1
    assert summary.notes["exif_orientation_applied"] == 1
    (record,) = tfrecord_util.read_examples(prefix + "-*.tfrecord")
    assert (record["image/width"], record["image/height"]) == ([48], [64])
    # The dataloader's decoder ignores EXIF: the stored pixels themselves must be upright.
    decoded = tf.io.decode_image(record["image/encoded"][0], channels=3).numpy()
    assert decoded.shape == (64, 48, 3)
    assert np.abs(decoded.astype(int) - upright).mean() < 4
    np.testing.assert_allclose(_boxes_xywh(record), [[32, 0, 16, 24]], atol=1e-4)
    block = decoded[2:22, 34:46].mean(axis=(0, 1))
    assert block[0] > 200 and block[1] < 60  # the box holds the red block


def test_exif_photo_annotated_sideways_is_named_with_its_upright_size(tmp_path):
    image_dir, ann, _ = _sideways_dataset(tmp_path, (64, 48))
    with pytest.raises(errors.DataError) as e:
        coco.create_coco_tfrecord(coco.ConvertOptions(
            image_dir=image_dir, output_file_prefix=str(tmp_path / "out" / "p"),
            object_annotations_file=ann, num_shards=1, num_threads=1, on_error="fail"),
            progress=False)
    assert ("the json says 64x48 (WxH) but the image file is 48x64 as shown (EXIF orientation 6 "
            "applied) [image_size_mismatch]") in str(e.value)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


# -------------------------------------------------------------------------------------------------
# Existing shards: refused, replaced only with overwrite and only at the same count
# -------------------------------------------------------------------------------------------------
def test_existing_shards_are_refused_then_replaced_only_when_asked(sample, tmp_path):
    summary, first = _convert(sample, tmp_path)
    files = sorted(glob.glob(str(tmp_path / "out" / "train-*")))
    assert len(files) == 3
    before = {f: open(f, "rb").read() for f in files}
    with pytest.raises(errors.OutputError) as e:
        _convert(sample, tmp_path)
    assert str(e.value) == (f"--output_file_prefix '{tmp_path}/out/train': '{files[0]}' and 2 "
                            f"more already exist; pass --overwrite to replace them, or choose "
                            f"another prefix (nothing was written)")
    with pytest.raises(errors.OutputError, match=r"'.*train-00000-of-00003.tfrecord' and 2 more "
                                                 r"of an earlier conversion with another shard "
                                                 r"count would be read together with the 2 new"):
        _convert(sample, tmp_path, num_shards=2, overwrite=True)
    assert {f: open(f, "rb").read() for f in files} == before
    (tmp_path / "out" / "notes.txt").write_text("mine")
    _, again = _convert(sample, tmp_path, overwrite=True)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [os.path.basename(f) for f in files] + ["notes.txt"])
    assert len(again) == len(first) == NUM_IMAGES


def test_overwrite_never_leaves_old_shards_beside_fewer_new_ones(sample, tmp_path):
    """Replacing 8 shards, but a skipped image leaves 7 records (so 7 shards of another name):
    nothing is written rather than a mix of old and new records."""
    out = tmp_path / "out"
    out.mkdir()
    old = [out / f"train-{i:05d}-of-00008.tfrecord" for i in range(8)]
    for path in old:
        path.write_bytes(b"an earlier conversion")
    os.remove(os.path.join(sample.image_dir, sample.images[3].file_name))
    with pytest.raises(errors.OutputError, match=r"'.*train-00000-of-00008.tfrecord' \(of 8 "
                                                 r"shard\(s\) of this prefix\) would be left "
                                                 r"beside the 7 new shard\(s\)"):
        _convert(sample, tmp_path, num_shards=8, overwrite=True)
    assert sorted(os.listdir(out)) == sorted(p.name for p in old)
    assert all(p.read_bytes() == b"an earlier conversion" for p in old)


# -------------------------------------------------------------------------------------------------
# Non-RGB images are converted (counted, not errors)
# -------------------------------------------------------------------------------------------------
def _to_mode(img, mode):
    if mode == "I;16":
        arr = np.asarray(img.convert("L"), np.uint16) * 257
        return Image.fromarray(arr, "I;16") if hasattr(Image, "fromarray") else None
    if mode == "RGBA":
        out = img.convert("RGBA")
        out.putalpha(Image.linear_gradient("L").resize(img.size))
        return out
    if mode == "P":
        out = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        out.info["transparency"] = 0
        return out
    return img.convert(mode)


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"),
                                       ("P", "PNG"), ("LA", "PNG"), ("I;16", "PNG"),
                                       ("L", "PNG")])
def test_non_rgb_images_are_converted_and_counted(sample, tmp_path, mode, fmt):
    data = _load(sample.instances_file)
    target = data["images"][2]
    path = os.path.join(sample.image_dir, target["file_name"])
    converted = _to_mode(Image.open(path).convert("RGB"), mode)
    ext = ".png" if fmt == "PNG" else ".jpg"
    new_name = f"converted_{mode.replace(';', '')}{ext}"
    save_kwargs = {"transparency": 0} if mode == "P" else {}
    converted.save(os.path.join(sample.image_dir, new_name), format=fmt, **save_kwargs)
    target["file_name"] = new_name
    _save(sample.instances_file, data)

    summary, records = _convert(sample, tmp_path)
    assert len(records) == NUM_IMAGES and summary.num_problems == 0
    _check_round_trip(records, data)  # every record is an RGB JPEG of the right size
    note = [n for n in summary.notes if n.startswith("converted_to_rgb_from_")]
    assert note and summary.notes[note[0]] == 1
    assert f"image id {target['id']}" in summary.note_examples[note[0]][0]
    assert new_name in summary.note_examples[note[0]][0]
    assert "converted / adjusted (not errors)" in summary.format()


# -------------------------------------------------------------------------------------------------
# Bad input: skipped and counted (every good record still written), or one clear error line
# -------------------------------------------------------------------------------------------------
def _first_annotation(data):
    ann = data["annotations"][0]
    image = next(im for im in data["images"] if im["id"] == ann["image_id"])
    return ann, image


def _degenerate(sample, data):
    ann, _ = _first_annotation(data)
    ann["bbox"][2] = 0
    return "degenerate_box", sample.instances_file, f"annotation id {ann['id']}", 0, 1


def _out_of_image(sample, data):
    ann, image = _first_annotation(data)
    ann["bbox"][0] = image["width"] - ann["bbox"][2] + 5  # 5 px past the right edge
    return "box_out_of_image", sample.instances_file, f"annotation id {ann['id']}", 0, 1


def _class_out_of_range(sample, data):
    ann, _ = _first_annotation(data)
    ann["category_id"] = 95
    return "class_id_out_of_range", sample.instances_file, f"annotation id {ann['id']}", 0, 1


def _unknown_category(sample, data):
    ann, _ = _first_annotation(data)
    ann["category_id"] = 50  # within 1..90 but not in the json's categories
    return "unknown_category", sample.instances_file, f"annotation id {ann['id']}", 0, 1


def _malformed(sample, data):
    ann, _ = _first_annotation(data)
    ann["bbox"] = [1, 2, "x", 4]
    return "malformed_annotation", sample.instances_file, f"annotation id {ann['id']}", 0, 1


def _orphan(sample, data):
    ann, _ = _first_annotation(data)
    ann["image_id"] = 999999
    return ("annotation_image_not_listed", sample.instances_file, f"annotation id {ann['id']}",
            0, 1)


def _corrupt_image(sample, data):
    image = data["images"][1]
    path = os.path.join(sample.image_dir, image["file_name"])
    with open(path, "rb") as f:
        head = f.read()[:200]
    with open(path, "wb") as f:
        f.write(head)  # a truncated JPEG
    return "unreadable_image", path, f"image id {image['id']}", 1, 0


def _not_an_image(sample, data):
    image = data["images"][1]
    path = os.path.join(sample.image_dir, image["file_name"])
    with open(path, "w") as f:
        f.write("this is not an image")
    return "unreadable_image", path, f"image id {image['id']}", 1, 0


def _missing_image(sample, data):
    image = data["images"][1]
    path = os.path.join(sample.image_dir, image["file_name"])
    os.remove(path)
    return "missing_image", path, f"image id {image['id']}", 1, 0


def _size_mismatch(sample, data):
    image = data["images"][0]
    image["width"] += 3
    return ("image_size_mismatch", os.path.join(sample.image_dir, image["file_name"]),
            f"image id {image['id']}", 1, 0)


def _duplicate_id(sample, data):
    dup = dict(data["images"][2], file_name=data["images"][3]["file_name"])
    data["images"].append(dup)
    return "duplicate_image_id", sample.instances_file, f"image id {dup['id']}", 0, 0


def _bad_image_id(sample, data):
    image = data["images"][4]
    for ann in data["annotations"]:
        if ann["image_id"] == image["id"]:
            ann["image_id"] = "img-four"
    image["id"] = "img-four"
    return "bad_image_id", sample.instances_file, "image id 'img-four'", 1, None


BAD_CASES = {f.__name__[1:]: f for f in (
    _degenerate, _out_of_image, _class_out_of_range, _unknown_category, _malformed, _orphan,
    _corrupt_image, _not_an_image, _missing_image, _size_mismatch, _duplicate_id, _bad_image_id)}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_skipped_counted_and_named(sample, tmp_path, case):
    data = _load(sample.instances_file)
    total_boxes = len(data["annotations"])
    reason, file, item, images_lost, boxes_lost = BAD_CASES[case](sample, data)
    _save(sample.instances_file, data)

    summary, records = _convert(sample, tmp_path)
    assert summary.problems[reason] == 1
    message = summary.first_message[reason]
    assert message.startswith(f"{file}: ") and item in message
    assert f"[{reason}]" in message and reason in summary.format()
    assert len(records) == summary.images_written == NUM_IMAGES - images_lost
    if boxes_lost is not None:
        assert summary.boxes_written == total_boxes - boxes_lost - summary.boxes_in_skipped_images
    assert summary.boxes_written == sum(len(r.get("image/object/class/label", []))
                                        for r in records)
    good = {im["id"] for im in data["images"] if isinstance(im["id"], int)}
    assert {int(r["image/source_id"][0]) for r in records} <= good


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_fail_policy_raises_one_clear_line_and_writes_nothing(sample, tmp_path, case):
    data = _load(sample.instances_file)
    reason, file, item, _, _ = BAD_CASES[case](sample, data)
    _save(sample.instances_file, data)
    with pytest.raises(errors.DataError) as e:
        _convert(sample, tmp_path, on_error="fail")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{file}: ") and item in msg and f"[{reason}]" in msg
    assert "To fix:" in msg and "--on_error=skip" in msg
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []


def test_too_many_instances_skips_the_image(sample, tmp_path):
    data = _load(sample.instances_file)
    per_image = collections.Counter(a["image_id"] for a in data["annotations"])
    crowded = sorted(i for i, n in per_image.items() if n > 2)
    assert crowded, "the sample must have images with more than 2 boxes"
    summary, records = _convert(sample, tmp_path, max_instances_per_image=2)
    assert summary.problems["too_many_instances"] == len(crowded)
    assert len(records) == NUM_IMAGES - len(crowded)
    assert summary.boxes_in_skipped_images == sum(per_image[i] for i in crowded)
    message = summary.first_message["too_many_instances"]
    assert sample.instances_file in message and f"image id {crowded[0]}" in message
    assert "max_instances_per_image=2" in message
    with pytest.raises(errors.DataError, match="max_instances_per_image"):
        _convert(sample, tmp_path / "fail", max_instances_per_image=2, on_error="fail")


def test_bad_segmentation_with_masks(sample, tmp_path):
    data = _load(sample.instances_file)
    ann, _ = _first_annotation(data)
    ann["segmentation"] = [[1, 2]]
    _save(sample.instances_file, data)
    summary, records = _convert(sample, tmp_path, include_masks=True)
    assert summary.problems["bad_segmentation"] == 1
    assert f"annotation id {ann['id']}" in summary.first_message["bad_segmentation"]
    assert len(records) == NUM_IMAGES


def test_digit_string_ids_are_accepted(sample, tmp_path):
    data = _load(sample.instances_file)
    for im in data["images"]:
        im["id"] = str(im["id"])
    for ann in data["annotations"]:
        ann["image_id"] = str(ann["image_id"])
    _save(sample.instances_file, data)
    summary, records = _convert(sample, tmp_path)
    assert summary.num_problems == 0 and len(records) == NUM_IMAGES
    assert summary.boxes_written == len(data["annotations"])


def test_box_within_tolerance_is_clipped(sample, tmp_path):
    data = _load(sample.instances_file)
    ann, image = _first_annotation(data)
    ann["bbox"][0] = image["width"] - ann["bbox"][2] + 0.5  # half a pixel past the edge
    _save(sample.instances_file, data)
    summary, records = _convert(sample, tmp_path)
    assert summary.num_problems == 0 and summary.notes["box_clipped_to_image"] == 1
    assert max(x for r in records for x in r["image/object/bbox/xmax"]) <= 1.0


@pytest.mark.parametrize("kwargs, words", [
    ({"object_annotations_file": ""}, ["--image_info_file", "--object_annotations_file"]),
    ({"object_annotations_file": "/nonexistent.json"}, ["--object_annotations_file",
                                                        "file not found"]),
    ({"num_shards": 0}, ["--num_shards"]),
    ({"on_error": "ignore"}, ["--on_error"]),
    ({"include_masks": True, "object_annotations_file": "",
      "caption_annotations_file": "x.json"}, ["--include_masks"]),
])
def test_usage_errors_name_the_flag(sample, tmp_path, kwargs, words):
    with pytest.raises(ValueError) as e:
        _convert(sample, tmp_path, **kwargs)
    for w in words:
        assert w in str(e.value)
    with pytest.raises(errors.UsageError, match="--image_dir"):
        coco.create_coco_tfrecord(coco.ConvertOptions(
            image_dir="", output_file_prefix=str(tmp_path / "x"),
            object_annotations_file=sample.instances_file))


def _run_cli(args, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "dataset/create_coco_tfrecord.py", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=180)


def test_cli_runs_without_pythonpath(sample, tmp_path):
    prefix = str(tmp_path / "tfrecord" / "val")
    proc = _run_cli([f"--image_dir={sample.image_dir}",
                     f"--object_annotations_file={sample.instances_file}",
                     f"--output_file_prefix={prefix}", "--num_shards=2", "--num_threads=2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "images seen: 8, written: 8" in proc.stdout
    assert len(tfrecord_util.read_examples(prefix + "-*-of-00002.tfrecord")) == NUM_IMAGES


def test_cli_fail_policy_prints_one_error_line(sample, tmp_path):
    data = _load(sample.instances_file)
    reason, file, item, _, _ = _degenerate(sample, data)
    _save(sample.instances_file, data)
    proc = _run_cli([f"--image_dir={sample.image_dir}",
                     f"--object_annotations_file={sample.instances_file}",
                     f"--output_file_prefix={tmp_path / 'val'}", "--on_error=fail",
                     "--num_threads=1"], pythonpath="." + os.pathsep + os.environ.get(
                         "PYTHONPATH", ""))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"create_coco_tfrecord.py: error: {file}: ") and item in last
    assert reason in last
    assert glob.glob(str(tmp_path / "val*")) == []


def test_unwritable_output_prefix_is_one_line_naming_the_flag(sample, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    prefix = str(blocker / "tfrecord" / "val")
    with pytest.raises(errors.OutputError, match=f"--output_file_prefix={prefix}: cannot write"):
        coco.create_coco_tfrecord(coco.ConvertOptions(
            image_dir=sample.image_dir, output_file_prefix=prefix,
            object_annotations_file=sample.instances_file), progress=False)
    proc = _run_cli([f"--image_dir={sample.image_dir}",
                     f"--object_annotations_file={sample.instances_file}",
                     f"--output_file_prefix={prefix}"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"create_coco_tfrecord.py: error: --output_file_prefix={prefix}")

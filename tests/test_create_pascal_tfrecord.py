"""Tests for dataset/create_pascal_tfrecord.py on the generated sample VOC tree."""

import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import errors
from dataset import create_pascal_tfrecord as pascal
from dataset import sample_dataset, tfrecord_util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES = 8  # per year; the 'train' set holds 6 of them (every 4th image is 'val')
NUM_TRAIN = 6


@pytest.fixture
def voc(tmp_path):
    return sample_dataset.write_voc(str(tmp_path / "data"), NUM_IMAGES, seed=3)


def _options(voc, output_path, **kwargs):
    return pascal.ConvertOptions(data_dir=voc.data_dir, output_path=output_path, num_threads=1,
                                 **kwargs)


def _convert(voc, tmp_path, **kwargs):
    output_path = str(tmp_path / "tfrecord" / "pascal")
    kwargs.setdefault("year", "VOC2012")
    kwargs.setdefault("label_map_json_path", voc.label_map_file)
    kwargs.setdefault("num_threads", 1)
    kwargs["set"] = kwargs.pop("set_name", "train")
    summary = pascal.create_pascal_tfrecord(
        pascal.ConvertOptions(data_dir=voc.data_dir, output_path=output_path, **kwargs),
        progress=False)
    records = tfrecord_util.read_examples(output_path + "-*.tfrecord")
    with open(pascal.json_path_for(output_path)) as f:
        gt = json.load(f)
    return summary, records, gt


def _gt_by_file(voc, years, drop_difficult=False, set_name="train"):
    """{file name: [(class id, [x, y, w, h])]} of the generator's ground truth for a set."""
    out = {}
    for year in years:
        _, names = pascal.read_image_list(voc.data_dir, year, set_name)
        for info in voc.images[year]:
            if os.path.splitext(info.file_name)[0] in names:
                out[info.file_name] = [(o.class_id, list(o.box)) for o in info.objects
                                       if not (drop_difficult and o.difficult)]
    return out


def _check_records_against_json(records, gt, expected):
    """Records and json agree (ids, boxes within 1 px, labels) and match the generator."""
    images = {im["id"]: im for im in gt["images"]}
    assert len(images) == len(gt["images"]), "json image ids are unique"
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    sids = [int(r["image/source_id"][0]) for r in records]
    assert len(set(sids)) == len(sids) and set(sids) == set(images)
    for r in records:
        im = images[int(r["image/source_id"][0])]
        w, h = r["image/width"][0], r["image/height"][0]
        assert (im["file_name"], im["width"], im["height"]) == (
            r["image/filename"][0].decode(), w, h)
        assert Image.open(io.BytesIO(r["image/encoded"][0])).format == "JPEG"
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        boxes = np.stack([np.array(r["image/object/bbox/xmin"]) * w,
                          np.array(r["image/object/bbox/ymin"]) * h,
                          (np.array(r["image/object/bbox/xmax"]) -
                           np.array(r["image/object/bbox/xmin"])) * w,
                          (np.array(r["image/object/bbox/ymax"]) -
                           np.array(r["image/object/bbox/ymin"])) * h], -1).reshape(-1, 4)
        np.testing.assert_allclose(boxes, np.array([a["bbox"] for a in anns]).reshape(-1, 4),
                                   atol=1.0)
        assert r["image/object/class/label"] == [a["category_id"] for a in anns]
        np.testing.assert_allclose(r["image/object/area"], [a["area"] for a in anns])
        assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)
        want = expected[im["file_name"]]
        assert [(a["category_id"], a["bbox"]) for a in anns] == want
        n = len(want)
        assert len(r["image/object/difficult"]) == len(r["image/object/truncated"]) == n
        assert r["image/object/view"] == [b"Unspecified"] * n
        assert r["image/object/is_crowd"] == [0] * n
    assert {im["file_name"] for im in gt["images"]} == set(expected)


def test_round_trip_voc2012(voc, tmp_path):
    summary, records, gt = _convert(voc, tmp_path)
    assert len(records) == summary.images_written == NUM_TRAIN and summary.num_problems == 0
    _check_records_against_json(records, gt, _gt_by_file(voc, ["VOC2012"]))
    assert gt["categories"] == [{"supercategory": "none", "id": i, "name": n}
                                for i, n in sample_dataset.SHAPE_LABEL_MAP.items()]
    assert [im["id"] for im in gt["images"]] == list(range(1, NUM_TRAIN + 1))
    assert summary.json_file == str(tmp_path / "tfrecord" / "json_pascal.json")
    assert summary.boxes_written == len(gt["annotations"])
    texts = {t for r in records for t in r["image/object/class/text"]}
    assert texts <= {b"circle", b"square", b"triangle"}


def test_merged_years_have_unique_ids_matching_the_json(tmp_path):
    voc = sample_dataset.write_voc(str(tmp_path / "data"), NUM_IMAGES, seed=4,
                                   years=("VOC2007", "VOC2012"))
    summary, records, gt = _convert(voc, tmp_path, year="merged", num_shards=4)
    assert len(records) == 2 * NUM_TRAIN == len(gt["images"])
    _check_records_against_json(records, gt, _gt_by_file(voc, ["VOC2007", "VOC2012"]))
    ids = sorted(int(r["image/source_id"][0]) for r in records)
    assert ids == list(range(1, 2 * NUM_TRAIN + 1))
    names = {im["id"]: im["file_name"] for im in gt["images"]}
    years_with_annotations = {"2012" if names[a["image_id"]].startswith("2012_") else "2007"
                              for a in gt["annotations"]}
    assert years_with_annotations == {"2007", "2012"}
    # Categories once, no background entry (the reference duplicated them per year).
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
    assert len(glob.glob(str(tmp_path / "tfrecord" / "pascal-*-of-00004.tfrecord"))) == 4


def test_png_input(tmp_path):
    voc = sample_dataset.write_voc(str(tmp_path / "data"), 4, seed=5, image_format="png")
    summary, records, gt = _convert(voc, tmp_path, set_name="trainval")
    assert len(records) == 4 and summary.notes["reencoded_png_to_jpeg"] == 4
    _check_records_against_json(records, gt, _gt_by_file(voc, ["VOC2012"], set_name="trainval"))
    assert all(r["image/filename"][0].endswith(b".png") for r in records)


def test_ignore_difficult_instances(voc, tmp_path):
    expected = _gt_by_file(voc, ["VOC2012"], drop_difficult=True)
    n_difficult = sum(len(v) for v in _gt_by_file(voc, ["VOC2012"]).values()) - sum(
        len(v) for v in expected.values())
    assert n_difficult > 0, "the sample must have difficult objects"
    summary, records, gt = _convert(voc, tmp_path, ignore_difficult_instances=True)
    _check_records_against_json(records, gt, expected)
    assert summary.notes["difficult_ignored"] == n_difficult
    assert all(d == 0 for r in records for d in r["image/object/difficult"])
    _, records_all, _ = _convert(voc, tmp_path / "all")
    assert sum(d for r in records_all for d in r["image/object/difficult"]) == n_difficult


def test_num_images_limits_each_year(tmp_path):
    voc = sample_dataset.write_voc(str(tmp_path / "data"), NUM_IMAGES, seed=6,
                                   years=("VOC2007", "VOC2012"))
    summary, records, gt = _convert(voc, tmp_path, year="merged", num_images=2)
    assert len(records) == 4 and summary.images_seen == 4
    assert sorted(im["file_name"][:4] for im in gt["images"]) == ["0000", "0000", "2012",
                                                                   "2012"]


def test_default_shards_on_a_small_dataset_are_not_empty(voc, tmp_path):
    summary, records, _ = _convert(voc, tmp_path)  # default num_shards=100
    files = sorted(glob.glob(str(tmp_path / "tfrecord" / "pascal-*.tfrecord")))
    assert len(files) == NUM_TRAIN and files[0].endswith("pascal-00000-of-00006.tfrecord")
    assert all(len(tfrecord_util.read_examples(f)) == 1 for f in files)


def test_an_earlier_conversion_is_replaced_only_when_asked(voc, tmp_path):
    _convert(voc, tmp_path, num_shards=2)
    out = tmp_path / "tfrecord"
    json_file = out / "json_pascal.json"
    json_file.write_text("{}")  # stands for an earlier json the user edited
    shards = sorted(glob.glob(str(out / "pascal-*.tfrecord")))
    before = {f: open(f, "rb").read() for f in shards}
    with pytest.raises(errors.OutputError) as e:
        _convert(voc, tmp_path, num_shards=2)
    assert str(e.value).startswith(f"--output_path '{out}/pascal': '{shards[0]}' and 2 more "
                                   f"already exist; pass --overwrite to replace them")
    json_file.unlink()
    with pytest.raises(errors.OutputError, match="'.*pascal-00000-of-00002.tfrecord' and 1 more "
                                                 "of an earlier conversion with another shard "
                                                 "count"):
        _convert(voc, tmp_path, num_shards=3, overwrite=True)
    assert {f: open(f, "rb").read() for f in shards} == before
    with open(voc.label_map_file) as f:  # a label map kept where the json goes
        json_file.write_text(f.read())
    with pytest.raises(errors.OutputError, match="is an input of this run "
                                                 r"\(--label_map_json_path\)"):
        _convert(voc, tmp_path, num_shards=2, overwrite=True, label_map_json_path=str(json_file))
    summary, records, gt = _convert(voc, tmp_path, num_shards=2, overwrite=True)
    assert len(records) == NUM_TRAIN and len(gt["images"]) == NUM_TRAIN
    assert sorted(os.listdir(out)) == ["json_pascal.json", "pascal-00000-of-00002.tfrecord",
                                       "pascal-00001-of-00002.tfrecord"]


def test_builtin_voc_map_and_aeroplane_list_fallback(tmp_path):
    voc = sample_dataset.write_voc(str(tmp_path / "data"), NUM_IMAGES, seed=3,
                                   voc_class_names=True)
    os.remove(os.path.join(voc.data_dir, "VOC2012", "ImageSets", "Main", "train.txt"))
    summary, records, gt = _convert(voc, tmp_path, label_map_json_path=None)
    assert len(records) == NUM_TRAIN and summary.num_problems == 0
    assert [c["id"] for c in gt["categories"]] == list(range(1, 21))
    assert {t for r in records for t in r["image/object/class/text"]} <= {
        b"aeroplane", b"bicycle", b"bird"}


# -------------------------------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------------------------------
def _xml_path(voc, name):
    return os.path.join(voc.data_dir, "VOC2012", "Annotations", name + ".xml")


def _first_with_objects(voc):
    _, names = pascal.read_image_list(voc.data_dir, "VOC2012", "train")
    for info in voc.images["VOC2012"]:
        stem = os.path.splitext(info.file_name)[0]
        if stem in names and info.objects:
            return stem, info
    raise AssertionError("no image with objects")


def _edit_xml(path, old, new, count=1):
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new, count))


def _degenerate(voc):
    stem, info = _first_with_objects(voc)
    o = info.objects[0]
    _edit_xml(_xml_path(voc, stem), f"<xmax>{o.box[0] + o.box[2]}</xmax>",
              f"<xmax>{o.box[0]}</xmax>")
    return "degenerate_box", _xml_path(voc, stem), "object 0 '", stem, 0, 1


def _out_of_image(voc):
    stem, info = _first_with_objects(voc)
    o = info.objects[0]
    _edit_xml(_xml_path(voc, stem), f"<xmax>{o.box[0] + o.box[2]}</xmax>",
              f"<xmax>{info.width + 10}</xmax>")
    return "box_out_of_image", _xml_path(voc, stem), "object 0 '", stem, 0, 1


def _unknown_class(voc):
    stem, info = _first_with_objects(voc)
    name = sample_dataset.SHAPE_LABEL_MAP[info.objects[0].class_id]
    _edit_xml(_xml_path(voc, stem), f"<name>{name}</name>", "<name>hexagon</name>")
    return "unknown_class", _xml_path(voc, stem), "object 0 'hexagon'", stem, 0, 1


def _malformed_box(voc):
    stem, info = _first_with_objects(voc)
    _edit_xml(_xml_path(voc, stem), f"<ymin>{info.objects[0].box[1]}</ymin>", "<ymin>n/a</ymin>")
    return "malformed_annotation", _xml_path(voc, stem), "object 0 '", stem, 0, 1


def _corrupt_image(voc):
    stem, info = _first_with_objects(voc)
    path = os.path.join(voc.data_dir, "VOC2012", "JPEGImages", info.file_name)
    with open(path, "r+b") as f:
        f.truncate(150)
    return "unreadable_image", path, f"image '{stem}' (VOC2012)", stem, 1, 0


def _missing_xml(voc):
    # Without its xml the converter cannot know the image's boxes: they are lost, not counted.
    stem, info = _first_with_objects(voc)
    os.remove(_xml_path(voc, stem))
    return ("missing_annotation_file", _xml_path(voc, stem), f"image '{stem}' (VOC2012)", stem,
            1, len(info.objects))


def _broken_xml(voc):
    stem, info = _first_with_objects(voc)
    _edit_xml(_xml_path(voc, stem), "</annotation>", "")
    return ("bad_annotation_file", _xml_path(voc, stem), f"image '{stem}' (VOC2012)", stem, 1,
            len(info.objects))


def _size_mismatch(voc):
    stem, info = _first_with_objects(voc)
    _edit_xml(_xml_path(voc, stem), f"<width>{info.width}</width>",
              f"<width>{info.width + 1}</width>")
    return ("image_size_mismatch", _xml_path(voc, stem), f"image '{stem}' (VOC2012)", stem, 1,
            0)


def _duplicate(voc):
    stem, _ = _first_with_objects(voc)
    list_file = os.path.join(voc.data_dir, "VOC2012", "ImageSets", "Main", "train.txt")
    with open(list_file, "a") as f:
        f.write(stem + "\n")
    return "duplicate_image_id", list_file, f"image '{stem}' (line {NUM_TRAIN + 1})", stem, 0, 0


BAD_CASES = {f.__name__[1:]: f for f in (
    _degenerate, _out_of_image, _unknown_class, _malformed_box, _corrupt_image, _missing_xml,
    _broken_xml, _size_mismatch, _duplicate)}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_skipped_counted_and_named(voc, tmp_path, case):
    reason, file, item, stem, images_lost, boxes_lost = BAD_CASES[case](voc)
    summary, records, gt = _convert(voc, tmp_path)
    assert summary.problems[reason] == 1
    msg = summary.first_message[reason]
    assert msg.startswith(f"{file}: ") and item in msg and stem in msg
    assert len(records) == summary.images_written == NUM_TRAIN - images_lost == len(gt["images"])
    total = sum(len(v) for v in _gt_by_file(voc, ["VOC2012"]).values())
    assert summary.boxes_written == len(gt["annotations"]) == (
        total - boxes_lost - summary.boxes_in_skipped_images)
    assert sorted(int(r["image/source_id"][0]) for r in records) == sorted(
        im["id"] for im in gt["images"])


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_fail_policy_raises_one_clear_line(voc, tmp_path, case):
    reason, file, item, stem, _, _ = BAD_CASES[case](voc)
    with pytest.raises(errors.DataError) as e:
        _convert(voc, tmp_path, on_error="fail")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{file}: ") and item in msg
    assert f"[{reason}]" in msg and "--on_error=skip" in msg
    out = tmp_path / "tfrecord"
    assert not out.exists() or os.listdir(out) == []  # no shards, no json


def test_too_many_instances(voc, tmp_path):
    expected = _gt_by_file(voc, ["VOC2012"])
    crowded = [f for f, objs in expected.items() if len(objs) > 2]
    assert crowded
    summary, records, gt = _convert(voc, tmp_path, max_instances_per_image=2)
    assert summary.problems["too_many_instances"] == len(crowded)
    assert len(records) == NUM_TRAIN - len(crowded)
    assert os.path.splitext(crowded[0])[0] in summary.first_message["too_many_instances"]


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_are_converted(voc, tmp_path, mode):
    stem, info = _first_with_objects(voc)
    path = os.path.join(voc.data_dir, "VOC2012", "JPEGImages", info.file_name)
    Image.open(path).convert(mode).save(path, format="JPEG")
    summary, records, gt = _convert(voc, tmp_path)
    assert len(records) == NUM_TRAIN and summary.num_problems == 0
    assert summary.notes[f"converted_to_rgb_from_{mode}"] == 1
    assert stem in summary.note_examples[f"converted_to_rgb_from_{mode}"][0]
    _check_records_against_json(records, gt, _gt_by_file(voc, ["VOC2012"]))
    assert all(Image.open(io.BytesIO(r["image/encoded"][0])).mode == "RGB" for r in records)


def test_usage_errors_name_the_flag(voc, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(errors.UsageError, match="--data_dir and --year"):
        pascal.create_pascal_tfrecord(_options(voc, out, year="VOC2007"), progress=False)
    with pytest.raises(errors.UsageError, match="--set=test.*aeroplane_test.txt"):
        pascal.create_pascal_tfrecord(_options(voc, out, set="test", year="VOC2012"),
                                      progress=False)
    with pytest.raises(errors.UsageError, match="--set must be one of"):
        pascal.create_pascal_tfrecord(_options(voc, out, set="training"), progress=False)
    with pytest.raises(errors.UsageError, match="--label_map_json_path"):
        pascal.create_pascal_tfrecord(_options(
            voc, out, year="VOC2012", label_map_json_path=str(tmp_path / "nope.json")),
            progress=False)
    with pytest.raises(errors.UsageError, match="--output_path is required"):
        pascal.create_pascal_tfrecord(_options(voc, ""), progress=False)


def test_seed_readme_command_works_as_written(tmp_path):
    """`PYTHONPATH=".:$PYTHONPATH" python dataset/create_pascal_tfrecord.py --data_dir=VOCdevkit
    --year=VOC2012 --output_path=tfrecord/pascal`, run from a directory laid out like the repo
    (dataset/ linked in), with VOC class names so the built-in label map applies."""
    voc = sample_dataset.write_voc(str(tmp_path), NUM_IMAGES, seed=7, voc_class_names=True)
    assert voc.data_dir == str(tmp_path / "VOCdevkit")
    os.symlink(os.path.join(REPO, "dataset"), tmp_path / "dataset")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = "." + os.pathsep + os.environ.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "dataset/create_pascal_tfrecord.py", "--data_dir=VOCdevkit",
         "--year=VOC2012", "--output_path=tfrecord/pascal"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(glob.glob(str(tmp_path / "tfrecord" / "pascal*.tfrecord")))
    assert len(files) == NUM_TRAIN  # default num_shards=100, reduced: no empty shard
    records = tfrecord_util.read_examples(str(tmp_path / "tfrecord" / "pascal*.tfrecord"))
    with open(tmp_path / "tfrecord" / "json_pascal.json") as f:
        gt = json.load(f)
    assert sorted(int(r["image/source_id"][0]) for r in records) == [
        im["id"] for im in gt["images"]] == list(range(1, NUM_TRAIN + 1))
    assert "ground-truth json: tfrecord/json_pascal.json" in proc.stdout
    # the log is the converter's own: TF's CUDA probes on a CPU machine are filtered out
    assert "Unable to register" not in proc.stderr and "cuda" not in proc.stderr.lower()

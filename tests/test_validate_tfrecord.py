"""Tests for dataset/validate_tfrecord.py (and the record checks in dataset/validation.py)."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from PIL import Image

from conftest import ONE_BOX, record_values, write_records
from dataset import create_coco_tfrecord, sample_dataset, tfrecord_util, validate_tfrecord
from errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(width=40, height=30, mode="RGB"):
    return tfrecord_util.encode_jpeg(Image.new(mode, (width, height), 128))


def _options(path, hparams):
    return validate_tfrecord.ValidateOptions(file_pattern=path, model_name="efficientdet-d0",
                                             hparams=hparams)


# (index in the file, source_id, reason) of each bad record; the others are good.
BAD = [
    (1, "11", "box_label_count_mismatch"),
    (2, "12", "degenerate_box"),
    (3, "13", "box_out_of_image"),
    (4, "14", "class_id_out_of_range"),
    (5, "15", "class_id_out_of_range"),
    (6, "16", "too_many_instances"),
    (7, "17", "unreadable_image"),
    (8, "10", "duplicate_image_id"),
    (9, "abc", "bad_source_id"),
    (10, "19", "image_size_mismatch"),
    (11, "20", "missing_key"),
]


def _bad_file(tmp_path):
    four = [(0.1, 0.1, 0.2, 0.2)] * 4
    records = [
        record_values(10),
        record_values(11, labels=(1, 2), boxes=[ONE_BOX]),  # 1 box, 2 labels
        record_values(12, boxes=[(0.1, 0.5, 0.4, 0.3)]),  # xmax < xmin
        record_values(13, boxes=[(0.1, 0.2, 0.5, 1.2)]),  # xmax past the right edge
        record_values(14, labels=(0,)),  # 0 is not a class
        record_values(15, labels=(5,)),  # > num_classes=3
        record_values(16, boxes=four, labels=(1, 2, 3, 1)),  # > max_instances=3
        record_values(17, encoded=b"\xff\xd8 not really a jpeg"),
        record_values(10),  # duplicate source id
        record_values("abc"),
        record_values(19, width=50),  # the encoded image is 40 wide
        record_values(20, encoded=b"", **{"image/encoded": None}),
        record_values(21, encoded=_jpeg(mode="L")),  # grayscale: a note, not an error
        record_values(22, boxes=(), labels=()),  # no objects is fine
    ]
    return write_records(tmp_path / "bad.tfrecord", records)


def test_every_bad_record_is_reported_with_file_index_and_source_id(tmp_path):
    path = _bad_file(tmp_path)
    report = validate_tfrecord.validate_tfrecords(path, num_classes=3, max_instances_per_image=3)
    assert report.num_records == 14 and report.bad_records == len(BAD)
    assert report.good_records == 3 and not report.ok
    found = {(p.item, p.reason) for p in report.problems}
    for index, sid, reason in BAD:
        assert (f"record {index} (source_id {sid})", reason) in found, (index, reason)
    assert len(report.problems) == len(BAD)
    for p in report.problems:
        assert str(p).startswith(f"{path}: record ")
    assert report.notes["image mode L, not RGB"] == 1
    text = report.format()
    assert text.splitlines()[0].startswith(f"{path}: record 1 (source_id 11): per-object lists")
    assert "good: 3, with problems: 11" in text and "PROBLEMS FOUND" in text
    assert "first seen at" in next(p.detail for p in report.problems
                                   if p.reason == "duplicate_image_id")


def test_config_supplies_num_classes_and_max_instances(tmp_path):
    path = write_records(tmp_path / "r.tfrecord", [
        record_values(1, labels=(3,)),
        record_values(2, boxes=[(0.1, 0.1, 0.2, 0.2)] * 3, labels=(1, 1, 1))])
    ok = validate_tfrecord.validate_with_config(_options(path, "num_classes=3"))
    assert ok.ok and ok.good_records == 2 and "num_classes=3" in ok.format()
    bad = validate_tfrecord.validate_with_config(
        _options(path, "num_classes=2,max_instances_per_image=2"))
    assert sorted(p.reason for p in bad.problems) == ["class_id_out_of_range",
                                                      "too_many_instances"]
    with pytest.raises(UsageError, match="--model_name/--hparams"):
        validate_tfrecord.validate_with_config(_options(path, "num_clases=2"))


def test_label_map_from_the_config_is_checked(tmp_path):
    path = write_records(tmp_path / "r.tfrecord",
                         [record_values(1, labels=(2,)), record_values(2, labels=(3,))])
    report = validate_tfrecord.validate_tfrecords(path, num_classes=3,
                                                  label_map={1: "circle", 2: "square"})
    assert [(p.item, p.reason) for p in report.problems] == [
        ("record 1 (source_id 2)", "label_not_in_label_map")]
    ok = validate_tfrecord.validate_with_config(_options(path, "num_classes=20,label_map=voc"))
    assert ok.ok and ok.good_records == 2


def test_converter_output_passes(tmp_path):
    sample = sample_dataset.write_coco(str(tmp_path / "data"), 6, seed=0)
    create_coco_tfrecord.create_coco_tfrecord(create_coco_tfrecord.ConvertOptions(
        image_dir=sample.image_dir, output_file_prefix=str(tmp_path / "rec" / "train"),
        object_annotations_file=sample.instances_file, num_shards=2, num_threads=1),
        progress=False)
    report = validate_tfrecord.validate_tfrecords(str(tmp_path / "rec" / "train-*"), 90)
    assert report.ok and report.num_records == 6 and len(report.files) == 2
    assert report.format().endswith("OK")


def test_truncated_file_is_reported_at_the_bad_record(tmp_path):
    path = write_records(tmp_path / "t.tfrecord", [record_values(i) for i in range(1, 4)])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 20)
    good = write_records(tmp_path / "u.tfrecord", [record_values(9)])
    report = validate_tfrecord.validate_tfrecords(f"{path},{good}", num_classes=3)
    assert [p.reason for p in report.problems] == ["corrupt_record"]
    assert report.problems[0].file == path and report.problems[0].item == "record 2"
    # 2 good records before the break, the broken tail, and the one record of u.tfrecord.
    assert report.num_records == 4 and report.good_records == 3 and report.bad_records == 1


def test_empty_and_missing_patterns_are_clear(tmp_path):
    with pytest.raises(UsageError, match="--file_pattern is required"):
        validate_tfrecord.validate_with_config(validate_tfrecord.ValidateOptions())
    with pytest.raises(UsageError, match="--file_pattern is empty"):
        validate_tfrecord.validate_tfrecords("", num_classes=3)
    with pytest.raises(UsageError, match="matches no file"):
        validate_tfrecord.validate_tfrecords(str(tmp_path / "none-*"), num_classes=3)
    empty = write_records(tmp_path / "empty.tfrecord", [])
    with pytest.raises(UsageError, match="every matching file is empty"):
        validate_tfrecord.validate_tfrecords(empty, num_classes=3)


def test_cli_reports_problems_and_exit_codes(tmp_path):
    path = _bad_file(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, "dataset/validate_tfrecord.py", f"--file_pattern={path}",
         "--model_name=efficientdet-d0", "--hparams=num_classes=3,max_instances_per_image=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == validate_tfrecord.PROBLEMS_FOUND == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{path}: record ")]
    assert len(lines) == len(BAD)
    assert "(source_id 15): box 0: class id 5 is outside 1..num_classes=3" in proc.stdout


# -------------------------------------------------------------------------------------------------
# One verdict: the validator, the converters, training and eval apply the same rules
# -------------------------------------------------------------------------------------------------
def _graph_verdict(values, training):
    """True when the input pipeline's checks pass the record (dataloader.parse_record)."""
    import dataloader

    serialized = tfrecord_util.make_example(values).SerializeToString()
    try:
        dataloader.parse_record(tf.constant(serialized), 3, 100, require_source_id=not training)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def _trainer_verdict(path, training):
    """True when main.py's up-front record checks pass the file (training, or eval)."""
    import errors
    import record_checks
    from conftest import tiny_config
    from run_options import RunOptions

    opts = RunOptions(training_file_pattern=path, validation_file_pattern=path, eval_samples=10)
    check = (record_checks.check_training_records if training
             else record_checks.check_eval_records)
    try:
        check(tiny_config(), opts, [path])
    except errors.DataError:
        return False
    return True


# Bad records, (name, record values): the validator, training's up-front sample and the input
# pipeline must each refuse every one of them, and pass the good one.
BAD_RECORDS = [
    ("xmax 5.0", record_values(1, boxes=[(0.1, 0.1, 0.5, 5.0)])),
    ("ymin below 0", record_values(1, boxes=[(-0.2, 0.1, 0.5, 0.5)])),
    ("xmin after xmax", record_values(1, boxes=[(0.1, 0.6, 0.5, 0.2)])),
    ("zero height", record_values(1, boxes=[(0.3, 0.1, 0.3, 0.5)])),
    ("nan", record_values(1, boxes=[(float("nan"), 0.1, 0.5, 0.5)])),
    ("label 0", record_values(1, labels=(0,))),
    ("label above num_classes", record_values(1, labels=(4,))),
    ("two labels, one box", record_values(1, labels=(1, 2), boxes=[ONE_BOX])),
    ("two texts, one box", record_values(1, **{"image/object/class/text": ["a", "b"]})),
    ("is_crowd of another length", record_values(1, **{"image/object/is_crowd": [0, 0]})),
    ("too many instances", record_values(1, boxes=[(0.1, 0.1, 0.2, 0.2)] * 101, labels=[1] * 101)),
    ("source id not numeric", record_values("a.jpg")),
    ("source id negative", record_values("-3")),
]


GOOD_RECORDS = [
    ("good", record_values(1)),
    ("good, half a pixel out", record_values(1, boxes=[(0.1, 0.1, 0.5, 1.01)])),
    ("good, an empty is_crowd list", record_values(1, **{"image/object/is_crowd": []})),
    ("good, no objects", record_values(1, boxes=(), labels=())),
]


@pytest.mark.parametrize("name, values", BAD_RECORDS + GOOD_RECORDS,
                         ids=[n for n, _ in BAD_RECORDS + GOOD_RECORDS])
def test_the_validator_and_training_give_a_record_one_verdict(tmp_path, name, values):
    path = write_records(tmp_path / "r.tfrecord", [values])
    verdicts = {
        "validator": validate_tfrecord.validate_tfrecords(path, num_classes=3).ok,
        "main.py's up-front sample": _trainer_verdict(path, training=True),
        "input pipeline": _graph_verdict(values, training=True),
    }
    assert set(verdicts.values()) == {name.startswith("good")}, verdicts

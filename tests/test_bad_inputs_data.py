"""Bad data as users make it, through every command line that reads it: main.py (eval and
training on bad records and jsons), model_inspect.py (an export's classes), the two converters
and the validator. Each case asserts the exit status, one error line naming the cause, and that
no file that existed before changed (tests/badinput.py).

A case is (id, setup, arguments, expected status, pattern of the error line). `setup(d)`
damages or adds input files before the snapshot is taken; arguments are formatted with `d`:
`{train}` / `{val}` (two VOC splits converted separately, each numbered from 1, with its own
json_pascal.json; 3 classes), `{voc}` (their VOCdevkit), `{coco}` (a COCO sample: images/ and
annotations/), `{model}` (a 3-class checkpoint directory with config.yaml) and `{tmp}` (the
case's own empty directory).
"""

import json
import os
import shutil

import pytest
import tensorflow as tf

import trainer
from badinput import (
    check,
    run_coco_converter,
    run_inspect,
    run_main,
    run_pascal_converter,
    run_validator,
    snapshot,
)
from conftest import street, tiny_hparams
from dataset import create_pascal_tfrecord, sample_dataset, tfrecord_util

NAMES = {1: "circle", 2: "square", 3: "triangle"}


# -------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Made once: a VOC sample (shape names, 24 images) converted as two splits, train (2
    shards) and val (1 shard), each with its json; and a COCO sample of 6 images."""
    root = tmp_path_factory.mktemp("data_sources")
    voc = sample_dataset.write_voc(str(root), 24)
    for split, shards in (("train", 2), ("val", 1)):
        create_pascal_tfrecord.create_pascal_tfrecord(create_pascal_tfrecord.ConvertOptions(
            data_dir=voc.data_dir, output_path=str(root / split / "pascal"), set=split,
            year="VOC2012", label_map_json_path=voc.label_map_file, num_shards=shards,
            num_threads=1), progress=False)
    sample_dataset.write_coco(str(root / "cocodata"), 6, seed=1)
    return root


@pytest.fixture
def d(world, sources):
    """The world (tests/conftest.py) plus a copy of `sources` under its root."""
    root = os.path.join(world["root"], "data_copy")
    shutil.copytree(sources, root)
    return dict(world, train=os.path.join(root, "train"), val=os.path.join(root, "val"),
                voc=os.path.join(root, "VOCdevkit"), coco=os.path.join(root, "cocodata", "coco"))


def _format(args, d):
    return [a.format(**d) for a in args]


def _load(path):
    with open(path) as f:
        return json.load(f)


def _save(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def _write_records(path, records):
    with tf.io.TFRecordWriter(path) as w:
        for values in records:
            w.write(tfrecord_util.make_example(values).SerializeToString())


def _edited(d, edit, split="val", name="bad-00000-of-00001.tfrecord"):
    """The split's records, `edit(index, values)` applied in place, as {tmp}/<name>."""
    records = tfrecord_util.read_examples(os.path.join(d[split], "pascal-*.tfrecord"))
    for i, values in enumerate(records):
        edit(i, values)
    _write_records(os.path.join(d["tmp"], name), records)


def _first(change):
    """An edit that applies `change(values)` to record 0 only."""
    return lambda i, values: change(values) if i == 0 else None


def _set(key, value):
    return _first(lambda values: values.__setitem__(key, value))


def _with_boxes(values, boxes, labels=None):
    for k, key in enumerate(tfrecord_util.BBOX_KEYS):
        values[key] = [b[k] for b in boxes]
    n = len(boxes)
    values["image/object/class/label"] = labels or [1] * n
    for key in ("image/object/class/text", "image/object/difficult", "image/object/truncated",
                "image/object/view", "image/object/area", "image/object/is_crowd"):
        values[key] = {"image/object/class/text": [b"circle"] * n,
                       "image/object/view": [b""] * n,
                       "image/object/area": [10.0] * n}.get(key, [0] * n)


def _box(ymin, xmin, ymax, xmax, labels=None):
    return _first(lambda v: _with_boxes(v, [(ymin, xmin, ymax, xmax)], labels))


def _json(split, change):
    """A setup that edits the split's json_pascal.json with `change(data)`."""
    def setup(d):
        path = os.path.join(d[split], "json_pascal.json")
        data = _load(path)
        change(data)
        _save(path, data)
    return setup


def _image(index, **fields):
    return lambda data: data["images"][index].update(fields)


# -------------------------------------------------------------------------------------------------
# main.py: eval checks that records and ground truth describe the same images
# -------------------------------------------------------------------------------------------------
EVAL = ["--mode=eval", "--model_dir={model}", "--eval_samples=100"]
VAL = "--validation_file_pattern={val}/pascal*.tfrecord"
BAD = "--validation_file_pattern={tmp}/bad*.tfrecord"
VAL_JSON = "--val_json_file={val}/json_pascal.json"
TRAIN_JSON = "--val_json_file={train}/json_pascal.json"
TRAIN = ["--mode=train", "--model_dir={tmp}/m", "--train_batch_size=2",
         "--num_examples_per_epoch=4", "--num_epochs=1", f"--hparams={tiny_hparams(num_classes=3)}"]
TRAIN_BAD = "--training_file_pattern={tmp}/bad*.tfrecord"
OTHER_SPLIT = (r"val/pascal-00000-of-00001\.tfrecord record 0: image/source_id 1 names image 1 "
               r"of --val_json_file=.*train/json_pascal\.json, which is \d+x\d+ \(WxH\) there "
               r"but \d+x\d+ in the record: the records and the json describe different images; "
               r"the records were made with .*val/json_pascal\.json: pass --val_json_file=")


def _nothing(d):
    pass


def _drop_source_ids(i, values):
    values.pop("image/source_id")


def _truncate(d):
    _edited(d, lambda i, v: None)
    path = os.path.join(d["tmp"], "bad-00000-of-00001.tfrecord")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 30)


def _second_generation(split):
    def setup(d):
        records = tfrecord_util.read_examples(os.path.join(d[split], "pascal-*.tfrecord"))
        _write_records(os.path.join(d[split], "pascal-00000-of-00003.tfrecord"), records[:2])
    return setup


MAIN_CASES = [
    # Another split's json: same ids 1..N, other images.
    ("eval-other-split-json", _nothing, EVAL + [VAL, TRAIN_JSON], 1, OTHER_SPLIT),
    ("train_and_eval-other-split-json", _nothing,
     TRAIN[1:] + ["--mode=train_and_eval", "--training_file_pattern={train}/pascal*.tfrecord",
                  VAL, TRAIN_JSON], 1, OTHER_SPLIT),
    ("eval_after_training-other-split-json", _nothing,
     TRAIN + ["--training_file_pattern={train}/pascal*.tfrecord", "--eval_after_training",
              VAL, TRAIN_JSON], 1, OTHER_SPLIT),
    ("json-lacks-the-id", _json("val", lambda data: data["images"].pop(0)),
     EVAL + [VAL, VAL_JSON], 1,
     r"record 0: image/source_id 1 is not an image id of --val_json_file=.*val/json_pascal\.json "
     r"\(its ids run 2\.\.6\); pass the json the records were made with"),
    ("json-width-differs", _json("val", _image(0, width=999)), EVAL + [VAL, VAL_JSON], 1,
     r"image/source_id 1 names image 1 of .*which is 999x\d+ \(WxH\) there but \d+x\d+ in the "
     r"record"),
    ("json-height-differs", _json("val", _image(0, height=7)), EVAL + [VAL, VAL_JSON], 1,
     r"which is \d+x7 \(WxH\) there but"),
    ("json-file-name-differs", _json("val", _image(0, file_name="other.jpg")),
     EVAL + [VAL, VAL_JSON], 1, r"which is 'other\.jpg' there but '2012_\d+\.jpg' in the record"),
    ("json-ids-are-strings",
     _json("val", lambda data: [im.update(id=str(im["id"])) for im in data["images"]]),
     EVAL + [VAL, VAL_JSON], 1, r"image/source_id 1 is not an image id of"),
    ("json-images-null", _json("val", lambda data: data.update(images=None)),
     EVAL + [VAL, VAL_JSON], 1, r"json_pascal\.json has no 'images' list"),
    ("json-not-json", lambda d: open(os.path.join(d["val"], "json_pascal.json"), "w").write("{"),
     EVAL + [VAL, VAL_JSON], 1, r"json_pascal\.json is not valid json"),
    ("json-missing", _nothing, EVAL + [VAL, "--val_json_file={tmp}/none.json"], 1,
     r"--val_json_file=.*none\.json does not exist"),
    ("json-is-a-directory", _nothing, EVAL + [VAL, "--val_json_file={val}"], 1,
     r"--val_json_file=.*val is a directory; pass the instances json file in it"),
    # Records eval cannot match with ground truth.
    ("no-source-id", lambda d: _edited(d, _drop_source_ids), EVAL + [BAD], 1,
     r"bad-00000-of-00001\.tfrecord: record 0 \(source_id <empty>\): missing or empty key\(s\) "
     r"\['image/source_id'\]"),
    ("no-source-id-with-json", lambda d: _edited(d, _drop_source_ids), EVAL + [BAD, VAL_JSON], 1,
     r"record 0 \(source_id <empty>\): missing or empty key\(s\) \['image/source_id'\]"),
    ("no-source-id-testdev", lambda d: _edited(d, _drop_source_ids),
     EVAL + [BAD, "--testdev_dir={tmp}/testdev"], 1, r"missing or empty key\(s\)"),
    ("one-record-without-id", lambda d: _edited(d, lambda i, v: i == 3 and _drop_source_ids(i, v)),
     EVAL + [BAD, VAL_JSON], 1, r"record 3 \(source_id <empty>\): missing"),
    ("source-id-not-numeric", lambda d: _edited(d, _set("image/source_id", [b"img-1"])),
     EVAL + [BAD], 1, r"record 0 \(source_id img-1\): image/source_id 'img-1' is not an integer "
                      r"written in digits \[bad_source_id\]"),
    ("source-id-negative", lambda d: _edited(d, _set("image/source_id", [b"-5"])),
     EVAL + [BAD], 1, r"image/source_id '-5' is not an integer written in digits"),
    ("source-id-too-large", lambda d: _edited(d, _set("image/source_id", [b"16777217"])),
     EVAL + [BAD], 1, r"image/source_id 16777217 is outside 0\.\.16777216"),
    ("source-id-duplicate", lambda d: _edited(d, _set("image/source_id", [b"2"])),
     EVAL + [BAD], 1,
     r"record 1 \(source_id 2\): duplicate image id '2' \(first seen at .*record 0\)"),
    ("eval-records-truncated", _truncate, EVAL + [BAD], 1,
     r"bad-00000-of-00001\.tfrecord: record 5 is truncated: .*re-create"),
    ("eval-two-shard-generations", _second_generation("val"), EVAL + [VAL, VAL_JSON], 1,
     r"--validation_file_pattern=.* matches two generations of the shards .*val/pascal-\*: "
     r"1 file\(s\) -of-00001 .* and 1 newer file\(s\) -of-00003 .*every image would be read "
     r"twice"),
    ("eval-box-outside", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 5.0)), EVAL + [BAD], 1,
     r"record 0 \(source_id 1\): box 0 .*xmax=5.* outside \[0, 1\] \[box_out_of_image\]"),
    # Training reads what validate_tfrecord.py accepts, and each shard generation once.
    ("train-xmax-5", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 5.0)), TRAIN + [TRAIN_BAD], 1,
     r"bad-00000-of-00001\.tfrecord: record 0 \(source_id 1\): box 0 \[ymin=0\.1, xmin=0\.1, "
     r"ymax=0\.5, xmax=5\] \(normalized\) is outside \[0, 1\] \[box_out_of_image\]; to fix: fix "
     r"the box.*validate_tfrecord\.py --file_pattern="),
    ("train-negative-ymin", lambda d: _edited(d, _box(-0.5, 0.1, 0.5, 0.5)),
     TRAIN + [TRAIN_BAD], 1, r"\[box_out_of_image\]"),
    ("train-xmin-after-xmax", lambda d: _edited(d, _box(0.1, 0.6, 0.5, 0.2)),
     TRAIN + [TRAIN_BAD], 1, r"record 0 .*zero or negative size \[degenerate_box\]"),
    ("train-empty-box", lambda d: _edited(d, _box(0.3, 0.1, 0.3, 0.5)), TRAIN + [TRAIN_BAD], 1,
     r"\[degenerate_box\]"),
    ("train-nan-box", lambda d: _edited(d, _box(float("nan"), 0.1, 0.5, 0.5)),
     TRAIN + [TRAIN_BAD], 1, r"is not finite \[malformed_annotation\]"),
    ("train-label-0", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 0.5, labels=[0])),
     # The records' class texts are read first (to name the classes), and their ids go through
     # the one class-id rule (bounds.class_ids): the file and id are named there.
     TRAIN + [TRAIN_BAD], 1, r"bad-00000-of-00001\.tfrecord .*class id 0 but num_classes is 3"),
    ("train-label-above-num-classes", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 0.5, labels=[7])),
     TRAIN + [TRAIN_BAD], 1, r"hold class id 7 but num_classes is 3"),
    ("train-count-mismatch",
     lambda d: _edited(d, _set("image/object/class/label", [1, 2, 3, 1, 2, 3, 1])),
     TRAIN + [TRAIN_BAD], 1, r"per-object lists differ in length.*\[box_label_count_mismatch\]"),
    ("train-too-many-instances",
     lambda d: _edited(d, _first(lambda v: _with_boxes(v, [(0.1, 0.1, 0.2, 0.2)] * 5))),
     TRAIN[:-1] + [f"--hparams={tiny_hparams(num_classes=3, max_instances_per_image=4)}",
                   TRAIN_BAD], 1, r"5 instances, more than max_instances_per_image=4"),
    ("train-source-id-not-numeric", lambda d: _edited(d, _set("image/source_id", [b"a.jpg"])),
     TRAIN + [TRAIN_BAD], 1, r"image/source_id 'a\.jpg' is not an integer"),
    ("train-no-image", lambda d: _edited(d, _set("image/encoded", [])), TRAIN + [TRAIN_BAD], 1,
     r"missing or empty key\(s\) \['image/encoded'\]"),
    ("train-corrupt-image",
     lambda d: _edited(d, lambda i, v: v.__setitem__("image/encoded", [b"not a jpeg"])),
     TRAIN + [TRAIN_BAD], 1, r"bad-00000-of-00001\.tfrecord record \d+ \(image/source_id=\d+\) has "
     r"an image/encoded that is not a JPEG, PNG, GIF or BMP image; check it with "
     r"dataset/validate_tfrecord\.py"),
    ("train-two-shard-generations", _second_generation("train"),
     TRAIN + ["--training_file_pattern={train}/pascal*"], 1,
     r"--training_file_pattern=.* matches two generations of the shards .*train/pascal-\*: 2 "
     r"file\(s\) -of-00002 .* and 1 newer file\(s\) -of-00003.*delete the generation you do "
     r"not want or narrow the pattern to one, e\.g\. --training_file_pattern='.*-of-00003\*'"),
    ("train-generations-in-two-globs", _second_generation("train"),
     TRAIN + ["--training_file_pattern={train}/pascal-*-of-00002*,{train}/pascal-*-of-00003*"],
     1, r"matches two generations"),
]


@pytest.mark.parametrize("case", MAIN_CASES, ids=[c[0] for c in MAIN_CASES])
def test_main_refuses(case, d):
    _, setup, args, status, pattern = case
    setup(d)
    before = snapshot(d["root"])
    outcome = run_main(_format(args, d))
    check(outcome, status, pattern, before, d["root"], may_add=False)


def _trained_copy(model_dir, target):
    """A copy of the test checkpoint's directory whose checkpoint has a global step, as one
    written by training has (eval refuses others)."""
    import numpy as np

    import checkpoint_io

    os.makedirs(target)
    shutil.copy(os.path.join(model_dir, "config.yaml"), target)
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "model.ckpt-0"))
    tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    tensors["global_step"] = np.int64(1)
    prefix = os.path.join(target, "model.ckpt-1")
    checkpoint_io.write_checkpoint(tensors, prefix)
    tf.compat.v1.train.update_checkpoint_state(target, prefix)
    return target


def test_the_right_json_and_records_without_ids_for_training_pass_the_checks(d):
    """The checks refuse only what is wrong: each split with its own json, and training records
    without source ids (training does not use them)."""
    from run_options import RunOptions

    model_dir = _trained_copy(d["model"], os.path.join(d["tmp"], "trained"))
    prepared = trainer.prepare(RunOptions(
        mode="eval", model_dir=model_dir, validation_file_pattern=f"{d['val']}/pascal*",
        val_json_file=f"{d['val']}/json_pascal.json", eval_samples=100))
    assert prepared.eval_set is not None
    _edited(d, _drop_source_ids, split="train")
    prepared = trainer.prepare(RunOptions(
        mode="train", model_dir=os.path.join(d["tmp"], "m"), train_batch_size=2,
        training_file_pattern=os.path.join(d["tmp"], "bad*"), num_examples_per_epoch=4,
        num_epochs=1, hparams=tiny_hparams(num_classes=3)))
    assert prepared.train_files and not os.path.exists(os.path.join(d["tmp"], "m"))


def test_training_checks_the_records_the_sample_did_not_cover(d):
    """Beyond the up-front sample the input pipeline applies the same rules as it reads, and
    training reports its failure in one line naming the record file, index and source id."""
    import dataloader
    from conftest import tiny_config

    records = tfrecord_util.read_examples(os.path.join(d["val"], "pascal-*.tfrecord"))[:1]
    _with_boxes(records[0], [(0.1, 0.1, 0.5, 5.0)])
    path = os.path.join(d["tmp"], "bad-00000-of-00001.tfrecord")
    _write_records(path, records)
    reader = dataloader.InputReader(path, True, tiny_config())
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        next(iter(reader(batch_size=1)))
    error = trainer.attribute_tf_error(raised.value, None)
    assert str(error) == (f"{path} record 0 (image/source_id=1) has box 0 (ymin,xmin,ymax,xmax "
                          f"= 0.1,0.1,0.5,5) outside [0, 1]: boxes are normalized by the image "
                          f"height and width; check it with dataset/validate_tfrecord.py")


# -------------------------------------------------------------------------------------------------
# model_inspect.py: an export carries its model's classes
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def named_export(test_checkpoint, tmp_path_factory):
    """The session's 3-class checkpoint, its classes named circle/square/triangle, exported as
    a SavedModel: its frozen graph and that file's settings are what a user copies away."""
    import export
    from hparams_config import Config

    ckpt_dir, config = test_checkpoint
    named = Config(config.as_dict())
    named.label_map = dict(NAMES)
    root = tmp_path_factory.mktemp("named_export")
    result = export.export_saved_model(named, str(root / "saved_model"), "efficientdet-d0",
                                       ckpt_dir)
    return result.frozen_graph


def _copy_export(path, where, settings=True, edit=None):
    """Copy an exported model file (and its settings, edited by `edit(dict)`) to `where`."""
    import yaml

    import export

    os.makedirs(where, exist_ok=True)
    target = os.path.join(where, os.path.basename(path))
    shutil.copy(path, target)
    if settings:
        values = export.read_export_settings(path)
        if edit:
            edit(values)
        with open(export.settings_path(target), "w") as f:
            yaml.safe_dump(values, f)
    return target


@pytest.fixture
def drawn(monkeypatch):
    """The label maps the runs draw with (visualize.draw_detections' argument)."""
    import visualize

    seen = []
    draw = visualize.draw_detections

    def spy(image, det, label_map, *args, **kwargs):
        seen.append(dict(label_map))
        return draw(image, det, label_map, *args, **kwargs)

    monkeypatch.setattr(visualize, "draw_detections", spy)
    return seen


def _street_jpg(d):
    from PIL import Image

    path = os.path.join(d["tmp"], "street.jpg")
    if not os.path.exists(path):
        Image.fromarray(street(400, 300)).save(path)
    return path


def _infer(model, d, thresh="0.2"):
    """saved_model_infer of `model` on a street photo; a TFLite model keeps its own threshold
    (it cannot go lower)."""
    return ["--runmode=saved_model_infer", f"--saved_model_dir={model}",
            f"--input_image={_street_jpg(d)}", f"--output_image_dir={d['tmp']}/out"] + (
                [f"--min_score_thresh={thresh}"] if thresh else [])


def test_a_copied_export_draws_its_model_names(named_export, d, drawn):
    """The finding: an export outside its model directory (no config.yaml beside it) was drawn
    with COCO names. Its settings now carry the classes, so a copy names them as the checkpoint
    does."""
    copy = _copy_export(named_export, os.path.join(d["tmp"], "elsewhere"))
    args = _infer(copy, d)
    before = snapshot(d["root"])
    outcome = run_inspect(args)
    check(outcome, 0, None, before, d["root"])
    assert drawn and all(labels == NAMES for labels in drawn)
    assert "person" not in outcome.stdout
    assert any(name in outcome.stdout for name in NAMES.values()), outcome.stdout


def test_hparams_label_map_still_renames_a_copied_export(named_export, d, drawn):
    copy = _copy_export(named_export, os.path.join(d["tmp"], "elsewhere"))
    names = os.path.join(d["tmp"], "names.yaml")
    with open(names, "w") as f:
        f.write("1: aeroplane\n2: bicycle\n3: bird\n")
    outcome = run_inspect(_infer(copy, d) + [f"--hparams=label_map={names}"])
    assert outcome.status == 0, outcome.stderr[-2000:]
    assert drawn and drawn[0][1] == "aeroplane"


@pytest.mark.parametrize("fmt", ["frozen", "tflite", "onnx"])
def test_every_format_records_the_classes_of_a_model_without_names(exported_models, d, drawn,
                                                                   fmt):
    """The session's exports (a 3-class model without names): every format's settings say so,
    and a copy is drawn with class ids, never COCO's names."""
    import export

    if exported_models[fmt] is None:
        pytest.skip(f"{fmt} export not available here")
    assert export.recorded_classes(exported_models[fmt]) == (3, {})
    copy = _copy_export(exported_models[fmt], os.path.join(d["tmp"], "elsewhere"))
    args = _infer(copy, d, thresh=None if fmt == "tflite" else "0.2")
    before = snapshot(d["root"])
    check(run_inspect(args), 0, None, before, d["root"])
    assert drawn == [{}]


def test_an_old_export_keeps_the_old_names(named_export, d, drawn):
    """Settings written before they carried classes: a 90-class default model, COCO names."""
    def old(values):
        values.pop("num_classes")
        values.pop("label_map")

    copy = _copy_export(named_export, os.path.join(d["tmp"], "old"), edit=old)
    args = _infer(copy, d)
    before = snapshot(d["root"])
    check(run_inspect(args), 0, None, before, d["root"])
    assert drawn and drawn[0][1] == "person"


def _edit(key, value):
    return lambda values: values.__setitem__(key, value)


INSPECT_CASES = [
    ("settings-num-classes-not-a-number", _edit("num_classes", "three"),
     r"export_settings\.yaml \(the export's settings\): num_classes is 'three', not a positive "
     r"integer; export the model again"),
    ("settings-num-classes-zero", _edit("num_classes", 0), r"num_classes is 0"),
    ("settings-label-map-not-a-map", _edit("label_map", ["circle"]),
     r"export_settings\.yaml \(the export's settings\): expected a non-empty mapping"),
    ("settings-label-map-id-0", _edit("label_map", {0: "circle", 1: "square"}),
     r"class 'circle' has id 0"),
    ("settings-label-map-beyond-num-classes", _edit("label_map", {1: "a", 9: "b"}),
     r"label_map has class id 9 but num_classes is 3"),
]


@pytest.mark.parametrize("case", INSPECT_CASES, ids=[c[0] for c in INSPECT_CASES])
def test_inspect_refuses_an_export_with_broken_classes(case, named_export, d):
    _, edit, pattern = case
    copy = _copy_export(named_export, os.path.join(d["tmp"], "elsewhere"), edit=edit)
    _street_jpg(d)
    before = snapshot(d["root"])
    outcome = run_inspect(_infer(copy, d))
    check(outcome, 1, r"model_inspect\.py: error: .*" + pattern, before, d["root"],
          may_add=False)


# -------------------------------------------------------------------------------------------------
# The COCO converter: json of the wrong shape, one line naming the file and the key
# -------------------------------------------------------------------------------------------------
COCO = ["--image_dir={coco}/images", "--object_annotations_file={coco}/annotations/"
        "instances_sample.json", "--output_file_prefix={tmp}/rec/train", "--num_threads=1",
        "--num_shards=2"]
INSTANCES = "instances_sample.json"


def _coco_json(change, name=INSTANCES):
    def setup(d):
        path = os.path.join(d["coco"], "annotations", name)
        data = _load(path)
        changed = change(data)
        _save(path, data if changed is None else changed)
    return setup


def _put(key, value):
    return lambda data: data.__setitem__(key, value) or data


def _entry(key, index, field, value):
    def change(data):
        data[key][index][field] = value
        return data
    return change


COCO_CASES = [
    ("annotations-null", _coco_json(_put("annotations", None)), COCO,
     r"--object_annotations_file=.*instances_sample\.json: 'annotations' is null, not a list; "
     r"give a list of annotation objects"),
    ("images-null", _coco_json(_put("images", None)), COCO, r"'images' is null, not a list"),
    ("categories-null", _coco_json(_put("categories", None)), COCO,
     r"'categories' is null, not a list; give a list of category objects"),
    ("images-an-object", _coco_json(_put("images", {"id": 1})), COCO,
     r"'images' is \{\"id\": 1\}, not a list"),
    ("annotations-of-strings", _coco_json(_put("annotations", ["a", "b"])), COCO,
     r"annotations\[0\] is \"a\", not an object; each annotation must be a json object"),
    ("images-of-numbers", _coco_json(_put("images", [1, 2])), COCO,
     r"images\[0\] is 1, not an object"),
    ("category-id-not-integer", _coco_json(_entry("categories", 1, "id", "two")), COCO,
     r"categories\[1\]\.id is \"two\"; it must be an integer \(the class id\)"),
    ("category-id-fractional", _coco_json(_entry("categories", 0, "id", 1.5)), COCO,
     r"categories\[0\]\.id is 1\.5"),
    ("category-name-not-string", _coco_json(_entry("categories", 0, "name", 5)), COCO,
     r"categories\[0\]\.name is 5; it must be a string"),
    ("width-not-integer", _coco_json(_entry("images", 2, "width", "wide")), COCO,
     r"images\[2\]\.width is \"wide\"; it must be a positive integer \(pixels\)"),
    ("width-fractional", _coco_json(_entry("images", 0, "width", 12.5)), COCO,
     r"images\[0\]\.width is 12\.5"),
    ("height-negative", _coco_json(_entry("images", 3, "height", -4)), COCO,
     r"images\[3\]\.height is -4; it must be a positive integer"),
    ("file-name-not-string", _coco_json(_entry("images", 0, "file_name", 7)), COCO,
     r"images\[0\]\.file_name is 7; it must be a string"),
    ("annotation-image-id-a-list", _coco_json(_entry("annotations", 0, "image_id", [1])), COCO,
     r"annotations\[0\]\.image_id is \[1\]; it must be the integer id of an image"),
    ("json-a-list", _coco_json(lambda data: [data]), COCO,
     r"instances_sample\.json: expected a COCO json object with an 'images' list, got list"),
    ("json-broken", lambda d: open(os.path.join(d["coco"], "annotations", INSTANCES),
                                   "w").write("{\"images\": ["), COCO,
     r"instances_sample\.json: not valid json"),
    ("images-empty", _coco_json(_put("images", [])), COCO,
     r"instances_sample\.json: its 'images' list is empty, so there is nothing to convert"),
    ("captions-annotations-null",
     _coco_json(_put("annotations", None), name="captions_sample.json"),
     [a.replace("--object_annotations_file={coco}/annotations/instances_sample.json",
                "--caption_annotations_file={coco}/annotations/captions_sample.json")
      for a in COCO], r"--caption_annotations_file=.*'annotations' is null"),
    ("image-info-images-null", _coco_json(_put("images", None), name="image_info_sample.json"),
     COCO + ["--image_info_file={coco}/annotations/image_info_sample.json"],
     r"--image_info_file=.*'images' is null"),
    # The unknown-category hint names the json's categories, not the VOC converter's flag.
    ("unknown-category-hint", _coco_json(_entry("annotations", 0, "category_id", 50)),
     COCO + ["--on_error=fail"],
     r"category_id 50 is not in the json's 'categories' "
     r"\[unknown_category\]\. To fix: add the category to the json's 'categories' list or fix "
     r"the annotation's category_id"),
    ("every-image-missing", lambda d: [os.remove(os.path.join(d["coco"], "images", n))
                                       for n in os.listdir(os.path.join(d["coco"], "images"))],
     COCO, r"no records were written: all 6 image\(s\) were skipped \(missing_image 6\)"),
    ("no-image-list-flag", _nothing, ["--image_dir={coco}/images", "--num_threads=1",
                                      "--output_file_prefix={tmp}/rec/train"],
     r"give at least one of --image_info_file, --object_annotations_file"),
    ("annotations-file-missing", _nothing,
     ["--image_dir={coco}/images", "--object_annotations_file={tmp}/none.json",
      "--output_file_prefix={tmp}/rec/train"],
     r"--object_annotations_file=.*none\.json: file not found"),
    ("num-shards-zero", _nothing, COCO + ["--num_shards=0"], r"--num_shards must be >= 1"),
    ("num-classes-zero", _nothing, COCO + ["--num_classes=0"], r"--num_classes must be >= 1"),
    ("image-dir-missing", _nothing, COCO + ["--image_dir={tmp}/nope"],
     r"--image_dir=.*nope: not a directory"),
]


@pytest.mark.parametrize("case", COCO_CASES, ids=[c[0] for c in COCO_CASES])
def test_coco_converter_refuses(case, d):
    _, setup, args, pattern = case
    setup(d)
    before = snapshot(d["root"])
    outcome = run_coco_converter(_format(args, d))
    # No COCO message names the VOC converter's --label_map_json_path.
    check(outcome, 1, r"create_coco_tfrecord\.py: error: (?!.*label_map_json_path).*" + pattern,
          before, d["root"])


# -------------------------------------------------------------------------------------------------
# The VOC converter
# -------------------------------------------------------------------------------------------------
VOC = ["--data_dir={voc}", "--year=VOC2012", "--output_path={tmp}/rec/pascal", "--num_threads=1",
       "--label_map_json_path={voc}/label_map.json"]


def _empty_list(name):
    def setup(d):
        open(os.path.join(d["voc"], "VOC2012", "ImageSets", "Main", name), "w").close()
    return setup


VOC_CASES = [
    ("empty-set-list", _empty_list("train.txt"), VOC,
     r"VOC2012/ImageSets/Main/train\.txt: the image list of --set=train \(--year=VOC2012\) "
     r"names no image; put one image name per line"),
    ("blank-lines-only-list", lambda d: open(os.path.join(
        d["voc"], "VOC2012", "ImageSets", "Main", "val.txt"), "w").write("\n  \n"),
     VOC + ["--set=val"], r"Main/val\.txt: the image list of --set=val"),
    ("empty-fallback-list", lambda d: (os.remove(os.path.join(
        d["voc"], "VOC2012", "ImageSets", "Main", "trainval.txt")), _empty_list(
        "aeroplane_trainval.txt")(d)), VOC + ["--set=trainval"],
     r"aeroplane_trainval\.txt: the image list of --set=trainval"),
    ("set-list-missing", _nothing, VOC + ["--set=test"],
     r"no image list for --set=test: neither .*test\.txt nor .*aeroplane_test\.txt exists"),
    ("year-missing", _nothing, [a.replace("VOC2012", "VOC2007") for a in VOC],
     r"VOC2007 does not exist; --data_dir must be the VOCdevkit directory"),
    ("no-data-dir", _nothing, ["--output_path={tmp}/rec/pascal"], r"--data_dir is required"),
    ("no-output-path", _nothing, ["--data_dir={voc}"], r"--output_path is required"),
    ("num-images-zero", _nothing, VOC + ["--num_images=0"], r"--num_images must be >= 1"),
    ("label-map-missing", _nothing, VOC[:-1] + ["--label_map_json_path={tmp}/none.json"],
     r"--label_map_json_path: label map file .*none\.json' does not exist"),
    ("every-xml-missing", lambda d: shutil.rmtree(os.path.join(d["voc"], "VOC2012",
                                                               "Annotations")), VOC,
     r"no records were written: all 18 image\(s\) were skipped \(missing_annotation_file 18\)"),
    ("unknown-class-hint-names-the-label-map-flag", _nothing, VOC[:-1] + ["--on_error=fail"],
     r"class '[a-z]+' is not in the label map .*\[unknown_class\]\. To fix: add the class to "
     r"the label map \(--label_map_json_path\)"),
]


@pytest.mark.parametrize("case", VOC_CASES, ids=[c[0] for c in VOC_CASES])
def test_pascal_converter_refuses(case, d):
    _, setup, args, pattern = case
    setup(d)
    before = snapshot(d["root"])
    outcome = run_pascal_converter(_format(args, d))
    check(outcome, 1, r"create_pascal_tfrecord\.py: error: .*" + pattern, before, d["root"])


def test_pascal_bad_year_is_a_flag_error(d):
    before = snapshot(d["root"])
    outcome = run_pascal_converter(_format(VOC + ["--year=VOC2099"], d))
    check(outcome, 1, r"FATAL Flags parsing error: .*year", before, d["root"], may_add=False)


# -------------------------------------------------------------------------------------------------
# The validator: 1 for a user error, 2 when the records have problems
# -------------------------------------------------------------------------------------------------
VALIDATE = ["--model_name=efficientdet-d0", f"--hparams={tiny_hparams(num_classes=3)}"]
VALIDATE_BAD = VALIDATE + ["--file_pattern={tmp}/bad*.tfrecord"]

VALIDATOR_CASES = [
    ("xmax-5", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 5.0)), VALIDATE_BAD, 2,
     r"1 of 6 record\(s\) have problems \(box_out_of_image\)"),
    ("xmax-5-without-decoding", lambda d: _edited(d, _box(0.1, 0.1, 0.5, 5.0)),
     VALIDATE_BAD + ["--nodecode_images"], 2, r"\(box_out_of_image\)"),
    ("no-source-ids", lambda d: _edited(d, _drop_source_ids), VALIDATE_BAD, 2,
     r"6 of 6 record\(s\) have problems \(missing_key\)"),
    ("source-id-negative", lambda d: _edited(d, _set("image/source_id", [b"-5"])), VALIDATE_BAD,
     2, r"\(bad_source_id\)"),
    ("duplicate-ids", lambda d: _edited(d, _set("image/source_id", [b"2"])), VALIDATE_BAD, 2,
     r"\(duplicate_image_id\)"),
    ("label-0-and-degenerate", lambda d: _edited(d, lambda i, v: i < 2 and _with_boxes(
        v, [(0.1, 0.1, 0.5, 0.5)] if i else [(0.2, 0.2, 0.2, 0.4)], [0] if i else [1])),
     VALIDATE_BAD, 2, r"2 of 6 record\(s\) have problems \(class_id_out_of_range, "
                      r"degenerate_box\)"),
    ("truncated", _truncate, VALIDATE_BAD, 2, r"\(corrupt_record\)"),
    ("two-shard-generations", _second_generation("train"),
     VALIDATE + ["--file_pattern={train}/pascal*"], 1,
     r"--file_pattern=.* matches two generations of the shards"),
    ("no-pattern", _nothing, VALIDATE, 1, r"--file_pattern is required"),
    ("pattern-matches-nothing", _nothing, VALIDATE + ["--file_pattern={tmp}/none*"], 1,
     r"--file_pattern=.*none\* matches no file"),
    ("pattern-matches-only-json", _nothing, VALIDATE + ["--file_pattern={val}/*.json"], 1,
     r"matches no TFRecord file, only .*json_pascal\.json"),
    ("not-a-record-file", lambda d: open(os.path.join(d["tmp"], "bad.tfrecord"), "w").write("x"),
     VALIDATE_BAD, 1, r"bad\.tfrecord, which is not a TFRecord file"),
    ("bad-hparams", _nothing, ["--file_pattern={val}/pascal*", "--hparams=num_clases=3"], 1,
     r"--model_name/--hparams: .*num_clases"),
    ("max-lines-negative", _nothing, VALIDATE + ["--file_pattern={val}/pascal*",
                                                 "--max_lines=-1"], 1,
     r"--max_lines must be >= 0"),
]


@pytest.mark.parametrize("case", VALIDATOR_CASES, ids=[c[0] for c in VALIDATOR_CASES])
def test_validator_refuses(case, d):
    _, setup, args, status, pattern = case
    setup(d)
    before = snapshot(d["root"])
    outcome = run_validator(_format(args, d))
    check(outcome, status, r"validate_tfrecord\.py: error: .*" + pattern, before, d["root"],
          may_add=False)


def test_validator_passes_good_records(d):
    before = snapshot(d["root"])
    outcome = run_validator(_format(VALIDATE + ["--file_pattern={val}/pascal*"], d))
    check(outcome, 0, None, before, d["root"], may_add=False)
    assert outcome.stdout.rstrip().endswith("OK")

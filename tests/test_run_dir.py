"""Tests for run_dir.py: the model directory contract."""

import json
import os
import shutil

import pytest

import errors
import hparams_config
import run_dir
from conftest import tiny_config
from hparams_config import HparamsError


def _records(directory, names=("val-00000-of-00001.tfrecord",), size=100):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(b"x" * size)
        paths.append(path)
    return paths


def test_eval_set_identity_survives_a_move_but_not_a_content_change(tmp_path):
    files = _records(tmp_path / "a")
    (tmp_path / "gt.json").write_text('{"images": []}')
    one = run_dir.EvalSet.describe(files, str(tmp_path / "gt.json"), 64)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.copy(tmp_path / "gt.json", tmp_path / "b" / "gt.json")
    moved = run_dir.EvalSet.describe([str(tmp_path / "b" / os.path.basename(files[0]))],
                                     str(tmp_path / "b" / "gt.json"), 64)
    assert moved.key == one.key
    assert run_dir.EvalSet.describe(files, str(tmp_path / "gt.json"), 32).key != one.key
    (tmp_path / "gt.json").write_text('{"images": [1]}')
    assert run_dir.EvalSet.describe(files, str(tmp_path / "gt.json"), 64).key != one.key
    assert run_dir.EvalSet.describe(files, None, 64).key != one.key


def _fake_checkpoint(model_dir, step):
    prefix = os.path.join(model_dir, f"model.ckpt-{step}")
    for ext in (".index", ".data-00000-of-00001"):
        with open(prefix + ext, "w") as f:
            f.write(f"step {step}")
    return prefix


def test_history_and_archive_are_per_validation_set(tmp_path):
    model_dir = str(tmp_path)
    val = run_dir.EvalSet.describe(_records(tmp_path / "val"), None, 64)
    train = run_dir.EvalSet.describe(_records(tmp_path / "train", size=999), None, 64)
    ckpt = _fake_checkpoint(model_dir, 384)
    run_dir.record_eval(model_dir, val, 384, {"AP": 0.669}, claim_archive=True)
    assert run_dir.archive_if_best(model_dir, val, ckpt, {"AP": 0.669})
    archived = {p: open(os.path.join(model_dir, "archive", p), "rb").read()
                for p in os.listdir(os.path.join(model_dir, "archive"))}
    # The same checkpoint on another set: its own entry, never the archive.
    run_dir.record_eval(model_dir, train, 384, {"AP": 0.0002}, claim_archive=True)
    assert not run_dir.archive_if_best(model_dir, train, ckpt, {"AP": 0.9})
    history = run_dir.read_history(model_dir)
    assert history["archive_set"] == val.key
    assert history["sets"][val.key]["steps"]["384"]["AP"] == 0.669
    assert history["sets"][train.key]["steps"]["384"]["AP"] == 0.0002
    assert {p: open(os.path.join(model_dir, "archive", p), "rb").read()
            for p in os.listdir(os.path.join(model_dir, "archive"))} == archived
    assert run_dir.evaluated_steps(model_dir, val) == [384]
    assert run_dir.best_on(model_dir, val) == {"step": 384, "AP": 0.669}


def test_a_better_checkpoint_replaces_the_archived_one(tmp_path):
    model_dir = str(tmp_path)
    val = run_dir.EvalSet.describe(_records(tmp_path / "val"), None, 64)
    for step, ap in ((100, 0.2), (200, 0.5), (300, 0.4)):
        run_dir.record_eval(model_dir, val, step, {"AP": ap}, claim_archive=True)
        run_dir.archive_if_best(model_dir, val, _fake_checkpoint(model_dir, step), {"AP": ap})
    archive = sorted(os.listdir(os.path.join(model_dir, "archive")))
    assert archive == ["best_eval.json", "checkpoint", "model.ckpt-200.data-00000-of-00001",
                       "model.ckpt-200.index"]


def test_an_older_flat_history_is_kept_under_its_own_set(tmp_path):
    (tmp_path / "eval_history.json").write_text(json.dumps({"384": {"AP": 0.669}}))
    val = run_dir.EvalSet.describe(_records(tmp_path / "val"), None, 64)
    run_dir.record_eval(str(tmp_path), val, 384, {"AP": 0.1})
    history = run_dir.read_history(str(tmp_path))
    assert history["sets"][run_dir.LEGACY_SET]["steps"] == {"384": {"AP": 0.669}}
    assert history["sets"][val.key]["steps"] == {"384": {"AP": 0.1}}


def test_config_is_written_once_and_never_overwritten(tmp_path):
    model_dir = str(tmp_path / "new")
    assert run_dir.create_for_training(model_dir, tiny_config())
    first = open(run_dir.config_path(model_dir), "rb").read()
    assert not run_dir.create_for_training(model_dir, tiny_config(num_classes=5))
    assert open(run_dir.config_path(model_dir), "rb").read() == first


def test_every_run_gets_its_own_record(tmp_path):
    a = run_dir.write_run_record(str(tmp_path), "eval", {"mode": "eval"}, tiny_config())
    b = run_dir.write_run_record(str(tmp_path), "eval", {"mode": "eval"}, tiny_config())
    assert a != b and os.path.exists(a) and os.path.exists(b)


def test_load_run_config_prefers_model_dir_yaml(tmp_path):
    c = hparams_config.get_detection_config("efficientdet-d0", "num_classes=7,image_size=256")
    c.save_to_yaml(str(tmp_path / "config.yaml"))
    run = run_dir.load_run_config("efficientdet-d0", "nms_configs.score_thresh=0.1",
                                  str(tmp_path))
    assert (run.num_classes, run.image_size, run.nms_configs.score_thresh) == (7, 256, 0.1)
    # No model name: whatever the directory was trained as.
    assert run_dir.load_run_config(None, None, str(tmp_path)).name == "efficientdet-d0"
    with pytest.raises(HparamsError, match="written for efficientdet-d0.*--model_name"):
        run_dir.load_run_config("efficientdet-d1", None, str(tmp_path))


def test_hparams_that_change_the_model_disagree_with_the_saved_config(tmp_path):
    c = hparams_config.get_detection_config("efficientdet-d0", "num_classes=7,image_size=256")
    c.save_to_yaml(str(tmp_path / "config.yaml"))
    with pytest.raises(HparamsError) as e:
        run_dir.load_run_config("efficientdet-d0", "image_size=384,num_classes=5,"
                                "nms_configs.iou_thresh=0.6", str(tmp_path),
                                training=True)
    message = str(e.value)
    assert "image_size: trained with 256, given 384" in message
    assert "num_classes: trained with 7, given 5" in message
    assert "iou_thresh" not in message  # NMS settings may differ
    # Eval, export and inference may run at another input size.
    assert run_dir.load_run_config("efficientdet-d0", "image_size=384",
                                   str(tmp_path)).image_size == 384
    # Precision is a runtime choice for eval/inference, part of the model when resuming training.
    assert run_dir.load_run_config(
 "efficientdet-d0", "precision=mixed_float16", str(tmp_path)).precision == "mixed_float16"
    with pytest.raises(HparamsError, match="precision: trained with None"):
        run_dir.load_run_config("efficientdet-d0", "precision=mixed_float16",
                                str(tmp_path), training=True)


def test_retired_keys_of_older_config_files_are_ignored(tmp_path):
    c = hparams_config.get_detection_config("efficientdet-d0")
    (tmp_path / "config.yaml").write_text(str(c) + "use_tpu: false\nstrategy: null\n")
    assert "use_tpu" not in run_dir.load_run_config("efficientdet-d0", None,
                                                    str(tmp_path))


def test_label_map_dict_with_int_ids(tmp_path):
    c = hparams_config.get_detection_config(
        "efficientdet-d0", "num_classes=2,label_map={1: 'cat', 2: 'dog'}")
    assert c.label_map == {1: "cat", 2: "dog"}
    c.save_to_yaml(str(tmp_path / "config.yaml"))
    back = run_dir.load_run_config("efficientdet-d0", None, str(tmp_path))
    assert back.label_map == {1: "cat", 2: "dog"}
    with pytest.raises(HparamsError, match="ids 1..3 but num_classes is 2"):
        hparams_config.get_detection_config("efficientdet-d0",
                                            "num_classes=2,label_map={1: 'a', 3: 'c'}")
    assert hparams_config.get_detection_config("efficientdet-d0",
                                               "label_map=voc,num_classes=20").label_map == "voc"


def test_what_no_output_may_land_on(tmp_path):
    """A run reading a checkpoint reads its files; the run files beside it are the model
    directory's. Notes and exports in the directory are not."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.ckpt-5.index", "model.ckpt-5.data-00000-of-00001", "model.ckpt-9.index",
                 "model.ckpt-9.data-00000-of-00001", "config.yaml", "eval_history.json",
                 "notes.txt", "model.onnx"):
        (model / name).write_text("x")
    (model / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    want = sorted(str(model / n) for n in (
        "checkpoint", "config.yaml", "eval_history.json", "model.ckpt-5.data-00000-of-00001",
        "model.ckpt-5.index", "model.ckpt-9.data-00000-of-00001", "model.ckpt-9.index"))
    assert run_dir.checkpoint_inputs(str(model)) == want
    assert run_dir.checkpoint_inputs(str(model / "model.ckpt-5")) == want
    assert run_dir.other_run_problem(str(model)).startswith(
        "already holds checkpoint, config.yaml, model.ckpt-5.index of another run")
    assert run_dir.other_run_problem(str(tmp_path / "new")) is None


def test_label_map_path_on_an_existing_dir_is_compared_as_a_mapping(tmp_path, caplog):
    """label_map is a runtime key: a path or built-in name is read into {id: name} first, so
    the mapping training stored is accepted again; another one names this run's classes and
    config.yaml keeps its own."""
    saved = hparams_config.get_detection_config(
        "efficientdet-d0", "num_classes=3,label_map={1: 'cat', 2: 'dog', 3: 'cow'}")
    saved.save_to_yaml(str(tmp_path / "config.yaml"))
    text = (tmp_path / "config.yaml").read_text()
    same, other = tmp_path / "same.yaml", tmp_path / "other.json"
    same.write_text("1: cat\n2: dog\n3: cow\n")
    other.write_text('{"cat": 1, "dog": 2, "horse": 3}')
    caplog.set_level("INFO", logger="absl")
    run = run_dir.load_run_config("efficientdet-d0", f"label_map={same}", str(tmp_path),
                                  training=True)
    assert run.label_map == {1: "cat", 2: "dog", 3: "cow"}
    assert not [r for r in caplog.records if "label_map differs" in r.getMessage()]
    run = run_dir.load_run_config(None, f"label_map={other}", str(tmp_path))
    assert run.label_map == {1: "cat", 2: "dog", 3: "horse"}
    assert [r for r in caplog.records if "label_map differs" in r.getMessage()]
    assert (tmp_path / "config.yaml").read_text() == text
    with pytest.raises(errors.ConfigError, match="label_map 'voc' has class id 20 but "
                                                 "num_classes is 3"):
        run_dir.load_run_config(None, "label_map=voc", str(tmp_path))
    # Without a saved config, a path or name is read at once too (its errors before any work).
    fresh = run_dir.load_run_config("efficientdet-d0", "num_classes=20,label_map=voc")
    assert fresh.label_map[20] == "tvmonitor"


def test_a_saved_config_with_a_bad_value_names_the_file(tmp_path):
    c = hparams_config.get_detection_config("efficientdet-d0")
    (tmp_path / "config.yaml").write_text(str(c).replace("momentum: 0.9\n", "momentum: -5\n"))
    with pytest.raises(HparamsError, match=r"config.yaml': hparam 'momentum' must be >= 0"):
        run_dir.load_run_config(None, None, str(tmp_path))


def test_directory_problems(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    assert run_dir.directory_problem(str(tmp_path / "afile"), False) == (
        "is a file, not a directory")
    assert run_dir.directory_problem(str(tmp_path / "afile" / "m"), True) == (
        f"cannot be created: '{tmp_path / 'afile'}' is a file, not a directory")
    assert run_dir.directory_problem(str(tmp_path / "new" / "m"), True) is None
    assert run_dir.directory_problem(str(tmp_path), True) is None
    assert run_dir.directory_problem("gs://bucket/m", True) is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without rights
    assert run_dir.directory_problem(str(tmp_path), True) == "is not writable"
    assert run_dir.directory_problem(str(tmp_path), False) is None  # eval only reads
    assert run_dir.directory_problem(str(tmp_path / "new"), True) == (
        f"cannot be created: '{tmp_path}' is not writable")


def _write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


TRAINING_FILES = ("config.yaml", "checkpoint", "model.ckpt-0.index",
                  "model.ckpt-0.data-00000-of-00001", "events.out.tfevents.1.host",
                  "runs/20260101-000000-train.yaml", ".config.tmp-0a1b2c3d4e5f.yaml")


def test_started_files_takes_back_only_what_the_run_added(tmp_path):
    model_dir = str(tmp_path / "m")
    _write(os.path.join(model_dir, "notes.txt"), "the user's")
    _write(os.path.join(model_dir, "runs", "old-train.yaml"), "an earlier run")
    started = run_dir.StartedFiles(model_dir)
    for name in TRAINING_FILES:
        _write(os.path.join(model_dir, name))
    _write(os.path.join(model_dir, "plot.png"))  # not a training output: never removed
    assert sorted(started.remove()) == sorted(TRAINING_FILES)
    assert sorted(os.listdir(model_dir)) == ["notes.txt", "plot.png", "runs"]
    assert os.listdir(os.path.join(model_dir, "runs")) == ["old-train.yaml"]


def test_started_files_removes_a_directory_it_made(tmp_path):
    model_dir = str(tmp_path / "new" / "m")
    started = run_dir.StartedFiles(model_dir)
    for name in TRAINING_FILES:
        _write(os.path.join(model_dir, name))
    started.remove()
    assert not os.path.exists(model_dir)
    # one it made but in which something else appeared stays, with that file
    started = run_dir.StartedFiles(model_dir)
    _write(os.path.join(model_dir, "config.yaml"))
    _write(os.path.join(model_dir, "someone-else.txt"))
    assert started.remove() == ["config.yaml"]
    assert os.listdir(model_dir) == ["someone-else.txt"]


def test_config_yaml_carries_its_version_and_is_never_rewritten(tmp_path):
    """A new directory's config.yaml starts with `version: 1` and reads back as the config it
    was written from; a directory from before the key keeps its file byte for byte (version 1
    is implied) through a resumed training run."""
    config = tiny_config(num_classes=7)
    new, old = str(tmp_path / "new"), tmp_path / "old"
    assert run_dir.create_for_training(new, config)
    text = open(run_dir.config_path(new)).read()
    assert text.startswith("version: 1\n") and text.count("version:") == 1
    assert run_dir.load_run_config(None, None, new) == config
    old.mkdir()
    (old / "config.yaml").write_text(str(config))  # as written before the version key
    before = (old / "config.yaml").read_bytes()
    resumed = run_dir.load_run_config("efficientdet-d0", None, str(old), training=True)
    assert resumed == config
    assert not run_dir.create_for_training(str(old), resumed)
    assert (old / "config.yaml").read_bytes() == before


@pytest.mark.parametrize("version", ["2", "0", "'1'", "1.0", "true", "null"])
def test_config_yaml_of_an_unknown_version_is_refused(tmp_path, version):
    (tmp_path / "config.yaml").write_text(f"version: {version}\n{tiny_config()}")
    with pytest.raises(HparamsError) as e:
        run_dir.load_run_config(None, None, str(tmp_path))
    message = str(e.value)
    assert message.startswith(f"'{tmp_path / 'config.yaml'}': key 'version' is ")
    assert "\n" not in message and "use the code that wrote the file" in message

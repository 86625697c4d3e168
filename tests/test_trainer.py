"""trainer.run in-process on the sample VOC records: the seed's section 7 and 8 runs, the model
directory contract (config.yaml, eval history per validation set, archive), progress and closing
lines, bounded events files, and one clear error per user mistake.

Small on purpose: 128x128 images and a slim network (the tiny model with one FPN cell on three
levels, conftest.SMALL), two steps per epoch.
"""

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import cli
import errors
import run_dir
import run_options
import trainer
from conftest import SMALL, make_classifier_checkpoint, tiny_hparams
from run_options import RunOptions

tf1 = tf.compat.v1


def _hparams(**overrides) -> str:
    """The model these runs train: tiny_hparams made smaller (conftest.SMALL)."""
    return tiny_hparams(**{**SMALL, **overrides})


def _opts(voc, model_dir=None, **kw):
    """The seed's section-7 command shape on the sample records, slimmed down."""
    values = dict(
        mode="train_and_eval", model_name="efficientdet-d0",
        model_dir=None if model_dir is None else str(model_dir),
        training_file_pattern=str(voc / "tfrecord" / "pascal*.tfrecord"),
        validation_file_pattern=str(voc / "tfrecord" / "pascal*.tfrecord"),
        val_json_file=str(voc / "tfrecord" / "json_pascal.json"), train_batch_size=8,
        eval_batch_size=8, eval_samples=24, num_examples_per_epoch=16, num_epochs=1,
        hparams=_hparams(num_classes=20, moving_average_decay=0))
    values.update(kw)
    return RunOptions(**values)


class _Captured:
    """stdout and INFO log lines of a run."""

    def __init__(self):
        self.stdout = ""
        self.log: list = []


@contextlib.contextmanager
def _capture():
    got = _Captured()
    handler = logging.Handler()
    handler.emit = lambda record: got.log.append(record.getMessage())
    absl = logging.getLogger("absl")
    absl.addHandler(handler)
    old_level = absl.level
    absl.setLevel(logging.INFO)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield got
    finally:
        absl.removeHandler(handler)
        absl.setLevel(old_level)
        got.stdout = out.getvalue()


@pytest.fixture(scope="module")
def trained(voc_records):
    """Seed section 7: train from a classifier backbone checkpoint, then evaluate."""
    backbone = voc_records / "efficientnet-b0"
    backbone.mkdir()
    make_classifier_checkpoint(backbone)
    model_dir = voc_records / "efficientdet-d0-scratch"
    opts = _opts(voc_records, model_dir, backbone_ckpt=str(backbone), log_every_n_steps=1)
    with _capture() as out:
        metrics = trainer.run(opts)
    return {"dir": model_dir, "out": out, "metrics": metrics, "opts": opts}


def _events_bytes(model_dir) -> int:
    return sum(os.path.getsize(p) for p in tf.io.gfile.glob(str(model_dir / "events.out.*")))


def test_seed_section7_backbone_ckpt(trained, voc_records):
    model_dir = trained["dir"]
    assert "AP50" in trained["metrics"]
    assert "eval at step 2: AP=" in trained["out"].stdout
    assert any("Initialised 304 variables from backbone checkpoint" in m
               for m in trained["out"].log)
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")
    saved = (model_dir / "config.yaml").read_text()
    assert "num_classes: 20" in saved and "fpn_name: vfpn" in saved
    history = run_dir.read_history(str(model_dir))
    (key,) = history["sets"]
    assert history["archive_set"] == key
    assert list(history["sets"][key]["steps"]) == ["2"]
    best = json.loads((model_dir / "archive" / "best_eval.json").read_text())
    assert best["set"] == key and best["checkpoint"] == "model.ckpt-2"
    # The backbone really came from the classifier (its EMA-free raw values at step 0).
    reader = tf.train.load_checkpoint(str(model_dir / "model.ckpt-0"))
    cls = tf.train.load_checkpoint(str(voc_records / "efficientnet-b0" / "model.ckpt"))
    name = "efficientnet-b0/stem/conv2d/kernel"
    np.testing.assert_array_equal(reader.get_tensor(name), cls.get_tensor(name))


def test_config_is_self_contained(trained):
    """The label map is stored resolved (no label map given: the json's category names)."""
    import yaml

    saved = yaml.safe_load((trained["dir"] / "config.yaml").read_text())
    assert saved["label_map"][1] == "aeroplane" and saved["label_map"][20] == "tvmonitor"
    assert "use_tpu" not in saved and "strategy" not in saved
    records = list((trained["dir"] / "runs").glob("*-train_and_eval.yaml"))
    assert len(records) == 1
    assert yaml.safe_load(records[0].read_text())["options"]["mode"] == "train_and_eval"


def test_progress_and_closing_lines(trained):
    log = "\n".join(trained["out"].log)
    assert "step 1/2, loss " in log and "first step" in log
    line = next(m for m in trained["out"].log if m.startswith("step 2/2"))
    for part in ("loss ", "(class ", "box ", "lr ", "img/s"):
        assert part in line, line
    assert "trained to step 2 in " in trained["out"].stdout
    assert "last loss " in trained["out"].stdout
    assert "best AP " in trained["out"].stdout and "archived in" in trained["out"].stdout


def test_resume_evaluates_new_epochs_only_and_events_stay_small(trained, tmp_path):
    model_dir = tmp_path / "resumed"
    shutil.copytree(trained["dir"], model_dir)
    before = _events_bytes(model_dir)
    config_bytes = (model_dir / "config.yaml").read_bytes()
    opts = _opts(_voc(trained), model_dir, num_epochs=2)
    with _capture() as out:
        trainer.run(opts)
    assert out.stdout.count("eval at step") == 1 and "eval at step 4:" in out.stdout
    history = run_dir.read_history(str(model_dir))
    (entry,) = history["sets"].values()
    assert sorted(entry["steps"], key=int) == ["2", "4"]
    # One more epoch adds scalars, not another copy of the graph (tens of MB).
    assert _events_bytes(model_dir) - before < 1_000_000
    assert (model_dir / "config.yaml").read_bytes() == config_bytes
    assert not list(model_dir.glob("*.meta")) and not (model_dir / "graph.pbtxt").exists()


def _voc(trained):
    return trained["dir"].parent


def test_eval_with_other_hparams_changes_nothing(trained):
    model_dir = trained["dir"]
    files = {p: p.read_bytes() for p in (model_dir / "config.yaml",
                                         model_dir / run_dir.HISTORY_FILE)}
    opts = _opts(_voc(trained), model_dir, mode="eval",
                 hparams="num_classes=5,image_size=512,fpn_cell_repeats=3")
    with pytest.raises(errors.ConfigError) as e:
        trainer.run(opts)
    message = str(e.value)
    assert "num_classes: trained with 20, given 5" in message
    assert "fpn_cell_repeats: trained with 1, given 3" in message
    assert "image_size: trained" not in message  # eval may run at another input size
    for path, data in files.items():
        assert path.read_bytes() == data, path


def test_eval_of_missing_dir_creates_nothing(voc_records, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(errors.UsageError, match="does not exist; train into it first"):
        trainer.run(_opts(voc_records, missing, mode="eval"))
    assert not missing.exists()


def test_eval_on_another_set_keeps_the_training_sets_history_and_archive(trained, tmp_path):
    model_dir = tmp_path / "copy"
    shutil.copytree(trained["dir"], model_dir)
    archive = {p.name: p.read_bytes() for p in (model_dir / "archive").iterdir()}
    train_set = run_dir.read_history(str(model_dir))["sets"]
    voc = _voc(trained)
    one_shard = str(voc / "tfrecord" / "pascal-00000-of-00002.tfrecord")
    with _capture() as out:
        trainer.run(_opts(voc, model_dir, mode="eval", validation_file_pattern=one_shard))
    assert "eval at step 2:" in out.stdout
    history = run_dir.read_history(str(model_dir))
    assert len(history["sets"]) == 2
    for key, entry in train_set.items():
        assert history["sets"][key] == entry
        assert history["archive_set"] == key
    assert {p.name: p.read_bytes() for p in (model_dir / "archive").iterdir()} == archive


def test_eval_numbers_match_pycocotools(trained, tmp_path):
    import coco_metric

    model_dir = tmp_path / "copy"
    shutil.copytree(trained["dir"], model_dir)
    voc = _voc(trained)
    trainer.run(_opts(voc, model_dir, mode="eval", testdev_dir=str(tmp_path)))
    dets = tmp_path / "detections_test-dev2017_test_results.json"
    # Every image of the split is evaluated, though 18 is no multiple of the batch of 8.
    json_file = voc / "tfrecord" / "json_pascal.json"
    json_ids = {i["id"] for i in json.loads(json_file.read_text())["images"]}
    assert len(json_ids) == 18
    assert {d["image_id"] for d in json.loads(dets.read_text())} == json_ids
    # The same checkpoint evaluated against the json: our numbers equal pycocotools' own.
    ours = trainer.run(_opts(voc, model_dir, mode="eval"))
    direct = coco_metric.evaluate_detections_json(str(json_file), str(dets))
    # Estimator metrics are float32 tensors, so ours is pycocotools' float64 rounded to float32
    # exactly; anything else is a real difference.
    for key in ("AP", "AP50", "AP75", "ARmax100"):
        assert float(ours[key]) == float(np.float32(direct[key])), key


def test_seed_section8_finetune_from_detector(trained, tmp_path):
    voc = _voc(trained)
    yaml_file = tmp_path / "voc_config.yaml"
    slim = _hparams().replace("=", ": ").replace(",", "\n")
    yaml_file.write_text(f"num_classes: 20\nmoving_average_decay: 0\n{slim}\n")
    model_dir = tmp_path / "finetune"
    with _capture() as out:
        trainer.run(_opts(voc, model_dir, mode="train", ckpt=str(trained["dir"]),
                          hparams=str(yaml_file)))
    assert any("from detector checkpoint" in m and "skipped 0" in m for m in out.log)
    # global_step is never taken from --ckpt: the new run starts at 0 and ends at 2.
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")


def test_checkpoint_from_another_model(trained, tmp_path):
    opts = _opts(_voc(trained), tmp_path / "d1", mode="train", model_name="efficientdet-d1",
                 ckpt=str(trained["dir"]), train_batch_size=2, num_examples_per_epoch=2,
                 hparams="num_classes=20,image_size=128")
    with pytest.raises(errors.CheckpointError, match="holds no 'efficientnet-b1/' variables "
                                                     r".*does not fit this model "
                                                     r"\(efficientdet-d1"):
        trainer.run(opts)
    assert not (tmp_path / "d1").exists()  # found before anything was created


@pytest.mark.heavy
def test_loss_falls_on_repeated_batch(voc_records, tmp_path):
    """Learning is real: on one repeated batch the loss drops well below its start."""
    opts = _opts(voc_records, tmp_path, mode="train", train_batch_size=4,
                 num_examples_per_epoch=4, num_epochs=30, use_fake_data=True, tf_random_seed=1,
                 save_checkpoints_steps=30, log_every_n_steps=2,
                 hparams=_hparams(num_classes=20, moving_average_decay=0, optimizer="adam",
                                      learning_rate=0.16, lr_warmup_epoch=0))
    with _capture() as out:
        trainer.run(opts)
    losses = []
    for event_file in tf.io.gfile.glob(str(tmp_path / "events.out.tfevents*")):
        for event in tf1.train.summary_iterator(event_file):
            for v in event.summary.value:
                if v.tag == "det_loss":
                    losses.append((event.step, tf.make_ndarray(v.tensor)
                                   if v.HasField("tensor") else v.simple_value))
    losses.sort()
    assert len(losses) == 15, losses  # a summary every --log_every_n_steps=2 steps
    first, last = float(losses[0][1]), float(losses[-1][1])
    assert last < 0.5 * first, losses
    assert "trained to step 30 in " in out.stdout


def _summaries(model_dir, tag):
    """{step: value} of scalar summary `tag` in a model dir's events files."""
    got = {}
    for event_file in tf.io.gfile.glob(str(model_dir / "events.out.tfevents*")):
        for event in tf1.train.summary_iterator(event_file):
            for v in event.summary.value:
                if v.tag == tag:
                    got[event.step] = float(tf.make_ndarray(v.tensor) if v.HasField("tensor")
                                            else v.simple_value)
    return got


@pytest.mark.heavy
def test_vfpn_trains_as_bifpn_until_its_branch_starts(voc_records, tmp_path):
    """vfpn_branch_start: until then the vertical branch is frozen and VFPN (zero-init) takes
    BiFPN's steps (up to float rounding) from the same seed; then the branch learns."""
    def train(name, **hp):
        opts = _opts(voc_records, tmp_path / name, mode="train", train_batch_size=2,
                     num_examples_per_epoch=2, num_epochs=4, use_fake_data=True,
                     tf_random_seed=3, save_checkpoints_steps=2, log_every_n_steps=1,
                     hparams=_hparams(num_classes=20, moving_average_decay=0,
                                          optimizer="adam", lr_warmup_epoch=0, **hp))
        with _capture():
            trainer.run(opts)
        return tmp_path / name

    bifpn = train("bifpn", fpn_name="bifpn")
    vfpn = train("vfpn", fpn_name="vfpn", vfpn_branch_start=0.5, vfpn_branch_warmup=0)
    b_loss, v_loss = _summaries(bifpn, "det_loss"), _summaries(vfpn, "det_loss")
    assert sorted(b_loss) == sorted(v_loss) == [1, 2, 3, 4]
    # Identical up to float rounding: the cells' gradients are summed with the frozen branch's
    # (zero) terms, which may change the order of the sums.
    np.testing.assert_allclose([v_loss[s] for s in (1, 2, 3)], [b_loss[s] for s in (1, 2, 3)],
                               rtol=1e-6)
    scale = _summaries(vfpn, "vfpn_branch_update_scale")
    assert scale[1] == scale[2] == 0.0 and scale[3] > 0.0  # start = 0.5 * 4 steps

    def weights(model_dir, step):
        reader = tf.train.load_checkpoint(str(model_dir / f"model.ckpt-{step}"))
        return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}

    b2, v0, v2, v4 = (weights(bifpn, 2), weights(vfpn, 0), weights(vfpn, 2), weights(vfpn, 4))
    branch = sorted(n for n in v2 if n.startswith("vfpn_vertical/"))
    assert branch and not any(n.startswith("vfpn_vertical/") for n in b2)
    for name, value in b2.items():  # every BiFPN variable, optimizer slots included
        np.testing.assert_allclose(v2[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for name in branch:  # frozen exactly; BN statistics are not trained, they track the batches
        if "/moving_" not in name:
            np.testing.assert_array_equal(v2[name], v0[name], err_msg=name)
    gamma = "vfpn_vertical/level_3/refine_1/bn/gamma"
    assert not v2[gamma].any() and v4[gamma].any()  # zero-init until step 2, then learned


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(voc_records, tmp_path):
    opts = _opts(voc_records, tmp_path, mode="train", train_batch_size=4,
                 num_examples_per_epoch=4, num_epochs=20, save_checkpoints_steps=1,
                 hparams=_hparams(num_classes=20, moving_average_decay=0,
                                      learning_rate=1e30, lr_warmup_epoch=0,
                                      clip_gradients_norm=0))
    with pytest.raises(errors.TrainingError) as e:
        trainer.run(opts)
    line = str(e.value)
    assert line.startswith("non-finite loss at step ") and "validate_tfrecord" in line
    bad_step = int(line.split("at step ")[1].split(":")[0])
    last = int(tf.train.latest_checkpoint(str(tmp_path)).split("-")[-1])
    assert last <= bad_step
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    assert np.isfinite(reader.get_tensor("class_net/class-predict/bias")).all()


@pytest.mark.heavy
def test_mixed_float16_training(voc_records, tmp_path):
    opts = _opts(voc_records, tmp_path, mode="train", train_batch_size=1,
                 num_examples_per_epoch=1, num_epochs=1,
                 hparams=_hparams(num_classes=20, precision="mixed_float16"))
    trainer.run(opts)
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-1")
    reader = tf.train.load_checkpoint(ckpt)
    dtypes = reader.get_variable_to_dtype_map()
    # variables stay float32; float16 training also keeps its dynamic loss scale
    assert dtypes["class_net/class-predict/bias"] == tf.float32
    assert np.isfinite(reader.get_tensor("class_net/class-predict/bias")).all()
    assert any("loss_scale" in name for name in dtypes)


def test_truncated_record_file_is_named(voc_records, tmp_path):
    good = voc_records / "tfrecord" / "pascal-00000-of-00002.tfrecord"
    bad = tmp_path / "bad-00000-of-00001.tfrecord"
    bad.write_bytes(good.read_bytes()[:200])  # a valid header, then the file ends
    opts = _opts(voc_records, tmp_path / "m", mode="train", training_file_pattern=str(bad),
                 train_batch_size=1, num_examples_per_epoch=1)
    with pytest.raises(errors.DataError, match=f"{bad}: record 0 is truncated"):
        trainer.run(opts)


def test_a_bug_in_our_code_keeps_its_traceback(voc_records, tmp_path, monkeypatch):
    import efficientdet_arch

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(efficientdet_arch, "build_model", broken)
    opts = _opts(voc_records, tmp_path / "m", mode="train", train_batch_size=1,
                 num_examples_per_epoch=1)
    with pytest.raises(ValueError, match="boom") as e:
        cli.run_and_report("main.py", trainer.run, opts)
    assert not isinstance(e.value, errors.UserError)


def test_comma_separated_globs_are_one_pattern_policy(voc_records, tmp_path):
    tf_dir = voc_records / "tfrecord"
    opts = _opts(voc_records, tmp_path / "m", mode="train", training_file_pattern=(
        f"{tf_dir}/pascal-00000-*.tfrecord,{tf_dir}/pascal-00001-*.tfrecord"))
    run_options.check_options(opts)
    prepared = trainer.prepare(opts)
    assert [os.path.basename(f) for f in prepared.train_files] == [
        "pascal-00000-of-00002.tfrecord", "pascal-00001-of-00002.tfrecord"]
    assert not (tmp_path / "m").exists()  # prepare writes nothing


def test_training_the_schedule_and_the_epochs_agree_on_the_run_length(voc_records, tmp_path):
    """One run length (det_model_fn.schedule_steps): 49 images per epoch in batches of 3 for
    30 epochs are 490 steps for training, for the learning-rate schedule (which reaches 0 at
    the last step, not one before) and for train_and_eval's last evaluation; an epoch is 16
    steps for the evaluations and the checkpoint interval."""
    import det_model_fn

    opts = _opts(voc_records, tmp_path / "m", train_batch_size=3, num_examples_per_epoch=49,
                 num_epochs=30)
    p = trainer.prepare(opts)
    assert p.total_steps == det_model_fn.schedule_steps(p.config, p.run).total_steps == 490
    ends = trainer._epoch_ends(p)
    assert ends[-1] == 490 and ends[:2] == [16, 32] and len(ends) == 30
    assert trainer.save_interval(p) == det_model_fn.steps_per_epoch(p.run) == 16
    with tf.Graph().as_default():
        step = tf1.placeholder(tf.int64, [])
        lr = det_model_fn.learning_rate_schedule(p.config, p.run, step)
        with tf1.Session() as s:
            before_last, last = (s.run(lr, {step: v}) for v in (489, 490))
    assert before_last > 0 and last == 0


@pytest.mark.parametrize("kw,error,message", [
    (dict(training_file_pattern="nothing/*.tfrecord"), errors.UsageError,
     "--training_file_pattern=nothing/*.tfrecord matches no file"),
    (dict(training_file_pattern=None), errors.UsageError, "--training_file_pattern is required"),
    (dict(num_epochs=0), errors.UsageError, "--num_epochs must be >= 1, got 0"),
    (dict(num_examples_per_epoch=4), errors.UsageError,
     "less than one batch of --train_batch_size=8"),
    (dict(hparams="num_classes=2"), errors.DataError, "hold class id 3 but num_classes is 2"),
    (dict(hparams="num_classes=20,label_map={1: 'a', 21: 'b'}"), errors.ConfigError,
     "ids 1..21 but num_classes is 20"),
    (dict(mode="predict"), errors.UsageError, "unknown --mode=predict"),
    (dict(backbone_ckpt="x", ckpt="y"), errors.UsageError, "cannot be used together"),
    (dict(model_dir=None), errors.UsageError, "--model_dir is required"),
    (dict(val_json_file="missing.json"), errors.UsageError, "missing.json does not exist"),
])
def test_bad_input_is_one_clear_user_error(voc_records, tmp_path, kw, error, message):
    kw = dict(kw, model_dir=str(tmp_path / "m")) if "model_dir" not in kw else kw
    opts = _opts(voc_records, **{"mode": "train", **kw})
    if "val_json_file" in kw:
        opts.mode = "train_and_eval"
    with pytest.raises(error) as e:
        trainer.run(opts)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m").exists()  # nothing is created before the checks pass


def test_not_a_tfrecord_file_is_named(voc_records, tmp_path):
    text = tmp_path / "notes-00000.tfrecord"
    text.write_text("these are not records\n")
    opts = _opts(voc_records, tmp_path / "m", mode="train", training_file_pattern=str(text))
    with pytest.raises(errors.UsageError, match=f"matches {text}, which is not a TFRecord"):
        trainer.run(opts)


def test_empty_record_files(tmp_path, voc_records):
    (tmp_path / "empty-00000.tfrecord").write_bytes(b"")
    opts = _opts(voc_records, tmp_path / "m", mode="train",
                 training_file_pattern=f"{tmp_path}/empty-*")
    with pytest.raises(errors.UsageError, match="every matching file is empty"):
        trainer.run(opts)


def test_a_moved_model_dir_runs_inference_from_another_working_directory(
        trained, tmp_path, monkeypatch, capsys):
    """config.yaml holds the label map itself, not the path the user typed at training."""
    import model_inspect
    from conftest import parse_inspect_flags as options

    moved = tmp_path / "moved" / "model"
    shutil.copytree(trained["dir"], moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = next((_voc(trained) / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    status = model_inspect.run(options("--runmode=infer", f"--ckpt_path={moved}",
                                       f"--input_image={image}", "--output_image_dir=out",
                                       "--min_score_thresh=0.0", "--max_boxes_to_draw=3"))
    assert status == 0
    out = capsys.readouterr().out
    assert "processed 1 image(s) to out" in out
    # drawn with the names stored at training (the VOC json's categories), not 'class <id>'
    from dataset import label_maps

    line = next(ln for ln in out.splitlines() if "3 detections: " in ln)
    names = [part.rsplit(" ", 1)[0] for part in line.split("detections: ")[1].split(" -> ")[0]
             .split(", ")]
    assert names and set(names) <= set(label_maps.VOC_LABEL_MAP.values()), line
    assert (elsewhere / "out" / f"{image.stem}.jpg").exists()  # named after the image


def test_bn_recalibration_rewrites_the_moving_statistics_before_eval(voc_records, tmp_path):
    import bn_calibration
    import record_files

    opts = _opts(voc_records, tmp_path, mode="train", num_examples_per_epoch=8,
                 hparams=_hparams(num_classes=20, moving_average_decay=0,
                                      bn_recalibration_images=4))
    with _capture() as out:
        trainer.run(opts)
    assert any(line.startswith("recalibrated the batch-norm statistics of model.ckpt-1 ")
               for line in out.log), out.log
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    files = record_files.list_record_files(opts.training_file_pattern, "--training_file_pattern")
    config = run_dir.load_run_config(None, None, str(tmp_path))
    expected = bn_calibration.batch_statistics(ckpt, config, files, 4)
    reader = tf.train.load_checkpoint(ckpt)
    for name, value in expected.items():
        np.testing.assert_allclose(reader.get_tensor(name), value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_global_batch_must_split_over_the_replicas(monkeypatch, tmp_path):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(trainer, "_strategy", lambda opts: TwoReplicas())
    opts = RunOptions(mode="train", model_dir=str(tmp_path), strategy="mirrored",
                      train_batch_size=7)
    with pytest.raises(errors.UsageError, match=r"--train_batch_size=7 does not split over "
                                                r"the 2 replicas of --strategy=mirrored"):
        trainer._check_batch_split(opts)
    trainer._check_batch_split(dataclasses.replace(opts, train_batch_size=8))
    trainer._check_batch_split(dataclasses.replace(opts, strategy="default", train_batch_size=7))


@pytest.mark.heavy
def test_train_and_eval_builds_each_graph_once(voc_records, tmp_path, monkeypatch):
    """Three epochs in one training call: one eval line and history entry per epoch, the best
    archived, and the training, evaluation and recalibration graphs each built once."""
    import collections

    import bn_calibration
    import det_model_fn

    built = collections.Counter()
    make_model_fn = det_model_fn.make_model_fn

    def counting_make_model_fn(config, run):
        model_fn = make_model_fn(config, run)

        def counted(features, labels, mode, params=None):
            built[mode] += 1
            return model_fn(features, labels, mode, params)

        return counted

    recalibrator_init = bn_calibration.Recalibrator.__init__

    def counted_init(self, *args, **kwargs):
        built["recalibration"] += 1
        recalibrator_init(self, *args, **kwargs)

    monkeypatch.setattr(det_model_fn, "make_model_fn", counting_make_model_fn)
    monkeypatch.setattr(bn_calibration.Recalibrator, "__init__", counted_init)
    model_dir = tmp_path / "m"
    opts = _opts(voc_records, model_dir, num_epochs=3, log_every_n_steps=1,
                 hparams=_hparams(num_classes=20, moving_average_decay=0,
                                      bn_recalibration_images=4))
    with _capture() as out:
        trainer.run(opts)
    assert built == {"train": 1, "eval": 1, "recalibration": 1}
    evals = [ln for ln in out.stdout.splitlines() if ln.startswith("eval at step")]
    assert [ln.split(":")[0] for ln in evals] == ["eval at step 2", "eval at step 4",
                                                  "eval at step 6"]
    assert sum(m.startswith("recalibrated the batch-norm statistics") for m in out.log) == 3
    assert [m for m in out.log if m.startswith("epoch ")] == [
        "epoch 1/3: trained to step 2", "epoch 2/3: trained to step 4",
        "epoch 3/3: trained to step 6"]
    history = run_dir.read_history(str(model_dir))
    (entry,) = history["sets"].values()
    assert sorted(entry["steps"], key=int) == ["2", "4", "6"]
    best = json.loads((model_dir / "archive" / "best_eval.json").read_text())
    best_ap = max(m["AP"] for m in entry["steps"].values())
    assert best["AP"] == best_ap
    assert entry["steps"][best["checkpoint"].rsplit("-", 1)[1]]["AP"] == best_ap
    assert "trained to step 6 in " in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("best AP ")
    # The progress line's ETA counts the evaluations still to come.
    assert any("ETA" in m for m in out.log if m.startswith("step 3/6"))

"""checkpoint_io: finding a checkpoint from a prefix or a directory, EMA-aware restore that is
all-or-error, and errors that name the checkpoint."""

import os

import numpy as np
import pytest
import tensorflow as tf

import checkpoint_io
import errors
from conftest import tiny_config

tf1 = tf.compat.v1


def _save(tmp_path, values, name="model.ckpt-7"):
    """A checkpoint of {name: array} in tmp_path (with its 'checkpoint' index file)."""
    prefix = str(tmp_path / name)
    checkpoint_io.write_checkpoint({n: np.asarray(v, np.float32) for n, v in values.items()},
                                   prefix, update_index=True)
    return prefix


def test_resolve_checkpoint_from_prefix_or_directory(tmp_path):
    prefix = _save(tmp_path, {"w": [1.0]})
    assert checkpoint_io.resolve_checkpoint(prefix) == prefix
    assert checkpoint_io.resolve_checkpoint(str(tmp_path)) == prefix


def test_resolve_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(errors.CheckpointError, match=f"no checkpoint found in directory "
                                                     f"'{tmp_path}'"):
        checkpoint_io.resolve_checkpoint(str(tmp_path))
    with pytest.raises(errors.CheckpointError, match="checkpoint '/nonexistent/ckpt' not found"):
        checkpoint_io.resolve_checkpoint("/nonexistent/ckpt")


def _restore(prefix, use_ema, shapes=None):
    shapes = shapes or {"a": [2], "b/c": [1]}
    with tf.Graph().as_default():
        variables = [tf1.get_variable(n, s, initializer=tf1.zeros_initializer())
                     for n, s in shapes.items()]
        with tf1.Session() as sess:
            checkpoint_io.restore_variables(sess, prefix, use_ema=use_ema)
            return sess.run({checkpoint_io.var_name(v): v for v in variables})


def test_restore_prefers_ema_shadows_when_asked(tmp_path):
    prefix = _save(tmp_path, {"a": [1, 2], "a/ExponentialMovingAverage": [3, 4], "b/c": [5]})
    ema = _restore(prefix, use_ema=True)
    np.testing.assert_array_equal(ema["a"], [3, 4])
    np.testing.assert_array_equal(ema["b/c"], [5])  # no shadow: the raw value
    raw = _restore(prefix, use_ema=False)
    np.testing.assert_array_equal(raw["a"], [1, 2])


def test_restore_is_all_or_error(tmp_path):
    prefix = _save(tmp_path, {"a": [1, 2, 3]})
    with pytest.raises(errors.CheckpointError) as e:
        _restore(prefix, use_ema=True)
    message = str(e.value)
    assert f"checkpoint '{prefix}' does not fit this model" in message
    assert "1 variables missing, 1 with another shape" in message
    assert "a: checkpoint [3] vs model [2]" in message and "missing b/c" in message
    assert "--" not in message  # a library error names no command-line flag


def test_use_ema_follows_moving_average_decay():
    assert checkpoint_io.use_ema(tiny_config())
    assert not checkpoint_io.use_ema(tiny_config(moving_average_decay=0.0))


def test_a_checkpoint_cut_short_is_found_before_it_is_read(tmp_path):
    prefix = _save(tmp_path, {"a": np.zeros([1000]), "b/c": np.ones([10])})
    assert checkpoint_io.resolve_checkpoint(prefix) == prefix  # whole: 4040 bytes of data
    data = f"{prefix}.data-00000-of-00001"
    whole = open(data, "rb").read()
    open(data, "wb").write(whole[:4000])
    with pytest.raises(errors.CheckpointError, match=f"checkpoint '{prefix}' is truncated: its "
                                                     f"data files hold 4000 bytes of the 4040"):
        checkpoint_io.resolve_checkpoint(str(tmp_path))
    os.remove(data)
    with pytest.raises(errors.CheckpointError, match="has no data file"):
        checkpoint_io.resolve_checkpoint(prefix)
    open(data, "wb").write(whole)
    index = open(prefix + ".index", "rb").read()
    open(prefix + ".index", "wb").write(index[:len(index) // 2])
    with pytest.raises(errors.CheckpointError, match=r"its index file .*\.index cannot be read"):
        checkpoint_io.resolve_checkpoint(prefix)


@pytest.mark.parametrize("name", ["efficientdet-d0", "efficientdet-d1"])
def test_detector_shape_of_the_reference_checkpoints(name, fixtures_dir):
    """What the shapes of a public (BiFPN, 90 classes) checkpoint say is what its config
    builds, and the check names the model it looks like."""
    import json

    import hparams_config

    with open(os.path.join(fixtures_dir, "official_variables", f"{name}.json")) as f:
        shapes = json.load(f)["variables"]
    held = checkpoint_io.DetectorShape.of_checkpoint(shapes)
    config = hparams_config.get_detection_config(name, "fpn_name=bifpn")
    assert held == checkpoint_io.DetectorShape.of_config(config)
    assert (held.fpn_name, held.anchors, held.num_classes) == ("bifpn", 9, 90)
    assert held.describe().startswith(f"{name} (") and held.preset() == name
    assert not checkpoint_io.DetectorShape.of_checkpoint(
        {k: v for k, v in shapes.items() if not k.startswith("class_net")}).is_detector


def test_check_detector_fits_names_the_model_and_the_flags(tmp_path):
    config = tiny_config()  # efficientdet-d0, 16 filters, 2 cells, 1 head layer, 3 classes
    fake = {"efficientnet-b0/stem/conv2d/kernel": [3, 3, 3, 32],
            "class_net/class-0/bias": [16], "class_net/class-predict/bias": [9 * 3],
            "box_net/box-predict/bias": [9 * 4], "vfpn_vertical/level_3/conv/kernel": [1],
            "fpn_cells/cell_0/x": [1], "fpn_cells/cell_1/x": [1]}
    prefix = _save(tmp_path, {k: np.zeros(v) for k, v in fake.items()})
    checkpoint_io.check_detector_fits(prefix, config, "--ckpt_path")
    with pytest.raises(errors.CheckpointError) as e:
        checkpoint_io.check_detector_fits(prefix, tiny_config(num_classes=5), "--ckpt_path")
    assert str(e.value).startswith(f"--ckpt_path: checkpoint '{prefix}' holds a custom "
                                   f"efficientnet-b0 detector (16 filters, 2 cells, 1 head "
                                   f"layers, vfpn, 9 anchors per location) with 3 classes, but "
                                   f"this model (efficientdet-d0) has 5 classes; pass "
                                   f"--hparams=num_classes=3")
    # finetuning with skip_mismatch: another class head is expected
    checkpoint_io.check_detector_fits(prefix, tiny_config(num_classes=5), "--ckpt", True)
    with pytest.raises(errors.CheckpointError, match="has bifpn feature network; pass "
                                                     "--hparams=fpn_name=vfpn"):
        checkpoint_io.check_detector_fits(prefix, tiny_config(fpn_name="bifpn"), "--ckpt", True)


def test_match_variables_renames_prefers_shadows_and_reports(tmp_path):
    prefix = _save(tmp_path, {"old/a": [1, 2], "old/a/ExponentialMovingAverage": [3, 4],
                              "old/b": [5], "old/c": [1, 2, 3]})
    with tf.Graph().as_default():
        new = {n: tf1.get_variable(n, s) for n, s in
               [("new/a", [2]), ("new/b", [1]), ("new/b/ExponentialMovingAverage", [1]),
                ("new/c", [2]), ("new/d", [1])]}

        def match(prefer_ema):
            return checkpoint_io.match_variables(
                prefix, list(new.values()), rename=lambda n: "old/" + n[len("new/"):],
                prefer_ema=prefer_ema)

        matched, missing, mismatched = match(prefer_ema=False)
        assert [(c, checkpoint_io.var_name(v)) for c, v in matched] == [
            ("old/a", "new/a"), ("old/b", "new/b"),
            ("old/b", "new/b/ExponentialMovingAverage")]  # a shadow without one: its weight
        assert missing == ["new/d"] and mismatched == [("new/c", [3], [2])]
        matched, _, _ = match(prefer_ema=True)
        assert [c for c, _ in matched] == ["old/a/ExponentialMovingAverage", "old/b", "old/b"]
        maps = checkpoint_io.assignment_maps(matched)
        assert [sorted(m) for m in maps] == [["old/a/ExponentialMovingAverage", "old/b"],
                                             ["old/b"]]


def test_restore_reads_a_shared_name_into_every_variable(tmp_path):
    """A weight and its shadow (a training graph) both restore from a checkpoint without
    shadows."""
    prefix = _save(tmp_path, {"a": [1, 2]})
    np.testing.assert_array_equal(
        list(_restore(prefix, False, {"a": [2], "a/ExponentialMovingAverage": [2]}).values()),
        [[1, 2], [1, 2]])


def test_resolve_checkpoint_names_the_flag_and_step_of_reads_the_name(tmp_path):
    with pytest.raises(errors.CheckpointError, match=r"^--ckpt: checkpoint '/nonexistent/x' "
                                                     r"not found"):
        checkpoint_io.resolve_checkpoint("/nonexistent/x", "ckpt")
    assert checkpoint_io.latest_step(str(tmp_path)) is None
    prefix = _save(tmp_path, {"w": [1.0]}, name="model.ckpt-1200")
    assert checkpoint_io.step_of(prefix) == 1200
    assert checkpoint_io.latest_step(str(tmp_path)) == 1200


def test_write_checkpoint_updates_the_index_only_when_asked(tmp_path):
    first = _save(tmp_path, {"w": [1.0]}, name="model.ckpt-1")
    other = str(tmp_path / "model.ckpt-2")
    written = checkpoint_io.write_checkpoint({"w": np.ones([1], np.float32)}, other)
    assert sorted(os.path.basename(f) for f in written) == [
        "model.ckpt-2.data-00000-of-00001", "model.ckpt-2.index"]
    assert tf.train.latest_checkpoint(str(tmp_path)) == first
    checkpoint_io.write_checkpoint({"w": np.ones([1], np.float32)}, other, update_index=True)
    assert tf.train.latest_checkpoint(str(tmp_path)) == other

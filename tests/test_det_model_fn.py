"""det_model_fn: losses, learning-rate schedule, checkpoint-init mapping, NaN hook."""


import numpy as np
import pytest
import tensorflow as tf

import checkpoint_io
import det_model_fn
import errors
import hparams_config
import train_hooks

tf1 = tf.compat.v1


def _run(t):
    with tf1.Session() as s:
        s.run(tf1.global_variables_initializer())
        return s.run(t)


def _np_focal(logits, targets, alpha, gamma):
    p = 1 / (1 + np.exp(-logits))
    pt = np.where(targets == 1, p, 1 - p)
    a = np.where(targets == 1, alpha, 1 - alpha)
    ce = -np.log(pt)
    return (a * (1 - pt) ** gamma * ce).sum()


def test_focal_loss_matches_definition():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 3, 5).astype(np.float32) * 3
    targets = (rng.rand(2, 3, 5) > 0.8).astype(np.float32)
    with tf.Graph().as_default():
        got = _run(det_model_fn.focal_loss(tf.constant(logits), tf.constant(targets), 0.25, 1.5,
                                           tf.constant(4.0)))
    np.testing.assert_allclose(got, _np_focal(logits, targets, 0.25, 1.5) / 4, rtol=1e-5)


def test_focal_loss_is_finite_for_huge_logits():
    with tf.Graph().as_default():
        got = _run(det_model_fn.focal_loss(tf.constant([[80.0, -80.0]]),
                                           tf.constant([[0.0, 1.0]]), 0.25, 1.5,
                                           tf.constant(1.0)))
    np.testing.assert_allclose(got, 0.75 * 80 + 0.25 * 80, rtol=1e-5)


def test_huber_box_loss():
    out = np.array([[0.0, 0.05, 1.0, 0.3]], np.float32)
    tgt = np.array([[0.0, 0.1, 0.5, 0.0]], np.float32)  # zeros are background and ignored
    with tf.Graph().as_default():
        got = _run(det_model_fn.huber_box_loss(tf.constant(out), tf.constant(tgt),
                                               tf.constant(2.0), 0.1))
    expected = (0.5 * 0.05 ** 2 + (0.1 * 0.5 - 0.5 * 0.01)) / (2.0 * 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("kind,value", [
    ("iou", 1 - 1 / 7),  # boxes [0,0,2,2] and [1,1,3,3]: inter 1, union 7
    ("giou", 1 - (1 / 7 - (9 - 7) / 9)),  # enclosing box 3x3
    ("diou", 1 - (1 / 7 - 2 / 18)),  # centers 1 apart on both axes, enclosing diagonal^2 18
    ("ciou", 1 - (1 / 7 - 2 / 18)),  # same aspect ratio: no extra term
])
def test_iou_losses_known_values(kind, value):
    with tf.Graph().as_default():
        got = _run(det_model_fn.iou_loss(tf.constant([[0.0, 0, 2, 2]]),
                                         tf.constant([[1.0, 1, 3, 3]]), tf.constant([1.0]),
                                         kind))
    np.testing.assert_allclose(got, value, rtol=1e-5)
    with tf.Graph().as_default():
        zero = _run(det_model_fn.iou_loss(tf.constant([[0.0, 0, 2, 2]]),
                                          tf.constant([[1.0, 1, 3, 3]]), tf.constant([0.0]),
                                          kind))
    assert zero == 0


def _config_and_run(**kw):
    config = hparams_config.get_detection_config("efficientdet-d0")
    config.override(dict(num_epochs=10, lr_warmup_epoch=1.0))
    config.override(kw)
    run = det_model_fn.RunContext(model_dir="unused", train_batch_size=32,
                                  num_examples_per_epoch=320)
    return config, run


@pytest.mark.parametrize("method", ["cosine", "polynomial", "stepwise", "constant"])
def test_learning_rate_schedule(method):
    config, run = _config_and_run(lr_decay_method=method, first_lr_drop_epoch=6.0,
                                  second_lr_drop_epoch=8.5)
    adjusted, warmup, total = det_model_fn.schedule_steps(config, run)
    assert (adjusted, warmup, total) == (0.04, 10, 100)  # 0.08 * 32 / 64
    steps = [0, 5, 10, 55, 60, 85, 100]
    with tf.Graph().as_default():
        step = tf1.placeholder(tf.int64, [])
        lr = det_model_fn.learning_rate_schedule(config, run, step)
        with tf1.Session() as s:
            got = [s.run(lr, {step: v}) for v in steps]
    np.testing.assert_allclose(got[0], 0.008, rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.008 + (0.04 - 0.008) * 0.5, rtol=1e-5)
    if method == "cosine":
        np.testing.assert_allclose(got[2], 0.04, rtol=1e-5)
        np.testing.assert_allclose(got[3], 0.02, rtol=1e-5)
        np.testing.assert_allclose(got[6], 0.0, atol=1e-7)
    elif method == "polynomial":
        np.testing.assert_allclose(got[3], 0.04 * 0.5 ** 0.9, rtol=1e-5)
    elif method == "stepwise":
        np.testing.assert_allclose([got[3], got[4], got[5]], [0.04, 0.004, 0.0004], rtol=1e-5)
    else:
        np.testing.assert_allclose(got[2:], 0.04, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_branch_update_scale(optimizer):
    # 320 steps: the branch starts at step 128 and ramps over 32 steps.
    config, run = _config_and_run(optimizer=optimizer, vfpn_branch_start=0.4,
                                  vfpn_branch_warmup=0.1)
    run = det_model_fn.RunContext(model_dir="unused", train_batch_size=8,
                                  num_examples_per_epoch=256)
    config.override(dict(num_epochs=10))
    assert det_model_fn.branch_steps(config, run) == (128, 32)
    steps = [0, 127, 128, 143, 159, 300]
    with tf.Graph().as_default():
        step = tf1.placeholder(tf.int64, [])
        active, scale = det_model_fn.branch_update_scale(config, run, step)
        with tf1.Session() as s:
            got = [s.run([active, scale], {step: v}) for v in steps]
    assert [bool(a) for a, _ in got] == [False, False, True, True, True, True]
    ramp = np.array([0, 0, 1 / 32, 16 / 32, 1, 1])
    if optimizer == "sgd":
        np.testing.assert_allclose([c for _, c in got], ramp, rtol=1e-6)
    else:
        def correction(t):  # Adam's bias correction of step t
            return np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)

        own = np.array([1, 1, 1, 16, 32, 173])  # the branch's own step count
        want = ramp * correction(own) / correction(np.array(steps) + 1.0)
        np.testing.assert_allclose([c for _, c in got], want, rtol=1e-5)
        assert got[2][1] < 1 / 32  # Adam's fresh moments: the first steps are made smaller


def _saved_checkpoint(tmp_path):
    with tf.Graph().as_default():
        tf1.get_variable("net/a", [2])
        tf1.get_variable("class_net/class-predict/bias", [9])
        tf1.get_variable("net/b/Momentum", [2])
        tf1.train.get_or_create_global_step()
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            return tf1.train.Saver().save(s, str(tmp_path / "ckpt"))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
def test_reg_l2_loss_scales_only_the_vertical_branch(scale):
    with tf.Graph().as_default():
        shared = tf1.get_variable("fpn_cells/cell_0/conv/kernel", initializer=[3.0, 4.0])
        with tf1.variable_scope("vfpn_vertical/level_3/refine_0"):
            tf1.get_variable("conv2d/kernel", initializer=[1.0, 2.0])
            tf1.get_variable("bn/gamma", initializer=[5.0])  # never decayed
        del shared
        got = _run(det_model_fn.reg_l2_loss(0.1, branch_scale=scale))
    # l2_loss is sum(v^2)/2: shared 12.5, branch 2.5.
    np.testing.assert_allclose(got, 0.1 * (12.5 + scale * 2.5), rtol=1e-6)


def test_init_var_map_skips_mismatch_and_optimizer_state(tmp_path):
    path = _saved_checkpoint(tmp_path)
    with tf.Graph().as_default():
        a = tf1.get_variable("net/a", [2])
        ema = tf1.get_variable("net/a/ExponentialMovingAverage", [2])
        head = tf1.get_variable("class_net/class-predict/bias", [27])
        new = tf1.get_variable("net/c", [2])
        momentum = tf1.get_variable("net/b/Momentum", [2])
        step = tf1.train.get_or_create_global_step()
        var_map, skipped = det_model_fn.init_var_map(path, [a, ema, head, new, momentum, step])
    assert var_map == {"net/a": ema} or var_map["net/a"] in (a, ema)
    assert "class_net/class-predict/bias (checkpoint shape [9], model [27])" in skipped
    assert "net/c (not in checkpoint)" in skipped
    assert all("Momentum" not in k and "global_step" not in k for k in var_map)


def test_var_exclude_expr_applies_whatever_skip_mismatch_says(tmp_path):
    """var_exclude_expr used to be ignored unless skip_mismatch was off."""
    with tf.Graph().as_default():
        for name in ("net/a", "net/b", "class_net/class-predict/bias"):
            tf1.get_variable(name, [2], initializer=tf1.ones_initializer())
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            path = tf1.train.Saver().save(s, str(tmp_path / "ones"))
    config, _ = _config_and_run(var_exclude_expr=".*/class-predict/.*", skip_mismatch=True)
    run = det_model_fn.RunContext(model_dir="unused", ckpt=path)
    with tf.Graph().as_default():
        zeros = tf1.zeros_initializer()
        kept = [tf1.get_variable(n, [2], initializer=zeros) for n in ("net/a", "net/b")]
        head = tf1.get_variable("class_net/class-predict/bias", [2], initializer=zeros)
        det_model_fn.initialize_from_checkpoints(config, run)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            np.testing.assert_array_equal(s.run(kept), np.ones([2, 2]))
            np.testing.assert_array_equal(s.run(head), [0, 0])  # excluded: starts afresh


def test_shape_mismatch_without_skip_mismatch_is_an_error(tmp_path):
    path = _saved_checkpoint(tmp_path)
    config, _ = _config_and_run(skip_mismatch=False)
    run = det_model_fn.RunContext(model_dir="unused", ckpt=path)
    with tf.Graph().as_default():
        tf1.get_variable("net/a", [2])
        tf1.get_variable("class_net/class-predict/bias", [27])
        with pytest.raises(errors.CheckpointError, match="skip_mismatch is off"):
            det_model_fn.initialize_from_checkpoints(config, run)


def test_finite_loss_assertion_blocks_the_update_and_names_the_loss():
    with tf.Graph().as_default():
        step = tf1.train.get_or_create_global_step()
        v = tf1.get_variable("w", [], initializer=tf1.ones_initializer())
        box = tf1.placeholder(tf.float32, [])
        check = train_hooks.assert_finite_losses({"cls_loss": v * 2, "box_loss": box}, step)
        with tf.control_dependencies([check]):
            train = tf1.assign_add(v, 1.0)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            s.run(train, {box: 0.5})
            with pytest.raises(tf.errors.InvalidArgumentError) as e:
                s.run(train, {box: float("nan")})
            assert s.run(v) == 2.0  # the failing step changed nothing
    err = errors.from_tf_error(e.value)
    assert isinstance(err, errors.TrainingError)
    assert str(err).startswith("non-finite loss at step 0: box_loss=nan.")
    assert "validate_tfrecord" in str(err)
    assert errors.from_tf_error(ValueError("some other error")) is None


def test_learning_rate_scales_with_the_global_batch():
    """On TPU too: RunContext holds the global batch (all shards), never the per-shard one."""
    config, _ = _config_and_run()
    run = det_model_fn.RunContext(model_dir="unused", train_batch_size=64, num_shards=8,
                                  use_tpu=True)
    assert det_model_fn.schedule_steps(config, run)[0] == pytest.approx(0.08)


@pytest.mark.parametrize("with_shadows", [False, True])
def test_a_checkpoint_initialises_the_weights_and_their_ema_shadows(tmp_path, with_shadows):
    """Training from --ckpt: each weight takes its checkpoint value and its EMA shadow the
    checkpoint's shadow, or, when the checkpoint kept none (moving_average_decay=0), the same
    value as the weight (both read one checkpoint name)."""
    stored = {"net/a": np.array([1.0, 2.0], np.float32)}
    if with_shadows:
        stored["net/a/ExponentialMovingAverage"] = np.array([3.0, 4.0], np.float32)
    checkpoint_io.write_checkpoint(stored, str(tmp_path / "ckpt"))
    config, _ = _config_and_run()
    run = det_model_fn.RunContext(model_dir="unused", ckpt=str(tmp_path / "ckpt"))
    with tf.Graph().as_default():
        a = tf1.get_variable("net/a", [2], initializer=tf1.zeros_initializer())
        step = tf1.train.get_or_create_global_step()
        ema = tf1.train.ExponentialMovingAverage(0.9, num_updates=step)
        ema.apply([a])
        det_model_fn.initialize_from_checkpoints(config, run)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            weight, shadow = s.run([a, ema.average(a)])
    np.testing.assert_array_equal(weight, [1, 2])
    np.testing.assert_array_equal(shadow, [3, 4] if with_shadows else [1, 2])


def test_run_length_is_exact():
    """The run's steps are floor(epochs * images per epoch / batch) in exact arithmetic, for
    every small setting (float division was one step short for e.g. 49 images, batch 3, 30
    epochs), and a fractional epoch count is taken as the decimal it is written as."""
    config, _ = _config_and_run()
    for images in range(1, 50):
        for batch in range(1, 9):
            run = det_model_fn.RunContext(model_dir="unused", train_batch_size=batch,
                                          num_examples_per_epoch=images)
            for epochs in (1, 7, 30):
                config.num_epochs = epochs
                assert det_model_fn.schedule_steps(config, run).total_steps == (
                    images * epochs // batch), (images, batch, epochs)
            assert det_model_fn.steps_per_epoch(run) == max(1, images // batch)
    run = det_model_fn.RunContext(model_dir="unused", train_batch_size=1,
                                  num_examples_per_epoch=100)
    config.lr_warmup_epoch = 0.29
    assert det_model_fn.schedule_steps(config, run).warmup_steps == 29

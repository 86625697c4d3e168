"""utils: sizes, activations, batch norm (incl. cross-replica moments), precision, layers."""

import numpy as np
import pytest
import tensorflow as tf

import utils

tf1 = tf.compat.v1


def test_parse_image_size():
    assert utils.parse_image_size(512) == (512, 512)
    assert utils.parse_image_size("1920x1280") == (1280, 1920)
    assert utils.parse_image_size((640, 300)) == (640, 300)
    assert utils.parse_image_size([256, 384]) == (256, 384)
    for bad in ("12y3", -1, (1, 2, 3), True, 2.5):
        with pytest.raises(ValueError, match="image_size"):
            utils.parse_image_size(bad)


def test_get_feat_sizes_ceil_halving():
    sizes = utils.get_feat_sizes((640, 300), 7)
    assert [(s["height"], s["width"]) for s in sizes] == [
        (640, 300), (320, 150), (160, 75), (80, 38), (40, 19), (20, 10), (10, 5), (5, 3)]


def test_activations():
    x = np.array([-2.0, 0.0, 3.0], np.float32)
    with tf.Graph().as_default(), tf1.Session() as s:
        t = tf.constant(x)
        got = s.run({k: utils.activation_fn(t, k) for k in
                     ("swish", "swish_native", "relu", "relu6", "hswish")})
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(got["swish"], x * sig, rtol=1e-6)
    np.testing.assert_allclose(got["swish_native"], x * sig, rtol=1e-6)
    np.testing.assert_allclose(got["relu6"], [0, 0, 3])
    np.testing.assert_allclose(got["hswish"], x * np.clip(x + 3, 0, 6) / 6, rtol=1e-6)
    with pytest.raises(ValueError, match="unsupported act_type 'gelu'"):
        utils.activation_fn(tf.constant(x), "gelu")


def test_batch_norm_training_updates_moving_stats():
    rng = np.random.RandomState(0)
    x = rng.randn(4, 3, 3, 2).astype(np.float32) * 2 + 5
    with tf.Graph().as_default(), tf1.Session() as s:
        y = utils.batch_norm(tf.constant(x), training=True, name="bn")
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2
        s.run(tf1.global_variables_initializer())
        out, _ = s.run([y, updates])
        by_name = {v.op.name: v for v in tf1.global_variables()}
        mean, var = s.run([by_name["bn/moving_mean"], by_name["bn/moving_variance"]])
        names = sorted(v.op.name for v in tf1.global_variables())
        trainable = sorted(v.op.name for v in tf1.trainable_variables())
    assert names == ["bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance"]
    assert trainable == ["bn/beta", "bn/gamma"]
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    # momentum 0.99: moving = 0.99 * init + 0.01 * batch
    np.testing.assert_allclose(mean, 0.01 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    batch_var = x.var(axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(var, 0.99 + 0.01 * batch_var, rtol=1e-4)


def test_batch_norm_inference_uses_moving_stats():
    x = np.full((1, 2, 2, 1), 3.0, np.float32)
    with tf.Graph().as_default(), tf1.Session() as s:
        y = utils.batch_norm(tf.constant(x), training=False, name="bn")
        s.run(tf1.global_variables_initializer())
        np.testing.assert_allclose(s.run(y), 3.0 / np.sqrt(1 + utils.BN_EPSILON), rtol=1e-6)


def test_cross_replica_moments_and_groups():
    assert utils.cross_replica_group_assignment(8) is None
    groups = utils.cross_replica_group_assignment(64)
    assert len(groups) == 8 and groups[1] == list(range(8, 16))
    # Two replicas simulated by a stand-in sum: replica A holds x, replica B holds x + 2.
    rng = np.random.RandomState(1)
    xa = rng.randn(2, 2, 2, 3).astype(np.float32)
    xb = xa + 2
    with tf.Graph().as_default(), tf1.Session() as s:
        ta, tb = tf.constant(xa), tf.constant(xb)
        mean_stat = [None]

        def fake_sum_seq(t, groups):
            # first call sums means, second call sums mean squares
            if mean_stat[0] is None:
                mean_stat[0] = 1
                return t + tf.reduce_mean(tb, axis=[0, 1, 2])
            return t + tf.reduce_mean(tf.square(tb), axis=[0, 1, 2])

        mean, var = utils.cross_replica_moments(ta, 2, replica_sum=fake_sum_seq)
        m, v = s.run([mean, var])
    both = np.concatenate([xa, xb])
    np.testing.assert_allclose(m, both.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(v, both.var(axis=(0, 1, 2)), rtol=1e-4)


def test_precision_policies():
    assert utils.compute_dtype(None) == tf.float32
    assert utils.compute_dtype("mixed_float16") == tf.float16
    assert utils.compute_dtype("mixed_bfloat16") == tf.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        utils.compute_dtype("int8")
    with tf.Graph().as_default():
        out = utils.build_model_with_precision(
            "mixed_float16", lambda x: {"a": utils.conv2d(x, 4, 3)}, tf.zeros([1, 4, 4, 3]))
        assert out["a"].dtype == tf.float32
        assert {v.dtype.base_dtype for v in tf1.global_variables()} == {tf.float32}


def test_layer_variable_names_and_shapes():
    with tf.Graph().as_default():
        x = tf.zeros([1, 8, 8, 6])
        with tf1.variable_scope("blk"):
            utils.conv2d(x, 4, 3, use_bias=False)
            utils.separable_conv2d(x, 5, 3, name="sep")
            utils.depthwise_conv2d(x, 5)
            utils.dense(tf.zeros([2, 6]), 7)
        got = {v.op.name: v.shape.as_list() for v in tf1.global_variables()}
    assert got == {"blk/conv2d/kernel": [3, 3, 6, 4],
                   "blk/sep/depthwise_kernel": [3, 3, 6, 1],
                   "blk/sep/pointwise_kernel": [1, 1, 6, 5], "blk/sep/bias": [5],
                   "blk/depthwise_conv2d/depthwise_kernel": [5, 5, 6, 1],
                   "blk/dense/kernel": [6, 7], "blk/dense/bias": [7]}


def test_drop_connect_keeps_expectation_and_is_identity_in_inference():
    with tf.Graph().as_default(), tf1.Session() as s:
        x = tf.ones([2000, 1, 1, 1])
        y = utils.drop_connect(x, True, 0.8)
        out = s.run(y)
        assert set(np.unique(out).round(4)) <= {0.0, 1.25}
        assert abs(out.mean() - 1.0) < 0.1
        assert utils.drop_connect(x, False, 0.8) is x


def test_cross_replica_context_switches_training_bn_to_replica_sums(monkeypatch):
    calls = []

    def fake_sum(t, groups):
        calls.append(groups)
        return t * 2  # two identical replicas

    monkeypatch.setattr(tf1.tpu, "cross_replica_sum", fake_sum)
    with tf.Graph().as_default():
        with utils.cross_replica_batch_norm(2):
            utils.batch_norm(tf.ones([2, 2, 2, 3]), training=True, name="a")
        utils.batch_norm(tf.ones([2, 2, 2, 3]), training=True, name="b")  # context left
    assert calls == [None, None]  # mean and mean of squares, once, inside the context only


def test_batch_norm_momentum_context():
    x = np.full((2, 1, 1, 1), 4.0, np.float32)
    with tf.Graph().as_default(), tf1.Session() as s:
        with utils.batch_norm_momentum(0.9):
            utils.batch_norm(tf.constant(x), training=True, name="bn")
        update = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        s.run(tf1.global_variables_initializer())
        s.run(update)
        mean = [v for v in tf1.global_variables() if v.op.name == "bn/moving_mean"][0]
        np.testing.assert_allclose(s.run(mean), 0.4, rtol=1e-6)  # 0.9 * 0 + 0.1 * 4


def _initial_values(seed, build):
    g = tf.Graph()
    with g.as_default():
        if seed is not None:
            tf.compat.v1.set_random_seed(seed)
        build()
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            return s.run({v.op.name: v for v in tf.compat.v1.global_variables()})


def test_with_a_graph_seed_a_variables_init_depends_only_on_its_name():
    def layers(extra_first):
        def build():
            x = tf.zeros([1, 8, 8, 4])
            if extra_first:  # another layer built first shifts TF's op-count-based seeds
                utils.conv2d(tf.zeros([1, 8, 8, 4]), 4, 3, name="extra")
            utils.conv2d(x, 4, 3, name="a")
            utils.separable_conv2d(x, 4, 3, name="b")
        return build

    plain, shifted = _initial_values(1, layers(False)), _initial_values(1, layers(True))
    for name in plain:
        np.testing.assert_array_equal(plain[name], shifted[name], err_msg=name)
    other_seed = _initial_values(2, layers(False))
    assert not np.array_equal(plain["a/kernel"], other_seed["a/kernel"])
    # Same shape, same seed, different names: different draws.
    assert not np.array_equal(plain["b/depthwise_kernel"].ravel()[:16],
                              plain["a/kernel"].ravel()[:16])


def test_without_a_graph_seed_every_build_draws_new_weights():
    def build():
        utils.conv2d(tf.zeros([1, 8, 8, 4]), 4, 3, name="a")
    first, second = _initial_values(None, build), _initial_values(None, build)
    assert not np.array_equal(first["a/kernel"], second["a/kernel"])
    init = tf.compat.v1.glorot_uniform_initializer()
    with tf.Graph().as_default():
        assert utils.name_seeded(init, "a") is init

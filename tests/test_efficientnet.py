"""backbone/efficientnet: reference variable names, parameter counts, features, restore."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import checkpoint_io
import efficientdet_arch
import utils
from backbone import efficientnet
from conftest import tiny_config

tf1 = tf.compat.v1

PARAMS = {"efficientnet-b0": 5288548, "efficientnet-b1": 7794184, "efficientnet-b2": 9109994,
          "efficientnet-b3": 12233232, "efficientnet-b4": 19341616,
          "efficientnet-b5": 30389784, "efficientnet-b6": 43040704,
          "efficientnet-b7": 66347960}


def test_block_string_and_rounding():
    b = efficientnet.decode_block_string("r2_k5_s22_e6_i24_o40_se0.25")
    assert (b.num_repeat, b.kernel_size, b.stride, b.expand_ratio, b.input_filters,
            b.output_filters, b.se_ratio) == (2, 5, 2, 6, 24, 40, 0.25)
    assert efficientnet.round_filters(32, 1.1) == 32
    assert efficientnet.round_filters(1280, 1.8) == 2304
    with pytest.raises(ValueError, match="unknown backbone 'efficientnet-b9'"):
        efficientnet.model_params("efficientnet-b9")


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_classifier_param_counts(name):
    with tf.Graph().as_default() as g:
        efficientnet.build_model(tf1.placeholder(tf.float32, [1, 64, 64, 3]), name, False)
        assert utils.num_trainable_params(g) == PARAMS[name]


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-b1"])
def test_classifier_variables_equal_reference(name, fixtures_dir):
    with open(os.path.join(fixtures_dir, "official_variables", f"{name}.json")) as f:
        expected = json.load(f)["variables"]
    with tf.Graph().as_default():
        efficientnet.build_model(tf1.placeholder(tf.float32, [1, 224, 224, 3]), name, True)
        got = {v.op.name: v.shape.as_list() for v in tf1.global_variables()}
    assert got == expected


def test_feature_endpoints_b0():
    with tf.Graph().as_default():
        ends = {}
        efficientnet.build_model(tf1.placeholder(tf.float32, [4, 224, 224, 3]),
                                 "efficientnet-b0", False, endpoints=ends)
        shapes = {k: v.shape.as_list() for k, v in ends.items() if k.startswith("reduction")}
    assert shapes == {"reduction_1": [4, 112, 112, 16], "reduction_2": [4, 56, 56, 24],
                      "reduction_3": [4, 28, 28, 40], "reduction_4": [4, 14, 14, 112],
                      "reduction_5": [4, 7, 7, 320]}


def test_classifier_checkpoint_restores_into_detector_backbone(tmp_path):
    images = np.random.RandomState(0).randn(2, 128, 128, 3).astype(np.float32)
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [2, 128, 128, 3])
        ends = {}
        logits = efficientnet.build_model(x, "efficientnet-b0", False, endpoints=ends)
        with tf1.Session() as s:
            # Non-trivial BN statistics, so a wrong mapping cannot pass by accident.
            s.run(tf1.global_variables_initializer())
            for v in tf1.global_variables():
                if "moving" in v.op.name:
                    s.run(v.assign(np.random.uniform(0.5, 1.5, v.shape.as_list())))
            want = s.run([ends["reduction_3"], ends["reduction_4"], ends["reduction_5"]],
                         {x: images})
            assert s.run(logits, {x: images}).shape == (2, 1000)
            ckpt = tf1.train.Saver().save(s, str(tmp_path / "efficientnet-b0" / "model.ckpt"))
    config = tiny_config(image_size=128)
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [2, 128, 128, 3])
        feats = efficientdet_arch.build_backbone(x, config, training=False)
        efficientdet_arch.build_heads(
            efficientdet_arch.build_feature_network(feats, config, False), config, False)
        backbone_vars = tf1.global_variables("efficientnet-b0/")
        assert len(backbone_vars) == 304  # the classifier's 311 minus the 7 head/ variables
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            checkpoint_io.restore_variables(s, ckpt, use_ema=False, variables=backbone_vars)
            got = s.run([feats[3], feats[4], feats[5]], {x: images})
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)

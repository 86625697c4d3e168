"""efficientdet_arch: reference compatibility (BiFPN), VFPN size, precision, input sizes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import efficientdet_arch
import hparams_config
import serving
import utils
from conftest import tiny_config

tf1 = tf.compat.v1


def _graph(config, batch=1):
    h, w = utils.parse_image_size(config.image_size)
    g = tf.Graph()
    with g.as_default():
        outs = efficientdet_arch.build_model(tf1.placeholder(tf.float32, [batch, h, w, 3]),
                                             config, False)
    return g, outs


@pytest.mark.parametrize("model", ["efficientdet-d0", "efficientdet-d1"])
def test_bifpn_variables_equal_reference(model, fixtures_dir):
    with open(os.path.join(fixtures_dir, "official_variables", f"{model}.json")) as f:
        ref = json.load(f)
    config = hparams_config.get_detection_config(model, "fpn_name=bifpn,num_classes=90")
    g, _ = _graph(config)
    with g.as_default():
        got = {v.op.name: v.shape.as_list() for v in tf1.global_variables()}
    assert got == ref["variables"]
    assert utils.num_trainable_params(g) == ref["trainable_params"]


@pytest.mark.parametrize("model", [f"efficientdet-d{i}" for i in range(8)])
def test_bifpn_param_counts(model, fixtures_dir):
    with open(os.path.join(fixtures_dir, "official_variables", "bifpn_model_sizes.json")) as f:
        sizes = json.load(f)
    config = hparams_config.get_detection_config(model, "fpn_name=bifpn,num_classes=90")
    g, _ = _graph(config)
    assert utils.num_trainable_params(g) == sizes[model]["trainable_params"]


@pytest.mark.parametrize("model,params,flops", [("efficientdet-d0", 4.5e6, 2.98e9),
                                                ("efficientdet-d1", 7.8e6, 7.45e9)])
def test_vfpn_size_within_5_percent_of_seed(model, params, flops):
    config = hparams_config.get_detection_config(model)
    assert config.fpn_name == "vfpn"
    g, _ = _graph(config)
    n, f = utils.num_trainable_params(g), utils.num_flops(g)
    assert abs(n - params) / params <= 0.05, n
    assert abs(f - flops) / flops <= 0.05, f


def test_output_shapes_non_square():
    config = tiny_config(image_size="256x128")  # W x H
    _, (cls, box) = _graph(config, batch=2)
    assert sorted(cls) == [3, 4, 5, 6, 7]
    assert cls[3].shape.as_list() == [2, 16, 32, 9 * 3]
    assert box[7].shape.as_list() == [2, 1, 2, 9 * 4]


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
def test_forward_in_each_precision(precision, training):
    config = tiny_config(precision=precision)
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.float32, [2, 128, 128, 3])
        cls, box = efficientdet_arch.build_model(x, config, training)
        assert {v.dtype.base_dtype for v in tf1.global_variables()} == {tf.float32}
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            out = s.run({"c": cls, "b": box},
                        {x: np.random.RandomState(0).randn(2, 128, 128, 3)})
    for level in range(3, 8):
        assert out["c"][level].dtype == np.float32 and out["b"][level].dtype == np.float32
        assert np.isfinite(out["c"][level]).all()


def test_forward_at_1920x1280():
    config = hparams_config.get_detection_config("efficientdet-d0", "image_size=1920x1280")
    net = serving.build_raw_network(config, 1)
    with tf1.Session(graph=net.graph) as s:
        serving.restore_or_init(net, s, None, config)
        out = s.run(net.outputs, {net.inputs: serving.random_images(net, 1)})
    assert out["cls_outputs_3"].shape == (1, 160, 240, 810)
    assert out["box_outputs_7"].shape == (1, 10, 15, 36)


def test_unknown_fpn_name_is_clear():
    config = tiny_config()
    config.fpn_name = "fpn"
    with pytest.raises(ValueError, match="unknown fpn_name 'fpn'; valid names"):
        _graph(config)


def test_freeze_vars():
    with tf.Graph().as_default():
        a = tf1.get_variable("efficientnet-b0/x", [1])
        b = tf1.get_variable("class_net/y", [1])
        assert efficientdet_arch.freeze_vars([a, b], r"efficientnet-b0/.*") == [b]
        assert efficientdet_arch.freeze_vars([a, b], None) == [a, b]

"""serving: pre-processing, the raw network's named outputs and freezing, the serving graph's
endpoints, and restoring weights (EMA-aware) or initialising them."""

import numpy as np
import tensorflow as tf

import serving
from conftest import TINY, tiny_config

tf1 = tf.compat.v1


def test_preprocess_resizes_keeps_aspect_and_pads_with_zeros():
    config = tiny_config(image_size="256x128")  # W x H: 128 high, 256 wide
    image = np.full((1, 300, 400, 3), 200, np.uint8)
    with tf.Graph().as_default(), tf1.Session() as sess:
        inputs, scales, sizes = sess.run(serving.preprocess_images(tf.constant(image), config))
    assert inputs.shape == (1, 128, 256, 3)
    # scale = min(128 / 300, 256 / 400) = 0.4267 -> 128 x ceil(170.67) = 171 columns
    np.testing.assert_allclose(scales, [300 / 128], rtol=1e-6)
    np.testing.assert_array_equal(sizes, [[300, 400]])
    expected = (200 / 255 - np.array(config.mean_rgb)) / np.array(config.stddev_rgb)
    np.testing.assert_allclose(inputs[0, :, :171], np.broadcast_to(expected, (128, 171, 3)),
                               rtol=1e-5)
    assert (inputs[0, :, 171:] == 0).all()


def test_raw_network_outputs_are_cls_and_box_outputs_per_level_and_freeze():
    config = tiny_config(**TINY)
    net = serving.build_raw_network(config, 2)
    assert list(net.outputs) == [f"{k}_{lv}" for lv in range(3, 8)
                                 for k in ("cls_outputs", "box_outputs")]
    with tf1.Session(graph=net.graph) as sess:
        assert serving.restore_or_init(net, sess, "_", config) is None
        out = sess.run(net.outputs, {net.inputs: serving.random_images(net, 2)})
        frozen = serving.freeze(sess, net.graph, net.output_names)
    assert out["cls_outputs_3"].shape == (2, 16, 16, 9 * 3)
    assert out["box_outputs_7"].shape == (2, 1, 1, 9 * 4)
    ops = {n.op for n in frozen.node}
    assert "VarHandleOp" not in ops and "Const" in ops
    assert {"input", "cls_outputs_3", "box_outputs_7"} <= {n.name for n in frozen.node}


def test_serving_graph_endpoints():
    graph = serving.build_serving_graph(tiny_config(**TINY), batch_size=None, score_thresh=0.25,
                                        max_output_size=7)
    assert graph.inputs["image_arrays"].shape.as_list() == [None, None, None, 3]
    assert graph.inputs["image_files"].dtype == tf.string
    assert list(graph.outputs) == list(serving.OUTPUT_KEYS) == list(graph.base64_outputs)
    assert graph.outputs["detections"].shape.as_list() == [None, 7, 7]
    assert graph.score_thresh.op.name == "score_thresh" and graph.default_score_thresh == 0.25
    assert set(graph.output_node_names(with_base64=False)) == set(serving.OUTPUT_KEYS)
    assert len(graph.output_node_names()) == 2 * len(serving.OUTPUT_KEYS)


def test_restore_or_init_reads_ema_shadows(test_checkpoint):
    ckpt_dir, config = test_checkpoint
    values = {}
    for decay in (config.moving_average_decay, 0.0):
        net = serving.build_raw_network(tiny_config(**TINY, moving_average_decay=decay), 1)
        with net.graph.as_default():
            (bias,) = [v for v in tf1.global_variables()
                       if v.op.name == "class_net/class-predict/bias"]
        with tf1.Session(graph=net.graph) as sess:
            prefix = serving.restore_or_init(net, sess, ckpt_dir, net.config)
            values[decay] = sess.run(bias)
    assert prefix.endswith("model.ckpt-0")
    np.testing.assert_array_equal(values[0.0], -20.0)  # the raw bias
    assert (values[config.moving_average_decay] > -10).all()  # its EMA shadow

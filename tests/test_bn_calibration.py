"""bn_calibration: recomputed moving statistics make the inference network reproduce the
training-mode forward pass on the calibration batch, and nothing but them changes."""

import numpy as np
import pytest
import tensorflow as tf

import bn_calibration
import efficientdet_arch
import errors
import record_files
import utils
from conftest import SMALL, tiny_config

tf1 = tf.compat.v1
NUM_IMAGES = 6


def _files(voc):
    return record_files.list_record_files(str(voc / "tfrecord" / "pascal*.tfrecord"),
                                          "--training_file_pattern")


def _checkpoint(config, prefix):
    """A fresh model's variables plus a global step, saved at `prefix`."""
    with tf.Graph().as_default():
        tf1.set_random_seed(3)
        h, w = utils.parse_image_size(config.image_size)
        efficientdet_arch.build_model(tf1.placeholder(tf.float32, [1, h, w, 3]), config, False)
        tf1.train.get_or_create_global_step()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            tf1.train.Saver().save(sess, prefix)


def _outputs(config, files, prefix, training):
    """Class and box outputs on the first NUM_IMAGES records (eval preprocessing, one batch),
    with batch-norm in training mode (batch statistics) or inference mode (moving ones)."""
    with tf.Graph().as_default():
        images = bn_calibration.calibration_images(files, config, NUM_IMAGES)
        cls, box = efficientdet_arch.build_model(images, config, training)
        with tf1.Session() as sess:
            tf1.train.Saver().restore(sess, prefix)
            out = sess.run({"cls": cls, "box": box})
    return np.concatenate([out[k][lv].ravel() for k in ("cls", "box") for lv in out[k]])


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


@pytest.mark.heavy
def test_recalibrated_inference_reproduces_the_training_forward(voc_records, tmp_path):
    config = tiny_config(fpn_name="vfpn", num_classes=20, **SMALL)
    files = _files(voc_records)
    prefix = str(tmp_path / "model.ckpt-7")
    _checkpoint(config, prefix)
    before = _tensors(prefix)
    batch_forward = _outputs(config, files, prefix, training=True)
    stale = _outputs(config, files, prefix, training=False)  # fresh moving stats: 0 and 1
    assert not np.allclose(stale, batch_forward, rtol=1e-2, atol=1e-2)

    layers = bn_calibration.recalibrate_checkpoint(prefix, config, files, NUM_IMAGES)

    after = _tensors(prefix)
    assert sorted(after) == sorted(before)
    moving = [n for n in before if n.endswith(("/moving_mean", "/moving_variance"))]
    assert layers == len(moving) // 2 > 0
    for name in before:  # weights, global step: bit for bit; every moving statistic: new
        if name in moving:
            assert not np.array_equal(after[name], before[name]), name
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert int(after["global_step"]) == int(before["global_step"])
    recalibrated = _outputs(config, files, prefix, training=False)
    np.testing.assert_allclose(recalibrated, batch_forward, rtol=1e-3, atol=1e-4)
    assert not tf.io.gfile.glob(str(tmp_path / ".recalibrating-*"))


def test_moving_statistics_never_enter_a_training_step():
    # Why recalibrating between training segments cannot change what training learns: the
    # training-mode loss, hence every gradient, reads no moving statistic.
    config = tiny_config()
    with tf.Graph().as_default():
        h, w = utils.parse_image_size(config.image_size)
        cls, box = efficientdet_arch.build_model(tf1.placeholder(tf.float32, [2, h, w, 3]),
                                                 config, True)
        loss = tf.add_n([tf.reduce_sum(t) for t in list(cls.values()) + list(box.values())])
        weights = tf1.trainable_variables()
        grads = [g for g in tf.gradients(loss, weights) if g is not None]
        moving = {v.op.name for v in tf1.get_collection(utils.MOVING_VARS)}
        assert moving
        seen, stack = set(), [t.op for t in [loss] + grads]
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
        assert not moving & seen


def test_too_few_images_is_named(tmp_path):
    config = tiny_config(num_classes=20)
    prefix = str(tmp_path / "model.ckpt-1")
    _checkpoint(config, prefix)
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(errors.DataError, match="bn_recalibration_images=4: .* at least 2"):
        bn_calibration.batch_statistics(prefix, config, [str(empty)], 4)

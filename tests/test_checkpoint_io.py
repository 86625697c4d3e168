"""checkpoint_io: finding a checkpoint from a prefix or a directory, EMA-aware restore that is
all-or-error, and errors that name the checkpoint."""

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
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(np.asarray(values[n], np.float32)) for n in names])
    tf1.train.update_checkpoint_state(str(tmp_path), prefix)
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

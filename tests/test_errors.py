"""Tests for errors.py: the marker protocol from a graph back to a user error, and first lines."""

import pytest
import tensorflow as tf

import errors

tf1 = tf.compat.v1


def _failed_assert(*data) -> tf.errors.OpError:
    """The error a session raises when tf.debugging.Assert fails with `data` (strings, or
    pieces joined into one string tensor in the graph)."""
    with tf.Graph().as_default():
        check = tf.debugging.Assert(False, [tf.strings.join(list(data))])
        with tf1.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError) as raised:
            sess.run(check)
    return raised.value


def test_a_marked_graph_message_comes_back_as_its_user_error():
    text = "records.tfrecord record 3 (image/source_id=7) has class ids 0,4 [outside 1..3]"
    error = errors.from_tf_error(_failed_assert(errors.graph_message("DataError", text)))
    assert type(error) is errors.DataError and str(error) == text  # its own ']' is kept
    error = errors.from_tf_error(_failed_assert(errors.graph_message("TrainingError"), "step ",
                                                "7"))
    assert type(error) is errors.TrainingError and str(error) == "step 7"


def test_unmarked_errors_are_not_user_errors():
    assert errors.from_tf_error(_failed_assert("plain text")) is None
    assert errors.from_tf_error(ValueError("boom")) is None
    assert errors.from_tf_error(ValueError("<vfpn:NoSuchKind> x")) is None
    with pytest.raises(ValueError, match="unknown user-error kind"):
        errors.graph_message("KeyError", "x")


def test_first_line_skips_locations_and_decorations():
    tf_text = ("Graph execution error:\n\nDetected at node 'x' defined at (most recent call "
               "last):\n  File \"a.py\", line 3\n(0) RESOURCE_EXHAUSTED: OOM when allocating "
               "tensor\t [[{{node conv}}]]\n")
    assert errors.first_line(tf_text) == "RESOURCE_EXHAUSTED: OOM when allocating tensor"
    assert errors.first_line("{{function_node __inference_x}}  Cannot   decode\nmore") == (
        "Cannot decode")
    assert errors.first_line("Exception from src/core.cpp:12:\nCheck 'x' failed\n"
                             "Model has no input 'a'") == "Model has no input 'a'"
    assert errors.first_line("Check 'x' failed") == "Check 'x' failed"  # nothing better
    assert errors.first_line("\n  \n") == ""

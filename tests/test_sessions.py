"""Tests for sessions.py: every session's options and the fast-setup switch."""

import pytest
import tensorflow as tf

import sessions

tf1 = tf.compat.v1


@pytest.mark.parametrize("threads,xla", [(0, False), (2, True)])
def test_session_config(threads, xla):
    config = sessions.session_config(threads, jit_level=2 if xla else 0)
    assert config.intra_op_parallelism_threads == threads
    on = config.graph_options.optimizer_options.global_jit_level == tf1.OptimizerOptions.ON_2
    assert on == xla


def test_training_options():
    config = sessions.session_config(jit_level=1, soft_placement=True, inter_op_threads=4)
    assert config.allow_soft_placement and config.inter_op_parallelism_threads == 4
    assert config.intra_op_parallelism_threads == 0
    assert config.graph_options.optimizer_options.global_jit_level == tf1.OptimizerOptions.ON_1


def test_fast_graph_setup_reaches_every_session():
    """The switch (on in this suite, tests/conftest.py) reaches sessions made through the seam
    and, through TensorFlow's public options, sessions made without a config."""
    def grappler_off(config) -> bool:
        return config.graph_options.rewrite_options.disable_meta_optimizer

    before = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer"))
    try:
        sessions.fast_graph_setup(False)
        assert not grappler_off(sessions.session_config())
        assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")
        sessions.fast_graph_setup(True)
        assert grappler_off(sessions.session_config(threads=2))
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
    finally:
        sessions.fast_graph_setup(before)

"""The options of every TensorFlow session the project makes, and one switch for fast setup.

Every `tf.compat.v1.Session` here, and the Estimator's through its RunConfig, takes its
ConfigProto from `session_config`, so one switch reaches them all: `fast_graph_setup(True)`
turns off Grappler, TensorFlow's graph rewriting when a session first runs a graph. Grappler
changes how kernels are fused, not what they compute, and costs seconds per session; the test
suite turns it off (tests/conftest.py), users keep it. The switch also reaches sessions made
without a config (by TensorFlow itself or by a test), through TensorFlow's public optimizer
options.
"""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

tf1 = tf.compat.v1

_JIT_LEVELS = {1: tf1.OptimizerOptions.ON_1, 2: tf1.OptimizerOptions.ON_2}
_fast_setup = False


def fast_graph_setup(on: bool = True) -> None:
    """Grappler off (`on`) or on for every session made from now on in this process."""
    global _fast_setup
    _fast_setup = on
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": on})


def session_config(threads: int = 0, jit_level: int = 0, soft_placement: bool = False,
                   inter_op_threads: int = 0) -> tf1.ConfigProto:
    """The ConfigProto of a session.

    Args:
      threads: intra-op threads (0: TensorFlow's default); > 0 also makes the inter-op pool one
        thread, as a timed or pinned run wants.
      jit_level: XLA JIT: 0 off, 1 (auto-clustering, training's `--use_xla`) or 2 (everything
        XLA can compile, the benchmark's `--xla`).
      soft_placement: ops without a kernel on the chosen device run elsewhere (training).
      inter_op_threads: the inter-op pool's size when it matters (0: as `threads` says).
    """
    config = tf1.ConfigProto(allow_soft_placement=soft_placement)
    if threads > 0:
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = 1
    if inter_op_threads > 0:
        config.inter_op_parallelism_threads = inter_op_threads
    if jit_level:
        config.graph_options.optimizer_options.global_jit_level = _JIT_LEVELS[jit_level]
    if _fast_setup:
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def new_session(graph: Optional[tf.Graph] = None, **options: Any) -> tf1.Session:
    """A session on `graph` (default: the current graph) with `session_config(**options)`."""
    return tf1.Session(graph=graph, config=session_config(**options))

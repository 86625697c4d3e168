"""Drivers around the raw network: build, restore (EMA-aware), save, freeze and benchmark.

The raw network maps a float32 placeholder `input` [B, H, W, 3] (normalised pixels) to the
per-level head outputs `class_outputs_<l>` [B, H_l, W_l, A * num_classes] and `box_outputs_<l>`
[B, H_l, W_l, A * 4] (see efficientdet_arch). Everything here runs in its own `tf.Graph`, so
callers and tests never depend on global graph state.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

import efficientdet_arch
import utils

tf1 = tf.compat.v1

INPUT_NAME = "input"
EMA_SUFFIX = "/ExponentialMovingAverage"


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the model."""


@dataclasses.dataclass
class RawNetwork:
    """A built raw network: its graph, input placeholder and named outputs."""

    graph: tf.Graph
    inputs: tf.Tensor
    outputs: Dict[str, tf.Tensor]
    config: Any

    @property
    def output_names(self) -> List[str]:
        return [t.op.name for t in self.outputs.values()]


def build_raw_network(config: Any, batch_size: Optional[int] = 1) -> RawNetwork:
    """Build the inference network (BN in inference mode) in a new graph."""
    height, width = utils.parse_image_size(config.image_size)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf1.placeholder(tf.float32, [batch_size, height, width, 3], name=INPUT_NAME)
        class_out, box_out = efficientdet_arch.build_model(inputs, config, training=False)
        outputs = {}
        for level in sorted(class_out):
            outputs[f"class_outputs_{level}"] = tf.identity(class_out[level],
                                                            name=f"class_outputs_{level}")
            outputs[f"box_outputs_{level}"] = tf.identity(box_out[level],
                                                          name=f"box_outputs_{level}")
    return RawNetwork(graph, inputs, outputs, config)


def resolve_checkpoint(ckpt_path: str) -> str:
    """A checkpoint prefix from a prefix or a directory; CheckpointError if there is none."""
    if tf.io.gfile.isdir(ckpt_path):
        latest = tf.train.latest_checkpoint(ckpt_path)
        if not latest:
            raise CheckpointError(f"no checkpoint found in directory '{ckpt_path}' (expected a "
                                  f"'checkpoint' index file written by training or --runmode=dry)")
        return latest
    if not tf.io.gfile.exists(ckpt_path + ".index"):
        raise CheckpointError(f"checkpoint '{ckpt_path}' not found: give a checkpoint prefix "
                              f"(e.g. model_dir/model.ckpt-1000) or a directory holding one")
    return ckpt_path


def restore_variables(sess: tf1.Session, ckpt_path: str, use_ema: bool = True,
                      variables: Optional[List[tf.Variable]] = None) -> str:
    """Restore `variables` (default: all global ones) from `ckpt_path`, preferring EMA shadows.

    With `use_ema`, a variable `v` is read from `v/ExponentialMovingAverage` when the checkpoint
    has it, else from `v`. Every variable must be found with the same shape; otherwise one
    CheckpointError names the mismatch. Returns the resolved checkpoint prefix.
    """
    prefix = resolve_checkpoint(ckpt_path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    variables = variables if variables is not None else tf1.global_variables()
    var_map, missing, mismatched = {}, [], []
    for v in variables:
        name = v.op.name
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in shapes else name
        if source not in shapes:
            missing.append(name)
            continue
        if list(shapes[source]) != v.shape.as_list():
            mismatched.append(f"{name}: checkpoint {shapes[source]} vs model {v.shape.as_list()}")
            continue
        var_map[source] = v
    if missing or mismatched:
        detail = "; ".join(mismatched[:3] + [f"missing {m}" for m in missing[:3]])
        raise CheckpointError(
            f"checkpoint '{prefix}' does not fit this model ({len(missing)} variables missing, "
            f"{len(mismatched)} with another shape: {detail}). Use the --model_name and "
            f"--hparams (e.g. num_classes, fpn_name, image-independent settings) it was "
            f"trained with.")
    tf1.train.Saver(var_map).restore(sess, prefix)
    return prefix


def init_or_restore(net: RawNetwork, sess: tf1.Session, ckpt_path: Optional[str]) -> None:
    """Restore `ckpt_path` (EMA-aware) or, when it is None/'_', initialise randomly."""
    with net.graph.as_default():
        if ckpt_path and ckpt_path != "_":
            use_ema = bool(net.config.moving_average_decay and
                           net.config.moving_average_decay > 0)
            restore_variables(sess, ckpt_path, use_ema=use_ema)
        else:
            sess.run(tf1.global_variables_initializer())


def session_config(threads: int = 0, xla: bool = False) -> tf1.ConfigProto:
    """Session options: `threads` intra-op threads (0 = TF default), optional XLA JIT."""
    config = tf1.ConfigProto()
    if threads > 0:
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = 1
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_2
    return config


def random_images(net: RawNetwork, batch_size: int, seed: int = 0) -> np.ndarray:
    _, height, width, _ = net.inputs.shape.as_list()
    return np.random.RandomState(seed).randn(batch_size, height, width, 3).astype(np.float32)


def save_dry_run(config: Any, logdir: str, model_name: str, ckpt_path: Optional[str] = None,
                 batch_size: int = 1) -> Dict[str, str]:
    """Build, restore or initialise, run once, then write a checkpoint `<logdir>/<model_name>`,
    the graph `<logdir>/<model_name>_train.pb` and a TensorBoard graph event file."""
    tf.io.gfile.makedirs(logdir)
    net = build_raw_network(config, batch_size)
    with net.graph.as_default(), tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        sess.run(net.outputs, {net.inputs: random_images(net, batch_size)})
        prefix = tf1.train.Saver().save(sess, os.path.join(logdir, model_name),
                                        write_meta_graph=False)
        graph_path = os.path.join(logdir, f"{model_name}_train.pb")
        tf.io.write_graph(net.graph.as_graph_def(), logdir, f"{model_name}_train.pb",
                          as_text=False)
        writer = tf1.summary.FileWriter(logdir, net.graph)
        writer.flush()
        writer.close()
    return {"checkpoint": prefix, "graph": graph_path}


def freeze_network(net: RawNetwork, sess: tf1.Session) -> tf1.GraphDef:
    """The network's GraphDef with variables folded in as constants."""
    with net.graph.as_default():
        return tf1.graph_util.convert_variables_to_constants(
            sess, net.graph.as_graph_def(), net.output_names)


def save_frozen(config: Any, logdir: str, model_name: str, ckpt_path: Optional[str] = None,
                batch_size: int = 1) -> str:
    """Write `<logdir>/<model_name>_frozen.pb`: the raw network with its variables folded in."""
    tf.io.gfile.makedirs(logdir)
    net = build_raw_network(config, batch_size)
    with tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        frozen = freeze_network(net, sess)
    path = os.path.join(logdir, f"{model_name}_frozen.pb")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return path


@dataclasses.dataclass
class BenchmarkResult:
    """Network latency of one configuration. Times are seconds."""

    model_name: str
    fpn_name: str
    precision: str
    batch_size: int
    runs: int
    mean_batch_s: float
    median_batch_s: float
    params: int
    flops_per_image: int

    @property
    def mean_image_ms(self) -> float:
        return 1000.0 * self.mean_batch_s / self.batch_size

    @property
    def median_image_ms(self) -> float:
        return 1000.0 * self.median_batch_s / self.batch_size

    @property
    def fps(self) -> float:
        return self.batch_size / self.mean_batch_s

    def summary(self) -> str:
        return (f"{self.model_name} ({self.fpn_name}, {self.precision}, batch {self.batch_size}, "
                f"{self.runs} runs): per image mean {self.mean_image_ms:.2f} ms, median "
                f"{self.median_image_ms:.2f} ms, {self.fps:.2f} FPS; "
                f"params {self.params / 1e6:.3f}M, FLOPs {self.flops_per_image / 1e9:.3f}B")


def benchmark_network(config: Any, batch_size: int = 1, runs: int = 10, warmup: int = 5,
                      threads: int = 0, xla: bool = False, ckpt_path: Optional[str] = None,
                      trace_filename: Optional[str] = None) -> BenchmarkResult:
    """Network latency (first conv to last head output) of the frozen graph.

    Random weights unless `ckpt_path`; `warmup` untimed runs, then `runs` timed ones. FLOPs are
    multiply-adds per image (profiler float ops / 2) and params count trainable variables.
    """
    if runs < 1:
        raise ValueError("--bm_runs must be >= 1")
    net = build_raw_network(config, batch_size)
    params = utils.num_trainable_params(net.graph)
    flops = utils.num_flops(net.graph) // batch_size
    with tf1.Session(graph=net.graph) as sess:
        init_or_restore(net, sess, ckpt_path)
        frozen = freeze_network(net, sess)
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(frozen, name="")
    feed_name = f"{INPUT_NAME}:0"
    fetches = [f"{n}:0" for n in net.output_names]
    images = random_images(net, batch_size)
    times = []
    with tf1.Session(graph=graph, config=session_config(threads, xla)) as sess:
        for _ in range(warmup):
            sess.run(fetches, {feed_name: images})
        for _ in range(runs):
            start = time.perf_counter()
            sess.run(fetches, {feed_name: images})
            times.append(time.perf_counter() - start)
        if trace_filename:
            _write_trace(sess, fetches, {feed_name: images}, trace_filename)
    return BenchmarkResult(config.name, config.fpn_name, config.precision or "float32",
                           batch_size, runs, statistics.mean(times), statistics.median(times),
                           params, flops)


def _write_trace(sess: tf1.Session, fetches, feed, path: str) -> None:
    """One more run with full tracing, written as a Chrome trace (chrome://tracing)."""
    from tensorflow.python.client import timeline  # not in the public API

    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    metadata = tf1.RunMetadata()
    sess.run(fetches, feed, options=options, run_metadata=metadata)
    trace = timeline.Timeline(metadata.step_stats).generate_chrome_trace_format()
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(trace)

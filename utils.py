"""Shared building blocks: layers on named variables, batch norm, activations, precision, sizes.

Layers here create their variables with `tf.compat.v1.get_variable` under the caller's variable
scope, so the variable names are exactly the reference EfficientDet's (e.g.
``<scope>/conv2d/kernel``, ``<scope>/bn/moving_mean``) and public checkpoints restore unchanged.
Variables are always float32; under a mixed precision policy the layer casts them to the dtype of
its input (float16 or bfloat16), which is how the compute dtype flows through the network.

All tensors are NHWC (channels_last).
"""

from __future__ import annotations

import contextlib
import re
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

import errors

tf1 = tf.compat.v1

# Batch-norm defaults of the released checkpoints.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
MOVING_VARS = "moving_vars"


# -------------------------------------------------------------------------------------------------
# Image and feature sizes
# -------------------------------------------------------------------------------------------------
def parse_image_size(image_size: Union[int, str, Sequence[int]]) -> Tuple[int, int]:
    """(height, width) from an int (square), a 'WxH' string, or an (H, W) pair; anything else
    is an `errors.ConfigError` (a user error, and a ValueError).

    >>> parse_image_size('1920x1280')
    (1280, 1920)
    """
    if isinstance(image_size, bool):
        raise errors.ConfigError(f"image_size must be an int, 'WxH' or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        h = w = image_size
    elif isinstance(image_size, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", image_size)
        if m:
            w, h = int(m.group(1)), int(m.group(2))
        elif image_size.strip().isdigit():
            h = w = int(image_size)
        else:
            raise errors.ConfigError(f"image_size string must look like 'WxH' (e.g. '1920x1280'), "
                             f"got {image_size!r}")
    elif isinstance(image_size, (list, tuple)) and len(image_size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in image_size):
        h, w = image_size
    else:
        raise errors.ConfigError(f"image_size must be an int, 'WxH' or (H, W), got {image_size!r}")
    if h <= 0 or w <= 0:
        raise errors.ConfigError(f"image_size must be positive, got {image_size!r}")
    return int(h), int(w)


def get_feat_sizes(image_size: Union[int, str, Sequence[int]],
                   max_level: int) -> List[Dict[str, int]]:
    """Feature map sizes for levels 0..max_level: [{'height': h, 'width': w}, ...].

    Each level halves with ceiling, (x - 1) // 2 + 1, as SAME-padded stride-2 ops do.
    """
    h, w = parse_image_size(image_size)
    sizes = [{"height": h, "width": w}]
    for _ in range(max_level):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        sizes.append({"height": h, "width": w})
    return sizes


# -------------------------------------------------------------------------------------------------
# Activations and precision
# -------------------------------------------------------------------------------------------------
def activation_fn(x: tf.Tensor, act_type: str) -> tf.Tensor:
    """Apply the named activation: swish, swish_native, silu, relu, relu6, hswish."""
    if act_type in ("swish", "silu"):
        return tf.nn.swish(x)
    if act_type == "swish_native":
        return x * tf.sigmoid(x)
    if act_type == "relu":
        return tf.nn.relu(x)
    if act_type == "relu6":
        return tf.nn.relu6(x)
    if act_type == "hswish":
        return x * tf.nn.relu6(x + 3) / 6
    raise ValueError(f"unsupported act_type '{act_type}'; valid: swish, swish_native, silu, "
                     f"relu, relu6, hswish")


_PRECISION_DTYPES = {None: tf.float32, "float32": tf.float32, "mixed_float16": tf.float16,
                     "mixed_bfloat16": tf.bfloat16}


def compute_dtype(precision: Optional[str]) -> tf.DType:
    """The activation dtype of a precision policy (variables stay float32 in all of them)."""
    if precision not in _PRECISION_DTYPES:
        raise ValueError(f"unknown precision '{precision}'; valid: float32, mixed_float16, "
                         f"mixed_bfloat16")
    return _PRECISION_DTYPES[precision]


def build_model_with_precision(precision: Optional[str], model_fn: Callable[..., Any],
                               inputs: tf.Tensor, *args, **kwargs) -> Any:
    """Run `model_fn(inputs, ...)` in the policy's compute dtype and cast outputs to float32."""
    dtype = compute_dtype(precision)
    outputs = model_fn(tf.cast(inputs, dtype), *args, **kwargs)
    return tf.nest.map_structure(
        lambda t: tf.cast(t, tf.float32) if isinstance(t, tf.Tensor) and t.dtype.is_floating
        else t, outputs)


def name_seeded(initializer, name: str):
    """`initializer` with an op seed taken from the variable's full name, if a graph seed is set.

    TF derives an unseeded random op's seed from the number of ops built before it, so adding a
    layer anywhere (VFPN's vertical stage, before the heads) re-draws every variable built after
    it. Seeding by name makes a variable's initial value depend only on the graph seed and its
    own name: with the same ``--tf_random_seed``, VFPN and BiFPN start from identical backbone,
    cell and head weights and differ only in VFPN's own variables, which is what makes their
    learning curves comparable seed by seed. Without a graph seed nothing changes (each run
    draws fresh weights). Non-random initializers (zeros, ones, constants) pass through.
    """
    if tf1.get_default_graph().seed is None or getattr(initializer, "seed", 0) is not None:
        return initializer
    scope = tf1.get_variable_scope().name
    full_name = f"{scope}/{name}" if scope else name
    config = initializer.get_config()
    config["seed"] = zlib.crc32(full_name.encode()) & 0x7FFFFFFF
    return type(initializer).from_config(config)


def _var(name: str, shape: Sequence[int], initializer, trainable: bool = True,
         collections: Optional[List[str]] = None) -> tf.Variable:
    return tf1.get_variable(name, shape=list(shape), dtype=tf.float32,
                            initializer=name_seeded(initializer, name),
                            trainable=trainable, collections=collections)


def _as(x: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """The variable `v` in the compute dtype of `x`."""
    return v if v.dtype.base_dtype == x.dtype else tf.cast(v, x.dtype)


# -------------------------------------------------------------------------------------------------
# Layers on named variables
# -------------------------------------------------------------------------------------------------
def conv_kernel_initializer(scale: float = 2.0):
    """EfficientNet's kernel init: normal with std sqrt(2 / fan_out)."""
    return tf1.variance_scaling_initializer(scale=scale, mode="fan_out",
                                            distribution="untruncated_normal")


def conv2d(x: tf.Tensor, filters: int, kernel_size: int = 1, strides: int = 1,
           use_bias: bool = True, name: str = "conv2d", kernel_initializer=None,
           bias_initializer=None) -> tf.Tensor:
    """SAME-padded 2-D conv; variables `<name>/kernel` [k, k, Cin, Cout] and `<name>/bias`."""
    cin = x.shape[-1]
    with tf1.variable_scope(name):
        kernel = _var("kernel", [kernel_size, kernel_size, cin, filters],
                      kernel_initializer or tf1.glorot_uniform_initializer())
        y = tf.nn.conv2d(x, _as(x, kernel), strides=[1, strides, strides, 1], padding="SAME")
        if use_bias:
            bias = _var("bias", [filters], bias_initializer or tf1.zeros_initializer())
            y = tf.nn.bias_add(y, _as(x, bias))
    return y


def depthwise_conv2d(x: tf.Tensor, kernel_size: int, strides: int = 1,
                     name: str = "depthwise_conv2d", kernel_initializer=None) -> tf.Tensor:
    """Depthwise conv (multiplier 1, no bias): `<name>/depthwise_kernel` [k, k, C, 1]."""
    cin = x.shape[-1]
    with tf1.variable_scope(name):
        kernel = _var("depthwise_kernel", [kernel_size, kernel_size, cin, 1],
                      kernel_initializer or conv_kernel_initializer())
        return tf.nn.depthwise_conv2d(x, _as(x, kernel), strides=[1, strides, strides, 1],
                                      padding="SAME")


def separable_conv2d(x: tf.Tensor, filters: int, kernel_size: int = 3, use_bias: bool = True,
                     name: str = "separable_conv2d", depthwise_initializer=None,
                     pointwise_initializer=None, bias_initializer=None) -> tf.Tensor:
    """Depthwise k x k then pointwise 1x1; variables `depthwise_kernel`, `pointwise_kernel`, `bias`.

    The default initializers (glorot uniform) are those of `tf.layers.separable_conv2d`.
    """
    cin = x.shape[-1]
    with tf1.variable_scope(name):
        dw = _var("depthwise_kernel", [kernel_size, kernel_size, cin, 1],
                  depthwise_initializer or tf1.glorot_uniform_initializer())
        pw = _var("pointwise_kernel", [1, 1, cin, filters],
                  pointwise_initializer or tf1.glorot_uniform_initializer())
        y = tf.nn.separable_conv2d(x, _as(x, dw), _as(x, pw), strides=[1, 1, 1, 1],
                                   padding="SAME")
        if use_bias:
            bias = _var("bias", [filters], bias_initializer or tf1.zeros_initializer())
            y = tf.nn.bias_add(y, _as(x, bias))
    return y


def dense(x: tf.Tensor, units: int, name: str = "dense") -> tf.Tensor:
    """Fully connected layer: `<name>/kernel` [Cin, units], `<name>/bias` [units]."""
    cin = x.shape[-1]
    with tf1.variable_scope(name):
        init_range = 1.0 / np.sqrt(units)
        kernel = _var("kernel", [cin, units], tf1.random_uniform_initializer(-init_range,
                                                                           init_range))
        bias = _var("bias", [units], tf1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(x, _as(x, kernel)), _as(x, bias))


def cross_replica_group_assignment(num_shards: int) -> Optional[List[List[int]]]:
    """TPU replica groups for cross-replica BN: None (one group) up to 8 shards, else groups of
    max(8, num_shards // 8) consecutive replicas, as the released models were trained."""
    if num_shards <= 8:
        return None
    group_size = max(8, num_shards // 8)
    if num_shards % group_size:
        raise ValueError(f"num_shards {num_shards} is not divisible by the BN group size "
                         f"{group_size}")
    return [list(range(g * group_size, (g + 1) * group_size))
            for g in range(num_shards // group_size)]


def cross_replica_moments(x: tf.Tensor, num_shards: int,
                          replica_sum: Optional[Callable[..., tf.Tensor]] = None
                          ) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per-channel mean and variance of `x` [B, H, W, C] over all replicas of a BN group.

    The variance is E[x^2] - E[x]^2 of the group. `replica_sum(t, group_assignment)` defaults to
    `tf.compat.v1.tpu.cross_replica_sum`; tests pass a stand-in.
    """
    replica_sum = replica_sum or tf1.tpu.cross_replica_sum
    groups = cross_replica_group_assignment(num_shards)
    group_size = num_shards if groups is None else len(groups[0])
    local_mean = tf.reduce_mean(x, axis=[0, 1, 2])
    local_sq = tf.reduce_mean(tf.square(x), axis=[0, 1, 2])
    mean = replica_sum(local_mean, groups) / group_size
    mean_sq = replica_sum(local_sq, groups) / group_size
    return mean, mean_sq - tf.square(mean)


_CROSS_REPLICA_SHARDS = [0]
_MOMENTUM = [BN_MOMENTUM]


@contextlib.contextmanager
def batch_norm_momentum(momentum: float):
    """Inside this context, batch norm layers built for training use `momentum` for their
    moving statistics (the released checkpoints use 0.99; short runs track better with less)."""
    previous = _MOMENTUM[0]
    _MOMENTUM[0] = momentum
    try:
        yield
    finally:
        _MOMENTUM[0] = previous


@contextlib.contextmanager
def cross_replica_batch_norm(num_shards: int):
    """Inside this context, training batch norm takes its statistics across `num_shards` TPU
    replicas. Used by det_model_fn when training on TPU."""
    previous = _CROSS_REPLICA_SHARDS[0]
    _CROSS_REPLICA_SHARDS[0] = num_shards if num_shards > 1 else 0
    try:
        yield
    finally:
        _CROSS_REPLICA_SHARDS[0] = previous


def batch_norm(x: tf.Tensor, training: bool, name: str = "tpu_batch_normalization",
               momentum: Optional[float] = None, epsilon: float = BN_EPSILON,
               init_zero: bool = False, cross_replica_shards: Optional[int] = None) -> tf.Tensor:
    """Batch norm over NHWC with variables `<name>/{gamma,beta,moving_mean,moving_variance}`.

    In training, batch statistics normalise `x` and the moving averages are updated
    (moving = momentum * moving + (1 - momentum) * batch) through UPDATE_OPS. With
    `cross_replica_shards` > 0 (TPU training; default: the `cross_replica_batch_norm` context)
    the statistics are taken across replicas.
    """
    if cross_replica_shards is None:
        cross_replica_shards = _CROSS_REPLICA_SHARDS[0]
    if momentum is None:
        momentum = _MOMENTUM[0]
    channels = x.shape[-1]
    with tf1.variable_scope(name):
        gamma = _var("gamma", [channels],
                     tf1.zeros_initializer() if init_zero else tf1.ones_initializer())
        beta = _var("beta", [channels], tf1.zeros_initializer())
        stat_collections = [tf1.GraphKeys.GLOBAL_VARIABLES, MOVING_VARS]
        moving_mean = _var("moving_mean", [channels], tf1.zeros_initializer(), trainable=False,
                           collections=stat_collections)
        moving_var = _var("moving_variance", [channels], tf1.ones_initializer(),
                          trainable=False, collections=stat_collections)
        if not training:
            y, _, _ = tf1.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean,
                                              variance=moving_var, epsilon=epsilon,
                                              is_training=False)
            return y
        if cross_replica_shards > 0:
            xf = tf.cast(x, tf.float32)
            mean, var = cross_replica_moments(xf, cross_replica_shards)
            y = tf.cast(tf.nn.batch_normalization(xf, mean, var, beta, gamma, epsilon), x.dtype)
        else:
            y, mean, var = tf1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon,
                                                   is_training=True)
            if momentum == 0.0:
                # Momentum 0 sets the moving statistics to this batch's (bn_calibration.py):
                # store the biased variance that normalised the batch, not the unbiased
                # estimate fused_batch_norm returns for running averages.
                n = tf.cast(tf.size(x) // channels, var.dtype)
                var = var * (n - 1.0) / n
        decay = 1.0 - momentum
        update_mean = tf1.assign_sub(moving_mean, (moving_mean - mean) * decay)
        update_var = tf1.assign_sub(moving_var, (moving_var - var) * decay)
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_mean)
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update_var)
        return y


def batch_norm_act(x: tf.Tensor, training: bool, act_type: Optional[str] = None,
                   name: str = "tpu_batch_normalization", init_zero: bool = False,
                   cross_replica_shards: Optional[int] = None) -> tf.Tensor:
    """Batch norm, then the activation if `act_type` is given."""
    x = batch_norm(x, training, name=name, init_zero=init_zero,
                   cross_replica_shards=cross_replica_shards)
    return activation_fn(x, act_type) if act_type else x


def drop_connect(x: tf.Tensor, training: bool, survival_prob: Optional[float]) -> tf.Tensor:
    """Stochastic depth: drop whole examples of a residual branch with 1 - survival_prob."""
    if not training or not survival_prob or survival_prob >= 1.0:
        return x
    batch = tf.shape(x)[0]
    keep = survival_prob + tf.random.uniform([batch, 1, 1, 1], dtype=x.dtype)
    return x / survival_prob * tf.floor(keep)


# -------------------------------------------------------------------------------------------------
# Graph statistics
# -------------------------------------------------------------------------------------------------
def num_trainable_params(graph: Optional[tf.Graph] = None, scope: Optional[str] = None) -> int:
    """Number of trainable scalars in `graph` (optionally under `scope`)."""
    graph = graph or tf1.get_default_graph()
    with graph.as_default():
        vs = tf1.trainable_variables(scope)
    return int(sum(np.prod(v.shape.as_list()) for v in vs))


def num_flops(graph: Optional[tf.Graph] = None) -> int:
    """Multiply-adds of one forward pass: tfprof float ops // 2 (the convention of the paper)."""
    graph = graph or tf1.get_default_graph()
    opts = tf1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf1.profiler.profile(graph, options=opts)
    return int(prof.total_float_ops) // 2

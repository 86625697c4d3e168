"""EfficientNet B0..B7 as a classifier and as a multi-level feature extractor.

Mingxing Tan, Quoc V. Le. EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks. ICML 2019. https://arxiv.org/abs/1905.11946

Variables carry the names of the public EfficientNet checkpoints, e.g.
``efficientnet-b0/blocks_1/depthwise_conv2d/depthwise_kernel``, so a classifier checkpoint
restores into the detector's backbone unchanged. Images are NHWC, already normalised.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

import utils

tf1 = tf.compat.v1

# (width multiplier, depth multiplier, resolution, dropout) per model.
_MODEL_PARAMS: Dict[str, Tuple[float, float, int, float]] = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}

# The B0 stages; the other models scale filters and repeats from these.
_BLOCKS_B0 = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

DEPTH_DIVISOR = 8
DEFAULT_SURVIVAL_PROB = 0.8


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One MBConv stage: repeats, kernel, stride, expansion, filters in/out, SE ratio."""

    num_repeat: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: Optional[float]


def decode_block_string(block_string: str) -> BlockArgs:
    """Parse 'r2_k3_s22_e6_i16_o24_se0.25' into `BlockArgs`."""
    opts = {}
    for op in block_string.split("_"):
        m = re.fullmatch(r"([a-z]+)(.*)", op)
        if not m:
            raise ValueError(f"bad block string piece '{op}' in '{block_string}'")
        opts[m.group(1)] = m.group(2)
    stride = opts["s"]
    if len(stride) != 2 or stride[0] != stride[1]:
        raise ValueError(f"block string '{block_string}' needs an equal stride pair like s22")
    return BlockArgs(num_repeat=int(opts["r"]), kernel_size=int(opts["k"]),
                     stride=int(stride[0]), expand_ratio=int(opts["e"]),
                     input_filters=int(opts["i"]), output_filters=int(opts["o"]),
                     se_ratio=float(opts["se"]) if "se" in opts else None)


def model_params(model_name: str) -> Tuple[float, float, int, float]:
    if model_name not in _MODEL_PARAMS:
        raise ValueError(f"unknown backbone '{model_name}'; valid: "
                         f"{', '.join(sorted(_MODEL_PARAMS))}")
    return _MODEL_PARAMS[model_name]


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a channel count by `width`, rounded to a multiple of `divisor` (never < 90%)."""
    filters *= width
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def scaled_blocks(model_name: str) -> List[BlockArgs]:
    """The stages of `model_name` with filters and repeats scaled."""
    width, depth, _, _ = model_params(model_name)
    out = []
    for s in _BLOCKS_B0:
        b = decode_block_string(s)
        out.append(dataclasses.replace(
            b, input_filters=round_filters(b.input_filters, width),
            output_filters=round_filters(b.output_filters, width),
            num_repeat=round_repeats(b.num_repeat, depth)))
    return out


def _squeeze_excite(x: tf.Tensor, input_filters: int, se_ratio: float) -> tf.Tensor:
    reduced = max(1, int(input_filters * se_ratio))
    with tf1.variable_scope("se"):
        s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        s = utils.conv2d(s, reduced, 1, name="conv2d",
                         kernel_initializer=utils.conv_kernel_initializer())
        s = tf.nn.swish(s)
        s = utils.conv2d(s, x.shape[-1], 1, name="conv2d_1",
                         kernel_initializer=utils.conv_kernel_initializer())
    return tf.sigmoid(s) * x


def mbconv_block(x: tf.Tensor, block: BlockArgs, stride: int, training: bool,
                 survival_prob: Optional[float]) -> tf.Tensor:
    """Inverted bottleneck: [expand 1x1 -> BN -> swish] -> depthwise -> BN -> swish -> SE
    -> project 1x1 -> BN [-> drop connect + residual]. Variable names follow the released
    checkpoints."""
    inputs = x
    bn_names = iter(["tpu_batch_normalization", "tpu_batch_normalization_1",
                     "tpu_batch_normalization_2"])
    conv_names = iter(["conv2d", "conv2d_1"])
    init = utils.conv_kernel_initializer()
    filters = block.input_filters * block.expand_ratio
    if block.expand_ratio != 1:
        x = utils.conv2d(x, filters, 1, use_bias=False, name=next(conv_names),
                         kernel_initializer=init)
        x = utils.batch_norm_act(x, training, "swish", name=next(bn_names))
    x = utils.depthwise_conv2d(x, block.kernel_size, stride, name="depthwise_conv2d",
                               kernel_initializer=init)
    x = utils.batch_norm_act(x, training, "swish", name=next(bn_names))
    if block.se_ratio and 0 < block.se_ratio <= 1:
        x = _squeeze_excite(x, block.input_filters, block.se_ratio)
    x = utils.conv2d(x, block.output_filters, 1, use_bias=False, name=next(conv_names),
                     kernel_initializer=init)
    x = utils.batch_norm(x, training, name=next(bn_names))
    if stride == 1 and block.input_filters == block.output_filters:
        x = utils.drop_connect(x, training, survival_prob) + inputs
    return x


def build_model_base(images: tf.Tensor, model_name: str, training: bool,
                     survival_prob: Optional[float] = DEFAULT_SURVIVAL_PROB
                     ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Stem and MBConv blocks of `model_name` under variable scope `model_name`.

    Args:
      images: [B, H, W, 3] normalised images.
      survival_prob: stochastic-depth survival at the last block (linearly decayed from 1.0);
        None or 0 disables drop connect.

    Returns:
      (last block output, endpoints) where endpoints['reduction_<i>'] is the last feature map at
      stride 2**i (i = 1..5): e.g. for b0 at 224, reduction_5 is [B, 7, 7, 320].
    """
    width, _, _, _ = model_params(model_name)
    blocks = scaled_blocks(model_name)
    total = sum(b.num_repeat for b in blocks)
    endpoints: Dict[str, tf.Tensor] = {}
    with tf1.variable_scope(model_name):
        with tf1.variable_scope("stem"):
            x = utils.conv2d(images, round_filters(32, width), 3, strides=2, use_bias=False,
                             kernel_initializer=utils.conv_kernel_initializer())
            x = utils.batch_norm_act(x, training, "swish")
        endpoints["stem"] = x
        idx = 0
        reduction = 0
        flat = []
        for b in blocks:
            for r in range(b.num_repeat):
                flat.append(b if r == 0 else dataclasses.replace(
                    b, input_filters=b.output_filters, stride=1))
        for i, b in enumerate(flat):
            prob = None
            if survival_prob:
                prob = 1.0 - (1.0 - survival_prob) * float(idx) / total
            with tf1.variable_scope(f"blocks_{idx}"):
                x = mbconv_block(x, b, b.stride, training, prob)
            idx += 1
            is_last = i == len(flat) - 1
            if is_last or flat[i + 1].stride > 1:
                reduction += 1
                endpoints[f"reduction_{reduction}"] = x
    return x, endpoints


def build_model(images: tf.Tensor, model_name: str, training: bool, num_classes: int = 1000,
                survival_prob: Optional[float] = DEFAULT_SURVIVAL_PROB,
                endpoints: Optional[Dict[str, tf.Tensor]] = None) -> tf.Tensor:
    """The ImageNet classifier: base, head 1x1 conv -> BN -> swish -> pool -> dropout -> dense.

    Returns logits [B, num_classes]. If `endpoints` is a dict, the base's endpoints are added.
    """
    width, _, _, dropout = model_params(model_name)
    x, base_endpoints = build_model_base(images, model_name, training, survival_prob)
    if endpoints is not None:
        endpoints.update(base_endpoints)
    with tf1.variable_scope(model_name), tf1.variable_scope("head"):
        x = utils.conv2d(x, round_filters(1280, width), 1, use_bias=False,
                         kernel_initializer=utils.conv_kernel_initializer())
        x = utils.batch_norm_act(x, training, "swish")
        x = tf.reduce_mean(x, axis=[1, 2])
        if training and dropout > 0:
            x = tf.nn.dropout(x, rate=dropout)
        return utils.dense(x, num_classes)


def build_features(images: tf.Tensor, model_name: str, training: bool,
                   survival_prob: Optional[float]) -> Dict[int, tf.Tensor]:
    """Backbone features by pyramid level: {1: stride 2, ..., 5: stride 32}."""
    _, endpoints = build_model_base(images, model_name, training, survival_prob)
    return {level: endpoints[f"reduction_{level}"] for level in range(1, 6)}

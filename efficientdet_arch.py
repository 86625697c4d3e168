"""The EfficientDet detector: EfficientNet backbone, P6/P7, feature network, class/box heads.

Mingxing Tan, Ruoming Pang, Quoc V. Le. EfficientDet: Scalable and Efficient Object Detection.
CVPR 2020. https://arxiv.org/abs/1911.09070

`efficientdet(images, config, training)` maps normalised images [B, H, W, 3] to per-level raw
head outputs: class logits [B, H_l, W_l, A * num_classes] (channel = a * num_classes + c) and box
deltas [B, H_l, W_l, A * 4] (channel = a * 4 + k, k in (ty, tx, th, tw)), for l = min_level ..
max_level and A = num_scales * len(aspect_ratios) anchors per location. The feature network is
chosen by `config.fpn_name` through `vfpn.get_fpn_builder`.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

import utils
import vfpn
from backbone import efficientnet
from hparams_config import Config

tf1 = tf.compat.v1

PRIOR_PROBABILITY = 0.01  # class-predict bias -log((1 - p) / p), as in RetinaNet
Outputs = Tuple[Dict[int, tf.Tensor], Dict[int, tf.Tensor]]


def num_anchors(config: Config) -> int:
    return config.num_scales * len(config.aspect_ratios)


def build_backbone(images: tf.Tensor, config: Config, training: bool) -> Dict[int, tf.Tensor]:
    """Backbone features {3: stride 8, 4: stride 16, 5: stride 32} of `config.backbone_name`."""
    name = config.backbone_name
    # Stochastic depth in the backbone is off for b0 and 0.8 for larger ones, as released.
    survival = None if name.endswith("-b0") else efficientnet.DEFAULT_SURVIVAL_PROB
    feats = efficientnet.build_features(images, name, training, survival)
    return {level: feats[level] for level in (3, 4, 5)}


def build_feature_network(features: Dict[int, tf.Tensor], config: Config,
                          training: bool) -> Dict[int, tf.Tensor]:
    """P3-P5 from the backbone, P6/P7 by resampling, then the named feature network."""
    if config.min_level < 3:
        raise ValueError(f"min_level {config.min_level} < 3 is not supported: the backbone's "
                         f"finest pyramid input is P3")
    feat_sizes = utils.get_feat_sizes(config.image_size, config.max_level)
    feats = dict(features)
    for level in range(6, config.max_level + 1):
        size = feat_sizes[level]
        feats[level] = vfpn.resample_feature_map(
            feats[level - 1], f"resample_p{level}", size["height"], size["width"],
            config.fpn_num_filters, training, config)
    feats = {lv: feats[lv] for lv in range(config.min_level, config.max_level + 1)}
    for lv, f in feats.items():
        expect = [feat_sizes[lv]["height"], feat_sizes[lv]["width"]]
        if f.shape.as_list()[1:3] != expect:
            raise ValueError(f"P{lv} has size {f.shape.as_list()[1:3]}, expected {expect}; "
                             f"image_size must be divisible by 2**max_level")
    return vfpn.get_fpn_builder(config.fpn_name)(feats, config, training)


def _head_conv(x: tf.Tensor, filters: int, config: Config, name: str,
               bias_init: float = 0.0) -> tf.Tensor:
    bias_initializer = tf1.constant_initializer(bias_init)
    if config.separable_conv:
        init = tf1.variance_scaling_initializer()  # scale 1, fan_in, truncated normal
        return utils.separable_conv2d(x, filters, 3, use_bias=True, name=name,
                                      depthwise_initializer=init, pointwise_initializer=init,
                                      bias_initializer=bias_initializer)
    return utils.conv2d(x, filters, 3, use_bias=True, name=name,
                        kernel_initializer=tf1.random_normal_initializer(stddev=0.01),
                        bias_initializer=bias_initializer)


def _head(feats: Dict[int, tf.Tensor], config: Config, training: bool, scope: str, prefix: str,
          out_channels: int, bias_init: float) -> Dict[int, tf.Tensor]:
    """A tower shared across levels (convs shared, BN per level), then the predictor."""
    outputs = {}
    with tf1.variable_scope(scope, reuse=tf1.AUTO_REUSE):
        for level, x in feats.items():
            for i in range(config.box_class_repeats):
                orig = x
                x = _head_conv(x, config.fpn_num_filters, config, f"{prefix}-{i}")
                x = utils.batch_norm_act(x, training, config.act_type,
                                         name=f"{prefix}-{i}-bn-{level}")
                if i > 0 and config.survival_prob:
                    x = utils.drop_connect(x, training, config.survival_prob) + orig
            outputs[level] = _head_conv(x, out_channels, config, f"{prefix}-predict", bias_init)
    return outputs


def build_heads(feats: Dict[int, tf.Tensor], config: Config, training: bool) -> Outputs:
    """Class and box heads over every level."""
    anchors = num_anchors(config)
    prior_bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    class_outputs = _head(feats, config, training, "class_net", "class",
                          anchors * config.num_classes, prior_bias)
    box_outputs = _head(feats, config, training, "box_net", "box", anchors * 4, 0.0)
    return class_outputs, box_outputs


def efficientdet(images: tf.Tensor, config: Config, training: bool) -> Outputs:
    """The raw network in the dtype of `images` (see module docstring for the outputs)."""
    if config.data_format != "channels_last":
        raise ValueError("only data_format=channels_last is supported")
    features = build_backbone(images, config, training)
    feats = build_feature_network(features, config, training)
    return build_heads(feats, config, training)


def build_model(images: tf.Tensor, config: Config, training: bool) -> Outputs:
    """`efficientdet` under the config's precision policy; outputs are always float32.

    Training batch norm layers update their moving statistics with the config's
    `batch_norm_momentum`: it is set here, for the duration of this one build, because the
    backbone's builder takes no config.
    """
    with utils.batch_norm_momentum(config.batch_norm_momentum):
        return utils.build_model_with_precision(config.precision, efficientdet, images,
                                                config, training)


def freeze_vars(variables: List[tf.Variable], pattern: Optional[str]) -> List[tf.Variable]:
    """Drop the variables whose name matches `pattern` (re.match) from a trainable list."""
    if not pattern:
        return list(variables)
    regex = re.compile(pattern)
    return [v for v in variables if not regex.match(v.name)]

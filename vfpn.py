"""Feature networks: BiFPN (EfficientDet) and VFPN, built from node lists by one cell builder.

Mingxing Tan, Ruoming Pang, Quoc V. Le. EfficientDet: Scalable and Efficient Object Detection.
CVPR 2020. https://arxiv.org/abs/1911.09070

Topology is data: `bifpn_nodes` returns a list of nodes ``{'feat_level': l, 'inputs_offsets':
[i, j, ...]}`` where an offset indexes the growing list of features (the input levels first, then
one entry per node already built). `build_fpn_cell` walks such a list and never names a variant.

VFPN (docs/architecture.md) runs the same BiFPN cells, then adds a *vertical* stage: for every
level l it concatenates what each of the R cells produced at l, mixes it with a 1x1 conv (R*W -> W)
+ BN + act, refines it with full 3x3 convs (+ BN, act between them) and adds the result to the last
cell's output. With `vfpn_zero_init` the branch's last BN starts at gamma 0, so a fresh VFPN
computes exactly what BiFPN computes on the same weights. Training can hold the branch at those
initial values for the first `vfpn_branch_start` of the run (default 0: it trains from the first
step) and then ramp its updates in (`vfpn_training.py`). Cell variables keep
the BiFPN names, so BiFPN checkpoints restore into VFPN.

`FPN_BUILDERS` is the one name -> builder table; `get_fpn_builder` is the one lookup.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

import errors
import utils
from hparams_config import Config

tf1 = tf.compat.v1

FUSION_EPSILON = 1e-4  # fast normalized fusion (the paper, section 3.3)
VERTICAL_SCOPE = "vfpn_vertical"  # the variable scope of VFPN's vertical stage
Node = Dict[str, Any]


# -------------------------------------------------------------------------------------------------
# Topology
# -------------------------------------------------------------------------------------------------
def bifpn_nodes(min_level: int, max_level: int) -> List[Node]:
    """BiFPN nodes for levels min_level..max_level: a top-down pass, then a bottom-up pass.

    For P3-P7 (offsets 0..4 are the inputs P3..P7, nodes get ids 5..12)::

        P7 --------------------------> P7''(4,11)
        P6 ---------> P6'(3,4) ------> P6''(3,5,10)
        P5 ---------> P5'(2,5) ------> P5''(2,6,9)
        P4 ---------> P4'(1,6) ------> P4''(1,7,8)
        P3 -------------------------> P3''(0,7)
                     top-down           bottom-up

    Top-down node at level l fuses the latest l and the latest l+1; bottom-up node at level l
    fuses every feature produced at l so far and the latest l-1.
    """
    if min_level > max_level:
        raise ValueError(f"min_level {min_level} > max_level {max_level}")
    ids = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    next_id = len(ids)
    nodes: List[Node] = []
    for level in range(max_level - 1, min_level - 1, -1):
        nodes.append({"feat_level": level, "inputs_offsets": [ids[level][-1], ids[level + 1][-1]]})
        ids[level].append(next_id)
        next_id += 1
    for level in range(min_level + 1, max_level + 1):
        nodes.append({"feat_level": level, "inputs_offsets": ids[level] + [ids[level - 1][-1]]})
        ids[level].append(next_id)
        next_id += 1
    return nodes


def check_nodes(nodes: Sequence[Mapping[str, Any]], min_level: int, max_level: int) -> None:
    """Raise ValueError unless every offset points to an earlier feature and every level gets an
    output node."""
    num_inputs = max_level - min_level + 1
    for i, node in enumerate(nodes):
        level = node.get("feat_level")
        offsets = node.get("inputs_offsets")
        if not isinstance(level, int) or not min_level <= level <= max_level:
            raise ValueError(f"fpn node {i}: feat_level {level!r} is outside "
                             f"{min_level}..{max_level}")
        if not offsets:
            raise ValueError(f"fpn node {i}: inputs_offsets is empty")
        for off in offsets:
            if not isinstance(off, int) or not 0 <= off < num_inputs + i:
                raise ValueError(f"fpn node {i}: input offset {off!r} does not point to an "
                                 f"earlier feature (valid 0..{num_inputs + i - 1})")
    missing = set(range(min_level, max_level + 1)) - {n["feat_level"] for n in nodes}
    if missing:
        raise ValueError(f"fpn nodes produce no output for levels {sorted(missing)}")


# -------------------------------------------------------------------------------------------------
# Resampling and fusion
# -------------------------------------------------------------------------------------------------
def _upsample_nearest(x: tf.Tensor, height: int, width: int, use_native: bool) -> tf.Tensor:
    h, w = x.shape[1], x.shape[2]
    if not use_native and height % h == 0 and width % w == 0:
        # Integer factors: repeating rows and columns is exact and cheaper than resize.
        return tf.repeat(tf.repeat(x, height // h, axis=1), width // w, axis=2)
    return tf.cast(tf1.image.resize_nearest_neighbor(x, [height, width]), x.dtype)


def resample_feature_map(x: tf.Tensor, name: str, target_height: int, target_width: int,
                         target_channels: int, training: bool, config: Config) -> tf.Tensor:
    """Bring `x` [B, h, w, c] to [B, target_height, target_width, target_channels].

    A channel change uses a 1x1 conv (+ BN, no activation) named `<name>/conv2d`, `<name>/bn`;
    downsampling is a (stride+1)-window SAME max/avg pool; upsampling is nearest neighbour.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[-1]

    def project(t):
        if channels == target_channels:
            return t
        t = utils.conv2d(t, target_channels, 1, name="conv2d")
        if config.apply_bn_for_resampling:
            t = utils.batch_norm(t, training, name="bn")
        return t

    with tf1.variable_scope(name):
        if height > target_height or width > target_width:
            if not config.conv_after_downsample:
                x = project(x)
            stride_h = (height - 1) // target_height + 1
            stride_w = (width - 1) // target_width + 1
            pool = tf.nn.avg_pool2d if config.pooling_type == "avg" else tf.nn.max_pool2d
            x = pool(x, ksize=[1, stride_h + 1, stride_w + 1, 1],
                     strides=[1, stride_h, stride_w, 1], padding="SAME")
            if config.conv_after_downsample:
                x = project(x)
        else:
            x = project(x)
            if height < target_height or width < target_width:
                x = _upsample_nearest(x, target_height, target_width,
                                      config.use_native_resize_op)
    return x


def fuse_features(nodes: Sequence[tf.Tensor], weight_method: str) -> tf.Tensor:
    """Fuse same-shape features. 'fastattn': sum(relu(w_i) x_i) / (sum relu(w_j) + 1e-4);
    'attn': softmax-weighted sum; 'sum': plain sum. Weights are scalars `WSM`, `WSM_1`, ..."""
    dtype = nodes[0].dtype
    if weight_method == "sum":
        return tf.add_n(list(nodes))
    weights = [tf1.get_variable("WSM" if i == 0 else f"WSM_{i}", shape=[], dtype=tf.float32,
                                initializer=tf1.ones_initializer())
               for i in range(len(nodes))]
    if weight_method == "fastattn":
        ws = [tf.nn.relu(tf.cast(w, dtype)) for w in weights]
        total = tf.add_n(ws) + tf.cast(FUSION_EPSILON, dtype)
        return tf.add_n([n * w / total for n, w in zip(nodes, ws)])
    if weight_method == "attn":
        norm = tf.cast(tf.nn.softmax(tf.stack(weights)), dtype)
        return tf.add_n([n * norm[i] for i, n in enumerate(nodes)])
    raise ValueError(f"unknown weight_method '{weight_method}'; valid: fastattn, attn, sum")


# -------------------------------------------------------------------------------------------------
# The cell builder (shared by every feature network)
# -------------------------------------------------------------------------------------------------
def _conv_op(x: tf.Tensor, filters: int, config: Config, name: str) -> tf.Tensor:
    if config.separable_conv:
        return utils.separable_conv2d(x, filters, 3, use_bias=True, name=name)
    return utils.conv2d(x, filters, 3, use_bias=True, name=name)


def build_fpn_cell(feats: List[tf.Tensor], feat_sizes: List[Dict[str, int]],
                   nodes: Sequence[Mapping[str, Any]], weight_method: str, config: Config,
                   training: bool) -> Dict[int, tf.Tensor]:
    """One cell over `feats` (one per level, min_level first) following `nodes`.

    Variables live under `fnode<i>/`: `resample_<input idx>_<offset>_<#feats>/` where an input
    needs a channel change, `WSM*` fusion weights, and `op_after_combine<#feats>/{conv,bn}`.

    Returns {level: [B, H_l, W_l, fpn_num_filters]}, the last node built at each level.
    """
    feats = list(feats)
    min_level = config.min_level
    for i, node in enumerate(nodes):
        with tf1.variable_scope(f"fnode{i}"):
            size = feat_sizes[node["feat_level"]]
            inputs = []
            for idx, offset in enumerate(node["inputs_offsets"]):
                inputs.append(resample_feature_map(
                    feats[offset], f"resample_{idx}_{offset}_{len(feats)}", size["height"],
                    size["width"], config.fpn_num_filters, training, config))
            x = fuse_features(inputs, weight_method)
            with tf1.variable_scope(f"op_after_combine{len(feats)}"):
                if not config.conv_bn_act_pattern:
                    x = utils.activation_fn(x, config.act_type)
                x = _conv_op(x, config.fpn_num_filters, config, "conv")
                x = utils.batch_norm_act(
                    x, training, config.act_type if config.conv_bn_act_pattern else None,
                    name="bn")
            feats.append(x)
    outputs = {}
    for level in range(min_level, config.max_level + 1):
        for i, node in reversed(list(enumerate(nodes))):
            if node["feat_level"] == level:
                outputs[level] = feats[len(feats) - len(nodes) + i]
                break
    return outputs


def _cell_nodes(config: Config) -> List[Node]:
    if config.fpn_config:
        nodes = config.fpn_config.get("nodes") if hasattr(config.fpn_config, "get") else None
        if nodes is None:
            raise ValueError("hparam 'fpn_config' must be a mapping with a 'nodes' list")
        nodes = [dict(n.as_dict() if hasattr(n, "as_dict") else n) for n in nodes]
    else:
        nodes = bifpn_nodes(config.min_level, config.max_level)
    check_nodes(nodes, config.min_level, config.max_level)
    return nodes


def build_cells(features: Dict[int, tf.Tensor], config: Config, training: bool,
                weight_method: str) -> List[Dict[int, tf.Tensor]]:
    """Run `fpn_cell_repeats` cells under `fpn_cells/cell_<r>`; returns each cell's outputs."""
    nodes = _cell_nodes(config)
    feat_sizes = utils.get_feat_sizes(config.image_size, config.max_level)
    levels = range(config.min_level, config.max_level + 1)
    per_cell = []
    with tf1.variable_scope("fpn_cells"):
        current = features
        for rep in range(config.fpn_cell_repeats):
            with tf1.variable_scope(f"cell_{rep}"):
                current = build_fpn_cell([current[lv] for lv in levels], feat_sizes, nodes,
                                         weight_method, config, training)
            for lv in levels:  # catches a topology that breaks the pyramid's sizes early
                size = feat_sizes[lv]
                got = current[lv].shape.as_list()[1:3]
                if got != [size["height"], size["width"]]:
                    raise ValueError(f"fpn cell {rep} level {lv}: got {got}, expected "
                                     f"{[size['height'], size['width']]}")
            per_cell.append(current)
    return per_cell


def vertical_stage(per_cell: List[Dict[int, tf.Tensor]], config: Config,
                   training: bool) -> Dict[int, tf.Tensor]:
    """VFPN's vertical aggregation over the R cells' outputs, own weights per level.

    `per_cell[r][l]` is cell r's output at level l, [B, H_l, W_l, fpn_num_filters]; returns
    {level: [B, H_l, W_l, fpn_num_filters]}.

    Variables: `vfpn_vertical/level_<l>/aggregate/{conv2d,bn}` (concat) or `.../aggregate/WSM*`
    (fastattn), and `vfpn_vertical/level_<l>/refine_<i>/{conv2d,bn}`.

    With `vfpn_zero_init` the gamma of the branch's last BN starts at 0, so a fresh VFPN outputs
    exactly the last cell's features (it starts as BiFPN, heads included) and learns how much of
    the vertical branch to add; with gamma 1 the branch adds a unit-variance random projection
    of the column to every level the heads see (see benchmarks/results_learning.md).
    """
    width = config.fpn_num_filters
    act = config.act_type
    init = utils.conv_kernel_initializer()
    n = config.vfpn_refine_convs
    zero_last = config.vfpn_zero_init
    outputs = {}
    with tf1.variable_scope(VERTICAL_SCOPE):
        for level in range(config.min_level, config.max_level + 1):
            column = [cell[level] for cell in per_cell]
            with tf1.variable_scope(f"level_{level}"):
                with tf1.variable_scope("aggregate"):
                    if config.vfpn_aggregation == "concat":
                        x = tf.concat(column, axis=-1) if len(column) > 1 else column[0]
                        x = utils.conv2d(x, width, 1, use_bias=False, kernel_initializer=init)
                        x = utils.batch_norm_act(x, training, act, name="bn",
                                                 init_zero=zero_last and n == 0)
                    else:
                        x = utils.activation_fn(fuse_features(column, config.vfpn_aggregation),
                                                act)
                for i in range(n):
                    last = i == n - 1
                    with tf1.variable_scope(f"refine_{i}"):
                        x = utils.conv2d(x, width, 3, use_bias=False, kernel_initializer=init)
                        # The last refine conv has no activation: it feeds the residual sum.
                        x = utils.batch_norm_act(x, training, None if last else act, name="bn",
                                                 init_zero=zero_last and last)
            outputs[level] = column[-1] + x if config.vfpn_residual else x
    return outputs


def _cell_weight_method(config: Config) -> str:
    return config.fpn_weight_method or "fastattn"


def build_bifpn(features: Dict[int, tf.Tensor], config: Config, training: bool
                ) -> Dict[int, tf.Tensor]:
    """BiFPN: stacked cells; fusion from `fpn_weight_method` (fast attention unless set)."""
    return build_cells(features, config, training, _cell_weight_method(config))[-1]


def build_bifpn_sum(features: Dict[int, tf.Tensor], config: Config, training: bool
                    ) -> Dict[int, tf.Tensor]:
    """BiFPN with plain-sum fusion (no fusion weights)."""
    return build_cells(features, config, training, "sum")[-1]


def build_vfpn(features: Dict[int, tf.Tensor], config: Config, training: bool
               ) -> Dict[int, tf.Tensor]:
    """VFPN: the BiFPN cells, then the vertical stage over all cells' outputs."""
    per_cell = build_cells(features, config, training, _cell_weight_method(config))
    return vertical_stage(per_cell, config, training)


FpnBuilder = Callable[[Dict[int, tf.Tensor], Config, bool], Dict[int, tf.Tensor]]

FPN_BUILDERS: Dict[str, FpnBuilder] = {
    "vfpn": build_vfpn,
    "bifpn": build_bifpn,
    "bifpn_sum": build_bifpn_sum,
}


def get_fpn_builder(fpn_name: Optional[str]) -> FpnBuilder:
    """The builder registered as `fpn_name`; an unknown name lists the valid ones."""
    if fpn_name not in FPN_BUILDERS:
        raise errors.ConfigError(f"unknown fpn_name '{fpn_name}'; valid names: "
                         f"{', '.join(sorted(FPN_BUILDERS))}")
    return FPN_BUILDERS[fpn_name]

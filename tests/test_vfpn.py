"""vfpn: topology as data, fusion, the registry, and VFPN's vertical stage."""

import numpy as np
import pytest
import tensorflow as tf

import efficientdet_arch
import hparams_config
import utils
import vfpn
from conftest import tiny_config

tf1 = tf.compat.v1

P3_P7 = [(6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
         (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11])]


def test_bifpn_nodes_p3_p7_exact():
    nodes = vfpn.bifpn_nodes(3, 7)
    assert [(n["feat_level"], n["inputs_offsets"]) for n in nodes] == P3_P7


def test_bifpn_nodes_l2_l7_are_well_formed():
    nodes = vfpn.bifpn_nodes(2, 7)
    assert [(n["feat_level"], n["inputs_offsets"]) for n in nodes] == [
        (6, [4, 5]), (5, [3, 6]), (4, [2, 7]), (3, [1, 8]), (2, [0, 9]),
        (3, [1, 9, 10]), (4, [2, 8, 11]), (5, [3, 7, 12]), (6, [4, 6, 13]), (7, [5, 14])]
    vfpn.check_nodes(nodes, 2, 7)


def test_check_nodes_rejects_bad_topologies():
    with pytest.raises(ValueError, match="node 0: input offset 5 does not point"):
        vfpn.check_nodes([{"feat_level": 3, "inputs_offsets": [5]}], 3, 7)
    with pytest.raises(ValueError, match="no output for levels \\[4, 5, 6, 7\\]"):
        vfpn.check_nodes([{"feat_level": 3, "inputs_offsets": [0, 1]}], 3, 7)
    with pytest.raises(ValueError, match="feat_level 9 is outside"):
        vfpn.check_nodes([{"feat_level": 9, "inputs_offsets": [0]}], 3, 7)


def test_fuse_features_values():
    with tf.Graph().as_default(), tf1.Session() as s:
        x = tf.ones([1, 2, 2, 1])
        outs = {}
        for method in ("fastattn", "attn", "sum"):
            with tf1.variable_scope(method):
                outs[method] = vfpn.fuse_features([x, x], method)
        s.run(tf1.global_variables_initializer())
        got = s.run(outs)
        names = sorted(v.op.name for v in tf1.global_variables())
    np.testing.assert_allclose(got["fastattn"], 0.99995, rtol=1e-6)
    np.testing.assert_allclose(got["attn"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(got["sum"], 2.0)
    assert names == ["attn/WSM", "attn/WSM_1", "fastattn/WSM", "fastattn/WSM_1"]


def test_registry_lookup_and_unknown_name():
    assert set(vfpn.FPN_BUILDERS) == {"vfpn", "bifpn", "bifpn_sum"}
    with pytest.raises(ValueError, match="unknown fpn_name 'bifpm'; valid names: bifpn, "
                                         "bifpn_sum, vfpn"):
        vfpn.get_fpn_builder("bifpm")


def _build(config):
    h, w = utils.parse_image_size(config.image_size)
    g = tf.Graph()
    with g.as_default():
        efficientdet_arch.build_model(tf1.placeholder(tf.float32, [1, h, w, 3]), config, False)
    return g


def _vars(g, scope=None):
    with g.as_default():
        return {v.op.name: v.shape.as_list() for v in tf1.global_variables(scope)}


def test_vertical_stage_variables_and_param_formula():
    r, w = 2, 16
    bifpn = _vars(_build(tiny_config(fpn_name="bifpn")))
    g = _build(tiny_config(fpn_name="vfpn"))
    v = _vars(g)
    vertical = {k: s for k, s in v.items() if k.startswith("vfpn_vertical/")}
    # The cells are exactly BiFPN's, so a BiFPN checkpoint restores into VFPN's cells.
    assert {k: s for k, s in v.items() if k not in vertical} == bifpn
    assert vertical["vfpn_vertical/level_3/aggregate/conv2d/kernel"] == [1, 1, r * w, w]
    assert vertical["vfpn_vertical/level_7/refine_1/conv2d/kernel"] == [3, 3, w, w]
    assert vertical["vfpn_vertical/level_5/refine_0/bn/moving_mean"] == [w]
    per_level = r * w * w + 2 * 9 * w * w + 3 * 2 * w  # 1x1, two 3x3, three BNs (gamma, beta)
    with g.as_default():
        n = utils.num_trainable_params(g, "vfpn_vertical")
    assert n == 5 * per_level


def test_vertical_stage_knobs():
    g = _build(tiny_config(vfpn_aggregation="fastattn", vfpn_refine_convs=1))
    v = _vars(g, "vfpn_vertical")
    assert "vfpn_vertical/level_3/aggregate/WSM_1" in v
    assert not any("refine_1" in k for k in v)
    assert not any("aggregate/conv2d" in k for k in v)
    g = _build(tiny_config(vfpn_aggregation="sum", vfpn_refine_convs=0, vfpn_residual=False,
                           vfpn_zero_init=False))
    assert _vars(g, "vfpn_vertical") == {}


def test_zero_init_needs_a_residual_and_a_bn():
    with pytest.raises(hparams_config.HparamsError, match="needs 'vfpn_residual=True'"):
        tiny_config(vfpn_zero_init=True, vfpn_residual=False)
    with pytest.raises(hparams_config.HparamsError, match="needs a BN in the vertical branch"):
        tiny_config(vfpn_zero_init=True, vfpn_aggregation="fastattn", vfpn_refine_convs=0)
    # concat keeps its aggregate BN, which then is the branch's last BN and starts at 0.
    g = _build(tiny_config(vfpn_zero_init=True, vfpn_refine_convs=0))
    with g.as_default(), tf1.Session() as s:
        s.run(tf1.global_variables_initializer())
        gamma = s.run(tf1.global_variables("vfpn_vertical/level_4/aggregate/bn/gamma")[0])
    np.testing.assert_array_equal(gamma, np.zeros([16], np.float32))


def _network_outputs(config, images, weights=None):
    """The feature network's outputs ('fpn_<l>', [B, H_l, W_l, W]) and the heads' ('class_<l>',
    'box_<l>') on `images` [B, H, W, 3], inference mode, variables freshly initialised (seed 1)
    and then overwritten by `weights` {name: value} where given. Returns (outputs, every
    variable's value {name: array})."""
    g = tf.Graph()
    with g.as_default():
        tf1.set_random_seed(1)
        features = efficientdet_arch.build_backbone(tf.constant(images), config, False)
        feats = efficientdet_arch.build_feature_network(features, config, False)
        cls, box = efficientdet_arch.build_heads(feats, config, False)
        fetch = {}
        for name, outputs in (("fpn", feats), ("class", cls), ("box", box)):
            fetch.update({f"{name}_{lv}": t for lv, t in outputs.items()})
        variables = {v.op.name: v for v in tf1.global_variables()}
        # All assignments built before the session runs: one graph, one run (loading them one
        # by one extends the graph per variable, which took minutes).
        overwrite = [v.assign(weights[name]) for name, v in variables.items()
                     if weights is not None and name in weights]
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            s.run(overwrite)
            return s.run(fetch), s.run(variables)


@pytest.mark.parametrize("zero_init", [True, False])
def test_fresh_vfpn_equals_bifpn_on_the_same_weights(zero_init):
    # The default init (vfpn_zero_init=True) makes a fresh VFPN start as BiFPN: on the same cell,
    # backbone and head weights, every feature the heads see and every class/box output is
    # identical, so early training starts from the baseline and learns the vertical branch on
    # top of it. The old init (gamma 1 on the branch's last BN) adds a random branch as large as
    # the cells' own output.
    images = np.random.RandomState(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    config = tiny_config() if zero_init else tiny_config(vfpn_zero_init=False)
    assert config.fpn_name == "vfpn" and config.vfpn_zero_init == zero_init
    vfpn_out, weights = _network_outputs(config, images)
    bifpn_out, _ = _network_outputs(tiny_config(fpn_name="bifpn"), images, weights)
    assert sorted(vfpn_out) == sorted(bifpn_out)
    for lv in range(3, 8):
        diff = np.abs(vfpn_out[f"fpn_{lv}"] - bifpn_out[f"fpn_{lv}"])
        if zero_init:
            assert diff.max() == 0.0, lv
        else:  # the branch's size is that of the cell output (both BN outputs, gamma 1)
            assert diff.std() > 0.3 * bifpn_out[f"fpn_{lv}"].std(), lv
    if zero_init:
        for k in vfpn_out:
            np.testing.assert_array_equal(vfpn_out[k], bifpn_out[k], err_msg=k)


def test_explicit_fpn_config_nodes():
    nodes = [{"feat_level": lv, "inputs_offsets": [lv - 3]} for lv in range(3, 8)]
    g = _build(tiny_config(fpn_name="bifpn", fpn_config={"nodes": nodes}))
    names = _vars(g, "fpn_cells/cell_0")
    assert "fpn_cells/cell_0/fnode4/op_after_combine9/conv/pointwise_kernel" in names
    assert not any("WSM_1" in k for k in names)


def test_same_seed_vfpn_and_bifpn_start_identical():
    # With the same graph seed a fresh VFPN and a fresh BiFPN hold the same initial value for
    # every variable they share (backbone, cells, heads) although VFPN builds more ops before
    # its heads, and with the zero-initialised branch they compute the same outputs: seed for
    # seed, the learning benchmark compares the two from one starting point.
    images = np.random.RandomState(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    vfpn_out, vfpn_vars = _network_outputs(tiny_config(), images)
    bifpn_out, bifpn_vars = _network_outputs(tiny_config(fpn_name="bifpn"), images)
    assert set(bifpn_vars) < set(vfpn_vars)
    for name, value in bifpn_vars.items():
        np.testing.assert_array_equal(vfpn_vars[name], value, err_msg=name)
    for k in bifpn_out:
        np.testing.assert_array_equal(vfpn_out[k], bifpn_out[k], err_msg=k)

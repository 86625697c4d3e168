"""docs/draw_fpn.py draws from the node lists: positions follow inputs_offsets."""

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "docs"))

import draw_fpn  # noqa: E402
import vfpn  # noqa: E402


def test_every_node_sits_right_of_what_it_reads():
    nodes = vfpn.bifpn_nodes(3, 7)
    inputs = [(0.0, float(level)) for level in range(3, 8)]
    points = draw_fpn.cell_positions(nodes, inputs)
    assert len(points) == 5 + len(nodes)
    for i, node in enumerate(nodes):
        x, y = points[5 + i]
        assert y == node["feat_level"]
        assert all(points[j][0] < x for j in node["inputs_offsets"])


def test_the_picture_is_written(tmp_path):
    out = draw_fpn.draw(str(tmp_path / "fpn.png"), cells=2)
    assert os.path.getsize(out) > 10_000

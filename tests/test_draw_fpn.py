"""docs/draw_fpn.py draws from the node lists: positions follow inputs_offsets."""

import os
import sys

import pytest

from badinput import check, run_in_process, snapshot
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


def _run(argv):
    return run_in_process(draw_fpn.PROG, draw_fpn.DrawOptions, draw_fpn.run, argv)


def test_the_tool_writes_the_picture_it_names(tmp_path):
    out = tmp_path / "pictures" / "fpn.svg"
    outcome = _run([f"--output={out}", "--cells=1"])
    assert outcome.status == 0
    assert outcome.stdout.strip() == f"wrote {out}"
    assert out.read_text().lstrip().startswith("<?xml") and os.listdir(out.parent) == ["fpn.svg"]


BAD_FLAGS = [
    ("no-cells", ["--cells=0"], r"--cells must be >= 1, got 0 \(allowed: \[1, 8\]\)"),
    ("too-many-cells", ["--cells=9"], r"--cells must be <= 8"),
    ("cells-not-a-number", ["--cells=two"], r"--cells=two"),
    ("no-output", ["--output="], r"--output is required"),
    ("unknown-format", ["--output={tmp}/fpn.xyz"], r"--output=.*fpn\.xyz: the suffix picks"),
    ("output-is-a-directory", ["--output={tmp}/taken.png"], r"--output '.*taken\.png' is a "
                                                            r"directory"),
]


@pytest.mark.parametrize("case", BAD_FLAGS, ids=[c[0] for c in BAD_FLAGS])
def test_bad_flags_are_one_line_and_write_nothing(case, tmp_path):
    _, args, pattern = case
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "taken.png" / "keep.txt").write_text("the user's")
    before = snapshot(str(tmp_path))
    outcome = _run([a.format(tmp=tmp_path) for a in args])
    check(outcome, 1, pattern, before, str(tmp_path), may_add=False)

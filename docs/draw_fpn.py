r"""Draw BiFPN and VFPN from the node lists the code builds (docs/fpn.png in README.md).

    python docs/draw_fpn.py --output=docs/fpn.png --cells=2

Each cell is drawn from `vfpn.bifpn_nodes(min_level, max_level)`: the input levels P3..P7 in a
column, then every node at its `feat_level`, with an arrow from each of its `inputs_offsets`.
VFPN's vertical stage is drawn from the same config keys the builder reads
(`vfpn_aggregation`, `vfpn_refine_convs`, `vfpn_residual`). Nothing here is hand-placed per
variant: change the node list and the picture follows.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

Point = Tuple[float, float]


def cell_positions(nodes: Sequence[dict], inputs: Sequence[Point]) -> List[Point]:
    """(x, y) of every feature of one cell: its inputs (one per level, lowest first), then each
    node one column to the right of the rightmost feature it reads, at y = its level."""
    points: List[Point] = list(inputs)
    for node in nodes:
        x = max(points[i][0] for i in node["inputs_offsets"]) + 1.0
        points.append((x, float(node["feat_level"])))
    return points


def draw(output: str, cells: int, min_level: int = 3, max_level: int = 7) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import hparams_config
    import vfpn

    config = hparams_config.get_efficientdet_config("efficientdet-d0")
    nodes = vfpn.bifpn_nodes(min_level, max_level)
    levels = list(range(min_level, max_level + 1))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1.35]})
    for ax, name in zip(axes, ("bifpn", "vfpn")):
        inputs: List[Point] = [(0.0, float(level)) for level in levels]
        outputs: List[Dict[int, Point]] = []
        for cell in range(cells):
            points = cell_positions(nodes, inputs)
            for i, node in enumerate(nodes):
                dst = points[len(levels) + i]
                for src in (points[j] for j in node["inputs_offsets"]):
                    ax.annotate("", dst, src, arrowprops=dict(arrowstyle="->", lw=0.8,
                                                              color="0.45"))
            for x, y in points[len(levels):]:
                ax.plot(x, y, "o", ms=9, color="tab:blue", zorder=3)
            # the last node built at each level is the cell's output there
            last: Dict[int, Point] = {}
            for i, node in enumerate(nodes):
                last[node["feat_level"]] = points[len(levels) + i]
            outputs.append(last)
            left = min(p[0] for p in points[len(levels):])
            right = max(p[0] for p in points)
            ax.text((left + right) / 2, max_level + 0.7, f"cell {cell}", ha="center",
                    fontsize=10)
            inputs = [last[level] for level in levels]
        x0 = max(p[0] for out in outputs for p in out.values())
        for level in levels:
            ax.plot(0, level, "s", ms=9, color="tab:gray", zorder=3)
            ax.text(-0.35, level, f"P{level}", ha="right", va="center", fontsize=10)
        if name == "vfpn":
            _draw_vertical(ax, outputs, levels, x0, config)
        ax.set_title({"bifpn": "BiFPN: stacked cells (fast-attention fusion at every node)",
                      "vfpn": "VFPN: the same cells + a vertical stage per level"}[name],
                     fontsize=11)
        ax.set_xlim(-1.0, x0 + (3.6 if name == "vfpn" else 0.8))
        ax.set_ylim(min_level - 0.8, max_level + 1.1)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    fig.savefig(output, dpi=110)
    return output


def _draw_vertical(ax, outputs: List[Dict[int, Point]], levels: Sequence[int], x_last: float,
                   config) -> None:
    """Every cell's output at a level feeds that level's aggregation box; the box's result is
    added to the last cell's output (the residual), giving the level's output."""
    box_x, out_x = x_last + 1.6, x_last + 3.0
    refine = config.vfpn_refine_convs
    label = (f"{config.vfpn_aggregation}" + (" + 1x1" if config.vfpn_aggregation == "concat"
                                             else "") + f"\n+ {refine}x 3x3 conv")
    for level in levels:
        for cell_out in outputs:
            src = cell_out[level]
            ax.annotate("", (box_x - 0.45, level), src,
                        arrowprops=dict(arrowstyle="->", lw=0.7, color="tab:orange",
                                        connectionstyle="arc3,rad=-0.12"))
        ax.text(box_x, level, label, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="moccasin", ec="tab:orange"))
        ax.annotate("", (out_x - 0.15, level), (box_x + 0.45, level),
                    arrowprops=dict(arrowstyle="->", lw=0.9, color="tab:orange"))
        if config.vfpn_residual:
            ax.text(out_x - 0.5, level + 0.22, "+ last cell", fontsize=6, color="tab:green")
        ax.plot(out_x, level, "o", ms=9, color="tab:green", zorder=3)
    ax.text(box_x, max(levels) + 0.7, "vertical stage", ha="center", fontsize=10)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="docs/fpn.png")
    parser.add_argument("--cells", type=int, default=2, help="cells drawn (d0 has 3)")
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.output, args.cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

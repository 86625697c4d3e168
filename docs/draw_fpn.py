r"""Draw BiFPN and VFPN from the node lists the code builds (docs/fpn.png in README.md).

    python docs/draw_fpn.py --output=docs/fpn.png --cells=2

Each cell is drawn from `vfpn.bifpn_nodes(min_level, max_level)`: the input levels P3..P7 in a
column, then every node at its `feat_level`, with an arrow from each of its `inputs_offsets`.
VFPN's vertical stage is drawn from the same config keys the builder reads
(`vfpn_aggregation`, `vfpn_refine_convs`, `vfpn_residual`). Nothing here is hand-placed per
variant: change the node list and the picture follows.

The picture replaces --output (written atomically); its format follows the file's suffix (.png,
.svg, .pdf, ...). Exit status: 0 when written; 1 for a bad flag, printed as one line
`draw_fpn.py: error: ...`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

import dataclasses  # noqa: E402
from typing import Dict, List, Sequence, Tuple  # noqa: E402

import cli  # noqa: E402
import errors  # noqa: E402
import outputs  # noqa: E402

PROG = "draw_fpn.py"
Point = Tuple[float, float]


@dataclasses.dataclass
class DrawOptions:
    """The tool's flags: each default and help text is written here once."""

    output: str = cli.field("docs/fpn.png", "The picture to write; its suffix picks the format.")
    cells: int = cli.field(2, "Cells drawn per network (d0 has 3).", bounds="[1, 8]")


def picture_formats() -> List[str]:
    """The file suffixes (without the dot) matplotlib writes pictures in."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_options(opts: DrawOptions) -> None:
    """Flag-only checks, creating nothing; each error names the flag."""
    if not opts.output:
        raise errors.UsageError("--output is required, e.g. --output=docs/fpn.png.")
    cli.check_bounds(opts)
    suffix = os.path.splitext(opts.output)[1].lstrip(".").lower()
    if suffix not in picture_formats():
        raise errors.UsageError(f"--output={opts.output}: the suffix picks the picture format; "
                                f"end it with one of .{', .'.join(picture_formats())}.")
    outputs.check_locations([outputs.Planned("output", opts.output, (opts.output,))])


def cell_positions(nodes: Sequence[dict], inputs: Sequence[Point]) -> List[Point]:
    """(x, y) of every feature of one cell: its inputs (one per level, lowest first), then each
    node one column to the right of the rightmost feature it reads, at y = its level."""
    points: List[Point] = list(inputs)
    for node in nodes:
        x = max(points[i][0] for i in node["inputs_offsets"]) + 1.0
        points.append((x, float(node["feat_level"])))
    return points


def draw(output: str, cells: int, min_level: int = 3, max_level: int = 7) -> str:
    """Draw BiFPN (left) and VFPN (right) with `cells` cells into the picture `output`;
    returns `output`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    import hparams_config
    import vfpn

    config = hparams_config.get_efficientdet_config("efficientdet-d0")
    nodes = vfpn.bifpn_nodes(min_level, max_level)
    levels = list(range(min_level, max_level + 1))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1.35]})
    for ax, name in zip(axes, ("bifpn", "vfpn")):
        outs = _draw_cells(ax, nodes, levels, cells)
        x0 = max(p[0] for out in outs for p in out.values())
        for level in levels:
            ax.plot(0, level, "s", ms=9, color="tab:gray", zorder=3)
            ax.text(-0.35, level, f"P{level}", ha="right", va="center", fontsize=10)
        if name == "vfpn":
            _draw_vertical(ax, outs, levels, x0, config)
        ax.set_title({"bifpn": "BiFPN: stacked cells (fast-attention fusion at every node)",
                      "vfpn": "VFPN: the same cells + a vertical stage per level"}[name],
                     fontsize=11)
        ax.set_xlim(-1.0, x0 + (3.6 if name == "vfpn" else 0.8))
        ax.set_ylim(min_level - 0.8, max_level + 1.1)
        ax.axis("off")
    fig.tight_layout()
    with outputs.atomic_path(output) as tmp:  # the temporary name keeps the suffix (format)
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return output


def _draw_cells(ax, nodes: Sequence[dict], levels: Sequence[int], cells: int
                ) -> List[Dict[int, Point]]:
    """Draw `cells` stacked cells, each reading the previous one's outputs (the first reads
    the input levels at x = 0); returns each cell's {level: position of its output}."""
    inputs: List[Point] = [(0.0, float(level)) for level in levels]
    outs: List[Dict[int, Point]] = []
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
        outs.append(last)
        left = min(p[0] for p in points[len(levels):])
        right = max(p[0] for p in points)
        ax.text((left + right) / 2, max(levels) + 0.7, f"cell {cell}", ha="center", fontsize=10)
        inputs = [last[level] for level in levels]
    return outs


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


def run(opts: DrawOptions) -> int:
    """Check the flags, draw, say where; exit status 0."""
    check_options(opts)
    cli.import_tensorflow()  # the config module needs it; its start-up noise stays out
    print(f"wrote {draw(opts.output, opts.cells)}")
    return 0


if __name__ == "__main__":
    cli.run_tool(PROG, run, DrawOptions)

"""Network latency (model_inspect --runmode=bm) of d0/d1, VFPN vs BiFPN, batch 1 and 8.

    python benchmarks/bench_model.py --threads=2 --runs=20 --out=benchmarks/results_model.md \
        --overwrite

Each configuration runs in its own process, interleaved (vfpn, bifpn, vfpn, bifpn, ...) over
`--repeats` rounds so that drift in machine load hits both networks alike; the table reports the
median over rounds of each run's mean per-image latency.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict

import machine


def row_values(result: Dict[str, Any]) -> Dict[str, float]:
    """The numbers a table row needs from a bm --results_json: per-image mean and median ms,
    FPS, params in millions and FLOPs per image in billions."""
    return dict(mean=result["mean_image_ms"], median=result["median_image_ms"],
                fps=result["fps"], params=result["params"] / 1e6,
                flops=result["flops_per_image"] / 1e9)


def run_bm(model: str, fpn: str, batch: int, runs: int, threads: int, precision: str
           ) -> Dict[str, float]:
    hparams = f"fpn_name={fpn}" + (f",precision={precision}" if precision else "")
    return row_values(machine.model_inspect_results([
        "--runmode=bm", f"--model_name={model}", f"--hparams={hparams}",
        f"--batch_size={batch}", f"--bm_runs={runs}", f"--threads={threads}"]))


def main() -> None:
    p = machine.parser(__doc__, models="efficientdet-d0,efficientdet-d1", batches="1,8", runs=20,
                       repeats=3, threads=0)
    p.add_argument("--precision", default="", help="hparam precision (default float32)")
    args = p.parse_args()
    machine.check_outputs(args)

    rows = []
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            results = {"vfpn": [], "bifpn": []}
            for _ in range(args.repeats):
                for fpn in ("vfpn", "bifpn"):
                    results[fpn].append(run_bm(model, fpn, batch, args.runs, args.threads,
                                               args.precision))
            base = statistics.median(r["mean"] for r in results["bifpn"])
            for fpn in ("vfpn", "bifpn"):
                rs = results[fpn]
                ms = statistics.median(r["mean"] for r in rs)
                rows.append(machine.row(model, fpn, batch, f"{rs[0]['params']:.3f}M",
                                        f"{rs[0]['flops']:.3f}B", f"{ms:.1f}",
                                        f"{1000 / ms:.1f}", f"{ms / base:.3f}"))
                print(rows[-1], flush=True)
    above = machine.line(
        f"threads={args.threads or 'TF default'}; precision={args.precision or 'float32'}; "
        f"{args.runs} timed runs after 5 warm-ups, median of {args.repeats} interleaved rounds")
    columns = ("model", "fpn", "batch", "params", "FLOPs/img", "ms/img", "img/s", "vs BiFPN")
    machine.print_and_save(machine.table([above], columns, rows), args.out)


if __name__ == "__main__":
    main()

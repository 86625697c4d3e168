"""How long `./demo.sh` takes on this machine after the install, and what its model scores.

    python benchmarks/bench_demo.py --rounds=1 --out=benchmarks/results_demo.md

Runs `./demo.sh` (the full demo, or `--quick`) into a new temporary `DEMO_DIR` per round, with
`.venv` already installed, and reports its wall time and the AP, AP50, AP75 and APs/m of the
demo model's evaluation, read from the model directory's `eval_history.json`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from typing import Dict, List

import machine
from machine import ROOT


def run_demo(demo_dir: str, quick: bool) -> Dict[str, float]:
    """{'seconds', 'AP', ...} of one `./demo.sh` run into `demo_dir`."""
    start = time.perf_counter()
    result = subprocess.run([os.path.join(ROOT, "demo.sh")] + (["--quick"] if quick else []),
                            cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, DEMO_DIR=demo_dir))
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"demo.sh failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    with open(os.path.join(demo_dir, "model", "eval_history.json")) as f:
        (entry,) = json.load(f)["sets"].values()
    (metrics,) = entry["steps"].values()
    return dict(metrics, seconds=seconds)


def main() -> None:
    p = machine.parser(__doc__)
    p.add_argument("--rounds", type=int, default=1, help="demo runs, one after another")
    p.add_argument("--quick", action="store_true", help="./demo.sh --quick")
    args = p.parse_args()
    machine.check_outputs(args)

    runs: List[Dict[str, float]] = []
    for r in range(args.rounds):
        with machine.work_dir(None, "bench_demo_") as work:
            runs.append(run_demo(os.path.join(work, "demo"), args.quick))
        print(f"round {r + 1}: {runs[-1]['seconds']:.0f} s, AP {runs[-1]['AP']:.4f}", flush=True)
    rows = [machine.row(i + 1, f"{r['seconds'] / 60:.1f}", *(f"{r[k]:.4f}" for k in (
        "AP", "AP50", "AP75", "APs", "APm"))) for i, r in enumerate(runs)]
    above = machine.line(f"threads: TF default; `./demo.sh{' --quick' if args.quick else ''}` "
                         f"after the install (`.venv` ready), nothing else running; AP on the "
                         f"64 held-out images")
    text = machine.table([above], ("run", "minutes", "AP", "AP50", "AP75", "APs", "APm"), rows)
    text += f"\nMedian: {statistics.median(r['seconds'] for r in runs) / 60:.1f} minutes.\n"
    machine.print_and_save(text, args.out)


if __name__ == "__main__":
    main()

"""How long `./demo.sh` takes on this machine after the install, and what its model scores.

    python benchmarks/bench_demo.py --rounds=1 --out=benchmarks/results_demo.md

Runs `./demo.sh` (the full demo, or `--quick`) into a new temporary `DEMO_DIR` per round, with
`.venv` already installed, and reports its wall time and the AP, AP50, AP75 and APs/m of the
demo model's evaluation, read from the model directory's `eval_history.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from machine import add_overwrite_flag, check_outputs, cpu_name, print_and_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="./demo.sh --quick")
    p.add_argument("--out", default="")
    add_overwrite_flag(p)
    args = p.parse_args()
    check_outputs(args)
    import tensorflow as tf

    runs: List[Dict[str, float]] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as work:
            runs.append(run_demo(os.path.join(work, "demo"), args.quick))
        print(f"round {r + 1}: {runs[-1]['seconds']:.0f} s, AP {runs[-1]['AP']:.4f}", flush=True)
    rows = [f"| {i + 1} | {r['seconds'] / 60:.1f} | {r['AP']:.4f} | {r['AP50']:.4f} | "
            f"{r['AP75']:.4f} | {r['APs']:.4f} | {r['APm']:.4f} |" for i, r in enumerate(runs)]
    text = "\n".join([
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; TF "
        f"{tf.__version__}; threads: TF default; `./demo.sh{' --quick' if args.quick else ''}` "
        f"after the install (`.venv` ready), nothing else running; AP on the 64 held-out "
        f"images.", "",
        "| run | minutes | AP | AP50 | AP75 | APs | APm |", "|---|---|---|---|---|---|---|",
        *rows, "",
        f"Median: {statistics.median(r['seconds'] for r in runs) / 60:.1f} minutes."]) + "\n"
    print_and_save(text, args.out)


if __name__ == "__main__":
    main()

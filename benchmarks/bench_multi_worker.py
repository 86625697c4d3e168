"""Training images/s of one process against two multi-worker tasks on this machine (loopback).

    python benchmarks/bench_multi_worker.py --rounds=2 --out=benchmarks/results_multi_worker.md

Each configuration runs `main.py --mode=train --use_fake_data` (the input pipeline costs
nothing) for `--steps` steps of the same global batch: one process (`--strategy=default`), and
two tasks started together with TF_CONFIG (`--strategy=multi_worker`, worker 0 the chief).
Throughput is the median of the chief's `examples/sec` summaries (global batch / step time),
the first interval dropped. Rounds interleave the configurations, so both see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from typing import List

import machine
from bench_train import examples_per_sec, fake_data_training, make_records
from machine import ROOT


def _free_ports(n: int) -> List[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run(pattern: str, workers: int, args: argparse.Namespace, model_dir: str) -> float:
    """Train `args.steps` steps with `workers` tasks (1: one plain process); images/s."""
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), *fake_data_training(
        pattern, model_dir, args.batch, args.steps, args.every,
        f"image_size={args.image_size},fpn_name={args.fpn}")]
    env = machine.quiet_env()
    if workers == 1:
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return examples_per_sec(model_dir)
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
    procs = []
    for i in range(workers):
        tf_config = json.dumps({"cluster": {"worker": addresses},
                                "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(cmd + ["--strategy=multi_worker"],
                                      env=dict(env, TF_CONFIG=tf_config),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a task failed:\n{err[-3000:]}")
    return examples_per_sec(model_dir)


def main() -> None:
    p = machine.parser(__doc__, steps=30, every=5, image_size=256, rounds=2)
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the tasks)")
    p.add_argument("--fpn", default="vfpn", help="the feature network (hparam fpn_name)")
    args = p.parse_args()
    machine.check_outputs(args)

    rates = {1: [], 2: []}
    with machine.work_dir(None, "bench_multi_worker_") as work:
        pattern, _ = make_records(work)
        for r in range(args.rounds):
            for workers in rates:
                value = run(pattern, workers, args, os.path.join(work, f"m{r}-{workers}"))
                rates[workers].append(value)
                print(f"round {r + 1}: {workers} task(s): {value:.2f} images/s", flush=True)
    single = statistics.median(rates[1])
    rows = [machine.row(w, "one process" if w == 1 else f"{w} multi-worker tasks on loopback",
                        f"{statistics.median(v):.2f}", f"{statistics.median(v) / single:.2f}x",
                        ", ".join(f"{x:.2f}" for x in v)) for w, v in rates.items()]
    above = machine.line(
        f"threads: TF default in every process; float32; efficientdet-d0 {args.fpn} at "
        f"{args.image_size}, global batch {args.batch}; median examples/sec of the chief over "
        f"{args.steps} steps (every {args.every}, first interval dropped), input pipeline "
        f"excluded (--use_fake_data); {args.rounds} interleaved rounds")
    columns = ("tasks", "how", "train images/s", "vs one process", "per round")
    machine.print_and_save(machine.table([above], columns, rows), args.out)


if __name__ == "__main__":
    main()

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
import tempfile
from typing import List

from bench_train import make_records
from machine import add_overwrite_flag, check_outputs, cpu_name, print_and_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(n: int) -> List[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _examples_per_sec(model_dir: str) -> float:
    import tensorflow as tf

    values = []
    for path in tf.io.gfile.glob(os.path.join(model_dir, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == "examples/sec":
                    values.append((event.step, v.simple_value))
    values = [v for _, v in sorted(values)][1:]
    if not values:
        raise RuntimeError(f"{model_dir}: no examples/sec summaries; raise --steps")
    return statistics.median(values)


def run(pattern: str, workers: int, args: argparse.Namespace, model_dir: str) -> float:
    """Train `args.steps` steps with `workers` tasks (1: one plain process); images/s."""
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--mode=train", "--use_fake_data",
           f"--training_file_pattern={pattern}", "--model_name=efficientdet-d0",
           f"--model_dir={model_dir}", f"--train_batch_size={args.batch}",
           f"--num_examples_per_epoch={args.batch * args.steps}", "--num_epochs=1",
           f"--log_every_n_steps={args.every}", "--log_every_secs=1e9",
           f"--save_checkpoints_steps={args.steps}",
           f"--hparams=num_classes=3,image_size={args.image_size},fpn_name={args.fpn}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if workers == 1:
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return _examples_per_sec(model_dir)
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
    return _examples_per_sec(model_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the tasks)")
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--fpn", default="vfpn")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="")
    add_overwrite_flag(p)
    args = p.parse_args()
    check_outputs(args)
    import tensorflow as tf

    rates = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as work:
        pattern, _ = make_records(work)
        for r in range(args.rounds):
            for workers in rates:
                value = run(pattern, workers, args, os.path.join(work, f"m{r}-{workers}"))
                rates[workers].append(value)
                print(f"round {r + 1}: {workers} task(s): {value:.2f} images/s", flush=True)
    single = statistics.median(rates[1])
    rows = [f"| {w} | {'one process' if w == 1 else f'{w} multi-worker tasks on loopback'} | "
            f"{statistics.median(v):.2f} | {statistics.median(v) / single:.2f}x | "
            f"{', '.join(f'{x:.2f}' for x in v)} |" for w, v in rates.items()]
    text = "\n".join([
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; TF {tf.__version__}; threads: TF "
        f"default in every process; float32; efficientdet-d0 {args.fpn} at {args.image_size}, "
        f"global batch {args.batch}; median examples/sec of the chief over {args.steps} steps "
        f"(every {args.every}, first interval dropped), input pipeline excluded "
        f"(--use_fake_data); {args.rounds} interleaved rounds.",
        "", "| tasks | how | train images/s | vs one process | per round |",
        "|---|---|---|---|---|", *rows]) + "\n"
    print_and_save(text, args.out)


if __name__ == "__main__":
    main()

"""Training speed here: images/s, the first step, and train_and_eval's per-epoch overhead.

    python benchmarks/bench_train.py --rounds=2 --out=benchmarks/results_train.md

In one run, as `main.py` subprocesses on sample-dataset records:

* **Throughput**: d0 VFPN and BiFPN at 256 and 512 px, batch 8, for float32 and (on CPUs with
  native bf16: AVX-512 BF16 or AMX) `precision=mixed_bfloat16`; `--mode=train --use_fake_data`
  (the input pipeline costs nothing), `--steps` steps. Images/s is the median of the
  `examples/sec` summaries the run writes (first interval dropped), the first step's time its
  `first_step_seconds` summary (graph optimisation, session start and the first update).
* **Per-epoch overhead of train_and_eval**: VFPN-d0 at 256 px with the learning benchmark's
  recipe (BN recalibration on), the real input pipeline, `--overhead_steps` steps per epoch and
  `--eval_images` held-out images, run for 1 and for 3 epochs. Each run's wall time minus its
  training steps (steps x batch / its median images/s) and its evaluations' forward passes (the
  `eval_seconds` summaries) is what it spent elsewhere; the difference between the 3-epoch and
  the 1-epoch run, halved, is what each further epoch costs beyond steps and eval passes.

Configurations run in `--rounds` interleaved rounds; the table gives the median over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import machine
from machine import ROOT

RECIPE = ("moving_average_decay=0,batch_norm_momentum=0.9,train_scale_min=0.8,"
          "train_scale_max=1.2,optimizer=adam,learning_rate=0.032,lr_warmup_init=0.0001,"
          "lr_warmup_epoch=0.5,bn_recalibration_images=32")


def make_records(work: str, num_images: int = 16) -> Tuple[str, str]:
    """(record pattern, COCO json) of `num_images` sample images of 400..640 px."""
    env = machine.quiet_env()
    subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "sample_dataset.py"),
                    f"--output_dir={work}", f"--num_images={num_images}", "--format=coco",
                    "--min_size=400", "--max_size=640"], check=True, capture_output=True, env=env)
    prefix = os.path.join(work, "rec", "train")
    subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "create_coco_tfrecord.py"),
                    f"--image_dir={work}/coco/images",
                    f"--object_annotations_file={work}/coco/annotations/instances_sample.json",
                    f"--output_file_prefix={prefix}", "--num_shards=2", "--num_classes=3"],
                   check=True, capture_output=True, env=env)
    return prefix + "-*", os.path.join(work, "coco", "annotations", "instances_sample.json")


def scalars(directory: str, tag: str) -> List[Tuple[int, float]]:
    """(step, value) of every summary `tag` in the events files directly in `directory`."""
    import tensorflow as tf

    out = []
    for path in tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            out.extend((event.step, v.simple_value) for v in event.summary.value if v.tag == tag)
    return sorted(out)


def _main_py(args: List[str]) -> float:
    """Run main.py with `args`; returns its wall seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                            capture_output=True, text=True, env=machine.quiet_env())
    if result.returncode:
        raise RuntimeError(f"main.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def fake_data_training(pattern: str, model_dir: str, batch: int, steps: int, every: int,
                       hparams: str) -> List[str]:
    """main.py's arguments for `steps` d0 training steps of `batch` on the first batch of
    `pattern` repeated (--use_fake_data: the input pipeline costs nothing), an examples/sec
    summary every `every` steps; `hparams` beyond num_classes=3."""
    return ["--mode=train", "--use_fake_data", f"--training_file_pattern={pattern}",
            "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
            f"--train_batch_size={batch}", f"--num_examples_per_epoch={batch * steps}",
            "--num_epochs=1", f"--log_every_n_steps={every}", "--log_every_secs=1e9",
            f"--save_checkpoints_steps={steps}", f"--hparams=num_classes=3,{hparams}"]


def examples_per_sec(model_dir: str) -> float:
    """The median of a run's `examples/sec` summaries, the first (warm-up) interval dropped."""
    rates = [v for _, v in scalars(model_dir, "examples/sec")][1:]
    if not rates:
        raise RuntimeError(f"{model_dir}: no examples/sec summaries; raise --steps")
    return statistics.median(rates)


def throughput(pattern: str, fpn: str, size: int, precision: str, args: argparse.Namespace,
               model_dir: str) -> Dict[str, float]:
    """{'images_per_s', 'first_step_s'} of one fake-data training run."""
    _main_py(fake_data_training(pattern, model_dir, args.batch, args.steps, args.every,
                                f"image_size={size},fpn_name={fpn},precision={precision}"))
    return {"images_per_s": examples_per_sec(model_dir),
            "first_step_s": scalars(model_dir, "first_step_seconds")[0][1]}


def overhead_run(pattern: str, json_file: str, epochs: int, args: argparse.Namespace,
                 model_dir: str) -> float:
    """Seconds a train_and_eval run of `epochs` spent outside training steps and eval passes."""
    steps = args.overhead_steps
    wall = _main_py([
        "--mode=train_and_eval", f"--training_file_pattern={pattern}",
        f"--validation_file_pattern={pattern}", f"--val_json_file={json_file}",
        "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
        f"--train_batch_size={args.batch}", f"--eval_batch_size={args.batch}",
        f"--eval_samples={args.eval_images}", f"--num_examples_per_epoch={args.batch * steps}",
        f"--num_epochs={epochs}", f"--log_every_n_steps={max(1, steps // 4)}",
        "--log_every_secs=1e9", "--tf_random_seed=1",
        f"--hparams=num_classes=3,image_size=256,{RECIPE}"])
    training = epochs * steps * args.batch / examples_per_sec(model_dir)
    evals = sum(v for _, v in scalars(os.path.join(model_dir, "eval"), "eval_seconds"))
    return wall - training - evals


def precisions() -> List[str]:
    """float32, and mixed_bfloat16 where the CPU computes bf16 natively."""
    native = ("AVX-512 BF16 yes" in machine.cpu_features()
              or "AMX yes" in machine.cpu_features())
    return ["float32"] + (["mixed_bfloat16"] if native else [])


def measure(args: argparse.Namespace, configs: List[Tuple[str, int, str]]
            ) -> Tuple[Dict[tuple, List[Dict[str, float]]], List[float]]:
    """--rounds interleaved rounds of every throughput configuration and of the 1- and 3-epoch
    train_and_eval runs: ({config: [throughput per round]}, [per-epoch overhead per round])."""
    rates: Dict[tuple, List[Dict[str, float]]] = {c: [] for c in configs}
    overhead: Dict[int, List[float]] = {1: [], 3: []}
    with machine.work_dir(None, "bench_train_") as work:
        pattern, json_file = make_records(work)
        for r in range(args.rounds):
            for c in configs:
                rates[c].append(throughput(pattern, *c, args, os.path.join(work, f"t{r}-{c}")))
                print(f"round {r + 1}: {c}: {rates[c][-1]}", flush=True)
            for epochs in overhead:
                overhead[epochs].append(overhead_run(pattern, json_file, epochs, args,
                                                     os.path.join(work, f"o{r}-{epochs}")))
                print(f"round {r + 1}: train_and_eval x{epochs}: {overhead[epochs][-1]:.1f} s "
                      f"outside steps and eval passes", flush=True)
    return rates, [(three - one) / 2 for one, three in zip(overhead[1], overhead[3])]


def main() -> None:
    p = machine.parser(__doc__, steps=30, every=5, batch=8, fpns="vfpn,bifpn", rounds=2)
    p.add_argument("--sizes", default="256,512", help="comma-separated image sizes, pixels")
    p.add_argument("--overhead_steps", type=int, default=16, help="steps per epoch")
    p.add_argument("--eval_images", type=int, default=16)
    args = p.parse_args()
    machine.check_outputs(args)

    configs = [(fpn, int(size), precision) for size in args.sizes.split(",")
               for fpn in args.fpns.split(",") for precision in precisions()]
    rates, per_epoch = measure(args, configs)
    rows = []
    for fpn, size, precision in configs:
        ips = statistics.median(x["images_per_s"] for x in rates[(fpn, size, precision)])
        f32 = statistics.median(x["images_per_s"] for x in rates[(fpn, size, "float32")])
        first = statistics.median(x["first_step_s"] for x in rates[(fpn, size, precision)])
        rows.append(machine.row("efficientdet-d0", fpn, size, args.batch, precision,
                                f"{ips:.2f}", f"{ips / f32:.2f}x", f"{first:.1f}"))
    above = [
        machine.line(f"threads: TF default; median over {args.rounds} interleaved rounds"), "",
        f"Training throughput: `main.py --mode=train --use_fake_data` (input pipeline "
        f"excluded), {args.steps} steps, median examples/sec (every {args.every} steps, first "
        f"interval dropped); first step: graph optimisation, session start and the first "
        f"update."]
    columns = ("model", "fpn", "image size", "batch", "precision", "train images/s",
               "vs float32", "first step s")
    text = machine.table(above, columns, rows) + (
        f"\ntrain_and_eval per-epoch overhead (VFPN-d0, 256 px, batch {args.batch}, "
        f"{args.overhead_steps} steps per epoch, {args.eval_images} eval images, the learning "
        f"benchmark's recipe with bn_recalibration_images=32, real input pipeline): seconds "
        f"per further epoch outside training steps and eval forward passes (3-epoch run minus "
        f"1-epoch run, halved): median {statistics.median(per_epoch):.1f} s "
        f"(rounds: {', '.join(f'{x:.1f}' for x in per_epoch)}).\n")
    machine.print_and_save(text, args.out)


if __name__ == "__main__":
    main()

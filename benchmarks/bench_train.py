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
import tempfile
import time
from typing import Dict, List, Tuple

from machine import add_overwrite_flag, check_outputs, cpu_features, cpu_name, print_and_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = ("moving_average_decay=0,batch_norm_momentum=0.9,train_scale_min=0.8,"
          "train_scale_max=1.2,optimizer=adam,learning_rate=0.032,lr_warmup_init=0.0001,"
          "lr_warmup_epoch=0.5,bn_recalibration_images=32")


def make_records(work: str, num_images: int = 16) -> Tuple[str, str]:
    """(record pattern, COCO json) of `num_images` sample images of 400..640 px."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
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
                            capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if result.returncode:
        raise RuntimeError(f"main.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def throughput(pattern: str, fpn: str, size: int, precision: str, args: argparse.Namespace,
               model_dir: str) -> Dict[str, float]:
    """{'images_per_s', 'first_step_s'} of one fake-data training run."""
    steps = args.steps
    _main_py(["--mode=train", "--use_fake_data", f"--training_file_pattern={pattern}",
              "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
              f"--train_batch_size={args.batch}", f"--num_examples_per_epoch={args.batch * steps}",
              "--num_epochs=1", f"--log_every_n_steps={args.every}", "--log_every_secs=1e9",
              f"--save_checkpoints_steps={steps}",
              f"--hparams=num_classes=3,image_size={size},fpn_name={fpn},precision={precision}"])
    rates = [v for _, v in scalars(model_dir, "examples/sec")][1:]
    if not rates:
        raise RuntimeError("no examples/sec summaries; raise --steps")
    return {"images_per_s": statistics.median(rates),
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
    rates = [v for _, v in scalars(model_dir, "examples/sec")][1:]
    training = epochs * steps * args.batch / statistics.median(rates)
    evals = sum(v for _, v in scalars(os.path.join(model_dir, "eval"), "eval_seconds"))
    return wall - training - evals


def precisions() -> List[str]:
    """float32, and mixed_bfloat16 where the CPU computes bf16 natively."""
    native = "AVX-512 BF16 yes" in cpu_features() or "AMX yes" in cpu_features()
    return ["float32"] + (["mixed_bfloat16"] if native else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="steps per throughput run")
    p.add_argument("--every", type=int, default=5, help="steps per examples/sec summary")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--fpns", default="vfpn,bifpn")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--overhead_steps", type=int, default=16, help="steps per epoch")
    p.add_argument("--eval_images", type=int, default=16)
    p.add_argument("--out", default="")
    add_overwrite_flag(p)
    args = p.parse_args()
    check_outputs(args)
    import tensorflow as tf

    configs = [(fpn, int(size), precision) for size in args.sizes.split(",")
               for fpn in args.fpns.split(",") for precision in precisions()]
    rates: Dict[tuple, List[Dict[str, float]]] = {c: [] for c in configs}
    overhead: Dict[int, List[float]] = {1: [], 3: []}
    with tempfile.TemporaryDirectory() as work:
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
    f32 = {(fpn, size): statistics.median(x["images_per_s"] for x in rates[(fpn, size,
                                                                            "float32")])
           for fpn, size, _ in configs}
    rows = []
    for fpn, size, precision in configs:
        ips = statistics.median(x["images_per_s"] for x in rates[(fpn, size, precision)])
        first = statistics.median(x["first_step_s"] for x in rates[(fpn, size, precision)])
        rows.append(f"| efficientdet-d0 | {fpn} | {size} | {args.batch} | {precision} | "
                    f"{ips:.2f} | {ips / f32[(fpn, size)]:.2f}x | {first:.1f} |")
    per_epoch = [(three - one) / 2 for one, three in zip(overhead[1], overhead[3])]
    text = "\n".join([
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; TF "
        f"{tf.__version__}; threads: TF default; median over {args.rounds} interleaved rounds.",
        "", f"Training throughput: `main.py --mode=train --use_fake_data` (input pipeline "
            f"excluded), {args.steps} steps, median examples/sec (every {args.every} steps, "
            f"first interval dropped); first step: graph optimisation, session start and the "
            f"first update.", "",
        "| model | fpn | image size | batch | precision | train images/s | vs float32 | "
        "first step s |", "|---|---|---|---|---|---|---|---|", *rows, "",
        f"train_and_eval per-epoch overhead (VFPN-d0, 256 px, batch {args.batch}, "
        f"{args.overhead_steps} steps per epoch, {args.eval_images} eval images, the learning "
        f"benchmark's recipe with bn_recalibration_images=32, real input pipeline): seconds "
        f"per further epoch outside training steps and eval forward passes (3-epoch run minus "
        f"1-epoch run, halved): median {statistics.median(per_epoch):.1f} s "
        f"(rounds: {', '.join(f'{x:.1f}' for x in per_epoch)})."]) + "\n"
    print_and_save(text, args.out)


if __name__ == "__main__":
    main()

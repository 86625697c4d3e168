"""Training throughput (images/s) of d0 VFPN and BiFPN, batch 8 at 512, on this machine.

    python benchmarks/bench_train.py --steps=20 --out=benchmarks/results_train.md --overwrite

Runs `main.py --mode=train --use_fake_data` on sample-dataset records (the first batch repeated,
so the input pipeline costs nothing) and reads the `examples/sec` summaries that training writes
every `--every` steps; the first interval (graph warm-up) is dropped and the median reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from machine import add_overwrite_flag, check_outputs, cpu_name, print_and_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_records(work: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "sample_dataset.py"),
                    f"--output_dir={work}", "--num_images=16", "--format=coco",
                    "--min_size=400", "--max_size=640"], check=True, capture_output=True, env=env)
    prefix = os.path.join(work, "rec", "train")
    subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "create_coco_tfrecord.py"),
                    f"--image_dir={work}/coco/images",
                    f"--object_annotations_file={work}/coco/annotations/instances_sample.json",
                    f"--output_file_prefix={prefix}", "--num_shards=1", "--num_classes=3"],
                   check=True, capture_output=True, env=env)
    return prefix + "-*"


def rate(pattern: str, fpn: str, batch: int, steps: int, every: int, size: int,
         work: str) -> float:
    import tensorflow as tf

    model_dir = os.path.join(work, f"model_{fpn}")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--mode=train", "--use_fake_data",
           f"--training_file_pattern={pattern}", "--model_name=efficientdet-d0",
           f"--model_dir={model_dir}", f"--train_batch_size={batch}",
           f"--num_examples_per_epoch={batch * steps}", "--num_epochs=1",
           f"--log_every_n_steps={every}", "--log_every_secs=1e9",
           f"--save_checkpoints_steps={steps}",
           f"--hparams=num_classes=3,image_size={size},fpn_name={fpn}"]
    subprocess.run(cmd, check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    values = []
    for path in tf.io.gfile.glob(os.path.join(model_dir, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == "examples/sec":
                    values.append((event.step, v.simple_value))
    values = [v for _, v in sorted(values)][1:]
    if not values:
        raise RuntimeError("no examples/sec summaries; raise --steps")
    return statistics.median(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image_size", type=int, default=512)
    p.add_argument("--out", default="")
    add_overwrite_flag(p)
    args = p.parse_args()
    check_outputs(args)
    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory() as work:
        pattern = make_records(work)
        for fpn in ("vfpn", "bifpn"):
            r = rate(pattern, fpn, args.batch, args.steps, args.every, args.image_size, work)
            rows.append(f"| efficientdet-d0 | {fpn} | {args.batch} | {args.image_size} | "
                        f"{r:.2f} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; TF {tf.__version__}; threads: "
        f"TF default; float32; median examples/sec over {args.steps} steps (every "
        f"{args.every}, first interval dropped), input pipeline excluded (--use_fake_data).",
        "", "| model | fpn | batch | image size | train images/s |", "|---|---|---|---|---|",
        *rows]) + "\n"
    print_and_save(text, args.out)


if __name__ == "__main__":
    main()

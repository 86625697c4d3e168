"""Where a training step's time goes: per-op-type times of one traced step, in-process.

    python benchmarks/profile_train_step.py --image_size=256 --batch=8 --fpn=vfpn \
        --hparams=precision=mixed_bfloat16 --steps=3 --top=25

Builds the training graph as main.py does (det_model_fn.make_model_fn in TRAIN mode on one
fixed batch from the sample dataset, so the input pipeline costs nothing), runs `--warmup`
steps, then `--steps` traced steps (RunOptions FULL_TRACE) and sums each op's time by op type
over the traced steps. Op times overlap when ops run in parallel, so the column that matters
is the share of the summed op time; the step time (wall, untraced median) is printed beside.
Also prints the time to build the graph, to create the session and to run the first step.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from typing import Dict, List, Tuple

import machine  # puts the repository root on sys.path

import cli

tf = cli.import_tensorflow()
tf1 = tf.compat.v1

import dataloader  # noqa: E402
import det_model_fn  # noqa: E402
import hparams_config  # noqa: E402


def _records(work: str, image_size: int) -> str:
    """Sample-dataset records (16 images) under `work`; returns their pattern."""
    from dataset import create_coco_tfrecord, sample_dataset

    sample = sample_dataset.write_coco(work, 16, seed=0, min_size=image_size // 2,
                                       max_size=image_size)
    create_coco_tfrecord.create_coco_tfrecord(create_coco_tfrecord.ConvertOptions(
        image_dir=sample.image_dir, object_annotations_file=sample.instances_file,
        output_file_prefix=os.path.join(work, "rec", "train"), num_shards=1, num_threads=1,
        num_classes=3), progress=False)
    return os.path.join(work, "rec", "train-*")


def build(args: argparse.Namespace, pattern: str):
    """(graph, train_op, build seconds) of the training graph on one fixed batch."""
    config = hparams_config.get_detection_config(
        "efficientdet-d0", ",".join(p for p in (
            f"num_classes=3,image_size={args.image_size},fpn_name={args.fpn},"
            "moving_average_decay=0", args.hparams) if p))
    run = det_model_fn.RunContext(model_dir=None, train_batch_size=args.batch,
                                  eval_batch_size=args.batch,
                                  num_examples_per_epoch=args.batch * 1000)
    start = time.perf_counter()
    graph = tf.Graph()
    with graph.as_default():
        reader = dataloader.InputReader(pattern, True, config, use_fake_data=True, seed=0)
        features, labels = tf1.data.make_one_shot_iterator(
            reader(batch_size=args.batch)).get_next()
        spec = det_model_fn.make_model_fn(config, run)(features, labels,
                                                       tf.estimator.ModeKeys.TRAIN)
        init = tf1.global_variables_initializer()
    return graph, spec.train_op, init, time.perf_counter() - start


def _session(graph, init, xla: bool, no_grappler: bool):
    """(session with the variables initialised, seconds it took)."""
    config = tf1.ConfigProto()
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    if no_grappler:
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    start = time.perf_counter()
    sess = tf1.Session(graph=graph, config=config)
    sess.run(init)
    return sess, time.perf_counter() - start


def _step_seconds(sess, train_op, runs: int) -> List[float]:
    """Wall seconds of each of `runs` untraced steps."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(train_op)
        times.append(time.perf_counter() - start)
    return times


def _op_seconds(sess, train_op, steps: int) -> Tuple[Dict[str, float], Dict[str, int]]:
    """({op type: seconds}, {op type: ops}) summed over `steps` traced steps."""
    by_type: Dict[str, float] = collections.defaultdict(float)
    count: Dict[str, int] = collections.defaultdict(int)
    for _ in range(steps):
        meta = tf1.RunMetadata()
        sess.run(train_op, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                 run_metadata=meta)
        for device in meta.step_stats.dev_stats:
            for node in device.node_stats:
                kind = node.timeline_label.split("(")[0].split(" = ")[-1].strip() or \
                    node.node_name.split(":")[0]
                by_type[kind] += node.all_end_rel_micros / 1e6
                count[kind] += 1
    return by_type, count


def main() -> None:
    p = machine.parser(__doc__, out=False, image_size=256, batch=8, warmup=5)
    p.add_argument("--fpn", default="vfpn", help="the feature network (hparam fpn_name)")
    p.add_argument("--hparams", default="", help="extra hparams, e.g. precision=mixed_bfloat16")
    p.add_argument("--steps", type=int, default=3, help="traced steps")
    p.add_argument("--timed", type=int, default=10, help="untraced steps for the step time")
    p.add_argument("--top", type=int, default=25, help="op types listed")
    p.add_argument("--xla", action="store_true", help="XLA auto-clustering (global_jit ON_1)")
    p.add_argument("--no_grappler", action="store_true", help="session without Grappler")
    p.add_argument("--work_dir", default="/tmp/profile_train_step",
                   help="the sample records, kept: a later run reuses them")
    args = p.parse_args()

    os.makedirs(args.work_dir, exist_ok=True)
    pattern = os.path.join(args.work_dir, "rec", "train-*")
    if not tf.io.gfile.glob(pattern):
        pattern = _records(args.work_dir, args.image_size)
    graph, train_op, init, built = build(args, pattern)
    sess, created = _session(graph, init, args.xla, args.no_grappler)
    (first,) = _step_seconds(sess, train_op, 1)
    _step_seconds(sess, train_op, args.warmup)
    step = statistics.median(_step_seconds(sess, train_op, args.timed))
    by_type, count = _op_seconds(sess, train_op, args.steps)
    total = sum(by_type.values())
    above = [
        machine.line(f"d0 {args.fpn} {args.image_size} px, batch {args.batch}, hparams "
                     f"'{args.hparams}', xla={args.xla}, grappler="
                     f"{'off' if args.no_grappler else 'on'}"),
        f"graph built in {built:.1f} s, session made and initialised in {created:.1f} s, "
        f"first step {first:.1f} s; step {step * 1000:.0f} ms median of {args.timed} "
        f"({args.batch / step:.2f} images/s)"]
    rows = [machine.row(kind, count[kind] // args.steps, f"{seconds / args.steps:.3f}",
                        f"{100 * seconds / total:.1f}%")
            for kind, seconds in sorted(by_type.items(), key=lambda kv: -kv[1])[:args.top]]
    columns = ("op type", "ops per step", "seconds per step", "share of op time")
    print(machine.table(above, columns, rows), end="")


if __name__ == "__main__":
    main()

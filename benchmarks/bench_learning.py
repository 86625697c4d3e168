"""Learning benchmark: do VFPN, BiFPN and a BiFPN of VFPN's cost learn differently?

    nice -n 10 python benchmarks/bench_learning.py --dataset=clutter --seeds=0,1,2,3,4 \
        --jobs=2 --out=table.md --plot=curves.png --json=runs.json

Trains every configuration from scratch with `main.py --mode=train_and_eval` on a bundled
synthetic set (`--dataset`): `clutter` (dataset/clutter_dataset.py: 10 classes of shape x
texture, sizes from 10 px, occlusion, textured backgrounds; the default) or `shapes`
(dataset/sample_dataset.py: 3 solid shapes on plain backgrounds). `--train_images` are generated
with seed 0 for training and `--val_images` with seed 1 as the held-out split. Every run uses the
same records, schedule, evaluation and `--recipe` hparams; only the configuration's own hparams
and the seed differ. The seed is main.py's `--tf_random_seed`, which fixes the initial weights
(name-seeded, so shared variables start equal across configurations) and the data order.

The default configurations: `vfpn` (the default network), `bifpn` (the reference) and
`bifpn_wide` (BiFPN with `fpn_num_filters=108`, whose d0 FLOPs at 256 px and 10 classes are
within 1% of VFPN-d0's: the cost-matched baseline).

Metrics come from each run's `eval_history.json` (AP, AP50, AP75, APs, APm, APl per evaluated
step). The report: per eval step, mean ± std [min..max] over seeds of AP, AP50 and AP_s/m/l of
every configuration; a summary against `--baseline` with each configuration's paired final-AP
difference (mean over seeds of its AP minus the baseline's at the same seed, ± the standard
error of that mean); and each configuration's parameters, FLOPs (multiply-adds per image) and
network latency (batch 1, this machine, measured after the training runs). `--json` writes all
of it, per seed, for the record. `--plot` draws AP, AP50, AP_s and AP_l against step.

Everything generated goes under `--work_dir` (default /tmp/learning/bench): `data/` (images and
records, reused when the same data options made it), `runs/<config>-s<seed>/` (model_dir, stdout
and stderr logs, `bench_run.json` once finished). A finished run whose command is unchanged is
reused, not retrained, so configurations can be added to a work dir later; a run directory this
script did not finish is left alone and the script stops, naming it. Nothing is ever deleted.
A run also records a digest of the model's source files (`code`); reusing a run that another
version of the code made says so on its line, since the same command may then train another
model.

`--records DIR` keeps a copy of every finished run's record as `DIR/<config>-s<seed>.json`,
with its command relative to the checkout and to `--work_dir` and the machine that ran it, and
reuses the runs found there: commit DIR, and a later session (another checkout, another work
dir) trains only the runs still missing. Its `--out`/`--json` then report every recorded run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import glob
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# {dataset: (classes, smallest and largest image side, eval interval and evals by default)}
DATASETS = {"shapes": (3, 64, 160, 64, 5), "clutter": (10, 320, 480, 128, 8)}

# The README's short-run recipe, the one ./demo.sh trains with (Adam, BN momentum 0.9, mild
# scale jitter, warm-up over half an epoch): the released SGD/0.99 defaults barely leave AP 0
# in a few hundred steps, which would measure nothing. Plus bn_recalibration_images=32: before
# each eval the checkpoint's moving BN statistics are recomputed from one training-mode pass
# over 32 training images, since averages of batch-of-8 statistics let some runs of either
# network fall back in inference mode (benchmarks/results_learning.md). Applied to every
# configuration alike, never to one.
DEFAULT_RECIPE = ("moving_average_decay=0,batch_norm_momentum=0.9,train_scale_min=0.8,"
                  "train_scale_max=1.2,optimizer=adam,learning_rate=0.032,"
                  "lr_warmup_init=0.0001,lr_warmup_epoch=0.5,bn_recalibration_images=32")
# bifpn_wide: BiFPN widened until its FLOPs match VFPN's (d0, 256 px, 10 classes: 0.70 vs
# 0.70 GFLOPs; fpn_num_filters=104 would be 1.1% under, 108 is 0.8% over).
DEFAULT_CONFIGS = ("vfpn:fpn_name=vfpn", "bifpn:fpn_name=bifpn",
                   "bifpn_wide:fpn_name=bifpn,fpn_num_filters=108")

# {config name: {seed: {step: {metric: value}}}}
Curves = Dict[str, Dict[int, Dict[int, Dict[str, float]]]]


class BenchError(RuntimeError):
    """A reason to stop that the user can act on (an existing directory, a failed run)."""


def parse_config(spec: str) -> Tuple[str, str]:
    """'name:k=v,k2=v2' -> (name, 'k=v,k2=v2')."""
    name, sep, hparams = spec.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise BenchError(f"--config '{spec}': expected NAME:HPARAMS with NAME of letters, digits "
                         f"or _.+- (e.g. 'vfpn_sum:fpn_name=vfpn,vfpn_aggregation=sum').")
    return name, hparams


def read_curve(model_dir: str) -> Dict[int, Dict[str, float]]:
    """{step: {'AP': .., 'AP50': .., 'APs': .., ...}} from a run's eval_history.json (its one
    validation set)."""
    path = os.path.join(model_dir, "eval_history.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        sets = json.load(f)["sets"]
    if len(sets) != 1:
        raise BenchError(f"{path}: expected one validation set, found {len(sets)}")
    (entry,) = sets.values()
    return {int(step): {k: float(v) for k, v in metrics.items() if k in METRICS}
            for step, metrics in entry["steps"].items()}


def _run_quiet(cmd: List[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if result.returncode:
        raise BenchError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                         f"{result.stderr[-2000:]}")


def make_data(data_dir: str, train_images: int, val_images: int, dataset: str
              ) -> Dict[str, str]:
    """Generate (or reuse) the train/val images and records; returns main.py's data flags."""
    options = {"train_images": train_images, "val_images": val_images, "train_seed": 0,
               "val_seed": 1, "format": "coco"}
    if dataset != "shapes":  # the shapes set's marker keeps its old form
        options["dataset"] = dataset
    num_classes, min_size, max_size = DATASETS[dataset][:3]
    marker = os.path.join(data_dir, "bench_data.json")
    flags = {"training_file_pattern": os.path.join(data_dir, "rec", "train-*"),
             "validation_file_pattern": os.path.join(data_dir, "rec", "val-*"),
             "val_json_file": os.path.join(data_dir, "val", "coco", "annotations",
                                           "instances_sample.json")}
    if os.path.exists(data_dir):
        if os.path.isfile(marker):
            with open(marker) as f:
                if json.load(f) == options:
                    print(f"reusing the data in {data_dir}", flush=True)
                    return flags
        raise BenchError(f"{data_dir} exists but was not made by this benchmark with these "
                         f"options ({options}); pass another --work_dir.")
    os.makedirs(data_dir)
    for split, num, seed, shards in (("train", train_images, 0, 4), ("val", val_images, 1, 1)):
        out = os.path.join(data_dir, split)
        _run_quiet([sys.executable, os.path.join(ROOT, "dataset", "sample_dataset.py"),
                    f"--output_dir={out}", f"--num_images={num}", "--format=coco",
                    f"--seed={seed}", f"--kind={dataset}", f"--min_size={min_size}",
                    f"--max_size={max_size}"])
        _run_quiet([sys.executable, os.path.join(ROOT, "dataset", "create_coco_tfrecord.py"),
                    f"--image_dir={out}/coco/images",
                    f"--object_annotations_file={out}/coco/annotations/instances_sample.json",
                    f"--output_file_prefix={os.path.join(data_dir, 'rec', split)}",
                    f"--num_shards={shards}", f"--num_classes={num_classes}"])
    with open(marker, "w") as f:
        json.dump(options, f)
    return flags


def run_command(args: argparse.Namespace, data: Dict[str, str], hparams: str, seed: int,
                model_dir: str) -> List[str]:
    """The main.py command line of one (configuration, seed) run."""
    num_classes = DATASETS[args.dataset][0]
    all_hparams = ",".join(p for p in (f"num_classes={num_classes},image_size={args.image_size}",
                                       args.recipe, hparams) if p)
    return [sys.executable, os.path.join(ROOT, "main.py"), "--mode=train_and_eval",
            f"--training_file_pattern={data['training_file_pattern']}",
            f"--validation_file_pattern={data['validation_file_pattern']}",
            f"--val_json_file={data['val_json_file']}", f"--model_name={args.model_name}",
            f"--model_dir={model_dir}", f"--train_batch_size={args.batch}",
            f"--eval_batch_size={args.batch}", f"--eval_samples={args.val_images}",
            f"--num_examples_per_epoch={args.batch * args.eval_every}",
            f"--num_epochs={args.evals}", f"--tf_random_seed={seed}",
            f"--hparams={all_hparams}"]


def thread_env(threads: int) -> Dict[str, str]:
    """Environment of a training process: TF's own thread pools sized by `threads` (0: TF
    default). main.py sets no session threads on one device, so TF reads these variables."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
    return env


def code_digest(root: str = ROOT) -> str:
    """12 hex digits of sha256 over the source a training run executes (tests, benchmarks,
    docs and tools excluded), so two checkouts of the same model code agree."""
    files = sorted(glob.glob(os.path.join(root, "*.py"))
                   + glob.glob(os.path.join(root, "backbone", "*.py"))
                   + glob.glob(os.path.join(root, "dataset", "*.py")))
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:12]


def portable(cmd: List[str], work_dir: str) -> List[str]:
    """`cmd` without its interpreter, with paths in the checkout relative to it and paths in
    `work_dir` as '{work_dir}/...': equal for the same run from any checkout or work dir."""
    root, work = ROOT + os.sep, os.path.abspath(work_dir) + os.sep
    return [a.replace(root, "").replace(work, "{work_dir}/") for a in cmd[1:]]


@functools.cache
def machine_line() -> str:
    """machine.line() once per process (it imports TensorFlow for its version)."""
    return machine.line()


def _finished(cmd: List[str], run_dir: str, work_dir: str, copy: str
              ) -> Tuple[str, Optional[Dict[str, object]]]:
    """(path, record) of this run if it finished: `run_dir`'s own, else `copy` (from
    --records); ('', None) if neither holds it."""
    for path, same in ((os.path.join(run_dir, "bench_run.json"),
                        lambda done: done["cmd"] in (cmd[1:], portable(cmd, work_dir))),
                       (copy, lambda done: done["cmd"] == portable(cmd, work_dir))):
        if path and os.path.isfile(path):
            with open(path) as f:
                done = json.load(f)
            if same(done):  # the interpreter path may differ between venvs
                return path, done
            raise BenchError(f"{path} holds a finished run of another command; pass another "
                             f"--work_dir or --records (nothing is deleted).")
    return "", None


def train_one(cmd: List[str], run_dir: str, env: Dict[str, str], lock: threading.Lock,
              work_dir: str, copy: str = "") -> Dict[str, object]:
    """Run (or reuse) one training; returns {'curve': {step: metrics}, 'seconds': wall,
    'machine': the machine line of the run, '' if unrecorded}.
    `copy`: the --records file of this run, read if the work dir has no finished run and
    written once the run is finished."""
    record = os.path.join(run_dir, "bench_run.json")
    digest = code_digest()  # before the run: the source it starts with
    source, done = _finished(cmd, run_dir, work_dir, copy)
    if done is not None:
        made_by = done.get("code", "unrecorded")
        other = ("" if made_by == digest else
                 f"; made by other code ({made_by}, this checkout is {digest}): use a new "
                 f"--work_dir if the change matters")
        with lock:
            print(f"reusing {source} ({done['seconds']:.0f}s when it ran{other})", flush=True)
    else:
        if os.path.exists(run_dir):
            raise BenchError(f"{run_dir} exists but holds no finished run of this benchmark "
                             f"(interrupted?); remove it yourself or pass another --work_dir.")
        os.makedirs(run_dir)
        with lock:
            print(f"start {run_dir}", flush=True)
        start = time.time()
        with open(os.path.join(run_dir, "stdout.txt"), "w") as out, \
                open(os.path.join(run_dir, "stderr.txt"), "w") as err:
            code = subprocess.run(cmd, stdout=out, stderr=err, env=env).returncode
        seconds = time.time() - start
        curve = read_curve(_model_dir(cmd))
        if code:
            raise BenchError(f"{run_dir}: main.py exited {code}; see {run_dir}/stderr.txt")
        done = {"cmd": portable(cmd, work_dir), "code": digest, "seconds": seconds,
                "machine": machine_line(), "curve": curve}
        with open(record, "w") as f:
            json.dump(done, f, indent=1)
        with lock:
            last = curve[max(curve)] if curve else {}
            print(f"done  {run_dir} in {seconds:.0f}s: final AP="
                  f"{last.get('AP', float('nan')):.4f}", flush=True)
    if copy and not os.path.isfile(copy):
        # A record from before runs named their machine was copied on the machine that ran it.
        done = {**done, "cmd": portable(cmd, work_dir),
                "machine": done.get("machine") or f"{machine_line()} (when copied)"}
        os.makedirs(os.path.dirname(os.path.abspath(copy)), exist_ok=True)
        with open(copy, "w") as f:
            json.dump(done, f, indent=1)
    return {"curve": {int(k): v for k, v in done["curve"].items()},
            "seconds": done["seconds"], "machine": done.get("machine", "")}


def _model_dir(cmd: List[str]) -> str:
    return next(a.split("=", 1)[1] for a in cmd if a.startswith("--model_dir="))


def _stats(values: Sequence[float]) -> Tuple[float, float, float, float]:
    """(mean, sample std, min, max); std 0 for a single value."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std, min(values), max(values)


def mean_curve(curves: Curves, name: str, metric: str) -> Dict[int, List[float]]:
    """{step: [value per seed]} for steps every seed of `name` evaluated."""
    seeds = curves[name]
    steps = sorted(set.intersection(*(set(c) for c in seeds.values())))
    return {s: [seeds[seed][s][metric] for seed in sorted(seeds)] for s in steps}


def paired_difference(curves: Curves, name: str, baseline: str, step: int,
                      metric: str = "AP") -> Tuple[float, float, int]:
    """(mean, standard error, n) over the seeds both ran of `name`'s `metric` at `step` minus
    the baseline's at the same seed."""
    seeds = sorted(set(curves[name]) & set(curves[baseline]))
    diffs = [curves[name][s][step][metric] - curves[baseline][s][step][metric] for s in seeds]
    if not diffs:
        return float("nan"), float("nan"), 0
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return statistics.mean(diffs), se, len(diffs)


def _cell(values: Sequence[float]) -> str:
    m, sd, lo, hi = _stats(values)
    return f"{m:.4f} ± {sd:.4f} [{lo:.4f}..{hi:.4f}]"


def report(curves: Curves, names: List[str], baseline: str, warmup_steps: int,
           seconds: Dict[str, List[float]], header: str,
           costs: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """The markdown report: one table per metric over eval steps, then the summary against
    `baseline` with paired differences and each configuration's cost."""
    steps = sorted(set.intersection(*(set(mean_curve(curves, n, "AP")) for n in names)))
    seeds = sorted(curves[names[0]])
    lines = [header, "",
             f"Per eval step, over seeds {', '.join(map(str, seeds))}: mean ± std "
             f"[min..max]. LR warm-up ends at step {warmup_steps}."]
    for metric in ("AP", "AP50", "APs", "APm", "APl"):
        table = {n: mean_curve(curves, n, metric) for n in names}
        lines += ["", f"**{metric}**", "", "| step | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for s in steps:
            lines.append(f"| {s}{'' if s > warmup_steps else ' (warm-up)'} | "
                         + " | ".join(_cell(table[n][s]) for n in names) + " |")
    final = steps[-1]
    after = [s for s in steps if s > warmup_steps]
    ap = {n: mean_curve(curves, n, "AP") for n in names}
    lines += ["", f"Summary at the final step {final} against {baseline}; the paired difference "
                  f"is the mean over seeds of (config AP - {baseline} AP at the same seed) ± its "
                  f"standard error:", "",
              "| config | final AP | final AP50 | final APs / APm / APl | mean AP after warm-up "
              f"| evals with mean AP >= {baseline}'s | final AP - {baseline}'s (paired) | "
              "params | GFLOPs | latency ms | wall min/run |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        f = {m: statistics.mean(mean_curve(curves, n, m)[final]) for m in
             ("AP", "AP50", "APs", "APm", "APl")}
        avg = statistics.mean(statistics.mean(ap[n][s]) for s in after) if after else float("nan")
        wins = sum(statistics.mean(ap[n][s]) >= statistics.mean(ap[baseline][s]) for s in after)
        d, se, k = paired_difference(curves, n, baseline, final)
        c = (costs or {}).get(n, {})
        lines.append(
            f"| {n} | {_cell(ap[n][final])} | {f['AP50']:.4f} | {f['APs']:.4f} / {f['APm']:.4f} "
            f"/ {f['APl']:.4f} | {avg:.4f} | {wins}/{len(after)} | "
            + ("—" if n == baseline else f"{d:+.4f} ± {se:.4f} (n={k})")
            + f" | {c.get('params', float('nan')) / 1e6:.2f}M | "
            f"{c.get('flops', float('nan')) / 1e9:.3f} | {c.get('latency_ms', float('nan')):.1f} "
            f"| {statistics.mean(seconds[n]) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(curves: Curves, names: List[str], warmup_steps: int, path: str, title: str) -> None:
    """AP, AP50, AP_s and AP_l against step: one line per configuration (mean over seeds),
    min..max over seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    import outputs  # the repository root is on sys.path once machine is imported

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, metric in zip(axes.flat, ("AP", "AP50", "APs", "APl")):
        for n in names:
            table = mean_curve(curves, n, metric)
            steps = sorted(table)
            ax.plot(steps, [statistics.mean(table[s]) for s in steps], marker="o", ms=3,
                    label=f"{n} (mean of {len(curves[n])} seeds)")
            ax.fill_between(steps, [min(table[s]) for s in steps],
                            [max(table[s]) for s in steps], alpha=0.2)
        ax.axvline(warmup_steps, color="grey", ls=":", lw=1)
        ax.set_xlabel("training step (batch 8)")
        ax.set_ylabel(f"COCO {metric} (held-out split)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with outputs.atomic_path(path) as tmp:  # the format follows the suffix, which tmp keeps
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def costs_of(configs: List[Tuple[str, str]], args: argparse.Namespace
             ) -> Dict[str, Dict[str, float]]:
    """{config: {'params', 'flops' (multiply-adds per image), 'latency_ms' (network, batch 1,
    median of 20 runs)}} at the benchmark's image size and classes, on this machine."""
    sys.path.insert(0, ROOT)
    import cli

    cli.import_tensorflow()
    import hparams_config
    import inference

    out = {}
    for name, hparams in configs:
        overrides = ",".join(p for p in (f"num_classes={DATASETS[args.dataset][0]},"
                                         f"image_size={args.image_size}", hparams) if p)
        config = hparams_config.get_detection_config(args.model_name, overrides)
        result = inference.benchmark_network(config, batch_size=1, runs=20)
        out[name] = {"params": result.params, "flops": result.flops_per_image,
                     "latency_ms": result.median_image_ms}
        print(f"{name}: {result.params / 1e6:.2f}M params, {result.flops / 1e9:.3f} GFLOPs, "
              f"{out[name]['latency_ms']:.1f} ms", flush=True)
    return out


def _parser() -> argparse.ArgumentParser:
    p = machine.parser(__doc__, model_name="efficientdet-d0", image_size=256, batch=8)
    p.add_argument("--config", action="append", default=None,
                   help="NAME:HPARAMS, repeatable (default: vfpn:fpn_name=vfpn and "
                        "bifpn:fpn_name=bifpn)")
    p.add_argument("--baseline", default="bifpn", help="configuration the others are held to")
    p.add_argument("--dataset", choices=tuple(DATASETS), default="clutter",
                   help="clutter: 10 classes, many scales, occlusion (default); shapes: the "
                        "demo's 3 plain shapes")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated --tf_random_seed values")
    p.add_argument("--eval_every", type=int, default=None, help="training steps between evals "
                   "(default: 128 on clutter, 64 on shapes)")
    p.add_argument("--evals", type=int, default=None, help="evaluations (= schedule length / "
                   "eval_every; default: 8 on clutter, 5 on shapes)")
    p.add_argument("--train_images", type=int, default=512)
    p.add_argument("--val_images", type=int, default=100)
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help="hparams applied to every configuration alike")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (<= 2 here)")
    p.add_argument("--threads", type=int, default=-1,
                   help="TF intra/inter-op threads per process; 0: TF default; -1: 1 when "
                        "--jobs > 1, else TF default")
    p.add_argument("--work_dir", default="/tmp/learning/bench",
                   help="data and runs, kept: a finished run with the same command is reused")
    p.add_argument("--records", default="",
                   help="directory of finished runs' records (<config>-s<seed>.json), read "
                        "and added to: commit it to continue elsewhere")
    p.add_argument("--plot", default="", help="PNG learning curves")
    p.add_argument("--json", default="", help="every run's curve, costs and the machine, as json")
    p.add_argument("--no_costs", action="store_true", help="skip the latency/FLOPs measurement")
    return p


def _header(args: argparse.Namespace, configs: List[Tuple[str, str]], threads: int,
            wall: float) -> Tuple[str, int]:
    """(the report's header: machine, data, recipe; the warm-up length in steps)."""
    # An "epoch" of these runs is one eval interval (--num_examples_per_epoch), so the
    # recipe's lr_warmup_epoch is counted in eval intervals.
    warmup_steps = args.eval_every
    for piece in args.recipe.split(","):
        if piece.startswith("lr_warmup_epoch="):
            warmup_steps = round(float(piece.split("=", 1)[1]) * args.eval_every)
    header = "\n".join([
        machine.line(f"float32; {args.jobs} training process(es) at once, each with "
                     f"TF_NUM_INTRAOP_THREADS=TF_NUM_INTEROP_THREADS="
                     f"{threads or 'TF default'}; niceness {os.nice(0)}; wall {wall / 60:.1f} "
                     f"min for this invocation (finished runs it reused not counted)"),
        "",
        f"Data: sample_dataset.py --kind={args.dataset} ({DATASETS[args.dataset][0]} classes, "
        f"image sides {DATASETS[args.dataset][1]}..{DATASETS[args.dataset][2]} px), "
        f"{args.train_images} train images (seed 0), {args.val_images} held-out val images "
        f"(seed 1), all evaluated. Model "
        f"{args.model_name} from scratch (no pretrained backbone), image_size "
        f"{args.image_size}, batch {args.batch}, {args.evals * args.eval_every} steps, eval "
        f"every {args.eval_every}; hparams for every configuration: `{args.recipe}`. "
        f"Configurations: "
        + "; ".join(f"**{n}** `{h}`" for n, h in configs) + ".",
    ])
    return header, warmup_steps


def _configs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """The (name, hparams) of every --config (default: DEFAULT_CONFIGS); names unique and
    --baseline among them."""
    configs = [parse_config(c) for c in (args.config or DEFAULT_CONFIGS)]
    names = [n for n, _ in configs]
    if len(set(names)) != len(names):
        raise BenchError(f"configuration names must be unique: {names}")
    if args.baseline not in names:
        raise BenchError(f"--baseline={args.baseline} is not among the configurations {names}")
    return configs


def train_all(jobs: List[Tuple[str, int, List[str], str]], names: List[str], threads: int,
              parallel: int, work_dir: str, records: str = ""
              ) -> Tuple[Curves, Dict[str, List[float]], Dict[str, List[str]]]:
    """Run (or reuse) every (name, seed, command, run dir) of `jobs`, `parallel` at a time,
    with their --records copies in `records`; returns ({name: {seed: curve}}, {name: [wall
    seconds per run]}, {machine line: [run names]})."""
    env = thread_env(threads)
    lock = threading.Lock()
    curves: Curves = {n: {} for n in names}
    seconds: Dict[str, List[float]] = {n: [] for n in names}
    machines: Dict[str, List[str]] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel))
    try:
        futures = {pool.submit(train_one, cmd, run_dir, env, lock, work_dir,
                               os.path.join(records, os.path.basename(run_dir) + ".json")
                               if records else ""): (name, seed)
                   for name, seed, cmd, run_dir in jobs}
        for fut in concurrent.futures.as_completed(futures):
            name, seed = futures[fut]
            result = fut.result()
            if not result["curve"]:
                raise BenchError(f"{name} seed {seed}: main.py printed no eval line")
            curves[name][seed] = result["curve"]
            seconds[name].append(result["seconds"])
            machines.setdefault(result["machine"] or "unrecorded", []).append(f"{name}-s{seed}")
    finally:
        # On a failure, start nothing more; runs already going finish and are recorded.
        pool.shutdown(wait=True, cancel_futures=True)
    return curves, seconds, {m: sorted(runs) for m, runs in machines.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    args.eval_every = args.eval_every or DATASETS[args.dataset][3]
    args.evals = args.evals or DATASETS[args.dataset][4]
    machine.check_outputs(args, ("out", "plot", "json"))
    try:
        configs = _configs(args)
        names = [n for n, _ in configs]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        threads = (1 if args.jobs > 1 else 0) if args.threads < 0 else args.threads
        data = make_data(os.path.join(args.work_dir, "data"), args.train_images,
                         args.val_images, args.dataset)
        # Seed-major order: with a partial run (stopped early) every configuration has the
        # same seeds done.
        jobs = []
        for seed in seeds:
            for name, hparams in configs:
                run_dir = os.path.join(args.work_dir, "runs", f"{name}-s{seed}")
                jobs.append((name, seed, run_command(args, data, hparams, seed, run_dir),
                             run_dir))
        start = time.time()
        curves, seconds, machines = train_all(jobs, names, threads, args.jobs, args.work_dir,
                                              args.records)
        wall = time.time() - start
    except BenchError as e:
        print(f"bench_learning: {e}", file=sys.stderr)
        return 1

    header, warmup_steps = _header(args, configs, threads, wall)
    header += "\n\nMachines of the runs:\n" + "\n".join(
        f"- {m.removeprefix('Machine: ')}: {', '.join(runs)}" for m, runs in machines.items())
    costs = {} if args.no_costs else costs_of(configs, args)
    text = report(curves, names, args.baseline, warmup_steps, seconds, header, costs)
    machine.print_and_save(text, args.out)
    if args.json:
        import outputs  # the repository root is on sys.path once machine is imported

        outputs.write_file(args.json, json.dumps(
            {"header": header, "configs": dict(configs), "seconds": seconds, "costs": costs,
             "machines": machines, "curves": curves}, indent=1))
    if args.plot:
        plot(curves, names, warmup_steps, args.plot,
             f"{args.model_name} @ {args.image_size}px from scratch on the {args.dataset} set, "
             f"seeds {args.seeds}; shaded: min..max over seeds")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

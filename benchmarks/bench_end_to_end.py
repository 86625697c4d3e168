"""End-to-end latency (saved_model_benchmark) next to network latency (bm), d0 VFPN and BiFPN.

    python benchmarks/bench_end_to_end.py --threads=0 --runs=20 \
        --out=benchmarks/results_end_to_end.md --overwrite

For each feature network and batch size, in separate processes:

* network: `model_inspect.py --runmode=bm` (first conv to last head output, float32 input of the
  network size, frozen graph);
* end-to-end: `--runmode=saved_model` (random weights), then `--runmode=saved_model_benchmark` on
  the exported `<model_name>_frozen.pb` with a real 1024x636 JPEG (decoded once, outside the
  timing, as in the reference): feeding the uint8 batch, resize + normalise + pad, the network,
  box decoding, top-k and per-class NMS, and fetching the detections;
* end-to-end, NMS worst case: the same with `--min_score_thresh=0`, so NMS works through all 5000
  candidates of every image (random weights score everything near 0.01, below the default 0.4).

Each timing is the median per-image latency of `--runs` runs after 5 warm-ups; with
`--repeats` > 1 the table reports the median over interleaved rounds. Timings belong here and in
the README, never in tests.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Dict, List, Sequence

import machine

IMAGE = os.path.join(os.path.dirname(machine.ROOT), "shared", "fixtures", "images", "street.jpg")


def _median_ms(args: Sequence[str]) -> float:
    """The median per-image latency of a bm / saved_model_benchmark run, from its
    --results_json (robust to the odd slow run on a shared machine)."""
    return machine.model_inspect_results(args)["median_image_ms"]


def measure(model: str, fpn: str, batch: int, runs: int, threads: int, image: str,
            workdir: str) -> Dict[str, float]:
    common = [f"--model_name={model}", f"--hparams=fpn_name={fpn}", f"--batch_size={batch}"]
    timing = [f"--bm_runs={runs}", f"--threads={threads}"]
    network = _median_ms(["--runmode=bm", *common, *timing])
    export = os.path.join(workdir, f"{fpn}_b{batch}")
    if not os.path.exists(export):
        machine.run_model_inspect(["--runmode=saved_model", *common, f"--saved_model_dir={export}"])
    frozen = os.path.join(export, f"{model}_frozen.pb")
    bench = ["--runmode=saved_model_benchmark", f"--saved_model_dir={frozen}",
             f"--input_image={image}", f"--batch_size={batch}", *timing]
    end_to_end = _median_ms(bench)
    worst = _median_ms([*bench, "--min_score_thresh=0"])
    return {"network": network, "e2e": end_to_end, "worst": worst}


def main() -> None:
    p = machine.parser(__doc__, fpns="vfpn,bifpn", batches="1,8", runs=20, repeats=1, threads=0)
    p.add_argument("--model", default="efficientdet-d0", help="the model preset")
    p.add_argument("--image", default=IMAGE, help="the end-to-end input picture")
    args = p.parse_args()
    machine.check_outputs(args)
    if not os.path.isfile(args.image):
        sys.exit(f"bench_end_to_end.py: error: --image '{args.image}' does not exist")

    rows = []
    with machine.work_dir(None, "bench_end_to_end_") as workdir:
        for batch in map(int, args.batches.split(",")):
            results: Dict[str, List[Dict[str, float]]] = {f: [] for f in args.fpns.split(",")}
            for _ in range(args.repeats):
                for fpn in results:
                    results[fpn].append(measure(args.model, fpn, batch, args.runs,
                                                args.threads, args.image, workdir))
            for fpn, rs in results.items():
                med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                rows.append(machine.row(
                    args.model, fpn, batch, f"{med['network']:.1f}", f"{med['e2e']:.1f}",
                    f"{med['e2e'] / med['network']:.3f}", f"{med['worst']:.1f}",
                    f"{med['worst'] / med['network']:.3f}"))
                print(rows[-1], flush=True)
    above = machine.line(
        f"threads={args.threads or 'TF default'}; float32; median of {args.runs} timed runs "
        f"after 5 warm-ups" + (f", median of {args.repeats} interleaved rounds"
                               if args.repeats > 1 else "")
        + f"; end-to-end input: {os.path.basename(args.image)} (1024x636 uint8), random weights")
    columns = ("model", "fpn", "batch", "network ms/img (bm)", "end-to-end ms/img",
               "e2e / network", "e2e, NMS on all 5000 candidates", "worst / network")
    machine.print_and_save(machine.table([above], columns, rows), args.out)


if __name__ == "__main__":
    main()

"""Every runtime of one export, end to end, side by side: latency ratio to the TF frozen graph
and COCO AP on a trained model.

    # 1. exports (random weights; any machine load): SavedModel (+ frozen graph, TFLite,
    #    OpenVINO IR), ONNX and the int8 models for each feature network and batch size
    python benchmarks/bench_runtimes.py --workdir=/tmp/bench_runtimes --export_only
    # 2. timing, on a quiet machine (one process per feature network and batch size, every
    #    runtime loaded in it, interleaved rounds)
    python benchmarks/bench_runtimes.py --workdir=/tmp/bench_runtimes --rounds=3 --runs=10 \
        --ap_model_dir=/tmp/ov-demo/model --ap_json=/tmp/ov-demo/data/rec/json_val.json \
        --ap_images=/tmp/ov-demo/data/val/VOCdevkit/VOC2012/JPEGImages \
        --ap_calibration='/tmp/ov-demo/data/rec/train-*' --out=benchmarks/results_runtimes.md \
        --overwrite

Runtimes: TF SavedModel (`saved_model_benchmark` on the export directory), TF frozen graph
(`<model_name>_frozen.pb`), TFLite (`--tflite_path`; images of any size, which keeps it off
XNNPACK), TFLite fixed size (`--tflite_input_size` at street.jpg's size: static, on XNNPACK;
no AP, the held-out images have many sizes), ONNX Runtime (`--runmode=onnx`) and
OpenVINO IR (`--openvino_path`) at inference precision f32, bf16 and auto (the runtime's choice),
and the int8 models of post-training quantisation (quantize.py): OpenVINO int8 (NNCF, beside the
f32 IR), TFLite int8 and TFLite int8 fixed size (full-integer; no AP, as TFLite fixed size). The
int8 models of the random-weight exports are calibrated on street.jpg alone (their timing does
not depend on it); the trained model's on `--calibration_images` of `--ap_calibration` (its
training split).
Each timed call is `Detector.predict` on street.jpg (decoded once, outside the timing):
feeding the uint8 batch, pre-processing, the network, NMS and fetching the detections, as
`saved_model_benchmark` times it. The table gives the median over rounds of each round's
median per-image latency, and its ratio to the TF frozen graph of the same round set.

AP: the trained checkpoint of `--ap_model_dir` is exported the same ways (batch 1, score
threshold `--ap_score_thresh`), each runtime detects on every image of `--ap_json` (ids from
the json's `file_name`), and pycocotools scores the results json. Every runtime's detections
are also compared with the TF SavedModel's (boxes within 1 px, scores within 1e-3; the int8
models' differ by design: their AP is the measure).
Timings belong here and in the README, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # the modules, and conftest's parity check
IMAGE = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "images", "street.jpg")
MODEL = "efficientdet-d0"
# (row label, export file key, OpenVINO precision; None: the format's default)
RUNTIMES: List[Tuple[str, str, Optional[str]]] = [
    ("TF SavedModel", "saved_model", None),
    ("TF frozen graph", "frozen", None),
    ("TFLite", "tflite", None),
    ("TFLite fixed size", "tflite_fixed", None),
    ("ONNX Runtime", "onnx", None),
    ("OpenVINO f32", "openvino", "f32"),
    ("OpenVINO bf16", "openvino", "bf16"),
    ("OpenVINO auto", "openvino", "auto"),
    ("OpenVINO int8", "openvino_int8", "f32"),
    ("TFLite int8", "tflite_int8", None),
    ("TFLite int8 fixed size", "tflite_int8_fixed", None),
]
BASELINE = "TF frozen graph"


def export_paths(directory: str) -> Dict[str, str]:
    return {"saved_model": os.path.join(directory, "saved_model"),
            "frozen": os.path.join(directory, "saved_model", f"{MODEL}_frozen.pb"),
            "tflite": os.path.join(directory, "model.tflite"),
            "tflite_fixed": os.path.join(directory, "fixed_size", "model.tflite"),
            "onnx": os.path.join(directory, "model.onnx"),
            "openvino": os.path.join(directory, "openvino", "model.xml"),
            "openvino_int8": os.path.join(directory, "openvino", "model_int8.xml"),
            "tflite_int8": os.path.join(directory, "int8", "model.tflite"),
            "tflite_int8_fixed": os.path.join(directory, "int8_fixed_size", "model.tflite")}


def export_all(directory: str, fpn: str, batch: int, ckpt: Optional[str] = None,
               score_thresh: Optional[float] = None, calibration: str = IMAGE,
               calibration_images: int = 300) -> Dict[str, str]:
    """Every format of one model in `directory` (kept: a later run reuses it); the int8 models
    calibrated on `calibration_images` of `calibration` (quantize.read_calibration)."""
    import export
    import hparams_config
    import run_dir

    paths = export_paths(directory)
    if ckpt:
        config = run_dir.load_run_config(None, "", ckpt)
    else:
        config = hparams_config.get_detection_config(MODEL, {"fpn_name": fpn})
    config.is_training_bn = False
    if not os.path.exists(paths["openvino"]):
        start = time.time()
        export.export_saved_model(config, paths["saved_model"], MODEL, ckpt, batch,
                                  score_thresh, tflite_path=paths["tflite"],
                                  openvino_path=paths["openvino"])
        print(f"  exported SavedModel, frozen graph, TFLite, OpenVINO in "
              f"{time.time() - start:.0f} s", flush=True)
    if not ckpt and not os.path.exists(paths["tflite_fixed"]):
        import visualize

        start = time.time()
        size = visualize.read_image(IMAGE).shape[:2]
        export.export_saved_model(config, os.path.join(directory, "fixed_size", "saved_model"),
                                  MODEL, ckpt, batch, score_thresh,
                                  tflite_path=paths["tflite_fixed"], tflite_input_size=size)
        print(f"  exported TFLite for {size[1]}x{size[0]} images in {time.time() - start:.0f} s",
              flush=True)
    if not os.path.exists(paths["onnx"]):
        start = time.time()
        export.export_onnx(config, paths["onnx"], ckpt, batch, score_thresh)
        print(f"  exported ONNX in {time.time() - start:.0f} s", flush=True)
    export_int8(directory, config, batch, ckpt, score_thresh, calibration, calibration_images)
    return paths


def export_int8(directory: str, config, batch: int, ckpt: Optional[str],
                score_thresh: Optional[float], calibration: str,
                calibration_images: int) -> None:
    """The int8 models of `export_all` (beside its f32 exports, which they are made from):
    OpenVINO int8 from the f32 IR, TFLite int8 from the SavedModel and, for random weights,
    TFLite int8 for street.jpg's size."""
    import export
    import quantize

    paths = export_paths(directory)
    todo = [k for k in ("openvino_int8", "tflite_int8") if not os.path.exists(paths[k])]
    if not ckpt and not os.path.exists(paths["tflite_int8_fixed"]):
        todo.append("tflite_int8_fixed")
    if not todo:
        return
    start = time.time()
    calib = quantize.read_calibration(calibration, calibration_images, config,
                                      "ap_calibration")
    if "openvino_int8" in todo:
        quantize.quantize_openvino(paths["openvino"], calib, paths["openvino_int8"])
    if "tflite_int8" in todo:
        quantizer = quantize.TFLiteInt8(calib, batch)
        export.export_tflite(paths["saved_model"], paths["tflite_int8"], quantizer)
        export.write_export_settings(paths["tflite_int8"], {
            **export.read_export_settings(paths["saved_model"]), "tflite_input_size": "any",
            **quantizer.settings})
    if "tflite_int8_fixed" in todo:
        import visualize

        size = visualize.read_image(IMAGE).shape[:2]
        export.export_saved_model(config, os.path.join(directory, "int8_fixed_size",
                                                       "saved_model"),
                                  MODEL, ckpt, batch, score_thresh,
                                  tflite_path=paths["tflite_int8_fixed"], tflite_input_size=size,
                                  tflite_quantizer=quantize.TFLiteInt8(calib, batch, size))
    print(f"  exported {', '.join(todo)} ({len(calib)} calibration image(s)) in "
          f"{time.time() - start:.0f} s", flush=True)


def load(label: str, paths: Dict[str, str], threads: int):
    import detectors

    _, key, precision = next(r for r in RUNTIMES if r[0] == label)
    return detectors.load_detector(paths[key], threads, precision)


def time_one(directory: str, batch: int, rounds: int, runs: int, warmup: int,
             threads: int) -> Dict[str, Dict]:
    """In this process: load every runtime of the export in `directory`, then `rounds`
    interleaved rounds of `runs` timed calls each (after `warmup` calls per round)."""
    import numpy as np

    import inference
    import visualize

    image = visualize.read_image(IMAGE)
    images = np.stack([image] * batch)
    paths = export_paths(directory)
    dets = {label: load(label, paths, threads) for label, _, _ in RUNTIMES}
    medians: Dict[str, List[float]] = {label: [] for label in dets}
    for _ in range(rounds):
        for label, det in dets.items():
            times = inference.time_calls(lambda d=det: d.predict(images), runs, warmup)
            medians[label].append(1000.0 * statistics.median(times) / batch)
    return {label: {"ms": statistics.median(ms), "rounds": ms,
                    "precision": precision_run(dets[label]),
                    "note": dets[label].note} for label, ms in medians.items()}


def precision_run(det) -> str:
    """What a loaded runtime computes in: 'int8' for a quantised model (its network; pre- and
    post-processing stay float), else the inference precision (f32 unless OpenVINO runs bf16)."""
    return "int8" if det.int8 else getattr(det, "precision", "f32")


def ap_one(directory: str, gt_json: str, image_dir: str, threads: int) -> Dict[str, Dict]:
    """AP of every runtime on the images of `gt_json`, and parity with the TF SavedModel."""
    import coco_metric
    import inference

    pairs = inference.coco_image_paths(gt_json, image_dir)
    paths = export_paths(directory)
    found, out = {}, {}
    for label, key, _ in RUNTIMES:
        if key.endswith("_fixed"):  # takes one image size; the held-out images have many
            continue
        with load(label, paths, threads) as det:
            results = os.path.join(directory, "results", label.replace(" ", "_") + ".json")
            # The benchmark's own scratch file in its work directory: each run rewrites it.
            summary = inference.coco_results(det, pairs, results, overwrite=True)
            if summary.failed:
                raise RuntimeError(f"{label}: images failed: {summary.failed[:3]}")
            metrics = coco_metric.evaluate_detections_json(gt_json, results)
            found[label] = summary.detections
            out[label] = {"AP": metrics["AP"], "AP50": metrics["AP50"],
                          "detections": sum(len(d) for d in summary.detections.values())}
    reference = found["TF SavedModel"]
    for label, dets in found.items():
        out[label]["parity"] = parity(reference, dets)
    return out


def parity(reference: Dict, other: Dict) -> str:
    """'same' when every image has the same detections (count and classes equal, boxes
    within 1 px, scores within 1e-3, matched one to one), else how many images differ."""
    from conftest import assert_same_detections

    differ = 0
    for path, want in reference.items():
        try:
            assert_same_detections(want, other[path], path)
        except AssertionError:
            differ += 1
    return "same" if not differ else f"{differ}/{len(reference)} images differ"


def openvino_capabilities() -> str:
    """What OpenVINO's CPU plugin offers here (bf16 among them only with native bf16)."""
    try:
        import export

        caps = export.import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        return "OpenVINO not installed"
    return f"OpenVINO CPU capabilities {', '.join(caps)}"


def versions() -> str:
    """The serving runtimes' versions (Python's and TensorFlow's are on the machine line)."""
    out = []
    for module, name in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")):
        try:
            if module == "openvino":
                import export

                version = export.import_openvino().get_version().split("-")[0]
            else:
                version = __import__(module).__version__
            out.append(f"{name} {version}")
        except ImportError:
            pass
    return ", ".join(out) or "neither ONNX Runtime nor OpenVINO installed"


def _child(args: argparse.Namespace, mode: str, directory: str, batch: int) -> Dict:
    """Run `time_one` / `ap_one` in a fresh process (isolates runtimes' thread pools and
    any crash); retried once if the process dies."""
    cmd = [sys.executable, os.path.abspath(__file__), f"--child={mode}",
           f"--child_dir={directory}", f"--child_batch={batch}", f"--rounds={args.rounds}",
           f"--runs={args.runs}", f"--warmup={args.warmup}", f"--threads={args.threads}",
           f"--ap_json={args.ap_json}", f"--ap_images={args.ap_images}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for attempt in (1, 2):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {mode} {directory}: process failed (status {proc.returncode}, attempt "
              f"{attempt}):\n{proc.stderr[-1500:]}", flush=True)
    raise RuntimeError(f"{mode} {directory} failed twice")


def _header(args: argparse.Namespace, first: Dict[str, Dict], with_ap: bool) -> List[str]:
    """The lines above the table: machine, versions, how it was timed, what each runtime ran
    on (from `first`, one process's timings) and where AP comes from."""
    ov_note = next((r["note"] for r in first.values() if "bf16 requested" in r["note"]), "")
    tflite_notes = "; ".join(f"{label}: {first[label]['note']}" for label, key, _ in RUNTIMES
                             if key.startswith("tflite") and label in first)
    int8_note = (f"int8: post-training quantisation (quantize.py), the network int8 and pre- and "
                 f"post-processing float; random-weight models calibrated on "
                 f"{os.path.basename(IMAGE)}"
                 + (f", the trained one on {args.calibration_images} images of "
                    f"`{args.ap_calibration}`" if with_ap else "") + ".")
    header = [
        machine.line(openvino_capabilities()),
        f"Versions: {versions()}. Threads: {args.threads or 'each runtime default'}. "
        f"End to end on {os.path.basename(IMAGE)} (1024x636 uint8, decoded outside the "
        f"timing): median over {args.rounds} interleaved rounds of the median of {args.runs} "
        f"calls after {args.warmup} warm-ups; random weights; one process per model and "
        f"batch holding every runtime.",
        (f"OpenVINO bf16 on this CPU: {ov_note}." if ov_note else ""),
        (f"TFLite runs on: {tflite_notes}; the fixed-size models are exported with "
         f"`--tflite_input_size` for street.jpg's 1024x636." if tflite_notes else ""),
        int8_note,
        (f"AP: {os.path.basename(os.path.dirname(args.ap_json.rstrip('/')) or args.ap_json)} "
         f"held-out images of `{args.ap_json}`, trained checkpoint `{args.ap_model_dir}` "
         f"exported at batch 1 with score threshold {args.ap_score_thresh}; parity: "
         f"detections vs the TF SavedModel's (boxes 1 px, scores 1e-3)." if with_ap else ""),
    ]
    return [h for h in header if h]


COLUMNS = ("model", "fpn", "batch", "runtime", "precision run", "ms/img", "img/s",
           "vs TF frozen", "AP", "AP50", "detections vs SavedModel")


def _parser() -> argparse.ArgumentParser:
    p = machine.parser(__doc__, fpns="vfpn,bifpn", batches="1,8", rounds=3, runs=10, warmup=3,
                       threads=0)
    p.add_argument("--workdir", default="/tmp/bench_runtimes",
                   help="the exports, kept: a later run reuses them")
    p.add_argument("--export_only", action="store_true", help="export, then stop")
    p.add_argument("--ap_model_dir", default="", help="trained model whose AP each runtime gets")
    p.add_argument("--ap_json", default="", help="its held-out ground truth (COCO json)")
    p.add_argument("--ap_images", default="", help="the directory of that json's images")
    p.add_argument("--ap_score_thresh", type=float, default=0.001)
    p.add_argument("--ap_calibration", default="",
                   help="calibration images of the trained model's int8 exports: its training "
                        "split's TFRecords (or an image glob); needed with --ap_model_dir")
    p.add_argument("--calibration_images", type=int, default=300)
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_batch", type=int, default=1, help=argparse.SUPPRESS)
    return p


def _export(args: argparse.Namespace, combos: List[Tuple[str, int]]) -> str:
    """Every export the run needs (kept in --workdir, reused); returns the trained model's
    export directory."""
    for fpn, batch in combos:
        print(f"export {fpn} batch {batch}", flush=True)
        export_all(os.path.join(args.workdir, f"{fpn}_b{batch}"), fpn, batch)
    ap_dir = os.path.join(args.workdir, "ap")
    if args.ap_model_dir:
        print("export the trained model", flush=True)
        export_all(ap_dir, "", 1, args.ap_model_dir, args.ap_score_thresh,
                   args.ap_calibration, args.calibration_images)
    return ap_dir


def _rows(timings: Dict[Tuple[str, int], Dict], aps: Dict[str, Dict]) -> List[str]:
    """The table's rows: every runtime of every (fpn, batch), AP on the vfpn batch-1 rows."""
    rows = []
    for (fpn, batch), result in timings.items():
        base = result[BASELINE]["ms"]
        for label, r in result.items():
            ap = aps.get(label) if fpn == "vfpn" and batch == 1 else None
            ap_cells = (f"{ap['AP']:.3f} | {ap['AP50']:.3f} | {ap['parity']}" if ap
                        else " | | ")
            if fpn == "vfpn" and batch == 1 and aps and not ap:
                ap_cells = "n/a | n/a | one image size only"
            rows.append(machine.row(MODEL, fpn, batch, label, r["precision"], f"{r['ms']:.1f}",
                                    f"{1000.0 / r['ms']:.1f}", f"{r['ms'] / base:.2f}",
                                    ap_cells))
    return rows


def main() -> None:
    p = _parser()
    args = p.parse_args()
    machine.check_outputs(args)
    if args.child == "time":
        print(json.dumps(time_one(args.child_dir, args.child_batch, args.rounds, args.runs,
                                  args.warmup, args.threads)))
        return
    if args.child == "ap":
        print(json.dumps(ap_one(args.child_dir, args.ap_json, args.ap_images, args.threads)))
        return
    if args.ap_model_dir and not args.ap_calibration:
        p.error("--ap_model_dir needs --ap_calibration (the training split's TFRecords) for "
                "its int8 models")
    combos = [(fpn, int(b)) for b in args.batches.split(",") for fpn in args.fpns.split(",")]
    ap_dir = _export(args, combos)
    if args.export_only:
        return
    start = time.time()
    timings = {}
    for fpn, batch in combos:
        print(f"timing {fpn} batch {batch}", flush=True)
        timings[(fpn, batch)] = _child(args, "time", os.path.join(args.workdir,
                                                                   f"{fpn}_b{batch}"), batch)
    aps = _child(args, "ap", ap_dir, 1) if args.ap_model_dir else {}
    print(f"measured in {time.time() - start:.0f} s", flush=True)
    text = machine.table(_header(args, next(iter(timings.values())), bool(aps)), COLUMNS,
                         _rows(timings, aps))
    machine.print_and_save(text, args.out)


if __name__ == "__main__":
    main()

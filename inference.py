"""Run a trained detector: on image files, on a video, and timed (network and end to end).

This is the entry point for inference from Python; model_inspect.py is its command line.

    import detectors, inference
    from dataset import label_maps

    with detectors.load_detector("/tmp/saved_model") as det:      # or CheckpointDetector(...)
        summary = inference.detect_images(det, ["img.png"], "/tmp/out",
                                          label_maps.for_config(config))

The work is done by the modules below it, one job each:

* `checkpoint_io`: find a checkpoint, restore variables (EMA-aware).
* `serving`: the raw network, pre-processing, the serving graph (uint8 images in, detections
  out), restoring weights into them and freezing them.
* `detectors`: one `Detector` class per format (checkpoint, SavedModel, frozen graph, TFLite,
  ONNX, OpenVINO), each returning `detections.Detections`; `load_detector` picks one for an
  exported model.
* `export`: dry run, frozen network, SavedModel (+ frozen graph, TFLite, OpenVINO), TFLite,
  ONNX, OpenVINO, checkpoint re-export, export settings.
* `visualize`: reading images (upright, 16-bit ones scaled to 8 bits), drawing and writing them.
* `outputs`: where outputs may go and what they are called (pictures are named after their
  sources, `<stem>.jpg`), refusing existing files unless `overwrite` and inputs always, and
  writing atomically.

Here: `detect_images`, `detect_video`, `benchmark_network` (the raw network, frozen) and
`benchmark_detector` (pre-processing + network + NMS), which share one timing loop, and
`coco_results` (any detector's detections on the images of a COCO json, as a COCO results json
for `coco_metric.evaluate_detections_json`), to compare formats by AP.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import coco_json
import errors
import hparams_config
import outputs
import serving
import sessions
import utils
import visualize
from detections import Detections
from detectors import Detector, SessionDetector

tf1 = tf.compat.v1


# -------------------------------------------------------------------------------------------------
# Timing
# -------------------------------------------------------------------------------------------------
class _PerImageTiming:
    """Per-image latency and FPS of a timing result with batch_size, mean_batch_s and
    median_batch_s (seconds per batch)."""

    @property
    def mean_image_ms(self) -> float:
        return 1000.0 * self.mean_batch_s / self.batch_size

    @property
    def median_image_ms(self) -> float:
        return 1000.0 * self.median_batch_s / self.batch_size

    @property
    def fps(self) -> float:
        return self.batch_size / self.mean_batch_s

    def as_dict(self) -> Dict[str, Any]:
        """The result as JSON values, for scripts (model_inspect.py --results_json): its fields
        (dataclasses.asdict; times in seconds) and mean_image_ms, median_image_ms and fps."""
        return {**dataclasses.asdict(self), "mean_image_ms": self.mean_image_ms,
                "median_image_ms": self.median_image_ms, "fps": self.fps}


@dataclasses.dataclass
class BenchmarkResult(_PerImageTiming):
    """Network latency of one configuration. Times are seconds."""

    model_name: str
    fpn_name: str
    precision: str
    batch_size: int
    runs: int
    mean_batch_s: float
    median_batch_s: float
    params: int
    flops_per_image: int

    def summary(self) -> str:
        return (f"{self.model_name} ({self.fpn_name}, {self.precision}, batch {self.batch_size}, "
                f"{self.runs} runs): per image mean {self.mean_image_ms:.2f} ms, median "
                f"{self.median_image_ms:.2f} ms, {self.fps:.2f} FPS; "
                f"params {self.params / 1e6:.3f}M, FLOPs {self.flops_per_image / 1e9:.3f}B")


@dataclasses.dataclass
class EndToEndResult(_PerImageTiming):
    """End-to-end latency (uint8 image in, detections out). Times are seconds."""

    model: str
    batch_size: int
    runs: int
    mean_batch_s: float
    median_batch_s: float
    image_size: Tuple[int, int]
    note: str = ""  # what ran underneath (the detector's note), e.g. the OpenVINO precision

    def summary(self) -> str:
        h, w = self.image_size
        return (f"{self.model} end-to-end (pre-processing + network + NMS; {w}x{h} uint8 "
                f"input, batch {self.batch_size}, {self.runs} runs): per image mean "
                f"{self.mean_image_ms:.2f} ms, median {self.median_image_ms:.2f} ms, "
                f"{self.fps:.2f} FPS" + (f"; {self.note}" if self.note else ""))


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> List[float]:
    """Seconds taken by each of `runs` calls of `fn`, after `warmup` untimed calls."""
    if runs < 1:
        raise errors.UsageError(f"the number of timed runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def write_trace(sess: tf1.Session, fetches: Any, feed: Dict, path: str) -> str:
    """One more run with full tracing, written to `path` as a Chrome trace (chrome://tracing).
    Whether `path` may be replaced is checked before (`trace_plan`)."""
    from tensorflow.python.client import timeline  # not in the public API

    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    metadata = tf1.RunMetadata()
    sess.run(fetches, feed, options=options, run_metadata=metadata)
    return outputs.write_file(
        path, timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())


def trace_plan(trace_filename: Optional[str]) -> List[outputs.Planned]:
    """The planned output of a benchmark's --trace_filename (none when unset)."""
    if not trace_filename:
        return []
    return [outputs.Planned("trace_filename", trace_filename, (trace_filename,))]


def benchmark_network(config: hparams_config.Config, batch_size: int = 1, runs: int = 10,
                      warmup: int = 5, threads: int = 0, xla: bool = False,
                      ckpt_path: Optional[str] = None,
                      trace_filename: Optional[str] = None,
                      overwrite: bool = False) -> BenchmarkResult:
    """Network latency (first conv to last head output) of the frozen raw network.

    Random weights unless `ckpt_path`; `warmup` untimed runs, then `runs` timed ones. FLOPs are
    multiply-adds per image (profiler float ops / 2) and params count trainable variables. An
    existing `trace_filename` is replaced only with `overwrite`.
    """
    outputs.check_plan(trace_plan(trace_filename), overwrite=overwrite)
    net = serving.build_raw_network(config, batch_size)
    params = utils.num_trainable_params(net.graph)
    flops = utils.num_flops(net.graph) // batch_size
    with sessions.new_session(net.graph) as sess:
        serving.restore_or_init(net, sess, ckpt_path, config)
        frozen = serving.freeze(sess, net.graph, net.output_names)
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(frozen, name="")
    fetches = [f"{n}:0" for n in net.output_names]
    feed = {f"{serving.INPUT_NAME}:0": serving.random_images(net, batch_size)}
    with sessions.new_session(graph, threads=threads, jit_level=2 if xla else 0) as sess:
        times = time_calls(lambda: sess.run(fetches, feed), runs, warmup)
        if trace_filename:
            write_trace(sess, fetches, feed, trace_filename)
    return BenchmarkResult(config.name, config.fpn_name, config.precision or "float32",
                           batch_size, runs, statistics.mean(times), statistics.median(times),
                           params, flops)


def benchmark_detector(detector: Detector, images: np.ndarray, batch_size: int = 1,
                       runs: int = 10, warmup: int = 5, name: str = "model",
                       trace_filename: Optional[str] = None,
                       score_thresh: Optional[float] = None,
                       overwrite: bool = False) -> EndToEndResult:
    """Time `detector.predict` on a batch tiled from `images` [n, h, w, 3] uint8.

    The batch is the model's static batch size, or `batch_size` for a dynamic-batch model.
    Each timed call covers feeding the uint8 batch, pre-processing, the network, NMS (at
    `score_thresh`, default: the model's) and fetching the detections. A trace is written for
    session-backed detectors (checkpoint, SavedModel, frozen graph) only; an existing one is
    replaced only with `overwrite`.
    """
    outputs.check_plan(trace_plan(trace_filename), overwrite=overwrite)
    batch = detector.batch_size or max(1, batch_size)
    reps = -(-batch // len(images))
    batch_images = np.concatenate([images] * reps)[:batch]
    times = time_calls(lambda: detector.predict(batch_images, score_thresh), runs, warmup)
    if trace_filename and isinstance(detector, SessionDetector):
        with detector.graph.as_default():
            write_trace(detector.sess, detector.outputs,
                        detector.feed_dict(batch_images, score_thresh), trace_filename)
    return EndToEndResult(name, batch, runs, statistics.mean(times), statistics.median(times),
                          tuple(images.shape[1:3]), detector.note)


# -------------------------------------------------------------------------------------------------
# Images
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ImageRunSummary:
    """What `detect_images` did: outputs by input path, and the inputs that failed."""

    written: Dict[str, Optional[str]]
    detections: Dict[str, Detections]
    failed: List[str]


def _same_size_chunks(paths: Sequence[str], chunk: int, failed: List[str]
                      ) -> Iterator[List[Tuple[int, str, np.ndarray]]]:
    """Read images in order and group consecutive same-sized ones, `chunk` at most."""
    pending: List[Tuple[int, str, np.ndarray]] = []
    for index, path in enumerate(paths):
        try:
            image = visualize.read_image(path)
        except visualize.ImageReadError as e:
            failed.append(str(e))
            continue
        if pending and (len(pending) >= chunk or pending[0][2].shape != image.shape):
            yield pending
            pending = []
        pending.append((index, path, image))
    if pending:
        yield pending


def _describe(path: str, det: Detections, label_map: Dict[int, str], out: Optional[str]) -> str:
    names = ", ".join(f"{visualize.class_name(label_map, c)} {s:.2f}"
                      for c, s in zip(det.classes[:5], det.scores[:5]))
    more = " ..." if len(det) > 5 else ""
    return (f"{path}: {len(det)} detections{': ' + names + more if len(det) else ''}"
            f"{' -> ' + out if out else ''}")


def image_outputs(paths: Sequence[str], output_dir: str) -> List[str]:
    """Where `detect_images` draws each of `paths`: `<output_dir>/<stem>.jpg`, de-duplicated
    when two inputs share a stem (outputs.named_after_sources)."""
    return outputs.named_after_sources(paths, output_dir, ".jpg")


def image_plan(paths: Sequence[str], output_dir: str
               ) -> Tuple[List[outputs.Planned], List[Tuple[str, str]]]:
    """(planned pictures, inputs) of drawing `paths` into `output_dir`, for
    outputs.check_plan: the flag is model_inspect's --output_image_dir."""
    return ([outputs.Planned("output_image_dir", output_dir,
                             tuple(image_outputs(paths, output_dir)), directory=True)],
            [("input_image", p) for p in paths])


def detect_images(detector: Detector, paths: Sequence[str], output_dir: Optional[str],
                  label_map: Dict[int, str], score_thresh: Optional[float] = None,
                  max_output_size: Optional[int] = None, line_thickness: Optional[int] = None,
                  batch_size: int = 1, log: Callable[[str], None] = print,
                  overwrite: bool = False) -> ImageRunSummary:
    """Run `detector` on image files; with `output_dir`, draw each into
    `<output_dir>/<stem>.jpg` (`image_outputs`).

    Detections above `score_thresh` (default: the model's), at most `max_output_size` per
    image, are kept and drawn with `label_map` names. A missing or undecodable file is
    reported by name in `failed` and skipped; the others are processed. Before any image is
    read, a picture that would replace an input is refused, and one that exists is refused
    unless `overwrite` (errors.OutputError).
    """
    names = image_outputs(paths, output_dir) if output_dir else []
    if output_dir:
        outputs.check_plan(*image_plan(paths, output_dir), overwrite=overwrite)
    failed: List[str] = []
    written: Dict[str, Optional[str]] = {}
    found: Dict[str, Detections] = {}
    thresh = detector.score_thresh if score_thresh is None else score_thresh
    chunk = detector.batch_size or max(1, batch_size)
    for group in _same_size_chunks(paths, chunk, failed):
        images = np.stack([g[2] for g in group])
        for (index, path, image), det in zip(group, detector.predict(images, score_thresh)):
            det = det.filter(thresh, max_output_size)
            found[path] = det
            out = None
            if output_dir:
                out = visualize.write_image(
                    visualize.draw_detections(image, det, label_map, thresh, max_output_size,
                                              line_thickness), names[index])
            written[path] = out
            log(_describe(path, det, label_map, out))
    return ImageRunSummary(written, found, failed)


def read_same_size(paths: Sequence[str]) -> Tuple[List[Tuple[int, np.ndarray]], List[str]]:
    """(index in `paths`, image) of the readable images that have the first readable image's
    size (a batch holds one size), and the problems of the files that could not be read."""
    images, failed = [], []
    for index, path in enumerate(paths):
        try:
            images.append((index, visualize.read_image(path)))
        except visualize.ImageReadError as e:
            failed.append(str(e))
    same = [(i, im) for i, im in images if im.shape == images[0][1].shape] if images else []
    return same, failed


def draw_one(detector: Detector, paths: Sequence[str], index: int, image: np.ndarray,
             output_dir: str, label_map: Dict[int, str], score_thresh: Optional[float] = None,
             max_output_size: Optional[int] = None, line_thickness: Optional[int] = None,
             overwrite: bool = False) -> Tuple[str, int]:
    """Draw the detections of `paths[index]` (read already: `image`) into the picture
    `detect_images(paths, output_dir)` would give it, checked by outputs.check_plan here
    too; returns (the picture, detections drawn)."""
    plan, inputs = image_plan(paths, output_dir)
    out = plan[0].files[index]
    outputs.check_plan([dataclasses.replace(plan[0], files=(out,))], inputs, overwrite)
    found = detector.predict(image[None], score_thresh)[0]
    thresh = detector.score_thresh if score_thresh is None else score_thresh
    visualize.write_image(visualize.draw_detections(
        image, found, label_map, thresh, max_output_size, line_thickness), out)
    return out, len(found.filter(thresh))


class CocoImage(NamedTuple):
    """An image of a COCO json: its `id`, the `path` of its file, and the json's `height` and
    `width` in pixels (None when the json gives none)."""

    id: int
    path: str
    height: Optional[int] = None
    width: Optional[int] = None


def coco_image_paths(gt_json: str, image_dir: str) -> List[CocoImage]:
    """The images of a COCO json, found in `image_dir` by `file_name`: the ids are the json's
    own (a converter assigns them), never guessed from file names."""
    import json

    with tf.io.gfile.GFile(gt_json) as f:
        images = json.load(f)["images"]
    return [CocoImage(int(im["id"]), os.path.join(image_dir, im["file_name"]),
                      im.get("height"), im.get("width")) for im in images]


def _check_json_size(item: Sequence[Any], image: np.ndarray) -> None:
    """A CocoImage's file must have the size its json gives: another image under that name
    would be scored against the json's boxes of the named one."""
    height, width = (tuple(item[2:4]) + (None, None))[:2]
    if height is not None and width is not None and image.shape[:2] != (height, width):
        raise coco_json.CocoMetricError(
            f"{item[1]} is {image.shape[1]}x{image.shape[0]} (WxH) but the json's image "
            f"{item[0]} is {width}x{height}: the image directory does not hold the json's "
            f"images; pass the directory the json was made from.")


def coco_results(detector: Detector, images: Sequence[Sequence[Any]], path: str,
                 score_thresh: Optional[float] = None, overwrite: bool = False
                 ) -> ImageRunSummary:
    """Run `detector` on each image ((image id, path), or a `CocoImage` whose height and width
    are then checked against the file) and write its detections as a COCO results json
    ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` to `path` (see
    coco_metric.evaluate_detections_json). Detections above `score_thresh` (default: the
    model's); unreadable images are reported in `failed`, the others are processed. An image
    whose size is not the json's raises `coco_json.CocoMetricError` before anything is
    written. An existing `path` is replaced only with `overwrite`, an input image never."""
    outputs.check_plan([outputs.Planned("path", path, (path,))],
                       [("images", item[1]) for item in images], overwrite)
    failed: List[str] = []
    found: Dict[str, Detections] = {}
    results: List[Dict[str, Any]] = []
    for item in images:
        image_id, image_path = item[0], item[1]
        try:
            image = visualize.read_image(image_path)
        except visualize.ImageReadError as e:
            failed.append(str(e))
            continue
        _check_json_size(item, image)
        det = detector.predict(image[None], score_thresh)[0]
        found[image_path] = det
        box_score = np.concatenate([coco_json.xywh_from_yxyx(det.boxes), det.scores[:, None]],
                                   axis=-1)
        results.extend(coco_json.results_from_arrays(np.full(len(det), image_id), box_score,
                                                     det.classes))
    coco_json.write_detections_json(path, results)
    return ImageRunSummary({p: path for p in found}, found, failed)


@dataclasses.dataclass
class CocoEvaluation:
    """COCO metrics of one detector on the images of a ground-truth json (`evaluate_detector`):
    `metrics` as coco_metric.evaluate_detections_json returns them, over the `images` that
    could be read; `failed` names the others."""

    KEYS = ("AP", "AP50", "AP75")

    metrics: Dict[str, float]
    images: int
    detections: int
    failed: List[str]
    score_thresh: float

    def summary(self) -> str:
        return (", ".join(f"{k} {self.metrics[k]:.3f}" for k in self.KEYS)
                + f" on {self.images} image(s), {self.detections} detections at score "
                f"threshold {self.score_thresh:g}")


def evaluate_detector(detector: Detector, gt_json: str, image_dir: str,
                      score_thresh: Optional[float] = None) -> CocoEvaluation:
    """COCO AP of `detector` on every image of the COCO json `gt_json` found in `image_dir`
    (see `coco_image_paths`), with detections above `score_thresh` (default: the model's).

    Images that cannot be read are named in `failed` and left out of the metrics, so two
    models evaluated on one split are scored on the same images. DataError when none can be
    read (or the json is not a COCO instances json: coco_json.CocoMetricError).
    """
    import tempfile

    import coco_metric

    coco_json.load_gt_json(gt_json)  # a bad json fails here, before any image is run
    pairs = coco_image_paths(gt_json, image_dir)
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "detections.json")
        run = coco_results(detector, pairs, results, score_thresh)
        ids = [item[0] for item in pairs if item[1] in run.detections]
        if not ids:
            example = run.failed[0] if run.failed else "the json lists no image"
            raise errors.DataError(f"none of the {len(pairs)} images of {gt_json} could be read "
                                   f"from {image_dir} ({example}); check the image directory")
        metrics = coco_metric.evaluate_detections_json(gt_json, results, image_ids=ids)
    thresh = detector.score_thresh if score_thresh is None else score_thresh
    return CocoEvaluation(metrics, len(set(ids)), sum(len(d) for d in run.detections.values()),
                          run.failed, float(thresh))


# -------------------------------------------------------------------------------------------------
# Video
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class VideoSummary:
    frames: int
    seconds: float
    output: Optional[str]
    shown: bool


def open_video(path: str):
    """A cv2.VideoCapture of video file `path`; DataError naming it if it is not a video.

    A text file is refused before OpenCV sees it: FFmpeg renders text files as video frames.
    """
    import cv2

    if not os.path.isfile(path):
        raise errors.DataError(f"video '{path}': no such file")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise errors.DataError(f"video '{path}' is empty")
    if b"\0" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise errors.DataError(f"'{path}' is a text file, not a video; give a video file "
                                   f"(e.g. .mp4, .mov or .avi)")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise errors.DataError(f"'{path}': OpenCV cannot open it as a video")
    return capture


class _VideoWriter:
    """An mp4v writer opened at the first frame (its size is known then). Frames go into a
    temporary file beside `path` (same suffix: OpenCV picks the container by it), which
    `close(keep=True)` renames to `path`; `close(keep=False)` removes it, so a failed run
    leaves no partial video."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps, self.writer = path, fps, None
        self.tmp = outputs.temporary_name(path)

    def write(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            outputs.ensure_parent(self.path)
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (bgr.shape[1], bgr.shape[0]))
            if not self.writer.isOpened():
                raise errors.OutputError(f"OpenCV cannot write video '{self.path}' (try a .mp4 "
                                         f"or .mov name)")
        self.writer.write(bgr)

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release()
        if keep and self.writer is not None:
            os.replace(self.tmp, self.path)
        elif os.path.lexists(self.tmp):
            os.remove(self.tmp)


def video_plan(input_video: str, output_video: Optional[str]
               ) -> Tuple[List[outputs.Planned], List[Tuple[str, str]]]:
    """(planned output, inputs) of `detect_video`, for outputs.check_plan."""
    plan = ([outputs.Planned("output_video", output_video, (output_video,))]
            if output_video else [])
    return plan, [("input_video", input_video)]


def detect_video(detector: Detector, input_video: str, output_video: Optional[str],
                 label_map: Dict[int, str], score_thresh: Optional[float] = None,
                 max_output_size: Optional[int] = None, line_thickness: Optional[int] = None,
                 show: bool = False, progress: bool = True,
                 overwrite: bool = False) -> VideoSummary:
    """Detect on every frame of `input_video` (any video file OpenCV reads).

    With `output_video`, annotated frames are written there (mp4v codec, the input's frame
    rate, 25 when unknown) under a progress bar; it appears only when the run succeeds, never
    replaces the input (whatever its spelling) and replaces another file only with
    `overwrite`. With `show`, frames are shown in a window ('q' quits).
    """
    import cv2
    from tqdm import tqdm

    outputs.check_plan(*video_plan(input_video, output_video), overwrite=overwrite)
    capture = open_video(input_video)
    writer = _VideoWriter(output_video, capture.get(cv2.CAP_PROP_FPS) or 25.0) \
        if output_video else None
    thresh = detector.score_thresh if score_thresh is None else score_thresh
    frames, start, finished = 0, time.perf_counter(), False
    bar = tqdm(total=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None, unit="frame",
               disable=not progress, file=sys.stderr)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[..., ::-1])
            det = detector.predict(rgb[None], score_thresh)[0]
            drawn = visualize.draw_detections(rgb, det, label_map, thresh, max_output_size,
                                              line_thickness)
            bgr = np.ascontiguousarray(drawn[..., ::-1])
            if writer:
                writer.write(bgr)
            if show:
                cv2.imshow("VFPN detections", bgr)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            frames += 1
            bar.update(1)
        finished = True
    finally:
        bar.close()
        capture.release()
        if writer:
            writer.close(keep=finished and frames > 0)
        if show:
            cv2.destroyAllWindows()
    if frames == 0:
        raise errors.DataError(f"video '{input_video}': no frame could be read")
    return VideoSummary(frames, time.perf_counter() - start, output_video, show)

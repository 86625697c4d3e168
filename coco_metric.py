"""COCO box evaluation (pycocotools) of accumulated batches and of detections json files (the
Estimator eval wraps `EvaluationMetric` in coco_metric_ops.py).

Metrics are the standard COCO bbox numbers of Lin et al., "Microsoft COCO: Common Objects in
Context" (ECCV 2014), computed by pycocotools' `COCOeval`: AP (mean over IoU 0.50:0.95), AP50,
AP75, APs/APm/APl (small/medium/large areas), ARmax1/10/100 and ARs/m/l, plus one per-class AP
``AP_/<class name>`` (IoU 0.50:0.95, all areas, 100 detections) for every class.

Box conventions (all coordinates in pixels of the ORIGINAL image, not the resized network input):

- detections: rows ``(source_id, x, y, w, h, score, class)``, i.e. COCO's [x, y, width, height]
  with (x, y) the top-left corner. Rows with score <= 0 or class <= 0 are padding (the
  post-processing pads every image to a fixed number of rows) and are ignored.
- groundtruth_data: rows ``(ymin, xmin, ymax, xmax, is_crowd, area, class)`` as the dataloader
  emits them, padded with rows of -1 (class <= 0 marks padding). ``area`` is the
  object's pixel area (COCO's segment area for COCO records); a missing area (<= 0) is replaced by
  the box area.
- class ids are the dataset's own label ids, 1..num_classes (COCO: 1..90 with gaps), never 0.

Ground truth comes either from a COCO instances json (``--val_json_file``), in which case only the
images that were actually evaluated count (so ``--eval_samples`` smaller than the split is a
correct partial eval), or from the records' ``groundtruth_data`` (a COCO dataset built in memory).
With ``testdev_dir`` set, detections are written to
``<testdev_dir>/detections_test-dev2017_test_results.json`` for the COCO server and every metric
is -1 (test-dev has no public annotations).

The records' ``image/source_id`` must equal the json's image ids. When they do not, pycocotools
fails late with "Results do not correspond to current coco set"; here the first
batch with an unknown id raises `CocoMetricError` naming the json and what to do.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import coco_json
from coco_json import CocoMetricError
from dataset import tfrecord_util

# COCOeval.stats order (pycocotools/cocoeval.py summarize()).
METRIC_NAMES: Tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                 "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
PER_CLASS_PREFIX = "AP_/"
TESTDEV_RESULTS_FILENAME = "detections_test-dev2017_test_results.json"
# The source id of the blank images the dataloader appends to fill the last eval batch (so that
# eval covers every image although batches keep a static size); `EvaluationMetric` skips them.
PADDING_IMAGE_ID = tfrecord_util.PADDING_SOURCE_ID
# COCO's value for "not defined" (no ground truth for this class, or test-dev).
UNDEFINED = -1.0

LabelMap = Mapping[Any, str]


def _load_results(gt: COCO, results: List[Dict[str, Any]]) -> COCO:
    """`gt.loadRes` on a copy (loadRes adds keys to the dicts it gets), handling no detections."""
    if not results:
        # loadRes indexes results[0]; an empty result set is a valid (all-miss) evaluation.
        return coco_json.coco_from_dataset({
            "images": list(gt.dataset["images"]),
            "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": []})
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes([dict(r, bbox=list(r["bbox"])) for r in results])


# -------------------------------------------------------------------------------------------------
# Running COCOeval
# -------------------------------------------------------------------------------------------------


def _run_cocoeval(gt: COCO, dt: COCO, image_ids: Optional[Iterable[int]]
                  ) -> Tuple[Dict[str, float], Dict[int, float]]:
    """COCOeval bbox: the 12 standard metrics and {category id: AP}."""
    coco_eval = COCOeval(gt, dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(set(int(i) for i in image_ids))
    # pycocotools prints progress and its table to stdout; we log our own summary instead.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats)}
    # precision: [IoU thresholds, recall thresholds, categories, area ranges, max dets]; area
    # range 0 is 'all' and max dets -1 is 100, i.e. the same slice that gives the overall AP.
    precision = coco_eval.eval["precision"]
    per_class = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(cat_id)] = float(np.mean(p)) if p.size else UNDEFINED
    return metrics, per_class


def _label_map_dict(label_map: Union[None, str, LabelMap]) -> Dict[int, str]:
    """{id: name} from a mapping (yaml/json maps have string keys) or a label map spec string."""
    if not label_map:
        return {}
    if isinstance(label_map, str):
        # 'coco', 'voc' or a .yaml/.json file, as the label_map hparam allows.
        from dataset import label_maps  # a leaf module; imported only for this case
        return label_maps.get_label_map(label_map)
    try:
        return {int(k): str(v) for k, v in label_map.items() if int(k) > 0}
    except (TypeError, ValueError):
        raise CocoMetricError(f"label_map must map class id -> name, got {dict(label_map)!r:.200}"
                              ) from None


def _class_names(label_map: Union[None, str, LabelMap], gt: Optional[COCO]) -> Dict[int, str]:
    """{id: name}: the label map's names, else the json category names."""
    names: Dict[int, str] = {}
    if gt is not None:
        for cat in gt.dataset.get("categories", []):
            if cat.get("name"):
                names[int(cat["id"])] = str(cat["name"])
    names.update(_label_map_dict(label_map))
    return names


def _per_class_keys(class_ids: Iterable[int], names: Mapping[int, str]) -> Dict[int, str]:
    """{id: 'AP_/<name>'}, the id standing in for a missing name; duplicate names get the id."""
    ids = sorted(set(int(c) for c in class_ids))
    labels = {c: names.get(c, str(c)) for c in ids}
    counts: Dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {c: PER_CLASS_PREFIX + (label if counts[label] == 1 else f"{label}_{c}")
            for c, label in labels.items()}


def _log_summary(metrics: Mapping[str, float], per_class: Mapping[str, float],
                 num_images: int, num_detections: int, source: str) -> None:
    """One readable table instead of pycocotools' prints."""
    lines = [f"COCO bbox eval: {num_images} images, {num_detections} detections, "
             f"ground truth from {source}"]
    for i in range(0, len(METRIC_NAMES), 6):
        lines.append("  " + "  ".join(f"{n:>8s} {metrics[n]:6.3f}" for n in METRIC_NAMES[i:i + 6]))
    if per_class:
        lines.append("  per-class AP:")
        items = sorted(per_class.items())
        for i in range(0, len(items), 4):
            lines.append("  " + "  ".join(f"{k[len(PER_CLASS_PREFIX):]:>16.16s} {v:6.3f}"
                                          for k, v in items[i:i + 4]))
    logging.info("\n".join(lines))


def evaluate_detections_json(gt_json_path: str, detections_json_path: str,
                             image_ids: Optional[Iterable[int]] = None,
                             label_map: Union[None, str, LabelMap] = None
                             ) -> Dict[str, float]:
    """Runs pycocotools on a ground-truth json and a results json; returns the metric dict.

    Args:
      gt_json_path: COCO instances json (boxes [x, y, w, h] in pixels).
      detections_json_path: COCO results json ``[{image_id, category_id, bbox, score}]``.
      image_ids: images to evaluate on; all of the json's images when None.
      label_map: {class id: name} for the per-class keys; the json's category names otherwise.

    Returns:
      {'AP', ..., 'ARl', 'AP_/<name>' per category}: floats, -1 where undefined.
    """
    image_ids = None if image_ids is None else [int(i) for i in image_ids]
    gt = coco_json.load_gt_json(gt_json_path)
    with tf.io.gfile.GFile(detections_json_path) as f:
        results = json.load(f)
    missing = sorted({int(r["image_id"]) for r in results} - set(gt.getImgIds()))
    if missing:
        raise CocoMetricError(_unknown_ids_message(missing, gt_json_path))
    metrics, per_class = _run_cocoeval(gt, _load_results(gt, results), image_ids)
    keys = _per_class_keys(per_class, _class_names(label_map, gt))
    per_class_metrics = {keys[c]: ap for c, ap in sorted(per_class.items())}
    metrics.update(per_class_metrics)
    num_images = len(set(image_ids)) if image_ids is not None else len(gt.getImgIds())
    _log_summary(metrics, per_class_metrics, num_images, len(results), gt_json_path)
    return metrics


def _unknown_ids_message(missing: Sequence[int], json_path: str) -> str:
    hint = ""
    if any(abs(i) > tfrecord_util.MAX_SOURCE_ID for i in missing):
        hint = (f" Ids above {tfrecord_util.MAX_SOURCE_ID} do not survive the float32 source_id "
                "of the input pipeline; use smaller integer image ids.")
    shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
    return (f"{len(missing)} evaluated image id(s) are not image ids of the ground-truth json "
            f"{json_path} (e.g. {shown}); pycocotools would fail with 'Results do not correspond "
            "to current coco set'. The records' image/source_id must equal the json's image ids: "
            "pass the json the records were made from as --val_json_file, or regenerate the "
            "records and json together with dataset/create_coco_tfrecord.py or "
            "dataset/create_pascal_tfrecord.py (check them with dataset/validate_tfrecord.py)."
            + hint)


# -------------------------------------------------------------------------------------------------
# The streaming metric
# -------------------------------------------------------------------------------------------------


def _batch_image_ids(dets: np.ndarray, real: np.ndarray, row_ids: np.ndarray,
                     source_ids: Any) -> np.ndarray:
    """[B] int64 image ids of a batch from its `source_ids`, checked against the detection rows'
    column 0 (`row_ids`, valid where `real`): each row must belong to an image of the batch,
    and with [B, K, 7] detections to its own batch element."""
    batch_ids = coco_json.parse_image_ids(source_ids, "source_ids")
    if dets.ndim == 3:
        if len(batch_ids) != dets.shape[0]:
            raise CocoMetricError(f"source_ids has {len(batch_ids)} ids for a batch of "
                                  f"{dets.shape[0]} detections")
        expected = np.repeat(batch_ids, dets.shape[1])
        wrong = real & (row_ids != expected)
        if np.any(wrong):
            i = int(np.argmax(wrong))
            raise CocoMetricError(
                f"detection row source_id {row_ids[i]} differs from the batch's source_id "
                f"{expected[i]}: column 0 of each detection row must be its image's id")
    stray = real & ~np.isin(row_ids, batch_ids)
    if np.any(stray):
        raise CocoMetricError(
            f"detection rows of image ids {sorted(set(row_ids[stray].tolist()))[:5]} are "
            "not among the batch's source_ids")
    return batch_ids


class EvaluationMetric:
    """COCO bbox metric accumulated over batches (numpy; coco_metric_ops.py makes Estimator ops).

    Ground truth comes from `filename` (a COCO instances json) when given, otherwise from the
    `groundtruth_data` passed to `update_state`. With `testdev_dir`, detections are written there
    for the COCO test-dev server and metrics are -1. State lasts until `reset_states`.
    """

    def __init__(self, filename: Optional[str] = None, testdev_dir: Optional[str] = None,
                 label_map: Union[None, str, LabelMap] = None, num_classes: Optional[int] = None):
        """Args:
          filename: COCO instances json (e.g. --val_json_file); None for ground truth from the
            records. Ignored with testdev_dir (test-dev has no annotations).
          testdev_dir: directory for detections_test-dev2017_test_results.json.
          label_map: {class id: name} for per-class AP keys ('AP_/<name>'); also 'coco',
            'voc' or a .yaml/.json label map file. Id 0 (background) is not a class.
          num_classes: when there is neither a label map nor a json, per-class keys for ids
            1..num_classes are reserved in `metric_names` (the Estimator needs them up front).
        """
        self.filename = None if testdev_dir else filename
        self.testdev_dir = testdev_dir
        self.label_map = _label_map_dict(label_map)
        self._gt_json: Optional[COCO] = coco_json.load_gt_json(filename) if self.filename else None
        self._json_image_ids = (set(self._gt_json.getImgIds()) if self._gt_json is not None
                                else set())
        self._names = _class_names(self.label_map, self._gt_json)
        if self.label_map:
            reserved: Iterable[int] = self.label_map
        elif self._gt_json is not None:
            reserved = self._gt_json.getCatIds()
        else:
            reserved = range(1, (num_classes or 0) + 1)
        self._reserved_keys = _per_class_keys(reserved, self._names)
        self.reset_states()

    @property
    def metric_names(self) -> List[str]:
        """The 12 COCO metrics, then 'AP_/<name>' for the label map's (or json's) classes."""
        return list(METRIC_NAMES) + [self._reserved_keys[c] for c in sorted(self._reserved_keys)]

    def reset_states(self) -> None:
        """Forgets every update."""
        self._image_ids: List[int] = []
        self._seen: set = set()
        self._dets: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._gt: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._duplicates = 0
        self._nonfinite = 0
        self._cached: Optional[Dict[str, float]] = None

    # --- accumulation --------------------------------------------------------------------------

    def update_state(self, detections: np.ndarray, groundtruth_data: Optional[np.ndarray] = None,
                     source_ids: Optional[np.ndarray] = None) -> None:
        """Adds one batch.

        Args:
          detections: [B, K, 7] rows (source_id, x, y, w, h, score, class) in original image
            pixels; rows with score <= 0 or class <= 0 are padding and ignored. [N, 7] flat rows
            are accepted too (then the images seen are those of `source_ids`, or of the rows).
          groundtruth_data: [B, M, 7] rows (ymin, xmin, ymax, xmax, is_crowd, area, class) in
            original image pixels, padded with -1; needed when there is no json.
          source_ids: [B] image ids of the batch (numbers, or the records' image/source_id
            strings, which follow `tfrecord_util.source_id_problem`). They define the
            images evaluated, including images with no detection at all. Images with id
            PADDING_IMAGE_ID (the dataloader's fill of the last batch) are skipped.
        """
        self._cached = None
        dets = np.asarray(detections)
        if dets.ndim not in (2, 3) or dets.shape[-1] != 7:
            raise CocoMetricError(f"detections must be [B, K, 7] (source_id, x, y, w, h, score, "
                                  f"class), got shape {dets.shape}")
        flat = dets.reshape(-1, 7)
        real, bad = coco_json.valid_detection_rows(flat)
        self._nonfinite += bad
        # Padding rows may hold anything in column 0; only real rows' ids are used.
        row_ids = np.zeros([len(flat)], np.int64)
        if np.any(real):
            row_ids[real] = coco_json.parse_image_ids(flat[real, 0], "detections")

        batch_ids = (_batch_image_ids(dets, real, row_ids, source_ids)
                     if source_ids is not None else np.unique(row_ids[real]))
        padding = batch_ids == PADDING_IMAGE_ID
        gt = self._checked_groundtruth(groundtruth_data, source_ids, batch_ids, padding)
        keep_image = self._first_sightings(batch_ids, padding)
        if dets.ndim == 3 and source_ids is not None:
            # Per batch element, so that an image repeated inside one batch is also taken once.
            take = real & np.repeat(keep_image, dets.shape[1])
        else:
            take = real & np.isin(row_ids, batch_ids[keep_image])
        if np.any(take):
            self._dets.append((row_ids[take], flat[take][:, 1:6].copy(),
                               flat[take][:, 6].astype(np.int64)))

        if gt is not None:
            self._add_groundtruth(gt, batch_ids, keep_image)

    def _checked_groundtruth(self, groundtruth_data: Optional[np.ndarray],
                             source_ids: Optional[np.ndarray], batch_ids: np.ndarray,
                             padding: np.ndarray) -> Optional[np.ndarray]:
        """The batch's [B, M, 7] records ground truth (None with a json or test-dev), after
        checking that the batch's images are known to the json, or that the ground truth fits."""
        if self._gt_json is not None:
            missing = sorted(set(batch_ids[~padding].tolist()) - self._json_image_ids)
            if missing:
                raise CocoMetricError(_unknown_ids_message(missing, self.filename))
            return None
        if self.testdev_dir:
            return None
        if groundtruth_data is None:
            raise CocoMetricError("no ground truth: pass groundtruth_data to update_state or "
                                  "a COCO json (--val_json_file) to EvaluationMetric")
        if source_ids is None:
            raise CocoMetricError("source_ids are needed with groundtruth_data (one per image)")
        gt = np.asarray(groundtruth_data)
        if gt.ndim != 3 or gt.shape[-1] != 7 or gt.shape[0] != len(batch_ids):
            raise CocoMetricError(
                f"groundtruth_data must be [B={len(batch_ids)}, M, 7] (ymin, xmin, ymax, "
                f"xmax, is_crowd, area, class), got shape {gt.shape}")
        return gt

    def _first_sightings(self, batch_ids: np.ndarray, padding: np.ndarray) -> np.ndarray:
        """[B] bool: the batch's images seen here for the first time (recorded as seen).

        An image seen twice (a repeated dataset, a padded last batch) would count its ground
        truth twice; only its first occurrence is kept and the repeats are counted for a
        warning. Padding images (the blank fill of the last batch) are not part of the split.
        """
        keep_image = ~padding
        for b, image_id in enumerate(batch_ids.tolist()):
            if padding[b]:
                continue
            if image_id in self._seen:
                keep_image[b] = False
                self._duplicates += 1
            else:
                self._seen.add(image_id)
                self._image_ids.append(image_id)
        return keep_image

    def _add_groundtruth(self, gt: np.ndarray, batch_ids: np.ndarray,
                         keep_image: np.ndarray) -> None:
        """Stores the real rows of [B, M, 7] gt as COCO fields (boxes yxyx -> xywh)."""
        ids = np.repeat(batch_ids, gt.shape[1])
        rows = gt.reshape(-1, 7).astype(np.float64)
        keep = np.repeat(keep_image, gt.shape[1]) & np.isfinite(rows).all(-1) & (rows[:, 6] > 0)
        ids, rows = ids[keep], rows[keep]
        xywh = coco_json.xywh_from_yxyx(rows[:, :4])
        area = np.where(rows[:, 5] > 0, rows[:, 5], xywh[:, 2] * xywh[:, 3])
        self._gt.append((ids, xywh, (rows[:, 4] > 0).astype(np.int64), area,
                         rows[:, 6].astype(np.int64)))

    # --- evaluation ----------------------------------------------------------------------------

    def _results(self) -> List[Dict[str, Any]]:
        """All accumulated detections as COCO result dicts."""
        results: List[Dict[str, Any]] = []
        for ids, box_score, classes in self._dets:
            results.extend(coco_json.results_from_arrays(ids, box_score, classes))
        return results

    def write_detections(self, path: str) -> str:
        """Writes the accumulated detections as a COCO results json; returns `path`."""
        return coco_json.write_detections_json(path, self._results())

    def _records_gt(self, categories: Iterable[int]) -> COCO:
        """A COCO dataset of the accumulated records ground truth (ids 1.., boxes xywh)."""
        annotations = []
        for ids, xywh, iscrowd, area, classes in self._gt:
            for i, box, crowd, a, c in zip(ids.tolist(), xywh.tolist(), iscrowd.tolist(),
                                           area.tolist(), classes.tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": i,
                                    "category_id": c, "bbox": box, "area": a, "iscrowd": crowd})
        cats = sorted(set(categories) | {a["category_id"] for a in annotations})
        return coco_json.coco_from_dataset({
            "images": [{"id": i} for i in self._image_ids],
            "categories": [{"id": c, "name": self._names.get(c, str(c))} for c in cats],
            "annotations": annotations})

    def result(self) -> Dict[str, float]:
        """Evaluates everything seen since the last reset.

        Returns:
          {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1', 'ARmax10', 'ARmax100', 'ARs',
          'ARm', 'ARl'} plus 'AP_/<class name>' per class (label map and evaluated categories):
          floats, -1 where COCO leaves them undefined (no ground truth, test-dev).
        """
        if self._cached is not None:
            return dict(self._cached)
        if self._duplicates:
            logging.warning("COCO eval: %d repeated images were skipped (each image is counted "
                            "once; check --eval_samples against the split size).",
                            self._duplicates)
        if self._nonfinite:
            logging.warning("COCO eval: %d detections with NaN/inf values were dropped; the "
                            "model's outputs are not finite.", self._nonfinite)
        results = self._results()

        if self.testdev_dir:
            path = coco_json.write_detections_json(
                os.path.join(self.testdev_dir, TESTDEV_RESULTS_FILENAME), results)
            logging.info("COCO test-dev: wrote %d detections of %d images to %s (metrics are -1: "
                         "test-dev has no public annotations).", len(results),
                         len(self._image_ids), path)
            metrics = {name: UNDEFINED for name in self.metric_names}
        elif not self._image_ids:
            logging.warning("COCO eval: no image was evaluated; all metrics are -1.")
            metrics = {name: UNDEFINED for name in self.metric_names}
        else:
            gt = self._gt_json if self._gt_json is not None else self._records_gt(self.label_map)
            # COCOeval silently ignores detections of classes that are not categories of the
            # dataset; shifted label ids (0-based vs 1-based) then look like 0 AP, so say it.
            # Only the json or a label map knows the full class list (records show only the
            # classes present in the images evaluated).
            known = (set(gt.getCatIds()) if self._gt_json is not None
                     else set(self.label_map) if self.label_map else None)
            unknown = {r["category_id"] for r in results} - known if known else set()
            if unknown:
                logging.warning("COCO eval: %d detections have class ids %s that are not classes "
                                "of %s; they are not scored. Check num_classes and label ids.",
                                sum(r["category_id"] in unknown for r in results),
                                sorted(unknown)[:10], self.filename or "the label map")
            metrics, per_class = _run_cocoeval(gt, _load_results(gt, results), self._image_ids)
            per_class_keys = _per_class_keys(set(per_class) | set(self._reserved_keys),
                                             self._names)
            per_class_metrics = {per_class_keys[c]: per_class.get(c, UNDEFINED)
                                 for c in sorted(per_class_keys)}
            metrics.update(per_class_metrics)
            _log_summary(metrics, per_class_metrics, len(self._image_ids), len(results),
                         self.filename or "the records")
        self._cached = metrics
        return dict(metrics)

"""COCO's json structures for box detection: detection rows to result dicts, the results json,
reading a ground-truth instances json (coco_metric.py evaluates them), and checking that
records and a ground-truth json describe the same images (`check_record_images`).

Detection rows are ``(source_id, x, y, w, h, score, class)`` in pixels of the original image
(COCO's [x, y, width, height], (x, y) the top-left corner); rows with score <= 0 or class <= 0
are padding. Results are ``{image_id, category_id, bbox: [x, y, w, h], score}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools.coco import COCO

import errors
import outputs
from dataset import tfrecord_util


class CocoMetricError(errors.DataError):
    """Eval input that cannot be evaluated; the message names the file or field and the fix."""


def parse_image_ids(values: Any, what: str) -> np.ndarray:
    """Integer image ids from numeric or (byte) string source ids, as int64 [N]. A string id
    is a record's image/source_id and follows its rule (`tfrecord_util.source_id_problem`)."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind in "SUO":
        out = []
        for v in arr:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            problem = tfrecord_util.source_id_problem(text)
            if problem:
                raise CocoMetricError(
                    f"{what}: source_id {problem}. COCO eval needs image/source_id values equal "
                    "to the json image ids, in digits; regenerate the records with "
                    "dataset/create_coco_tfrecord.py or dataset/create_pascal_tfrecord.py.")
            out.append(int(text))
        return np.asarray(out, np.int64)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise CocoMetricError(f"{what}: source ids must be finite numbers, got {arr.tolist()[:5]}")
    return np.rint(arr).astype(np.int64)


def _float_lists(values: np.ndarray) -> List[List[float]]:
    """Rows of python floats. float32 input gives the shortest decimals that round-trip to the
    same float32 (so the json is compact and the in-memory eval sees exactly the json's values);
    other dtypes are kept exact."""
    if values.dtype == np.float32:
        # numpy's str() of a float32 is its shortest round-trip repr; float() of it is monotone,
        # so score order and ties are preserved.
        return [[float(v) for v in row] for row in values.astype(str)]
    return values.astype(np.float64).tolist()


def xywh_from_yxyx(boxes: Any, xp: Any = np) -> Any:
    """COCO's [x, y, width, height] [..., 4] from boxes [..., 4] (ymin, xmin, ymax, xmax), in
    the same units. `xp` is the array module: numpy, or `tf` for a graph tensor (eval's rows)."""
    ymin, xmin, ymax, xmax = (boxes[..., i] for i in range(4))
    return xp.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)


def detection_rows(source_ids: tf.Tensor, boxes: tf.Tensor, scores: tf.Tensor,
                   classes: tf.Tensor) -> tf.Tensor:
    """Detection rows [B, K, 7] (source_id, x, y, w, h, score, class), float32, in a graph
    (eval's): from source ids [B], boxes [B, K, 4] (ymin, xmin, ymax, xmax) in original-image
    pixels, scores [B, K] and classes [B, K]."""
    xywh = xywh_from_yxyx(boxes, tf)
    source = tf.tile(tf.cast(source_ids, tf.float32)[:, None], [1, tf.shape(xywh)[1]])
    return tf.concat([source[..., None], xywh, scores[..., None],
                      tf.cast(classes, tf.float32)[..., None]], axis=-1)


def valid_detection_rows(dets: np.ndarray) -> Tuple[np.ndarray, int]:
    """Mask of real detection rows of [N, 7] and the count of non-finite rows dropped."""
    finite = np.all(np.isfinite(dets), axis=-1)
    real = finite & (dets[:, 5] > 0) & (dets[:, 6] > 0)
    # A non-finite row that is not marked as padding means the model produced NaN/inf: count it
    # (comparisons with NaN are False, so a NaN score or class counts as not padding).
    bad = int(np.sum(~finite & ~(dets[:, 5] <= 0) & ~(dets[:, 6] <= 0)))
    return real, bad


def detections_to_coco_results(detections: np.ndarray,
                               image_ids: Optional[Sequence[int]] = None
                               ) -> List[Dict[str, Any]]:
    """COCO results ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` from detection rows.

    Args:
      detections: [B, K, 7] or [N, 7] rows (source_id, x, y, w, h, score, class) in original
        image pixels. Padding rows (score <= 0 or class <= 0) and non-finite rows are dropped.
      image_ids: optional [B] ids for a [B, K, 7] input; they replace column 0.

    Returns:
      One dict per real detection; image_id and category_id are python ints.
    """
    dets = np.asarray(detections)
    if dets.ndim not in (2, 3) or dets.shape[-1] != 7:
        raise CocoMetricError(f"detections must be [B, K, 7] or [N, 7], got shape {dets.shape}")
    flat = dets.reshape(-1, 7)
    real, _ = valid_detection_rows(flat)
    if image_ids is not None and dets.ndim == 3:
        ids = np.repeat(parse_image_ids(image_ids, "image_ids"), dets.shape[1])[real]
    else:
        ids = parse_image_ids(flat[real, 0], "detections")
    return results_from_arrays(ids, flat[real, 1:6], flat[real, 6].astype(np.int64))


def results_from_arrays(ids: np.ndarray, box_score: np.ndarray,
                         classes: np.ndarray) -> List[Dict[str, Any]]:
    """Result dicts from int ids [N], (x, y, w, h, score) [N, 5] and int classes [N]."""
    rows = _float_lists(box_score)
    return [{"image_id": int(i), "category_id": int(c), "bbox": r[:4], "score": r[4]}
            for i, c, r in zip(ids.tolist(), classes.tolist(), rows)]


def write_detections_json(path: str,
                          detections: Union[Sequence[Mapping[str, Any]], np.ndarray]) -> str:
    """Writes COCO results json ``[{image_id, category_id, bbox [x, y, w, h], score}]``.

    Args:
      path: output file, written atomically (outputs.write_file); its directory is created.
        Whether an existing file may be replaced is the caller's check (outputs.check_plan).
      detections: result dicts (as `detections_to_coco_results` returns) or detection rows
        [B, K, 7] / [N, 7] (source_id, x, y, w, h, score, class) in original image pixels.

    Returns:
      `path`.
    """
    if isinstance(detections, np.ndarray):
        detections = detections_to_coco_results(detections)
    results = [{"image_id": int(d["image_id"]), "category_id": int(d["category_id"]),
                "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
               for d in detections]
    return outputs.write_file(path, json.dumps(results))


def gt_json_problem(path: str) -> Optional[str]:
    """Why `path` cannot be read as a ground-truth json (None if it can be opened): the one
    check of main.py, model_inspect.py and load_gt_json, before anything is built."""
    if not tf.io.gfile.exists(path):
        return "does not exist"
    if tf.io.gfile.isdir(path):
        return "is a directory; pass the instances json file in it"
    return None


def load_gt_json(path: str) -> COCO:
    """A pycocotools COCO from an instances json; errors name the file.

    Custom jsons often lack ``area`` or ``iscrowd``, on which COCOeval fails with a bare KeyError;
    they get the box area and 0 here (counted in the log), which is what COCO itself would hold.
    """
    problem = gt_json_problem(path)
    if problem:
        raise CocoMetricError(f"ground-truth json {path} {problem} (--val_json_file).")
    try:
        with tf.io.gfile.GFile(path) as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoMetricError(f"ground-truth json {path} is not valid json: {e}") from None
    if not isinstance(dataset, dict):
        raise CocoMetricError(f"ground-truth json {path} must be a COCO json object.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise CocoMetricError(
                f"ground-truth json {path} has no '{key}' list: pass a COCO instances json "
                "(e.g. instances_val2017.json, or the json written by "
                "dataset/create_pascal_tfrecord.py).")
    filled = 0
    for ann in dataset["annotations"]:
        if "bbox" not in ann or len(ann["bbox"]) != 4:
            raise CocoMetricError(f"ground-truth json {path}: annotation {ann.get('id')} has no "
                                  "[x, y, w, h] 'bbox'.")
        if "area" not in ann or "iscrowd" not in ann:
            ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
            ann.setdefault("iscrowd", 0)
            filled += 1
    if filled:
        logging.warning("%s: %d annotations had no 'area'/'iscrowd'; used the box area and "
                        "iscrowd=0.", path, filled)
    return coco_from_dataset(dataset)


def coco_from_dataset(dataset: Dict[str, Any]) -> COCO:
    """pycocotools COCO over an in-memory dataset dict, without its stdout chatter."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# -------------------------------------------------------------------------------------------------
# Records against a ground-truth json
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RecordImage:
    """What a record says about its image: `file` and `index` (from 0) say where the record is;
    `image_id` is its image/source_id; `height`/`width` in pixels; `filename` ('' if none)."""

    file: str
    index: int
    image_id: int
    height: int
    width: int
    filename: str


def _json_that_fits(record: RecordImage, json_path: str) -> Optional[str]:
    """The json the VOC converter wrote beside the record's shards, if it is not `json_path`
    and holds the record's image (same id and size)."""
    parsed = tfrecord_util.parse_shard_name(record.file)
    if not parsed:
        return None
    candidate = tfrecord_util.voc_json_path(parsed[0])
    if os.path.abspath(candidate) == os.path.abspath(json_path) or not tf.io.gfile.exists(
            candidate):
        return None
    try:
        with tf.io.gfile.GFile(candidate) as f:
            images = json.load(f).get("images", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    same = any(isinstance(im, dict) and im.get("id") == record.image_id
               and (im.get("height"), im.get("width")) == (record.height, record.width)
               for im in images)
    return candidate if same else None


def _what_to_do(record: RecordImage, json_path: str) -> str:
    fits = _json_that_fits(record, json_path)
    if fits:
        return f"the records were made with {fits}: pass --val_json_file={fits}."
    return ("pass the json the records were made with as --val_json_file (the instances json "
            "given to create_coco_tfrecord.py, or the json_<prefix>.json that "
            "create_pascal_tfrecord.py writes beside its shards), or convert records and json "
            "together again.")


def _image_mismatch(record: RecordImage, image: Mapping[str, Any]) -> Optional[str]:
    """How the json's `image` differs from the record's, or None."""
    json_hw = (image.get("height"), image.get("width"))
    json_name = os.path.basename(str(image.get("file_name") or ""))
    record_name = os.path.basename(record.filename)
    if None not in json_hw and tuple(json_hw) != (record.height, record.width):
        return (f"is {json_hw[1]}x{json_hw[0]} (WxH) there but {record.width}x{record.height} "
                f"in the record")
    if json_name and record_name and json_name != record_name:
        return f"is '{json_name}' there but '{record_name}' in the record"
    return None


def check_record_images(records: Iterable[RecordImage], json_path: str) -> int:
    """Refuse records whose images are not the json's: each record's image/source_id must be
    an image id of the ground-truth json `json_path`, and that json image must have the
    record's height and width (and file name, where both carry one). Returns how many records
    were checked.

    Why: records and a json from different conversions (e.g. two splits, each numbered from 1)
    share ids, so COCO eval would score every detection against another image's boxes.

    Raises:
      CocoMetricError: one line naming the record file and index, the id, both values and the
        json to use.
    """
    images = load_gt_json(json_path).imgs
    count = 0
    for record in records:
        count += 1
        where = f"{record.file} record {record.index}: image/source_id {record.image_id}"
        image = images.get(record.image_id)
        if image is None:
            ids = [i for i in images if isinstance(i, int)]
            span = f" (its ids run {min(ids)}..{max(ids)})" if ids else ""
            raise CocoMetricError(f"{where} is not an image id of --val_json_file={json_path}"
                                  f"{span}; " + _what_to_do(record, json_path))
        problem = _image_mismatch(record, image)
        if problem:
            raise CocoMetricError(f"{where} names image {record.image_id} of --val_json_file="
                                  f"{json_path}, which {problem}: the records and the json "
                                  f"describe different images; " + _what_to_do(record, json_path))
    return count

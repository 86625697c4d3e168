"""coco_metric (COCO bbox eval from records or json, test-dev output), coco_json (the json
structures it reads and writes) and coco_metric_ops (the Estimator adapter), on the same
hand-built datasets.

Ground truth and detections are built by hand (pixel boxes, a few images) so every number is
either computed by hand or compared with pycocotools run directly on the same json files.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import coco_json
import coco_metric
import coco_metric_ops
import errors

PAD = -1.0


# -------------------------------------------------------------------------------------------------
# Helpers: a COCO dataset by hand and its records / detection arrays
# -------------------------------------------------------------------------------------------------


def _dataset(images, boxes, categories=((1, "cat"), (2, "dog"))):
    """COCO instances dict; boxes: (image_id, class, [x, y, w, h], iscrowd)."""
    anns = [{"id": i + 1, "image_id": img, "category_id": c, "bbox": [float(v) for v in b],
             "area": float(b[2] * b[3]), "iscrowd": crowd}
            for i, (img, c, b, crowd) in enumerate(boxes)]
    return {"images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"}
                       for i in images],
            "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in categories]}


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def _records_gt(dataset, image_ids, max_instances=8):
    """groundtruth_data [B, M, 7] (ymin, xmin, ymax, xmax, is_crowd, area, class), -1 padded."""
    gt = np.full([len(image_ids), max_instances, 7], PAD, np.float32)
    for b, image_id in enumerate(image_ids):
        anns = [a for a in dataset["annotations"] if a["image_id"] == image_id]
        for m, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            gt[b, m] = [y, x, y + h, x + w, a["iscrowd"], a["area"], a["category_id"]]
    return gt


def _detections(image_ids, rows, k=10):
    """[B, K, 7] (source_id, x, y, w, h, score, class); rows: image_id -> [(box, score, cls)].

    Padding rows look like the post-processing's: the image id, a zero box, score -1e5, class 0.
    """
    dets = np.zeros([len(image_ids), k, 7], np.float32)
    dets[:, :, 0] = np.asarray(image_ids, np.float32)[:, None]
    dets[:, :, 5] = -1e5
    for b, image_id in enumerate(image_ids):
        for r, (box, score, cls) in enumerate(rows.get(image_id, [])):
            dets[b, r] = [image_id, *box, score, cls]
    return dets


def _perfect_rows(dataset, score=0.9):
    rows = {}
    for a in dataset["annotations"]:
        if not a["iscrowd"]:
            rows.setdefault(a["image_id"], []).append((a["bbox"], score, a["category_id"]))
    return rows


def _pycocotools(gt_path, dt_path, image_ids=None):
    """COCOeval.stats straight from pycocotools, no project code involved."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(coco_metric.METRIC_NAMES, ev.stats.tolist()))


def _standard(metrics):
    return {k: metrics[k] for k in coco_metric.METRIC_NAMES}


# Three sizes so that APs / APm / APl are all defined (COCO: < 32^2, < 96^2, larger).
SIZED = _dataset([1, 2], [(1, 1, [10, 10, 20, 20], 0), (1, 2, [100, 100, 50, 50], 0),
                          (2, 1, [200, 150, 120, 120], 0), (2, 2, [0, 0, 300, 200], 0)])


def _random_case(seed=0, num_images=5):
    """Noisy detections (float32), misses and false positives over 3 classes, plus a crowd box."""
    rng = np.random.RandomState(seed)
    boxes, rows = [], {}
    for image_id in range(101, 101 + num_images):
        for _ in range(rng.randint(2, 6)):
            w, h = rng.randint(8, 200, size=2)
            x, y = rng.randint(0, 640 - w), rng.randint(0, 480 - h)
            c = int(rng.randint(1, 4))
            boxes.append((image_id, c, [x, y, w, h], 0))
            if rng.rand() < 0.8:  # detected, with box noise
                noisy = np.array([x, y, w, h], np.float32) + rng.normal(0, 0.1 * min(w, h), 4)
                rows.setdefault(image_id, []).append((noisy, rng.rand(), c))
        for _ in range(2):  # false positives
            rows.setdefault(image_id, []).append(
                (rng.uniform(0, 300, 4).astype(np.float32), rng.rand() * 0.5, rng.randint(1, 4)))
    boxes.append((101, 1, [0, 0, 300, 300], 1))
    rows[101].append(([5.0, 5.0, 100.0, 100.0], 0.99, 1))  # inside the crowd box: ignored
    dataset = _dataset(range(101, 101 + num_images), boxes,
                       categories=((1, "cat"), (2, "dog"), (3, "bird")))
    return dataset, rows


# -------------------------------------------------------------------------------------------------
# Numbers
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gt_source", ["records", "json"])
def test_perfect_detections_give_ap_one(tmp_path, gt_source):
    ids = [1, 2]
    dets = _detections(ids, _perfect_rows(SIZED))
    if gt_source == "json":
        metric = coco_metric.EvaluationMetric(filename=_write_json(tmp_path / "gt.json", SIZED))
        metric.update_state(dets, source_ids=np.asarray(ids, np.float32))
    else:
        metric = coco_metric.EvaluationMetric()
        metric.update_state(dets, _records_gt(SIZED, ids), np.asarray(ids, np.float32))
    result = metric.result()
    for name in coco_metric.METRIC_NAMES:
        assert result[name] == pytest.approx(1.0), name
    assert result["AP_/1" if gt_source == "records" else "AP_/cat"] == pytest.approx(1.0)


def test_hand_computed_one_of_two_boxes_at_iou_062(tmp_path):
    # Two large gt boxes; one detection covering 62% of the first (IoU 0.62): it is a true
    # positive at IoU thresholds 0.50, 0.55, 0.60 and a false positive above. At those three,
    # precision is 1 up to recall 0.5, so the 101-point interpolated AP is 51/101; it is 0 at the
    # other seven thresholds. Recall is 0.5 at three thresholds and 0 at seven.
    data = _dataset([7], [(7, 1, [10, 10, 100, 100], 0), (7, 1, [300, 200, 100, 100], 0)])
    dets = _detections([7], {7: [([10, 10, 100, 62], 0.8, 1)]})
    metric = coco_metric.EvaluationMetric()
    metric.update_state(dets, _records_gt(data, [7]), np.asarray([7.0], np.float32))
    result = metric.result()

    ap50 = 51 / 101
    assert result["AP50"] == pytest.approx(ap50, abs=1e-12)
    assert result["AP75"] == 0.0
    assert result["AP"] == pytest.approx(3 * ap50 / 10, abs=1e-12)
    assert result["APl"] == pytest.approx(3 * ap50 / 10, abs=1e-12)
    assert result["APs"] == -1.0 and result["APm"] == -1.0  # no small/medium ground truth
    assert result["ARmax1"] == pytest.approx(0.15, abs=1e-12)
    assert result["ARmax100"] == pytest.approx(0.15, abs=1e-12)

    # pycocotools itself, on the json files of the same data, gives exactly the same numbers.
    gt_path = _write_json(tmp_path / "gt.json", data)
    dt_path = metric.write_detections(str(tmp_path / "dt.json"))
    assert _standard(result) == _pycocotools(gt_path, dt_path)
    assert coco_metric.evaluate_detections_json(gt_path, dt_path) == {
        **_standard(result), "AP_/cat": result["AP_/1"], "AP_/dog": -1.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocotools_on_written_json(tmp_path, seed):
    data, rows = _random_case(seed)
    ids = [im["id"] for im in data["images"]]
    gt_path = _write_json(tmp_path / "gt.json", data)
    metric = coco_metric.EvaluationMetric(filename=gt_path)
    # Two batches, as the Estimator would feed them.
    for batch in (ids[:2], ids[2:]):
        metric.update_state(_detections(batch, rows), source_ids=np.asarray(batch, np.float32))
    result = metric.result()
    dt_path = metric.write_detections(str(tmp_path / "dt.json"))
    expected = _pycocotools(gt_path, dt_path)
    assert 0.05 < expected["AP"] < 0.95  # a case with real misses and false positives
    assert _standard(result) == expected  # exact, not approximate
    assert _standard(coco_metric.evaluate_detections_json(gt_path, dt_path)) == expected


def test_records_ground_truth_equals_json_ground_truth(tmp_path):
    data, rows = _random_case(seed=3)
    ids = [im["id"] for im in data["images"]]
    from_json = coco_metric.EvaluationMetric(filename=_write_json(tmp_path / "gt.json", data))
    from_records = coco_metric.EvaluationMetric(label_map={1: "cat", 2: "dog", 3: "bird"})
    for batch in (ids[:3], ids[3:]):
        dets, sids = _detections(batch, rows), np.asarray(batch, np.float32)
        from_json.update_state(dets, source_ids=sids)
        from_records.update_state(dets, _records_gt(data, batch), sids)
    a, b = from_json.result(), from_records.result()
    assert a == b
    assert {"AP_/cat", "AP_/dog", "AP_/bird"} <= set(a)


def test_json_eval_covers_only_seen_images(tmp_path):
    # Image 3's ground truth is never detected; a partial eval over images 1 and 2 must not count
    # it, while an image that was seen with no detection at all does count.
    data = _dataset([1, 2, 3], [(1, 1, [10, 10, 50, 50], 0), (2, 2, [20, 20, 60, 60], 0),
                                (3, 1, [30, 30, 70, 70], 0)])
    gt_path = _write_json(tmp_path / "gt.json", data)
    rows = _perfect_rows(data)
    del rows[3]

    partial = coco_metric.EvaluationMetric(filename=gt_path)
    partial.update_state(_detections([1, 2], rows), source_ids=np.asarray([1, 2], np.float32))
    assert partial.result()["AP"] == pytest.approx(1.0)

    seen_but_missed = coco_metric.EvaluationMetric(filename=gt_path)
    seen_but_missed.update_state(_detections([1, 2, 3], rows),
                                 source_ids=np.asarray([1, 2, 3], np.float32))
    result = seen_but_missed.result()
    assert result["AP_/cat"] == pytest.approx(51 / 101)  # one of two cats found
    assert result["AP_/dog"] == pytest.approx(1.0)
    dt_path = seen_but_missed.write_detections(str(tmp_path / "dt.json"))
    assert _standard(result) == _pycocotools(gt_path, dt_path, image_ids=[1, 2, 3])


def test_padding_rows_ignored():
    data, rows = _random_case(seed=4)
    ids = [im["id"] for im in data["images"]]
    sids = np.asarray(ids, np.float32)
    plain = coco_metric.EvaluationMetric()
    plain.update_state(_detections(ids, rows, k=12), _records_gt(data, ids, 8), sids)

    dets = _detections(ids, rows, k=20)
    # Every kind of padding: a post-processing dummy (score -1e5, class 0), class 0 with a good
    # score, score 0 with a good class, a NaN-box row with score -1, and a bogus column 0.
    dets[:, 15] = [0, 10, 10, 50, 50, 0.9, 0]
    dets[:, 16] = [0, 10, 10, 50, 50, 0.0, 1]
    dets[:, 17] = [np.nan, np.nan, np.nan, np.nan, np.nan, -1.0, 0]
    dets[:, 18] = [-1, 10, 10, 50, 50, -1e5, 2]
    padded = coco_metric.EvaluationMetric()
    padded.update_state(dets, _records_gt(data, ids, 30), sids)

    assert padded.result() == plain.result()
    results = padded._results()
    assert len(results) == sum(len(v) for v in rows.values())
    assert all(r["score"] > 0 and r["category_id"] > 0 for r in results)


def test_per_class_ap_keys_names_and_ids():
    data = _dataset([1], [(1, 1, [10, 10, 50, 50], 0), (1, 2, [100, 100, 40, 40], 0)])
    rows = {1: [([10, 10, 50, 50], 0.9, 1)]}  # the dog is missed
    gt = _records_gt(data, [1])

    named = coco_metric.EvaluationMetric(label_map={1: "cat", 2: "dog", 3: "bird"})
    named.update_state(_detections([1], rows), gt, np.asarray([1.0]))
    result = named.result()
    assert result["AP_/cat"] == pytest.approx(1.0)
    assert result["AP_/dog"] == 0.0
    assert result["AP_/bird"] == -1.0  # in the label map, absent from the data
    assert result["AP"] == pytest.approx(0.5)  # mean over classes that have ground truth
    assert named.metric_names == list(coco_metric.METRIC_NAMES) + [
        "AP_/cat", "AP_/dog", "AP_/bird"]

    # No name for a class: its id is the key; yaml/json label maps have string keys, and a
    # 'background' id 0 is not a class.
    by_id = coco_metric.EvaluationMetric(label_map={"0": "background", "1": "cat"})
    by_id.update_state(_detections([1], rows), gt, np.asarray([1.0]))
    keys = {k for k in by_id.result() if k.startswith("AP_/")}
    assert keys == {"AP_/cat", "AP_/2"}

    # The label_map hparam may name a built-in map.
    voc = coco_metric.EvaluationMetric(label_map="voc")
    voc.update_state(_detections([1], rows), gt, np.asarray([1.0]))
    assert voc.result()["AP_/aeroplane"] == pytest.approx(1.0)
    assert voc.result()["AP_/bicycle"] == 0.0
    assert len(voc.metric_names) == 12 + 20
    # Without names anywhere, num_classes reserves the per-class keys the Estimator needs.
    assert coco_metric.EvaluationMetric(num_classes=2).metric_names[12:] == ["AP_/1", "AP_/2"]


def test_duplicate_images_counted_once():
    data, rows = _random_case(seed=5)
    ids = [im["id"] for im in data["images"]]
    once = coco_metric.EvaluationMetric()
    once.update_state(_detections(ids, rows), _records_gt(data, ids), np.asarray(ids))
    twice = coco_metric.EvaluationMetric()
    for _ in range(2):  # e.g. a repeated eval dataset
        twice.update_state(_detections(ids, rows), _records_gt(data, ids), np.asarray(ids))
    assert twice.result() == once.result()
    assert twice._duplicates == len(ids)
    # A last batch padded by repeating an image (same id twice inside one batch).
    padded = coco_metric.EvaluationMetric()
    batch = ids + [ids[-1]]
    padded.update_state(_detections(batch, rows), _records_gt(data, batch), np.asarray(batch))
    assert padded.result() == once.result()
    assert padded._duplicates == 1


@pytest.mark.parametrize("gt_source", ["records", "json"])
def test_blank_padding_images_are_skipped(tmp_path, gt_source):
    # The dataloader fills the last eval batch with blanks of id PADDING_IMAGE_ID; whatever the
    # model detects on them is not scored, and they are neither "seen" images nor unknown ids.
    data, rows = _random_case(seed=6)
    ids = [im["id"] for im in data["images"]]
    gt_path = _write_json(tmp_path / "gt.json", data)

    def metric():
        return coco_metric.EvaluationMetric(filename=gt_path if gt_source == "json" else None)

    def gt(batch):
        return None if gt_source == "json" else _records_gt(data, batch)

    plain = metric()
    plain.update_state(_detections(ids, rows), gt(ids), np.asarray(ids, np.float32))
    pad = coco_metric.PADDING_IMAGE_ID
    batch = ids + [pad, pad, pad]
    blank_rows = {**rows, pad: [([0.0, 0.0, 30.0, 30.0], 0.99, 1)]}
    filled = metric()
    filled.update_state(_detections(batch, blank_rows), gt(batch),
                        np.asarray(batch, np.float32))
    assert filled.result() == plain.result()
    assert filled._image_ids == ids and filled._duplicates == 0
    assert all(r["image_id"] != pad for r in filled._results())


def test_no_detections_give_zero_and_reset_states():
    metric = coco_metric.EvaluationMetric()
    metric.update_state(_detections([1, 2], {}), _records_gt(SIZED, [1, 2]), np.asarray([1, 2]))
    result = metric.result()
    assert result["AP"] == 0.0 and result["ARmax100"] == 0.0
    metric.reset_states()
    assert metric.result()["AP"] == -1.0  # nothing seen since the reset
    metric.update_state(_detections([1, 2], _perfect_rows(SIZED)), _records_gt(SIZED, [1, 2]),
                        np.asarray([1, 2]))
    assert metric.result()["AP"] == pytest.approx(1.0)


def test_string_source_ids_and_flat_rows(tmp_path):
    gt_path = _write_json(tmp_path / "gt.json", SIZED)
    metric = coco_metric.EvaluationMetric(filename=gt_path)
    dets = _detections([1, 2], _perfect_rows(SIZED))
    metric.update_state(dets, source_ids=np.asarray([b"1", b"2"]))
    flat = coco_metric.EvaluationMetric(filename=gt_path)
    flat.update_state(dets.reshape(-1, 7))  # images seen = those with detections
    assert metric.result() == flat.result()
    assert metric.result()["AP"] == pytest.approx(1.0)


def test_json_without_area_and_iscrowd_is_usable(tmp_path):
    data = json.loads(json.dumps(SIZED))
    for ann in data["annotations"]:
        del ann["area"], ann["iscrowd"]
    metric = coco_metric.EvaluationMetric(filename=_write_json(tmp_path / "gt.json", data))
    metric.update_state(_detections([1, 2], _perfect_rows(SIZED)), source_ids=np.asarray([1, 2]))
    result = metric.result()
    assert result["APs"] == pytest.approx(1.0) and result["APl"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------------------
# Test-dev output and errors
# -------------------------------------------------------------------------------------------------


def test_testdev_json_written_in_coco_results_format(tmp_path):
    out = tmp_path / "testdev"
    metric = coco_metric.EvaluationMetric(testdev_dir=str(out), label_map={1: "cat", 2: "dog"})
    dets = _detections([42, 43], {42: [([1.5, 2.25, 30.1, 40.7], 0.75, 2)],
                                  43: [([0, 0, 10, 10], 0.5, 1), ([5, 5, 8, 9], 0.25, 1)]})
    # No annotations exist for test-dev: ground truth rows are all padding, or absent.
    metric.update_state(dets, np.full([2, 4, 7], PAD, np.float32), np.asarray([42.0, 43.0]))
    result = metric.result()
    assert set(result) == set(metric.metric_names)
    assert all(v == -1.0 for v in result.values())

    path = out / coco_metric.TESTDEV_RESULTS_FILENAME
    with open(path) as f:
        written = json.load(f)
    assert len(written) == 3  # no padding rows
    for entry in written:
        assert set(entry) == {"image_id", "category_id", "bbox", "score"}
        assert type(entry["image_id"]) is int and type(entry["category_id"]) is int
        assert len(entry["bbox"]) == 4
    first = next(e for e in written if e["image_id"] == 42)
    assert first["category_id"] == 2 and first["score"] == 0.75
    # float32 values are written as their shortest decimals, which read back to the same float32.
    np.testing.assert_array_equal(np.asarray(first["bbox"], np.float32),
                                  np.asarray([1.5, 2.25, 30.1, 40.7], np.float32))
    assert first["bbox"][2] == 30.1


def test_testdev_ignores_val_json_and_needs_no_annotations(tmp_path):
    metric = coco_metric.EvaluationMetric(filename=str(tmp_path / "nonexistent.json"),
                                          testdev_dir=str(tmp_path))
    metric.update_state(_detections([5], {5: [([0, 0, 4, 4], 0.5, 3)]}), None, np.asarray([5]))
    assert metric.result()["AP"] == -1.0
    assert os.path.isfile(tmp_path / coco_metric.TESTDEV_RESULTS_FILENAME)


def test_unknown_image_id_raises_one_clear_error(tmp_path):
    gt_path = _write_json(tmp_path / "instances_val.json", SIZED)
    metric = coco_metric.EvaluationMetric(filename=gt_path)
    dets = _detections([1, 999], {**_perfect_rows(SIZED), 999: [([0, 0, 9, 9], 0.5, 1)]})
    with pytest.raises(coco_metric.CocoMetricError) as err:
        metric.update_state(dets, source_ids=np.asarray([1, 999]))
    message = str(err.value)
    assert gt_path in message and "999" in message
    assert "source_id" in message and "create_coco_tfrecord.py" in message
    assert "Results do not correspond" in message  # the pycocotools text users search for

    # The same check guards evaluate_detections_json.
    dt_path = coco_json.write_detections_json(str(tmp_path / "dt.json"), dets)
    with pytest.raises(coco_metric.CocoMetricError, match="instances_val.json"):
        coco_metric.evaluate_detections_json(gt_path, dt_path)


def test_float32_rounded_source_id_hint(tmp_path):
    metric = coco_metric.EvaluationMetric(filename=_write_json(tmp_path / "gt.json", SIZED))
    with pytest.raises(coco_metric.CocoMetricError, match="float32"):
        metric.update_state(_detections([1], {}), source_ids=np.asarray([2 ** 24 + 2]))


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(coco_metric.CocoMetricError, match="missing.json"):
        coco_metric.EvaluationMetric(filename=str(tmp_path / "missing.json"))
    with pytest.raises(coco_metric.CocoMetricError, match="is a directory; pass the instances"):
        coco_metric.EvaluationMetric(filename=str(tmp_path))
    bad = _write_json(tmp_path / "bad.json", {"images": []})
    with pytest.raises(coco_metric.CocoMetricError, match="'annotations'"):
        coco_metric.EvaluationMetric(filename=bad)
    metric = coco_metric.EvaluationMetric()
    with pytest.raises(coco_metric.CocoMetricError, match="no ground truth"):
        metric.update_state(_detections([1], {}))
    with pytest.raises(coco_metric.CocoMetricError, match="not an integer"):
        metric.update_state(_detections([1], {}), _records_gt(SIZED, [1]), np.asarray([b"x.jpg"]))
    with pytest.raises(coco_metric.CocoMetricError, match="differs from the batch"):
        metric.update_state(_detections([1], _perfect_rows(SIZED)), _records_gt(SIZED, [2]),
                            np.asarray([2]))


# -------------------------------------------------------------------------------------------------
# Graph mode / Estimator
# -------------------------------------------------------------------------------------------------


def test_graph_mode_metric_fn_matches_numpy(tmp_path):
    data, rows = _random_case(seed=6, num_images=4)
    ids = [im["id"] for im in data["images"]]
    label_map = {1: "cat", 2: "dog", 3: "bird"}
    expected = coco_metric.EvaluationMetric(label_map=label_map)
    batches = [ids[:2], ids[2:]]
    for batch in batches:
        expected.update_state(_detections(batch, rows), _records_gt(data, batch),
                              np.asarray(batch, np.float32))
    expected = expected.result()

    graph = tf.Graph()
    with graph.as_default():
        dets_ph = tf.compat.v1.placeholder(tf.float32, [None, 10, 7])
        gt_ph = tf.compat.v1.placeholder(tf.float32, [None, 8, 7])
        ids_ph = tf.compat.v1.placeholder(tf.float32, [None])
        ops = coco_metric_ops.estimator_metric_fn(dets_ph, gt_ph, ids_ph, label_map=label_map)
        assert list(ops) == list(coco_metric.METRIC_NAMES) + ["AP_/cat", "AP_/dog", "AP_/bird"]
        update_ops = {update for _, update in ops.values()}
        assert len(update_ops) == 1  # one shared update, run once per batch
        update_op = update_ops.pop()
        values = {name: value for name, (value, _) in ops.items()}
        for value in values.values():
            assert value.dtype == tf.float32 and value.shape.rank == 0
        with tf.compat.v1.Session(graph=graph) as sess:
            for batch in batches:
                sess.run(update_op, {dets_ph: _detections(batch, rows),
                                     gt_ph: _records_gt(data, batch),
                                     ids_ph: np.asarray(batch, np.float32)})
            got = sess.run(values)
    for name, value in got.items():
        assert value == np.float32(expected[name]), name


def test_graph_mode_error_keeps_the_clear_message(tmp_path):
    gt_path = _write_json(tmp_path / "gt.json", SIZED)
    with tf.Graph().as_default():
        ops = coco_metric_ops.estimator_metric_fn(tf.constant(_detections([1, 999], {})), None,
                                              tf.constant([1.0, 999.0]), filename=gt_path)
        with tf.compat.v1.Session() as sess:
            with pytest.raises(tf.errors.InvalidArgumentError) as err:
                sess.run(ops["AP"][1])
    message = str(errors.from_tf_error(err.value))
    assert message.startswith("1 evaluated image id(s) are not image ids of the ground-truth "
                              f"json {gt_path} (e.g. 999)")
    assert "\n" not in message
    assert errors.from_tf_error(ValueError("unrelated")) is None


def test_estimator_evaluate_with_metric_fn(tmp_path):
    """The (value, update_op) pairs work in a real tf.compat.v1.estimator evaluation."""
    ids = [1, 2]
    gt_path = _write_json(tmp_path / "gt.json", SIZED)
    dets = _detections(ids, _perfect_rows(SIZED))

    def input_fn():
        features = {"detections": dets, "source_ids": np.asarray(ids, np.float32)}
        return tf.data.Dataset.from_tensor_slices(features).batch(1)

    def model_fn(features, labels, mode):
        dummy = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.zeros_initializer())
        # Called as det_model_fn does, with the flag's name for the json.
        ops = coco_metric_ops.estimator_metric_fn(features["detections"], None,
                                              features["source_ids"], val_json_file=gt_path)
        return tf.compat.v1.estimator.EstimatorSpec(mode, loss=dummy, eval_metric_ops=ops)

    estimator = tf.compat.v1.estimator.Estimator(model_fn, model_dir=str(tmp_path / "model"))
    # Evaluate needs a checkpoint; write one of the dummy variable.
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.zeros_initializer())
        step = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(sess, str(tmp_path / "model" / "model.ckpt"),
                                            global_step=step)
    result = estimator.evaluate(input_fn, steps=None)
    assert result["AP"] == pytest.approx(1.0)
    assert result["AP_/cat"] == pytest.approx(1.0) and result["AP_/dog"] == pytest.approx(1.0)


def test_detections_of_unknown_classes_are_reported(tmp_path, caplog):
    # Off-by-one label ids (e.g. 0-based classes shifted to 2 and 3 against a json with cat=1 and
    # dog=2) score nothing in COCOeval; the eval says so instead of only showing a low AP.
    metric = coco_metric.EvaluationMetric(filename=_write_json(tmp_path / "gt.json", SIZED))
    rows = {1: [([10, 10, 20, 20], 0.9, 3)], 2: [([200, 150, 120, 120], 0.8, 1)]}
    metric.update_state(_detections([1, 2], rows), source_ids=np.asarray([1, 2]))
    with caplog.at_level("WARNING"):
        metric.result()
    assert "1 detections have class ids [3] that are not classes of" in caplog.text


def test_yxyx_to_coco_xywh_in_numpy_and_in_the_graph():
    """One conversion for inference's results (numpy) and eval's detection rows (graph)."""
    boxes = np.array([[[10.0, 20.0, 40.0, 80.0], [0.5, 1.5, 2.0, 2.5]]], np.float32)
    want = [[[20.0, 10.0, 60.0, 30.0], [1.5, 0.5, 1.0, 1.5]]]
    np.testing.assert_array_equal(coco_json.xywh_from_yxyx(boxes), want)
    with tf.Graph().as_default(), tf.compat.v1.Session() as s:
        got = s.run(coco_json.xywh_from_yxyx(tf.constant(boxes), tf))
    np.testing.assert_array_equal(got, want)

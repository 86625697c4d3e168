"""inference: the drivers. Images of every kind (a 16-bit PNG detects like its 8-bit copy) with
bad ones reported by name, labels from the model's label map, video in and out (a text file is
not a video), and the network and end-to-end benchmarks with their one timing loop."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

import coco_json
import errors
import inference
import visualize
from conftest import STREET, TINY, assert_same_detections, sideways_photo, street, tiny_config
from dataset import label_maps
from detectors import Detector


def test_images_of_every_kind_and_bad_ones_reported(checkpoint_detector, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(STREET).save(src / "a_street.jpg")
    Image.open(STREET).convert("L").save(src / "b_gray.jpg")
    rgba = Image.open(STREET).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "c_alpha.png")
    Image.open(STREET).resize((1920, 1280)).save(src / "d_big.jpg")
    (src / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths, problems = visualize.expand_image_inputs(
        f"{src}/*,{src}/missing.jpg,{src}/nothing*.png")
    assert problems == [f"'{src}/nothing*.png': no file matches this pattern"]
    out = tmp_path / "out"
    logs = []
    # A 3-class model without a label map: boxes are labelled by class id.
    label_map = label_maps.for_config(tiny_config(**TINY))
    assert label_map == {}
    summary = inference.detect_images(checkpoint_detector, paths, str(out), label_map,
                                      log=logs.append)
    assert len(summary.failed) == 2
    assert "e_corrupt.jpg': cannot decode it as an image" in summary.failed[0]
    assert "missing.jpg': no such file" in summary.failed[1]
    # Pictures are named after their inputs, never by position.
    assert sorted(os.listdir(out)) == ["a_street.jpg", "b_gray.jpg", "c_alpha.jpg", "d_big.jpg"]
    assert Image.open(out / "d_big.jpg").size == (1920, 1280)
    for path in paths[:4]:
        det = summary.detections[path]
        assert len(det) > 0
        h, w = visualize.read_image(path).shape[:2]
        assert det.boxes[:, [0, 2]].max() <= h and det.boxes[:, [1, 3]].max() <= w
    assert logs[0].startswith(f"{paths[0]}: {len(summary.detections[paths[0]])} detections: "
                              f"class ")
    assert not any("person" in line for line in logs)


def test_16bit_png_detects_like_its_8bit_copy(checkpoint_detector, tmp_path):
    gray = np.asarray(Image.open(STREET).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    cv2.imwrite(str(tmp_path / "gray16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb16.png"), street()[..., ::-1].astype(np.uint16) * 257)
    paths = [str(tmp_path / n) for n in ("gray8.png", "gray16.png", "rgb16.png")]
    summary = inference.detect_images(checkpoint_detector, paths, None, {}, log=lambda _: None)
    eight, sixteen, rgb16 = (summary.detections[p] for p in paths)
    assert len(eight) > 0
    assert_same_detections(eight, sixteen, "16-bit gray PNG")
    assert_same_detections(checkpoint_detector.predict(street()[None])[0], rgb16, "16-bit RGB")


class _OneBox(Detector):
    """A detector that finds one box of class `class_id` in every image."""

    score_thresh = 0.4

    def __init__(self, class_id):
        self.class_id = class_id

    def _run(self, images, score_thresh):
        n = len(images)
        return {"boxes": np.tile([[[10, 10, 60, 90]]], (n, 1, 1)).astype(np.float32),
                "scores": np.full([n, 1], 0.9, np.float32),
                "classes": np.full([n, 1], self.class_id), "num_detections": np.ones([n])}


def test_a_20_class_model_is_drawn_with_its_own_label_map(tmp_path):
    names = {i: f"part_{i:02d}" for i in range(1, 21)}
    config = tiny_config(**{**TINY, "num_classes": 20}, label_map=names)
    label_map = label_maps.for_config(config)
    assert label_map == names
    image = tmp_path / "img.jpg"
    Image.open(STREET).save(image)
    logs = []
    inference.detect_images(_OneBox(17), [str(image)], str(tmp_path / "out"), label_map,
                            log=logs.append)
    assert logs == [f"{image}: 1 detections: part_17 0.90 -> {tmp_path}/out/img.jpg"]
    # Without a label map, a 90-class model uses the COCO names, any other model none.
    assert label_maps.for_config(tiny_config(num_classes=90))[17] == "cat"
    assert label_maps.for_config(tiny_config(**{**TINY, "num_classes": 20})) == {}
    assert label_maps.for_config(tiny_config(**TINY, label_map="voc"))[1] == "aeroplane"


def test_pictures_never_replace_inputs_or_earlier_pictures_unless_asked(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.open(STREET).resize((64, 40)).save(frames / f"{i}.jpg")
    sources = sorted(str(p) for p in frames.iterdir())
    before = {p: open(p, "rb").read() for p in sources}
    run = lambda out, **kw: inference.detect_images(  # noqa: E731
        _OneBox(1), sources, str(out), {}, log=lambda _: None, **kw)
    for overwrite in (False, True):
        with pytest.raises(errors.OutputError, match=r"'.*frames/0.jpg' and 2 more are inputs of "
                                                     r"this run \(--input_image\)"):
            run(frames, overwrite=overwrite)
    out = tmp_path / "out"
    run(out)
    first = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert sorted(first) == ["0.jpg", "1.jpg", "2.jpg"]
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(errors.OutputError, match=r"'.*out/0.jpg' and 2 more already exist; pass "
                                                 r"--overwrite"):
        run(out)
    assert {n: (out / n).read_bytes() for n in first} == first
    Image.new("RGB", (64, 40), (255, 255, 255)).save(frames / "0.jpg")  # the input changed
    run(out, overwrite=True)
    assert (out / "0.jpg").read_bytes() != first["0.jpg"]
    assert sorted(os.listdir(out)) == ["0.jpg", "1.jpg", "2.jpg", "notes.txt"]
    assert (out / "notes.txt").read_text() == "the user's"
    assert all(open(p, "rb").read() == before[p] for p in sources[1:])


def test_a_sideways_photo_is_detected_and_drawn_upright(tmp_path):
    upright = sideways_photo(tmp_path / "portrait.jpg")
    summary = inference.detect_images(_OneBox(1), [str(tmp_path / "portrait.jpg")],
                                      str(tmp_path / "out"), {}, log=lambda _: None)
    drawn = np.asarray(Image.open(summary.written[str(tmp_path / "portrait.jpg")]))
    assert drawn.shape == upright.shape == (64, 48, 3)


def _write_video(path, frames=4):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    frame = street(160, 120)[..., ::-1]
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(frame, 8 * i, axis=1)))
    writer.release()


def test_detect_video_writes_annotated_frames(checkpoint_detector, tmp_path):
    _write_video(tmp_path / "in.mp4")
    out = tmp_path / "sub" / "out.mp4"
    summary = inference.detect_video(checkpoint_detector, str(tmp_path / "in.mp4"), str(out),
                                     {}, progress=False)
    assert summary.frames == 4 and summary.output == str(out) and not summary.shown
    capture = cv2.VideoCapture(str(out))
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (120, 160, 3)
    diff = np.abs(first[..., ::-1].astype(np.int16) - street(160, 120)).max(axis=2)
    assert (diff > 80).mean() > 0.002  # boxes were drawn


def test_a_video_never_replaces_its_input_and_appears_only_when_done(tmp_path, monkeypatch):
    _write_video(tmp_path / "in.mp4")
    source = (tmp_path / "in.mp4").read_bytes()
    os.symlink(tmp_path / "in.mp4", tmp_path / "link.mp4")
    monkeypatch.chdir(tmp_path)
    for spelling in ("in.mp4", "./in.mp4", str(tmp_path / "link.mp4")):
        with pytest.raises(errors.OutputError, match="is an input of this run "
                                                     r"\(--input_video\)"):
            inference.detect_video(_OneBox(1), "in.mp4", spelling, {}, progress=False,
                                   overwrite=True)
    (tmp_path / "out.mp4").write_bytes(b"an earlier video")
    with pytest.raises(errors.OutputError, match="'out.mp4' already exists; pass --overwrite"):
        inference.detect_video(_OneBox(1), "in.mp4", "out.mp4", {}, progress=False)

    class Broken(_OneBox):
        def _run(self, images, score_thresh):
            if self.calls == 2:
                raise RuntimeError("the detector fails at the third frame")
            self.calls += 1
            return super()._run(images, score_thresh)

    broken = Broken(1)
    broken.calls = 0
    with pytest.raises(RuntimeError):
        inference.detect_video(broken, "in.mp4", "out.mp4", {}, progress=False, overwrite=True)
    assert (tmp_path / "out.mp4").read_bytes() == b"an earlier video"  # no partial video
    summary = inference.detect_video(_OneBox(1), "in.mp4", "out.mp4", {}, progress=False,
                                     overwrite=True)
    assert summary.frames == 4 and cv2.VideoCapture("out.mp4").read()[0]
    assert (tmp_path / "in.mp4").read_bytes() == source
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "link.mp4", "out.mp4"]


def test_a_text_file_is_not_a_video(checkpoint_detector, tmp_path):
    # FFmpeg renders text files as frames: OpenCV alone would "read" this one.
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}: notes about the experiment\n" for i in range(200)))
    out = tmp_path / "out.mp4"
    with pytest.raises(errors.DataError, match=f"'{notes}' is a text file, not a video; give a "
                                               f"video file"):
        inference.detect_video(checkpoint_detector, str(notes), str(out), {}, progress=False)
    assert not out.exists()
    (tmp_path / "empty.mov").write_bytes(b"")
    with pytest.raises(errors.DataError, match="empty.mov' is empty"):
        inference.open_video(str(tmp_path / "empty.mov"))


def test_a_video_opencv_cannot_open_is_one_error(tmp_path):
    (tmp_path / "noise.mov").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(errors.DataError, match="noise.mov': OpenCV cannot open it as a video"):
        inference.open_video(str(tmp_path / "noise.mov"))
    with pytest.raises(errors.DataError, match="'/nonexistent.mov': no such file"):
        inference.open_video("/nonexistent.mov")


def test_benchmark_network_with_trace(tmp_path):
    trace = tmp_path / "t" / "trace.json"
    result = inference.benchmark_network(tiny_config(**TINY), batch_size=2, runs=2, warmup=1,
                                         threads=1, trace_filename=str(trace))
    assert result.batch_size == 2 and result.runs == 2 and result.params > 0
    assert result.summary().startswith("efficientdet-d0 (vfpn, float32, batch 2, 2 runs): per "
                                       "image mean")
    assert trace.read_text().startswith("{")


def test_benchmark_detector_tiles_the_batch(checkpoint_detector, tmp_path):
    trace = tmp_path / "trace.json"
    result = inference.benchmark_detector(checkpoint_detector, street(256, 160)[None], runs=2,
                                          warmup=0, name="ckpt", trace_filename=str(trace))
    assert result.batch_size == 1 and result.image_size == (160, 256)
    assert "ckpt end-to-end (pre-processing + network + NMS; 256x160 uint8 input, batch 1, " \
           "2 runs)" in result.summary()
    assert trace.read_text().startswith("{")


def test_one_timing_loop():
    calls = []
    times = inference.time_calls(lambda: calls.append(1), runs=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and min(times) >= 0
    with pytest.raises(errors.UsageError, match="timed runs must be >= 1, got 0"):
        inference.time_calls(lambda: None, runs=0, warmup=0)


def test_coco_results_of_a_detector_use_the_json_ids_and_find_themselves(
        checkpoint_detector, tmp_path):
    import json

    import coco_metric

    Image.fromarray(street(400, 300)).save(tmp_path / "b.jpg")
    Image.fromarray(street(256, 160)).save(tmp_path / "a.jpg")
    # Ids come from the json (a converter assigns them), not from the file names or order.
    images = [{"id": 17, "file_name": "b.jpg", "height": 300, "width": 400},
              {"id": 4, "file_name": "a.jpg", "height": 160, "width": 256},
              {"id": 9, "file_name": "missing.jpg", "height": 10, "width": 10}]
    gt, truth = {"images": images, "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
                 "annotations": []}, {}
    for im in images[:2]:
        det = checkpoint_detector.predict(visualize.read_image(
            str(tmp_path / im["file_name"]))[None], 0.5)[0]
        assert len(det) > 0
        truth[im["id"]] = det
        for (y0, x0, y1, x1), cls in zip(det.boxes.tolist(), det.classes.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im["id"],
                                      "category_id": cls, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                      "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    pairs = inference.coco_image_paths(str(tmp_path / "gt.json"), str(tmp_path))
    assert pairs == [(17, str(tmp_path / "b.jpg"), 300, 400),
                     (4, str(tmp_path / "a.jpg"), 160, 256),
                     (9, str(tmp_path / "missing.jpg"), 10, 10)]
    out = str(tmp_path / "results" / "dets.json")
    summary = inference.coco_results(checkpoint_detector, pairs, out, score_thresh=0.2)
    assert len(summary.failed) == 1 and "missing.jpg" in summary.failed[0]
    results = json.load(open(out))
    first = [r for r in results if r["image_id"] == 17][0]
    y0, x0, y1, x1 = truth[17].boxes[0].tolist()
    np.testing.assert_allclose(first["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3)
    assert min(r["score"] for r in results) > 0.2 and {r["image_id"] for r in results} == {4, 17}
    metrics = coco_metric.evaluate_detections_json(str(tmp_path / "gt.json"), out,
                                                   image_ids=[4, 17])
    assert metrics["AP50"] > 0.95  # its own boxes as ground truth (pycocotools' interpolation)
    # The json's sizes are checked: another image under a listed name is refused, unwritten.
    swapped = [pairs[1]._replace(path=pairs[0].path)]
    with pytest.raises(coco_json.CocoMetricError, match=r"b\.jpg is 400x300 \(WxH\) but the "
                                                         r"json's image 4 is 256x160"):
        inference.coco_results(checkpoint_detector, swapped, str(tmp_path / "refused.json"))
    assert not (tmp_path / "refused.json").exists()

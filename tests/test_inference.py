"""inference: pre-processing, the serving graph and its exports (SavedModel, frozen graph, TFLite,
ONNX) agreeing with checkpoint inference, dynamic batches, EMA-aware restore, image inputs of all
kinds, drawing and clear errors.

One tiny checkpoint and one set of exports are shared by the module (conversions are slow).
`make_test_checkpoint` is also used by test_model_inspect.py.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import efficientdet_arch
import inference
from conftest import FIXTURES, tiny_config

tf1 = tf.compat.v1

TINY = {"image_size": 128, "fpn_num_filters": 16, "fpn_cell_repeats": 2,
        "box_class_repeats": 1, "num_classes": 3}
STREET = os.path.join(FIXTURES, "images", "street.jpg")
# tf2onnx and onnxruntime are installed on Python >= 3.10 (requirements.txt).
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime"))
FORMATS = ["saved_model", "frozen", "tflite"] + (["onnx"] if HAVE_ONNX else [])
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="tf2onnx/onnxruntime need Python >= 3.10")


def street(width=None, height=None):
    image = Image.open(STREET).convert("RGB")
    if width:
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image)


def _probe_images():
    """Images like the tests': they set the scale of the test checkpoint's outputs."""
    return [street(), street(400, 300), street(256, 160)]


def make_test_checkpoint(model_dir, model_name="efficientdet-d0", seed=0, **overrides):
    """A checkpoint in `model_dir` (plus its config.yaml) that finds objects in street images.

    Random weights. With fresh batch-norm statistics a random network's features shrink with
    depth but still depend smoothly on the image, so the class and box predictors are rescaled
    until, on the test images (`_probe_images`), class logits spread with a standard deviation
    of 2 around a bias that lets about 1 in 300 (anchor, class) pairs score above 0.5, and box
    codes spread by 0.3. EMA shadows hold these weights; the raw class-predict bias is -20, so
    only an EMA-aware restore detects anything. Returns the config.
    """
    config = tiny_config(model_name, **{**TINY, **overrides})
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        probe = tf1.placeholder(tf.uint8, [1, None, None, 3])
        outputs = efficientdet_arch.build_model(inference.preprocess_images(probe, config)[0],
                                                config, training=False)
        variables = {v.op.name: v for v in tf1.global_variables()}
        value = tf1.placeholder(tf.float32)
        assign_ops = {name: v.assign(value) for name, v in variables.items()}

        def assign(name, array):
            sess.run(assign_ops[name], {value: np.asarray(array, np.float32)})

        def probe_outputs():
            outs = [sess.run(outputs, {probe: im[None]}) for im in _probe_images()]
            return [np.concatenate([o[k][lv].reshape(-1) for o in outs for lv in o[k]])
                    for k in (0, 1)]

        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            logits, codes = probe_outputs()
            box_kernel = "box_net/box-predict/pointwise_kernel"
            assign(box_kernel, sess.run(variables[box_kernel]) * (0.3 / codes.std()))
            kernel = "class_net/class-predict/pointwise_kernel"
            bias = "class_net/class-predict/bias"
            gain = 2.0 / logits.std()
            spread = (logits - sess.run(variables[bias]).mean()) * gain
            assign(kernel, sess.run(variables[kernel]) * gain)
            shape = variables[bias].shape.as_list()
            assign(bias, np.full(shape, 0.5 - np.quantile(spread, 1 - 1 / 300)))
            values = sess.run({v.op.name: v for v in tf1.global_variables()})
    # EMA shadows hold the weights; the raw class bias cannot detect anything.
    tensors = {name + inference.EMA_SUFFIX: v for name, v in values.items()}
    tensors.update(values)
    tensors[bias] = np.full(shape, -20.0, np.float32)
    os.makedirs(model_dir, exist_ok=True)
    prefix = os.path.join(str(model_dir), "model.ckpt-0")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    tf1.train.update_checkpoint_state(str(model_dir), prefix)
    config.save_to_yaml(os.path.join(str(model_dir), "config.yaml"))
    return config


def assert_same_detections(a, b, what=""):
    """Same count and classes, boxes within 1 pixel, scores within 1e-3, matched one to one
    (the order of near-equal scores may differ between runtimes)."""
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} detections"
    used = set()
    for box, score, cls in zip(a.boxes, a.scores, a.classes):
        for j in range(len(b)):
            if j not in used and b.classes[j] == cls and abs(b.scores[j] - score) <= 1e-3 \
                    and np.abs(b.boxes[j] - box).max() <= 1.0:
                used.add(j)
                break
        else:
            raise AssertionError(f"{what}: no match for class {cls} score {score:.4f} box {box}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint, its dynamic-batch SavedModel (+ frozen graph, TFLite) and ONNX model."""
    root = tmp_path_factory.mktemp("exported")
    ckpt_dir = str(root / "efficientdet-d0")
    config = make_test_checkpoint(ckpt_dir)
    sm_dir = str(root / "saved_model")
    result = inference.export_saved_model(config, sm_dir, "efficientdet-d0", ckpt_dir,
                                          batch_size=None, tflite_path=str(root / "m.tflite"))
    onnx_path = (inference.export_onnx(config, str(root / "m.onnx"), ckpt_dir, batch_size=None)
                 if HAVE_ONNX else None)
    return {"root": root, "config": config, "ckpt": ckpt_dir, "saved_model": sm_dir,
            "frozen": result.frozen_graph, "tflite": result.tflite, "onnx": onnx_path,
            "settings": result.settings}


@pytest.fixture(scope="module")
def ckpt_detector(exported):
    with inference.CheckpointDetector(exported["config"], exported["ckpt"]) as det:
        yield det


@pytest.fixture(scope="module")
def detectors(exported):
    """Each exported model loaded once: {'saved_model' | 'frozen' | 'tflite' | 'onnx': ...}."""
    loaded = {key: inference.load_detector(exported[key]) for key in FORMATS}
    yield loaded
    for det in loaded.values():
        det.close()


def test_preprocess_resizes_keeps_aspect_and_pads_with_zeros():
    config = tiny_config(image_size="256x128")  # W x H: 128 high, 256 wide
    image = np.full((1, 300, 400, 3), 200, np.uint8)
    with tf.Graph().as_default(), tf1.Session() as sess:
        inputs, scales, sizes = sess.run(inference.preprocess_images(tf.constant(image), config))
    assert inputs.shape == (1, 128, 256, 3)
    # scale = min(128 / 300, 256 / 400) = 0.4267 -> 128 x ceil(170.67) = 171 columns
    np.testing.assert_allclose(scales, [300 / 128], rtol=1e-6)
    np.testing.assert_array_equal(sizes, [[300, 400]])
    expected = (200 / 255 - np.array(config.mean_rgb)) / np.array(config.stddev_rgb)
    np.testing.assert_allclose(inputs[0, :, :171], np.broadcast_to(expected, (128, 171, 3)),
                               rtol=1e-5)
    assert (inputs[0, :, 171:] == 0).all()


def test_export_writes_everything(exported):
    sm = exported["saved_model"]
    for name in ("saved_model.pb", "efficientdet-d0_frozen.pb", "config.yaml",
                 "export_settings.yaml"):
        assert os.path.isfile(os.path.join(sm, name)), name
    s = exported["settings"]
    assert s["batch_size"] == "dynamic" and s["score_thresh"] == 0.4
    assert s["max_output_size"] == 100 and "per-class hard NMS" in s["nms"]


def test_all_formats_agree_with_checkpoint_inference(detectors, ckpt_detector):
    images = [street(), street(400, 300)]
    expected = [ckpt_detector.predict(im[None])[0] for im in images]
    assert all(len(e) >= 10 for e in expected), [len(e) for e in expected]
    for key, det in detectors.items():
        for image, want in zip(images, expected):
            got = det.predict(image[None])[0]
            assert_same_detections(want, got, f"{key} {image.shape}")


def test_checkpoint_restore_is_ema_aware(exported, ckpt_detector):
    image = street()[None]
    assert len(ckpt_detector.predict(image)[0]) > 0
    raw = tiny_config(**TINY, moving_average_decay=0.0)
    with inference.CheckpointDetector(raw, exported["ckpt"]) as det:
        assert len(det.predict(image)[0]) == 0  # raw class bias -20


def test_ckpt_export_folds_ema_into_raw_variables(exported, ckpt_detector, tmp_path):
    out = str(tmp_path / "exported" / "ema")
    info = inference.eval_ckpt(exported["config"], exported["ckpt"], out)
    assert info["ema"] and info["exported"] == out
    reader = tf.train.load_checkpoint(out)
    raw = reader.get_tensor("class_net/class-predict/bias")
    shadow = reader.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage")
    original = tf.train.load_checkpoint(exported["ckpt"])
    np.testing.assert_array_equal(
        raw, original.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage"))
    np.testing.assert_array_equal(raw, shadow)
    no_ema = tiny_config(**TINY, moving_average_decay=0.0)
    with inference.CheckpointDetector(no_ema, out) as det:
        got = det.predict(street()[None])[0]
    assert_same_detections(ckpt_detector.predict(street()[None])[0], got, "exported ckpt")


def _three_images():
    full = street(256, 160)
    return np.stack([full, full[:, ::-1], np.roll(full, 60, axis=1)])


@pytest.mark.parametrize("key", FORMATS)
def test_dynamic_batch_gives_each_image_its_own_detections(detectors, key):
    batch = _three_images()
    det = detectors[key]
    assert det.batch_size is None
    together = det.predict(batch)
    alone = [det.predict(im[None])[0] for im in batch]
    for i, (a, b) in enumerate(zip(together, alone)):
        assert len(a) > 0
        assert_same_detections(b, a, f"{key} image {i}")
    assert not np.allclose(together[0].boxes[:3], together[1].boxes[:3])


def test_base64_signature_matches_arrays_for_images_of_different_sizes(exported, detectors):
    images = [street(), street(300, 200), np.asarray(Image.open(STREET).convert("L"))]
    encoded = []
    for im in images:
        with tf.Graph().as_default(), tf1.Session() as sess:
            encoded.append(sess.run(tf.io.encode_png(im if im.ndim == 3 else im[..., None])))
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], exported["saved_model"])
        sig = meta.signature_def["serving_base64"]
        out = sess.run({k: v.name for k, v in sig.outputs.items()},
                       {sig.inputs["image_files"].name: np.array(encoded, object)})
    got = inference.split_detections(out)
    for i, im in enumerate(images):
        rgb = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
        want = detectors["saved_model"].predict(rgb[None])[0]
        assert len(want) > 0
        assert_same_detections(want, got[i], f"base64 image {i}")
    assert out["detections"].shape == (3, 100, 7)
    np.testing.assert_array_equal(out["detections"][2, :, 0], 2)  # image index column


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    r = subprocess.run([cli, "show", "--dir", exported["saved_model"], "--all"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    default = out[out.index("signature_def['serving_default']"):]
    base64 = out[out.index("signature_def['serving_base64']"):]
    default = default[:default.find("signature_def[", 10)] if "signature_def[" in default[10:] \
        else default
    assert "inputs['image_arrays'] tensor_info:" in default
    assert "dtype: DT_UINT8" in default and "shape: (-1, -1, -1, 3)" in default
    assert "inputs['image_files'] tensor_info:" in base64
    assert "dtype: DT_STRING" in base64 and "shape: (-1)" in base64
    for text in (default, base64):
        assert "outputs['detections']" in text and "shape: (-1, 100, 7)" in text
        assert "outputs['boxes']" in text and "shape: (-1, 100, 4)" in text
        assert "outputs['classes']" in text and "dtype: DT_INT32" in text


def test_score_threshold_is_a_run_time_input(detectors):
    image = street()[None]
    det = detectors["saved_model"]
    default = det.predict(image)[0]
    high = det.predict(image, score_thresh=0.6)[0]
    low = det.predict(image, score_thresh=0.2)[0]
    assert 0 < len(high) < len(default) < len(low)
    assert (high.scores > 0.6).all() and (low.scores > 0.2).all()
    assert_same_detections(low, detectors["frozen"].predict(image, 0.2)[0], "frozen low")
    if HAVE_ONNX:
        assert_same_detections(low, detectors["onnx"].predict(image, 0.2)[0], "onnx low")
    tflite = detectors["tflite"]
    assert_same_detections(high, tflite.predict(image, score_thresh=0.6)[0], "tflite high")
    with pytest.raises(inference.DetectorError, match="exported with score threshold 0.4"):
        tflite.predict(image, score_thresh=0.2)


def test_images_of_every_kind_and_bad_ones_reported(ckpt_detector, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(STREET).save(src / "a_street.jpg")
    Image.open(STREET).convert("L").save(src / "b_gray.jpg")
    rgba = Image.open(STREET).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "c_alpha.png")
    Image.open(STREET).resize((1920, 1280)).save(src / "d_big.jpg")
    (src / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert Image.open(src / "b_gray.jpg").mode == "L"
    paths, problems = inference.expand_image_inputs(
        f"{src}/*,{src}/missing.jpg,{src}/nothing*.png")
    assert problems == [f"'{src}/nothing*.png': no file matches this pattern"]
    out = tmp_path / "out"
    logs = []
    summary = inference.detect_images(ckpt_detector, paths, str(out),
                                      inference.label_map_of(tiny_config()), log=logs.append)
    assert len(summary.failed) == 2
    assert "e_corrupt.jpg': cannot decode it as an image" in summary.failed[0]
    assert "missing.jpg': no such file" in summary.failed[1]
    assert sorted(os.listdir(out)) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    big = Image.open(out / "3.jpg")
    assert big.size == (1920, 1280)
    for path in paths[:4]:
        det = summary.detections[path]
        assert len(det) > 0
        h, w = inference.read_image(path).shape[:2]
        assert det.boxes[:, [0, 2]].max() <= h and det.boxes[:, [1, 3]].max() <= w
    assert any("person" in line or "bicycle" in line or "car" in line for line in logs)


def test_draw_detections_labels_boxes_with_the_label_map():
    image = np.zeros((100, 200, 3), np.uint8)
    det = inference.Detections(np.array([[20, 30, 80, 150], [10, 10, 20, 20]], np.float32),
                               np.array([0.9, 0.3], np.float32), np.array([2, 7], np.int32))
    drawn = inference.draw_detections(image, det, {2: "bicycle"}, min_score=0.5,
                                      line_thickness=2)
    color = np.array(inference._COLORS[2])
    assert (drawn[79, 60] == color).all() and (drawn[50, 149] == color).all()
    assert (drawn[50, 90] == 0).all()  # inside the box: untouched
    assert not drawn[12:19, 12:19].any()  # below min_score: not drawn
    assert drawn[:20, 30:150].any()  # the label above the box
    assert inference.label_map_of(tiny_config())[1] == "person"
    assert inference.label_map_of(tiny_config(label_map="voc"))[1] == "aeroplane"
    custom = tiny_config(label_map={1: "cat", 2: "dog", 3: "fox"})
    assert inference.label_map_of(custom) == {1: "cat", 2: "dog", 3: "fox"}


def test_load_errors_name_the_path(exported, tmp_path):
    with pytest.raises(inference.DetectorError, match="'/nonexistent/model' does not exist"):
        inference.load_detector("/nonexistent/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(inference.DetectorError, match="holds no saved_model.pb"):
        inference.load_detector(str(empty))
    raw = inference.save_frozen(exported["config"], str(tmp_path), "efficientdet-d0")
    with pytest.raises(inference.DetectorError, match="lacks the serving nodes.*freeze"):
        inference.load_detector(raw)
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(inference.DetectorError, match="junk.pb"):
        inference.load_detector(str(junk))
    with pytest.raises(ValueError, match="already exists and is not empty"):
        inference.export_saved_model(exported["config"], exported["saved_model"],
                                     "efficientdet-d0")


@needs_onnx
def test_onnx_needs_hard_nms(tmp_path):
    config = tiny_config(**TINY)
    config.nms_configs.method = "gaussian"
    with pytest.raises(ValueError, match="nms_configs.method=hard"):
        inference.export_onnx(config, str(tmp_path / "m.onnx"))







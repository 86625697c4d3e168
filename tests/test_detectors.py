"""detectors: every format (checkpoint, SavedModel, frozen graph, TFLite, ONNX, OpenVINO) gives
the same detections, per image in a dynamic batch, with the score threshold as a run-time input;
the base64 signature decodes every image kind (16-bit PNGs too); load errors name the path; a new
format is one class plus one table entry; OpenVINO's precision choice says what runs."""

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import detections
import detectors
import errors
import export
from conftest import (
    HAVE_ONNX,
    HAVE_OPENVINO,
    STREET,
    assert_same_detections,
    needs_openvino,
    street,
)

tf1 = tf.compat.v1

FORMATS = (["saved_model", "frozen", "tflite"] + (["onnx"] if HAVE_ONNX else [])
           + (["openvino"] if HAVE_OPENVINO else []))


@pytest.fixture(scope="module")
def loaded(exported_models):
    """Each exported model loaded once: {'saved_model' | 'frozen' | 'tflite' | 'onnx' |
    'openvino': ...}."""
    models = {key: detectors.load_detector(exported_models[key]) for key in FORMATS}
    yield models
    for det in models.values():
        det.close()


def test_load_detector_picks_the_class_by_suffix(loaded):
    kinds = {key: type(det) for key, det in loaded.items()}
    assert kinds["saved_model"] is detectors.SavedModelDetector
    assert kinds["frozen"] is detectors.FrozenGraphDetector
    assert kinds["tflite"] is detectors.TFLiteDetector
    if HAVE_ONNX:
        assert kinds["onnx"] is detectors.OnnxDetector
    if HAVE_OPENVINO:
        assert kinds["openvino"] is detectors.OpenVinoDetector


def test_all_formats_agree_with_checkpoint_inference(loaded, checkpoint_detector):
    images = [street(), street(400, 300)]
    expected = [checkpoint_detector.predict(im[None])[0] for im in images]
    assert all(len(e) >= 10 for e in expected), [len(e) for e in expected]
    for key, det in loaded.items():
        for image, want in zip(images, expected):
            assert_same_detections(want, det.predict(image[None])[0], f"{key} {image.shape}")


def _three_images():
    full = street(256, 160)
    return np.stack([full, full[:, ::-1], np.roll(full, 60, axis=1)])


@pytest.mark.parametrize("key", FORMATS)
def test_dynamic_batch_gives_each_image_its_own_detections(loaded, key):
    batch = _three_images()
    det = loaded[key]
    assert det.batch_size is None
    together = det.predict(batch)
    alone = [det.predict(im[None])[0] for im in batch]
    for i, (a, b) in enumerate(zip(together, alone)):
        assert len(a) > 0
        assert_same_detections(b, a, f"{key} image {i}")
    assert not np.allclose(together[0].boxes[:3], together[1].boxes[:3])


def _png16(gray8):
    """A 16-bit grayscale PNG whose values are the 8-bit ones scaled to 0..65535."""
    ok, data = cv2.imencode(".png", gray8.astype(np.uint16) * 257)
    assert ok
    assert Image.open(io.BytesIO(data.tobytes())).mode.startswith("I;16")
    return data.tobytes()


def test_base64_signature_matches_arrays_for_every_image_kind(exported_models, loaded):
    gray = np.asarray(Image.open(STREET).convert("L"))
    images = [street(), street(300, 200), gray, gray]
    encoded = []
    for im in images[:3]:
        with tf.Graph().as_default(), tf1.Session() as sess:
            encoded.append(sess.run(tf.io.encode_png(im if im.ndim == 3 else im[..., None])))
    encoded.append(_png16(gray))  # decoded to the same 8-bit pixels as its 8-bit copy
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], exported_models["saved_model"])
        sig = meta.signature_def["serving_base64"]
        out = sess.run({k: v.name for k, v in sig.outputs.items()},
                       {sig.inputs["image_files"].name: np.array(encoded, object)})
    got = detections.split_detections(out)
    for i, im in enumerate(images):
        rgb = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
        want = loaded["saved_model"].predict(rgb[None])[0]
        assert len(want) > 0
        assert_same_detections(want, got[i], f"base64 image {i}")
    assert out["detections"].shape == (4, 100, 7)
    np.testing.assert_array_equal(out["detections"][2, :, 0], 2)  # image index column


def test_score_threshold_is_a_run_time_input(loaded):
    image = street()[None]
    det = loaded["saved_model"]
    default = det.predict(image)[0]
    high = det.predict(image, score_thresh=0.6)[0]
    low = det.predict(image, score_thresh=0.2)[0]
    assert 0 < len(high) < len(default) < len(low)
    assert (high.scores > 0.6).all() and (low.scores > 0.2).all()
    assert_same_detections(low, loaded["frozen"].predict(image, 0.2)[0], "frozen low")
    if HAVE_ONNX:
        assert_same_detections(low, loaded["onnx"].predict(image, 0.2)[0], "onnx low")
    if HAVE_OPENVINO:
        assert loaded["openvino"].score_thresh == 0.4  # the export default, from the IR itself
        assert_same_detections(low, loaded["openvino"].predict(image, 0.2)[0], "openvino low")
        assert_same_detections(high, loaded["openvino"].predict(image, 0.6)[0], "openvino high")
    tflite = loaded["tflite"]
    assert_same_detections(high, tflite.predict(image, score_thresh=0.6)[0], "tflite high")
    with pytest.raises(errors.UsageError, match="TFLite model was exported with score "
                                                "threshold 0.4; it cannot return scores below"):
        tflite.predict(image, score_thresh=0.2)


def test_fixed_size_tflite_runs_on_xnnpack_and_detects_like_the_saved_model(
        exported_models, loaded, tmp_path):
    # Images of any size make the pre-processing's tensors dynamic, and TFLite then declines
    # its XNNPACK delegate for the whole model; a fixed size (and batch) makes every tensor
    # static. The delegate count pins that no op of ours makes the fixed-size graph dynamic.
    dynamic = loaded["tflite"]
    dynamic.predict(street()[None])
    assert dynamic.delegated_nodes() == 0
    assert dynamic.note == "TFLite kernels (dynamic shapes: no XNNPACK)"
    path = str(tmp_path / "fixed.tflite")
    export.export_saved_model(exported_models["config"], str(tmp_path / "sm"),
                              "efficientdet-d0", exported_models["ckpt"], batch_size=1,
                              tflite_path=path, tflite_input_size=(636, 1024))
    assert export.read_export_settings(path)["tflite_input_size"] == [636, 1024]
    fixed = detectors.load_detector(path)
    assert (fixed.batch_size, fixed.input_size) == (1, (636, 1024))
    image = street()[None]
    want = loaded["saved_model"].predict(image)[0]
    assert len(want) >= 10
    assert_same_detections(want, fixed.predict(image)[0], "fixed-size tflite")
    assert fixed.delegated_nodes() > 0 and fixed.note == "XNNPACK delegate"
    with pytest.raises(errors.UsageError, match=r"fixed.tflite' takes 1024x636 \(WxH\) images "
                                                r"only .*; this image is 400x300"):
        fixed.predict(street(400, 300)[None])
    assert export.read_export_settings(exported_models["tflite"])["tflite_input_size"] == "any"


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(errors.ModelFileError, match="'/nonexistent/model' does not exist: give "
                                                    "a SavedModel directory or a .pb, .tflite"):
        detectors.load_detector("/nonexistent/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.ModelFileError, match=f"'{empty}' holds no saved_model.pb"):
        detectors.load_detector(str(empty))
    net_only = tmp_path / "net.pb"
    with tf.Graph().as_default() as graph:
        tf1.placeholder(tf.float32, [1, 8, 8, 3], name="input")
    net_only.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(errors.ModelFileError, match="lacks the serving nodes.*raw network alone"):
        detectors.load_detector(str(net_only))
    for name, kind in (("junk.pb", "frozen GraphDef"), ("junk.tflite", "TFLite model"),
                       ("junk.onnx", "ONNX model")):
        if name.endswith(".onnx") and not HAVE_ONNX:
            continue
        (tmp_path / name).write_bytes(b"\x00\x01garbage")
        with pytest.raises(errors.ModelFileError, match=f"'{tmp_path / name}' is not a "
                                                        f"(loadable )?{kind}"):
            detectors.load_detector(str(tmp_path / name))


class _FixedDetector(detectors.Detector):
    """A format added the documented way: a class taking (path, threads) ..."""

    kind = "fixed"

    def __init__(self, path, threads=0):
        self.path = path

    def _run(self, images, score_thresh):
        n = len(images)
        return {"boxes": np.tile([[[1, 2, 3, 4], [0, 0, 0, 0]]], (n, 1, 1)).astype(np.float32),
                "scores": np.tile([[0.9, 0.0]], (n, 1)).astype(np.float32),
                "classes": np.tile([[5, 0]], (n, 1)), "num_detections": np.full([n], 1)}


def test_a_new_format_is_one_class_and_one_table_entry(tmp_path, monkeypatch):
    path = tmp_path / "model.fixed"
    path.write_bytes(b"weights")
    monkeypatch.setitem(detectors.FORMATS, ".fixed", _FixedDetector)  # ... plus one entry
    with detectors.load_detector(str(path)) as det:
        assert isinstance(det, _FixedDetector) and det.path == str(path)
        (got,) = det.predict(np.zeros((1, 4, 4, 3), np.uint8))
    np.testing.assert_array_equal(got.boxes, [[1, 2, 3, 4]])
    assert got.classes.tolist() == [5] and len(got.filter(0.95)) == 0


def test_predict_checks_its_input(checkpoint_detector):
    with pytest.raises(ValueError, match=r"images must be uint8 \[n, h, w, 3\], got float32"):
        checkpoint_detector.predict(np.zeros((1, 8, 8, 3), np.float32))


def test_export_settings_give_the_default_threshold(exported_models):
    assert export.read_export_settings(exported_models["tflite"])["score_thresh"] == 0.4


@needs_openvino
def test_openvino_load_errors_name_the_file(exported_models, tmp_path):
    xml = exported_models["openvino"]
    weights = xml[:-len(".xml")] + ".bin"
    (tmp_path / "alone.xml").write_bytes(open(xml, "rb").read())
    with pytest.raises(errors.ModelFileError) as e:
        detectors.load_detector(str(tmp_path / "alone.xml"))
    assert str(e.value) == (f"OpenVINO model '{tmp_path / 'alone.xml'}' has no weights file "
                            f"'{tmp_path / 'alone.bin'}' beside it; copy the .bin written with "
                            f"the .xml")
    (tmp_path / "cut.xml").write_bytes(open(xml, "rb").read())
    (tmp_path / "cut.bin").write_bytes(open(weights, "rb").read()[:10000])
    with pytest.raises(errors.ModelFileError, match=f"^'{tmp_path / 'cut.xml'}' is not a "
                                                    f"loadable OpenVINO model: Incorrect weights"):
        detectors.load_detector(str(tmp_path / "cut.xml"))
    (tmp_path / "junk.xml").write_text("not a model")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 8)
    with pytest.raises(errors.ModelFileError, match=f"^'{tmp_path / 'junk.xml'}' is not "
                                                    f"OpenVINO IR: it has no <net> element"):
        detectors.load_detector(str(tmp_path / "junk.xml"))
    with pytest.raises(errors.ModelFileError, match=r"does not exist: give a SavedModel "
                                                    r"directory or a .pb, .tflite, .onnx, .xml"):
        detectors.load_detector(str(tmp_path / "missing.xml"))


@needs_openvino
def test_openvino_precision_says_what_runs(exported_models, loaded):
    import openvino as ov

    xml = exported_models["openvino"]
    bf16_native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    # f32 unless asked otherwise: OpenVINO's own choice is bf16 on AMX / AVX-512 BF16 CPUs,
    # whose detections differ from the checkpoint's.
    assert loaded["openvino"].precision == "f32"
    with detectors.load_detector(xml, precision="auto") as det:
        assert det.precision == ("bf16" if bf16_native else "f32")
        assert "requested" not in det.note
    with detectors.load_detector(xml, precision="f32") as det:
        assert det.precision == "f32" and det.note.endswith("inference precision f32")
        f32 = det.predict(street()[None])[0]
    assert_same_detections(loaded["saved_model"].predict(street()[None])[0], f32, "f32")
    with detectors.load_detector(xml, precision="bf16") as det:
        if bf16_native:
            assert det.precision == "bf16" and "requested" not in det.note
        else:  # OpenVINO accepts the hint and runs f32: the detector says so
            assert det.precision == "f32"
            assert "inference precision f32 (bf16 requested; this CPU offers" in det.note
            assert "no native bf16" in det.note
            assert_same_detections(f32, det.predict(street()[None])[0], "bf16 as f32")
    with pytest.raises(errors.UsageError, match="precision 'bf16' cannot be chosen for a "
                                                "SavedModel"):
        detectors.load_detector(exported_models["saved_model"], precision="bf16")

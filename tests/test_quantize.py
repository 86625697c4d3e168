"""quantize: calibration sets read from TFRecords (the training input code) or image globs, and
refused in one line naming the flag before anything is built or written; int8 OpenVINO IR (NNCF)
beside the f32 one and full-integer TFLite, both keeping pre- and post-processing float, whose
confident detections agree with the float model's; every runmode that runs an exported model
takes the int8 .xml; saved_model_eval compares two models' COCO AP; the runtime benchmark's int8
rows."""

import json
import os
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import detectors
import errors
import export
import model_inspect
import quantize
import serving
import visualize
from badinput import check, run_inspect, snapshot
from conftest import (
    ROOT,
    needs_nncf,
    needs_onnx,
    parse_inspect_flags,
    street,
    tiny_config,
)
from dataset import tfrecord_util

FLAG = "openvino_int8_calibration"


@pytest.fixture(scope="session")
def calibration_images(tmp_path_factory):
    """A glob of four street photos of different sizes: the tests' calibration set."""
    root = tmp_path_factory.mktemp("calibration")
    for i, size in enumerate([None, (640, 400), (400, 300), (320, 240)]):
        Image.fromarray(street(*size) if size else street()).save(root / f"street{i}.jpg")
    return str(root / "*.jpg")


def _records(voc_records):
    return str(voc_records / "tfrecord" / "pascal-*.tfrecord")


# -------------------------------------------------------------------------------------------------
# Calibration sets
# -------------------------------------------------------------------------------------------------
def test_calibration_from_records_reads_what_training_reads(voc_records):
    files = sorted(tf.io.gfile.glob(_records(voc_records)))
    assert len(files) == 2
    per_file = [[tfrecord_util.parse_example(r)["image/source_id"][0]
                 for r in tfrecord_util.iter_serialized(f)] for f in files]
    calib = quantize.read_calibration(_records(voc_records), 5, tiny_config(), FLAG)
    assert calib.kind == "tfrecord" and len(calib) == 5
    assert [(f, i) for f, i, _ in calib.items] == [
        (files[0], 0), (files[1], 0), (files[0], 1), (files[1], 1), (files[0], 2)]
    ids = [tfrecord_util.parse_example(r)["image/source_id"][0] for _, _, r in calib.items]
    # The shards in turn, from their first records on.
    assert ids == [per_file[0][0], per_file[1][0], per_file[0][1], per_file[1][1], per_file[0][2]]
    images = list(calib)
    for image, (_, _, record) in zip(images, calib.items):
        encoded = tfrecord_util.parse_example(record)["image/encoded"][0]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        np.testing.assert_array_equal(image, tf.io.decode_image(encoded, channels=3).numpy())
    for again, image in zip(calib, images):  # NNCF reads the set more than once
        np.testing.assert_array_equal(again, image)
    everything = quantize.read_calibration(_records(voc_records), 300, tiny_config(), FLAG)
    assert len(everything) == sum(map(len, per_file))
    assert everything.describe() == {"calibration": _records(voc_records),
                                     "calibration_kind": "tfrecord",
                                     "calibration_images": len(everything)}


def test_calibration_from_an_image_glob_reads_as_inference_does(tmp_path):
    for i in range(6):
        Image.fromarray(street(64 + 8 * i, 48)).save(tmp_path / f"im{i}.png")
    Image.fromarray(street(64, 48)).convert("L").save(tmp_path / "im6.jpg")
    calib = quantize.read_calibration(f"{tmp_path}/*.png,{tmp_path}/*.jpg", 3, tiny_config(),
                                      FLAG)
    assert calib.kind == "images"
    assert calib.items == [str(tmp_path / n) for n in ("im0.png", "im2.png", "im4.png")]
    assert quantize.read_calibration(str(tmp_path / "*"), 10, tiny_config(), FLAG).items == [
        str(tmp_path / f"im{i}.{'jpg' if i == 6 else 'png'}") for i in range(7)]
    for path, image in zip(calib.items, calib):
        np.testing.assert_array_equal(image, visualize.read_image(path))
    gray = next(iter(quantize.read_calibration(str(tmp_path / "*.jpg"), 1, tiny_config(), FLAG)))
    assert gray.shape == (48, 64, 3)  # grayscale expanded as inference expands it


def _write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as w:
        for values in examples:
            w.write(tfrecord_util.make_example(values).SerializeToString())


def _bad_labels(world):
    jpeg = tfrecord_util.encode_jpeg(Image.new("RGB", (60, 40), (120, 60, 30)))
    box = {f"image/object/bbox/{k}": [v] for k, v in zip(("ymin", "xmin", "ymax", "xmax"),
                                                         (0.1, 0.1, 0.5, 0.5))}
    _write_records(os.path.join(world["tmp"], "bad.tfrecord"), [
        {"image/encoded": jpeg, "image/source_id": "7", "image/height": 40, "image/width": 60,
         "image/object/class/label": [7], **box}])


def _corrupt_image(world):
    os.makedirs(os.path.join(world["tmp"], "imgs"))
    Image.fromarray(street(64, 48)).save(os.path.join(world["tmp"], "imgs", "a.jpg"))
    with open(os.path.join(world["tmp"], "imgs", "b.jpg"), "wb") as f:
        f.write(b"not an image")


def _truncated_records(world):
    shard = sorted(tf.io.gfile.glob(os.path.join(world["records"], "pascal-*.tfrecord")))[0]
    with open(shard, "rb") as f:
        data = f.read()
    with open(os.path.join(world["tmp"], "cut.tfrecord"), "wb") as f:
        f.write(data[: len(data) // 2])


def _text_file(world):
    with open(os.path.join(world["tmp"], "notes.tfrecord"), "w") as f:
        f.write("these are my notes, not records\n" * 20)


def _empty_file(world):
    open(os.path.join(world["tmp"], "empty.tfrecord"), "wb").close()


# (id, set-up, calibration pattern, pattern of the one error line)
BAD_SETS = [
    ("no-match", None, "{tmp}/nothing/*.tfrecord",
     r"--openvino_int8_calibration=.*/nothing/\*\.tfrecord matches no file"),
    ("zero-images", _empty_file, "{tmp}/empty.tfrecord",
     r"--openvino_int8_calibration=.*empty\.tfrecord: every matching file is empty"),
    ("corrupt-image", _corrupt_image, "{tmp}/imgs/*.jpg",
     r"--openvino_int8_calibration: '.*b\.jpg': cannot decode it as an image"),
    ("not-records", _text_file, "{tmp}/notes.tfrecord",
     r"--openvino_int8_calibration=.* matches .*notes\.tfrecord, which is not a TFRecord file"),
    ("truncated-records", _truncated_records, "{tmp}/cut.tfrecord",
     r"--openvino_int8_calibration=.*cut\.tfrecord: .*cut\.tfrecord: record \d+ is truncated"),
    ("labels-beyond-num-classes", _bad_labels, "{tmp}/bad.tfrecord",
     r"--openvino_int8_calibration=.*bad\.tfrecord: .*bad\.tfrecord record 0 \(image/source_id=7\) "
     r"has class ids 7 outside 1\.\.num_classes=3; set the num_classes hparam"),
]


@pytest.mark.parametrize("case", BAD_SETS, ids=[c[0] for c in BAD_SETS])
def test_an_unusable_calibration_set_is_one_line_before_anything_is_built(case, world,
                                                                          monkeypatch):
    _, setup, pattern, message = case
    if setup:
        setup(world)

    def refuse(*args, **kwargs):
        raise AssertionError("a graph was built before the calibration set was checked")

    monkeypatch.setattr(serving, "build_serving_graph", refuse)
    before = snapshot(world["root"])
    outcome = run_inspect(["--runmode=openvino", f"--ckpt_path={world['model']}",
                           f"--openvino_path={world['tmp']}/out/model.xml",
                           f"--{FLAG}={pattern.format(**world)}"])
    check(outcome, 1, message, before, world["root"], may_add=False)


@pytest.mark.parametrize("args,message", [
    (["--runmode=onnx", f"--{FLAG}=x/*.jpg"], f"--{FLAG} applies to --runmode=openvino or "
                                              f"--runmode=saved_model with --openvino_path"),
    (["--runmode=saved_model", f"--{FLAG}=x/*.jpg"], f"--{FLAG} applies to"),
    (["--runmode=saved_model", "--tflite_int8_calibration=x/*.jpg"],
     "--tflite_int8_calibration applies to --runmode=saved_model with --tflite_path"),
    (["--runmode=openvino", f"--{FLAG}=x/*.jpg", "--calibration_images=0"],
     "--calibration_images must be >= 1, got 0"),
    (["--runmode=saved_model_infer", "--saved_model_dir=.", "--input_image=x.jpg",
      "--compare_to=."], "--compare_to applies to --runmode=saved_model_eval"),
    (["--runmode=saved_model_eval", "--saved_model_dir=."],
     "--runmode=saved_model_eval needs --val_json_file"),
    (["--runmode=saved_model_eval", "--saved_model_dir=.", f"--val_json_file={ROOT}/README.md",
      "--image_dir=/nonexistent/images"], "--image_dir '/nonexistent/images': no such directory"),
    (["--runmode=saved_model_eval", "--saved_model_dir=.", f"--val_json_file={ROOT}/README.md",
      f"--image_dir={ROOT}", "--compare_to=/nonexistent/model.xml"],
     "--compare_to '/nonexistent/model.xml' does not exist"),
])
def test_int8_and_eval_flags_are_checked_up_front(args, message):
    with pytest.raises(errors.UsageError) as e:
        model_inspect.run(parse_inspect_flags(*args))
    assert message in str(e.value)


# -------------------------------------------------------------------------------------------------
# Agreement with the float model
# -------------------------------------------------------------------------------------------------
def _consumer_type(op):
    """Type of the first convolution, matmul or result `op`'s first output leads to."""
    while op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul", "Result"):
        op = next(iter(op.output(0).get_target_inputs())).get_node()
    return op.get_type_name()


def _iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    return inter / (area + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter)


AGREEMENT_IMAGES = [(None, None), (400, 300), (333, 222), (800, 500), (512, 512), (256, 160)]


def assert_confident_boxes_agree(float_det, int8_det, images=None, k=5, share=0.6):
    """Of the float model's `k` most confident boxes (of non-zero area) on each image, at least
    `share` of all have an int8 detection of the same class with IoU >= 0.5.

    Not all: the test model has random weights, so its box codes and class logits are noise
    the predictors were scaled up from, and int8 rounding in a hundred layers moves some of
    them (about 75-85% of these boxes agree; a model whose pre- or post-processing ran int8
    finds none of them).
    """
    images = images or [street(*size) if size[0] else street() for size in AGREEMENT_IMAGES]
    agree = total = 0
    for image in images:
        want = float_det.predict(image[None])[0]
        got = int8_det.predict(image[None])[0]
        real = np.prod(want.boxes[:, 2:] - want.boxes[:, :2], axis=1) > 0
        for box, cls in list(zip(want.boxes[real], want.classes[real]))[:k]:
            same = got.classes == cls
            total += 1
            agree += bool(same.any() and _iou(box, got.boxes[same]).max() >= 0.5)
    assert total >= 3 * len(images), total
    assert agree >= share * total, f"{agree} of {total} confident boxes agree"


# -------------------------------------------------------------------------------------------------
# OpenVINO int8
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def int8_openvino(exported_models, calibration_images, tmp_path_factory):
    """`exported_models`' f32 IR (dynamic batch) quantised, calibrated on the street photos."""
    calib = quantize.read_calibration(calibration_images, 300, exported_models["config"], FLAG)
    out = str(tmp_path_factory.mktemp("int8") / "m_int8.xml")
    return quantize.quantize_openvino(exported_models["openvino"], calib, out)


def _ops(xml):
    return export.import_openvino().Core().read_model(xml)


@needs_nncf
def test_int8_ir_quantises_the_network_and_keeps_pre_and_post_processing_float(
        int8_openvino, exported_models):
    f32, int8 = _ops(exported_models["openvino"]), _ops(int8_openvino)
    kept = set(quantize.float_op_names(f32))
    types = {op.get_friendly_name(): op.get_type_name() for op in f32.get_ops()}
    # Resize, top-k, box decoding and the per-image NMS loop (of this dynamic batch) stay float.
    assert {"Interpolate", "TopK", "Exp", "Loop"} <= {types[n] for n in kept}
    assert not any(types[n] in ("Convolution", "GroupConvolution") for n in kept)
    fed = {}  # op name -> does a FakeQuantize feed it
    for op in int8.get_ops():
        fed[op.get_friendly_name()] = any(
            port.get_source_output().get_node().get_type_name() == "FakeQuantize"
            for port in op.inputs())
    assert not [n for n in kept if fed.get(n)], "a float op gets int8 inputs"
    convs = [n for n, t in types.items() if t in ("Convolution", "GroupConvolution")]
    assert sum(fed[n] for n in convs) >= 0.9 * len(convs)  # int8 activations into the convs
    # Dense convolutions' weights use 7 of their 8 bits (NNCF's overflow fix), so CPUs without
    # VNNI, whose int8 dot products add pairs in 16 bits, do not saturate; depthwise ones need not.
    widest = {}  # consuming op type -> largest |int8 weight|
    for op in int8.get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8":
            kind = _consumer_type(op)
            widest[kind] = max(widest.get(kind, 0), int(np.abs(op.get_data().astype(int)).max()))
    assert widest.keys() == {"Convolution", "GroupConvolution"}
    assert widest["Convolution"] <= 64 < widest["GroupConvolution"]
    names = {name for port in int8.inputs for name in port.get_names()}
    assert names == {"image_arrays:0", "score_thresh:0"}
    assert int8.get_rt_info(list(export.OPENVINO_RT_INFO)).astype(str) == "0.4"
    settings = export.read_export_settings(int8_openvino)
    assert settings == {**exported_models["settings"], "precision": "int8",
                        "calibration": settings["calibration"], "calibration_kind": "images",
                        "calibration_images": 4, "float": quantize.FLOAT_PARTS,
                        "float_ops": len(kept)}


@needs_nncf
def test_int8_ir_never_replaces_an_existing_file_or_its_f32_source(int8_openvino,
                                                                   exported_models,
                                                                   calibration_images):
    calib = quantize.read_calibration(calibration_images, 1, exported_models["config"], FLAG)
    before = {p: open(p, "rb").read() for p in export.openvino_outputs(int8_openvino)}
    with pytest.raises(errors.OutputError, match="already exist; pass --overwrite"):
        quantize.quantize_openvino(exported_models["openvino"], calib, int8_openvino)
    with pytest.raises(errors.OutputError, match="are inputs of this run"):
        quantize.quantize_openvino(exported_models["openvino"], calib,
                                   exported_models["openvino"], overwrite=True)
    assert before == {p: open(p, "rb").read() for p in export.openvino_outputs(int8_openvino)}


@needs_nncf
def test_int8_openvino_detections_agree_with_f32(int8_openvino, exported_models):
    with detectors.load_detector(exported_models["openvino"]) as f32, \
            detectors.load_detector(int8_openvino) as int8:
        assert int8.int8 and not f32.int8
        assert "int8 network, other ops at inference precision f32" in int8.note
        assert int8.batch_size is None and int8.score_thresh == 0.4
        assert_confident_boxes_agree(f32, int8)
        assert len(int8.predict(np.stack([street(256, 160)] * 2))) == 2


def _video(path):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for i in range(3):
        writer.write(np.ascontiguousarray(np.roll(street(160, 120), 8 * i, axis=1)[..., ::-1]))
    writer.release()
    return path


@pytest.mark.heavy
@needs_nncf
@needs_onnx
def test_openvino_runmode_writes_int8_beside_f32_and_every_runmode_runs_it(
        test_checkpoint, calibration_images, voc_records, tmp_path, capsys):
    xml = tmp_path / "ov" / "model.xml"
    assert model_inspect.run(parse_inspect_flags(
        "--runmode=openvino", f"--ckpt_path={test_checkpoint[0]}", f"--openvino_path={xml}",
        f"--{FLAG}={calibration_images}", "--calibration_images=3")) == 0
    out = capsys.readouterr().out
    int8 = tmp_path / "ov" / "model_int8.xml"
    assert f"wrote OpenVINO model {xml}" in out
    assert (f"wrote int8 OpenVINO model {int8} (+ .bin; NNCF post-training quantisation "
            f"calibrated on 3 image(s) of {calibration_images}; {quantize.FLOAT_PARTS})") in out
    assert (tmp_path / "ov" / "model_int8.bin").exists()
    assert export.read_export_settings(str(int8))["batch_size"] == 1
    runs = {
        "saved_model_infer": [f"--input_image={calibration_images}",
                              f"--output_image_dir={tmp_path / 'out'}"],
        "saved_model_benchmark": [f"--input_image={calibration_images}", "--bm_runs=1"],
        "saved_model_video": [f"--input_video={_video(tmp_path / 'in.mp4')}",
                              f"--output_video={tmp_path / 'out.mp4'}"],
    }
    for mode, args in runs.items():
        assert model_inspect.run(parse_inspect_flags(f"--runmode={mode}",
                                                 f"--saved_model_dir={int8}", *args)) == 0, mode
        assert f"model {int8}: OpenVINO " in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "out")) == 4
    # saved_model_eval: both APs on the VOC sample's json and their difference.
    json_file = voc_records / "tfrecord" / "json_pascal.json"
    images = voc_records / "VOCdevkit" / "VOC2012" / "JPEGImages"
    assert model_inspect.run(parse_inspect_flags(
        "--runmode=saved_model_eval", f"--saved_model_dir={int8}", f"--compare_to={xml}",
        f"--val_json_file={json_file}", f"--image_dir={images}",
        "--min_score_thresh=0.05")) == 0
    out = capsys.readouterr().out
    num = r"(-?[\d.]+)"
    line = (rf"AP {num}, AP50 {num}, AP75 {num} on (\d+) image\(s\), \d+ detections at score "
            r"threshold 0.05")
    ours = re.search(f"{re.escape(str(int8))}: {line}", out)
    theirs = re.search(f"{re.escape(str(xml))}: {line}", out)
    diff = re.search(r"difference \(model_int8.xml - model.xml\): AP ([-+][\d.]+), "
                     r"AP50 ([-+][\d.]+), AP75 ([-+][\d.]+)", out)
    assert ours and theirs and diff, out
    with open(json_file) as f:
        assert ours.group(4) == theirs.group(4) == str(len(json.load(f)["images"]))
    for i in range(3):
        assert float(diff.group(i + 1)) == pytest.approx(
            float(ours.group(i + 1)) - float(theirs.group(i + 1)), abs=1.5e-3)


# -------------------------------------------------------------------------------------------------
# TFLite int8
# -------------------------------------------------------------------------------------------------
def test_tflite_int8_any_size(exported_models, calibration_images, tmp_path):
    calib = quantize.read_calibration(calibration_images, 300, exported_models["config"],
                                      "tflite_int8_calibration")
    quantizer = quantize.TFLiteInt8(calib, None)
    path = export.export_tflite(exported_models["saved_model"], str(tmp_path / "m.tflite"),
                                quantizer)
    assert quantizer.settings["precision"] == "int8"
    assert re.fullmatch(r"int8: \d+ network ops; float network ops \(no int8 kernel or "
                        r"range\): .*ADD_N x\d+.*", quantizer.summary), quantizer.summary
    with detectors.load_detector(exported_models["saved_model"]) as f32, \
            detectors.load_detector(path) as int8:
        assert int8.int8 and not f32.int8 and int8.batch_size is None
        assert_confident_boxes_agree(f32, int8)
        assert int8.note.startswith("int8 network, TFLite kernels")


@pytest.mark.heavy
@needs_nncf
@needs_onnx
def test_saved_model_with_int8_tflite_for_one_size_and_int8_openvino(
        test_checkpoint, checkpoint_detector, calibration_images, tmp_path, capsys):
    tflite, xml = tmp_path / "m.tflite", tmp_path / "ov" / "m.xml"
    assert model_inspect.run(parse_inspect_flags(
        "--runmode=saved_model", f"--ckpt_path={test_checkpoint[0]}",
        f"--saved_model_dir={tmp_path / 'sm'}", f"--tflite_path={tflite}",
        "--tflite_input_size=1024x636", f"--tflite_int8_calibration={calibration_images}",
        f"--openvino_path={xml}", f"--{FLAG}={calibration_images}")) == 0
    out = capsys.readouterr().out
    assert re.search(rf"wrote TFLite model {tflite} \(int8 calibrated on 4 image\(s\) of "
                     rf"{re.escape(calibration_images)}: {re.escape(quantize.FLOAT_PARTS)}; "
                     rf"int8: \d+ network ops; float network ops .*; score threshold fixed at "
                     rf"0.4; 1024x636 images only, XNNPACK\)", out), out
    assert f"wrote int8 OpenVINO model {tmp_path / 'ov' / 'm_int8.xml'}" in out
    settings = export.read_export_settings(str(tflite))
    assert settings["precision"] == "int8" and settings["tflite_input_size"] == [636, 1024]
    assert settings["float"].startswith(quantize.FLOAT_PARTS)
    with detectors.load_detector(str(tflite)) as int8:
        assert int8.int8
        same_size = [street(), np.ascontiguousarray(street()[:, ::-1]),
                     np.roll(street(), 200, axis=1)]
        assert_confident_boxes_agree(checkpoint_detector, int8, same_size)
        assert int8.note == "int8 network, XNNPACK delegate"


# -------------------------------------------------------------------------------------------------
# The runtime benchmark's int8 rows
# -------------------------------------------------------------------------------------------------
@needs_nncf
@needs_onnx
def test_bench_runtimes_exports_and_scores_the_int8_models(exported_models, voc_records,
                                                           tmp_path, calibration_images,
                                                           monkeypatch):
    """export_int8 makes the int8 models beside a model's f32 exports (laid out here from the
    session's exports), and ap_one scores every runtime of that layout, int8 rows included."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_runtimes
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    paths = bench_runtimes.export_paths(str(tmp_path))
    sources = {"saved_model": exported_models["saved_model"],
               "frozen": exported_models["frozen"], "tflite": exported_models["tflite"],
               "onnx": exported_models["onnx"], "openvino": exported_models["openvino"]}
    for key, source in sources.items():
        os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, paths[key])  # the int8 TFLite is converted from it
            continue
        if os.path.exists(paths[key]):  # the frozen graph, copied with the SavedModel
            continue
        for suffix in ("", ".bin") if key == "openvino" else ("",):
            src = os.path.splitext(source)[0] + suffix if suffix else source
            dst = os.path.splitext(paths[key])[0] + suffix if suffix else paths[key]
            os.symlink(src, dst)
        os.symlink(export.settings_path(source), export.settings_path(paths[key]))
    # The runtimes whose AP this checks (every runtime loads the same way).
    monkeypatch.setattr(bench_runtimes, "RUNTIMES", [
        r for r in bench_runtimes.RUNTIMES if r[0] in ("TF SavedModel", "OpenVINO f32",
                                                       "OpenVINO int8", "TFLite int8",
                                                       "TFLite int8 fixed size")])
    bench_runtimes.export_int8(str(tmp_path), exported_models["config"], 1,
                               exported_models["ckpt"], None, calibration_images, 2)
    assert os.path.exists(paths["openvino_int8"]) and os.path.exists(paths["tflite_int8"])
    assert not os.path.exists(paths["tflite_int8_fixed"])  # a trained model: AP rows only
    assert export.read_export_settings(paths["tflite_int8"])["calibration_images"] == 2
    with bench_runtimes.load("OpenVINO int8", paths, 0) as det:
        assert bench_runtimes.precision_run(det) == "int8"
    with bench_runtimes.load("OpenVINO f32", paths, 0) as det:
        assert bench_runtimes.precision_run(det) == "f32"
    aps = bench_runtimes.ap_one(str(tmp_path), str(voc_records / "tfrecord" / "json_pascal.json"),
                                str(voc_records / "VOCdevkit" / "VOC2012" / "JPEGImages"), 0)
    assert {"OpenVINO int8", "TFLite int8"} <= set(aps)
    assert "TFLite int8 fixed size" not in aps  # one image size only
    for label in ("OpenVINO int8", "TFLite int8"):
        assert 0.0 <= aps[label]["AP"] <= aps[label]["AP50"] <= 1.0
    assert aps["OpenVINO f32"]["parity"] == "same"


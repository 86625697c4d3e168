"""export: what each export writes (SavedModel, frozen graph, TFLite, settings), checkpoint
re-export with EMA folded in, replacing an existing file only when asked, never writing over
the checkpoint an export reads or another run's files (outputs.py has the policy's own tests)."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

import detectors
import errors
import export
import run_dir
from conftest import TINY, assert_same_detections, needs_onnx, needs_openvino, street, tiny_config

tf1 = tf.compat.v1


def test_export_settings_describe_the_exports_own_threshold():
    graph = types.SimpleNamespace(config=tiny_config(), batch_size=1, default_score_thresh=0.25,
                                  max_output_size=7)  # --min_score_thresh, not the config's 0.4
    s = export.export_settings(graph, None)
    assert s["score_thresh"] == 0.25
    assert "score threshold 0.25, at most 7 detections" in s["nms"]


def test_export_writes_everything(exported_models):
    sm = exported_models["saved_model"]
    for name in ("saved_model.pb", "efficientdet-d0_frozen.pb", "config.yaml",
                 "export_settings.yaml"):
        assert os.path.isfile(os.path.join(sm, name)), name
    s = exported_models["settings"]
    assert s["batch_size"] == "dynamic" and s["score_thresh"] == 0.4
    # The model's classes: 3, without names (so a copy is not drawn with COCO's).
    assert s["num_classes"] == 3 and s["label_map"] == {}
    assert s["max_output_size"] == 100 and "per-class hard NMS" in s["nms"]
    for key in ("saved_model", "frozen"):
        assert export.read_export_settings(exported_models[key]) == s, key
    assert export.read_export_settings(exported_models["tflite"]) == {
        **s, "tflite_input_size": "any"}
    assert export.settings_path(exported_models["tflite"]).endswith(
        "m.tflite.export_settings.yaml")
    # m.tflite and m.onnx share a directory and a stem; each keeps its own settings.
    assert export.read_export_settings(exported_models["tflite"])["tflite_input_size"] == "any"
    if exported_models["onnx"]:
        assert "tflite_input_size" not in export.read_export_settings(exported_models["onnx"])


def test_settings_of_older_exports_are_still_read(tmp_path):
    model = tmp_path / "old.tflite"
    model.write_bytes(b"")
    (tmp_path / "old.export_settings.yaml").write_text("score_thresh: 0.3\n")
    assert export.read_export_settings(str(model)) == {"score_thresh": 0.3}


def test_recorded_classes_old_new_and_broken(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    settings = tmp_path / "m.onnx.export_settings.yaml"
    settings.write_text("score_thresh: 0.3\n")
    assert export.recorded_classes(str(model)) is None  # an export older than the classes
    settings.write_text("num_classes: 3\nlabel_map: {1: circle, 3: triangle}\n")
    assert export.recorded_classes(str(model)) == (3, {1: "circle", 3: "triangle"})
    config = export.with_recorded_classes(tiny_config(num_classes=90), str(model))
    assert config.num_classes == 3 and config.label_map == {1: "circle", 3: "triangle"}
    settings.write_text("num_classes: 2\nlabel_map: {1: circle, 3: triangle}\n")
    with pytest.raises(errors.ModelFileError, match=r"m\.onnx\.export_settings\.yaml \(the "
                                                    r"export's settings\): label_map has class "
                                                    r"id 3 but num_classes is 2"):
        export.recorded_classes(str(model))


def test_saved_model_signatures(exported_models):
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], exported_models["saved_model"])
    sigs = meta.signature_def

    def shape(info):
        return [d.size for d in info.tensor_shape.dim]

    default, base64 = sigs["serving_default"], sigs["serving_base64"]
    assert default.inputs["image_arrays"].dtype == tf.uint8.as_datatype_enum
    assert shape(default.inputs["image_arrays"]) == [-1, -1, -1, 3]
    assert base64.inputs["image_files"].dtype == tf.string.as_datatype_enum
    assert shape(base64.inputs["image_files"]) == [-1]
    for sig in (default, base64):
        assert shape(sig.outputs["detections"]) == [-1, 100, 7]
        assert shape(sig.outputs["boxes"]) == [-1, 100, 4]
        assert sig.outputs["classes"].dtype == tf.int32.as_datatype_enum
        assert set(sig.outputs) == {"detections", "boxes", "scores", "classes",
                                    "num_detections"}


def test_ckpt_export_folds_ema_into_raw_variables(test_checkpoint, checkpoint_detector,
                                                  tmp_path):
    ckpt_dir, config = test_checkpoint
    out = str(tmp_path / "exported" / "ema")
    info = export.eval_ckpt(config, ckpt_dir, out)
    assert info["ema"] and info["exported"] == out
    reader = tf.train.load_checkpoint(out)
    raw = reader.get_tensor("class_net/class-predict/bias")
    shadow = reader.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage")
    original = tf.train.load_checkpoint(ckpt_dir)
    np.testing.assert_array_equal(
        raw, original.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage"))
    np.testing.assert_array_equal(raw, shadow)
    assert tf.train.latest_checkpoint(str(tmp_path / "exported")) == out
    no_ema = tiny_config(**TINY, moving_average_decay=0.0)
    with detectors.CheckpointDetector(no_ema, out) as det:
        got = det.predict(street()[None])[0]
    assert_same_detections(checkpoint_detector.predict(street()[None])[0], got, "exported ckpt")


def _fake_run(directory, *names):
    os.makedirs(directory, exist_ok=True)
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write("another run's file")


def test_nothing_is_written_over_another_run(tmp_path):
    config = tiny_config(**TINY)
    train_dir = str(tmp_path / "train")
    _fake_run(train_dir, "config.yaml", "checkpoint", "model.ckpt-5.index")
    with pytest.raises(errors.OutputError, match="'.*train' already holds checkpoint, "
                                                 "config.yaml, model.ckpt-5.index of another "
                                                 "run; choose a new or empty directory"):
        export.save_dry_run(config, train_dir, "efficientdet-d0")
    with pytest.raises(errors.OutputError, match="already holds"):
        export.save_frozen(config, train_dir, "efficientdet-d0")
    with pytest.raises(errors.OutputError, match="already holds"):
        export.eval_ckpt(config, "_", os.path.join(train_dir, "ema"))
    with pytest.raises(errors.OutputError, match="already exists and is not empty"):
        export.export_saved_model(config, train_dir, "efficientdet-d0")
    for name in os.listdir(train_dir):
        assert open(os.path.join(train_dir, name)).read() == "another run's file"
    assert run_dir.other_run_problem(str(tmp_path / "new")) is None
    _fake_run(str(tmp_path / "notes"), "notes.txt")
    assert run_dir.other_run_problem(str(tmp_path / "notes")) is None


def test_an_export_replaces_a_file_only_when_asked(test_checkpoint, tmp_path):
    ckpt_dir, config = test_checkpoint
    logdir = tmp_path / "frozen"
    logdir.mkdir()
    old = logdir / "efficientdet-d0_frozen.pb"
    old.write_bytes(b"an earlier export")
    (logdir / "notes.txt").write_text("the user's notes")
    with pytest.raises(errors.OutputError) as e:
        export.save_frozen(config, str(logdir), "efficientdet-d0", ckpt_dir)
    assert str(e.value) == (f"--logdir '{logdir}': '{old}' already exists; pass --overwrite to "
                            f"replace it, or choose another directory (nothing was written)")
    assert old.read_bytes() == b"an earlier export"
    path = export.save_frozen(config, str(logdir), "efficientdet-d0", ckpt_dir, overwrite=True)
    assert path == str(old) and tf1.GraphDef.FromString(old.read_bytes()).node
    assert sorted(os.listdir(logdir)) == ["efficientdet-d0_frozen.pb", "notes.txt"]  # no temp
    assert (logdir / "notes.txt").read_text() == "the user's notes"


def test_an_export_never_lands_on_the_checkpoint_it_reads(test_checkpoint, tmp_path):
    """Not even with overwrite: found before any graph is built (tf2onnx is not needed)."""
    ckpt_dir, config = test_checkpoint
    index = os.path.join(ckpt_dir, "model.ckpt-0.index")
    before = open(index, "rb").read()
    with pytest.raises(errors.OutputError) as e:
        export.export_onnx(config, index, ckpt_dir, overwrite=True)
    assert str(e.value).startswith(f"--onnx_path '{index}' is an input of this run "
                                   f"(--ckpt_path); choose another file name")
    with pytest.raises(errors.OutputError, match="'.*config.yaml' is an input of this run"):
        export.export_saved_model(config, str(tmp_path / "sm"), "efficientdet-d0", ckpt_dir,
                                  tflite_path=os.path.join(ckpt_dir, "config.yaml"),
                                  overwrite=True)
    assert open(index, "rb").read() == before
    assert not (tmp_path / "sm").exists()


@needs_onnx
def test_onnx_needs_hard_nms(tmp_path):
    config = tiny_config(**TINY)
    config.nms_configs.method = "gaussian"
    with pytest.raises(errors.ConfigError, match="nms_configs.method=hard"):
        export.export_onnx(config, str(tmp_path / "m.onnx"))


@needs_openvino
def test_openvino_export_writes_float32_ir_with_a_run_time_threshold(exported_models):
    xml = exported_models["openvino"]
    assert xml.endswith("openvino/m.xml") and os.path.isfile(xml[:-4] + ".bin")
    assert export.read_export_settings(xml) == exported_models["settings"]
    text = open(xml).read()
    assert 'element_type="f32"' in text and 'element_type="f16"' not in text  # not halved
    model = export.import_openvino().Core().read_model(xml)
    inputs = {name: port for port in model.inputs for name in port.get_names()}
    assert set(inputs) == {"image_arrays:0", "score_thresh:0"}
    assert str(inputs["image_arrays:0"].get_partial_shape()) == "[?,?,?,3]"
    assert model.get_rt_info(list(export.OPENVINO_RT_INFO)).astype(str) == "0.4"
    outputs = {name for port in model.outputs for name in port.get_names()}
    assert {f"{k}:0" for k in ("detections", "boxes", "scores", "classes",
                               "num_detections")} <= outputs


@needs_openvino
def test_openvino_is_imported_with_its_telemetry_off(exported_models):
    """OpenVINO's converter sends usage events to a web service unless its telemetry package
    is missing; export.import_openvino hides that package, so OpenVINO uses its no-op stub."""
    import sys

    export.import_openvino()
    from openvino.tools.ovc import telemetry_utils

    assert sys.modules["openvino_telemetry"] is None
    assert telemetry_utils.tm.__name__ == "openvino.tools.ovc.telemetry_stub"


def test_openvino_path_must_be_an_xml(tmp_path):
    with pytest.raises(errors.UsageError, match="must end in .xml"):
        export.write_openvino(tf1.GraphDef(), str(tmp_path / "m.bin"), {"score_thresh": 0.4})


def test_saved_model_holds_the_frozen_graph_so_it_runs_as_fast(exported_models):
    """Weights are constants, as in the .pb: a session does not read ~1660 variable ops per
    step and can fold batch norm and the fusion weights, so the SavedModel runs the frozen
    graph's ops (it ran 1.1x slower with variables)."""
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], exported_models["saved_model"])
        assert not tf1.global_variables()
    saved = {n.op for n in meta.graph_def.node}
    assert not saved & {"VarHandleOp", "VariableV2", "ReadVariableOp", "RestoreV2"}
    frozen = tf1.GraphDef()
    frozen.ParseFromString(open(exported_models["frozen"], "rb").read())
    assert sorted(n.name for n in meta.graph_def.node) == sorted(n.name for n in frozen.node)

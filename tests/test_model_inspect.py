"""model_inspect CLI: the seed README's commands as written (sections 3, 4 and 5, against a
checkpoint made here), every runmode through `model_inspect.run` in-process, options checked
before any graph is built (one line naming the flag), never writing over another run, and a few
subprocess smoke tests of the real command line (exit status, one-line errors)."""

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cli
import detectors
import errors
import export
import hparams_config
import inspect_options
import model_inspect
import run_dir
import serving
from conftest import (
    SHARED,
    STREET,
    TINY_HPARAMS,
    assert_same_detections,
    needs_onnx,
    needs_openvino,
    parse_inspect_flags,
    street,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TINY_HPARAMS


options = parse_inspect_flags


def inspect(*args):
    """Run model_inspect in-process; returns its exit status."""
    return model_inspect.run(options(*args))


def run_cli(*args, timeout=300, cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "model_inspect.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def no_graphs(monkeypatch):
    """Fail the test if a runmode starts building a graph."""
    def refuse(*args, **kwargs):
        raise AssertionError("a graph was built before the options were checked")

    monkeypatch.setattr(serving, "build_raw_network", refuse)
    monkeypatch.setattr(serving, "build_serving_graph", refuse)


# -------------------------------------------------------------------------------------------------
# Flags and options
# -------------------------------------------------------------------------------------------------
SEED_FLAGS = {
    "model_name": "efficientdet-d0", "logdir": "/tmp/deff/", "runmode": "dry", "hparams": "",
    "batch_size": 1, "bm_runs": 10, "threads": 0, "xla": False, "ckpt_path": None,
    "export_ckpt": None, "trace_filename": None, "input_image": None, "output_image_dir": None,
    "input_video": None, "output_video": None, "line_thickness": None,
    "max_boxes_to_draw": None, "min_score_thresh": None, "saved_model_dir": "/tmp/saved_model",
    "tflite_path": None, "onnx_path": None,
}
# Flags added after the seed: OpenVINO export and its inference precision, TFLite's fixed size,
# --overwrite, int8 calibration, saved_model_eval's and the timing results for scripts.
NEW_FLAGS = {"openvino_path": None, "openvino_precision": None, "tflite_input_size": None,
             "overwrite": False, "openvino_int8_calibration": None,
             "tflite_int8_calibration": None, "calibration_images": 300, "compare_to": None,
             "val_json_file": None, "image_dir": None, "results_json": None}


def test_every_flag_keeps_its_name_and_default():
    defaults = dataclasses.asdict(model_inspect.InspectOptions())
    assert defaults == {**SEED_FLAGS, **NEW_FLAGS, "verbose": False}
    assert dataclasses.asdict(options()) == defaults
    runmode = next(f for f in dataclasses.fields(model_inspect.InspectOptions)
                   if f.name == "runmode")
    assert runmode.metadata["choices"] == tuple(model_inspect.RUNMODES) == (
        "dry", "freeze", "bm", "ckpt", "infer", "saved_model", "saved_model_infer",
        "saved_model_benchmark", "saved_model_video", "onnx", "openvino", "saved_model_eval")


def test_every_flag_a_runmode_record_names_is_a_flag():
    """The records name flags as strings: each must be an InspectOptions field."""
    flags = {f.name for f in dataclasses.fields(model_inspect.InspectOptions)}
    for name, mode in inspect_options.RUNMODE_OPTIONS.items():
        named = set(mode.needs) | {o.flag for o in mode.writes} | set(mode.calibrates)
        named |= {target for target in mode.calibrates.values() if target}
        assert named and named <= flags, (name, named - flags)
        assert mode.default_suffix == "" or len(mode.writes) == 1, name


def test_config_comes_from_the_model_directory(test_checkpoint, exported_models, tmp_path,
                                               caplog):
    ckpt_dir, config = test_checkpoint
    assert run_dir.config_dir(ckpt_dir) == ckpt_dir
    assert run_dir.config_dir(os.path.join(ckpt_dir, "model.ckpt-0")) == ckpt_dir
    assert run_dir.config_dir(exported_models["frozen"]) == exported_models["saved_model"]
    assert run_dir.config_dir(exported_models["tflite"]) is None  # no config.yaml beside
    assert run_dir.config_dir(str(tmp_path)) is None
    assert run_dir.config_dir("_") is None and run_dir.config_dir(None) is None
    caplog.set_level("DEBUG", logger="absl")
    loaded = model_inspect.load_config(options("--runmode=bm", f"--ckpt_path={ckpt_dir}"))
    assert loaded.num_classes == 3 and loaded.fpn_num_filters == 16
    assert "config:\n" in caplog.text  # logged at DEBUG, shown with --verbose
    # An export knows its model, whatever --model_name says; --hparams apply on top.
    loaded = model_inspect.load_config(options(
        "--runmode=saved_model_infer", "--model_name=efficientdet-d3",
        f"--saved_model_dir={exported_models['saved_model']}",
        "--hparams=nms_configs.score_thresh=0.25"))
    assert loaded.name == "efficientdet-d0" and loaded.num_classes == 3
    assert loaded.nms_configs.score_thresh == 0.25


# -------------------------------------------------------------------------------------------------
# Errors: one line naming the flag, before any graph is built; bugs keep their traceback
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--runmode=bm", "--hparams=num_clases=3"], "unknown hparam key 'num_clases'"),
    (["--runmode=bm", "--hparams=fpn_num_filters=abc"], "'fpn_num_filters' expects int"),
    (["--runmode=bm", "--hparams=image_size=500"], "not divisible by 2**max_level = 128"),
    (["--runmode=bm", "--hparams=fpn_name=fpn"], "hparam 'fpn_name' got 'fpn'; valid values"),
])
def test_bad_hparams_are_one_clear_line(args, message, no_graphs):
    with pytest.raises(errors.UserError) as e:
        inspect(*args)
    assert message in str(e.value)


@pytest.mark.parametrize("args,message", [
    (["--runmode=freeze", "--ckpt_path=/nonexistent/ckpt"],
     "--ckpt_path: checkpoint '/nonexistent/ckpt' not found"),
    (["--runmode=saved_model_infer", "--saved_model_dir=/nonexistent/sm", "--input_image=x.jpg"],
     "--saved_model_dir '/nonexistent/sm' does not exist"),
    (["--runmode=infer"], "--runmode=infer needs --input_image"),
    (["--runmode=saved_model_video", "--saved_model_dir=."], "needs --input_video"),
    (["--runmode=ckpt", "--ckpt_path=_"], "--runmode=ckpt needs --ckpt_path"),
    (["--runmode=dry", "--batch_size=0"], "--batch_size must be >= 1 for --runmode=dry (0, a "
                                          "dynamic batch, is for the export runmodes"),
    (["--runmode=saved_model", "--batch_size=-1"], "--batch_size must be >= 0, got -1 "
                                                   "(allowed: [0, 65536])"),
    (["--runmode=bm", "--bm_runs=0"], "--bm_runs must be >= 1, got 0"),
    (["--runmode=saved_model_video", "--saved_model_dir=.", "--input_video=/nonexistent.mov"],
     "--input_video '/nonexistent.mov': no such file"),
    (["--runmode=saved_model", "--openvino_path=/tmp/x/model.bin"],
     "--openvino_path '/tmp/x/model.bin' must end in .xml (the weights go into the .bin"),
    (["--runmode=saved_model_infer", "--saved_model_dir=.", "--input_image=x.jpg",
      "--openvino_precision=bf16"], "--openvino_precision=bf16 applies to running an OpenVINO "
                                    "model: --runmode=saved_model_infer|saved_model_benchmark|"
                                    "saved_model_video|saved_model_eval with "
                                    "--saved_model_dir=<model>.xml"),
    (["--runmode=infer", "--input_image=x.jpg", "--openvino_precision=f32"],
     "--openvino_precision=f32 applies to running an OpenVINO model"),
    (["--runmode=saved_model", "--tflite_input_size=1024x636"],
     "--tflite_input_size applies to --runmode=saved_model with --tflite_path"),
    (["--runmode=saved_model", "--tflite_path=/tmp/x/m.tflite", "--batch_size=0",
      "--tflite_input_size=1024x636"], "--tflite_input_size needs --batch_size >= 1"),
    (["--runmode=saved_model", "--tflite_path=/tmp/x/m.tflite", "--tflite_input_size=big"],
     "--tflite_input_size 'big' must look like WxH, e.g. 1280x720"),
    (["--runmode=dry", "--results_json=/tmp/x/r.json"],
     "--results_json applies to --runmode=bm or --runmode=saved_model_benchmark"),
    (["--runmode=infer", "--input_image=x.jpg", "--trace_filename=/tmp/x/t.json"],
     "--trace_filename applies to --runmode=bm or --runmode=saved_model_benchmark"),
])
def test_bad_options_are_one_clear_line(args, message, no_graphs):
    with pytest.raises(errors.UsageError) as e:
        inspect(*args)
    assert message in str(e.value)


@pytest.mark.parametrize("flag,runmode,kind", [
    ("output_image_dir", "infer", "directory"),
    ("output_image_dir", "saved_model_infer", "directory"),
    ("logdir", "dry", "directory"),
    ("logdir", "freeze", "directory"),
    ("saved_model_dir", "saved_model", "directory"),
    ("tflite_path", "saved_model", "file name"),
    ("onnx_path", "onnx", "file name"),
    ("openvino_path", "openvino", "file name"),
    ("output_video", "saved_model_video", "file name"),
    ("trace_filename", "bm", "file name"),
    ("trace_filename", "saved_model_benchmark", "file name"),
    ("results_json", "bm", "file name"),
    ("results_json", "saved_model_benchmark", "file name"),
])
def test_unwritable_outputs_name_the_flag(flag, runmode, kind, exported_models, tmp_path,
                                          no_graphs):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file")
    target = str(blocker / "out")
    args = [f"--runmode={runmode}", f"--{flag}={target}", f"--input_image={STREET}",
            f"--input_video={STREET}"]
    if runmode.startswith("saved_model_"):
        args.append(f"--saved_model_dir={exported_models['saved_model']}")
    elif flag != "saved_model_dir":
        args.append(f"--saved_model_dir={tmp_path / 'new_export'}")
    with pytest.raises(errors.OutputError) as e:
        inspect(*args)
    assert str(e.value) == (f"--{flag} '{target}' cannot be created: '{blocker}' is a file, not "
                            f"a directory; choose another {kind}")


def test_export_ckpt_under_a_file_names_the_flag(test_checkpoint, tmp_path, no_graphs):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(errors.OutputError, match="--export_ckpt '.*afile/dir/model' cannot be "
                                                 "created: '.*afile' is a file"):
        inspect("--runmode=ckpt", f"--ckpt_path={test_checkpoint[0]}",
                f"--export_ckpt={tmp_path}/afile/dir/model")


def test_never_writes_over_another_run(test_checkpoint, exported_models, no_graphs):
    ckpt_dir = test_checkpoint[0]
    before = {n: os.path.getmtime(os.path.join(ckpt_dir, n)) for n in os.listdir(ckpt_dir)}
    for args in (["--runmode=dry"], ["--runmode=freeze", f"--ckpt_path={ckpt_dir}"]):
        with pytest.raises(errors.OutputError) as e:
            inspect(*args, f"--logdir={ckpt_dir}")
        assert str(e.value) == (f"--logdir '{ckpt_dir}' already holds checkpoint, config.yaml, "
                                f"model.ckpt-0.index of another run; choose a new or empty "
                                f"directory (nothing was overwritten)")
    with pytest.raises(errors.OutputError, match="--export_ckpt '.*' already holds checkpoint"):
        inspect("--runmode=ckpt", f"--ckpt_path={ckpt_dir}", f"--export_ckpt={ckpt_dir}/ema")
    sm = exported_models["saved_model"]
    with pytest.raises(errors.OutputError, match=f"--saved_model_dir '{sm}' already exists and "
                                                f"is not empty"):
        inspect("--runmode=saved_model", f"--saved_model_dir={sm}")
    assert before == {n: os.path.getmtime(os.path.join(ckpt_dir, n)) for n in os.listdir(ckpt_dir)}


def test_a_text_file_given_as_video_is_one_line(exported_models, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}: notes about the experiment\n" for i in range(200)))
    with pytest.raises(errors.DataError, match=f"'{notes}' is a text file, not a video"):
        inspect("--runmode=saved_model_video", f"--saved_model_dir={exported_models['frozen']}",
                f"--input_video={notes}", f"--output_video={tmp_path}/out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_checkpoint_from_another_model_is_clear(test_checkpoint, tmp_path, no_graphs):
    # The checkpoint without its config.yaml, as downloaded checkpoints come: found from its
    # variable shapes before any graph is built.
    bare = tmp_path / "bare"
    shutil.copytree(test_checkpoint[0], bare, ignore=shutil.ignore_patterns("config.yaml"))
    with pytest.raises(errors.CheckpointError) as e:
        inspect("--runmode=freeze", f"--logdir={tmp_path / 'f'}",
                f"--hparams={TINY.replace('num_classes=3', 'num_classes=5')}",
                f"--ckpt_path={bare}")
    assert "holds a custom efficientnet-b0 detector" in str(e.value)
    assert "has 5 classes; pass --hparams=num_classes=3" in str(e.value)


def test_score_and_box_flags_have_the_ranges_of_the_hparams_they_replace():
    fields = {f.name: f for f in dataclasses.fields(model_inspect.InspectOptions)}
    for flag, key in (("min_score_thresh", "nms_configs.score_thresh"),
                      ("max_boxes_to_draw", "nms_configs.max_output_size")):
        assert str(fields[flag].metadata["bounds"]) == hparams_config._RANGES[key][0]


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(export, "save_frozen", broken)
    opts = options("--runmode=freeze", f"--logdir={tmp_path}", f"--hparams={TINY}")
    with pytest.raises(ValueError, match="boom"):
        model_inspect.run(opts)
    with pytest.raises(ValueError, match="boom"):  # not a SystemExit with one line
        cli.run_and_report(model_inspect.PROG, model_inspect.run, opts)


def test_a_user_error_is_one_line_and_status_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run_and_report(model_inspect.PROG, model_inspect.run,
                           options("--runmode=infer", f"--hparams={TINY}"))
    assert e.value.code == "model_inspect.py: error: --runmode=infer needs --input_image"


# -------------------------------------------------------------------------------------------------
# Subprocess smoke tests: the real command line
# -------------------------------------------------------------------------------------------------
def test_seed_bm_command_verbatim():
    r = run_cli("--runmode=bm", "--model_name=efficientdet-d0")
    assert r.returncode == 0, r.stderr
    assert "efficientdet-d0 (vfpn, float32, batch 1, 10 runs): per image mean" in r.stdout
    assert "params 4.312M, FLOPs 3.024B" in r.stdout
    assert "Traceback" not in r.stderr and "config:" not in r.stderr  # only with --verbose


def test_errors_exit_with_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli("--runmode=infer", f"--input_image={STREET}",
                f"--output_image_dir={tmp_path}/afile/out", timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"model_inspect.py: error: --output_image_dir '{tmp_path}/afile/out' cannot be created: "
        f"'{tmp_path}/afile' is a file, not a directory; choose another directory")
    r = run_cli("--runmode=serve", timeout=60)
    assert r.returncode != 0
    assert "dry" in r.stderr and "freeze" in r.stderr and "saved_model_video" in r.stderr


# -------------------------------------------------------------------------------------------------
# The seed README's commands, sections 3-5, as written
# -------------------------------------------------------------------------------------------------
SEED_README = os.path.join(SHARED, "reference", "seed_readme.md")


def seed_commands(section):
    """The `python model_inspect.py ...` commands of a seed README section, as argument lists
    (continuation lines joined; a trailing backslash before a blank line ends the command)."""
    text = open(SEED_README, encoding="utf-8").read()
    start = text.index(f"## {section}.")
    end = text.index("\n## ", start + 1)
    commands, current = [], None
    for line in text[start:end].splitlines():
        stripped = line.strip()
        if current is not None:
            if not stripped:
                commands.append(current)
                current = None
                continue
            current += " " + stripped.rstrip("\\")
            if not stripped.endswith("\\"):
                commands.append(current)
                current = None
        elif stripped.startswith("!python model_inspect.py"):
            current = stripped.rstrip("\\")
            if not stripped.endswith("\\"):
                commands.append(current)
                current = None
    if current is not None:
        commands.append(current)
    return [shlex.split(c)[2:] for c in commands]


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory, test_checkpoint):
    """A working directory laid out for the seed commands: the checkpoint directory
    `efficientdet-d0` (tiny model, config.yaml inside), testdata/img1.jpg, img.png and a short
    input.mov. Their /tmp/ paths are redirected into <dir>/tmp/."""
    root = tmp_path_factory.mktemp("seed")
    shutil.copytree(test_checkpoint[0], root / "efficientdet-d0")
    (root / "testdata").mkdir()
    shutil.copy(STREET, root / "testdata" / "img1.jpg")
    Image.open(STREET).save(root / "img.png")
    import cv2

    writer = cv2.VideoWriter(str(root / "input.mov"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (160, 120))
    frame = street(160, 120)[..., ::-1]
    for i in range(6):
        writer.write(np.ascontiguousarray(np.roll(frame, 8 * i, axis=1)))
    writer.release()
    (root / "tmp").mkdir()
    return root


def in_seed_dir(args, root):
    return [a.replace("/tmp/", f"{root}/tmp/") for a in args]


def run_seed(args, root, monkeypatch, capsys):
    """Run a seed command in-process in `root`; returns (stdout, stderr)."""
    monkeypatch.chdir(root)
    assert inspect(*in_seed_dir(args, root)) == 0
    return capsys.readouterr()


def shows_boxes(output_path, original):
    """True if the annotated output differs from the original by drawn lines, not only by
    compression noise."""
    out = np.asarray(Image.open(output_path).convert("RGB"), np.int16)
    assert out.shape == original.shape
    strong = (np.abs(out - original.astype(np.int16)).max(axis=2) > 80).mean()
    return strong > 0.002


def test_seed_section_3_end_to_end_latency(seed_dir, checkpoint_detector, monkeypatch, capsys):
    commands = seed_commands(3)
    assert [c[0] for c in commands] == ["--runmode=bm", "--runmode=saved_model",
                                        "--runmode=saved_model_benchmark"]
    # commands[0] (bm on the full d0) is test_seed_bm_command_verbatim.
    out, _ = run_seed(commands[1], seed_dir, monkeypatch, capsys)
    assert "wrote frozen graph" in out
    frozen = seed_dir / "tmp" / "benchmark" / "efficientdet-d0_frozen.pb"
    assert frozen.exists() and (seed_dir / "tmp" / "benchmark" / "saved_model.pb").exists()
    out, _ = run_seed(commands[2], seed_dir, monkeypatch, capsys)
    assert re.search(r"end-to-end \(pre-processing \+ network \+ NMS; 1024x636 uint8 input, "
                     r"batch 1, 10 runs\): per image mean [\d.]+ ms, median [\d.]+ ms, "
                     r"[\d.]+ FPS", out), out
    assert shows_boxes(seed_dir / "tmp" / "img1.jpg", street())  # named after testdata/img1.jpg
    # The static-batch export (batch 1, the seed default) agrees with checkpoint inference too.
    want = checkpoint_detector.predict(street()[None])[0]
    assert len(want) > 0
    for path in (frozen, seed_dir / "tmp" / "benchmark"):
        with detectors.load_detector(str(path)) as det:
            assert det.batch_size == 1
            assert_same_detections(want, det.predict(street()[None])[0], str(path))


@pytest.mark.heavy
def test_seed_section_4_image_inference_at_1920x1280(seed_dir):
    """The export + saved_model_infer smoke test: two real processes, commands as written."""
    export_cmd, infer_cmd = seed_commands(4)
    assert "--hparams=image_size=1920x1280" in export_cmd and "--input_image=img.png" in infer_cmd
    r = run_cli(*in_seed_dir(export_cmd, seed_dir), cwd=str(seed_dir))
    assert r.returncode == 0, r.stderr
    assert "wrote SavedModel" in r.stdout
    out = seed_dir / "tmp" / "img.jpg"  # named after img.png
    r = run_cli(*in_seed_dir(infer_cmd, seed_dir), cwd=str(seed_dir))
    assert r.returncode == 0, r.stderr
    n = int(re.search(r"img.png: (\d+) detections: class \d", r.stdout).group(1))
    assert n > 0
    assert shows_boxes(out, street())
    settings = (seed_dir / "tmp" / "saved_model" / "export_settings.yaml").read_text()
    assert "image_size:\n- 1280\n- 1920" in settings


def test_seed_section_5_video(seed_dir, monkeypatch, capsys):
    export_cmd, show, save = seed_commands(5)
    assert "--output_video=output.mov" in save and "--output_video" not in " ".join(show)
    run_seed(export_cmd, seed_dir, monkeypatch, capsys)
    out, err = run_seed(show, seed_dir, monkeypatch, capsys)  # no display: a clear message
    assert "cannot show the frames" in err and "--output_video" in err
    assert "processed 6 frames of input.mov" in out
    out, _ = run_seed(save, seed_dir, monkeypatch, capsys)
    assert "wrote output.mov" in out
    import cv2

    capture = cv2.VideoCapture(str(seed_dir / "output.mov"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    assert len(frames) == 6 and frames[0].shape == (120, 160, 3)
    first = np.asarray(Image.fromarray(frames[0]).convert("RGB"))
    assert (np.abs(first.astype(np.int16) - street(160, 120)).max(axis=2) > 80).mean() > 0.002


def test_seed_bm_command_mixed_float16(capsys):
    """The seed's V100 variant, on the tiny model (full size is benchmarks/bench_model.py)."""
    assert inspect("--runmode=bm", "--model_name=efficientdet-d0",
                   f"--hparams=precision=mixed-float16,{TINY}", "--bm_runs=2") == 0
    assert "(vfpn, mixed_float16, batch 1, 2 runs)" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------------
# Other runmodes
# -------------------------------------------------------------------------------------------------
def test_dry_then_freeze_from_its_checkpoint(tmp_path, capsys):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    keep = logdir / "user_notes.txt"
    keep.write_text("mine")
    assert inspect("--runmode=dry", "--model_name=efficientdet-d0", f"--logdir={logdir}",
                   f"--hparams={TINY}") == 0
    assert (logdir / "efficientdet-d0.index").exists()
    assert (logdir / "efficientdet-d0_train.pb").exists()
    assert (logdir / "config.yaml").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())
    assert keep.read_text() == "mine"  # never deletes what it did not create
    out = tmp_path / "frozen"
    assert inspect("--runmode=freeze", "--model_name=efficientdet-d0", f"--logdir={out}",
                   f"--ckpt_path={logdir / 'efficientdet-d0'}") == 0  # hparams: its config.yaml
    assert f"wrote frozen graph {out}/efficientdet-d0_frozen.pb" in capsys.readouterr().out
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((out / "efficientdet-d0_frozen.pb").read_bytes())
    assert "VarHandleOp" not in {n.op for n in graph_def.node}
    names = {n.name for n in graph_def.node}
    assert {"input", "cls_outputs_3", "box_outputs_7"} <= names
    assert not any(n.startswith("class_outputs") for n in names)


def test_bm_with_checkpoint_batch_and_trace(test_checkpoint, tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert inspect("--runmode=bm", "--batch_size=2", "--bm_runs=2", "--threads=1",
                   f"--ckpt_path={test_checkpoint[0]}", f"--trace_filename={trace}") == 0
    assert "efficientdet-d0 (vfpn, float32, batch 2, 2 runs)" in capsys.readouterr().out
    assert trace.read_text().startswith("{")


def test_bm_results_json_holds_the_printed_numbers_and_is_never_replaced_unasked(tmp_path,
                                                                               capsys):
    results = tmp_path / "bm.json"
    assert inspect("--runmode=bm", f"--hparams={TINY}", "--batch_size=2", "--bm_runs=2",
                   f"--results_json={results}") == 0
    line = capsys.readouterr().out
    got = json.loads(results.read_text())
    assert set(got) == {"model_name", "fpn_name", "precision", "batch_size", "runs",
                        "mean_batch_s", "median_batch_s", "params", "flops_per_image",
                        "mean_image_ms", "median_image_ms", "fps"}
    assert (got["model_name"], got["fpn_name"], got["batch_size"], got["runs"]) == (
        "efficientdet-d0", "vfpn", 2, 2)
    assert got["median_image_ms"] == pytest.approx(1000 * got["median_batch_s"] / 2)
    assert (f"per image mean {got['mean_image_ms']:.2f} ms, median "
            f"{got['median_image_ms']:.2f} ms, {got['fps']:.2f} FPS; params "
            f"{got['params'] / 1e6:.3f}M, FLOPs {got['flops_per_image'] / 1e9:.3f}B") in line
    before = results.read_text()
    with pytest.raises(errors.OutputError, match=f"--results_json '{results}' already exists; "
                                                 f"pass --overwrite"):
        inspect("--runmode=bm", f"--hparams={TINY}", "--bm_runs=1", f"--results_json={results}")
    assert results.read_text() == before
    assert inspect("--runmode=bm", f"--hparams={TINY}", "--bm_runs=1", "--overwrite",
                   f"--results_json={results}") == 0
    assert json.loads(results.read_text())["runs"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["bm.json"]  # no temporary file left


def test_saved_model_benchmark_results_json(exported_models, tmp_path, capsys):
    results = tmp_path / "sub" / "e2e.json"
    assert inspect("--runmode=saved_model_benchmark",
                   f"--saved_model_dir={exported_models['frozen']}", f"--input_image={STREET}",
                   "--bm_runs=1", f"--results_json={results}") == 0
    line = capsys.readouterr().out
    got = json.loads(results.read_text())
    assert set(got) == {"model", "batch_size", "runs", "mean_batch_s", "median_batch_s",
                        "image_size", "note", "mean_image_ms", "median_image_ms", "fps"}
    assert (got["model"], got["batch_size"], got["runs"], got["image_size"]) == (
        exported_models["frozen"], 1, 1, [636, 1024])
    assert f"median {got['median_image_ms']:.2f} ms, {got['fps']:.2f} FPS" in line


def test_infer_reports_bad_inputs_by_name_and_processes_the_rest(test_checkpoint, tmp_path,
                                                                 capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(STREET, src / "a.jpg")
    Image.open(STREET).convert("L").save(src / "b_gray.jpg")
    (src / "c_corrupt.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert inspect("--runmode=infer", f"--ckpt_path={test_checkpoint[0]}",
                   f"--input_image={src}/*.jpg,{src}/missing.png", f"--output_image_dir={out}",
                   "--min_score_thresh=0.5", "--max_boxes_to_draw=5",
                   "--line_thickness=3") == 1
    captured = capsys.readouterr()
    assert "c_corrupt.jpg': cannot decode it as an image" in captured.err
    assert "missing.png': no such file" in captured.err
    assert "2 input(s) failed" in captured.err
    assert "processed 2 image(s)" in captured.out
    assert "score threshold 0.5, at most 5 detections" in captured.out
    assert sorted(os.listdir(out)) == ["a.jpg", "b_gray.jpg"]
    assert shows_boxes(out / "a.jpg", street())


def test_infer_without_checkpoint_says_random_weights(tmp_path, capsys):
    image = tmp_path / "img.jpg"
    Image.fromarray(street(256, 160)).save(image)
    assert inspect("--runmode=infer", f"--hparams={TINY}", f"--input_image={image}") == 0
    captured = capsys.readouterr()
    assert "no --ckpt_path: running with random weights" in captured.err
    assert "processed 1 image(s)" in captured.out


def test_ckpt_runmode_exports_an_ema_folded_checkpoint(test_checkpoint, tmp_path, capsys):
    out = tmp_path / "folded" / "model"
    assert inspect("--runmode=ckpt", f"--ckpt_path={test_checkpoint[0]}",
                   f"--export_ckpt={out}") == 0
    printed = capsys.readouterr().out
    assert "(EMA values)" in printed and f"wrote checkpoint {out}" in printed
    reader = tf.train.load_checkpoint(str(out))
    np.testing.assert_array_equal(
        reader.get_tensor("class_net/class-predict/bias"),
        reader.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage"))
    assert tf.train.latest_checkpoint(str(out.parent)) == str(out)


@needs_onnx
def test_onnx_runmode_and_running_the_onnx_file(test_checkpoint, tmp_path, capsys):
    onnx_path = tmp_path / "d0.onnx"
    assert inspect("--runmode=onnx", f"--ckpt_path={test_checkpoint[0]}",
                   f"--onnx_path={onnx_path}", "--batch_size=0") == 0
    assert onnx_path.exists() and "input image_arrays:0" in capsys.readouterr().out
    assert hparams_config.Config.load_from_yaml(
        export.settings_path(str(onnx_path)))["batch_size"] == "dynamic"
    assert inspect("--runmode=saved_model_infer", f"--saved_model_dir={onnx_path}",
                   f"--ckpt_path={test_checkpoint[0]}", f"--input_image={STREET}",
                   f"--output_image_dir={tmp_path}") == 0
    printed = capsys.readouterr().out
    assert int(re.search(r"street.jpg: (\d+) detections", printed).group(1)) > 0


@pytest.mark.heavy
@needs_openvino
def test_openvino_export_and_every_exported_model_runmode(seed_dir, test_checkpoint,
                                                         checkpoint_detector, tmp_path, capsys):
    """--runmode=saved_model --openvino_path writes IR beside the SavedModel; the .xml runs in
    saved_model_infer, saved_model_benchmark (precision in the line) and saved_model_video."""
    ckpt = test_checkpoint[0]
    xml = tmp_path / "ov" / "d0.xml"
    assert inspect("--runmode=saved_model", f"--ckpt_path={ckpt}",
                   f"--saved_model_dir={tmp_path / 'sm'}", f"--openvino_path={xml}") == 0
    assert f"wrote OpenVINO model {xml} (+ .bin" in capsys.readouterr().out
    with detectors.load_detector(str(xml)) as det:
        assert det.batch_size == 1
        assert_same_detections(checkpoint_detector.predict(street()[None])[0],
                               det.predict(street()[None])[0], "openvino batch 1")
    assert inspect("--runmode=saved_model_infer", f"--saved_model_dir={xml}",
                   f"--input_image={STREET}", f"--output_image_dir={tmp_path / 'out'}",
                   "--min_score_thresh=0.2", f"--ckpt_path={ckpt}") == 0
    printed = capsys.readouterr().out
    assert f"model {xml}: OpenVINO " in printed
    assert int(re.search(r"street.jpg: (\d+) detections", printed).group(1)) > 0
    assert shows_boxes(tmp_path / "out" / "street.jpg", street())
    assert inspect("--runmode=saved_model_benchmark", f"--saved_model_dir={xml}",
                   f"--input_image={STREET}", "--bm_runs=2", "--openvino_precision=bf16") == 0
    line = capsys.readouterr().out
    assert re.search(r"batch 1, 2 runs\): per image mean [\d.]+ ms, median [\d.]+ ms, [\d.]+ FPS; "
                     r"OpenVINO [\d.]+, inference precision (f32 \(bf16 requested; this CPU "
                     r"offers .*no native bf16\)|bf16)$", line.strip()), line
    assert inspect("--runmode=saved_model_video", f"--saved_model_dir={xml}",
                   f"--input_video={seed_dir / 'input.mov'}",
                   f"--output_video={tmp_path / 'out.mp4'}") == 0
    assert "processed 6 frames of" in capsys.readouterr().out
    assert (tmp_path / "out.mp4").stat().st_size > 0


@needs_openvino
def test_openvino_runmode_writes_a_dynamic_batch_model(test_checkpoint, tmp_path, capsys):
    out = tmp_path / "sm_dir"
    assert inspect("--runmode=openvino", f"--ckpt_path={test_checkpoint[0]}",
                   f"--saved_model_dir={out}", "--batch_size=0") == 0
    xml = out / "efficientdet-d0.xml"  # the default: <saved_model_dir>/<model_name>.xml
    assert f"wrote OpenVINO model {xml}" in capsys.readouterr().out
    assert (out / "efficientdet-d0.bin").exists()
    assert export.read_export_settings(str(xml))["batch_size"] == "dynamic"
    with detectors.load_detector(str(xml)) as det:
        assert det.batch_size is None
        assert len(det.predict(np.stack([street(256, 160)] * 3))) == 3

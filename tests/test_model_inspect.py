"""model_inspect CLI: the seed README's commands (sections 3, 4 and 5, run as written against a
checkpoint made here), dry and freeze outputs, image/video/export runmodes, clear bad-input
errors."""

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

import detectors
import hparams_config
from conftest import (
    SHARED,
    STREET,
    assert_same_detections,
    make_test_checkpoint,
    needs_onnx,
    street,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "image_size=128,fpn_num_filters=16,fpn_cell_repeats=2,box_class_repeats=1,num_classes=3"


def run(*args, timeout=300, cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "model_inspect.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_seed_bm_command_verbatim():
    r = run("--runmode=bm", "--model_name=efficientdet-d0")
    assert r.returncode == 0, r.stderr
    assert "efficientdet-d0 (vfpn, float32, batch 1, 10 runs): per image mean" in r.stdout
    assert "params 4.312M, FLOPs 3.024B" in r.stdout


def test_seed_bm_command_mixed_float16():
    r = run("--runmode=bm", "--model_name=efficientdet-d0", "--hparams=precision=mixed-float16")
    assert r.returncode == 0, r.stderr
    assert "(vfpn, mixed_float16, batch 1, 10 runs)" in r.stdout


def test_dry_then_freeze_from_its_checkpoint(tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    keep = logdir / "user_notes.txt"
    keep.write_text("mine")
    r = run("--runmode=dry", "--model_name=efficientdet-d0", f"--logdir={logdir}",
            f"--hparams={TINY}")
    assert r.returncode == 0, r.stderr
    assert (logdir / "efficientdet-d0.index").exists()
    assert (logdir / "efficientdet-d0_train.pb").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())
    assert keep.read_text() == "mine"  # never deletes what it did not create
    out = tmp_path / "frozen"
    r = run("--runmode=freeze", "--model_name=efficientdet-d0", f"--logdir={out}",
            f"--hparams={TINY}", f"--ckpt_path={logdir / 'efficientdet-d0'}")
    assert r.returncode == 0, r.stderr
    frozen = out / "efficientdet-d0_frozen.pb"
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(frozen.read_bytes())
    ops = {n.op for n in graph_def.node}
    assert "VarHandleOp" not in ops and "Const" in ops
    names = {n.name for n in graph_def.node}
    assert {"input", "cls_outputs_3", "box_outputs_7"} <= names


def test_bm_with_checkpoint_batch_and_trace(tmp_path):
    r = run("--runmode=dry", "--model_name=efficientdet-d0", f"--logdir={tmp_path}",
            f"--hparams={TINY}")
    assert r.returncode == 0, r.stderr
    trace = tmp_path / "trace.json"
    r = run("--runmode=bm", "--model_name=efficientdet-d0", f"--hparams={TINY}",
            "--batch_size=2", "--bm_runs=2", "--threads=1", f"--ckpt_path={tmp_path}",
            f"--trace_filename={trace}")
    assert r.returncode == 0, r.stderr
    assert "batch 2, 2 runs" in r.stdout
    assert trace.read_text().startswith("{")


@pytest.mark.parametrize("args,message", [
    (["--runmode=bm", "--hparams=num_clases=3"], "unknown hparam key 'num_clases'"),
    (["--runmode=bm", "--hparams=fpn_num_filters=abc"], "'fpn_num_filters' expects int"),
    (["--runmode=bm", "--hparams=image_size=500"], "not divisible by 2**max_level = 128"),
    (["--runmode=bm", "--hparams=fpn_name=fpn"], "unknown fpn_name 'fpn'; valid names"),
    (["--runmode=train"], "--runmode"),
    (["--runmode=freeze", "--ckpt_path=/nonexistent/ckpt", f"--hparams={TINY}"],
     "checkpoint '/nonexistent/ckpt' not found"),
    (["--runmode=saved_model_infer", "--saved_model_dir=/nonexistent/sm", "--input_image=x.jpg"],
     "--saved_model_dir '/nonexistent/sm' does not exist"),
    (["--runmode=infer", f"--hparams={TINY}"], "--runmode=infer needs --input_image"),
    (["--runmode=dry", "--batch_size=0", f"--hparams={TINY}"], "--batch_size must be >= 1"),
])
def test_bad_input_is_one_clear_line(args, message):
    r = run(*args, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert message in r.stderr


def test_unknown_runmode_lists_valid_ones():
    r = run("--runmode=serve", timeout=60)
    assert r.returncode != 0
    assert "dry" in r.stderr and "freeze" in r.stderr and "bm" in r.stderr


def test_checkpoint_from_another_model_is_clear(tmp_path):
    r = run("--runmode=dry", f"--logdir={tmp_path}", f"--hparams={TINY}")
    assert r.returncode == 0, r.stderr
    r = run("--runmode=freeze", f"--logdir={tmp_path / 'f'}",
            f"--hparams={TINY.replace('num_classes=3', 'num_classes=5')}",
            f"--ckpt_path={tmp_path}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "does not fit this model" in r.stderr and "class-predict" in r.stderr


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
def seed_dir(tmp_path_factory):
    """A working directory laid out for the seed commands: the checkpoint directory
    `efficientdet-d0` (tiny model, config.yaml inside), testdata/img1.jpg, img.png and a short
    input.mov. Their /tmp/ paths are redirected into <dir>/tmp/."""
    root = tmp_path_factory.mktemp("seed")
    make_test_checkpoint(str(root / "efficientdet-d0"))
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


def run_seed(args, root):
    args = [a.replace("/tmp/", f"{root}/tmp/") for a in args]
    r = run(*args, cwd=str(root))
    assert r.returncode == 0, f"{args}\n{r.stderr[-3000:]}"
    return r


def shows_boxes(output_path, original):
    """True if the annotated output differs from the original by drawn lines, not only by
    compression noise."""
    out = np.asarray(Image.open(output_path).convert("RGB"), np.int16)
    assert out.shape == original.shape
    strong = (np.abs(out - original.astype(np.int16)).max(axis=2) > 80).mean()
    return strong > 0.002


def test_seed_section_3_end_to_end_latency(seed_dir):
    commands = seed_commands(3)
    assert [c[0] for c in commands] == ["--runmode=bm", "--runmode=saved_model",
                                        "--runmode=saved_model_benchmark"]
    # commands[0] (bm on the full d0) is test_seed_bm_command_verbatim.
    r = run_seed(commands[1], seed_dir)
    assert "wrote frozen graph" in r.stdout
    frozen = seed_dir / "tmp" / "benchmark" / "efficientdet-d0_frozen.pb"
    assert frozen.exists() and (seed_dir / "tmp" / "benchmark" / "saved_model.pb").exists()
    r = run_seed(commands[2], seed_dir)
    assert re.search(r"end-to-end \(pre-processing \+ network \+ NMS; 1024x636 uint8 input, "
                     r"batch 1, 10 runs\): per image mean [\d.]+ ms, median [\d.]+ ms, "
                     r"[\d.]+ FPS", r.stdout), r.stdout
    assert shows_boxes(seed_dir / "tmp" / "0.jpg", street())
    # The static-batch export (batch 1, the seed default) agrees with checkpoint inference too.
    config = hparams_config.load_run_config("efficientdet-d0", "",
                                            str(seed_dir / "efficientdet-d0"))
    with detectors.CheckpointDetector(config, str(seed_dir / "efficientdet-d0")) as det:
        want = det.predict(street()[None])[0]
    assert len(want) > 0
    for path in (frozen, seed_dir / "tmp" / "benchmark"):
        with detectors.load_detector(str(path)) as det:
            assert det.batch_size == 1
            assert_same_detections(want, det.predict(street()[None])[0], str(path))


def test_seed_section_4_image_inference_at_1920x1280(seed_dir):
    export, infer = seed_commands(4)
    assert "--hparams=image_size=1920x1280" in export and "--input_image=img.png" in infer
    r = run_seed(export, seed_dir)
    assert "wrote SavedModel" in r.stdout
    out = seed_dir / "tmp" / "0.jpg"
    if out.exists():
        out.unlink()
    r = run_seed(infer, seed_dir)
    n = int(re.search(r"img.png: (\d+) detections", r.stdout).group(1))
    assert n > 0
    assert shows_boxes(out, street())
    settings = (seed_dir / "tmp" / "saved_model" / "export_settings.yaml").read_text()
    assert "image_size:\n- 1280\n- 1920" in settings


def test_seed_section_5_video(seed_dir):
    export, show, save = seed_commands(5)
    assert "--output_video=output.mov" in save and "--output_video" not in " ".join(show)
    run_seed(export, seed_dir)
    r = run_seed(show, seed_dir)  # no display here: a clear message, detection still runs
    assert "cannot show the frames" in r.stderr and "--output_video" in r.stderr
    assert "processed 6 frames of input.mov" in r.stdout
    r = run_seed(save, seed_dir)
    assert "wrote output.mov" in r.stdout
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


# -------------------------------------------------------------------------------------------------
# Other runmodes
# -------------------------------------------------------------------------------------------------
def test_infer_reports_bad_inputs_by_name_and_processes_the_rest(seed_dir, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(STREET, src / "a.jpg")
    Image.open(STREET).convert("L").save(src / "b_gray.jpg")
    (src / "c_corrupt.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = run("--runmode=infer", f"--ckpt_path={seed_dir / 'efficientdet-d0'}",
            f"--input_image={src}/*.jpg,{src}/missing.png", f"--output_image_dir={out}",
            "--min_score_thresh=0.5", "--max_boxes_to_draw=5", "--line_thickness=3")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "c_corrupt.jpg': cannot decode it as an image" in r.stderr
    assert "missing.png': no such file" in r.stderr
    assert "2 input(s) failed" in r.stderr
    assert "processed 2 image(s)" in r.stdout
    assert "score threshold 0.5, at most 5 detections" in r.stdout
    assert sorted(os.listdir(out)) == ["0.jpg", "1.jpg"]
    assert shows_boxes(out / "0.jpg", street())


def test_ckpt_runmode_exports_an_ema_folded_checkpoint(seed_dir, tmp_path):
    out = tmp_path / "folded" / "model"
    r = run("--runmode=ckpt", f"--ckpt_path={seed_dir / 'efficientdet-d0'}",
            f"--export_ckpt={out}")
    assert r.returncode == 0, r.stderr
    assert "(EMA values)" in r.stdout and f"wrote checkpoint {out}" in r.stdout
    reader = tf.train.load_checkpoint(str(out))
    np.testing.assert_array_equal(
        reader.get_tensor("class_net/class-predict/bias"),
        reader.get_tensor("class_net/class-predict/bias/ExponentialMovingAverage"))
    assert tf.train.latest_checkpoint(str(out.parent)) == str(out)


@needs_onnx
def test_onnx_runmode_and_running_the_onnx_file(seed_dir, tmp_path):
    onnx_path = tmp_path / "d0.onnx"
    r = run("--runmode=onnx", f"--ckpt_path={seed_dir / 'efficientdet-d0'}",
            f"--onnx_path={onnx_path}", "--batch_size=0")
    assert r.returncode == 0, r.stderr
    assert onnx_path.exists() and "input image_arrays:0" in r.stdout
    r = run("--runmode=saved_model_infer", f"--saved_model_dir={onnx_path}",
            f"--input_image={STREET}", f"--output_image_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert int(re.search(r"street.jpg: (\d+) detections", r.stdout).group(1)) > 0

"""model_inspect CLI: the seed's bm commands, dry and freeze outputs, clear bad-input errors."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "image_size=128,fpn_num_filters=16,fpn_cell_repeats=2,box_class_repeats=1,num_classes=3"


def run(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "model_inspect.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


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
    assert {"input", "class_outputs_3", "box_outputs_7"} <= names


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

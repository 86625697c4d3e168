"""main.py as a command: the CLI smoke tests (flags, output, exit status) and what only a
separate process can show (a SIGKILL mid-run, several processes). The behaviour behind each
mode is tested in-process in test_trainer.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import tiny_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # main.py must quiet TensorFlow by itself
PATTERN = "--training_file_pattern=tfrecord/pascal*.tfrecord"


def _main(args, cwd, timeout=420, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          env=env or ENV, capture_output=True, text=True, timeout=timeout)


def test_user_error_is_one_line_and_nothing_is_created(voc_records, tmp_path):
    missing = tmp_path / "never-trained"
    r = _main(["--mode=eval", "--validation_file_pattern=tfrecord/pascal*.tfrecord",
               f"--model_dir={missing}"], voc_records, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"main.py: error: --model_dir={missing} does not exist; train into it first (only "
        f"training creates a model directory)."]
    assert not missing.exists()


def test_resume_after_sigkill_no_replayed_eval(voc_records, tmp_path):
    model_dir = tmp_path / "run"
    args = ["--mode=train_and_eval", PATTERN,
            "--validation_file_pattern=tfrecord/pascal*.tfrecord", "--model_name=efficientdet-d0",
            f"--model_dir={model_dir}", "--train_batch_size=4", "--eval_batch_size=8",
            "--eval_samples=8", "--num_examples_per_epoch=8", "--num_epochs=2",
            "--save_checkpoints_steps=1", "--log_every_n_steps=1",
            f"--hparams={tiny_hparams(num_classes=20, moving_average_decay=0)}"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                            cwd=voc_records, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    history = model_dir / "eval_history.json"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if history.exists() and tf.train.latest_checkpoint(str(model_dir)) and int(
                    tf.train.latest_checkpoint(str(model_dir)).split("-")[-1]) >= 3:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the first run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    def evaluated():
        (entry,) = json.loads(history.read_text())["sets"].values()
        return sorted(entry["steps"], key=int)

    assert evaluated() == ["2"]
    killed_at = int(tf.train.latest_checkpoint(str(model_dir)).split("-")[-1])
    # Killed in epoch 2 (a checkpoint every step), before its evaluation.
    assert 3 <= killed_at <= 4
    first = (tmp_path / "first.log").read_text()
    assert "step 1/4, loss " in first and "step 2/4, loss " in first  # progress lines
    r = _main(args, voc_records)
    assert r.returncode == 0, r.stderr[-3000:]
    # The result is not buried under TensorFlow's start-up noise; a closing line per mode.
    assert "Unable to register" not in r.stderr and "cuda" not in r.stderr.lower()
    if killed_at == 3:
        assert "trained to step 4 in " in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("best AP ")
    assert r.stdout.count("eval at step") == 1  # epoch 2 only: no replay of epoch 1
    assert "eval at step 4:" in r.stdout
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-4")
    assert evaluated() == ["2", "4"]


@pytest.mark.slow
def test_mirrored_on_two_cpu_replicas(voc_records, tmp_path):
    r = _main(["--mode=train", "--strategy=mirrored", "--cpu_replicas=2", PATTERN,
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=4", "--num_examples_per_epoch=8", "--num_epochs=1",
               f"--hparams={tiny_hparams(num_classes=20)}"], voc_records)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    names = tf.train.list_variables(ckpt)
    assert not any("replica_1" in n for n, _ in names)
    assert any(n.endswith("/ExponentialMovingAverage") for n, _ in names)
    assert "step 2/2, loss " in r.stderr


@pytest.mark.slow
def test_multi_worker_two_processes_on_loopback(voc_records, tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["--mode=train", "--strategy=multi_worker", PATTERN,
            "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
            "--train_batch_size=4", "--num_examples_per_epoch=8", "--num_epochs=1",
            f"--hparams={tiny_hparams(num_classes=20)}"]
    procs = []
    for i in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                                      cwd=voc_records, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=420) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    assert not any("replica_1" in n for n, _ in tf.train.list_variables(ckpt))

"""main.py as a command: the CLI smoke tests (flags, output, exit status) and what only a
separate process can show (a SIGKILL mid-run, several processes). The behaviour behind each
mode is tested in-process in test_trainer.py.

The runs that train start main.py through tests/main_without_grappler.py (Grappler off, as
in-process tests have it): their point is the processes, and Grappler costs each of them tens
of seconds.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import SMALL, tiny_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # main.py must quiet TensorFlow by itself
PATTERN = "--training_file_pattern=tfrecord/pascal*.tfrecord"
MAIN = [sys.executable, os.path.join(ROOT, "main.py")]
# main.py with Grappler off, for the runs that train (see the module docstring).
MAIN_TRAINING = [sys.executable, os.path.join(ROOT, "tests", "main_without_grappler.py")]


def _main(args, cwd, timeout=420, env=None, command=MAIN):
    return subprocess.run([*command, *args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_user_error_is_one_line_and_nothing_is_created(voc_records, tmp_path):
    missing = tmp_path / "never-trained"
    r = _main(["--mode=eval", "--validation_file_pattern=tfrecord/pascal*.tfrecord",
               f"--model_dir={missing}"], voc_records, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"main.py: error: --model_dir={missing} does not exist; train into it first (only "
        f"training creates a model directory)."]
    assert not missing.exists()


@pytest.mark.heavy
def test_resume_after_sigkill_no_replayed_eval(voc_records, tmp_path):
    """Killed once epoch 1's evaluation is recorded (the event waited for), the run resumes
    from its last checkpoint and evaluates only what was not evaluated: whatever the moment of
    the kill, each epoch end is evaluated exactly once over the two runs."""
    model_dir = tmp_path / "run"
    args = ["--mode=train_and_eval", PATTERN,
            "--validation_file_pattern=tfrecord/pascal*.tfrecord", "--model_name=efficientdet-d0",
            f"--model_dir={model_dir}", "--train_batch_size=4", "--eval_batch_size=8",
            "--eval_samples=8", "--num_examples_per_epoch=8", "--num_epochs=2",
            "--save_checkpoints_steps=1", "--log_every_n_steps=1",
            f"--hparams={tiny_hparams(num_classes=20, moving_average_decay=0, **SMALL)}"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([*MAIN_TRAINING, *args], cwd=voc_records, env=ENV, stdout=log,
                            stderr=subprocess.STDOUT)
    history = model_dir / "eval_history.json"

    def evaluated():
        if not history.exists():
            return []
        sets = json.loads(history.read_text())["sets"].values()
        return sorted((s for entry in sets for s in entry["steps"]), key=int)

    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None and not evaluated():
            time.sleep(0.1)
        assert proc.poll() is None, "the first run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    before = evaluated()
    assert before[0] == "2"
    first = (tmp_path / "first.log").read_text()
    assert "step 1/4, loss " in first and "step 2/4, loss " in first  # progress lines
    r = _main(args, voc_records, command=MAIN_TRAINING)
    assert r.returncode == 0, r.stderr[-3000:]
    # The result is not buried under TensorFlow's start-up noise; a closing line per mode.
    assert "Unable to register" not in r.stderr and "cuda" not in r.stderr.lower()
    assert r.stdout.strip().splitlines()[-1].startswith("best AP ")
    assert "eval at step 2:" not in r.stdout  # never replayed
    assert r.stdout.count("eval at step 4:") == (0 if "4" in before else 1)
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-4")
    assert evaluated() == ["2", "4"]


@pytest.mark.heavy
def test_mirrored_on_two_cpu_replicas(voc_records, tmp_path):
    r = _main(["--mode=train", "--strategy=mirrored", "--cpu_replicas=2", PATTERN,
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=4", "--num_examples_per_epoch=8", "--num_epochs=1",
               f"--hparams={tiny_hparams(num_classes=20, **SMALL)}"], voc_records,
              command=MAIN_TRAINING)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    names = tf.train.list_variables(ckpt)
    assert not any("replica_1" in n for n, _ in names)
    assert any(n.endswith("/ExponentialMovingAverage") for n, _ in names)
    assert "step 2/2, loss " in r.stderr


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tasks(args, cwd, cluster, tasks):
    """Run main.py once per (type, index) of `tasks` with its TF_CONFIG, all at once; returns
    their CompletedProcess-like (returncode, stdout, stderr) in the same order."""
    procs = []
    for kind, index in tasks:
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster,
                                              "task": {"type": kind, "index": index}}))
        procs.append(subprocess.Popen([*MAIN_TRAINING, *args], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=420)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return outs


@pytest.mark.heavy
def test_multi_worker_saves_resumes_and_restores_on_one_machine(voc_records, tmp_path):
    """Two tasks on loopback: first a cluster of workers only (worker 0 acts as chief), then
    the same model directory resumed by a cluster with an explicit chief, which evaluates
    every epoch as one process (Estimator.evaluate without a strategy): the multi-worker
    checkpoints restore into a single-process eval."""
    model_dir = tmp_path / "model"
    common = ["--strategy=multi_worker", PATTERN, "--model_name=efficientdet-d0",
              f"--model_dir={model_dir}", "--train_batch_size=4",
              "--num_examples_per_epoch=8", f"--hparams={tiny_hparams(num_classes=20, **SMALL)}"]
    a, b = (f"127.0.0.1:{p}" for p in _free_ports(2))
    workers = _tasks(["--mode=train", "--num_epochs=1", *common], voc_records,
                     {"worker": [a, b]}, [("worker", 0), ("worker", 1)])
    for r in workers:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "trained to step 2 in " in r.stdout
    assert "worker 1 of 2 tasks: training; the chief writes" in workers[1].stderr
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")
    # One task wrote the directory: one run record, one events file.
    assert len(os.listdir(model_dir / "runs")) == 1
    assert len(list(model_dir.glob("events.out.tfevents.*"))) == 1

    a, b = (f"127.0.0.1:{p}" for p in _free_ports(2))
    resumed = _tasks(["--mode=train_and_eval", "--num_epochs=2", "--eval_samples=8",
                      "--eval_batch_size=4", "--validation_file_pattern=tfrecord/pascal*.tfrecord",
                      *common], voc_records, {"chief": [a], "worker": [b]},
                     [("chief", 0), ("worker", 0)])
    for r in resumed:
        assert r.returncode == 0, r.stderr[-3000:]
    chief, worker = resumed
    # Epoch 1 (step 2) was trained by the first cluster and is evaluated now; epoch 2 trains.
    assert "eval at step 2:" in chief.stdout and "eval at step 4:" in chief.stdout
    assert "step 3/4, loss " in chief.stderr  # continued from step 2, not from scratch
    assert "eval at step" not in worker.stdout and "best AP" not in worker.stdout
    assert chief.stdout.strip().splitlines()[-1].startswith("best AP ")
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-4")
    assert not any("replica_1" in n for n, _ in tf.train.list_variables(
        tf.train.latest_checkpoint(str(model_dir))))
    (entry,) = json.loads((model_dir / "eval_history.json").read_text())["sets"].values()
    assert sorted(entry["steps"], key=int) == ["2", "4"]
    assert len(os.listdir(model_dir / "runs")) == 2


def test_multi_worker_refuses_a_cluster_where_no_task_saves(voc_records, tmp_path):
    env = dict(ENV, TF_CONFIG=json.dumps({"cluster": {"evaluator": ["127.0.0.1:1"]},
                                          "task": {"type": "evaluator", "index": 0}}))
    r = _main(["--mode=train", "--strategy=multi_worker", PATTERN,
               f"--model_dir={tmp_path / 'm'}", f"--hparams={tiny_hparams(num_classes=20)}"],
              voc_records, timeout=120, env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        'main.py: error: TF_CONFIG: cluster has "evaluator" tasks, which multi_worker does not '
        'use: train_and_eval evaluates on the chief (--strategy=multi_worker; see '
        'docs/multi_worker.md).']
    assert not (tmp_path / "m").exists()


def test_multi_worker_refuses_tasks_given_different_clusters(voc_records, tmp_path):
    a, b, c = (f"127.0.0.1:{p}" for p in _free_ports(3))
    # A global batch of 12 splits over 2 and over 3 tasks: only the clusters disagree.
    args = ["--mode=train", "--strategy=multi_worker", PATTERN, f"--model_dir={tmp_path / 'm'}",
            "--train_batch_size=12", f"--hparams={tiny_hparams(num_classes=20)}"]
    procs = []
    for cluster, index in (([a, b], 0), ([a, b, c], 1)):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": {"worker": cluster},
                                              "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([*MAIN, *args], cwd=voc_records, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 1, err[-3000:]
        (line,) = [ln for ln in err.splitlines() if ln.startswith("main.py: error:")]
        assert "TF_CONFIG: the tasks could not agree on the cluster" in line
    assert not (tmp_path / "m").exists()

"""main.py end to end on the sample dataset: the seed's section 7 and 8 commands, resume after
SIGKILL, NaN handling, distribution (mirrored, multi-worker), and clear errors for bad input.

Small on purpose: 128x128 images and a slim network, a few steps per run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from backbone import efficientnet

tf1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLIM = "image_size=128,fpn_num_filters=16,fpn_cell_repeats=2,box_class_repeats=1"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def _main(args, cwd, timeout=420, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          env=env or ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """The seed's layout: VOCdevkit + tfrecord/pascal-*.tfrecord + tfrecord/json_pascal.json."""
    work = tmp_path_factory.mktemp("voc")
    gen = [sys.executable, os.path.join(ROOT, "dataset", "sample_dataset.py"),
           "--output_dir=.", "--num_images=24", "--format=voc", "--voc_class_names"]
    subprocess.run(gen, cwd=work, env=ENV, check=True, capture_output=True)
    (work / "tfrecord").mkdir()
    conv = [sys.executable, os.path.join(ROOT, "dataset", "create_pascal_tfrecord.py"),
            "--data_dir=VOCdevkit", "--year=VOC2012", "--output_path=tfrecord/pascal",
            "--num_shards=2"]
    subprocess.run(conv, cwd=work, env=ENV, check=True, capture_output=True)
    return work


def _classifier_checkpoint(directory):
    """An EfficientNet-B0 classifier checkpoint laid out like the public ones (EMA included)."""
    with tf.Graph().as_default():
        efficientnet.build_model(tf1.placeholder(tf.float32, [1, 64, 64, 3]), "efficientnet-b0",
                                 False)
        ema = tf1.train.ExponentialMovingAverage(0.9999)
        ema_op = ema.apply(tf1.trainable_variables())
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            s.run(ema_op)
            tf1.train.Saver().save(s, os.path.join(directory, "model.ckpt"))


def _seed7_args(model_dir, extra_hparams):
    return ["--mode=train_and_eval",
            "--training_file_pattern=tfrecord/pascal*.tfrecord",
            "--validation_file_pattern=tfrecord/pascal*.tfrecord",
            "--val_json_file=tfrecord/json_pascal.json",
            "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
            "--train_batch_size=8", "--eval_batch_size=8", "--eval_samples=16",
            "--num_examples_per_epoch=16", "--num_epochs=1", "--use_tpu=False",
            f"--hparams=num_classes=20,moving_average_decay=0,{extra_hparams}"]


@pytest.fixture(scope="module")
def seed7_run(voc):
    """Seed section 7: train from a classifier backbone checkpoint, then evaluate."""
    (voc / "efficientnet-b0").mkdir()
    _classifier_checkpoint(str(voc / "efficientnet-b0"))
    model_dir = voc / "efficientdet-d0-scratch"
    args = _seed7_args(model_dir, SLIM)
    args.insert(6, "--backbone_ckpt=efficientnet-b0")
    r = _main(args, voc)
    return r, model_dir


def test_seed_section7_backbone_ckpt(seed7_run, voc):
    r, model_dir = seed7_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval at step 2: AP=" in r.stdout
    assert "Initialised 304 variables from backbone checkpoint" in r.stderr
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")
    saved = (model_dir / "config.yaml").read_text()
    assert "num_classes: 20" in saved and "fpn_name: vfpn" in saved
    history = json.loads((model_dir / "eval_history.json").read_text())
    assert list(history) == ["2"] and "AP50" in history["2"]
    assert (model_dir / "archive" / "best_eval.json").exists()
    # The backbone really came from the classifier (its EMA-free raw values at step 0).
    reader = tf.train.load_checkpoint(str(model_dir / "model.ckpt-0"))
    cls = tf.train.load_checkpoint(str(voc / "efficientnet-b0" / "model.ckpt"))
    name = "efficientnet-b0/stem/conv2d/kernel"
    np.testing.assert_array_equal(reader.get_tensor(name), cls.get_tensor(name))


def test_seed_section8_finetune_from_detector(seed7_run, voc):
    _, scratch = seed7_run
    slim_yaml = SLIM.replace("=", ": ").replace(",", "\n")
    (voc / "voc_config.yaml").write_text(f"num_classes: 20\nmoving_average_decay: 0\n{slim_yaml}\n")
    model_dir = voc / "efficientdet-d0-finetune"
    args = ["--mode=train_and_eval",
            "--training_file_pattern=tfrecord/pascal*.tfrecord",
            "--validation_file_pattern=tfrecord/pascal*.tfrecord",
            "--val_json_file=tfrecord/json_pascal.json",
            "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
            f"--ckpt={scratch}", "--train_batch_size=8",
            "--eval_batch_size=8", "--eval_samples=16",
            "--num_examples_per_epoch=16", "--num_epochs=1",
            "--hparams=voc_config.yaml", "--use_tpu=False"]
    r = _main(args, voc)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval at step 2" in r.stdout
    assert "from detector checkpoint" in r.stderr and "skipped 0" in r.stderr
    # global_step is never taken from --ckpt: the new run starts at 0 and ends at 2.
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")


def test_eval_mode_once_and_eval_numbers_match_pycocotools(seed7_run, voc, tmp_path):
    import coco_metric

    _, model_dir = seed7_run
    r = _main(["--mode=eval", "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
               "--validation_file_pattern=tfrecord/pascal*.tfrecord",
               "--val_json_file=tfrecord/json_pascal.json", "--eval_batch_size=8",
               "--eval_samples=24", f"--testdev_dir={tmp_path}"], voc)
    assert r.returncode == 0, r.stderr[-3000:]
    dets = tmp_path / "detections_test-dev2017_test_results.json"
    assert dets.exists()
    # Every image of the split is evaluated, though 18 is no multiple of the batch of 8.
    json_ids = {i["id"] for i in json.loads((voc / "tfrecord" / "json_pascal.json").read_text())
                ["images"]}
    assert len(json_ids) == 18
    assert {d["image_id"] for d in json.loads(dets.read_text())} == json_ids
    # The same checkpoint evaluated against the json: our numbers equal pycocotools' own (which
    # scores every image of the json).
    r = _main(["--mode=eval", "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
               "--validation_file_pattern=tfrecord/pascal*.tfrecord",
               "--val_json_file=tfrecord/json_pascal.json", "--eval_batch_size=8",
               "--eval_samples=24"], voc)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = json.loads((model_dir / "eval_history.json").read_text())["2"]
    direct = coco_metric.evaluate_detections_json(str(voc / "tfrecord" / "json_pascal.json"),
                                                  str(dets))
    for key in ("AP", "AP50", "AP75", "ARmax100"):
        assert ours[key] == pytest.approx(direct[key], abs=1e-9), key


def test_loss_falls_on_repeated_batch(voc, tmp_path):
    """Learning is real: on one repeated batch the loss drops well below its start."""
    r = _main(["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=4", "--num_examples_per_epoch=4", "--num_epochs=30",
               "--use_fake_data", "--tf_random_seed=1", "--save_checkpoints_steps=30",
               "--iterations_per_loop=5",
               f"--hparams=num_classes=20,moving_average_decay=0,{SLIM},optimizer=adam,"
               f"learning_rate=0.16,lr_warmup_epoch=0"], voc)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = []
    for event_file in tf.io.gfile.glob(str(tmp_path / "events.out.tfevents*")):
        for event in tf1.train.summary_iterator(event_file):
            for v in event.summary.value:
                if v.tag == "det_loss":
                    losses.append((event.step, tf.make_ndarray(v.tensor)
                                   if v.HasField("tensor") else v.simple_value))
    losses.sort()
    assert losses, "no det_loss summaries written"
    first, last = float(losses[0][1]), float(losses[-1][1])
    assert last < 0.5 * first, losses


def test_resume_after_sigkill_no_replayed_eval(voc, tmp_path):
    model_dir = tmp_path / "run"
    args = ["--mode=train_and_eval", "--training_file_pattern=tfrecord/pascal*.tfrecord",
            "--validation_file_pattern=tfrecord/pascal*.tfrecord", "--model_name=efficientdet-d0",
            f"--model_dir={model_dir}", "--train_batch_size=4", "--eval_batch_size=8",
            "--eval_samples=8", "--num_examples_per_epoch=8", "--num_epochs=3",
            "--save_checkpoints_steps=1",
            f"--hparams=num_classes=20,moving_average_decay=0,{SLIM}"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=voc,
                            env=ENV, stdout=log, stderr=subprocess.STDOUT)
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
    evaluated = json.loads(history.read_text())
    assert list(evaluated) == ["2"]
    killed_at = int(tf.train.latest_checkpoint(str(model_dir)).split("-")[-1])
    assert 3 <= killed_at < 6
    r = _main(args, voc)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("eval at step") == 2  # epochs 2 and 3 only: no replay of epoch 1
    assert "eval at step 2:" not in r.stdout
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-6")
    assert sorted(json.loads(history.read_text()), key=int) == ["2", "4", "6"]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(voc, tmp_path):
    r = _main(["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=4", "--num_examples_per_epoch=4", "--num_epochs=20",
               "--save_checkpoints_steps=1",
               f"--hparams=num_classes=20,moving_average_decay=0,{SLIM},learning_rate=1e30,"
               f"lr_warmup_epoch=0,clip_gradients_norm=0"], voc)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("main.py: error: non-finite loss at step "), line
    assert "validate_tfrecord" in line
    bad_step = int(line.split("at step ")[1].split(":")[0])
    last = int(tf.train.latest_checkpoint(str(tmp_path)).split("-")[-1])
    assert last <= bad_step
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    assert np.isfinite(reader.get_tensor("class_net/class-predict/bias")).all()


@pytest.mark.slow
def test_mirrored_on_two_cpu_replicas(voc, tmp_path):
    r = _main(["--mode=train", "--strategy=mirrored", "--cpu_replicas=2",
               "--training_file_pattern=tfrecord/pascal*.tfrecord",
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=4", "--num_examples_per_epoch=8", "--num_epochs=1",
               f"--hparams=num_classes=20,{SLIM}"], voc)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    names = tf.train.list_variables(ckpt)
    assert not any("replica_1" in n for n, _ in names)
    assert any(n.endswith("/ExponentialMovingAverage") for n, _ in names)


@pytest.mark.slow
def test_multi_worker_two_processes_on_loopback(voc, tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["--mode=train", "--strategy=multi_worker",
            "--training_file_pattern=tfrecord/pascal*.tfrecord",
            "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
            "--train_batch_size=4", "--num_examples_per_epoch=8", "--num_epochs=1",
            f"--hparams=num_classes=20,{SLIM}"]
    procs = []
    for i in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                                      cwd=voc, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=420) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    assert not any("replica_1" in n for n, _ in tf.train.list_variables(ckpt))


@pytest.mark.parametrize("args,message", [
    (["--mode=train", "--training_file_pattern=nothing/*.tfrecord"],
     "--training_file_pattern=nothing/*.tfrecord matches no TFRecord file"),
    (["--mode=train"], "--training_file_pattern is required"),
    (["--mode=eval", "--validation_file_pattern=tfrecord/pascal*.tfrecord"],
     "holds no checkpoint to evaluate"),
    (["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
      "--hparams=num_classes=2"], "hold class id 3 but num_classes is 2"),
    (["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
      "--hparams=num_classes=20,label_map={1: 'a', 21: 'b'}"], "ids 1..21 but num_classes is 20"),
    (["--mode=predict"], "--mode"),
    (["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
      "--backbone_ckpt=x", "--ckpt=y"], "cannot be used together"),
])
def test_bad_input_is_one_clear_line(voc, tmp_path, args, message):
    r = _main([*args, "--model_name=efficientdet-d0", f"--model_dir={tmp_path}"], voc,
              timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert message in r.stderr


def test_empty_pattern_file(voc, tmp_path):
    (tmp_path / "empty-00000.tfrecord").write_bytes(b"")
    r = _main(["--mode=train", f"--training_file_pattern={tmp_path}/empty-*",
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path / 'm'}"], voc,
              timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "every matching file is empty" in r.stderr


def test_checkpoint_from_another_model(seed7_run, voc, tmp_path):
    _, scratch = seed7_run
    r = _main(["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
               "--model_name=efficientdet-d1", f"--model_dir={tmp_path}",
               f"--ckpt={scratch}", "--train_batch_size=2", "--num_examples_per_epoch=2",
               "--num_epochs=1", "--hparams=num_classes=20,image_size=128"], voc, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "does not fit this model (efficientdet-d1" in r.stderr


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training(voc, tmp_path, precision):
    r = _main(["--mode=train", "--training_file_pattern=tfrecord/pascal*.tfrecord",
               "--model_name=efficientdet-d0", f"--model_dir={tmp_path}",
               "--train_batch_size=2", "--num_examples_per_epoch=4", "--num_epochs=1",
               f"--hparams=num_classes=20,{SLIM},precision={precision}"], voc)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path))
    assert ckpt.endswith("model.ckpt-2")
    reader = tf.train.load_checkpoint(ckpt)
    dtypes = reader.get_variable_to_dtype_map()
    # variables stay float32; float16 training also keeps its dynamic loss scale
    assert dtypes["class_net/class-predict/bias"] == tf.float32
    assert np.isfinite(reader.get_tensor("class_net/class-predict/bias")).all()
    if precision == "mixed_float16":
        assert any("loss_scale" in name for name in dtypes)

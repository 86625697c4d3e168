"""Shared pytest fixtures and helpers. Puts the repo root on sys.path so the flat layout imports
as is.

* `tiny_config()` / `tiny_hparams()`: the one small, fast model (128x128 input, few filters and
  repeats), as a Config or as an --hparams string.
* `voc_records`: a session-wide sample dataset in the seed's VOC layout, converted to
  tfrecord/pascal-*.tfrecord + tfrecord/json_pascal.json (made in-process, once).

Speed (the suite runs on 2 cores with pytest-xdist, `-n auto` in pyproject.toml):

* In-process sessions skip Grappler, TensorFlow's graph rewriting at session start, through the
  project's one switch (`sessions.fast_graph_setup`). It changes no result, only how kernels
  are fused, and it costs seconds per session (a quarter of a small train-and-eval run).
  Commands run as subprocesses (CLI smoke tests, docs tests) keep it, as users have it; the
  runs of test_main.py whose point is several processes turn it off too
  (tests/main_without_grappler.py).
* In-process ONNX conversions (the ONNX and OpenVINO exports) skip tf2onnx's graph optimizers,
  which rewrite the converted graph into an equivalent smaller one and take four fifths of a
  conversion (about 20 s for the tiny model). Every export test still compares the converted
  model's detections with the checkpoint's; the CLI smoke tests and the docs tests convert with
  the optimizers, as users do.
* Tests that share an expensive fixture (`exported_models`, test_trainer's `trained`) run in
  one xdist group, so the fixture is built once, not once per worker.
* Those groups and the tests marked `heavy` (tens of seconds each) are handed out first, the
  many short tests after them, so that the workers finish together instead of one running a
  long test alone at the end.
"""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Fixtures whose users share one xdist worker (see the module docstring).
SHARED_FIXTURE_GROUPS = ("exported_models", "trained")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in SHARED_FIXTURE_GROUPS:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
                break
    # Longest first (see the module docstring); sorted() is stable, so each part keeps its order.
    items[:] = sorted(items, key=lambda item: not (item.get_closest_marker("heavy")
                                                   or item.get_closest_marker("xdist_group")))


def pytest_configure(config):
    # Only where tests run: an xdist worker, or the one process of -n 0 (not the controller).
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        import cli

        cli.import_tensorflow()  # without the start-up noise
        import sessions

        sessions.fast_graph_setup(True)
        _onnx_conversion_without_graph_optimizers()


def _onnx_conversion_without_graph_optimizers() -> None:
    """Make tf2onnx's optimize_graph apply no optimizer (see the module docstring)."""
    if importlib.util.find_spec("tf2onnx") is None:
        return
    from tf2onnx import optimizer

    optimize_graph = optimizer.optimize_graph

    def without_optimizers(graph, catch_errors=True, optimizers=None):
        del optimizers
        return optimize_graph(graph, catch_errors, optimizers={})

    optimizer.optimize_graph = without_optimizers


SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(SHARED, "fixtures")

# The small model every test trains or exports: 128x128 input, narrow and shallow FPN/heads.
TINY = {"image_size": 128, "fpn_num_filters": 16, "fpn_cell_repeats": 2, "box_class_repeats": 1}
# Overrides of TINY for tests whose checks need a model, not this one's shape: one FPN
# cell on three levels (P3-P5) builds the training graph in about two thirds of the time.
SMALL = {"fpn_cell_repeats": 1, "max_level": 5}


@pytest.fixture
def fixtures_dir() -> str:
    """`../shared/fixtures` beside the checkout (CI lays it there)."""
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"{FIXTURES} is missing: CI and tests expect ../shared beside the checkout")
    return FIXTURES


def tiny_config(model_name: str = "efficientdet-d0", **overrides):
    """A small, fast config (TINY, 3 classes) with `overrides`, validated."""
    import hparams_config

    base = dict(TINY, num_classes=3)
    base.update(overrides)
    return hparams_config.get_detection_config(model_name, base)


def make_classifier_checkpoint(directory):
    """An EfficientNet-B0 classifier checkpoint laid out like the public ones (EMA included),
    random weights: the stand-in for `--backbone_ckpt=efficientnet-b0`."""
    import tensorflow as tf

    from backbone import efficientnet

    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        efficientnet.build_model(tf1.placeholder(tf.float32, [1, 64, 64, 3]), "efficientnet-b0",
                                 False)
        ema = tf1.train.ExponentialMovingAverage(0.9999)
        ema_op = ema.apply(tf1.trainable_variables())
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            s.run(ema_op)
            tf1.train.Saver().save(s, os.path.join(str(directory), "model.ckpt"))


def parse_inspect_flags(*args):
    """model_inspect's InspectOptions from command-line arguments, parsed as the real command
    line does (its flags are defined only when it runs as a script)."""
    from absl import flags

    import cli
    import model_inspect

    values = flags.FlagValues()
    cli.define_flags(model_inspect.InspectOptions, values)
    values(["model_inspect.py", *args])
    return cli.options_from_flags(model_inspect.InspectOptions, values)


def tiny_hparams(**overrides) -> str:
    """TINY plus `overrides` as an --hparams string ('image_size=128,...')."""
    values = dict(TINY, **overrides)
    return ",".join(f"{k}={v}" for k, v in values.items())


@pytest.fixture(scope="session")
def voc_records(tmp_path_factory):
    """The seed's layout: VOCdevkit + tfrecord/pascal-*.tfrecord + tfrecord/json_pascal.json.

    24 images of 3 shape classes named after the first VOC classes (aeroplane, bicycle, bird),
    so the converter's built-in VOC map applies; VOC2012 'train' holds 18 of them.
    """
    from dataset import create_pascal_tfrecord, sample_dataset

    work = tmp_path_factory.mktemp("voc")
    sample_dataset.write_voc(str(work), 24, voc_class_names=True)
    (work / "tfrecord").mkdir()
    create_pascal_tfrecord.create_pascal_tfrecord(create_pascal_tfrecord.ConvertOptions(
        data_dir=str(work / "VOCdevkit"), output_path=str(work / "tfrecord" / "pascal"),
        year="VOC2012", num_shards=2, num_threads=1), progress=False)
    return work


# -------------------------------------------------------------------------------------------------
# Hand-made records shared by test_validate_tfrecord.py and test_rules.py
# -------------------------------------------------------------------------------------------------
ONE_BOX = (0.1, 0.2, 0.5, 0.6)


def record_values(sid="1", labels=(1,), boxes=None, width=40, height=30, encoded=None,
                  **overrides):
    """Feature values of a record of a gray `width` x `height` JPEG; `boxes` are (ymin, xmin,
    ymax, xmax) normalized, ONE_BOX per label by default. An override of None drops the key."""
    from PIL import Image

    from dataset import tfrecord_util

    boxes = [ONE_BOX] * len(labels) if boxes is None else boxes
    values = {
        "image/height": height, "image/width": width, "image/source_id": str(sid),
        "image/filename": f"{sid}.jpg", "image/format": "jpeg",
        "image/encoded": (tfrecord_util.encode_jpeg(Image.new("RGB", (40, 30), 128))
                          if encoded is None else encoded),
        "image/object/bbox/ymin": [b[0] for b in boxes],
        "image/object/bbox/xmin": [b[1] for b in boxes],
        "image/object/bbox/ymax": [b[2] for b in boxes],
        "image/object/bbox/xmax": [b[3] for b in boxes],
        "image/object/class/label": list(labels),
        "image/object/class/text": ["x"] * len(labels),
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def write_records(path, records) -> str:
    """Write `records` (record_values dicts) as one TFRecord file; returns its path."""
    import tensorflow as tf

    from dataset import tfrecord_util

    with tf.io.TFRecordWriter(str(path)) as w:
        for values in records:
            w.write(tfrecord_util.make_example(values).SerializeToString())
    return str(path)


# -------------------------------------------------------------------------------------------------
# Inference helpers shared by test_inference.py and test_model_inspect.py
# -------------------------------------------------------------------------------------------------
TINY_HPARAMS = tiny_hparams(num_classes=3)
STREET = os.path.join(FIXTURES, "images", "street.jpg")


def street(width=None, height=None):
    """The 1024x636 street photo (or resized to width x height) as uint8 RGB."""
    import numpy as np
    from PIL import Image

    image = Image.open(STREET).convert("RGB")
    if width:
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image)


def sideways_photo(path, orientation=6):
    """A 64x48 JPEG stored sideways, as cameras store a portrait photo, with EXIF orientation
    `orientation` (6: viewers turn it 90 degrees clockwise, to 48x64). A red block fills the
    stored top-left 24x16 corner, so the upright picture has it at x 32..48, y 0..24 (the box
    [32, 0, 16, 24] in COCO's [x, y, w, h], annotated on the upright view). Returns the upright
    picture, uint8 [64, 48, 3], turned by numpy (not by the code under test)."""
    import numpy as np
    from PIL import Image

    stored = np.full((48, 64, 3), 40, np.uint8)
    stored[:16, :24] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    return np.ascontiguousarray(np.rot90(stored, k=-1))


def make_test_checkpoint(model_dir, model_name="efficientdet-d0", seed=0, **overrides):
    """A checkpoint in `model_dir` (plus its config.yaml) that finds objects in street images.

    Random weights of a `tiny_config` model (plus `overrides`). With fresh batch-norm statistics
    a random network's features shrink with depth but still depend smoothly on the image, so
    the class and box predictors are rescaled until, on street images of three sizes, class
    logits spread with a standard deviation of 2 around a bias that lets about 1 in 300
    (anchor, class) pairs score above 0.5, and box codes spread by 0.3. EMA shadows hold these
    weights; the raw class-predict bias is -20, so only an EMA-aware restore detects anything.
    Returns the config.
    """
    import numpy as np
    import tensorflow.compat.v1 as tf1

    import checkpoint_io
    import efficientdet_arch
    import serving

    config = tiny_config(model_name, **{**TINY, **overrides})
    graph = tf1.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        probe = tf1.placeholder(tf1.uint8, [1, None, None, 3])
        outputs = efficientdet_arch.build_model(serving.preprocess_images(probe, config)[0],
                                                config, training=False)
        variables = {v.op.name: v for v in tf1.global_variables()}
        value = tf1.placeholder(tf1.float32)
        assign_ops = {name: v.assign(value) for name, v in variables.items()}

        def assign(name, array):
            sess.run(assign_ops[name], {value: np.asarray(array, np.float32)})

        def probe_outputs():
            images = [street(), street(400, 300), street(256, 160)]
            outs = [sess.run(outputs, {probe: im[None]}) for im in images]
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
    tensors = {name + checkpoint_io.EMA_SUFFIX: v for name, v in values.items()}
    tensors.update(values)
    tensors[bias] = np.full(shape, -20.0, np.float32)
    os.makedirs(model_dir, exist_ok=True)
    prefix = os.path.join(str(model_dir), "model.ckpt-0")
    checkpoint_io.write_checkpoint(tensors, prefix, update_index=True)
    config.save_to_yaml(os.path.join(str(model_dir), "config.yaml"))
    return config


def assert_same_detections(a, b, what=""):
    """Same count and classes, boxes within 1 pixel, scores within 1e-3, matched one to one
    (the order of near-equal scores may differ between runtimes)."""
    import numpy as np

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


@pytest.fixture(scope="session")
def test_checkpoint(tmp_path_factory):
    """(directory, config) of one `make_test_checkpoint` model shared by the whole session.
    The directory is named efficientdet-d0 (as in the seed README) and holds config.yaml."""
    model_dir = str(tmp_path_factory.mktemp("ckpt") / "efficientdet-d0")
    return model_dir, make_test_checkpoint(model_dir)


# tf2onnx and onnxruntime are installed on Python >= 3.10 (requirements.txt).
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="tf2onnx/onnxruntime need Python >= 3.10")
# openvino is installed on Python >= 3.10 (requirements.txt).
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino needs Python >= 3.10")
# nncf (int8 OpenVINO models) is installed with openvino on Python >= 3.10 (requirements.txt).
HAVE_NNCF = HAVE_OPENVINO and importlib.util.find_spec("nncf") is not None
needs_nncf = pytest.mark.skipif(not HAVE_NNCF, reason="nncf needs Python >= 3.10")


@pytest.fixture(scope="session")
def exported_models(test_checkpoint, tmp_path_factory):
    """`test_checkpoint` exported once per session with a dynamic batch: {'ckpt', 'config',
    'saved_model', 'frozen', 'tflite', 'onnx' (None without tf2onnx), 'openvino' (the .xml
    written with the SavedModel; None without openvino), 'settings'}."""
    import export

    ckpt_dir, config = test_checkpoint
    root = tmp_path_factory.mktemp("exported")
    sm_dir = str(root / "saved_model")
    result = export.export_saved_model(
        config, sm_dir, "efficientdet-d0", ckpt_dir, batch_size=None,
        tflite_path=str(root / "m.tflite"),
        openvino_path=str(root / "openvino" / "m.xml") if HAVE_OPENVINO else None)
    onnx_path = (export.export_onnx(config, str(root / "m.onnx"), ckpt_dir, batch_size=None)
                 if HAVE_ONNX else None)
    return {"ckpt": ckpt_dir, "config": config, "saved_model": sm_dir,
            "frozen": result.frozen_graph, "tflite": result.tflite, "onnx": onnx_path,
            "openvino": result.openvino, "settings": result.settings}


@pytest.fixture(scope="session")
def checkpoint_detector(test_checkpoint):
    """A batch-1 `detectors.CheckpointDetector` of `test_checkpoint`, built once."""
    import detectors

    ckpt_dir, config = test_checkpoint
    with detectors.CheckpointDetector(config, ckpt_dir) as det:
        yield det


@pytest.fixture
def world(voc_records, test_checkpoint, tmp_path):
    """A bad-input case's files (tests/badinput.py): {'root': the case's directory, 'records':
    a copy of the VOC sample's tfrecord/ (pascal-*.tfrecord, json_pascal.json), 'model': a copy
    of the test checkpoint's directory (config.yaml, 3 classes), 'tmp': an empty directory}.
    Copies, so that a case that damaged them could not damage another case's."""
    import shutil

    records = tmp_path / "data"
    shutil.copytree(voc_records / "tfrecord", records / "tfrecord")
    model = tmp_path / "model"
    shutil.copytree(test_checkpoint[0], model)
    work = tmp_path / "work"
    work.mkdir()
    return {"root": str(tmp_path), "records": str(records / "tfrecord"), "model": str(model),
            "tmp": str(work)}

"""One verdict per rule: every consumer of a rule, fed the same inputs, agrees.

Each rule, its one home, and the consumers fed the same inputs here:

* a run's length (`det_model_fn.schedule_steps`): the steps main.py trains, train_and_eval's
  last evaluation, the LR schedule, VFPN's branch schedule;
* the checkpoint interval (`trainer.save_interval`): the Estimator's RunConfig, the
  checkpoint hook;
* source ids, digits in 0..2**24 (`tfrecord_util.source_id_problem`): the converters' json ids,
  the validator, main.py's checks and the input pipeline (training and eval), the COCO metric;
  the limit is float32's (`tfrecord_util.MAX_SOURCE_ID`), as is the eval padding id;
* class ids 1..num_classes (`bounds.class_ids`): records (validator, main.py, pipeline) and
  label maps (the hparam, a file, `label_maps.resolve`, names found in a json, an export's
  settings); the names of a model without a label map (`label_maps.default_names`);
* max_instances_per_image's default (`bounds.DEFAULT_MAX_INSTANCES`): the hparam and every
  default the code gives it; at the limit, the validator, main.py and the pipeline;
* fpn_name (`vfpn.FPN_BUILDERS`): `hparams_config.validate`, `vfpn.get_fpn_builder`, and which
  names have VFPN's vertical stage (checkpoint shapes, VFPN's branch);
* yxyx to COCO xywh (`coco_json.xywh_from_yxyx`): eval's detection rows, the metric's ground
  truth, `inference.coco_results`.

Every test is plain Python or a tiny graph; nothing trains.
"""

import ast
import dataclasses
import glob
import importlib
import inspect
import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import bounds
import coco_json
import coco_metric
import dataloader
import det_model_fn
import errors
import hparams_config
import inference
import run_dir
import run_options
import trainer
import vfpn
import vfpn_training
from checkpoint_io import DetectorShape
from conftest import record_values, tiny_config, write_records
from dataset import label_maps, tfrecord_util, validate_tfrecord, validation
from detections import Detections
from run_options import RunOptions

tf1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 3
LIMIT = hparams_config.get_efficientdet_config("efficientdet-d0").max_instances_per_image


# -------------------------------------------------------------------------------------------------
# Records and the consumers that judge them
# -------------------------------------------------------------------------------------------------
def _validator(path) -> bool:
    return validate_tfrecord.validate_tfrecords(path, num_classes=CLASSES).ok


def _main_py(path, tmp_path, training: bool) -> bool:
    """True when main.py's checks before any work (run_options.check_options, then
    trainer.prepare) pass the records, for training or for eval."""
    model_dir = tmp_path / ("m-train" if training else "m-eval")
    if not training:
        model_dir.mkdir(exist_ok=True)  # eval needs a model directory
    opts = RunOptions(mode="train" if training else "eval", model_dir=str(model_dir),
                      training_file_pattern=path, validation_file_pattern=path,
                      hparams=f"num_classes={CLASSES}", train_batch_size=1,
                      num_examples_per_epoch=1, num_epochs=1)
    try:
        run_options.check_options(opts)
        trainer.prepare(opts)
    except errors.UserError:
        return False
    return True


def _pipeline(values, training: bool) -> bool:
    """True when the input pipeline's checks (dataloader.parse_record) pass the record."""
    serialized = tf.constant(tfrecord_util.make_example(values).SerializeToString())
    try:
        dataloader.parse_record(serialized, CLASSES, LIMIT, require_source_id=not training)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def _verdicts(values, tmp_path):
    """{consumer: passes?} of one record for evaluation and for training."""
    path = write_records(tmp_path / "r.tfrecord", [values])
    for_eval = {"validator": _validator(path), "main.py (eval)": _main_py(path, tmp_path, False),
                "pipeline (eval)": _pipeline(values, False)}
    for_training = {"main.py (training)": _main_py(path, tmp_path, True),
                    "pipeline (training)": _pipeline(values, True)}
    return for_eval, for_training


# -------------------------------------------------------------------------------------------------
# A run's length and its checkpoint interval
# -------------------------------------------------------------------------------------------------
def _prepared(tmp_path, images, batch, epochs, **kw) -> trainer.Prepared:
    path = str(tmp_path / "r.tfrecord")
    if not os.path.exists(path):
        write_records(path, [record_values()])
    return trainer.prepare(RunOptions(
        mode="train", model_dir=str(tmp_path / "m"), training_file_pattern=path,
        train_batch_size=batch, num_examples_per_epoch=images,
        hparams=f"num_classes={CLASSES},num_epochs={epochs},lr_warmup_epoch=0.5,"
                "vfpn_branch_start=0.5,vfpn_branch_warmup=0.5", **kw))


def _lr(config, run, step) -> float:
    return float(det_model_fn.learning_rate_schedule(config, run, tf.constant(step, tf.int64)))


# (images per epoch, batch, epochs): small settings, some shorter than one batch.
RUNS = list(itertools.product((1, 7, 49, 100), (1, 3, 8), (1, 2, 30)))


def verdict(consume) -> bool:
    """True when `consume()` accepts its input, False when it refuses it with a ConfigError."""
    try:
        consume()
    except errors.ConfigError:
        return False
    return True


@pytest.mark.parametrize("images, batch, epochs", RUNS)
def test_every_consumer_of_the_run_length_ends_at_one_step(tmp_path, images, batch, epochs):
    """The steps main.py trains, train_and_eval's last evaluation, the end of the LR schedule
    (cosine and polynomial reach 0 at the last step, not before) and the end of VFPN's branch
    ramp (full updates by the last step) are one step; a run shorter than one batch is
    refused where the schedule has no step."""
    config = hparams_config.get_detection_config("efficientdet-d0", f"num_epochs={epochs}")
    run = det_model_fn.RunContext(model_dir="m", train_batch_size=batch,
                                  num_examples_per_epoch=images)
    if det_model_fn.schedule_steps(config, run).total_steps < 1:
        with pytest.raises(errors.UsageError, match="no training step would run"):
            _prepared(tmp_path, images, batch, epochs)
        return
    p = _prepared(tmp_path, images, batch, epochs)
    last = p.total_steps
    assert trainer._epoch_ends(p)[-1] == last
    _, warmup, total = det_model_fn.schedule_steps(p.config, p.run)
    assert total == last
    for method in ("cosine", "polynomial"):
        config = hparams_config.Config(p.config.as_dict())
        config.lr_decay_method = method
        assert _lr(config, p.run, last) == 0.0, method
        if last - 1 >= warmup:
            assert _lr(config, p.run, last - 1) > 0.0, method
    active, scale = det_model_fn.branch_update_scale(p.config, p.run,
                                                     tf.constant(last - 1, tf.int64))
    assert bool(active) and float(scale) == 1.0


@pytest.mark.parametrize("images, batch, flag, interval", [
    (49, 3, None, 16), (5000, 1, None, 1000), (49, 3, 7, 7)])
def test_the_estimator_and_the_checkpoint_hook_save_at_one_interval(tmp_path, images, batch,
                                                                     flag, interval):
    """--save_checkpoints_steps, else an epoch's steps (at most 1000), for both the
    Estimator's RunConfig and the hook that writes the checkpoints."""
    p = _prepared(tmp_path, images, batch, 30, save_checkpoints_steps=flag)
    estimator = trainer.build_estimator(p)
    (hook,) = [h for h in trainer._hooks(p) if isinstance(h, tf1.train.CheckpointSaverHook)]
    # The hook keeps its interval in its timer (train_hooks.QuietCheckpointSaverHook relies on
    # the same attribute).
    assert estimator.config.save_checkpoints_steps == hook._timer._every_steps == interval
    p.summary_writer.close()


# -------------------------------------------------------------------------------------------------
# Source ids and the float32 limit
# -------------------------------------------------------------------------------------------------
# (image/source_id, usable?): digits only, 0..2**24 (tfrecord_util.source_id_problem).
SOURCE_IDS = [("0", True), ("7", True), ("007", True), ("16777216", True), ("16777217", False),
              ("-5", False), ("abc", False), (" 5", False), ("5 ", False), ("5.0", False),
              ("+5", False), ("1e3", False),
              ("\u0663", False)]  # an Arabic-Indic 3: str.isdigit() says yes


def _metric_takes(sid: str) -> bool:
    """True when the COCO metric accepts `sid` (as the records hold it, bytes) as an image's
    source id."""
    metric = coco_metric.EvaluationMetric()
    rows = np.zeros([1, 1, 7], np.float32)  # one padding row: no detection
    gt = np.array([[[1, 2, 10, 12, 0, 0, 1]]], np.float32)
    try:
        metric.update_state(rows, gt, np.asarray([sid.encode("utf-8")]))
    except coco_metric.CocoMetricError:
        return False
    return True


@pytest.mark.parametrize("sid, usable", SOURCE_IDS + [("", None)], ids=repr)
def test_every_consumer_gives_a_source_id_one_verdict(tmp_path, sid, usable):
    """The same id through the rule, the converters' json-id check, the validator, main.py's
    checks and the input pipeline (training and eval) and the COCO metric. An empty id is
    refused by everything that evaluates and accepted by training, which does not use it."""
    for_eval, for_training = _verdicts(record_values(sid), tmp_path)
    for_eval["rule"] = tfrecord_util.source_id_problem(sid) is None
    for_eval["COCO metric"] = _metric_takes(sid)
    if usable is None:
        assert set(for_eval.values()) == {False} and set(for_training.values()) == {True}, (
            for_eval, for_training)
        return
    for_eval["converters (json image id)"] = validation.check_image_id(sid) is None
    verdicts = {**for_eval, **for_training}
    assert set(verdicts.values()) == {usable}, verdicts


def test_the_id_limit_is_the_float32_one():
    """Every usable id survives the pipeline's float32 source_ids exactly and the next integer
    does not; the eval padding id lies outside the usable ids and is exact too."""
    limit = tfrecord_util.MAX_SOURCE_ID
    assert int(np.float32(limit)) == limit and int(np.float32(limit + 1)) != limit + 1
    padding = tfrecord_util.PADDING_SOURCE_ID
    assert tfrecord_util.source_id_problem(padding) and int(np.float32(padding)) == padding
    assert coco_metric.PADDING_IMAGE_ID == padding


# -------------------------------------------------------------------------------------------------
# Class ids and label maps
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", [-1, 0, 1, CLASSES, CLASSES + 1])
def test_every_consumer_gives_a_record_class_id_one_verdict(tmp_path, label):
    """A record's class id: the rule (bounds.class_ids), the validator, main.py's checks and the
    input pipeline, for training and for eval."""
    for_eval, for_training = _verdicts(record_values(labels=(label,)), tmp_path)
    verdicts = {**for_eval, **for_training,
                "rule": bounds.class_ids(CLASSES).problem(label) is None}
    assert set(verdicts.values()) == {1 <= label <= CLASSES}, verdicts


def _export_settings_take(tmp_path, names, num_classes) -> bool:
    """True when a model's classes recorded in its export settings read back."""
    import export

    model = str(tmp_path / "model.tflite")
    export.write_export_settings(model, {"num_classes": num_classes, "label_map": names})
    try:
        export.recorded_classes(model)
    except errors.ModelFileError:
        return False
    return True


# (ids, num_classes, usable?): a label map fits a model when its ids lie in 1..num_classes
# (bounds.class_ids); gaps are fine (COCO).
LABEL_IDS = [((1, 2, 3), 3, True), ((2,), 3, True), ((1, 90), 90, True), ((1, 3), 2, False),
             ((1, 5), 3, False), ((1, 91), 90, False), ((0, 1), 3, False), ((-1, 2), 3, False)]


@pytest.mark.parametrize("ids, num_classes, usable", LABEL_IDS, ids=repr)
def test_every_consumer_gives_a_label_map_one_verdict(tmp_path, ids, num_classes, usable):
    """The same ids as the label_map hparam (a mapping), as a label-map file (read when the
    config is resolved), as a mapping given to `resolve`, as names found in a json or the
    records, and as the classes an export records: every consumer accepts them or refuses
    them with a user error."""
    names = {i: f"class{i}" for i in ids}
    path = tmp_path / "names.yaml"
    path.write_text(yaml.safe_dump(names))

    overrides = {"num_classes": num_classes}
    verdicts = {
        "rule": not any(bounds.class_ids(num_classes).problem(i) for i in ids),
        "hparam": verdict(lambda: hparams_config.get_detection_config(
            "efficientdet-d0", dict(overrides, label_map=names))),
        "file": verdict(lambda: run_dir.load_run_config(
            "efficientdet-d0", dict(overrides, label_map=str(path)))),
        "resolve (mapping)": verdict(lambda: label_maps.resolve(names, num_classes)),
        "resolve (found)": verdict(lambda: label_maps.resolve(None, num_classes,
                                                               [("json", names)])),
        "export settings": _export_settings_take(tmp_path, names, num_classes),
    }
    assert set(verdicts.values()) == {usable}, verdicts


@pytest.mark.parametrize("num_classes", [90, 20, 3])
def test_a_model_without_a_label_map_gets_one_set_of_names(num_classes):
    """COCO's names for a 90-class model and none for another, whether training resolves the
    names it stores or a model is drawn and evaluated with `for_config`."""
    drawn = label_maps.for_config(tiny_config(num_classes=num_classes, label_map=None))
    stored = label_maps.resolve(None, num_classes)
    assert drawn == (stored or {}) == label_maps.default_names(num_classes)
    assert bool(drawn) == (num_classes == 90)


# -------------------------------------------------------------------------------------------------
# max_instances_per_image
# -------------------------------------------------------------------------------------------------
INSTANCE_NAMES = ("max_instances", "max_instances_per_image")


def _named_defaults(body, prefix=""):
    """(qualified name, is a class) of every function with a parameter in INSTANCE_NAMES that
    has a default, and of every class with such an annotated field, in an ast `body`."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            if any(isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                   and n.target.id in INSTANCE_NAMES and n.value is not None
                   for n in node.body):
                yield prefix + node.name, True
            yield from _named_defaults(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef):
            args = node.args
            with_default = (args.posonlyargs + args.args)[len(args.posonlyargs + args.args)
                                                          - len(args.defaults):]
            with_default += [a for a, d in zip(args.kwonlyargs, args.kw_defaults) if d]
            if any(a.arg in INSTANCE_NAMES for a in with_default):
                yield prefix + node.name, False


def _instance_defaults():
    """{where: default} of every parameter or dataclass field named like max_instances that
    has a default, found by reading the project's modules (so a new one cannot be missed)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "*.py"))
                       + glob.glob(os.path.join(ROOT, "dataset", "*.py"))):
        with open(path, encoding="utf-8") as f:
            named = list(_named_defaults(ast.parse(f.read()).body))
        if not named:
            continue
        module = importlib.import_module(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
        for qualname, is_class in named:
            obj = module
            for part in qualname.split("."):
                obj = getattr(obj, part)
            where = f"{module.__name__}.{qualname}"
            if is_class:
                found.update({f"{where}.{f.name}": f.default for f in dataclasses.fields(obj)
                              if f.name in INSTANCE_NAMES})
            else:
                found.update({f"{where}({p.name})": p.default
                              for p in inspect.signature(obj).parameters.values()
                              if p.name in INSTANCE_NAMES})
    return found


def test_every_default_instance_limit_is_one_number():
    """The hparam's default is bounds.DEFAULT_MAX_INSTANCES, and so is every default the code
    gives a max_instances parameter or field (the converters' flags, the validator, the
    calibration records, ...)."""
    assert LIMIT == bounds.DEFAULT_MAX_INSTANCES
    defaults = _instance_defaults()
    assert len(defaults) >= 5, defaults  # the converters' flags, the validator and its checks
    assert {where: d for where, d in defaults.items() if d != LIMIT} == {}, defaults


@pytest.mark.parametrize("extra", [0, 1])
def test_the_default_instance_limit_gives_one_verdict(tmp_path, extra):
    """An image with as many boxes as the default allows passes the validator, main.py's
    checks and the input pipeline (training and eval); one more box fails them all."""
    count = LIMIT + extra
    values = record_values(labels=[1] * count, boxes=[(0.1, 0.1, 0.2, 0.2)] * count)
    for_eval, for_training = _verdicts(values, tmp_path)
    verdicts = {**for_eval, **for_training}
    assert set(verdicts.values()) == {not extra}, verdicts


# -------------------------------------------------------------------------------------------------
# fpn_name
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vfpn", "bifpn", "bifpn_sum", "fpn", "VFPN", "", None])
def test_validate_and_the_registry_give_an_fpn_name_one_verdict(name):
    verdicts = {
        "validate": verdict(lambda: hparams_config.get_detection_config(
            "efficientdet-d0", {"fpn_name": name})),
        "registry": verdict(lambda: vfpn.get_fpn_builder(name)),
    }
    assert set(verdicts.values()) == {name in vfpn.FPN_BUILDERS}, verdicts


@pytest.mark.parametrize("name", sorted(vfpn.FPN_BUILDERS))
def test_which_feature_networks_have_the_vertical_stage(name):
    """What the config says (checkpoint_io.DetectorShape.of_config), what the built variables
    show to a checkpoint reader (of_checkpoint) and to VFPN's training knobs (branch
    variables) agree on whether `name` has VFPN's vertical stage."""
    config = tiny_config(fpn_name=name)
    with tf.Graph().as_default():
        features = {level: tf1.placeholder(tf.float32, [1, 128 >> level, 128 >> level, 8])
                    for level in range(config.min_level, config.max_level + 1)}
        vfpn.get_fpn_builder(name)(features, config, False)
        variables = tf1.global_variables()
    shapes = {v.op.name: v.shape.as_list() for v in variables}
    from_config = DetectorShape.of_config(config).fpn_name
    assert DetectorShape.of_checkpoint(shapes).fpn_name == from_config
    has_branch = bool(vfpn_training.branch_variables(variables))
    assert has_branch == (from_config == "vfpn") == (name == "vfpn")


# -------------------------------------------------------------------------------------------------
# yxyx to COCO xywh
# -------------------------------------------------------------------------------------------------
class _Fixed:
    """A detector that returns the given detections, one per image, in order."""

    def __init__(self, found):
        self.found = found

    def predict(self, images, score_thresh=None):
        return [self.found.pop(0)]


def test_eval_rows_the_metric_ground_truth_and_inference_agree_on_coco_boxes(tmp_path):
    """The same yxyx boxes (original pixels) as eval's detection rows (coco_json.detection_rows,
    which the eval graph builds) and as a detector's output (inference.coco_results) give one
    results json; as the records' ground truth, they are matched exactly (AP 1)."""
    boxes = np.array([[[2.0, 3.0, 17.5, 21.0], [0.5, 1.5, 9.0, 30.0]],
                      [[4.0, 4.0, 8.0, 12.25], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    scores = np.array([[0.9, 0.6], [0.8, 0.0]], np.float32)
    classes = np.array([[1, 2], [3, 0]], np.int32)
    ids = np.array([5, 9])
    rows = coco_json.detection_rows(tf.constant(ids, tf.float32), tf.constant(boxes),
                                    tf.constant(scores), tf.constant(classes))
    gt = np.full([2, 2, 7], -1.0, np.float32)
    gt[:, :, :4], gt[:, :, 4], gt[:, :, 5], gt[:, :, 6] = boxes, 0.0, 0.0, classes
    gt[1, 1] = -1.0  # padding
    metric = coco_metric.EvaluationMetric()
    metric.update_state(np.asarray(rows), gt, ids)
    assert metric.result()["AP"] == pytest.approx(1.0)
    metric.write_detections(str(tmp_path / "eval.json"))
    from_eval = json.loads((tmp_path / "eval.json").read_text())

    images = []
    for image_id in ids:
        images.append((int(image_id), str(tmp_path / f"{image_id}.png")))
        Image.new("RGB", (40, 30)).save(images[-1][1])
    found = [Detections(boxes[b, :n], scores[b, :n], classes[b, :n])
             for b, n in enumerate((2, 1))]
    inference.coco_results(_Fixed(found), images, str(tmp_path / "infer.json"))
    from_inference = json.loads((tmp_path / "infer.json").read_text())
    assert from_eval == from_inference
    assert from_eval[0] == {"image_id": 5, "category_id": 1, "bbox": [3.0, 2.0, 18.0, 15.5],
                            "score": pytest.approx(0.9)}

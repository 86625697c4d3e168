"""Bad values, model directories, checkpoints and exported model files, as a user gives them to
main.py and model_inspect.py: each case asserts the exit status, one error line naming the
cause, and that no file that existed before changed (tests/badinput.py).

Every refusal in the tables happens before any graph is built (the `no_graphs` fixture fails a
case that gets that far) and adds no file. A few tests below train or evaluate the tiny model
for a step: a label map given again to an existing model directory, a read-only model
directory, and runs that fail after they created their model directory.

Rows are (id, command, arguments, pattern of the error line, setup). Arguments are formatted
with `{records}` (the VOC sample's tfrecord/ directory), `{model}` (a checkpoint directory with
config.yaml: the tiny d0 model, 3 classes), `{tmp}` (the case's own empty directory), `{bare}`
(the same checkpoint without config.yaml, made by the setups that need it), `{street}` (an
image) and `{files}` (whole exported model files of each format, see `model_files`).
"""

import logging
import os
import re
import shutil
import stat

import pytest
import yaml

from badinput import check, run_inspect, run_main, snapshot
from conftest import HAVE_ONNX, HAVE_OPENVINO, SMALL, STREET, tiny_hparams

TINY20 = tiny_hparams(num_classes=20)
TINY3 = tiny_hparams(num_classes=3)
# For the runs that fail after the graph is built: what they check needs a model, not this one.
SMALL20 = tiny_hparams(num_classes=20, **SMALL)
SMALL3 = tiny_hparams(num_classes=3, **SMALL)
TRAIN = ["--mode=train", "--training_file_pattern={records}/pascal*.tfrecord",
         "--train_batch_size=2", "--num_examples_per_epoch=2", "--num_epochs=1",
         "--model_dir={tmp}/m"]
# Ground truth from the records (the sample's json lists all 20 VOC categories; the model has 3).
EVAL = ["--mode=eval", "--validation_file_pattern={records}/pascal*.tfrecord",
        "--eval_samples=4", "--eval_batch_size=2"]


# -------------------------------------------------------------------------------------------------
# Setups: files a case needs before its snapshot (they then must stay unchanged)
# -------------------------------------------------------------------------------------------------
def _own_checkpoint_index(directory):
    """Point `directory`'s 'checkpoint' index at its own files: a copied index may name the
    original's absolute paths, so the copy's damage would go unread."""
    path = os.path.join(directory, "checkpoint")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(re.sub(r'"[^"]*/([^"/]+)"', r'"\1"', text))


def _bare(world):
    """{tmp}/bare: the checkpoint without its config.yaml, as downloaded checkpoints come."""
    bare = os.path.join(world["tmp"], "bare")
    shutil.copytree(world["model"], bare, ignore=shutil.ignore_patterns("config.yaml"))
    _own_checkpoint_index(bare)


def _afile(world):
    with open(os.path.join(world["tmp"], "afile"), "w") as f:
        f.write("a regular file\n")


def _cut(path, keep):
    """Keep the first `keep` bytes of `path` (a fraction when < 1)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep) if keep < 1 else keep])


def _damaged(part, keep):
    """A setup: {tmp}/bare with its checkpoint's `part` ('data' or 'index') cut, or removed
    (keep=None)."""
    def setup(world):
        _bare(world)
        directory = os.path.join(world["tmp"], "bare")
        name = next(n for n in os.listdir(directory) if f".{part}" in n)
        if keep is None:
            os.remove(os.path.join(directory, name))
        else:
            _cut(os.path.join(directory, name), keep)
    return setup


def _damaged_model(world):
    """{model} itself with its latest checkpoint's data file cut short."""
    _own_checkpoint_index(world["model"])
    name = next(n for n in os.listdir(world["model"]) if ".data-" in n)
    _cut(os.path.join(world["model"], name), 0.5)


def _label_map_file(ids):
    def setup(world):
        with open(os.path.join(world["tmp"], "names.yaml"), "w") as f:
            yaml.safe_dump({i: f"class{i}" for i in ids}, f)
    return setup


def _as_user(monkeypatch):
    """Permissions as a user sees them: root may write anywhere, so there os.access is made to
    read the owner's mode bits (the files' real writes are still caught by the snapshot)."""
    if os.geteuid() != 0:
        return

    def access(path, mode, *args, **kwargs):
        st_mode = os.stat(path).st_mode
        bits = ((os.R_OK, stat.S_IRUSR), (os.W_OK, stat.S_IWUSR), (os.X_OK, stat.S_IXUSR))
        return all(st_mode & bit for flag, bit in bits if mode & flag)

    monkeypatch.setattr(os, "access", access)


@pytest.fixture
def read_only(monkeypatch):
    """Make directories read-only for this test (mode 0555, seen as a user sees it); their
    modes are restored afterwards."""
    _as_user(monkeypatch)
    made = []

    def make(path):
        made.append((path, os.stat(path).st_mode))
        os.chmod(path, 0o555)

    yield make
    for path, mode in made:
        os.chmod(path, mode)


@pytest.fixture
def no_graphs(monkeypatch):
    """Fail a case that builds a graph: every refusal here must come first."""
    import det_model_fn
    import serving

    def refuse(*args, **kwargs):
        raise AssertionError("a graph was built before the input was refused")

    for module, name in ((serving, "build_raw_network"), (serving, "build_serving_graph"),
                         (det_model_fn, "make_model_fn")):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Whole model files of each exported format, made small: {'tflite', 'pb', 'saved_model'
    (directory), 'onnx' (None without onnx), 'xml' (None without OpenVINO)}. A truncated copy
    must be refused before its runtime reads it, whatever the model inside."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("model_files")
    double = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    concrete = double.get_concrete_function()
    files = {"tflite": str(root / "m.tflite"), "pb": str(root / "m.pb"),
             "saved_model": str(root / "sm"), "onnx": None, "xml": None}
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], double)
    (root / "m.tflite").write_bytes(converter.convert())
    (root / "m.pb").write_bytes(concrete.graph.as_graph_def().SerializeToString())
    module = tf.Module()
    module.double = double
    tf.saved_model.save(module, files["saved_model"])
    if HAVE_ONNX:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", ["image_arrays:0"], ["out"])], "g",
            [helper.make_tensor_value_info("image_arrays:0", TensorProto.UINT8, [1, 8, 8, 3])],
            [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 8, 8, 3])],
            [helper.make_tensor("w", TensorProto.FLOAT, [256], [0.5] * 256)])
        files["onnx"] = str(root / "m.onnx")
        onnx.save(helper.make_model(graph), files["onnx"])
    if HAVE_OPENVINO:
        import openvino as ov

        x = ov.opset8.parameter([1, 8, 8, 3], ov.Type.f32, name="image_arrays:0")
        weights = ov.opset8.constant([[[[0.5] * 3] * 8] * 8], ov.Type.f32)
        files["xml"] = str(root / "ov" / "m.xml")
        ov.save_model(ov.Model([ov.opset8.multiply(x, weights)], [x]), files["xml"],
                      compress_to_fp16=False)
    return files


def _truncated(kind, keep=0.5, suffix=None):
    """A setup: the `kind` model file of `model_files` copied to {tmp} and cut to `keep`; for
    OpenVINO `suffix` says which of .xml and .bin is cut; for a SavedModel its saved_model.pb."""
    def setup(world, files):
        if files[kind] is None:
            pytest.skip(f"no {kind} runtime on this Python")
        if kind == "saved_model":
            target = os.path.join(world["tmp"], "sm")
            shutil.copytree(files[kind], target)
            _cut(os.path.join(target, "saved_model.pb"), keep)
        elif kind == "xml":
            target = os.path.join(world["tmp"], "m.xml")
            for ext in (".xml", ".bin"):
                shutil.copy(files[kind][:-4] + ext, target[:-4] + ext)
            _cut(target[:-4] + suffix, keep)
        else:
            target = os.path.join(world["tmp"], "m." + kind)
            shutil.copy(files[kind], target)
            _cut(target, keep)
    return setup


def _format(args, world):
    values = dict(world, bare=os.path.join(world["tmp"], "bare"), street=STREET)
    return [a.format(**values) for a in args]


def _run(case, world, extra_setup_args=()):
    _, command, args, pattern, setup = case
    if setup:
        setup(world, *extra_setup_args)
    before = snapshot(world["root"])
    run = run_main if command == "main" else run_inspect
    outcome = run(_format(args, world))
    check(outcome, 1, pattern, before, world["root"], may_add=False)
    return outcome


# -------------------------------------------------------------------------------------------------
# main.py: every number flag out of range, hparams out of range, model directories, checkpoints
# -------------------------------------------------------------------------------------------------
def _flag(name, value, pattern):
    return (f"flag-{name}={value}", "main", TRAIN + [f"--hparams={TINY20}", f"--{name}={value}"],
            pattern, None)


def _hparam(override, pattern):
    return (f"hparam-{override}", "main", TRAIN + [f"--hparams={TINY20},{override}"], pattern,
            None)


MAIN_CASES = [
    _flag("train_batch_size", 70000, r"--train_batch_size must be <= 65536, got 70000 "
                                     r"\(allowed: \[1, 65536\]\)"),
    _flag("eval_batch_size", 0, r"--eval_batch_size must be >= 1, got 0"),
    _flag("eval_samples", 0, r"--eval_samples must be >= 1, got 0"),
    _flag("num_examples_per_epoch", -3, r"--num_examples_per_epoch must be >= 1, got -3"),
    _flag("num_epochs", 0, r"--num_epochs must be >= 1, got 0"),
    _flag("min_eval_interval", -1, r"--min_eval_interval must be >= 0, got -1"),
    _flag("eval_timeout", 0, r"--eval_timeout must be > 0, got 0"),
    _flag("tf_random_seed", -1, r"--tf_random_seed must be >= 0, got -1 "
                                r"\(allowed: \[0, 2147483647\]\)"),
    _flag("save_checkpoints_steps", 0, r"--save_checkpoints_steps must be >= 1, got 0"),
    _flag("keep_checkpoint_max", -1, r"--keep_checkpoint_max must be >= 0, got -1"),
    _flag("log_every_n_steps", 0, r"--log_every_n_steps must be >= 1, got 0"),
    _flag("log_every_secs", -5, r"--log_every_secs must be >= 0, got -5.0"),
    _flag("cpu_replicas", 100, r"--cpu_replicas must be <= 64, got 100"),
    _flag("num_cores", 0, r"--num_cores must be >= 1, got 0"),
    _flag("iterations_per_loop", 0, r"--iterations_per_loop must be >= 1, got 0"),
    _flag("num_cores_per_replica", 0, r"--num_cores_per_replica must be >= 1, got 0"),
    _flag("input_partition_dims", 0, r"--input_partition_dims must be >= 1, got 0"),
    # The findings: accepted (or stored in config.yaml), a traceback, or a crash at 18 GB.
    _hparam("learning_rate=-0.5", r"hparam 'learning_rate' must be > 0, got -0.5"),
    _hparam("momentum=-5", r"hparam 'momentum' must be >= 0, got -5.0 \(allowed: \[0, 1\)\)"),
    _hparam("moving_average_decay=1.5", r"hparam 'moving_average_decay' is a decay .*must be "
                                        r"< 1, got 1.5 \(allowed: \[0, 1\)\)"),
    _hparam("train_scale_min=2.0,train_scale_max=0.5",
            r"hparams need train_scale_min <= train_scale_max .*got train_scale_min=2.0, "
            r"train_scale_max=0.5"),
    _hparam("survival_prob=abc", r"hparam 'survival_prob' expects float or None, got str "
                                 r"'abc'"),
    _hparam("nms_configs.iou_thresh=5", r"hparam 'nms_configs.iou_thresh' is an IoU: must be "
                                        r"<= 1, got 5.0"),
    _hparam("image_size=12800", r"hparam 'image_size' is 12800x12800 \(WxH\); each side must "
                                r"be <= 4096"),
    _hparam("alpha=1.5", r"hparam 'alpha' .*must be <= 1, got 1.5"),
    _hparam("weight_decay=-1e-4", r"hparam 'weight_decay' must be >= 0, got -0.0001"),
    _hparam("batch_norm_momentum=1", r"hparam 'batch_norm_momentum' .*must be < 1, got 1.0"),
    _hparam("bn_recalibration_images=-1", r"hparam 'bn_recalibration_images' .*must be >= 0"),
    _hparam("nms_configs.max_output_size=0", r"'nms_configs.max_output_size' .*must be >= 1"),
    _hparam("max_instances_per_image=0", r"hparam 'max_instances_per_image' must be >= 1"),
    _hparam("fpn_name=bofpn", r"hparam 'fpn_name' got 'bofpn'; valid values: 'vfpn'"),
    _hparam("first_lr_drop_epoch=300.0", r"hparams need first_lr_drop_epoch <= "
                                         r"second_lr_drop_epoch; got first_lr_drop_epoch="
                                         r"300.0, second_lr_drop_epoch=250.0"),
    _hparam("vfpn_branch_start=0.8,vfpn_branch_warmup=0.4",
            r"vfpn_branch_start \+ vfpn_branch_warmup <= 1"),
    _hparam("mean_rgb=[0.5,0.5]", r"hparam 'mean_rgb' needs 3 values \(R, G, B\)"),
    _hparam("learning_rate=None", r"hparam 'learning_rate' expects float \(default 0.08\), "
                                  r"got NoneType None"),
    _hparam("var_exclude_expr='class-predict/(('", r"hparam 'var_exclude_expr' is not a "
                                                    r"regular expression"),
    _hparam("min_level=2", r"hparam 'min_level' is a pyramid level .*must be >= 3, got 2"),
    _hparam("label_map={tmp}/missing.yaml", r"label map file '.*/missing.yaml' does not exist"),
    # Model directories.
    ("model-dir-is-a-file", "main", TRAIN[:-1] + [f"--hparams={TINY20}", "--model_dir={tmp}/afile"],
     r"--model_dir=.*/afile is a file, not a directory; choose another directory", _afile),
    ("eval-model-dir-is-a-file", "main", EVAL + ["--model_dir={tmp}/afile"],
     r"--model_dir=.*/afile is a file, not a directory", _afile),
    ("model-dir-under-a-file", "main", TRAIN[:-1] + [f"--hparams={TINY20}",
                                                     "--model_dir={tmp}/afile/m"],
     r"--model_dir=.*/afile/m cannot be created: '.*/afile' is a file, not a directory",
     _afile),
    ("testdev-dir-is-a-file", "main", EVAL + ["--model_dir={model}", "--testdev_dir={tmp}/afile"],
     r"--testdev_dir '.*/afile' is a file, not a directory; choose another directory", _afile),
    # Checkpoints: another model's, truncated, missing parts.
    ("eval-bare-checkpoint-other-classes", "main",
     EVAL + ["--model_dir={bare}", f"--hparams={tiny_hparams(num_classes=5)}"],
     r"--model_dir=.*/bare: checkpoint '.*model.ckpt-0' holds a custom efficientnet-b0 detector "
     r"\(16 filters, 2 cells, 1 head layers, vfpn, 9 anchors per location\) with 3 classes, but "
     r"this model \(efficientdet-d0\) has 5 classes; pass --hparams=num_classes=3", _bare),
    ("eval-bare-checkpoint-other-model", "main",
     EVAL + ["--model_dir={bare}", "--model_name=efficientdet-d1", "--hparams=num_classes=3"],
     r"has efficientnet-b1 backbone, 88 filters, 4 cells, 3 head layers; pass "
     r"--model_name=efficientdet-d0 --hparams=fpn_num_filters=16,fpn_cell_repeats=2,"
     r"box_class_repeats=1,num_classes=3", _bare),
    ("resume-bare-checkpoint-other-model", "main",
     ["--mode=train", "--training_file_pattern={records}/pascal*.tfrecord",
      "--model_dir={bare}", "--hparams=image_size=128,num_classes=3"],
     r"--model_dir=.*/bare: checkpoint .* but this model \(efficientdet-d0\) has 64 filters, "
     r"3 cells, 3 head layers", _bare),
    ("ckpt-other-feature-network", "main",
     TRAIN + [f"--hparams={TINY20},fpn_name=bifpn", "--ckpt={model}"],
     r"--ckpt=.*: checkpoint .* has bifpn feature network; pass --hparams=fpn_name=vfpn", None),
    ("ckpt-other-classes-without-skip-mismatch", "main",
     TRAIN + [f"--hparams={TINY20},skip_mismatch=False", "--ckpt={model}"],
     r"--ckpt=.* has 20 classes; pass --hparams=num_classes=3", None),
    ("ckpt-truncated-data", "main", TRAIN + [f"--hparams={TINY20}", "--ckpt={bare}"],
     r"--ckpt: checkpoint '.*/bare/model.ckpt-0' is truncated: its data files hold \d+ bytes "
     r"of the \d+ its index lists", _damaged("data", 0.5)),
    ("ckpt-truncated-index", "main", TRAIN + [f"--hparams={TINY20}", "--ckpt={bare}"],
     r"--ckpt: checkpoint '.*model.ckpt-0': its index file .*\.index cannot be read",
     _damaged("index", 0.3)),
    ("ckpt-without-data-file", "main",
     TRAIN + [f"--hparams={TINY20}", "--ckpt={bare}/model.ckpt-0"],
     r"--ckpt: checkpoint '.*model.ckpt-0' has no data file", _damaged("data", None)),
    ("eval-checkpoint-not-written-by-training", "main", EVAL + ["--model_dir={model}"],
     r"--model_dir=.*: checkpoint '.*model.ckpt-0' has no global_step: it was not written by "
     r"training", lambda world: _own_checkpoint_index(world["model"])),
    ("eval-truncated-checkpoint-in-model-dir", "main", EVAL + ["--model_dir={model}"],
     r"--model_dir=.*: checkpoint '.*model.ckpt-0' is truncated", _damaged_model),
    ("label-map-ids-above-num-classes-on-existing-dir", "main",
     EVAL + ["--model_dir={model}", "--hparams=label_map={tmp}/names.yaml"],
     r"label_map '.*names.yaml' has class id 5 but num_classes is 3", _label_map_file([1, 5])),
]


@pytest.mark.parametrize("case", MAIN_CASES, ids=[c[0] for c in MAIN_CASES])
def test_main_refuses(case, world, no_graphs):
    _run(case, world)


def test_main_refuses_a_model_dir_it_cannot_write(world, read_only, no_graphs):
    parent = os.path.join(world["tmp"], "locked")
    os.makedirs(os.path.join(parent, "existing"))
    read_only(os.path.join(parent, "existing"))
    read_only(parent)
    for name, pattern in (("new", r"--model_dir=.*/locked/new cannot be created: "
                                  r"'.*/locked' is not writable; choose another directory"),
                          ("existing", r"--model_dir=.*/locked/existing is not writable")):
        case = (name, "main", TRAIN[:-1] + [f"--hparams={TINY20}",
                                            f"--model_dir={{tmp}}/locked/{name}"], pattern, None)
        _run(case, world)


# -------------------------------------------------------------------------------------------------
# model_inspect.py: number flags, hparams, every runmode that restores a checkpoint, model files
# -------------------------------------------------------------------------------------------------
def _inspect_flag(args, pattern):
    return ("inspect-" + "-".join(a.strip("-") for a in args), "inspect",
            ["--runmode=infer", "--ckpt_path={model}", "--input_image={street}",
             "--output_image_dir={tmp}/out"] + args, pattern, None)


def _restoring(runmode, *args):
    return (f"{runmode}-bare-checkpoint-other-classes", "inspect",
            [f"--runmode={runmode}", "--ckpt_path={bare}",
             f"--hparams={tiny_hparams(num_classes=5)}", *args],
            r"--ckpt_path=.*/bare: checkpoint '.*model.ckpt-0' holds a custom efficientnet-b0 "
            r"detector .* with 3 classes, but this model \(efficientdet-d0\) has 5 classes; pass "
            r"--hparams=num_classes=3", _bare)


INSPECT_CASES = [
    # The findings: 1.5 printed '0 detections', -1 ended in a traceback.
    _inspect_flag(["--min_score_thresh=1.5"], r"--min_score_thresh must be <= 1, got 1.5 "
                                              r"\(allowed: \[0, 1\]\)"),
    _inspect_flag(["--max_boxes_to_draw=-1"], r"--max_boxes_to_draw must be >= 1, got -1 "
                                              r"\(allowed: \[1, 10000\]\)"),
    _inspect_flag(["--min_score_thresh=-0.2"], r"--min_score_thresh must be >= 0, got -0.2"),
    _inspect_flag(["--max_boxes_to_draw=20000"], r"--max_boxes_to_draw must be <= 10000"),
    _inspect_flag(["--line_thickness=0"], r"--line_thickness must be >= 1, got 0"),
    _inspect_flag(["--threads=-1"], r"--threads must be >= 0, got -1"),
    _inspect_flag(["--batch_size=-2"], r"--batch_size must be >= 0, got -2"),
    _inspect_flag(["--batch_size=100000"], r"--batch_size must be <= 65536, got 100000"),
    _inspect_flag(["--bm_runs=-1"], r"--bm_runs must be >= 1, got -1"),
    ("tflite-input-size-too-large", "inspect",
     ["--runmode=saved_model", "--saved_model_dir={tmp}/sm", "--tflite_path={tmp}/m.tflite",
      "--tflite_input_size=8192x4096"],
     r"--tflite_input_size '8192x4096': each side must be <= 4096", None),
    ("dry-batch-zero", "inspect", ["--runmode=dry", "--batch_size=0", "--logdir={tmp}/d"],
     r"--batch_size must be >= 1 for --runmode=dry", None),
    _inspect_flag(["--hparams=nms_configs.iou_thresh=5"],
                  r"hparam 'nms_configs.iou_thresh' is an IoU: must be <= 1, got 5.0"),
    _inspect_flag(["--hparams=nms_configs.score_thresh=2"],
                  r"hparam 'nms_configs.score_thresh' is a score: must be <= 1, got 2.0"),
    _inspect_flag(["--hparams=image_size=12800"], r"hparam 'image_size' is 12800x12800"),
    _inspect_flag(["--hparams=label_map=coco"],
                  r"label_map 'coco' has class id 90 but num_classes is 3"),
    # Every runmode that restores --ckpt_path: another model's checkpoint, before any graph.
    _restoring("dry", "--logdir={tmp}/d"),
    _restoring("freeze", "--logdir={tmp}/f"),
    _restoring("bm", "--bm_runs=1"),
    _restoring("ckpt"),
    _restoring("infer", "--input_image={street}", "--output_image_dir={tmp}/out"),
    _restoring("saved_model", "--saved_model_dir={tmp}/sm"),
    _restoring("onnx", "--onnx_path={tmp}/m.onnx"),
    _restoring("openvino", "--openvino_path={tmp}/ov/m.xml"),
    ("ckpt-other-model-name", "inspect",
     ["--runmode=ckpt", "--ckpt_path={bare}", "--model_name=efficientdet-d2"],
     r"has efficientnet-b2 backbone, 112 filters, 5 cells, 3 head layers, 90 classes; pass "
     r"--model_name=efficientdet-d0", _bare),
    ("ckpt-truncated-data", "inspect", ["--runmode=ckpt", "--ckpt_path={bare}"],
     r"--ckpt_path: checkpoint '.*model.ckpt-0' is truncated", _damaged("data", 0.9)),
    ("freeze-truncated-index", "inspect",
     ["--runmode=freeze", "--ckpt_path={bare}/model.ckpt-0", "--logdir={tmp}/f"],
     r"--ckpt_path: checkpoint '.*model.ckpt-0': its index file .* cannot be read",
     _damaged("index", 0.5)),
    ("infer-checkpoint-without-data", "inspect",
     ["--runmode=infer", "--ckpt_path={bare}/model.ckpt-0", "--input_image={street}"],
     r"--ckpt_path: checkpoint '.*model.ckpt-0' has no data file", _damaged("data", None)),
    ("ckpt-path-is-a-text-file", "inspect", ["--runmode=ckpt", "--ckpt_path={tmp}/afile"],
     r"--ckpt_path: checkpoint '.*afile' not found", _afile),
]


@pytest.mark.parametrize("case", INSPECT_CASES, ids=[c[0] for c in INSPECT_CASES])
def test_inspect_refuses(case, world, no_graphs):
    _run(case, world)


def _exported(kind, path, pattern, keep=0.5, suffix=None):
    return (f"truncated-{kind}{suffix or ''}-{keep}", "inspect",
            ["--runmode=saved_model_infer", f"--saved_model_dir={{tmp}}/{path}",
             "--input_image={street}"], pattern, _truncated(kind, keep, suffix))


MODEL_FILE_CASES = [
    # A truncated .tflite crashed the process inside TFLite (a segfault: nothing to catch).
    _exported("tflite", "m.tflite", r"'.*m.tflite' is truncated or corrupted: it refers past "
                                    r"its end \(\d+ bytes\); export it again"),
    _exported("tflite", "m.tflite", r"'.*m.tflite' is truncated or corrupted", keep=0.98),
    _exported("tflite", "m.tflite", r"'.*m.tflite' is not a TFLite model \(no 'TFL3' "
                                    r"flatbuffer identifier\)", keep=6),
    # Protobuf formats carry no length: a cut at a field boundary parses, and the model's
    # missing parts are named instead.
    _exported("pb", "m.pb", r"'.*m.pb' (is not a frozen GraphDef|lacks the serving nodes)"),
    _exported("saved_model", "sm", r"'.*sm' is not a loadable SavedModel|SavedModel '.*sm'"),
    _exported("onnx", "m.onnx", r"'.*m.onnx' is not a loadable ONNX model"),
    _exported("xml", "m.xml", r"'.*m.xml' is not a loadable OpenVINO model", suffix=".xml"),
    _exported("xml", "m.xml", r"'.*m.xml' is not a loadable OpenVINO model", suffix=".bin"),
]


@pytest.mark.parametrize("case", MODEL_FILE_CASES, ids=[c[0] for c in MODEL_FILE_CASES])
def test_truncated_model_files_are_refused_before_their_runtime(case, world, model_files):
    _run(case, world, (model_files,))


def test_whole_model_files_pass_the_checks(model_files):
    """The checks refuse what is cut short, not the formats themselves."""
    import detectors

    detectors.check_tflite_file(model_files["tflite"])


# -------------------------------------------------------------------------------------------------
# Runs that do work: a label map on an existing directory, read-only eval, failed starts
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(voc_records, tmp_path_factory):
    """A model directory trained for one step with label_map=<yaml path> (demo.sh's first
    run): {'dir', 'flag' (that --hparams value), 'config' (its config.yaml text)}."""
    root = tmp_path_factory.mktemp("trained")
    names = root / "names.yaml"
    names.write_text(yaml.safe_dump({1: "aeroplane", 2: "bicycle", 3: "bird"}))
    flag = f"--hparams={SMALL3},moving_average_decay=0,label_map={names}"
    model_dir = root / "m"
    args = [a.format(records=voc_records / "tfrecord", tmp=root) for a in TRAIN] + [flag]
    outcome = run_main(args)
    assert outcome.status == 0, outcome.stderr
    return {"dir": str(model_dir), "flag": flag, "config": (model_dir / "config.yaml").read_text()}


def _copy_trained(trained, world, name):
    target = os.path.join(world["tmp"], name)
    shutil.copytree(trained["dir"], target)
    _own_checkpoint_index(target)
    return target


def test_label_map_given_again_to_its_model_directory(trained, world):
    """demo.sh's second run: the same label_map=<yaml path> on the directory it trained."""
    assert "label_map:\n  1: aeroplane\n  2: bicycle\n  3: bird\n" in trained["config"]
    model_dir = _copy_trained(trained, world, "m")
    before = snapshot(world["root"])
    again = run_main(_format(EVAL, world) + [f"--model_dir={model_dir}", trained["flag"]])
    check(again, 0, None, before, world["root"])
    assert "eval at step 1: AP=" in again.stdout
    with open(os.path.join(model_dir, "config.yaml")) as f:
        assert f.read() == trained["config"]


def test_read_only_model_dir_is_evaluated_without_recording(trained, world, read_only,
                                                            caplog):
    """Eval prints its metrics; one warning line (a log line) says nothing was recorded."""
    model_dir = _copy_trained(trained, world, "ro")
    read_only(model_dir)
    before = snapshot(world["root"])
    with caplog.at_level(logging.WARNING, logger="absl"):
        outcome = run_main(_format(EVAL, world) + [f"--model_dir={model_dir}"])
    check(outcome, 0, None, before, world["root"], may_add=False)
    assert "eval at step 1: AP=" in outcome.stdout
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0] == (f"--model_dir={model_dir} is read-only: nothing was recorded there "
                           f"(no run record, eval_history.json entry or archive).")


def _record_with_source_id(world, source_id):
    """{tmp}/bad-00000-of-00001.tfrecord: the sample's first record with another source id,
    which only the input pipeline checks."""
    import tensorflow as tf

    first = next(iter(tf.data.TFRecordDataset(
        sorted(tf.io.gfile.glob(os.path.join(world["records"], "pascal*.tfrecord")))[:1])))
    example = tf.train.Example.FromString(first.numpy())
    example.features.feature["image/source_id"].bytes_list.value[:] = [source_id]
    path = os.path.join(world["tmp"], "bad-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(example.SerializeToString())
    return path


@pytest.mark.heavy
@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "existing-dir"])
def test_a_run_failing_in_the_input_pipeline_leaves_no_model_dir(world, existing, monkeypatch):
    """A bad record beyond what main.py checks up front (a sample of the records) is found by
    the input pipeline, after the directory was made: the run takes back what it wrote."""
    import record_checks

    monkeypatch.setattr(record_checks, "check_training_records", lambda *args: None)
    bad = _record_with_source_id(world, b"img-1")
    model_dir = os.path.join(world["tmp"], "m")
    if existing:  # the user's own file in the directory stays; only what the run made goes
        os.makedirs(model_dir)
        with open(os.path.join(model_dir, "notes.txt"), "w") as f:
            f.write("my notes\n")
    before = snapshot(world["root"])
    outcome = run_main(["--mode=train", f"--training_file_pattern={bad}",
                        f"--model_dir={model_dir}", "--train_batch_size=1",
                        "--num_examples_per_epoch=1", f"--hparams={SMALL3}"])
    check(outcome, 1, r"bad-00000-of-00001.tfrecord.*source_id.*img-1", before, world["root"],
          may_add=False)
    assert os.path.isdir(model_dir) == existing


def test_a_run_failing_in_model_fn_leaves_no_model_dir(world, monkeypatch):
    """A failure while the graph is built (here a user error raised as model_fn starts building
    the network) takes back config.yaml and the run record; so does a bug, which keeps its
    traceback."""
    import efficientdet_arch
    import errors

    def fail(features, config, is_training):
        raise errors.CheckpointError("--ckpt: variable x has another shape")

    model_dir = os.path.join(world["tmp"], "m")
    args = _format(TRAIN, world) + [f"--hparams={SMALL20}"]
    before = snapshot(world["root"])
    monkeypatch.setattr(efficientdet_arch, "build_model", fail)
    check(run_main(args), 1, r"--ckpt: variable x has another shape", before, world["root"],
          may_add=False)
    assert not os.path.exists(model_dir)

    def bug(features, config, is_training):
        raise KeyError("a bug")

    monkeypatch.setattr(efficientdet_arch, "build_model", bug)
    with pytest.raises(KeyError):
        run_main(args)
    assert not os.path.exists(model_dir)

"""Bad outputs, as users give them: every command that writes a file refuses, before any graph is
built or image read, to replace an existing file without --overwrite, and to write over one of
its inputs at all (whatever the spelling: ./x, a symlink); --overwrite replaces exactly the named
outputs. Each refusal asserts the exit status, one error line naming the cause, and that every
pre-existing file is unchanged (tests/badinput.py).

The cases are tables of (id, arguments, pattern of the error line[, working directory]).
Arguments are formatted with `{tmp}` (the case's directory, laid out by `_layout`), `{model}` (a
checkpoint directory with config.yaml: model.ckpt-0.index, checkpoint, ...) and `{records}` (the
VOC sample's TFRecords and json).
"""

import collections
import glob
import os
import sys

import numpy as np
import pytest
from PIL import Image

import errors
from badinput import Outcome, check, run_inspect, run_main, snapshot
from conftest import STREET, sideways_photo

Case = collections.namedtuple("Case", "id args pattern cwd", defaults=(None,))
UNWRITABLE = "/proc/1/vfpn"  # not writable even for root (procfs); nothing is created there


def _layout(tmp):
    """The files the cases collide with: source frames named 0.jpg..2.jpg, an earlier run's
    pictures, export files, a video and links to it, a regular file to block a path."""
    def jpeg(path, size=(64, 40), color=(90, 120, 150)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", size, color).save(path)

    def text(path, content="an earlier run's file"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)

    for i in range(3):
        jpeg(f"{tmp}/frames/{i}.jpg", color=(60 * i, 90, 150))
        jpeg(f"{tmp}/out/{i}.jpg", color=(200, 200, 200))
    text(f"{tmp}/out/notes.txt", "the user's notes")
    jpeg(f"{tmp}/a/x.png")
    jpeg(f"{tmp}/b/x.jpg")
    jpeg(f"{tmp}/dup/x-1.jpg")
    os.makedirs(f"{tmp}/blocked/0.jpg")  # a directory where a picture would go
    os.symlink(f"{tmp}/frames", f"{tmp}/framelink")
    text(f"{tmp}/file.txt", "a regular file")
    text(f"{tmp}/x.onnx.export_settings.yaml", "score_thresh: 0.4\n")
    os.makedirs(f"{tmp}/dir.onnx")
    os.makedirs(f"{tmp}/dir.xml")
    text(f"{tmp}/exp/efficientdet-d0.onnx")
    text(f"{tmp}/ov/m.bin")
    text(f"{tmp}/ov2/m.xml")
    text(f"{tmp}/sm_nonempty/keep.txt")
    text(f"{tmp}/trace.json", "{}")
    text(f"{tmp}/results.json", "{}")
    text(f"{tmp}/ck/e.data-00000-of-00001")
    text(f"{tmp}/logs/efficientdet-d0_train.pb")
    text(f"{tmp}/frz/efficientdet-d0_frozen.pb")
    text(f"{tmp}/testdev/detections_test-dev2017_test_results.json", "[]")
    text(f"{tmp}/hp.yaml", "num_classes: 3\n")
    text(f"{tmp}/video.mp4", "\0stands for a video: refused before it is opened")
    os.symlink(f"{tmp}/video.mp4", f"{tmp}/link.mp4")
    text(f"{tmp}/old.mp4", "\0an earlier annotated video")


def _format(args, world):
    return [a.format(**world) for a in args]


def _world(world):
    _layout(world["tmp"])
    return world


EXISTS = r"already exists?; pass --overwrite to replace (it|them), or choose another"
INPUT = r"(is an input|are inputs) of this run \(--{}\); choose another .* not even with " \
        r"--overwrite"

IMAGES = [
    # Finding 1: source frames 0.jpg..2.jpg, pictures asked into their own directory.
    Case("infer-into-its-input-dir",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
          "--output_image_dir={tmp}/frames"],
         r"--output_image_dir '.*frames': '.*frames/0.jpg' and 2 more are inputs of this run "
         r"\(--input_image\)"),
    Case("infer-into-its-input-dir-overwrite",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
          "--output_image_dir={tmp}/frames", "--overwrite"], INPUT.format("input_image")),
    Case("infer-into-its-input-dir-dot-spelling",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
          "--output_image_dir={tmp}/./frames/", "--overwrite"], INPUT.format("input_image")),
    Case("infer-into-its-input-dir-relative",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image=frames/0.jpg,frames/2.jpg",
          "--output_image_dir=./frames", "--overwrite"], INPUT.format("input_image"), "{tmp}"),
    Case("infer-into-a-symlink-to-its-input-dir",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
          "--output_image_dir={tmp}/framelink", "--overwrite"], INPUT.format("input_image")),
    # Finding 1: a second run into the same directory.
    Case("infer-second-run-same-dir",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
          "--output_image_dir={tmp}/out"],
         r"--output_image_dir '.*out': '.*out/0.jpg' and 2 more already exist; pass "
         r"--overwrite to replace them, or choose another directory \(nothing was written\)"),
    Case("infer-one-earlier-picture",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/1.jpg",
          "--output_image_dir={tmp}/out"], r"'.*out/1.jpg' already exists; pass --overwrite"),
    Case("infer-shared-stem-gets-a-suffix-that-exists",
         ["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/a/x.png,{tmp}/b/x.jpg",
          "--output_image_dir={tmp}/dup"], r"'.*dup/x-1.jpg' already exists"),
    Case("saved-model-infer-into-its-input-dir",
         ["--runmode=saved_model_infer", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/*.jpg", "--output_image_dir={tmp}/frames", "--overwrite"],
         INPUT.format("input_image")),
    Case("saved-model-infer-second-run-same-dir",
         ["--runmode=saved_model_infer", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/*.jpg", "--output_image_dir={tmp}/out"], EXISTS),
    Case("saved-model-benchmark-picture-onto-its-input",
         ["--runmode=saved_model_benchmark", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/0.jpg", "--output_image_dir={tmp}/frames", "--overwrite"],
         r"--output_image_dir '.*frames': '.*frames/0.jpg' is an input of this run "
         r"\(--input_image\)"),
    Case("saved-model-benchmark-picture-exists",
         ["--runmode=saved_model_benchmark", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/0.jpg", "--output_image_dir={tmp}/out"],
         r"'.*out/0.jpg' already exists"),
    Case("infer-output-dir-is-a-file",
         ["--runmode=infer", "--input_image={tmp}/frames/0.jpg",
          "--output_image_dir={tmp}/file.txt"],
         r"--output_image_dir '.*file.txt' is a file, not a directory"),
    Case("infer-output-dir-under-a-file",
         ["--runmode=infer", "--input_image={tmp}/frames/0.jpg",
          "--output_image_dir={tmp}/file.txt/pictures"],
         r"cannot be created: '.*file.txt' is a file, not a directory"),
    Case("infer-output-dir-unwritable",
         ["--runmode=infer", "--input_image={tmp}/frames/0.jpg",
          f"--output_image_dir={UNWRITABLE}"], r"cannot be created: '/proc/1' is not writable"),
    Case("infer-picture-name-is-a-directory",
         ["--runmode=infer", "--input_image={tmp}/frames/0.jpg",
          "--output_image_dir={tmp}/blocked", "--overwrite"],
         r"'.*blocked/0.jpg' is a directory, not a file"),
]

EXPORTS = [
    # Finding 2: a single-file export onto the checkpoint it reads.
    Case("onnx-onto-the-checkpoint-index",
         ["--runmode=onnx", "--ckpt_path={model}", "--onnx_path={model}/model.ckpt-0.index"],
         r"--onnx_path '.*model.ckpt-0.index' is an input of this run \(--ckpt_path\)"),
    Case("onnx-onto-the-checkpoint-index-overwrite",
         ["--runmode=onnx", "--ckpt_path={model}", "--onnx_path={model}/model.ckpt-0.index",
          "--overwrite"], INPUT.format("ckpt_path")),
    Case("onnx-onto-the-checkpoint-data-overwrite",
         ["--runmode=onnx", "--ckpt_path={model}/model.ckpt-0",
          "--onnx_path={model}/model.ckpt-0.data-00000-of-00001", "--overwrite"],
         INPUT.format("ckpt_path")),
    Case("onnx-onto-the-config-it-reads",
         ["--runmode=onnx", "--ckpt_path={model}", "--onnx_path={model}/config.yaml",
          "--overwrite"], INPUT.format("ckpt_path")),
    Case("onnx-onto-the-hparams-file",
         ["--runmode=onnx", "--hparams={tmp}/hp.yaml", "--onnx_path={tmp}/hp.yaml",
          "--overwrite"], INPUT.format("hparams")),
    Case("onnx-onto-an-existing-file",
         ["--runmode=onnx", "--onnx_path={tmp}/file.txt"],
         r"--onnx_path '.*file.txt' already exists; pass --overwrite to replace it, or choose "
         r"another file name"),
    Case("onnx-settings-file-exists",
         ["--runmode=onnx", "--onnx_path={tmp}/x.onnx"],
         r"--onnx_path '.*x.onnx': '.*x.onnx.export_settings.yaml' already exists"),
    Case("onnx-default-path-exists",
         ["--runmode=onnx", "--saved_model_dir={tmp}/exp"],
         r"--saved_model_dir '.*exp/efficientdet-d0.onnx' already exists"),
    Case("onnx-onto-a-directory",
         ["--runmode=onnx", "--onnx_path={tmp}/dir.onnx", "--overwrite"],
         r"--onnx_path '.*dir.onnx' is a directory, not a file"),
    Case("onnx-under-a-file",
         ["--runmode=onnx", "--onnx_path={tmp}/file.txt/m.onnx"],
         r"--onnx_path '.*file.txt/m.onnx' cannot be created: '.*file.txt' is a file"),
    Case("onnx-unwritable", ["--runmode=onnx", f"--onnx_path={UNWRITABLE}/m.onnx"],
         r"cannot be created: '/proc/1' is not writable"),
    Case("openvino-xml-exists",
         ["--runmode=openvino", "--openvino_path={tmp}/ov2/m.xml"],
         r"--openvino_path '.*ov2/m.xml' already exists"),
    Case("openvino-bin-exists",
         ["--runmode=openvino", "--openvino_path={tmp}/ov/m.xml"],
         r"--openvino_path '.*ov/m.xml': '.*ov/m.bin' already exists"),
    Case("openvino-onto-a-directory",
         ["--runmode=openvino", "--openvino_path={tmp}/dir.xml"],
         r"--openvino_path '.*dir.xml' is a directory, not a file"),
    Case("openvino-under-a-file",
         ["--runmode=openvino", "--openvino_path={tmp}/file.txt/m.xml"],
         r"cannot be created: '.*file.txt' is a file"),
    Case("saved-model-tflite-exists",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          "--tflite_path={tmp}/file.txt"], r"--tflite_path '.*file.txt' already exists"),
    Case("saved-model-tflite-onto-the-checkpoint-state",
         ["--runmode=saved_model", "--ckpt_path={model}", "--saved_model_dir={tmp}/new_sm",
          "--tflite_path={model}/checkpoint", "--overwrite"], INPUT.format("ckpt_path")),
    Case("saved-model-tflite-onto-a-directory",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          "--tflite_path={tmp}/frames"], r"--tflite_path '.*frames' is a directory"),
    Case("saved-model-tflite-unwritable",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          f"--tflite_path={UNWRITABLE}/m.tflite"], r"'/proc/1' is not writable"),
    Case("saved-model-openvino-exists",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          "--openvino_path={tmp}/ov2/m.xml"], r"--openvino_path '.*ov2/m.xml' already exists"),
    Case("saved-model-dir-not-empty-even-with-overwrite",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/sm_nonempty", "--overwrite"],
         r"--saved_model_dir '.*sm_nonempty' already exists and is not empty"),
    Case("saved-model-two-flags-one-file",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          "--tflite_path={tmp}/same.xml", "--openvino_path={tmp}/same.xml"],
         r"--openvino_path '.*same.xml' would write '.*same.xml', which --tflite_path writes "
         r"too"),
    Case("saved-model-tflite-onto-its-own-frozen-graph",
         ["--runmode=saved_model", "--saved_model_dir={tmp}/new_sm",
          "--tflite_path={tmp}/new_sm/efficientdet-d0_frozen.pb"],
         r"which --saved_model_dir writes too"),
    Case("bm-trace-exists", ["--runmode=bm", "--trace_filename={tmp}/trace.json"],
         r"--trace_filename '.*trace.json' already exists"),
    Case("bm-trace-onto-the-checkpoint",
         ["--runmode=bm", "--ckpt_path={model}", "--trace_filename={model}/model.ckpt-0.index",
          "--overwrite"], INPUT.format("ckpt_path")),
    Case("bm-trace-onto-a-directory",
         ["--runmode=bm", "--trace_filename={tmp}/frames"], r"is a directory, not a file"),
    Case("bm-results-json-exists", ["--runmode=bm", "--results_json={tmp}/results.json"],
         r"--results_json '.*results.json' already exists; pass --overwrite"),
    Case("bm-results-json-onto-the-checkpoint",
         ["--runmode=bm", "--ckpt_path={model}", "--results_json={model}/checkpoint",
          "--overwrite"], INPUT.format("ckpt_path")),
    Case("benchmark-results-json-exists",
         ["--runmode=saved_model_benchmark", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/0.jpg", "--results_json={tmp}/results.json"],
         r"--results_json '.*results.json' already exists"),
    Case("benchmark-trace-exists",
         ["--runmode=saved_model_benchmark", "--saved_model_dir={model}",
          "--input_image={tmp}/frames/0.jpg", "--trace_filename={tmp}/trace.json"],
         r"--trace_filename '.*trace.json' already exists"),
    Case("export-ckpt-into-the-model-dir",
         ["--runmode=ckpt", "--ckpt_path={model}", "--export_ckpt={model}/ema", "--overwrite"],
         r"--export_ckpt '.*model' already holds checkpoint, config.yaml, model.ckpt-0.index "
         r"of another run"),
    Case("export-ckpt-data-file-exists",
         ["--runmode=ckpt", "--ckpt_path={model}", "--export_ckpt={tmp}/ck/e"],
         r"--export_ckpt '.*ck/e': '.*ck/e.data-00000-of-00001' already exists"),
    Case("export-ckpt-under-a-file",
         ["--runmode=ckpt", "--ckpt_path={model}", "--export_ckpt={tmp}/file.txt/e"],
         r"cannot be created: '.*file.txt' is a file"),
    Case("dry-graph-exists", ["--runmode=dry", "--logdir={tmp}/logs"],
         r"--logdir '.*logs': '.*logs/efficientdet-d0_train.pb' already exists"),
    Case("dry-logdir-is-a-file", ["--runmode=dry", "--logdir={tmp}/file.txt"],
         r"--logdir '.*file.txt' is a file, not a directory"),
    Case("freeze-frozen-graph-exists", ["--runmode=freeze", "--logdir={tmp}/frz"],
         r"'.*frz/efficientdet-d0_frozen.pb' already exists; pass --overwrite"),
    Case("freeze-into-the-model-dir-even-with-overwrite",
         ["--runmode=freeze", "--ckpt_path={model}", "--logdir={model}", "--overwrite"],
         r"--logdir '.*model' already holds checkpoint, config.yaml"),
]

VIDEOS = [
    # Finding 3: the annotated video onto its source, under every spelling.
    Case("video-output-is-the-input",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/video.mp4"],
         r"--output_video '.*video.mp4' is an input of this run \(--input_video\)"),
    Case("video-output-is-the-input-overwrite",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/video.mp4", "--overwrite"],
         INPUT.format("input_video")),
    Case("video-output-is-the-input-dot-spelling",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/./video.mp4", "--overwrite"],
         INPUT.format("input_video")),
    Case("video-output-is-the-input-relative",
         ["--runmode=saved_model_video", "--saved_model_dir={model}", "--input_video=video.mp4",
          "--output_video=./video.mp4", "--overwrite"], INPUT.format("input_video"), "{tmp}"),
    Case("video-output-is-a-symlink-to-the-input",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/link.mp4", "--overwrite"],
         INPUT.format("input_video")),
    Case("video-input-through-a-symlink",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/link.mp4", "--output_video={tmp}/video.mp4", "--overwrite"],
         INPUT.format("input_video")),
    Case("video-output-exists",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/old.mp4"],
         r"--output_video '.*old.mp4' already exists; pass --overwrite"),
    Case("video-output-is-a-directory",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/frames"],
         r"is a directory, not a file"),
    Case("video-output-under-a-file",
         ["--runmode=saved_model_video", "--saved_model_dir={model}",
          "--input_video={tmp}/video.mp4", "--output_video={tmp}/file.txt/out.mp4"],
         r"cannot be created: '.*file.txt' is a file"),
]


@pytest.mark.parametrize("case", IMAGES + EXPORTS + VIDEOS,
                         ids=[c.id for c in IMAGES + EXPORTS + VIDEOS])
def test_inspect_refuses_outputs(case, world, monkeypatch):
    def no_graph(*args, **kwargs):
        raise AssertionError("a graph was built before the outputs were checked")

    import serving

    for name in ("build_raw_network", "build_serving_graph"):
        monkeypatch.setattr(serving, name, no_graph)
    world = _world(world)
    before = snapshot(world["root"])
    cwd = case.cwd.format(**world) if case.cwd else None
    outcome = run_inspect(_format(case.args, world), cwd=cwd)
    check(outcome, 1, case.pattern, before, world["root"], may_add=False)


MAIN = [
    Case("testdev-results-exist",
         ["--mode=eval", "--model_dir={model}", "--validation_file_pattern={records}/pascal*",
          "--testdev_dir={tmp}/testdev"],
         r"--testdev_dir '.*testdev': '.*detections_test-dev2017_test_results.json' already "
         r"exists; pass --overwrite"),
    Case("testdev-dir-is-a-file",
         ["--mode=eval", "--model_dir={model}", "--validation_file_pattern={records}/pascal*",
          "--testdev_dir={tmp}/file.txt", "--overwrite"],
         # (the config-checks branch finds this earlier, with its own wording of the flag)
         r"--testdev_dir[ =]'?.*file.txt'? is a file, not a directory"),
]


@pytest.mark.parametrize("case", MAIN, ids=[c.id for c in MAIN])
def test_main_refuses_outputs(case, world):
    world = _world(world)
    before = snapshot(world["root"])
    outcome = run_main(_format(case.args, world))
    check(outcome, 1, case.pattern, before, world["root"], may_add=False)


# -------------------------------------------------------------------------------------------------
# The converters (their library functions, with the command line's error policy)
# -------------------------------------------------------------------------------------------------
def run_converter(prog, fn, **kwargs) -> Outcome:
    """What a converter's command line shows for `fn(**kwargs)`: a user error is one line
    `<prog>: error: ...` and status 1; otherwise the summary and status 0."""
    options = sys.modules[fn.__module__].ConvertOptions(num_threads=1, **kwargs)
    try:
        summary = fn(options, progress=False)
    except errors.UserError as e:
        return Outcome(1, "", f"{prog}: error: {e}\n")
    return Outcome(0, summary.format(), "")


def _coco(world, **kwargs):
    from dataset import create_coco_tfrecord, sample_dataset

    sample = sample_dataset.write_coco(os.path.join(world["tmp"], "coco"), 4, seed=2)
    kwargs.setdefault("object_annotations_file", sample.instances_file)
    kwargs.setdefault("num_shards", 2)
    kwargs.setdefault("output_file_prefix", os.path.join(world["tmp"], "rec", "t"))
    return ("create_coco_tfrecord.py", create_coco_tfrecord.create_coco_tfrecord,
            dict(image_dir=sample.image_dir, **kwargs))


def _voc(world, **kwargs):
    from dataset import create_pascal_tfrecord, sample_dataset

    sample = sample_dataset.write_voc(os.path.join(world["tmp"], "voc"), 8, seed=3)
    kwargs.setdefault("label_map_json_path", sample.label_map_file)
    kwargs.setdefault("num_shards", 2)
    kwargs.setdefault("output_path", os.path.join(world["tmp"], "rec", "pascal"))
    return ("create_pascal_tfrecord.py", create_pascal_tfrecord.create_pascal_tfrecord,
            dict(data_dir=sample.data_dir, year="VOC2012", **kwargs))


def _shards(world, prefix, count, of):
    os.makedirs(os.path.join(world["tmp"], "rec"), exist_ok=True)
    for i in range(count):
        with open(os.path.join(world["tmp"], "rec", f"{prefix}-{i:05d}-of-{of:05d}.tfrecord"),
                  "wb") as f:
            f.write(b"an earlier conversion's records")


def _json(world, name="json_pascal.json", content="{}"):
    os.makedirs(os.path.join(world["tmp"], "rec"), exist_ok=True)
    with open(os.path.join(world["tmp"], "rec", name), "w") as f:
        f.write(content)


def _sideways(world, json_size):
    """A COCO json of one sideways photo (conftest.sideways_photo), size `json_size` (W, H)."""
    import json

    from dataset import create_coco_tfrecord

    images = os.path.join(world["tmp"], "photos")
    os.makedirs(images)
    sideways_photo(os.path.join(images, "portrait.jpg"))
    ann = os.path.join(world["tmp"], "portrait.json")
    with open(ann, "w") as f:
        json.dump({"images": [{"id": 3, "file_name": "portrait.jpg", "width": json_size[0],
                               "height": json_size[1]}],
                   "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "iscrowd": 0,
                                    "bbox": [32, 0, 16, 24], "area": 384}],
                   "categories": [{"id": 1, "name": "block"}]}, f)
    return "create_coco_tfrecord.py", create_coco_tfrecord.create_coco_tfrecord, dict(
        image_dir=images, output_file_prefix=os.path.join(world["tmp"], "rec", "photo"),
        object_annotations_file=ann, num_shards=1, on_error="fail")


def _label_map_as_json(world):
    run = _voc(world, overwrite=True)
    with open(run[2]["label_map_json_path"]) as f:
        _json(world, content=f.read())
    run[2]["label_map_json_path"] = os.path.join(world["tmp"], "rec", "json_pascal.json")
    return run


CONVERTERS = [
    ("coco-shards-exist", lambda w: (_shards(w, "t", 2, 2), _coco(w))[1],
     r"--output_file_prefix '.*rec/t': '.*t-00000-of-00002.tfrecord' and 1 more already "
     r"exist; pass --overwrite to replace them, or choose another prefix"),
    ("coco-one-shard-of-the-same-count-exists", lambda w: (_shards(w, "t", 1, 2), _coco(w))[1],
     r"'.*t-00000-of-00002.tfrecord' already exists; pass --overwrite"),
    ("coco-shards-of-another-count", lambda w: (_shards(w, "t", 3, 3), _coco(w))[1],
     r"'.*t-00000-of-00003.tfrecord' and 2 more of an earlier conversion with another shard "
     r"count would be read together with the 2 new shard\(s\); delete them"),
    ("coco-shards-of-another-count-overwrite",
     lambda w: (_shards(w, "t", 3, 3), _coco(w, overwrite=True))[1],
     r"another shard count .* \(--overwrite replaces only the files a run writes"),
    ("coco-fewer-images-than-the-old-shard-count",
     lambda w: (_shards(w, "t", 8, 8), _coco(w, num_shards=8, overwrite=True))[1],
     r"'.*t-00000-of-00008.tfrecord' and 7 more .* another shard count .* 4 new shard"),
    ("coco-output-onto-its-annotations",
     lambda w: _coco(w, output_file_prefix=os.path.join(w["tmp"], "ann"), num_shards=1,
                     object_annotations_file=_annotations_named(w, "ann-00000-of-00001"
                                                                   ".tfrecord"),
                     overwrite=True),
     r"is an input of this run \(--object_annotations_file\)"),
    ("coco-exif-photo-annotated-sideways", lambda w: _sideways(w, (64, 48)),
     r"the json says 64x48 \(WxH\) but the image file is 48x64 as shown \(EXIF orientation 6 "
     r"applied\) \[image_size_mismatch\]"),
    ("voc-json-exists", lambda w: (_json(w), _voc(w))[1],
     r"--output_path '.*rec/pascal': '.*json_pascal.json' already exists; pass --overwrite"),
    ("voc-shards-exist", lambda w: (_shards(w, "pascal", 2, 2), _voc(w))[1],
     r"'.*pascal-00000-of-00002.tfrecord' and 1 more already exist"),
    ("voc-shards-of-another-count-overwrite",
     lambda w: (_shards(w, "pascal", 1, 1), _voc(w, overwrite=True))[1],
     r"'.*pascal-00000-of-00001.tfrecord' of an earlier conversion with another shard count"),
    ("voc-json-onto-its-label-map", _label_map_as_json,
     r"'.*json_pascal.json' is an input of this run \(--label_map_json_path\)"),
    ("voc-under-a-file",
     lambda w: _voc(w, output_path=os.path.join(w["tmp"], "file.txt", "pascal")),
     r"--output_path=.*file.txt/pascal: cannot write into"),
]


def _annotations_named(world, name):
    """The sample's COCO annotations copied to a file called `name` (next to the prefix)."""
    import shutil

    from dataset import sample_dataset

    sample = sample_dataset.write_coco(os.path.join(world["tmp"], "coco2"), 2, seed=4)
    path = os.path.join(world["tmp"], name)
    shutil.copy(sample.instances_file, path)
    return path


@pytest.mark.parametrize("case", CONVERTERS, ids=[c[0] for c in CONVERTERS])
def test_converters_refuse_outputs(case, world):
    _, setup, pattern = case
    world = _world(world)
    prog, fn, kwargs = setup(world)
    before = snapshot(world["root"])
    outcome = run_converter(prog, fn, **kwargs)
    check(outcome, 1, pattern, before, world["root"], may_add=False)


# -------------------------------------------------------------------------------------------------
# What is allowed: --overwrite replaces exactly the named outputs, nothing else
# -------------------------------------------------------------------------------------------------
def check_replaced(outcome, before, root, replaced, added=()):
    """Status 0, no traceback; exactly `replaced` (paths relative to root) changed, exactly
    `added` are new, nothing vanished."""
    where = f"\n{outcome.stdout[-2000:]}\n{outcome.stderr[-3000:]}"
    assert outcome.status == 0 and "Traceback" not in outcome.stderr, where
    after = snapshot(root)
    assert not set(before) - set(after), f"vanished: {set(before) - set(after)}{where}"
    changed = {p for p in before if after[p] != before[p]}
    assert changed == set(replaced), where
    assert set(after) - set(before) == set(added), where


def _rel(world, *paths):
    return {os.path.relpath(os.path.join(world["tmp"], p), world["root"]) for p in paths}


def test_overwrite_replaces_exactly_the_earlier_pictures(world):
    world = _world(world)
    before = snapshot(world["root"])
    outcome = run_inspect(_format(["--runmode=infer", "--ckpt_path={model}",
                                   "--input_image={tmp}/frames/*.jpg",
                                   "--output_image_dir={tmp}/out", "--overwrite"], world))
    check_replaced(outcome, before, world["root"], _rel(world, "out/0.jpg", "out/1.jpg",
                                                       "out/2.jpg"))
    assert "processed 3 image(s)" in outcome.stdout


def test_a_second_run_into_the_same_directory_is_refused(world):
    """Finding 1 as it happened: run, then run again; the second changes nothing."""
    world = _world(world)
    args = _format(["--runmode=infer", "--ckpt_path={model}", "--input_image={tmp}/frames/*.jpg",
                    "--output_image_dir={tmp}/pictures"], world)
    before = snapshot(world["root"])
    check_replaced(run_inspect(args), before, world["root"], (),
                   _rel(world, "pictures/0.jpg", "pictures/1.jpg", "pictures/2.jpg"))
    first = snapshot(world["root"])
    check(run_inspect(args), 1, r"'.*pictures/0.jpg' and 2 more already exist; pass "
                                r"--overwrite", first, world["root"], may_add=False)


def test_pictures_beside_png_inputs_and_of_a_sideways_photo(world):
    """Allowed: x.png's picture x.jpg in its own directory (not an input); a photo with an EXIF
    orientation is read and drawn upright."""
    world = _world(world)
    tmp = world["tmp"]
    Image.open(STREET).resize((96, 60)).save(os.path.join(tmp, "a", "street.png"))
    sideways_photo(os.path.join(tmp, "a", "portrait.jpg"))
    before = snapshot(world["root"])
    outcome = run_inspect(_format(["--runmode=infer", "--ckpt_path={model}",
                                   "--input_image={tmp}/a/*", "--output_image_dir={tmp}/a"],
                                  world))
    # a/x.png -> a/x.jpg, a/street.png -> a/street.jpg; portrait.jpg would be its own input,
    # so the run is refused: pictures of .jpg sources go elsewhere.
    check(outcome, 1, r"'.*a/portrait.jpg' is an input of this run", before, world["root"],
          may_add=False)
    outcome = run_inspect(_format(["--runmode=infer", "--ckpt_path={model}",
                                   "--input_image={tmp}/a/*.png", "--output_image_dir={tmp}/a"],
                                  world))
    check_replaced(outcome, before, world["root"], (), _rel(world, "a/x.jpg", "a/street.jpg"))
    outcome = run_inspect(_format(["--runmode=infer", "--ckpt_path={model}",
                                   "--input_image={tmp}/a/portrait.jpg",
                                   "--output_image_dir={tmp}/upright"], world))
    assert outcome.status == 0, outcome.stderr
    drawn = np.asarray(Image.open(os.path.join(tmp, "upright", "portrait.jpg")))
    assert drawn.shape == (64, 48, 3)  # upright: the file stores 64x48 sideways


def test_overwrite_replaces_exactly_the_frozen_graph(world):
    world = _world(world)
    before = snapshot(world["root"])
    outcome = run_inspect(_format(["--runmode=freeze", "--ckpt_path={model}",
                                   "--logdir={tmp}/frz", "--overwrite"], world))
    check_replaced(outcome, before, world["root"], _rel(world, "frz/efficientdet-d0_frozen.pb"))


def test_converters_overwrite_exactly_their_own_files(world):
    world = _world(world)
    _shards(world, "t", 2, 2)
    prog, fn, kwargs = _coco(world, overwrite=True)
    before = snapshot(world["root"])
    outcome = run_converter(prog, fn, **kwargs)
    check_replaced(outcome, before, world["root"], _rel(world, "rec/t-00000-of-00002.tfrecord",
                                                       "rec/t-00001-of-00002.tfrecord"))
    _shards(world, "pascal", 2, 2)
    _json(world)
    prog, fn, kwargs = _voc(world, overwrite=True)
    before = snapshot(world["root"])
    outcome = run_converter(prog, fn, **kwargs)
    check_replaced(outcome, before, world["root"], _rel(
        world, "rec/pascal-00000-of-00002.tfrecord", "rec/pascal-00001-of-00002.tfrecord",
        "rec/json_pascal.json"))
    assert not glob.glob(os.path.join(world["tmp"], "rec", ".*"))  # no temporary left


def test_converter_stores_a_sideways_photo_upright(world):
    import tensorflow as tf

    from dataset import tfrecord_util

    world = _world(world)
    prog, fn, kwargs = _sideways(world, (48, 64))
    before = snapshot(world["root"])
    outcome = run_converter(prog, fn, **kwargs)
    check_replaced(outcome, before, world["root"], (),
                   _rel(world, "rec/photo-00000-of-00001.tfrecord"))
    assert "exif_orientation_applied: 1" in outcome.stdout
    (record,) = tfrecord_util.read_examples(os.path.join(world["tmp"], "rec", "photo-*"))
    image = tf.io.decode_image(record["image/encoded"][0], channels=3).numpy()
    assert image.shape == (64, 48, 3) and image[2:22, 34:46, 0].mean() > 200

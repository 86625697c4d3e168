r"""Convert COCO-format images and annotations to sharded TFRecords.

Example (from the repository root; PYTHONPATH is optional):

    python dataset/create_coco_tfrecord.py \
        --image_dir=val2017 \
        --object_annotations_file=annotations/instances_val2017.json \
        --output_file_prefix=tfrecord/val --num_shards=32

The examples are the `images` of --image_info_file, else of --object_annotations_file, else of
--caption_annotations_file. So a captions file alone (the seed README's eval recipe) or
`image_info_test-dev2017.json` alone gives image-only records, one per listed image.

Records (keys: dataset/tfrecord_util.py): image/source_id is str(COCO image id); boxes are
image/object/bbox/{ymin,xmin,ymax,xmax} normalized to [0, 1] by the image height/width, made from
the json's [x, y, w, h] absolute-pixel boxes; image/object/class/label is the raw COCO
category_id (1..num_classes, COCO: 1..90 with gaps); image/object/area is the json's pixel area.
Images are always stored as RGB JPEG: RGB JPEG files are copied as-is, anything else (PNG,
grayscale, CMYK, RGBA, palette) is converted and re-encoded, and so is a photo with an EXIF
orientation: it is stored upright, as viewers and annotation tools show it, and its boxes and
size are checked against the upright picture. Record i goes to shard i % num_shards of
`<prefix>-%05d-of-%05d.tfrecord`. Shards of that prefix that already exist are replaced only
with --overwrite (and then only those of the same count: shards of another count are refused,
so that old and new records never mix).

Every annotation and image is checked (see dataset/validation.py); --on_error=skip (default)
skips and counts bad items, --on_error=fail stops at the first one with a one-line message. A
json of the wrong shape (e.g. "annotations": null, an image whose width is not an integer, a
category without an integer id) is refused before any image is read, in one line naming the
file and the key.

Exit status: 0 when records were written; 1 for a user error (a bad flag, file or json, a bad
item under --on_error=fail, or no image left to write), printed as one line
`create_coco_tfrecord.py: error: ...` after the summary.
"""

from __future__ import annotations

import os
import sys

# Make `import dataset.*` work when run as `python dataset/create_coco_tfrecord.py` without
# PYTHONPATH: put the repository root (this file's parent directory) first on sys.path.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import collections  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

import cli  # noqa: E402
import errors  # noqa: E402
from dataset import tfrecord_util, validation  # noqa: E402
from dataset.tfrecord_util import WorkerResult  # noqa: E402
from dataset.validation import Problem, Summary  # noqa: E402

PROG = "create_coco_tfrecord.py"


@dataclasses.dataclass
class ConvertOptions:
    """The converter's flags: each default and help text is written here once."""

    image_dir: str = cli.field("", "Directory with the images (required).")
    image_info_file: str = cli.field("", "Json whose 'images' define the examples (e.g. "
                                         "image_info_test-dev2017.json).")
    object_annotations_file: str = cli.field("", "Instances json (boxes, masks).")
    caption_annotations_file: str = cli.field("", "Captions json (image/caption).")
    output_file_prefix: str = cli.field("/tmp/train", "Output prefix; files are "
                                                      "<prefix>-%05d-of-%05d.tfrecord.")
    num_shards: int = cli.field(32, "Number of output shards (at most one per image).")
    num_threads: Optional[int] = cli.field(None, "Worker processes (default: one per CPU).")
    include_masks: bool = cli.field(False, "Also write PNG instance masks (image/object/mask).")
    on_error: str = cli.field("skip", "skip: skip and count bad annotations/images; fail: stop "
                                      "at the first.", choices=validation.ON_ERROR_CHOICES)
    num_classes: int = cli.field(90, "Class ids must lie in 1..num_classes (COCO: 90).")
    max_instances_per_image: int = cli.field(validation.DEFAULT_MAX_INSTANCES,
                                             "Images with more (valid) boxes are skipped; match "
                                             "the hparam.")
    overwrite: bool = cli.field(False, "Replace existing shards of --output_file_prefix (only "
                                "those of the same shard count; others are refused).")


def check_options(opts: ConvertOptions) -> None:
    """Flag-only checks (no I/O beyond existence); each error names the flag."""
    usage = errors.UsageError
    if not opts.image_dir:
        raise usage("--image_dir is required: the directory holding the images named in the "
                    "json's file_name fields.")
    if not os.path.isdir(opts.image_dir):
        raise usage(f"--image_dir={opts.image_dir}: not a directory; check the path.")
    if not opts.output_file_prefix:
        raise usage("--output_file_prefix is required, e.g. tfrecord/train.")
    if not (opts.image_info_file or opts.object_annotations_file
            or opts.caption_annotations_file):
        raise usage("give at least one of --image_info_file, --object_annotations_file or "
                    "--caption_annotations_file (they list the images to convert).")
    for flag in ("num_shards", "num_classes", "max_instances_per_image"):
        if getattr(opts, flag) < 1:
            raise usage(f"--{flag} must be >= 1, got {getattr(opts, flag)}.")
    validation.check_common_options(opts)
    if opts.include_masks and not opts.object_annotations_file:
        raise usage("--include_masks needs --object_annotations_file (the masks come from its "
                    "segmentations).")


@dataclasses.dataclass(frozen=True)
class CocoOptions:
    """What every worker needs besides its image; small, so it is sent with each task."""

    image_dir: str
    annotations_file: str
    category_names: Dict[int, str]
    has_objects: bool
    num_classes: int
    max_instances_per_image: int
    include_masks: bool


@dataclasses.dataclass
class CocoTask:
    """One image entry of the json with its object annotations and captions."""

    image: Dict[str, Any]
    annotations: List[Dict[str, Any]]
    captions: List[str]


def load_json(path: str, flag: str) -> Dict[str, Any]:
    """A COCO json file given by `flag`, its structure checked (`check_json_shape`); errors
    name the flag and the file."""
    if not os.path.isfile(path):
        raise errors.UsageError(f"{flag}={path}: file not found; check the path.")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise errors.DataError(f"{flag}={path}: not valid json ({e}).") from None
    check_json_shape(data, f"{flag}={path}")
    return data


def _is_int(value: Any) -> bool:
    """An integer in the json: an int, or a float with no fractional part (some tools write
    sizes as 640.0)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _entries(data: Dict[str, Any], key: str, where: str) -> List[Dict[str, Any]]:
    """data[key] (absent: []) checked to be a list of json objects."""
    value = data.get(key, [])
    what = {"images": "image", "annotations": "annotation", "categories": "category"}[key]
    if not isinstance(value, list):
        raise errors.DataError(f"{where}: '{key}' is {json.dumps(value)[:40]}, not a list; "
                               f"give a list of {what} objects, as COCO jsons have.")
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise errors.DataError(f"{where}: {key}[{index}] is {json.dumps(entry)[:40]}, not "
                                   f"an object; each {what} must be a json object.")
    return value


def _bad_field(where: str, key: str, index: int, field: str, value: Any, want: str) -> None:
    raise errors.DataError(f"{where}: {key}[{index}].{field} is {json.dumps(value)[:40]}; it "
                           f"must be {want}.")


def check_json_shape(data: Any, where: str) -> None:
    """Refuse, in one line naming the file (`where`) and the key, a json whose structure the
    converter cannot use: not an object; 'images', 'annotations' or 'categories' that are not
    lists of objects; an image width/height that is not a positive integer or a file_name
    that is not a string; a category without an integer id and a string name; an annotation
    whose image_id is not an integer or a string.

    Values inside a well-formed entry (an image id, a box, a category_id) are checked per item
    later, under --on_error.
    """
    if not isinstance(data, dict):
        raise errors.DataError(f"{where}: expected a COCO json object with an 'images' list, "
                               f"got {type(data).__name__}.")
    for index, image in enumerate(_entries(data, "images", where)):
        for field in ("width", "height"):
            value = image.get(field)
            if value is not None and not (_is_int(value) and value > 0):
                _bad_field(where, "images", index, field, value, "a positive integer (pixels)")
        if "file_name" in image and not isinstance(image["file_name"], str):
            _bad_field(where, "images", index, "file_name", image["file_name"], "a string")
    for index, category in enumerate(_entries(data, "categories", where)):
        if not _is_int(category.get("id")):
            _bad_field(where, "categories", index, "id", category.get("id"),
                       "an integer (the class id)")
        if not isinstance(category.get("name"), str):
            _bad_field(where, "categories", index, "name", category.get("name"), "a string")
    for index, ann in enumerate(_entries(data, "annotations", where)):
        image_id = ann.get("image_id")
        if not (_is_int(image_id) or isinstance(image_id, str)):
            _bad_field(where, "annotations", index, "image_id", image_id,
                       "the integer id of an image in 'images'")


def _mask_png(segmentation: Any, height: int, width: int) -> bytes:
    """PNG of the instance's binary mask (0/1, height x width) from a COCO polygon list or RLE."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_util

    if isinstance(segmentation, list):
        if not segmentation or any(len(p) < 6 for p in segmentation):
            raise ValueError("polygons need at least 3 points")
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_util.frPyObjects(segmentation, height, width)  # uncompressed RLE (crowds)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
    else:
        raise ValueError(f"unsupported segmentation {type(segmentation).__name__}")
    mask = mask_util.decode(rle)
    if mask.ndim == 3:
        mask = np.amax(mask, axis=2)
    if mask.shape != (height, width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {width}x{height}")
    return tfrecord_util.encode_png(Image.fromarray(mask.astype(np.uint8)))


def _convert_annotations(options: CocoOptions, annotations: List[Dict[str, Any]],
                         image_item: str, width: int, height: int, problems: List[Problem],
                         notes: List[Tuple[str, str]]) -> Dict[str, List[Any]]:
    """Check and convert one image's annotations into {record key: values}. A bad annotation
    is a `Problem` and left out; a clipped box is a note."""
    cols: Dict[str, List[Any]] = collections.defaultdict(list)
    for ann in annotations:
        item = f"annotation id {ann.get('id')} ({image_item})"
        category_id = ann.get("category_id")
        msg = validation.check_class_id(category_id, options.num_classes)
        if msg:
            problems.append(Problem("class_id_out_of_range", options.annotations_file, item,
                                    msg))
            continue
        if options.category_names and category_id not in options.category_names:
            problems.append(Problem("unknown_category", options.annotations_file, item,
                                    f"category_id {category_id} is not in the json's "
                                    f"'categories'"))
            continue
        check = validation.check_box_xywh(ann.get("bbox"), width, height)
        if check.reason:
            problems.append(Problem(check.reason, options.annotations_file, item,
                                    check.detail))
            continue
        if options.include_masks:
            try:
                cols["image/object/mask"].append(
                    _mask_png(ann.get("segmentation"), height, width))
            except Exception as e:  # noqa: BLE001 - pycocotools raises bare Exceptions
                problems.append(Problem("bad_segmentation", options.annotations_file, item,
                                        f"cannot make a mask ({type(e).__name__}: {e})"))
                continue
        if check.clipped:
            notes.append(("box_clipped_to_image", f"{options.annotations_file}: {item}"))
        x0, y0, x1, y1 = check.box
        cols["image/object/bbox/xmin"].append(x0 / width)
        cols["image/object/bbox/xmax"].append(x1 / width)
        cols["image/object/bbox/ymin"].append(y0 / height)
        cols["image/object/bbox/ymax"].append(y1 / height)
        cols["image/object/class/label"].append(int(category_id))
        cols["image/object/class/text"].append(
            options.category_names.get(category_id, str(category_id)))
        cols["image/object/is_crowd"].append(int(bool(ann.get("iscrowd", 0))))
        area = ann.get("area")
        cols["image/object/area"].append(
            float(area) if isinstance(area, (int, float)) else (x1 - x0) * (y1 - y0))
    return cols


def process_image(options: CocoOptions, task: CocoTask) -> WorkerResult:
    """Load, check and convert one image and its annotations into record values.

    Runs in a worker process (no TensorFlow): returns plain values that the parent turns into a
    tf.train.Example, plus every problem found, so the parent applies --on_error in input order.
    """
    image = task.image
    image_id = int(image["id"])
    path = os.path.join(options.image_dir, str(image.get("file_name", "")))
    image_item = f"image id {image_id}"
    problems: List[Problem] = []
    notes: List[Tuple[str, str]] = []
    n_ann = len(task.annotations)
    if not image.get("file_name"):
        problems.append(Problem("missing_image", options.annotations_file, image_item,
                                "the image entry has no file_name"))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=n_ann)
    try:
        loaded = validation.load_image_as_jpeg(path)
    except validation.ImageLoadError as e:
        problems.append(Problem(e.reason, path, image_item, e.detail))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=n_ann)
    width, height = loaded.width, loaded.height
    json_w, json_h = image.get("width"), image.get("height")
    if json_w and json_h and (int(json_w), int(json_h)) != (width, height):
        problems.append(Problem("image_size_mismatch", path, image_item,
                                f"the json says {json_w}x{json_h} (WxH) but the image file is "
                                f"{width}x{height}{validation.shown_as(loaded)}"))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=n_ann)
    notes.extend(validation.image_notes(loaded, f"{path}: {image_item}"))

    values: Dict[str, Any] = {
        "image/height": height,
        "image/width": width,
        "image/filename": str(image["file_name"]),
        "image/source_id": str(image_id),
        "image/key/sha256": hashlib.sha256(loaded.encoded).hexdigest(),
        "image/encoded": loaded.encoded,
        "image/format": "jpeg",
    }
    num_boxes = 0
    if options.has_objects:
        cols = _convert_annotations(options, task.annotations, image_item, width, height,
                                    problems, notes)
        num_boxes = len(cols["image/object/class/label"])
        msg = validation.check_instance_count(num_boxes, options.max_instances_per_image)
        if msg:
            problems.append(Problem("too_many_instances", options.annotations_file, image_item,
                                    f"{msg} (file {image['file_name']})"))
            return WorkerResult(None, problems, notes, boxes_in_skipped_image=num_boxes)
        for key in ("image/object/bbox/xmin", "image/object/bbox/xmax", "image/object/bbox/ymin",
                    "image/object/bbox/ymax", "image/object/class/text",
                    "image/object/class/label", "image/object/is_crowd", "image/object/area"):
            values[key] = cols[key]
        if options.include_masks:
            values["image/object/mask"] = cols["image/object/mask"]
    if task.captions:
        values["image/caption"] = list(task.captions)
    return WorkerResult(values, problems, notes, num_boxes=num_boxes)


def _listed_images(images: List[Dict[str, Any]], images_file: str,
                   handler: validation.ProblemHandler) -> Dict[int, Dict[str, Any]]:
    """{image id: image entry} in the json's order; bad or repeated ids go to `handler`."""
    ids = validation.IdRegistry()
    listed: Dict[int, Dict[str, Any]] = {}
    for index, image in enumerate(images):
        raw_id = image.get("id")
        item = f"image id {raw_id!r} (entry {index} of 'images')"
        msg = validation.check_image_id(raw_id)
        if msg:
            handler(Problem("bad_image_id", images_file, item, msg))
            continue
        image_id = int(raw_id)
        msg = ids.check(image_id, f"entry {index} of 'images'")
        if msg:
            handler(Problem("duplicate_image_id", images_file,
                            f"image id {image_id} (entry {index} of 'images')", msg))
            continue
        listed[image_id] = image
    return listed


def build_tasks(image_info_file: str, object_annotations_file: str,
                caption_annotations_file: str, handler: validation.ProblemHandler,
                summary: Summary) -> Tuple[List[CocoTask], Dict[int, str], str]:
    """(tasks, category names, annotations file for messages) from the json files.

    Image-list problems (bad or duplicate ids) and annotations whose image is not listed go to
    `handler` here, before any image is read, so --on_error=fail stops early.
    """
    objects = (load_json(object_annotations_file, "--object_annotations_file")
               if object_annotations_file else None)
    captions = (load_json(caption_annotations_file, "--caption_annotations_file")
                if caption_annotations_file else None)
    if image_info_file:
        images_src, images_file, flag = (load_json(image_info_file, "--image_info_file"),
                                         image_info_file, "--image_info_file")
    elif objects is not None:
        images_src, images_file, flag = (objects, object_annotations_file,
                                         "--object_annotations_file")
    else:
        images_src, images_file, flag = (captions, caption_annotations_file,
                                         "--caption_annotations_file")
    images = images_src.get("images")
    if not isinstance(images, list):
        raise errors.DataError(f"{flag}={images_file}: has no 'images' list; pass a COCO json "
                               f"(instances_*.json, captions_*.json or image_info_*.json).")
    if not images:
        raise errors.DataError(f"{flag}={images_file}: its 'images' list is empty, so there is "
                               f"nothing to convert; pass the json that lists the split's "
                               f"images.")

    categories = (objects or {}).get("categories") or images_src.get("categories") or []
    category_names = {int(c["id"]): str(c["name"]) for c in categories
                      if isinstance(c, dict) and "id" in c and "name" in c}

    listed = _listed_images(images, images_file, handler)

    by_image: Dict[int, List[Dict[str, Any]]] = collections.defaultdict(list)
    if objects is not None:
        for ann in objects.get("annotations", []):
            image_id = ann.get("image_id")
            if isinstance(image_id, str) and image_id.isdigit():
                image_id = int(image_id)  # ids written as digit strings, as some tools do
            if image_id not in listed:
                handler(Problem("annotation_image_not_listed", object_annotations_file,
                                f"annotation id {ann.get('id')}",
                                f"its image_id {image_id!r} is not in the image list of "
                                f"{images_file}"))
                continue
            by_image[image_id].append(ann)
    caps: Dict[int, List[str]] = collections.defaultdict(list)
    if captions is not None:
        for ann in captions.get("annotations", []):
            if ann.get("image_id") in listed and isinstance(ann.get("caption"), str):
                caps[ann["image_id"]].append(ann["caption"])
    summary.images_seen = len(images)
    tasks = [CocoTask(image, by_image.get(i, []), caps.get(i, [])) for i, image in listed.items()]
    return tasks, category_names, object_annotations_file or images_file


def create_coco_tfrecord(opts: ConvertOptions, progress: bool = True) -> Summary:
    """Convert a COCO-format dataset; returns the `Summary` (also describes what was skipped).

    Raises `errors.UsageError` for bad flags/paths, `errors.OutputError` (before any image is
    read) when shards of the prefix exist (replaced only with --overwrite, and only of the same
    count), `errors.DataError` for a json of the wrong shape and for the first bad item under
    --on_error=fail (then no shard is written).
    """
    check_options(opts)
    tfrecord_util.check_output_prefix(opts.output_file_prefix, "--output_file_prefix")
    summary = Summary(title=f"COCO -> {opts.output_file_prefix}")
    handler = validation.ProblemHandler(opts.on_error, summary)
    tasks, category_names, ann_file = build_tasks(
        opts.image_info_file, opts.object_annotations_file, opts.caption_annotations_file,
        handler, summary)
    inputs = [(flag, path) for flag, path in (
        ("object_annotations_file", opts.object_annotations_file),
        ("caption_annotations_file", opts.caption_annotations_file),
        ("image_info_file", opts.image_info_file)) if path]
    tfrecord_util.check_shard_outputs(
        opts.output_file_prefix, tfrecord_util.planned_num_shards(opts.num_shards, len(tasks)),
        "output_file_prefix", inputs=inputs, overwrite=opts.overwrite)
    options = CocoOptions(image_dir=opts.image_dir, annotations_file=ann_file,
                          category_names=category_names,
                          has_objects=bool(opts.object_annotations_file),
                          num_classes=opts.num_classes,
                          max_instances_per_image=opts.max_instances_per_image,
                          include_masks=opts.include_masks)
    tfrecord_util.run_conversion(tasks, functools.partial(process_image, options),
                                 opts.output_file_prefix, opts.num_shards, opts.num_threads,
                                 handler, summary, progress)
    return summary


def run(opts: ConvertOptions) -> int:
    """Convert and print the summary (images seen, written, skipped by reason); exit status
    0, or `errors.DataError` when every listed image was skipped."""
    summary = create_coco_tfrecord(opts)
    print(summary.format(), flush=True)
    validation.require_written(summary)
    return 0


if __name__ == "__main__":
    # TensorFlow writes the records; imported first, its start-up noise stays out of the log.
    cli.run_tool(PROG, run, ConvertOptions, tensorflow=True)

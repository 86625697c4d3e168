r"""Convert PASCAL VOC (VOCdevkit layout) to sharded TFRecords plus a COCO-style ground-truth json.

Example (the seed README's command, from the repository root):

    PYTHONPATH=".:$PYTHONPATH" python dataset/create_pascal_tfrecord.py \
        --data_dir=VOCdevkit --year=VOC2012 --output_path=tfrecord/pascal

writes `tfrecord/pascal-%05d-of-%05d.tfrecord` and `tfrecord/json_pascal.json` (the
`--val_json_file` for eval).

Examples come from `<data_dir>/<year>/ImageSets/Main/<set>.txt`, or, when that file is absent,
`aeroplane_<set>.txt` (the list the reference reads); only the first token of each line is used.
Each image's xml is `<year>/<annotations_dir>/<name>.xml` and its image
`<year>/JPEGImages/<filename from the xml>` (JPEG or PNG; stored as RGB JPEG).

Ids: image ids are one counter from 1 over the written images of all years (so --year=merged
gives unique ids), and image/source_id = str(image id) = the json image id; annotation ids are one
counter from 1. The json has the categories once (ids of the label map, 1..20 for VOC, no
background entry), boxes [x, y, w, h] in absolute pixels, area = w*h, iscrowd 0. Records carry
the PASCAL keys of dataset/tfrecord_util.py (bbox normalized ymin/xmin/ymax/xmax, class
text/label, difficult, truncated, view) plus image/object/area (pixels, as in the json) and
image/object/is_crowd (0), so evaluation from records agrees with evaluation from the json. VOC
boxes are used as written (xmin/width etc.), as the reference does.

Bad objects and images are checked as in dataset/validation.py; --on_error=skip|fail. A photo
with an EXIF orientation is stored upright, as viewers show it (its <size> and boxes describe
the upright picture). An image list that names no image is refused, naming the list file.
Shards of the prefix or its json that already exist are replaced only with --overwrite (shards
of another count are refused even then, so old and new records never mix); the json is written
atomically.

Exit status: 0 when records were written; 1 for a user error (a bad flag or path, an empty
image list, a bad item under --on_error=fail, or no image left to write), printed as one line
`create_pascal_tfrecord.py: error: ...` after the summary.
"""

from __future__ import annotations

import os
import sys

# Runnable as `python dataset/create_pascal_tfrecord.py` without PYTHONPATH (repo root first).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

import cli  # noqa: E402
import errors  # noqa: E402
import outputs  # noqa: E402
from dataset import label_maps, tfrecord_util, validation  # noqa: E402
from dataset.tfrecord_util import WorkerResult  # noqa: E402
from dataset.validation import Problem, Summary  # noqa: E402

PROG = "create_pascal_tfrecord.py"
SETS = ("train", "val", "trainval", "test")
YEARS = ("VOC2007", "VOC2012", "merged")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


@dataclasses.dataclass
class ConvertOptions:
    """The converter's flags: each default and help text is written here once."""

    data_dir: str = cli.field("", "Root of the VOCdevkit directory (required).")
    set: str = cli.field("train", "Which ImageSets/Main list to convert.", choices=SETS)
    annotations_dir: str = cli.field("Annotations", "Annotation directory inside <year>/.")
    year: str = cli.field("VOC2007", "VOC2007, VOC2012, or merged (both).", choices=YEARS)
    output_path: str = cli.field("", "Output prefix (required); shards are "
                                     "<output_path>-%05d-of-%05d.tfrecord, json "
                                     "json_<basename>.json.")
    label_map_json_path: Optional[str] = cli.field(None, "Json {name: id} (or {id: name}); "
                                                         "default the 20 VOC classes, ids 1..20.")
    num_shards: int = cli.field(100, "Number of shards (at most one per image).")
    num_images: Optional[int] = cli.field(None, "At most this many images per year.")
    ignore_difficult_instances: bool = cli.field(False, "Drop objects marked difficult.")
    on_error: str = cli.field("skip", "skip: skip and count bad objects/images; fail: stop at "
                                      "the first.", choices=validation.ON_ERROR_CHOICES)
    num_threads: Optional[int] = cli.field(None, "Worker processes (default: one per CPU).")
    max_instances_per_image: int = cli.field(validation.DEFAULT_MAX_INSTANCES,
                                             "Images with more (valid) objects are skipped; "
                                             "match the hparam.")
    overwrite: bool = cli.field(False, "Replace existing shards of --output_path and its json "
                                "(only those of the same shard count; others are refused).")


def check_options(opts: ConvertOptions) -> None:
    """Flag-only checks; each error names the flag."""
    usage = errors.UsageError
    if not opts.data_dir:
        raise usage("--data_dir is required: the VOCdevkit directory.")
    if not opts.output_path:
        raise usage("--output_path is required, e.g. tfrecord/pascal.")
    if opts.set not in SETS:
        raise usage(f"--set must be one of {', '.join(SETS)}, got '{opts.set}'.")
    if opts.year not in YEARS:
        raise usage(f"--year must be one of {', '.join(YEARS)}, got '{opts.year}'.")
    for flag in ("num_shards", "max_instances_per_image"):
        if getattr(opts, flag) < 1:
            raise usage(f"--{flag} must be >= 1, got {getattr(opts, flag)}.")
    if opts.num_images is not None and opts.num_images < 1:
        raise usage(f"--num_images must be >= 1 (or unset for all), got {opts.num_images}.")
    validation.check_common_options(opts)


@dataclasses.dataclass(frozen=True)
class VocOptions:
    """What every worker needs besides its image; small, so it is sent with each task."""

    data_dir: str
    annotations_dir: str
    name_to_id: Dict[str, int]
    ignore_difficult_instances: bool
    max_instances_per_image: int


@dataclasses.dataclass(frozen=True)
class VocTask:
    year: str
    name: str  # image stem, e.g. '2008_000008'


def _element_to_dict(element) -> Any:
    """An lxml element as nested dicts; leaves become text, repeated 'object's a list."""
    children = list(element)
    if not children:
        return (element.text or "").strip()
    out: Dict[str, Any] = {}
    for child in children:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        value = _element_to_dict(child)
        if child.tag == "object":
            out.setdefault("object", []).append(value)
        else:
            out[child.tag] = value
    return out


def parse_voc_xml(path: str) -> Dict[str, Any]:
    """The <annotation> of a VOC xml as a dict ('object' is always a list)."""
    from lxml import etree

    # No entity expansion and no network: xml files may come from anywhere.
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.parse(path, parser).getroot()
    data = _element_to_dict(root)
    if not isinstance(data, dict):
        data = {}
    data.setdefault("object", [])
    return data


def _number(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _find_image(image_dir: str, filename: str, stem: str) -> str:
    """The image path: the xml's filename, else `<stem>` with a usual extension."""
    path = os.path.join(image_dir, filename) if filename else ""
    if path and os.path.isfile(path):
        return path
    for ext in IMAGE_EXTENSIONS:
        candidate = os.path.join(image_dir, stem + ext)
        if os.path.isfile(candidate):
            return candidate
    return path or os.path.join(image_dir, stem + ".jpg")


def _convert_objects(options: VocOptions, objects: List[Dict[str, Any]], xml_path: str,
                     image_item: str, width: int, height: int, problems: List[Problem],
                     notes: List[Tuple[str, str]]
                     ) -> Tuple[Dict[str, List[Any]], List[Dict[str, Any]]]:
    """Check and convert one image's <object>s: ({record column: values}, json annotations
    without ids). A bad object is a `Problem` and left out; clipped or ignored ones are notes."""
    keys = ("xmin", "xmax", "ymin", "ymax", "text", "label", "difficult", "truncated", "view",
            "area")
    cols: Dict[str, List[Any]] = {k: [] for k in keys}
    json_annotations: List[Dict[str, Any]] = []
    for index, obj in enumerate(objects):
        cls_name = obj.get("name") if isinstance(obj.get("name"), str) else ""
        item = f"object {index} '{cls_name}' of {image_item}"
        difficult = bool(int(_number(obj.get("difficult")) or 0))
        if options.ignore_difficult_instances and difficult:
            notes.append(("difficult_ignored", f"{xml_path}: {item}"))
            continue
        if cls_name not in options.name_to_id:
            problems.append(Problem("unknown_class", xml_path, item,
                                    f"class '{cls_name}' is not in the label map "
                                    f"({', '.join(sorted(options.name_to_id)[:5])}, ...)"))
            continue
        bndbox = obj.get("bndbox") if isinstance(obj.get("bndbox"), dict) else {}
        coords = [_number(bndbox.get(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            problems.append(Problem("malformed_annotation", xml_path, item,
                                    f"<bndbox> needs numeric xmin, ymin, xmax, ymax; got "
                                    f"{bndbox!r}"))
            continue
        check = validation.check_box_xyxy(*coords, width, height)
        if check.reason:
            problems.append(Problem(check.reason, xml_path, item, check.detail))
            continue
        if check.clipped:
            notes.append(("box_clipped_to_image", f"{xml_path}: {item}"))
        x0, y0, x1, y1 = check.box
        class_id = options.name_to_id[cls_name]
        cols["xmin"].append(x0 / width)
        cols["xmax"].append(x1 / width)
        cols["ymin"].append(y0 / height)
        cols["ymax"].append(y1 / height)
        cols["text"].append(cls_name)
        cols["label"].append(class_id)
        cols["difficult"].append(int(difficult))
        cols["truncated"].append(int(_number(obj.get("truncated")) or 0))
        cols["view"].append(obj.get("pose") if isinstance(obj.get("pose"), str) else "")
        cols["area"].append((x1 - x0) * (y1 - y0))
        json_annotations.append({"bbox": [x0, y0, x1 - x0, y1 - y0],
                                 "area": (x1 - x0) * (y1 - y0), "category_id": class_id,
                                 "iscrowd": 0, "ignore": 0, "segmentation": []})
    return cols, json_annotations


def _read_xml(xml_path: str, image_item: str, problems: List[Problem]
              ) -> Optional[Dict[str, Any]]:
    """The parsed annotation xml, or None with the reason added to `problems`."""
    if not os.path.isfile(xml_path):
        problems.append(Problem("missing_annotation_file", xml_path, image_item,
                                "annotation xml not found"))
        return None
    try:
        return parse_voc_xml(xml_path)
    except Exception as e:  # noqa: BLE001 - lxml raises XMLSyntaxError, OSError, ...
        problems.append(Problem("bad_annotation_file", xml_path, image_item,
                                f"cannot parse the xml ({type(e).__name__}: {e})"))
        return None


def _record_values(loaded: validation.LoadedImage, file_name: str,
                   cols: Dict[str, List[Any]]) -> Dict[str, Any]:
    """One image's record values (without image/source_id) from its loaded JPEG and the
    object columns of `_convert_objects`."""
    return {
        "image/height": loaded.height,
        "image/width": loaded.width,
        "image/filename": file_name,
        "image/key/sha256": hashlib.sha256(loaded.encoded).hexdigest(),
        "image/encoded": loaded.encoded,
        "image/format": "jpeg",
        "image/object/bbox/xmin": cols["xmin"],
        "image/object/bbox/xmax": cols["xmax"],
        "image/object/bbox/ymin": cols["ymin"],
        "image/object/bbox/ymax": cols["ymax"],
        "image/object/class/text": cols["text"],
        "image/object/class/label": cols["label"],
        "image/object/difficult": cols["difficult"],
        "image/object/truncated": cols["truncated"],
        "image/object/view": cols["view"],
        "image/object/area": cols["area"],
        "image/object/is_crowd": [0] * len(cols["label"]),
    }


def process_example(options: VocOptions, task: VocTask) -> WorkerResult:
    """Parse, check and convert one VOC image; runs in a worker process (no TensorFlow).

    The record values lack image/source_id: the parent assigns ids to written images in order.
    `extra` holds what the json needs (file name, size, annotations without ids).
    """
    year_dir = os.path.join(options.data_dir, task.year)
    xml_path = os.path.join(year_dir, options.annotations_dir, task.name + ".xml")
    image_item = f"image '{task.name}' ({task.year})"
    problems: List[Problem] = []
    notes: List[Tuple[str, str]] = []
    data = _read_xml(xml_path, image_item, problems)
    if data is None:
        return WorkerResult(None, problems, notes)
    objects = [o for o in data["object"] if isinstance(o, dict)]
    filename = data.get("filename") if isinstance(data.get("filename"), str) else ""
    image_path = _find_image(os.path.join(year_dir, "JPEGImages"), filename, task.name)
    try:
        loaded = validation.load_image_as_jpeg(image_path)
    except validation.ImageLoadError as e:
        problems.append(Problem(e.reason, image_path, image_item, e.detail))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=len(objects))
    width, height = loaded.width, loaded.height
    size = data.get("size") if isinstance(data.get("size"), dict) else {}
    xml_w, xml_h = _number(size.get("width")), _number(size.get("height"))
    if xml_w and xml_h and (int(xml_w), int(xml_h)) != (width, height):
        problems.append(Problem("image_size_mismatch", xml_path, image_item,
                                f"<size> says {int(xml_w)}x{int(xml_h)} (WxH) but {image_path} "
                                f"is {width}x{height}{validation.shown_as(loaded)}"))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=len(objects))
    notes.extend(validation.image_notes(loaded, f"{image_path}: {image_item}"))

    cols, json_annotations = _convert_objects(options, objects, xml_path, image_item, width,
                                              height, problems, notes)
    num_boxes = len(cols["label"])
    msg = validation.check_instance_count(num_boxes, options.max_instances_per_image)
    if msg:
        problems.append(Problem("too_many_instances", xml_path, image_item, msg))
        return WorkerResult(None, problems, notes, boxes_in_skipped_image=num_boxes)
    file_name = os.path.basename(image_path)
    extra = {"file_name": file_name, "width": width, "height": height,
             "annotations": json_annotations}
    return WorkerResult(_record_values(loaded, file_name, cols), problems, notes,
                        num_boxes=num_boxes, extra=extra)


def read_image_list(data_dir: str, year: str, set_name: str) -> Tuple[str, List[str]]:
    """(list file, image stems) of one year and set; a list that names no image is an error
    naming the file."""
    year_dir = os.path.join(data_dir, year)
    if not os.path.isdir(year_dir):
        raise errors.UsageError(f"{year_dir} does not exist; --data_dir must be the VOCdevkit "
                                f"directory that contains {year}/ (check --data_dir and --year).")
    main_dir = os.path.join(year_dir, "ImageSets", "Main")
    candidates = [os.path.join(main_dir, f"{set_name}.txt"),
                  os.path.join(main_dir, f"aeroplane_{set_name}.txt")]
    for path in candidates:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                names = [line.split()[0] for line in f if line.strip()]
            if not names:
                raise errors.DataError(f"{path}: the image list of --set={set_name} "
                                       f"(--year={year}) names no image; put one image name "
                                       f"per line, or choose another --set.")
            return path, names
    raise errors.UsageError(f"no image list for --set={set_name}: neither {candidates[0]} nor "
                            f"{candidates[1]} exists.")


def json_path_for(output_path: str) -> str:
    """`json_<basename(output_path)>.json` next to the output, e.g. tfrecord/json_pascal.json
    (`tfrecord_util.voc_json_path`, where eval looks for it too)."""
    return tfrecord_util.voc_json_path(output_path)


def _label_map(opts: ConvertOptions) -> Dict[int, str]:
    if not opts.label_map_json_path:
        return dict(label_maps.VOC_LABEL_MAP)
    try:
        return label_maps.get_label_map(opts.label_map_json_path)
    except label_maps.LabelMapError as e:
        raise errors.UsageError(f"--label_map_json_path: {e}") from None


def _tasks(opts: ConvertOptions, handler: validation.ProblemHandler,
           summary: Summary) -> List[VocTask]:
    """The images of --set for each year of --year (the first --num_images of each list);
    an image listed twice goes to `handler`."""
    tasks: List[VocTask] = []
    ids = validation.IdRegistry()
    for year in (["VOC2007", "VOC2012"] if opts.year == "merged" else [opts.year]):
        list_file, names = read_image_list(opts.data_dir, year, opts.set)
        if opts.num_images:
            names = names[:opts.num_images]
        summary.images_seen += len(names)
        for line, name in enumerate(names, 1):
            msg = ids.check((year, name), f"{list_file} line {line}")
            if msg:
                handler(Problem("duplicate_image_id", list_file, f"image '{name}' (line {line})",
                                msg))
                continue
            tasks.append(VocTask(year, name))
    return tasks


def create_pascal_tfrecord(opts: ConvertOptions, progress: bool = True) -> Summary:
    """Convert VOC; returns the `Summary`, whose `json_file` is the ground-truth json written.

    Raises `errors.UsageError` for bad flags/paths, `errors.OutputError` (before any image is
    read) when shards of the prefix or its json exist (replaced only with --overwrite, shards
    only of the same count), `errors.DataError` for an empty image list and for the first bad
    item under --on_error=fail (then neither shards nor json are written).
    """

    check_options(opts)
    tfrecord_util.check_output_prefix(opts.output_path, "--output_path")
    label_map = _label_map(opts)
    summary = Summary(title=f"PASCAL VOC {opts.year}/{opts.set} -> {opts.output_path}")
    handler = validation.ProblemHandler(opts.on_error, summary)
    tasks = _tasks(opts, handler, summary)
    json_file = json_path_for(opts.output_path)
    tfrecord_util.check_shard_outputs(
        opts.output_path, tfrecord_util.planned_num_shards(opts.num_shards, len(tasks)),
        "output_path", extra=[json_file], overwrite=opts.overwrite,
        inputs=([("label_map_json_path", opts.label_map_json_path)]
                if opts.label_map_json_path else []))
    options = VocOptions(data_dir=opts.data_dir, annotations_dir=opts.annotations_dir,
                         name_to_id=label_maps.name_to_id(label_map),
                         ignore_difficult_instances=opts.ignore_difficult_instances,
                         max_instances_per_image=opts.max_instances_per_image)
    gt: Dict[str, Any] = {"images": [], "type": "instances", "annotations": [],
                          "categories": [{"supercategory": "none", "id": i, "name": n}
                                         for i, n in label_map.items()]}

    def assign_ids(result: WorkerResult) -> None:
        # One counter over all years: source_id == json image id, also for --year=merged.
        image_id = len(gt["images"]) + 1
        result.values["image/source_id"] = str(image_id)
        extra = result.extra
        gt["images"].append({"file_name": extra["file_name"], "height": extra["height"],
                             "width": extra["width"], "id": image_id})
        for ann in extra["annotations"]:
            gt["annotations"].append(dict(ann, image_id=image_id, id=len(gt["annotations"]) + 1))

    tfrecord_util.run_conversion(tasks, functools.partial(process_example, options),
                                 opts.output_path, opts.num_shards, opts.num_threads, handler,
                                 summary, progress, on_record=assign_ids)
    outputs.write_file(json_file, json.dumps(gt))
    summary.json_file = json_file
    return summary


def run(opts: ConvertOptions) -> int:
    """Convert, write the ground-truth json and print the summary, which names the json;
    exit status 0, or `errors.DataError` when no image of the lists was written."""
    summary = create_pascal_tfrecord(opts)
    print(summary.format(), flush=True)
    validation.require_written(summary)
    return 0


if __name__ == "__main__":
    # TensorFlow writes the records; imported first, its start-up noise stays out of the log.
    cli.run_tool(PROG, run, ConvertOptions, tensorflow=True)

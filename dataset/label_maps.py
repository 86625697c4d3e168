"""Label maps: {class id: class name} with ids 1..num_classes (0 is never a class).

One meaning everywhere: `num_classes` counts the real classes and label ids run
1..num_classes. COCO keeps its original, non-contiguous category ids (80 classes spread over ids
1..90, so a COCO model has num_classes=90); VOC uses 1..20.

`get_label_map` accepts the built-in names ('coco', 'voc'), a dict, or a .yaml/.yml/.json file. A
dict or file may map id -> name (the form this project writes) or name -> id (the form of the
reference `--label_map_json_path`, e.g. ``{"aeroplane": 1, ...}``); both give {id: name}. A
``background`` entry with id 0 (the reference's VOC map has one) is dropped, since id 0 is not a
class here.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import yaml

import bounds
import errors

if TYPE_CHECKING:  # the config module imports TensorFlow; label maps stay light
    from hparams_config import Config

# The standard COCO 2017 detection categories: 80 classes over ids 1..90 (ids 12, 26, 29, 30,
# 45, 66, 68, 69, 71 and 83 are unused, as in instances_*2017.json).
COCO_LABEL_MAP: Dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}

# PASCAL VOC: 20 classes, ids 1..20 in the usual alphabetical order.
VOC_LABEL_MAP: Dict[int, str] = {
    1: "aeroplane", 2: "bicycle", 3: "bird", 4: "boat", 5: "bottle", 6: "bus", 7: "car",
    8: "cat", 9: "chair", 10: "cow", 11: "diningtable", 12: "dog", 13: "horse",
    14: "motorbike", 15: "person", 16: "pottedplant", 17: "sheep", 18: "sofa", 19: "train",
    20: "tvmonitor",
}

_BUILTIN = {"coco": COCO_LABEL_MAP, "voc": VOC_LABEL_MAP}

LabelMapSpec = Union[None, str, Mapping[Any, Any]]


class LabelMapError(errors.ConfigError):
    """A label map that cannot be used; the message names the source and what to fix."""


def _as_int_id(value: Any) -> Optional[int]:
    """`value` as a class id if it is an int or a string of digits, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def normalize_label_map(mapping: Mapping[Any, Any], source: str = "label map") -> Dict[int, str]:
    """{id: name} sorted by id, from an id->name or a name->id mapping.

    Raises `LabelMapError` naming `source` when ids are not positive integers, or names or ids
    repeat.
    """
    if hasattr(mapping, "as_dict"):  # an hparams Config
        mapping = mapping.as_dict()
    if not isinstance(mapping, Mapping) or not mapping:
        raise LabelMapError(f"{source}: expected a non-empty mapping id -> name (or name -> id), "
                            f"got {type(mapping).__name__}.")
    keys_are_ids = all(_as_int_id(k) is not None for k in mapping)
    values_are_ids = all(_as_int_id(v) is not None for v in mapping.values())
    if keys_are_ids:
        pairs = [(_as_int_id(k), v) for k, v in mapping.items()]
    elif values_are_ids:
        pairs = [(_as_int_id(v), k) for k, v in mapping.items()]
    else:
        raise LabelMapError(f"{source}: expected integer ids on one side, e.g. {{1: 'person'}} or "
                            f"{{'person': 1}}; got {dict(list(mapping.items())[:3])!r}...")
    out: Dict[int, str] = {}
    for class_id, name in pairs:
        if not isinstance(name, str) or not name:
            raise LabelMapError(f"{source}: class id {class_id} has name {name!r}; names must be "
                                f"non-empty strings.")
        if class_id == 0 and name.lower() == "background":
            # The reference VOC map lists background:0; here id 0 is never a class.
            continue
        if class_id < 1:
            raise LabelMapError(f"{source}: class '{name}' has id {class_id}; ids must be >= 1 "
                                f"(0 is reserved, ids run 1..num_classes).")
        if class_id in out:
            raise LabelMapError(f"{source}: id {class_id} is used by both '{out[class_id]}' and "
                                f"'{name}'; give each class its own id.")
        out[class_id] = name
    names = list(out.values())
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelMapError(f"{source}: class name(s) {dupes} appear under several ids; "
                            f"give each class one id.")
    if not out:
        raise LabelMapError(f"{source}: no classes left after dropping 'background'.")
    return dict(sorted(out.items()))


def load_label_map_file(path: str) -> Dict[int, str]:
    """{id: name} from a .json or .yaml/.yml file (yaml is read with `yaml.safe_load`)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yaml", ".yml"):
        raise LabelMapError(f"label map file '{path}': unsupported extension '{ext}'; use a "
                            f".json, .yaml or .yml file.")
    if not os.path.isfile(path):
        raise LabelMapError(f"label map file '{path}' does not exist; check the path.")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f) if ext == ".json" else yaml.safe_load(f)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise LabelMapError(f"label map file '{path}' could not be parsed: "
                                f"{str(e).splitlines()[0]}") from None
    return normalize_label_map(data, source=f"label map file '{path}'")


def get_label_map(spec: LabelMapSpec = "coco") -> Dict[int, str]:
    """{class id: name} for 'coco' (also None), 'voc', a mapping, or a .json/.yaml path.

    This reads a spec; which spec a model uses is decided by `for_config`.

    Returns a new dict, sorted by id; ids are >= 1.
    """
    if spec is None:
        return dict(COCO_LABEL_MAP)
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in _BUILTIN:
            return dict(_BUILTIN[key])
        if os.path.splitext(spec)[1].lower() in (".json", ".yaml", ".yml"):
            return load_label_map_file(spec)
        raise LabelMapError(f"unknown label map '{spec}'; use 'coco', 'voc', a dict "
                            f"{{id: name}}, or a path to a .json/.yaml file.")
    return normalize_label_map(spec)


def num_classes_of(label_map: Mapping[int, str]) -> int:
    """The `num_classes` a label map needs: its largest id (ids may have gaps, as in COCO)."""
    return max(label_map)


def name_to_id(label_map: Mapping[int, str]) -> Dict[str, int]:
    """The inverse map {name: id}."""
    return {name: class_id for class_id, name in label_map.items()}


def for_config(config: Config) -> Dict[int, str]:
    """The one label-map policy: {class id: name} that a model draws and evaluates with.

    `config.label_map` is what training stored in `config.yaml` (a resolved {id: name}
    mapping, see `resolve`) or what the user passed for a model without one: 'coco', 'voc', a
    mapping or a .json/.yaml path. When it is None, `default_names`.
    """
    spec = config.label_map
    if spec is None:
        return default_names(config.num_classes)
    return get_label_map(spec)


def default_names(num_classes: int) -> Dict[int, str]:
    """The names of a model without a label map: COCO's for a 90-class model (the public COCO
    checkpoints), none for any other (its boxes are labelled 'class <id>' rather than with
    another dataset's names)."""
    return dict(COCO_LABEL_MAP) if num_classes == num_classes_of(COCO_LABEL_MAP) else {}


def resolve(spec: LabelMapSpec, num_classes: int,
            found: Iterable[Tuple[str, Mapping[int, str]]] = ()) -> Optional[Dict[int, str]]:
    """The {id: name} mapping a training run stores in `config.yaml` (or None: no names).

    `spec` is the `label_map` hparam as given ('coco', 'voc', a mapping or a file path, read
    here once so that the model directory no longer depends on it). When it is None, the first
    non-empty mapping of `found` ((source, {id: name}) pairs, e.g. the categories of the
    validation json, then the class texts of the training records) names the classes, then
    `default_names`. Ids outside 1..num_classes (`bounds.class_ids`) are an error naming the
    source.
    """
    if spec is not None:
        source, mapping = (f"label_map '{spec}'" if isinstance(spec, str) else "label_map",
                           get_label_map(spec))
    else:
        source, mapping = next(((s, dict(m)) for s, m in found if m), ("", None))
        if mapping is None:
            return default_names(num_classes) or None
    outside = sorted(i for i in mapping if bounds.class_ids(num_classes).problem(i))
    if outside:
        bad = outside[-1] if outside[-1] > num_classes else outside[0]
        fix = ("set num_classes to the largest class id" if bad > num_classes
               else "number the classes from 1")
        raise LabelMapError(f"{source} has class id {bad} but num_classes is {num_classes}; "
                            f"{fix} (ids run 1..num_classes, no background entry).")
    return dict(sorted(mapping.items()))

"""Hyper-parameters: defaults, the efficientdet-d0..d7 table, override parsing and validation.

A `Config` is an attribute bag whose values are plain Python values or nested `Config`s.
Overrides come in three forms and are applied left to right on top of the model preset:

* a string ``'k=v,k2=v2'`` (values parsed with `ast.literal_eval`, brackets may hold commas,
  nested keys as ``nms_configs.method=hard``);
* a path to a ``.yaml``/``.yml`` file (parsed with `yaml.safe_load`); a string may mix both, e.g.
  ``'voc_config.yaml,image_size=256'``;
* a dict.

Unknown keys, values of the wrong type (`_OPTIONAL_TYPES` for keys whose default is None), values
outside their range or choices (`_RANGES`, `_CHOICES`) and fields that disagree
(`_CROSS_FIELD_RULES`) are errors (`HparamsError`) in one line naming the key, the value and
what is allowed; `validate` applies the tables.
"""

from __future__ import annotations

import ast
import copy
import difflib
import operator
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

import bounds
import utils
from errors import ConfigError

__all__ = [
    "Config",
    "HparamsError",
    "default_detection_configs",
    "efficientdet_model_param_dict",
    "get_detection_config",
    "get_efficientdet_config",
    "parse_override_string",
]


class HparamsError(ConfigError):
    """A bad hyper-parameter: unknown key, wrong type or inconsistent values."""


# Keys whose value may take several shapes; checked by `_check_image_size` instead of by type.
_FLEXIBLE_KEYS = {"image_size"}

# Accepted spellings of the precision policies. The seed README writes 'mixed-float16'.
_PRECISION_ALIASES = {
    None: None,
    "float32": "float32",
    "mixed_float16": "mixed_float16",
    "mixed-float16": "mixed_float16",
    "mixed_bfloat16": "mixed_bfloat16",
    "mixed-bfloat16": "mixed_bfloat16",
}

# -------------------------------------------------------------------------------------------------
# What each hparam admits. A key with a non-None default takes its default's type (an int where
# a float is expected is fine); the keys below default to None and take None or these types.
# Nested keys are dotted. Every value is checked by `validate` before anything is built.
# -------------------------------------------------------------------------------------------------
_OPTIONAL_TYPES: Dict[str, Tuple[type, ...]] = {
    "label_map": (str, dict),
    "precision": (str,),
    "iou_loss_type": (str,),
    "pooling_type": (str,),
    "fpn_weight_method": (str,),
    "fpn_config": (dict,),
    "survival_prob": (float,),
    "ckpt_var_scope": (str,),
    "var_exclude_expr": (str,),
    "var_freeze_expr": (str,),
}

_CHOICES = {
    # backbone/efficientnet.py's table (pinned by a test; this module sits below it).
    "backbone_name": tuple(f"efficientnet-b{i}" for i in range(8)),
    # vfpn.FPN_BUILDERS (pinned by a test).
    "fpn_name": ("vfpn", "bifpn", "bifpn_sum"),
    "act_type": ("swish", "swish_native", "relu", "relu6", "silu", "hswish"),
    "optimizer": ("sgd", "adam"),
    "lr_decay_method": ("cosine", "stepwise", "polynomial", "constant"),
    "data_format": ("channels_last", "channels_first"),
    "iou_loss_type": (None, "iou", "giou", "diou", "ciou"),
    "pooling_type": (None, "max", "avg"),
    "fpn_weight_method": (None, "fastattn", "attn", "sum"),
    "vfpn_aggregation": ("concat", "fastattn", "sum"),
    "nms_configs.method": ("hard", "gaussian"),
}

# The largest image side: 2.7x d7's 1536. Anchors, targets and feature maps grow with its
# square; a d0 at 12800x12800 takes more than 18 GB before its first step and then crashes.
MAX_IMAGE_SIZE = 4096

# {key: (allowed range, what the number is)}. The ends are the quantity's meaning (a
# probability, a fraction, a decay below 1, a count of at least 1) or, for sizes and counts
# without a natural end, a bound far past every preset beyond which a run cannot fit in memory;
# a list's range applies to each of its numbers. The presets' values all lie inside.
_RANGES: Dict[str, Tuple[str, str]] = {
    "train_scale_min": ("(0, 10]", "the smallest random scale of a training image"),
    "train_scale_max": ("(0, 10]", "the largest random scale of a training image"),
    "mean_rgb": ("[0, 1]", "the per-channel mean of [0, 1] pixels"),
    "stddev_rgb": ("(0, 1]", "the per-channel stddev of [0, 1] pixels"),
    "num_classes": ("[1, 10000]", ""),
    "max_instances_per_image": ("[1, 10000]", ""),
    "min_level": ("[3, 10]", "a pyramid level (the backbone's finest input is P3)"),
    "max_level": ("[3, 10]", "a pyramid level"),
    "num_scales": ("[1, 16]", ""),
    "aspect_ratios": ("(0, 100]", "a list of anchor (x, y) multipliers"),
    "anchor_scale": ("(0, 100]", ""),
    "batch_norm_momentum": ("[0, 1)", "a decay"),
    "bn_recalibration_images": ("[0, 1024]", "one batch of images (0: off)"),
    "momentum": ("[0, 1)", ""),
    "learning_rate": ("(0, inf)", ""),
    "lr_warmup_init": ("[0, inf)", ""),
    "lr_warmup_epoch": ("[0, inf)", ""),
    "first_lr_drop_epoch": ("[0, inf)", ""),
    "second_lr_drop_epoch": ("[0, inf)", ""),
    "poly_lr_power": ("(0, inf)", ""),
    "clip_gradients_norm": ("[0, inf)", "a norm (0: off)"),
    "num_epochs": ("[1, inf)", ""),
    "alpha": ("[0, 1]", "the focal loss's class weight"),
    "gamma": ("[0, inf)", ""),
    "delta": ("(0, inf)", ""),
    "box_loss_weight": ("[0, inf)", ""),
    "iou_loss_weight": ("[0, inf)", ""),
    "weight_decay": ("[0, inf)", ""),
    "box_class_repeats": ("[1, 32]", ""),
    "fpn_cell_repeats": ("[1, 32]", ""),
    "fpn_num_filters": ("[1, 4096]", ""),
    "vfpn_refine_convs": ("[0, 32]", ""),
    "vfpn_branch_start": ("[0, 1]", "a fraction of the run's steps"),
    "vfpn_branch_warmup": ("[0, 1]", "a fraction of the run's steps"),
    "vfpn_branch_weight_decay_scale": ("[0, inf)", ""),
    "survival_prob": ("(0, 1]", "a probability"),
    "moving_average_decay": ("[0, 1)", "a decay (0: no moving average)"),
    "nms_configs.iou_thresh": ("[0, 1]", "an IoU"),
    "nms_configs.score_thresh": ("[0, 1]", "a score"),
    "nms_configs.sigma": ("(0, inf)", ""),
    "nms_configs.max_output_size": ("[1, 10000]", "the number of detections per image"),
    "nms_configs.max_nms_inputs": ("[0, inf)", "the number of NMS candidates per image (0: all)"),
}
_PARSED_RANGES = {key: (bounds.Range.parse(text), meaning)
                  for key, (text, meaning) in _RANGES.items()}

# Rules between fields: (fields, holds(*values), the rule as the error states it).
_CROSS_FIELD_RULES: Tuple[Tuple[Tuple[str, ...], Callable[..., bool], str], ...] = (
    (("min_level", "max_level"), operator.le, "hparams need min_level <= max_level"),
    (("train_scale_min", "train_scale_max"), operator.le,
     "hparams need train_scale_min <= train_scale_max (the random scale's range)"),
    (("first_lr_drop_epoch", "second_lr_drop_epoch"), operator.le,
     "hparams need first_lr_drop_epoch <= second_lr_drop_epoch"),
    (("vfpn_branch_start", "vfpn_branch_warmup"), lambda start, warm: start + warm <= 1,
     "hparams need vfpn_branch_start + vfpn_branch_warmup <= 1 (the branch's ramp ends by "
     "the last step)"),
    (("vfpn_zero_init", "vfpn_residual"), lambda zero, residual: residual or not zero,
     "hparam 'vfpn_zero_init=True' needs 'vfpn_residual=True': without the residual a "
     "zero-initialised branch outputs zeros; set vfpn_zero_init=False"),
    (("vfpn_zero_init", "vfpn_refine_convs", "vfpn_aggregation"),
     lambda zero, convs, agg: not zero or convs > 0 or agg == "concat",
     "hparam 'vfpn_zero_init=True' needs a BN in the vertical branch (vfpn_refine_convs >= 1 "
     "or vfpn_aggregation='concat'); set vfpn_zero_init=False"),
)


class Config:
    """An attribute bag of hyper-parameters; nested dicts become nested `Config`s."""

    def __init__(self, config_dict: Optional[Mapping[str, Any]] = None):
        object.__setattr__(self, "_keys", [])
        for k, v in (config_dict or {}).items():
            setattr(self, k, v)

    # -- attribute bag -------------------------------------------------------------------------
    def __setattr__(self, key: str, value: Any) -> None:
        # A mapping with non-string keys (e.g. label_map {1: 'person'}) is data, not a sub-config.
        if isinstance(value, Mapping) and not isinstance(value, Config) and all(
                isinstance(k, str) for k in value):
            value = Config(value)
        elif isinstance(value, Config):
            value = Config(value.as_dict())
        if key not in self._keys:
            self._keys.append(key)
        object.__setattr__(self, key, value)

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails: give the closest names instead of a bare error.
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(_unknown_key_message(key, self._keys))

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(_unknown_key_message(key, self._keys))
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __iter__(self):
        return iter(list(self._keys))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Config({self.as_dict()!r})"

    def __str__(self) -> str:
        return yaml.safe_dump(to_yamlable(self.as_dict()), default_flow_style=False)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(self.as_dict(), memo))

    def keys(self) -> List[str]:
        return list(self._keys)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._keys else default

    def as_dict(self) -> Dict[str, Any]:
        """A deep copy as plain dicts."""
        out = {}
        for k in self._keys:
            v = getattr(self, k)
            out[k] = v.as_dict() if isinstance(v, Config) else copy.deepcopy(v)
        return out

    # -- updates ---------------------------------------------------------------------------------
    def update(self, values: Mapping[str, Any]) -> None:
        """Merge `values` in, allowing new keys and without type checks (used for presets)."""
        _merge(self, dict(values), allow_new_keys=True, check_types=False, prefix="")

    def override(self, values: Union[str, Mapping[str, Any], None],
                 allow_new_keys: bool = False) -> Config:
        """Apply user overrides: a 'k=v' string, a .yaml path, a mix of both, or a dict.

        Existing keys only (unless `allow_new_keys`), values type-checked against the current
        ones, nested configs merged key by key. Returns self so calls can be chained.
        """
        for layer in _override_layers(values):
            _merge(self, layer, allow_new_keys=allow_new_keys, check_types=True, prefix="")
        return self

    # -- yaml ------------------------------------------------------------------------------------
    def save_to_yaml(self, path: str) -> None:
        """Write the whole config as a config file (`config_file_text`; tuples become lists,
        `load_from_yaml` accepts them back)."""
        import tensorflow as tf  # local: gfile handles gs:// model dirs

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(config_file_text(self))

    @classmethod
    def load_from_yaml(cls, path: str) -> Config:
        return cls(read_yaml(path))


def _unknown_key_message(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown hparam key '{key}'.{hint} Valid keys: see hparams_config.py."


def to_yamlable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_yamlable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_yamlable(v) for v in value]
    return value


# A saved config file (a model directory's or an export's config.yaml) starts with the
# top-level key `version: CONFIG_VERSION`, the layout it is written in, so that a later layout
# can be told apart instead of misread. A file without the key (written before it existed) is
# version 1; a version this code does not know is refused.
VERSION_KEY = "version"
CONFIG_VERSION = 1


def config_file_text(config: Config) -> str:
    """`config` as the text of a config file: `version: CONFIG_VERSION`, then every key."""
    return f"{VERSION_KEY}: {CONFIG_VERSION}\n{config}"


def _pop_version(data: Dict[str, Any], path: str) -> None:
    """Take the file layout key out of `data`, the mapping read from `path`; refuse a
    version this code does not read (older directories have none: version 1)."""
    version = data.pop(VERSION_KEY, CONFIG_VERSION)
    if type(version) is not int or version != CONFIG_VERSION:
        raise HparamsError(
            f"'{path}': key '{VERSION_KEY}' is {version!r}, a config file layout this code "
            f"does not read (it reads {VERSION_KEY}: {CONFIG_VERSION}); use the code that wrote "
            f"the file.")


def read_yaml(path: str) -> Dict[str, Any]:
    """The mapping in YAML file `path` (an hparams file or a saved config), without its
    `version` key (checked by `_pop_version`)."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise HparamsError(f"hparams file '{path}' does not exist.")
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise HparamsError(f"hparams file '{path}' is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HparamsError(f"hparams file '{path}' must hold a mapping of key: value, "
                           f"got {type(data).__name__}.")
    _pop_version(data, path)
    return data


def _split_top_level(text: str, sep: str = ",") -> List[str]:
    """Split on `sep` outside (), [] and {} and outside quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # plain strings such as 'swish' or '1920x1280'


def parse_override_string(text: str) -> Dict[str, Any]:
    """Parse 'a=1,b.c=x,d=[1,2]' into a nested dict. A piece without '=' is an error."""
    out: Dict[str, Any] = {}
    for piece in _split_top_level(text):
        if "=" not in piece:
            raise HparamsError(
                f"invalid hparams piece '{piece}': expected key=value (or a .yaml file path).")
        key, value = (s.strip() for s in piece.split("=", 1))
        if not key:
            raise HparamsError(f"invalid hparams piece '{piece}': empty key.")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise HparamsError(f"hparams key '{key}' sets both '{p}' and one of its fields.")
        node[parts[-1]] = _parse_value(value)
    return out


def _override_layers(values: Union[str, Mapping[str, Any], None]) -> List[Dict[str, Any]]:
    """Turn one override argument into an ordered list of dicts to merge."""
    if values is None or isinstance(values, Config) and not values.keys():
        return []
    if isinstance(values, Config):
        return [values.as_dict()]
    if isinstance(values, Mapping):
        return [dict(values)]
    if not isinstance(values, str):
        raise HparamsError(f"hparams must be a string, a .yaml path or a dict, "
                           f"got {type(values).__name__}.")
    layers: List[Dict[str, Any]] = []
    pending: List[str] = []
    for piece in _split_top_level(values.strip()):
        if "=" not in piece and piece.lower().endswith((".yaml", ".yml")):
            if pending:
                layers.append(parse_override_string(",".join(pending)))
                pending = []
            layers.append(read_yaml(piece))
        elif "=" not in piece:
            raise HparamsError(
                f"invalid hparams '{piece}': use key=value pairs separated by commas, or the "
                f"path of a .yaml file.")
        else:
            pending.append(piece)
    if pending:
        layers.append(parse_override_string(",".join(pending)))
    return layers


def _type_ok(old: Any, new: Any) -> bool:
    if isinstance(old, bool):
        return isinstance(new, bool)
    if isinstance(old, int):
        return isinstance(new, int) and not isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, (list, tuple)):
        return isinstance(new, (list, tuple))
    if isinstance(old, (dict, Config)):
        return isinstance(new, (Mapping, Config))
    return isinstance(new, type(old))


def _type_problem(key: str, old: Any, new: Any) -> Optional[str]:
    """Why `new` cannot replace `old` as hparam `key` (dotted), or None.

    A key of `_OPTIONAL_TYPES` takes None or one of its types; any other key takes its current
    value's type and never None (a None there would fail deep inside the graph).
    """
    kinds = _OPTIONAL_TYPES.get(key)
    if kinds is not None:
        if new is None or any(_type_ok(kind(), new) for kind in kinds):
            return None
        expected = " or ".join(k.__name__ for k in kinds) + " or None"
    elif old is None:
        return None  # a key of a nested mapping the user made (e.g. fpn_config's nodes)
    elif new is not None and _type_ok(old, new):
        return None
    else:
        expected = ("a mapping" if isinstance(old, Config)
                    else f"{type(old).__name__} (default {old!r})")
    return f"hparam '{key}' expects {expected}, got {type(new).__name__} {new!r}."


def _merge(cfg: Config, values: Dict[str, Any], allow_new_keys: bool, check_types: bool,
           prefix: str) -> None:
    for key, new in values.items():
        full = prefix + key
        if key not in cfg:
            if not allow_new_keys:
                valid = [prefix + k for k in cfg.keys()]
                raise HparamsError(_unknown_key_message(full, valid))
            setattr(cfg, key, new)
            continue
        old = getattr(cfg, key)
        if isinstance(old, Config) and isinstance(new, (Mapping, Config)) and old.keys():
            new_dict = new.as_dict() if isinstance(new, Config) else dict(new)
            _merge(old, new_dict, allow_new_keys, check_types, full + ".")
            continue
        if check_types and key == "precision":
            new = _normalize_precision(new)
        elif check_types and full not in _FLEXIBLE_KEYS:
            problem = _type_problem(full, old, new)
            if problem:
                raise HparamsError(problem)
        if isinstance(new, int) and not isinstance(new, bool) and (
                isinstance(old, float) or float in _OPTIONAL_TYPES.get(full, ())):
            new = float(new)
        setattr(cfg, key, new)


def _normalize_precision(value: Any) -> Optional[str]:
    if value not in _PRECISION_ALIASES:
        raise HparamsError(
            f"hparam 'precision' got {value!r}; valid values: float32, mixed_float16 "
            f"(also written mixed-float16), mixed_bfloat16, or None.")
    return _PRECISION_ALIASES[value]


def _lookup(config: Config, key: str) -> Tuple[bool, Any]:
    """(found, value) of a dotted key such as 'nms_configs.iou_thresh'."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Config) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _numbers(value: Any) -> List[Any]:
    """The numbers of a value: itself, or those of a (nested) list."""
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _numbers(item)]
    return [value]


def _check_ranges_and_choices(config: Config) -> None:
    """Every key of `_RANGES` within its range, every key of `_CHOICES` one of its values."""
    for key, (allowed, meaning) in _PARSED_RANGES.items():
        found, value = _lookup(config, key)
        if not found or value is None:
            continue
        for number in _numbers(value):
            line = bounds.out_of_range(f"hparam '{key}'", number, allowed, meaning)
            if line:
                if number is not value:
                    line += f" in {key}={value!r}"
                raise HparamsError(line + ".")
    for key, choices in _CHOICES.items():
        found, value = _lookup(config, key)
        if found and value not in choices:
            raise HparamsError(f"hparam '{key}' got {value!r}; valid values: "
                               f"{', '.join(repr(c) for c in choices)}.")


def _check_image_size(config: Config) -> None:
    try:
        height, width = utils.parse_image_size(config.image_size)
    except ConfigError as e:
        raise HparamsError(f"hparam 'image_size': {e}") from None
    if max(height, width) > MAX_IMAGE_SIZE:
        raise HparamsError(
            f"hparam 'image_size' is {width}x{height} (WxH); each side must be <= "
            f"{MAX_IMAGE_SIZE} (memory grows with its square), e.g. tile larger images.")
    stride = 2 ** config.max_level
    if height % stride or width % stride:
        raise HparamsError(
            f"image_size {height}x{width} (HxW) is not divisible by 2**max_level = {stride}; "
            f"use multiples of {stride}, e.g. {max(stride, round(height / stride) * stride)}x"
            f"{max(stride, round(width / stride) * stride)}.")


def _check_structure(config: Config) -> None:
    """Lists of a fixed shape, regular expressions that compile, and the cross-field rules."""
    for key in ("mean_rgb", "stddev_rgb"):
        if len(config[key]) != 3:
            raise HparamsError(f"hparam '{key}' needs 3 values (R, G, B), got {config[key]!r}.")
    if not config.aspect_ratios or any(
            not isinstance(a, (list, tuple)) or len(a) != 2 for a in config.aspect_ratios):
        raise HparamsError("hparam 'aspect_ratios' must be a non-empty list of (x, y) pairs.")
    for key in ("var_exclude_expr", "var_freeze_expr"):
        try:
            re.compile(config[key] or "")
        except re.error as e:
            raise HparamsError(f"hparam '{key}' is not a regular expression: {e}.") from None
    for keys, holds, rule in _CROSS_FIELD_RULES:
        values = [config[k] for k in keys]
        if not holds(*values):
            got = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values))
            raise HparamsError(f"{rule}; got {got}.")


def _check_label_map(config: Config) -> None:
    """A mapping label_map has integer ids 1..num_classes; it is stored as {id: name}."""
    label_map = config.label_map
    if isinstance(label_map, Config):  # a YAML mapping whose ids were written as strings
        label_map = label_map.as_dict()
    if isinstance(label_map, dict):
        try:
            ids = [int(k) for k in label_map]
        except (TypeError, ValueError):
            raise HparamsError("hparam 'label_map' must map integer class ids to names, e.g. "
                               "{1: 'person', 2: 'car'}.") from None
        if any(bounds.class_ids(config.num_classes).problem(i) for i in ids):
            raise HparamsError(
                f"hparam 'label_map' has ids {min(ids)}..{max(ids)} but num_classes is "
                f"{config.num_classes}; ids run 1..num_classes (no background entry).")
        config.label_map = {int(k): str(v) for k, v in label_map.items()}
    elif label_map is not None and not isinstance(label_map, str):
        raise HparamsError("hparam 'label_map' must be 'coco', 'voc', a yaml/json path, a "
                           "mapping id: name, or None.")


def validate(config: Config) -> Config:
    """Check every value against its range or choices (`_RANGES`, `_CHOICES`), the image
    size, list shapes and the cross-field rules; raise `HparamsError` in one line naming the
    key, its value and what is allowed. Returns `config` (a mapping label_map as {id: name}).
    """
    _check_ranges_and_choices(config)
    _check_image_size(config)
    _check_structure(config)
    _check_label_map(config)
    return config


def default_detection_configs() -> Config:
    """Every detection hparam with its default (the release's keys plus this project's)."""
    h = Config()
    # model name; the backbone is filled in per model.
    h.name = "efficientdet-d1"
    h.act_type = "swish"

    # input preprocessing.
    h.image_size = 640  # int, 'WxH' string, or (H, W)
    h.input_rand_hflip = True
    h.train_scale_min = 0.1
    h.train_scale_max = 2.0
    h.mean_rgb = [0.485, 0.456, 0.406]  # ImageNet mean/std on [0, 1] pixels
    h.stddev_rgb = [0.229, 0.224, 0.225]

    # dataset: num_classes counts the real classes; label ids run 1..num_classes.
    h.num_classes = 90
    h.skip_crowd_during_training = True
    h.label_map = None  # None/'coco', 'voc', or {id: name}; stored with the model
    h.max_instances_per_image = bounds.DEFAULT_MAX_INSTANCES  # the dataset tools' too

    # model architecture.
    h.min_level = 3
    h.max_level = 7
    h.num_scales = 3
    h.aspect_ratios = [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]]  # (x, y) multipliers
    h.anchor_scale = 4.0
    h.is_training_bn = True
    h.batch_norm_momentum = 0.99  # moving = m * moving + (1 - m) * batch; 0.99 as released
    # > 0: after each training segment (before its eval), replace the checkpoint's moving
    # statistics with those of one batch of this many training images (bn_calibration.py).
    # 0 keeps the moving averages, as released.
    h.bn_recalibration_images = 0

    # optimization.
    h.momentum = 0.9
    h.optimizer = "sgd"
    h.learning_rate = 0.08  # for a global batch of 64; scaled linearly
    h.lr_warmup_init = 0.008
    h.lr_warmup_epoch = 1.0
    h.first_lr_drop_epoch = 200.0
    h.second_lr_drop_epoch = 250.0
    h.poly_lr_power = 0.9
    h.clip_gradients_norm = 10.0
    h.num_epochs = 300
    h.data_format = "channels_last"

    # classification loss (focal) and box losses.
    h.alpha = 0.25
    h.gamma = 1.5
    h.delta = 0.1
    h.box_loss_weight = 50.0
    h.iou_loss_type = None
    h.iou_loss_weight = 1.0
    h.weight_decay = 4e-5

    # precision: None/'float32', 'mixed_float16' (GPU), 'mixed_bfloat16' (TPU, bf16 CPUs).
    h.precision = None

    # feature network and heads.
    h.box_class_repeats = 3
    h.fpn_cell_repeats = 3
    h.fpn_num_filters = 88
    h.separable_conv = True
    h.apply_bn_for_resampling = True
    h.conv_after_downsample = False
    h.conv_bn_act_pattern = False
    h.use_native_resize_op = False
    h.pooling_type = None
    h.fpn_name = "vfpn"  # 'vfpn' (default), 'bifpn', 'bifpn_sum'
    h.fpn_weight_method = None  # None: the fpn_name's own (fastattn for vfpn/bifpn)
    h.fpn_config = None
    # VFPN vertical stage (vfpn.py; the branch's training knobs: vfpn_training.py). The comments
    # name each knob's row in benchmarks/results_learning.md, "Ablation".
    h.vfpn_aggregation = "concat"  # 'concat', 'fastattn', 'sum'; rows "aggregation fastattn/sum"
    h.vfpn_refine_convs = 2  # full 3x3 convs after the aggregation; row "1 refine conv"
    h.vfpn_residual = True  # last cell's output + branch; row "branch only, no residual join"
    h.vfpn_zero_init = True  # last BN gamma 0 (fresh VFPN = BiFPN); rows "released init (gamma 1)"
    h.vfpn_branch_start = 0.0  # fraction of steps the branch is held; row "staged branch"
    h.vfpn_branch_warmup = 0.0  # fraction of steps its update ramps in; row "staged branch"
    h.vfpn_branch_weight_decay_scale = 1.0  # x weight_decay; row "no weight decay on the branch"

    h.survival_prob = None
    h.lr_decay_method = "cosine"
    h.moving_average_decay = 0.9998
    h.ckpt_var_scope = None
    # --ckpt / --backbone_ckpt: never take variables matching this regex (e.g.
    # '.*/class-predict/.*' to start the class head afresh); skip_mismatch skips variables the
    # checkpoint lacks or holds with another shape (else a shape mismatch is an error).
    h.var_exclude_expr = None
    h.skip_mismatch = True
    h.backbone_name = "efficientnet-b1"
    h.var_freeze_expr = None

    # post-processing shared by eval, inference and export (the choice is logged).
    h.nms_configs = {
        "method": "hard",  # 'hard' or 'gaussian' (soft-NMS)
        "iou_thresh": 0.5,
        "score_thresh": 0.4,  # inference/export threshold; COCO eval uses none
        "sigma": 0.5,  # gaussian soft-NMS
        "max_output_size": 100,
        "max_nms_inputs": 5000,  # top-k before NMS
        "class_agnostic": False,
    }
    return h


# Per-model settings, as released. fpn_name defaults to 'vfpn'; d6/d7 keep the reference's
# sum fusion through fpn_weight_method so that fpn_name=bifpn reproduces the reference exactly.
efficientdet_model_param_dict: Dict[str, Dict[str, Any]] = {
    "efficientdet-d0": dict(name="efficientdet-d0", backbone_name="efficientnet-b0",
                            image_size=512, fpn_num_filters=64, fpn_cell_repeats=3,
                            box_class_repeats=3),
    "efficientdet-d1": dict(name="efficientdet-d1", backbone_name="efficientnet-b1",
                            image_size=640, fpn_num_filters=88, fpn_cell_repeats=4,
                            box_class_repeats=3),
    "efficientdet-d2": dict(name="efficientdet-d2", backbone_name="efficientnet-b2",
                            image_size=768, fpn_num_filters=112, fpn_cell_repeats=5,
                            box_class_repeats=3),
    "efficientdet-d3": dict(name="efficientdet-d3", backbone_name="efficientnet-b3",
                            image_size=896, fpn_num_filters=160, fpn_cell_repeats=6,
                            box_class_repeats=4),
    "efficientdet-d4": dict(name="efficientdet-d4", backbone_name="efficientnet-b4",
                            image_size=1024, fpn_num_filters=224, fpn_cell_repeats=7,
                            box_class_repeats=4),
    "efficientdet-d5": dict(name="efficientdet-d5", backbone_name="efficientnet-b5",
                            image_size=1280, fpn_num_filters=288, fpn_cell_repeats=7,
                            box_class_repeats=4),
    "efficientdet-d6": dict(name="efficientdet-d6", backbone_name="efficientnet-b6",
                            image_size=1280, fpn_num_filters=384, fpn_cell_repeats=8,
                            box_class_repeats=5, fpn_weight_method="sum"),
    "efficientdet-d7": dict(name="efficientdet-d7", backbone_name="efficientnet-b6",
                            image_size=1536, fpn_num_filters=384, fpn_cell_repeats=8,
                            box_class_repeats=5, anchor_scale=5.0, fpn_weight_method="sum"),
}


# The model names are the presets' (set here, once the table exists).
_CHOICES["name"] = tuple(efficientdet_model_param_dict)


def get_efficientdet_config(model_name: str = "efficientdet-d1") -> Config:
    """The preset for one of efficientdet-d0..d7."""
    if model_name not in efficientdet_model_param_dict:
        raise HparamsError(
            f"unknown model_name '{model_name}'; valid names: "
            f"{', '.join(sorted(efficientdet_model_param_dict))}.")
    h = default_detection_configs()
    h.update(efficientdet_model_param_dict[model_name])
    return h


def get_detection_config(model_name: str,
                         overrides: Union[str, Mapping[str, Any], None] = None) -> Config:
    """Preset for `model_name`, then `overrides` (see module docstring), validated."""
    config = get_efficientdet_config(model_name)
    config.override(overrides)
    return validate(config)


def image_hw(config: Config) -> Tuple[int, int]:
    """(height, width) of the network input for `config`."""
    return utils.parse_image_size(config.image_size)

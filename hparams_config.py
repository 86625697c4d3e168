"""Hyper-parameters: defaults, the efficientdet-d0..d7 table, override parsing and validation.

A `Config` is an attribute bag whose values are plain Python values or nested `Config`s.
Overrides come in three forms and are applied left to right on top of the model preset:

* a string ``'k=v,k2=v2'`` (values parsed with `ast.literal_eval`, brackets may hold commas,
  nested keys as ``nms_configs.method=hard``);
* a path to a ``.yaml``/``.yml`` file (parsed with `yaml.safe_load`); a string may mix both, e.g.
  ``'voc_config.yaml,image_size=256'``;
* a dict.

Unknown keys, values of the wrong type and inconsistent fields are errors (`HparamsError`) whose
message names the key and what to do. See `validate` for the cross-field rules.
"""

from __future__ import annotations

import ast
import copy
import difflib
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

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


# Keys whose value may take several shapes; checked by `_check_special` instead of by type.
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

_CHOICES = {
    "act_type": ("swish", "swish_native", "relu", "relu6", "silu", "hswish"),
    "optimizer": ("sgd", "adam"),
    "lr_decay_method": ("cosine", "stepwise", "polynomial", "constant"),
    "data_format": ("channels_last", "channels_first"),
    "iou_loss_type": (None, "iou", "giou", "diou", "ciou"),
    "pooling_type": (None, "max", "avg"),
    "fpn_weight_method": (None, "fastattn", "attn", "sum"),
    "vfpn_aggregation": ("concat", "fastattn", "sum"),
}


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
        """Write the whole config as YAML (tuples become lists; `load` accepts them back)."""
        import tensorflow as tf  # local: gfile handles gs:// model dirs

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(str(self))

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


def read_yaml(path: str) -> Dict[str, Any]:
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
    if old is None or new is None:
        return True
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
        return isinstance(new, (dict, Config))
    return isinstance(new, type(old))


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
        elif check_types and key not in _FLEXIBLE_KEYS and not _type_ok(old, new):
            raise HparamsError(
                f"hparam '{full}' expects {type(old).__name__} (default {old!r}), "
                f"got {type(new).__name__} {new!r}.")
        if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
            new = float(new)
        setattr(cfg, key, new)


def _normalize_precision(value: Any) -> Optional[str]:
    if value not in _PRECISION_ALIASES:
        raise HparamsError(
            f"hparam 'precision' got {value!r}; valid values: float32, mixed_float16 "
            f"(also written mixed-float16), mixed_bfloat16, or None.")
    return _PRECISION_ALIASES[value]


def validate(config: Config) -> Config:
    """Check cross-field rules; raise `HparamsError` naming the fields. Returns `config`."""
    try:
        height, width = utils.parse_image_size(config.image_size)
    except ConfigError as e:
        raise HparamsError(f"hparam 'image_size': {e}") from None
    if not isinstance(config.min_level, int) or not isinstance(config.max_level, int):
        raise HparamsError("hparams 'min_level' and 'max_level' must be integers.")
    if not 1 <= config.min_level <= config.max_level:
        raise HparamsError(f"hparams need 1 <= min_level <= max_level, got min_level="
                           f"{config.min_level}, max_level={config.max_level}.")
    stride = 2 ** config.max_level
    if height % stride or width % stride:
        raise HparamsError(
            f"image_size {height}x{width} (HxW) is not divisible by 2**max_level = {stride}; "
            f"use multiples of {stride}, e.g. {max(stride, round(height / stride) * stride)}x"
            f"{max(stride, round(width / stride) * stride)}.")
    if config.num_classes < 1:
        raise HparamsError(f"hparam 'num_classes' must be >= 1 (the number of real classes, "
                           f"label ids 1..num_classes), got {config.num_classes}.")
    if config.max_instances_per_image < 1:
        raise HparamsError("hparam 'max_instances_per_image' must be >= 1.")
    for key, choices in _CHOICES.items():
        if key in config and config[key] not in choices:
            raise HparamsError(f"hparam '{key}' got {config[key]!r}; valid values: "
                               f"{', '.join(repr(c) for c in choices)}.")
    if config.nms_configs.method not in ("hard", "gaussian"):
        raise HparamsError(f"hparam 'nms_configs.method' got {config.nms_configs.method!r}; "
                           f"valid values: 'hard', 'gaussian'.")
    if not 0.0 <= config.batch_norm_momentum < 1.0:
        raise HparamsError("hparam 'batch_norm_momentum' must be in [0, 1).")
    if config.vfpn_refine_convs < 0:
        raise HparamsError("hparam 'vfpn_refine_convs' must be >= 0.")
    if config.vfpn_zero_init and not config.vfpn_residual:
        raise HparamsError("hparam 'vfpn_zero_init=True' needs 'vfpn_residual=True': without the "
                           "residual a zero-initialised branch outputs zeros; set "
                           "vfpn_zero_init=False.")
    if (config.vfpn_zero_init and config.vfpn_refine_convs == 0
            and config.vfpn_aggregation != "concat"):
        raise HparamsError(f"hparam 'vfpn_zero_init=True' needs a BN in the vertical branch, but "
                           f"vfpn_aggregation={config.vfpn_aggregation!r} with "
                           f"vfpn_refine_convs=0 has none; set vfpn_zero_init=False.")
    if config.bn_recalibration_images < 0:
        raise HparamsError("hparam 'bn_recalibration_images' must be >= 0 (0: off), got "
                           f"{config.bn_recalibration_images}.")
    if config.vfpn_branch_weight_decay_scale < 0:
        raise HparamsError("hparam 'vfpn_branch_weight_decay_scale' must be >= 0, got "
                           f"{config.vfpn_branch_weight_decay_scale}.")
    for key in ("vfpn_branch_start", "vfpn_branch_warmup"):
        if not 0.0 <= config[key] <= 1.0:
            raise HparamsError(f"hparam '{key}' is a fraction of the run's steps and must be in "
                               f"[0, 1], got {config[key]}.")
    for key in ("fpn_num_filters", "fpn_cell_repeats", "box_class_repeats", "num_scales"):
        if config[key] < 1:
            raise HparamsError(f"hparam '{key}' must be >= 1, got {config[key]}.")
    if not config.aspect_ratios or any(len(a) != 2 for a in config.aspect_ratios):
        raise HparamsError("hparam 'aspect_ratios' must be a non-empty list of (x, y) pairs.")
    label_map = config.label_map
    if isinstance(label_map, Config):  # a YAML mapping whose ids were written as strings
        label_map = label_map.as_dict()
    if isinstance(label_map, dict):
        try:
            ids = [int(k) for k in label_map]
        except (TypeError, ValueError):
            raise HparamsError("hparam 'label_map' must map integer class ids to names, e.g. "
                               "{1: 'person', 2: 'car'}.") from None
        if ids and (min(ids) < 1 or max(ids) > config.num_classes):
            raise HparamsError(
                f"hparam 'label_map' has ids {min(ids)}..{max(ids)} but num_classes is "
                f"{config.num_classes}; ids run 1..num_classes (no background entry).")
        config.label_map = {int(k): str(v) for k, v in label_map.items()}
    elif label_map is not None and not isinstance(label_map, str):
        raise HparamsError("hparam 'label_map' must be 'coco', 'voc', a yaml/json path, a "
                           "mapping id: name, or None.")
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
    h.max_instances_per_image = 100

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
    # VFPN vertical stage (see vfpn.py and README.md, Architecture).
    h.vfpn_aggregation = "concat"  # 'concat' (1x1 conv over R*W), 'fastattn', 'sum'
    h.vfpn_refine_convs = 2  # full 3x3 convs after the aggregation
    h.vfpn_residual = True  # output = last cell's output + the branch (False: the branch only)
    # gamma 0 on the branch's last BN: a fresh VFPN equals BiFPN and learns to add the branch.
    h.vfpn_zero_init = True
    # A staged branch: its variables held at their initial values for this fraction of the
    # run's steps (VFPN then trains as BiFPN), then their updates ramped from 0 to full over the
    # next `vfpn_branch_warmup` fraction. Off by default: on three paired seeds 0.4/0.1 did no
    # better than training the branch from step 0 (benchmarks/results_learning.md).
    h.vfpn_branch_start = 0.0
    h.vfpn_branch_warmup = 0.0
    # Multiplies weight_decay for the vertical stage's kernels. While the branch's last BN gamma
    # is near 0, the branch's convolutions get almost no gradient from the loss but their full
    # L2 gradient, and Adam normalises that into full-size steps towards 0: their kernels
    # collapse (P6/P7 to ~0) before the branch can be learned (benchmarks/results_learning.md).
    h.vfpn_branch_weight_decay_scale = 1.0

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

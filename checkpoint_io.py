"""Checkpoints: find one from a prefix or a directory, check it, match variables to it, restore
them from it, and write one.

A detector checkpoint written by training holds every model variable `v` and, when the run used
an exponential moving average (`moving_average_decay` > 0), its shadow
`v/ExponentialMovingAverage`. Evaluation, export and inference restore the shadows: they are the
weights the paper's numbers are measured with.

Before any graph is built, `resolve_checkpoint` checks that a checkpoint can be read whole (a
truncated index or data file is named), and `check_detector_fits` compares what a detector
checkpoint holds (backbone, feature-network width and depth, head, anchors, classes; read from
its variable shapes) with the model about to be built, and says in one line which model it looks
like. `match_variables` is the one rule that pairs a graph's variables with a checkpoint's
names (EMA shadows, renamed scopes, missing and reshaped variables): restoring for inference and
initialising training from --ckpt / --backbone_ckpt both use it. `write_checkpoint` is the one
writer of {name: array} checkpoints and `step_of` the one reader of a step from a checkpoint's
name. Paths go through `tf.io.gfile`, so gs:// checkpoints work. Errors are
`errors.CheckpointError` naming the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import errors
import hparams_config
import sessions

if TYPE_CHECKING:
    from hparams_config import Config

tf1 = tf.compat.v1

EMA_SUFFIX = "/ExponentialMovingAverage"


def var_name(v: tf.Variable) -> str:
    """A variable's name without ':0'. Under a distribution strategy `v.op.name` can be a
    replica's component ('.../replica_1'), while `v.name` is the variable's own name."""
    return v.name.split(":")[0]


def use_ema(config: Config) -> bool:
    """Whether a model trained with `config` keeps EMA shadows that inference should read."""
    return bool(config.moving_average_decay and config.moving_average_decay > 0)


def checkpoint_prefix(path: str) -> str:
    """The checkpoint prefix named by `path`: a prefix with an index file, or a directory
    holding a checkpoint (its latest, from the directory's 'checkpoint' index file). Only
    located, not read: see `resolve_checkpoint`."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if not latest:
            raise errors.CheckpointError(
                f"no checkpoint found in directory '{path}': it has no 'checkpoint' index file "
                f"(training writes one); give a checkpoint directory or a prefix")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise errors.CheckpointError(
            f"checkpoint '{path}' not found: give a checkpoint prefix (e.g. "
            f"model_dir/model.ckpt-1000) or a directory holding one")
    return path


def resolve_checkpoint(path: str, flag: Optional[str] = None) -> str:
    """`checkpoint_prefix(path)`, after checking that the checkpoint is readable whole (see
    `read_shapes`). With `flag` (e.g. 'ckpt'), an error starts with '--flag: ', naming the
    command-line flag that gave `path`."""
    try:
        prefix = checkpoint_prefix(path)
        read_shapes(prefix)
    except errors.CheckpointError as e:
        if flag is None:
            raise
        raise errors.CheckpointError(f"--{flag}: {e}") from None
    return prefix


def step_of(prefix: str) -> int:
    """The training step in a checkpoint prefix's name: 'model_dir/model.ckpt-1200' -> 1200."""
    return int(prefix.rsplit("-", 1)[-1])


def latest_step(model_dir: str) -> Optional[int]:
    """The step of the latest checkpoint of `model_dir` (its 'checkpoint' index file), or None
    when it has none (or does not exist)."""
    latest = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
    return step_of(latest) if latest else None


def read_shapes(prefix: str) -> Dict[str, List[int]]:
    """{variable name: shape} of checkpoint `prefix`, after checking that its index can be read
    and that its data files hold every byte the index lists (a copy cut short, e.g. by a full
    disk, is otherwise found only when a variable deep in the model is read)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
    except tf.errors.OpError as e:
        raise errors.CheckpointError(
            f"checkpoint '{prefix}': its index file {prefix}.index cannot be read "
            f"({str(e).splitlines()[0]}); it is truncated or not a checkpoint index: copy the "
            f"checkpoint again") from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    data_files = tf.io.gfile.glob(prefix + ".data-*")
    if not data_files:
        raise errors.CheckpointError(f"checkpoint '{prefix}' has no data file "
                                     f"({prefix}.data-*) beside its index; copy it too")
    if all(d != tf.string for d in dtypes.values()):  # strings have no fixed size
        expected = sum(int(np.prod(shapes[n])) * dtypes[n].size for n in shapes)
        found = sum(tf.io.gfile.stat(f).length for f in data_files)
        if found < expected:
            raise errors.CheckpointError(
                f"checkpoint '{prefix}' is truncated: its data files hold {found} bytes of the "
                f"{expected} its index lists; copy it again or use an earlier checkpoint")
    return {name: list(shape) for name, shape in shapes.items()}


Mismatch = Tuple[str, List[int], List[int]]  # (variable name, checkpoint shape, model shape)


def match_variables(prefix: str, variables: Sequence[tf.Variable],
                    rename: Optional[Callable[[str], str]] = None, prefer_ema: bool = False
                    ) -> Tuple[List[Tuple[str, tf.Variable]], List[str], List[Mismatch]]:
    """Pair `variables` with the values of checkpoint `prefix` that they take.

    A variable named `n` (without ':0') reads the checkpoint name `c = rename(n)` (default:
    `n`); of these, the first the checkpoint holds:
      1. with `prefer_ema`, its EMA shadow `c/ExponentialMovingAverage` (the weights evaluation
         and export use);
      2. `c` itself;
      3. when `c` is an EMA shadow's name (a training graph's shadow variable), the raw value
         it shadows: a shadow starts from its weight when the checkpoint kept no average.

    Returns (matched, missing, mismatched): (checkpoint name, variable) pairs in the order of
    `variables` (a shadow and its weight may read one name), the names of variables the
    checkpoint lacks, and (name, checkpoint shape, model shape) of those it holds with another
    shape (not matched).
    """
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    matched: List[Tuple[str, tf.Variable]] = []
    missing: List[str] = []
    mismatched: List[Mismatch] = []
    for v in variables:
        name = var_name(v)
        source = rename(name) if rename else name
        candidates = ([source + EMA_SUFFIX] if prefer_ema else []) + [source] + (
            [source[:-len(EMA_SUFFIX)]] if source.endswith(EMA_SUFFIX) else [])
        found = next((c for c in candidates if c in shapes), None)
        if found is None:
            missing.append(name)
        elif list(shapes[found]) != v.shape.as_list():
            mismatched.append((name, list(shapes[found]), v.shape.as_list()))
        else:
            matched.append((found, v))
    return matched, missing, mismatched


def restore_variables(sess: tf1.Session, ckpt: str, use_ema: bool = True,
                      variables: Optional[List[tf.Variable]] = None) -> str:
    """Restore `variables` (default: all global ones) from `ckpt`, preferring EMA shadows.

    `ckpt` is a prefix or a directory (see `resolve_checkpoint`). With `use_ema`, a variable `v`
    is read from `v/ExponentialMovingAverage` when the checkpoint has it, else from `v` (see
    `match_variables`). Every variable must be found with the same shape; otherwise one
    CheckpointError names the checkpoint and the first mismatches, and nothing is restored.
    Returns the prefix.
    """
    prefix = resolve_checkpoint(ckpt)
    variables = variables if variables is not None else tf1.global_variables()
    matched, missing, mismatched = match_variables(prefix, variables, prefer_ema=use_ema)
    if missing or mismatched:
        detail = "; ".join([f"{name}: checkpoint {held} vs model {model}"
                            for name, held, model in mismatched[:3]]
                           + [f"missing {m}" for m in missing[:3]])
        raise errors.CheckpointError(
            f"checkpoint '{prefix}' does not fit this model ({len(missing)} variables missing, "
            f"{len(mismatched)} with another shape: {detail}); build the model with the model "
            f"name and hparams it was trained with (e.g. num_classes, fpn_name)")
    for var_map in assignment_maps(matched):
        tf1.train.Saver(var_map).restore(sess, prefix)
    return prefix


def assignment_maps(matched: Sequence[Tuple[str, tf.Variable]]) -> List[Dict[str, tf.Variable]]:
    """`match_variables`' pairs as {checkpoint name: variable} maps, as few as hold each name
    once per map: a Saver or `init_from_checkpoint` takes one variable per name, and an EMA
    shadow may read the name of its weight."""
    maps: List[Dict[str, tf.Variable]] = []
    for name, v in matched:
        target = next((m for m in maps if name not in m), None)
        if target is None:
            target = {}
            maps.append(target)
        target[name] = v
    return maps


def has_ema_shadows(prefix: str, variables: List[tf.Variable]) -> bool:
    """Whether checkpoint `prefix` holds an EMA shadow for any of `variables`."""
    reader = tf.train.load_checkpoint(prefix)
    return any(reader.has_tensor(var_name(v) + EMA_SUFFIX) for v in variables)


class _CheckpointWriter:
    """A graph that saves fed arrays under fixed names: built once per set of names, dtypes and
    shapes, so rewriting a checkpoint of the same model again costs no graph building."""

    def __init__(self, signature: Tuple[Tuple[str, str, Tuple[int, ...]], ...]):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._prefix = tf1.placeholder(tf.string, [])
            self._inputs = {name: tf1.placeholder(tf.as_dtype(dtype), shape)
                            for name, dtype, shape in signature}
            names = [name for name, _, _ in signature]
            self._save = tf.raw_ops.SaveV2(prefix=self._prefix, tensor_names=names,
                                           shape_and_slices=[""] * len(names),
                                           tensors=[self._inputs[n] for n in names])
        self._session = sessions.new_session(self.graph)

    def write(self, tensors: Mapping[str, np.ndarray], prefix: str) -> None:
        feed = {self._inputs[name]: value for name, value in tensors.items()}
        feed[self._prefix] = prefix
        self._session.run(self._save, feed)

    def close(self) -> None:
        self._session.close()


_WRITERS: Dict[tuple, _CheckpointWriter] = {}


def write_checkpoint(tensors: Mapping[str, np.ndarray], prefix: str,
                     update_index: bool = False) -> List[str]:
    """Write `tensors` ({variable name: array}) as a V2 checkpoint at `prefix`; returns the
    files written. With `update_index`, the directory's 'checkpoint' index file then names
    `prefix` as its latest checkpoint (not while a checkpoint is written under a temporary
    prefix, to be moved into place)."""
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    signature = tuple((name, arrays[name].dtype.name, arrays[name].shape)
                      for name in sorted(arrays))
    if signature not in _WRITERS:
        for writer in _WRITERS.values():  # one model at a time: keep only the newest writer
            writer.close()
        _WRITERS.clear()
        _WRITERS[signature] = _CheckpointWriter(signature)
    _WRITERS[signature].write(arrays, prefix)
    written = tf.io.gfile.glob(prefix + ".*")
    if update_index:
        tf1.train.update_checkpoint_state(os.path.dirname(prefix) or ".", prefix)
    return written


# -------------------------------------------------------------------------------------------------
# What a detector checkpoint holds, compared with the model about to be built
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DetectorShape:
    """What a detector's variable shapes fix: the config keys they follow, plus anchors per
    location (num_scales x len(aspect_ratios)) and classes (the class head's outputs / anchors).
    None where a checkpoint lacks the variables that would tell."""

    backbone_name: Optional[str]
    fpn_num_filters: Optional[int]
    fpn_cell_repeats: int
    box_class_repeats: int
    fpn_name: str  # 'vfpn' when it has VFPN's vertical stage, else 'bifpn'
    anchors: Optional[int]
    num_classes: Optional[int]

    KEYS = ("backbone_name", "fpn_num_filters", "fpn_cell_repeats", "box_class_repeats",
            "fpn_name")

    @classmethod
    def of_checkpoint(cls, shapes: Dict[str, List[int]]) -> DetectorShape:
        def count(pattern: str) -> int:
            return len({m.group(1) for n in shapes for m in [re.match(pattern, n)] if m})

        backbones = sorted({n.split("/")[0] for n in shapes if n.startswith("efficientnet-b")})
        width = shapes.get("class_net/class-0/bias", [None])[0]
        box = shapes.get("box_net/box-predict/bias", [None])[0]
        anchors = box // 4 if box else None
        cls_out = shapes.get("class_net/class-predict/bias", [None])[0]
        classes = cls_out // anchors if cls_out and anchors else None
        vertical = any(n.startswith("vfpn_vertical/") for n in shapes)
        return cls(backbones[0] if backbones else None, width,
                   count(r"fpn_cells/cell_(\d+)/"), count(r"class_net/class-(\d+)/"),
                   "vfpn" if vertical else "bifpn", anchors, classes)

    @classmethod
    def of_config(cls, config: Config) -> DetectorShape:
        return cls(config.backbone_name, config.fpn_num_filters, config.fpn_cell_repeats,
                   config.box_class_repeats, "vfpn" if config.fpn_name == "vfpn" else "bifpn",
                   config.num_scales * len(config.aspect_ratios), config.num_classes)

    @property
    def is_detector(self) -> bool:
        return self.fpn_num_filters is not None and self.num_classes is not None

    def preset(self) -> Optional[str]:
        """The efficientdet-dN this shape is, or the first with its backbone, or None."""
        table = hparams_config.efficientdet_model_param_dict
        same = [name for name, p in table.items() if p["backbone_name"] == self.backbone_name]
        exact = [name for name in same if all(
            table[name][k] == getattr(self, k) for k in self.KEYS[1:4])]
        return (exact or same or [None])[0]

    def describe(self) -> str:
        preset = self.preset()
        exact = preset and all(hparams_config.efficientdet_model_param_dict[preset][k]
                               == getattr(self, k) for k in self.KEYS[1:4])
        name = preset if exact else f"a custom {self.backbone_name} detector"
        return (f"{name} ({self.fpn_num_filters} filters, {self.fpn_cell_repeats} cells, "
                f"{self.box_class_repeats} head layers, {self.fpn_name}, {self.anchors} anchors "
                f"per location) with {self.num_classes} classes")


def check_detector_fits(prefix: str, config: Config, flag: str,
                        new_head: bool = False) -> None:
    """Raise one CheckpointError when detector checkpoint `prefix` (given by `flag`) cannot
    fill the model `config` builds: another backbone, feature network or head, or, unless
    `new_head` (finetuning with skip_mismatch: the class and box outputs start afresh), other
    anchors or classes. The line says which model the checkpoint looks like and which
    --model_name / --hparams would fit it. Cheap: reads variable shapes, builds nothing."""
    held = DetectorShape.of_checkpoint(read_shapes(prefix))
    if not held.is_detector:
        raise errors.CheckpointError(
            f"{flag}: checkpoint '{prefix}' holds no detector (no class_net/box_net variables"
            + (f"; it looks like an {held.backbone_name} classifier" if held.backbone_name
               else "") + "); give an EfficientDet checkpoint")
    want = DetectorShape.of_config(config)
    keys = DetectorShape.KEYS + (() if new_head else ("anchors", "num_classes"))
    differ = [k for k in keys if getattr(held, k) != getattr(want, k)]
    if not differ:
        return
    has = ", ".join(f"{getattr(want, k)} {_LABELS[k]}" for k in differ)
    raise errors.CheckpointError(
        f"{flag}: checkpoint '{prefix}' holds {held.describe()}, but this model "
        f"({config.name}) has {has}; {_fitting_flags(held, config, differ, new_head)}, or point "
        f"at the model directory whose config.yaml describes the checkpoint")


_LABELS = {"backbone_name": "backbone", "fpn_num_filters": "filters",
           "fpn_cell_repeats": "cells", "box_class_repeats": "head layers",
           "fpn_name": "feature network", "anchors": "anchors per location",
           "num_classes": "classes"}


def _fitting_flags(held: DetectorShape, config: Config, differ: List[str],
                   new_head: bool) -> str:
    """'pass --model_name=X --hparams=k=v,...': the flags that build the model `held` is (with
    this run's num_classes when the head starts afresh)."""
    preset = held.preset() or config.name
    base = DetectorShape.of_config(config if preset == config.name
                                   else hparams_config.get_efficientdet_config(preset))
    keys = [k for k in DetectorShape.KEYS[1:] if getattr(held, k) != getattr(base, k)]
    hparams = [f"{k}={getattr(held, k)}" for k in keys]
    if "num_classes" in differ or preset != config.name:  # a preset has 90 classes
        hparams.append(f"num_classes={config.num_classes if new_head else held.num_classes}")
    flags = ([f"--model_name={preset}"] if preset != config.name else []) + (
        [f"--hparams={','.join(hparams)}"] if hparams else [])
    fix = "pass " + " ".join(flags) if flags else ""
    if "anchors" in differ:
        fix += (" and " if fix else "") + (f"set num_scales and aspect_ratios for "
                                           f"{held.anchors} anchors per location")
    return fix

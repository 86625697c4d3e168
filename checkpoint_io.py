"""Checkpoints: find one from a prefix or a directory, and restore variables from it.

A detector checkpoint written by training holds every model variable `v` and, when the run used
an exponential moving average (`moving_average_decay` > 0), its shadow
`v/ExponentialMovingAverage`. Evaluation, export and inference restore the shadows: they are the
weights the paper's numbers are measured with.

Paths go through `tf.io.gfile`, so gs:// checkpoints work. Errors are `errors.CheckpointError`
naming the checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

import errors

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


def resolve_checkpoint(path: str) -> str:
    """The checkpoint prefix named by `path`: a prefix, or a directory holding a checkpoint
    (its latest, from the directory's 'checkpoint' index file)."""
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


def restore_variables(sess: tf1.Session, ckpt: str, use_ema: bool = True,
                      variables: Optional[List[tf.Variable]] = None) -> str:
    """Restore `variables` (default: all global ones) from `ckpt`, preferring EMA shadows.

    `ckpt` is a prefix or a directory (see `resolve_checkpoint`). With `use_ema`, a variable `v`
    is read from `v/ExponentialMovingAverage` when the checkpoint has it, else from `v`. Every
    variable must be found with the same shape; otherwise one CheckpointError names the
    checkpoint and the first mismatches, and nothing is restored. Returns the prefix.
    """
    prefix = resolve_checkpoint(ckpt)
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    variables = variables if variables is not None else tf1.global_variables()
    var_map: Dict[str, tf.Variable] = {}
    missing, mismatched = [], []
    for v in variables:
        name = var_name(v)
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in shapes else name
        if source not in shapes:
            missing.append(name)
        elif list(shapes[source]) != v.shape.as_list():
            mismatched.append(f"{name}: checkpoint {shapes[source]} vs model {v.shape.as_list()}")
        else:
            var_map[source] = v
    if missing or mismatched:
        detail = "; ".join(mismatched[:3] + [f"missing {m}" for m in missing[:3]])
        raise errors.CheckpointError(
            f"checkpoint '{prefix}' does not fit this model ({len(missing)} variables missing, "
            f"{len(mismatched)} with another shape: {detail}); build the model with the model "
            f"name and hparams it was trained with (e.g. num_classes, fpn_name)")
    tf1.train.Saver(var_map).restore(sess, prefix)
    return prefix


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
        self._session = tf1.Session(graph=self.graph)

    def write(self, tensors: Mapping[str, np.ndarray], prefix: str) -> None:
        feed = {self._inputs[name]: value for name, value in tensors.items()}
        feed[self._prefix] = prefix
        self._session.run(self._save, feed)

    def close(self) -> None:
        self._session.close()


_WRITERS: Dict[tuple, _CheckpointWriter] = {}


def write_checkpoint(tensors: Mapping[str, np.ndarray], prefix: str) -> List[str]:
    """Write `tensors` ({variable name: array}) as a V2 checkpoint at `prefix` (no index
    update); returns the files written."""
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    signature = tuple((name, arrays[name].dtype.name, arrays[name].shape)
                      for name in sorted(arrays))
    if signature not in _WRITERS:
        for writer in _WRITERS.values():  # one model at a time: keep only the newest writer
            writer.close()
        _WRITERS.clear()
        _WRITERS[signature] = _CheckpointWriter(signature)
    _WRITERS[signature].write(arrays, prefix)
    return tf.io.gfile.glob(prefix + ".*")

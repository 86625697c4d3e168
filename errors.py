"""The project's user-error classes: one base that every CLI catches, nothing else.

A user mistake (a bad flag, file, record, key or checkpoint) raises a subclass of `UserError`
whose message is one line naming the flag, file, record or key and what to do. The CLIs print
that line and exit with status 1; any other exception is a bug in our code and keeps its
traceback. This module imports nothing heavy (no TensorFlow), so CLIs can import it before
TensorFlow starts.

A user error found inside a TensorFlow graph (a record check in the input pipeline, the NaN
guard, the COCO metric's checks) reaches Python as a TensorFlow error with a stack around it.
Such checks write their line as `graph_message(kind, text)`; `from_tf_error` finds it again
and gives back the user error. `first_line` picks the informative line of any library's
multi-line error text.
"""

from __future__ import annotations

import re
from typing import Optional


class UserError(ValueError):
    """A mistake in the user's input: flags, hparams, files, records or checkpoints.

    It derives from ValueError so that library callers who catch ValueError keep working; the
    CLIs catch `UserError` only, never ValueError.
    """


class UsageError(UserError):
    """A bad flag or flag combination, found before any work starts."""


class ConfigError(UserError):
    """A bad hyper-parameter or a config that disagrees with the model directory's."""


class DataError(UserError):
    """Bad input data: a record file, an annotation, an image or a video."""


class CheckpointError(UserError):
    """A checkpoint that is missing or does not fit the model."""


class ModelFileError(UserError):
    """An exported model (SavedModel, .pb, .tflite, .onnx, .xml) that cannot be loaded."""


class OutputError(UserError):
    """An output location that cannot be written (the message names the flag)."""


class TrainingError(UserError):
    """Training stopped on a user-fixable cause, e.g. a non-finite loss from bad boxes."""


# -------------------------------------------------------------------------------------------------
# From a TensorFlow error back to the user error
# -------------------------------------------------------------------------------------------------
_KINDS = {cls.__name__: cls for cls in (UsageError, ConfigError, DataError, CheckpointError,
                                         ModelFileError, OutputError, TrainingError)}
# Not '[...]': tf.debugging.Assert brackets its data, and a session reads '[[' as a node name.
_MARKER = re.compile(r"<vfpn:(\w+)> ")
# Lines of TensorFlow's and OpenVINO's error texts that say where, not what.
_NOISE = ("Graph execution error", "Detected at node", "Defined at", "File \"", "[[{{node",
          "Stack trace", "Traceback (most recent call last)", "Exception from", "Check '")


def graph_message(kind: str, text: str = "") -> str:
    """`text` marked as a user error of class `kind` (a class name of this module), e.g.
    '<vfpn:DataError> records.tfrecord record 3 ...', for a check that fails inside a graph.
    Without `text`, the marker alone: the start of a message the graph completes itself."""
    if kind not in _KINDS:
        raise ValueError(f"unknown user-error kind {kind!r}; one of {', '.join(_KINDS)}")
    return f"<vfpn:{kind}> {text}"


def from_tf_error(error: BaseException) -> Optional[UserError]:
    """The user error a `graph_message` inside `error` (a TensorFlow error, or any exception
    whose text carries one) describes, else None. Its text runs to the end of the line;
    TensorFlow's node suffix and the bracket tf.debugging.Assert puts around its data go."""
    text = getattr(error, "message", None) or str(error)
    found = _MARKER.search(text)
    if not found or found.group(1) not in _KINDS:
        return None
    line = text[found.end():].split("\n", 1)[0]
    line = line.split("\t [[", 1)[0].split(" [[", 1)[0].strip()
    if text[found.start() - 1:found.start()] == "[" and line.endswith("]"):
        line = line[:-1]  # Assert prints its data as a list: [<vfpn:...> ...]
    return _KINDS[found.group(1)](line)


def first_line(text: str) -> str:
    """The line of a (TensorFlow, OpenVINO, Python) error text that says what went wrong: the
    first that is neither blank nor a location, without TensorFlow's '(0) ' and node
    decorations, whitespace collapsed; else the first line that is not blank ('' if none)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(_NOISE) or "root error(s) found" in line:
            continue
        line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
        line = line.split("\t [[", 1)[0].split(" [[", 1)[0].strip()
        if line.startswith("(0) "):
            line = line[4:]
        return " ".join(line.split())
    return " ".join(lines[0].split()) if lines else ""

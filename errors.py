"""The project's user-error classes: one base that every CLI catches, nothing else.

A user mistake (a bad flag, file, record, key or checkpoint) raises a subclass of `UserError`
whose message is one line naming the flag, file, record or key and what to do. The CLIs print
that line and exit with status 1; any other exception is a bug in our code and keeps its
traceback. This module imports nothing heavy (no TensorFlow), so CLIs can import it before
TensorFlow starts.
"""

from __future__ import annotations


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

"""What every command-line entry point shares.

* `define_flags`: absl flags made from an options dataclass, so a flag and the option it fills
  have one definition (name, default, help, choices, allowed range). `options_from_flags` reads
  them back; `check_bounds` checks every number against its field's range before any work.
  `run_tool` is a small tool's whole `__main__` on top of them.
* `import_tensorflow`: TensorFlow imported with its start-up noise on CPU machines (the cuDNN,
  cuFFT and cuBLAS factory lines) filtered out; anything else it prints is kept.
* `setup_logging`: compact INFO lines (`I 10:41:07 step 40/384 ...`) that the default log level
  shows; TensorFlow's own Python logger is kept at ERROR.
* `run_and_report`: one error policy. A `errors.UserError` becomes one line `<prog>: error:
  ...` and exit status 1; every other exception is a bug in our code and keeps its traceback.

This module imports no TensorFlow at import time, so `--help` and flag errors stay fast.
"""

from __future__ import annotations

import dataclasses
import logging as py_logging
import os
import re
import sys
import tempfile
import typing
from typing import Any, Callable, Dict, List, Optional, Type, TypeVar

from absl import flags, logging

import errors
from bounds import Range, out_of_range

T = TypeVar("T")

# Lines TensorFlow 2.15 prints on every import on a machine without GPUs: they say nothing
# about the user's run and bury its output.
_STARTUP_NOISE = re.compile(
    r"Unable to register cu(DNN|FFT|BLAS) factory|Could not find cuda drivers|"
    r"cpu_feature_guard|To enable the following instructions|TF-TRT Warning|"
    r"oneDNN custom operations are on|rebuild TensorFlow with the appropriate compiler flags")


def field(default: Any, help: str, choices: Optional[tuple] = None,  # noqa: A002
          bounds: Optional[str] = None) -> Any:
    """A dataclass field that is also a command-line flag: its default, help, choices and, for
    a number (or a list of numbers), its allowed range as an interval such as '[0, 1]' (see
    bounds.py; None, an unset optional flag, is always allowed)."""
    meta: Dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if bounds is not None:
        meta["bounds"] = Range.parse(bounds)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(hint: Any) -> Any:
    """int for Optional[int], List[int] for Optional[List[int]], ..."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def define_flags(options_cls: Type[Any], flag_values: flags.FlagValues = flags.FLAGS,
                 skip: tuple = ()) -> None:
    """Define one absl flag per field of the dataclass `options_cls` (made with `field`)."""
    hints = typing.get_type_hints(options_cls)
    for f in dataclasses.fields(options_cls):
        if f.name in skip:
            continue
        help_text = f.metadata.get("help", f.name)
        if "bounds" in f.metadata:
            help_text += f" Allowed: {f.metadata['bounds']}."
        default = (f.default_factory() if f.default is dataclasses.MISSING  # type: ignore[misc]
                   else f.default)
        kind = _base_type(hints[f.name])
        choices = f.metadata.get("choices")
        kwargs = dict(flag_values=flag_values)
        if choices:
            flags.DEFINE_enum(f.name, default, list(choices), help_text, **kwargs)
        elif kind is bool:
            flags.DEFINE_bool(f.name, default, help_text, **kwargs)
        elif kind is int:
            flags.DEFINE_integer(f.name, default, help_text, **kwargs)
        elif kind is float:
            flags.DEFINE_float(f.name, default, help_text, **kwargs)
        elif kind is str:
            flags.DEFINE_string(f.name, default, help_text, **kwargs)
        elif typing.get_origin(kind) in (list, typing.List) and typing.get_args(kind) == (int,):
            flags.DEFINE_multi_integer(f.name, default, help_text, **kwargs)
        else:
            raise TypeError(f"{options_cls.__name__}.{f.name}: no flag type for {kind!r}")


def options_from_flags(options_cls: Type[T], flag_values: flags.FlagValues = flags.FLAGS,
                       **fixed: Any) -> T:
    """An `options_cls` filled from the parsed flags (plus `fixed` values)."""
    values = {f.name: getattr(flag_values, f.name) for f in dataclasses.fields(options_cls)
              if f.name not in fixed}
    return options_cls(**values, **fixed)


def run_tool(prog: str, fn: Callable[[Any], Any], options_cls: Type[Any],
             tensorflow: bool = False) -> None:
    """A tool's `if __name__ == "__main__":` in one call: its flags made from `options_cls`
    (`define_flags`), then absl's `app.run` of a main that is `run_and_report(prog, fn,
    options_from_flags(options_cls))`; an int that `fn` returns is the exit status. With
    `tensorflow`, TensorFlow is imported first, quietly (`import_tensorflow`). A word that is
    not a flag (`tool.py foo`) is refused in one line rather than ignored."""
    from absl import app

    define_flags(options_cls)

    def main(argv: List[str]) -> Any:
        if len(argv) > 1:
            sys.exit(f"{prog}: error: unexpected argument '{argv[1]}'; every option is a "
                     f"--flag=value (see --help).")
        if tensorflow:
            import_tensorflow()
        return run_and_report(prog, fn, options_from_flags(options_cls))

    app.run(main)


def check_bounds(options: Any) -> None:
    """Raise errors.UsageError, naming the flag, its value and the allowed range, for the first
    field of the dataclass `options` whose number lies outside its `field(bounds=...)`."""
    for f in dataclasses.fields(options):
        allowed = f.metadata.get("bounds")
        value = getattr(options, f.name)
        if allowed is None or value is None:
            continue
        for number in (value if isinstance(value, (list, tuple)) else [value]):
            line = out_of_range(f"--{f.name}", number, allowed)
            if line:
                raise errors.UsageError(line + ".")


def import_tensorflow():
    """Import TensorFlow (and the Estimator) with the start-up noise filtered out; returns tf.

    The noise is written by C++ straight to file descriptor 2, so Python's sys.stderr cannot
    filter it: fd 2 points at a temporary file during the import, then every line that is not
    known noise is written back to the real stderr.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            import tensorflow_estimator  # noqa: F401  (prints its own warnings on import)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _STARTUP_NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
    tf.get_logger().setLevel("ERROR")
    return tf


class _CompactFormatter(py_logging.Formatter):
    def format(self, record: py_logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%H:%M:%S")
        return f"{record.levelname[:1]} {stamp} {record.getMessage()}"


def setup_logging(verbose: bool = False) -> None:
    """INFO lines without absl's long prefix; DEBUG too with `verbose`."""
    logging.set_verbosity(logging.DEBUG if verbose else logging.INFO)
    handler = logging.get_absl_handler()
    handler.setFormatter(_CompactFormatter())


def run_and_report(prog: str, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)`; a `UserError` becomes one line on stderr and exit status 1."""
    try:
        return fn(*args)
    except errors.UserError as e:
        message = errors.first_line(str(e)) or type(e).__name__
        sys.exit(f"{prog}: error: {message}")

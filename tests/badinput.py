"""The bad-input harness: run a command line in-process as a user would, and check what they see.

A case is (command, arguments, expected exit status, a pattern the error line must match). The
harness runs the command's own flag parsing and error policy in this process, so a case costs
no interpreter start; it returns an `Outcome` (status, stdout, stderr). Any exception that is
not the CLI's own exit escapes: that is a traceback, i.e. a bug, and fails the test as one.

`snapshot(root)` hashes every file under `root`; `check(outcome, ...)` asserts the status, that
the error is one line naming the cause, and that no file that existed before changed or
vanished. The bad-input test files (`test_bad_inputs_*.py`) are tables of cases over these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags


@dataclasses.dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> List[str]:
        """The lines of stderr that report an error (the CLIs' `<prog>: error: ...` line, the
        flag parser's `FATAL Flags parsing error: ...`)."""
        return [ln for ln in self.stderr.splitlines()
                if re.search(r"(^|: )error: |^FATAL Flags parsing error", ln)]


def _exit_status(code) -> tuple:
    """(status, message) of a SystemExit code as the interpreter would report it."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, str(code)


def run_in_process(prog: str, options_cls, function: Callable, argv: Sequence[str],
                   cwd: Optional[str] = None, status_of: Callable = None) -> Outcome:
    """Parse `argv` into `options_cls` as `prog`'s command line does, then call
    `cli.run_and_report(prog, function, opts)`; returns what the user would see.

    `status_of(result)` turns the function's return value into the exit status (default: 0,
    or the value itself when it is an int).
    """
    import cli

    values = flags.FlagValues()
    cli.define_flags(options_cls, values)
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    status = 0
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                values([prog, *argv])
            except flags.Error as e:  # what absl's app.run prints for a bad flag value
                print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
                return Outcome(1, out.getvalue(), err.getvalue())
            opts = cli.options_from_flags(options_cls, values)
            try:
                result = cli.run_and_report(prog, function, opts)
                if status_of is not None:
                    status = status_of(result)
                elif isinstance(result, int) and not isinstance(result, bool):
                    status = result
            except SystemExit as e:
                status, message = _exit_status(e.code)
                if message:
                    print(message, file=sys.stderr)
    finally:
        os.chdir(old)
    return Outcome(status, out.getvalue(), err.getvalue())


def run_main(argv: Sequence[str], cwd: Optional[str] = None) -> Outcome:
    """main.py in-process."""
    import run_options
    import trainer

    return run_in_process("main.py", run_options.RunOptions, trainer.run, argv, cwd,
                          status_of=lambda _: 0)


def run_inspect(argv: Sequence[str], cwd: Optional[str] = None) -> Outcome:
    """model_inspect.py in-process."""
    import model_inspect

    return run_in_process("model_inspect.py", model_inspect.InspectOptions, model_inspect.run,
                          argv, cwd)


def run_coco_converter(argv: Sequence[str], cwd: Optional[str] = None) -> Outcome:
    """dataset/create_coco_tfrecord.py in-process."""
    from dataset import create_coco_tfrecord as tool

    return run_in_process(tool.PROG, tool.ConvertOptions, tool.run, argv, cwd)


def run_pascal_converter(argv: Sequence[str], cwd: Optional[str] = None) -> Outcome:
    """dataset/create_pascal_tfrecord.py in-process."""
    from dataset import create_pascal_tfrecord as tool

    return run_in_process(tool.PROG, tool.ConvertOptions, tool.run, argv, cwd)


def run_validator(argv: Sequence[str], cwd: Optional[str] = None) -> Outcome:
    """dataset/validate_tfrecord.py in-process (status 2: the records have problems)."""
    from dataset import validate_tfrecord as tool

    return run_in_process(tool.PROG, tool.ValidateOptions, tool.run, argv, cwd)


def snapshot(root: str) -> Dict[str, str]:
    """{path relative to root: sha256} of every file under `root`."""
    digests = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def check(outcome: Outcome, status: int, pattern: Optional[str], before: Dict[str, str],
          root: str, may_add: bool = True) -> None:
    """Assert what a user must see after a bad input.

    * the exit status is `status`;
    * with status != 0, exactly one error line, matching `pattern` (a regex, searched);
    * no traceback in stderr;
    * every file of `before` (a `snapshot(root)`) still exists with the same content, and,
      unless `may_add`, no file was added.
    """
    where = f"\n--- stdout ---\n{outcome.stdout[-2000:]}\n--- stderr ---\n{outcome.stderr[-3000:]}"
    assert outcome.status == status, f"exit status {outcome.status}, expected {status}{where}"
    assert "Traceback (most recent call last)" not in outcome.stderr, where
    if status != 0:
        lines = outcome.error_lines
        assert len(lines) == 1, f"expected one error line, got {lines}{where}"
        if pattern:
            assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"
    after = snapshot(root)
    changed = sorted(p for p, digest in before.items() if after.get(p) != digest)
    assert not changed, f"pre-existing files changed or removed: {changed}{where}"
    if not may_add:
        added = sorted(set(after) - set(before))
        assert not added, f"files added by a refused run: {added}{where}"

"""Every file the project writes: where it may go, what it is called, and how it is written.

The policy (DESIGN section 7), owned here and nowhere else:

* A run never replaces an existing file unless the user asked (`overwrite`, the `--overwrite`
  flag), and never writes where one of its inputs is, not even with `overwrite`: an output
  path equal to an input, or resolving to it (`./x`, a symlink, a hard link), is refused.
* Outputs made from sources are named after them (`named_after_sources`: `<stem>.jpg`, and
  `x.jpg`, `x-1.jpg` when two sources share a stem), never by position.
* Files are written atomically (`write_file`, `atomic_path`): a temporary name in the same
  directory, then a rename, so a failed write leaves no partial file.
* Conflicts are found before any work starts (`check_plan` over the `Planned` outputs of a run)
  and reported as one `errors.OutputError` line naming the flag, the path (or the first
  conflicting file and how many more) and what to do.

`output_problem` and `nonempty_dir_problem` say, creating nothing, why a location cannot be
written. Which model-directory files no export may touch (checkpoints, config.yaml) is
run_dir.py's contract, not this module's.

Standard library only: TensorFlow's gfile is imported for remote paths (gs://...) alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import errors


def is_remote(path: str) -> bool:
    """True for URLs such as gs://bucket/x, which only TensorFlow's gfile can write."""
    return "://" in path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    """Whether anything is at `path` (a dangling symlink counts: writing there replaces it)."""
    return _gfile().exists(path) if is_remote(path) else os.path.lexists(path)


# -------------------------------------------------------------------------------------------------
# Locations: why a path cannot be written
# -------------------------------------------------------------------------------------------------
def output_problem(path: str, directory: bool) -> Optional[str]:
    """Why `path` cannot be written as a directory (or a file), or None; creates nothing.

    Remote paths are not checked here: their writes fail with their own error.
    """
    if is_remote(path):
        return None
    full = os.path.abspath(path)
    if os.path.exists(full):
        if directory and not os.path.isdir(full):
            return "is a file, not a directory"
        if not directory and os.path.isdir(full):
            return "is a directory, not a file"
        target = full if directory else os.path.dirname(full)
        return None if os.access(target, os.W_OK | os.X_OK) else "is not writable"
    ancestor = os.path.dirname(full)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"cannot be created: '{ancestor}' is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: '{ancestor}' is not writable"
    return None


def nonempty_dir_problem(path: str) -> Optional[str]:
    """Why a new export directory `path` cannot be used (it exists and is not empty), or None."""
    if is_remote(path):
        gfile = _gfile()
        taken = gfile.exists(path) and (not gfile.isdir(path) or gfile.listdir(path))
    else:
        taken = os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path))
    if taken:
        return ("already exists and is not empty; remove it or choose another directory "
                "(nothing was overwritten)")
    return None


# -------------------------------------------------------------------------------------------------
# Names
# -------------------------------------------------------------------------------------------------
def named_after_sources(sources: Sequence[str], directory: str, suffix: str = ".jpg"
                       ) -> List[str]:
    """`<directory>/<stem><suffix>` for each of `sources`, in order.

    The first source with a stem keeps it; later ones with the same stem get `-1`, `-2`, ...,
    skipping names that another source's stem already gives (`a/x.png`, `b/x.jpg` -> `x.jpg`,
    `x-1.jpg`). Names are unique ignoring case, so that they stay distinct on case-insensitive
    file systems. Why stems: a picture must say which input it shows, and a second batch of
    inputs must not land on the first batch's pictures by position.
    """
    stems = [os.path.splitext(os.path.basename(s))[0] for s in sources]
    first: Dict[str, int] = {}
    for i, stem in enumerate(stems):
        first.setdefault(stem.lower(), i)
    taken = set(first)
    names = []
    for i, stem in enumerate(stems):
        name = stem
        if first[stem.lower()] != i:
            n = 1
            while f"{stem}-{n}".lower() in taken:
                n += 1
            name = f"{stem}-{n}"
            taken.add(name.lower())
        names.append(os.path.join(directory, name + suffix))
    return names


# -------------------------------------------------------------------------------------------------
# Conflicts, found before any work
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Planned:
    """The files that one flag makes a run write.

    `flag` is the flag's name without dashes (or a library argument of the same name), `value`
    its value: a file, or, with `directory`, the directory that `files` go into. `kind` names
    what to choose instead in a message (default: 'directory' or 'file name').
    """

    flag: str
    value: str
    files: Tuple[str, ...]
    directory: bool = False
    kind: Optional[str] = None


def _identity(path: str) -> Optional[Tuple]:
    """What makes two paths the same file: (device, inode) of an existing local file (so `./x`,
    symlinks and hard links agree), the normalised URL of a remote one; None if absent."""
    if is_remote(path):
        return ("remote", path.rstrip("/")) if exists(path) else None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _subject(p: Planned, files: Sequence[str]) -> str:
    """`--flag 'value'`, plus the first of `files` and how many more when that is not just
    the value itself."""
    if len(files) == 1 and files[0] == p.value:
        return f"--{p.flag} '{p.value}'"
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    return f"--{p.flag} '{p.value}': '{files[0]}'{more}"


def _kind(p: Planned) -> str:
    return p.kind or ("directory" if p.directory else "file name")


def _location_problem(p: Planned) -> Optional[Tuple[str, str]]:
    """(path, why it cannot be written) for the first unwritable location of `p`, or None."""
    problem = output_problem(p.value, p.directory)
    if problem:
        return p.value, problem
    for path in p.files:
        problem = output_problem(path, directory=False)
        if problem:
            return path, problem
    return None


def check_locations(plan: Sequence[Planned]) -> None:
    """Refuse (one OutputError line) a planned location that cannot be written at all."""
    for p in plan:
        found = _location_problem(p)
        if found:
            path, problem = found
            head = f"--{p.flag} '{p.value}'" + ("" if path == p.value else f": '{path}'")
            raise errors.OutputError(f"{head} {problem}; choose another {_kind(p)}")


def _check_duplicates(plan: Sequence[Planned]) -> None:
    """Two flags naming one file would lose one of the outputs."""
    seen: Dict[str, str] = {}
    for p in plan:
        keys = {}  # a file named twice by one flag is one output
        for path in p.files:
            keys.setdefault(path if is_remote(path) else os.path.realpath(path), path)
        for key, path in keys.items():
            if key in seen:
                raise errors.OutputError(
                    f"--{p.flag} '{p.value}' would write '{path}', which {seen[key]} writes too; "
                    f"give each output its own name")
            seen[key] = f"--{p.flag}"


def _check_inputs(plan: Sequence[Planned], inputs: Iterable[Tuple[str, str]]) -> None:
    by_identity: Dict[Tuple, str] = {}
    for flag, path in inputs:
        ident = _identity(path)
        if ident is not None:
            by_identity.setdefault(ident, flag)
    for p in plan:
        clashes = [(f, by_identity[i]) for f in p.files
                   for i in [_identity(f)] if i is not None and i in by_identity]
        if clashes:
            are = "is an input" if len(clashes) == 1 else "are inputs"
            raise errors.OutputError(
                f"{_subject(p, [f for f, _ in clashes])} {are} of this run "
                f"(--{clashes[0][1]}); choose another {_kind(p)} (an output never replaces an "
                f"input, not even with --overwrite; nothing was written)")


def _check_existing(plan: Sequence[Planned]) -> None:
    for p in plan:
        found = [f for f in p.files if exists(f)]
        if found:
            verb, it = ("exists", "it") if len(found) == 1 else ("exist", "them")
            raise errors.OutputError(
                f"{_subject(p, found)} already {verb}; pass --overwrite to replace {it}, or "
                f"choose another {_kind(p)} (nothing was written)")


def check_plan(plan: Sequence[Planned], inputs: Iterable[Tuple[str, str]] = (),
               overwrite: bool = False) -> None:
    """Refuse, in one `errors.OutputError` line, a run whose planned outputs cannot be written.

    In order: a location that cannot be written (a file where a directory is needed, a
    directory where a file is, an unwritable or file-blocked parent); two outputs on one file;
    an output on one of `inputs` ((flag, path) pairs; refused even with `overwrite`); an
    output that exists (refused unless `overwrite`). Creates nothing.
    """
    check_locations(plan)
    _check_duplicates(plan)
    _check_inputs(plan, inputs)
    if not overwrite:
        _check_existing(plan)


# -------------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------------
def ensure_dir(path: str) -> str:
    """Create directory `path` (and its parents) if needed; OutputError naming it if that
    fails. Returns `path`."""
    if not path:
        return path
    if is_remote(path):
        with _remote_errors(f"cannot create directory '{path}'"):
            _gfile().makedirs(path)
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise errors.OutputError(f"cannot create directory '{path}': "
                                 f"{e.strerror or e}") from None
    return path


@contextlib.contextmanager
def _remote_errors(what: str) -> Iterator[None]:
    """TensorFlow's file-system errors on a remote path as one OutputError line."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        raise errors.OutputError(f"{what}: {e.message.splitlines()[0]}") from None


def ensure_parent(path: str) -> str:
    """Create the directory that will hold file `path`; returns `path`."""
    ensure_dir(os.path.dirname(path))
    return path


def temporary_name(path: str) -> str:
    """A hidden name beside `path` with the same suffix (writers such as OpenCV pick the format
    by suffix): `dir/.stem.tmp-<random>.ext`."""
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    return os.path.join(directory, f".{stem}.tmp-{uuid.uuid4().hex[:12]}{ext}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write `path` through: renamed to `path` when the block succeeds,
    removed when it raises (so no partial file is left). The parent directory is created.

    For a remote `path` the block writes a local temporary file, which is then copied beside
    `path` and renamed onto it.
    """
    ensure_parent(path)
    if is_remote(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            yield local
            _upload(local, path)
        return
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def _upload(local: str, path: str) -> None:
    gfile = _gfile()
    remote_tmp = temporary_name(path)
    with _remote_errors(f"cannot write '{path}'"):
        gfile.copy(local, remote_tmp, overwrite=True)
        gfile.rename(remote_tmp, path, overwrite=True)


def write_file(path: str, data: Union[bytes, str]) -> str:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically, creating its directory;
    returns `path`. Whether `path` may be replaced was decided by `check_plan` beforehand."""
    try:
        with atomic_path(path) as tmp:
            if isinstance(data, bytes):
                with open(tmp, "wb") as f:
                    f.write(data)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(data)
    except OSError as e:
        raise errors.OutputError(f"cannot write '{path}': {e.strerror or e}") from None
    return path

"""TFRecord helpers: typed feature builders, the record schema, sharded writing, JPEG encoding
and an ordered worker pool.

TensorFlow is imported lazily (inside the functions that build or write records) so that worker
processes, which only decode and re-encode images with Pillow, start in well under a second.

Record schema (`FEATURE_TYPES`, the keys of the EfficientDet release): boxes are four float
lists ``image/object/bbox/{ymin,xmin,ymax,xmax}`` normalized to [0, 1] by the
image height/width; decoders return them in the order [ymin, xmin, ymax, xmax].
``image/source_id`` is the image's id in the COCO json, in decimal digits, at most
`MAX_SOURCE_ID`: `source_id_problem` is that rule, which the converters, the validator, the
input pipeline and eval all apply.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import itertools
import multiprocessing
import os
import uuid
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

INT64 = "int64"
FLOAT = "float"
BYTES = "bytes"

# Every key a converter writes, with its list type (area/is_crowd also for VOC). The one
# schema: dataloader.py parses the keys it needs from here.
FEATURE_TYPES: Dict[str, str] = {
    "image/height": INT64,
    "image/width": INT64,
    "image/filename": BYTES,
    "image/source_id": BYTES,
    "image/key/sha256": BYTES,
    "image/encoded": BYTES,
    "image/format": BYTES,
    "image/caption": BYTES,
    "image/object/bbox/xmin": FLOAT,
    "image/object/bbox/xmax": FLOAT,
    "image/object/bbox/ymin": FLOAT,
    "image/object/bbox/ymax": FLOAT,
    "image/object/class/text": BYTES,
    "image/object/class/label": INT64,
    "image/object/is_crowd": INT64,
    "image/object/area": FLOAT,
    "image/object/mask": BYTES,
    "image/object/difficult": INT64,
    "image/object/truncated": INT64,
    "image/object/view": BYTES,
}

# Per-object keys: all present ones must have one entry per box.
OBJECT_KEYS = tuple(k for k in FEATURE_TYPES if k.startswith("image/object/"))
BBOX_KEYS = ("image/object/bbox/ymin", "image/object/bbox/xmin",
             "image/object/bbox/ymax", "image/object/bbox/xmax")

SHARD_SUFFIX = ".tfrecord"
JPEG_QUALITY = 95

# -------------------------------------------------------------------------------------------------
# Source ids: the one rule
# -------------------------------------------------------------------------------------------------
# image/source_id is the image's id in the COCO json, written in decimal digits. The input
# pipeline turns it into float32, which holds every integer up to 2**24 exactly: a larger id
# would be rounded and match another image's ground truth.
MAX_SOURCE_ID = 2 ** 24
# Digits only (no sign, no spaces): the same pattern for Python's re and TensorFlow's RE2.
SOURCE_ID_PATTERN = "[0-9]+"
# The id of the blank images the input pipeline adds to fill the last eval batch: outside the
# ids a record may carry, exact in float32; the COCO metric skips these images.
PADDING_SOURCE_ID = -2 * MAX_SOURCE_ID


def source_id_problem(value: Any) -> Optional[str]:
    """None if `value` is a usable image/source_id, else what is wrong (a phrase).

    Usable: an integer in 0..MAX_SOURCE_ID, given as an int or as its decimal digits (str or
    bytes, as records store it). An empty value is a problem here; callers that allow a record
    without an id (training) test for emptiness first.
    """
    import re

    if isinstance(value, bool):
        return f"{value!r} is not an integer"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if not value:
            return "is empty"
        if not re.fullmatch(SOURCE_ID_PATTERN, value):
            return f"'{value}' is not an integer written in digits"
        value = int(value)
    elif not isinstance(value, int):
        return f"{value!r} is not an integer"
    if not 0 <= value <= MAX_SOURCE_ID:
        return (f"{value} is outside 0..{MAX_SOURCE_ID} (float32, which carries the id through "
                f"the input pipeline, holds larger integers inexactly)")
    return None


# -------------------------------------------------------------------------------------------------
# Features
# -------------------------------------------------------------------------------------------------
def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def int64_list_feature(values: Iterable[int]):
    """A tf.train.Feature holding an Int64List."""
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def int64_feature(value: int):
    return int64_list_feature([value])


def float_list_feature(values: Iterable[float]):
    """A tf.train.Feature holding a FloatList (stored as float32)."""
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def bytes_list_feature(values: Iterable[Any]):
    """A tf.train.Feature holding a BytesList; str values are UTF-8 encoded."""
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[_as_bytes(v) for v in values]))


def bytes_feature(value: Any):
    return bytes_list_feature([value])


_BUILDERS = {INT64: int64_list_feature, FLOAT: float_list_feature, BYTES: bytes_list_feature}


def make_example(values: Mapping[str, Any]):
    """A tf.train.Example from {key: value or list of values}, typed by `FEATURE_TYPES`.

    Keeping the types in one table means an empty list still gets the right list kind, which a
    strict parser (VarLenFeature of a given dtype) requires.
    """
    import tensorflow as tf
    feature = {}
    for key, value in values.items():
        if key not in FEATURE_TYPES:
            raise KeyError(f"record key '{key}' is not in tfrecord_util.FEATURE_TYPES; add it "
                           f"there with its type.")
        if isinstance(value, (bytes, str, int, float)):
            value = [value]
        feature[key] = _BUILDERS[FEATURE_TYPES[key]](value)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def example_to_dict(example) -> Dict[str, List[Any]]:
    """{key: python list} of a tf.train.Example (bytes stay bytes)."""
    out: Dict[str, List[Any]] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


def parse_example(serialized: bytes) -> Dict[str, List[Any]]:
    """{key: python list} of a serialized tf.train.Example."""
    import tensorflow as tf
    return example_to_dict(tf.train.Example.FromString(serialized))


def iter_serialized(path: str) -> Iterator[bytes]:
    """Serialized records of one TFRecord file, in order, in eager or graph mode.

    A truncated or corrupt file raises `tf.errors.DataLossError` at the bad record.
    """
    import tensorflow as tf

    if tf.executing_eagerly():
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    else:  # graph mode (TF1-style callers): the v1 iterator needs no session
        yield from tf.compat.v1.io.tf_record_iterator(path)


@dataclasses.dataclass
class RawRecord:
    """One serialized record and where it was read: `index` counts from 0 in its `file`.

    `serialized` is None when the file is truncated or corrupt at this point; `error` then says
    what TensorFlow found, and the file has no further records.
    """

    file: str
    index: int
    serialized: Optional[bytes]
    error: str = ""


def read_records(files: Sequence[str], limit: Optional[int] = None) -> Iterator[RawRecord]:
    """The records of `files` in file order (the first `limit` of them, or all).

    A truncated or corrupt file gives one `RawRecord` without `serialized` at the bad record,
    and reading goes on with the next file.
    """
    import tensorflow as tf

    count = 0
    for path in files:
        index = 0
        try:
            for serialized in iter_serialized(path):
                if limit is not None and count >= limit:
                    return
                yield RawRecord(path, index, serialized)
                index += 1
                count += 1
        except tf.errors.DataLossError as e:
            count += 1
            yield RawRecord(path, index, None, (e.message or str(e)).splitlines()[0])


def read_examples(file_pattern: str) -> List[Dict[str, List[Any]]]:
    """Every record of the files matching `file_pattern` (sorted by name) as {key: list}."""
    import tensorflow as tf

    return [parse_example(r) for path in sorted(tf.io.gfile.glob(file_pattern))
            for r in iter_serialized(path)]


# -------------------------------------------------------------------------------------------------
# Shards
# -------------------------------------------------------------------------------------------------
def shard_filename(prefix: str, index: int, num_shards: int) -> str:
    """'<prefix>-%05d-of-%05d.tfrecord' (index counts from 0)."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def shard_filenames(prefix: str, num_shards: int) -> List[str]:
    return [shard_filename(prefix, i, num_shards) for i in range(num_shards)]


_SHARD_NAME = r"(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})(?P<suffix>\.tfrecord)?"


def parse_shard_name(path: str) -> Optional[Tuple[str, int, int]]:
    """(prefix, index, num_shards) of a shard named like `shard_filename` (with or without
    the .tfrecord suffix), else None."""
    import re

    match = re.fullmatch(_SHARD_NAME, path)
    if not match:
        return None
    return match["prefix"], int(match["index"]), int(match["count"])


def voc_json_path(prefix: str) -> str:
    """Where the VOC converter writes the ground-truth json of the shards `<prefix>-*`:
    `json_<basename(prefix)>.json` beside them, e.g. tfrecord/json_pascal.json."""
    return os.path.join(os.path.dirname(prefix), f"json_{os.path.basename(prefix)}.json")


def check_output_prefix(prefix: str, flag: str) -> None:
    """Fail now, naming `flag`, when shards cannot be written under `prefix` (its directory
    cannot be created, or is not writable), rather than after converting every image."""
    import tensorflow as tf

    import errors

    out_dir = os.path.dirname(prefix) or "."
    probe = os.path.join(out_dir, f".{os.path.basename(prefix)}.probe-{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(out_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        reason = getattr(e, "message", "") or str(e)
        raise errors.OutputError(f"{flag}={prefix}: cannot write into '{out_dir}' "
                                 f"({reason.splitlines()[0] if reason else type(e).__name__}); "
                                 f"choose a writable directory.") from None


def check_shard_outputs(prefix: str, num_shards: int, flag: str, extra: Sequence[str] = (),
                        inputs: Sequence[Any] = (), overwrite: bool = False) -> None:
    """Refuse (errors.OutputError, one line naming `flag`), before any image is read, a
    conversion whose outputs would replace or mix with files already there.

    `num_shards` is the count the conversion will write; `extra` are its other files (the VOC
    converter's json); `inputs` are (flag, path) pairs it reads. Shards of this prefix with
    another count are refused even with `overwrite`: they would not be replaced, and a pattern
    such as `<prefix>-*` would then read old and new records together. Shards and files of the
    same names are replaced only with `overwrite`.
    """
    import errors
    import outputs

    planned = shard_filenames(prefix, num_shards)
    others = stale_shards(prefix, planned)
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise errors.OutputError(
            f"--{flag} '{prefix}': '{others[0]}'{more} of an earlier conversion with another "
            f"shard count would be read together with the {num_shards} new shard(s); delete "
            f"them or choose another prefix (--overwrite replaces only the files a run writes; "
            f"nothing was written)")
    outputs.check_plan([outputs.Planned(flag, prefix, tuple(planned) + tuple(extra),
                                        kind="prefix")], inputs, overwrite)


def planned_num_shards(num_shards: int, num_tasks: int) -> int:
    """The shard count `run_conversion` writes for `num_tasks` images: never more shards than
    images, at least one."""
    return max(1, min(num_shards, num_tasks))


class ShardedWriter:
    """Writes records round robin (record i -> shard i % num_shards) into hidden temporary files
    and moves them to `<prefix>-%05d-of-%05d.tfrecord` only on `commit()`.

    Why temporary files: a run stopped by `--on_error=fail` (or killed) never leaves truncated
    shards that a training file pattern would then pick up. On commit, when fewer records than
    shards were written, only the first `num_records` shards exist (so no shard is empty) and the
    file names say `-of-<num_records>`; an empty run keeps one empty shard.
    """

    def __init__(self, prefix: str, num_shards: int):
        import tensorflow as tf
        if num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {num_shards}.")
        self.prefix = prefix
        self.num_shards = num_shards
        self.num_records = 0
        out_dir = os.path.dirname(prefix) or "."
        tf.io.gfile.makedirs(out_dir)
        self._tmp_dir = os.path.join(out_dir, f".{os.path.basename(prefix)}.tmp-{uuid.uuid4().hex}")
        tf.io.gfile.makedirs(self._tmp_dir)
        self._tmp_names = [os.path.join(self._tmp_dir, f"shard-{i:05d}") for i in range(num_shards)]
        self._writers = [tf.io.TFRecordWriter(n) for n in self._tmp_names]
        self.filenames: List[str] = []

    def write(self, serialized: bytes) -> None:
        self._writers[self.num_records % self.num_shards].write(serialized)
        self.num_records += 1

    def _close_writers(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []

    def final_filenames(self) -> List[str]:
        """The names `commit` gives the shards: one per record at most, at least one."""
        return shard_filenames(self.prefix, max(1, min(self.num_shards, self.num_records)))

    def commit(self) -> List[str]:
        """Close, move the shards into place and return their final names."""
        import tensorflow as tf
        self._close_writers()
        self.filenames = self.final_filenames()
        used = len(self.filenames)
        for tmp, final in zip(self._tmp_names[:used], self.filenames):
            tf.io.gfile.rename(tmp, final, overwrite=True)
        tf.io.gfile.rmtree(self._tmp_dir)
        return self.filenames

    def abort(self) -> None:
        """Close and delete the temporary shards; nothing is written to `prefix`."""
        import tensorflow as tf
        self._close_writers()
        if tf.io.gfile.exists(self._tmp_dir):
            tf.io.gfile.rmtree(self._tmp_dir)

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._writers:
            self.commit()


def stale_shards(prefix: str, keep: Sequence[str]) -> List[str]:
    """Shards named like `<prefix>-NNNNN-of-MMMMM.tfrecord` that are not in `keep`.

    A pattern such as `<prefix>*.tfrecord` would read them together with the new shards, so the
    converters refuse to write beside them (they never delete user files).
    """
    import re

    import tensorflow as tf
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-\d{5}-of-\d{5}\.tfrecord$")
    keep_set = {os.path.normpath(k) for k in keep}
    found = tf.io.gfile.glob(prefix + "-*-of-*" + SHARD_SUFFIX)
    return sorted(f for f in found if pattern.match(os.path.basename(f))
                  and os.path.normpath(f) not in keep_set)


# -------------------------------------------------------------------------------------------------
# Images
# -------------------------------------------------------------------------------------------------
def encode_jpeg(image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB PIL image."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(image) -> bytes:
    """PNG bytes of a PIL image (used for instance masks)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# -------------------------------------------------------------------------------------------------
# Workers
# -------------------------------------------------------------------------------------------------
def resolve_num_workers(num_threads: Optional[int]) -> int:
    """Worker count: None or 0 means one per CPU; negative values are an error."""
    if num_threads is None or num_threads == 0:
        return os.cpu_count() or 1
    if num_threads < 0:
        raise ValueError(f"--num_threads must be >= 0 (0 or unset: one per CPU), got "
                         f"{num_threads}.")
    return num_threads


def _apply_batch(fn: Callable[[Any], Any], batch: Sequence[Any]) -> List[Any]:
    return [fn(item) for item in batch]


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int,
                 chunksize: Optional[int] = None) -> Iterator[Any]:
    """`map(fn, items)` in input order, over `num_workers` processes (in-process if <= 1).

    Why this shape:
    * 'spawn' start method: the parent has usually imported TensorFlow, whose threads make
      'fork' unsafe (a lock held by another thread at fork time can hang the child). So `fn`
      must be a module-level function (or a functools.partial of one) and must not need
      TensorFlow, which keeps worker start-up well under a second.
    * concurrent.futures, not multiprocessing.Pool: a worker that dies (killed for memory, or
      failing to start) raises BrokenProcessPool here instead of hanging forever.
    * At most `4 * num_workers` batches are in flight, so when writing is slower than decoding,
      encoded images do not pile up in memory.
    Closing the generator early (e.g. on an --on_error=fail error) cancels the queued batches.
    """
    if num_workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    workers = min(num_workers, len(items))
    if chunksize is None:
        # Small batches keep the progress bar moving and the workers balanced.
        chunksize = max(1, min(16, len(items) // (workers * 8)))
    batches = iter([items[i:i + chunksize] for i in range(0, len(items), chunksize)])
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as executor:
        pending: Deque[concurrent.futures.Future] = collections.deque(
            executor.submit(_apply_batch, fn, b) for b in itertools.islice(batches, 4 * workers))
        try:
            while pending:
                results = pending.popleft().result()
                for batch in itertools.islice(batches, 1):
                    pending.append(executor.submit(_apply_batch, fn, batch))
                yield from results
        finally:
            for future in pending:
                future.cancel()


# -------------------------------------------------------------------------------------------------
# Conversion driver shared by the converters
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class WorkerResult:
    """What a converter worker found for one image.

    `values` are the record values ({key: value or list}, see `FEATURE_TYPES`), or None when the
    image is skipped; `problems` are `validation.Problem`s for the parent to apply --on_error to
    (in input order); `notes` are (note, where) pairs of non-error events; `extra` carries
    converter-specific data (the VOC converter's json annotations).
    """

    values: Optional[Dict[str, Any]]
    problems: List[Any]
    notes: List[Any]
    num_boxes: int = 0
    boxes_in_skipped_image: int = 0
    extra: Any = None


def write_records(results: Iterable[WorkerResult], writer: ShardedWriter, handler, summary,
                  progress: bool = True, total: Optional[int] = None,
                  on_record: Optional[Callable[[WorkerResult], None]] = None) -> None:
    """Consume worker results in input order: apply the policy, count, write the records.

    `handler(problem)` applies --on_error (it raises under 'fail'); `summary` is a
    `validation.Summary`. `on_record(result)` may edit `result.values` just before the record is
    written (the VOC converter assigns image ids there, so ids count written images only).
    """
    from tqdm import tqdm

    for result in tqdm(results, total=total, disable=not progress, unit="img",
                       desc=os.path.basename(writer.prefix)):
        for problem in result.problems:
            handler(problem)
        for note, where in result.notes:
            summary.add_note(note, where)
        if result.values is None:
            summary.boxes_in_skipped_images += result.boxes_in_skipped_image
            continue
        if on_record is not None:
            on_record(result)
        writer.write(make_example(result.values).SerializeToString())
        summary.images_written += 1
        summary.boxes_written += result.num_boxes


def run_conversion(tasks: Sequence[Any], worker: Callable[[Any], WorkerResult], prefix: str,
                   num_shards: int, num_threads: Optional[int], handler, summary,
                   progress: bool = True,
                   on_record: Optional[Callable[[WorkerResult], None]] = None) -> List[str]:
    """Run `worker` over `tasks` on `num_threads` processes and write sharded records.

    Returns the shard file names. Shards are moved into place only when everything succeeded
    (see `ShardedWriter`); an error (e.g. `DataError` under --on_error=fail) leaves no shard.
    The caller has checked the outputs (`check_shard_outputs`); if skipped images leave fewer
    records than shards, so that the names change, and shards of the planned names exist
    (being replaced with --overwrite), nothing is written rather than leaving old shards beside
    new ones of another count.
    """
    import errors

    workers = resolve_num_workers(num_threads)
    # Never more shards than images, so a small dataset does not give empty shards.
    writer = ShardedWriter(prefix, planned_num_shards(num_shards, len(tasks)))
    results = parallel_map(worker, tasks, workers)
    try:
        write_records(results, writer, handler, summary, progress, len(tasks), on_record)
        stale = stale_shards(prefix, writer.final_filenames())
        if stale:
            raise errors.OutputError(
                f"'{stale[0]}' (of {len(stale)} shard(s) of this prefix) would be left beside "
                f"the {len(writer.final_filenames())} new shard(s), as only "
                f"{writer.num_records} record(s) were written; delete the old shards or choose "
                f"another prefix (nothing was written)")
    except BaseException:
        results.close()  # terminates the worker pool
        writer.abort()
        raise
    files = writer.commit()
    summary.output_files = files
    if len(files) < num_shards:
        summary.add_note("num_shards_reduced_to_num_images",
                         f"{prefix}: {num_shards} -> {len(files)}")
    return files

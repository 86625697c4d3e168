"""One policy for TFRecord file patterns: which files a --*_file_pattern flag means, and
whether a file is (still) a readable TFRecord file.

A pattern is a comma-separated list of globs (local paths or any filesystem `tf.io.gfile`
reads, e.g. gs://). Everything here is plain Python on file headers, so bad patterns and
broken files are named before any graph is built.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

import errors
from dataset import tfrecord_util


class InputError(errors.UsageError):
    """A bad --training_file_pattern / --validation_file_pattern or batch size."""


# Files a glob may catch next to the shards that are certainly not TFRecords (e.g. the
# VOC converter's json lies in the output directory). They are skipped with a warning.
NON_RECORD_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".xml", ".csv", ".md", ".jpg", ".jpeg",
                       ".png", ".py", ".log")


def _crc32c_table() -> List[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C (Castagnoli), rotated right by 15 bits, plus a constant."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def is_tfrecord_file(path: str) -> bool:
    """True if `path` starts with a valid (uncompressed) TFRecord header, or is empty.

    Reads 12 bytes: the first record's uint64 length and its masked CRC-32C. An empty file is a
    valid TFRecord file with no records.
    """
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(12)
    if not head:
        return True
    if len(head) < 12:
        return False
    length_bytes, crc = head[:8], struct.unpack("<I", head[8:12])[0]
    return _masked_crc32c(length_bytes) == crc


def list_record_files(file_pattern: str, flag: str) -> List[str]:
    """The TFRecord files of a comma-separated list of globs; errors name `flag`.

    Each glob must match at least one file, and the shards of one prefix must come from one
    conversion (`check_shard_generations`). Matches that end in `NON_RECORD_SUFFIXES` (e.g. the
    ground-truth json written next to the shards) and directories are skipped with a warning;
    any other file whose header is not a TFRecord header is an error, because reading it would
    fail deep inside the graph with an opaque message.

    Raises:
      InputError: empty pattern, a glob without matches, no TFRecord file left, a file that is
        not a TFRecord, or two generations of shards.
    """
    example = f"{flag}='tfrecord/train-*.tfrecord'"
    if not file_pattern or not str(file_pattern).strip():
        raise InputError(f"{flag} is empty: pass the glob of the TFRecord shards, e.g. {example}.")
    patterns = [p.strip() for p in str(file_pattern).split(",") if p.strip()]
    matched: List[str] = []
    for pattern in patterns:
        found = sorted(tf.io.gfile.glob(pattern))
        if not found:
            raise InputError(f"{flag}={pattern} matches no file; check the path (quote the glob "
                             f"so the shell does not expand it), e.g. {example}.")
        matched.extend(f for f in found if f not in matched)
    skipped = [f for f in matched
               if f.lower().endswith(NON_RECORD_SUFFIXES) or tf.io.gfile.isdir(f)]
    files = [f for f in matched if f not in skipped]
    if skipped:
        logging.warning("%s=%s: skipping %d match(es) that are not TFRecord files: %s", flag,
                        file_pattern, len(skipped), ", ".join(skipped[:3]) +
                        (", ..." if len(skipped) > 3 else ""))
    if not files:
        raise InputError(f"{flag}={file_pattern} matches no TFRecord file, only "
                         f"{', '.join(skipped[:3])}; point it at the shards, e.g. {example}.")
    for path in files:
        if not is_tfrecord_file(path):
            raise InputError(f"{flag}={file_pattern} matches {path}, which is not a TFRecord file "
                             f"(bad record header; compressed records are not supported); "
                             f"narrow the glob to the shards, e.g. {example}.")
    check_shard_generations(files, file_pattern, flag)
    if all(tf.io.gfile.stat(f).length == 0 for f in files):
        raise InputError(f"{flag}={file_pattern}: every matching file is empty ({files[0]} ...); "
                         f"re-create the records with the dataset converters.")
    return files


def check_shard_generations(files: Sequence[str], file_pattern: str, flag: str) -> None:
    """Refuse shards of one prefix written by two conversions: `P-00000-of-00004...` and
    `P-00000-of-00002...` both match a pattern like `P*` after a re-conversion with another
    --num_shards, and reading both would take every image twice.

    Raises:
      InputError naming both generations and what to do.
    """
    counts: Dict[str, Dict[int, List[str]]] = {}
    for path in files:
        parsed = tfrecord_util.parse_shard_name(path)
        if parsed:
            prefix, _, count = parsed
            counts.setdefault(prefix, {}).setdefault(count, []).append(path)
    for prefix, generations in sorted(counts.items()):
        if len(generations) > 1:
            # The newest file tells which conversion came last.
            newest = {n: max(tf.io.gfile.stat(f).mtime_nsec for f in paths)
                      for n, paths in generations.items()}
            by_age = sorted(generations.items(), key=lambda g: newest[g[0]])
            (old, stale), (new, fresh) = by_age[-2:]
            raise InputError(
                f"{flag}={file_pattern} matches two generations of the shards {prefix}-*: "
                f"{len(stale)} file(s) -of-{old:05d} (e.g. {stale[0]}) and {len(fresh)} newer "
                f"file(s) -of-{new:05d} (e.g. {fresh[0]}), so every image would be read twice; "
                f"delete the generation you do not want or narrow the pattern to one, e.g. "
                f"{flag}='{prefix}-*-of-{new:05d}*'.")


def find_broken_record_file(files: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(path, what is wrong) of the first file whose record framing is broken, else None.

    Walks each file's record headers (length, length checksum) without reading the payloads,
    so it takes one small read per record: used after TensorFlow reported a corrupted or
    truncated record without naming the file.
    """
    for path in files:
        size = tf.io.gfile.stat(path).length
        offset, index = 0, 0
        with tf.io.gfile.GFile(path, "rb") as f:
            while offset < size:
                f.seek(offset)
                head = f.read(12)
                if len(head) < 12:
                    return path, f"truncated header of record {index} at byte {offset}"
                if _masked_crc32c(head[:8]) != struct.unpack("<I", head[8:12])[0]:
                    return path, f"bad header checksum of record {index} at byte {offset}"
                length = struct.unpack("<Q", head[:8])[0]
                offset += 12 + length + 4
                if offset > size:
                    return path, (f"record {index} is truncated: it needs {offset - size} more "
                                  f"bytes than the file holds")
                index += 1
    return None

"""record_files: pattern expansion and TFRecord framing checks, on small files written here."""

import pytest
import tensorflow as tf

import record_files


def _write(path, payloads):
    with tf.io.TFRecordWriter(str(path)) as w:
        for p in payloads:
            w.write(p)
    return str(path)


def test_tfrecord_header_check(tmp_path):
    assert record_files.is_tfrecord_file(_write(tmp_path / "a.tfrecord", [b"x" * 10, b"y"]))
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert record_files.is_tfrecord_file(str(empty))
    bad = tmp_path / "x.tfrecord"
    bad.write_bytes(b'{"images": [], "annotations": []}')
    assert not record_files.is_tfrecord_file(str(bad))
    short = tmp_path / "short.tfrecord"
    short.write_bytes(b"\x01\x02")
    assert not record_files.is_tfrecord_file(str(short))


def test_find_broken_record_file_names_file_and_record(tmp_path):
    good = _write(tmp_path / "good.tfrecord", [b"a" * 20, b"b" * 20])
    assert record_files.find_broken_record_file([good]) is None
    data = (tmp_path / "good.tfrecord").read_bytes()
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(data[:-5])
    assert record_files.find_broken_record_file([good, str(cut)]) == (
        str(cut), "record 1 is truncated: it needs 5 more bytes than the file holds")
    flipped = tmp_path / "flipped.tfrecord"
    flipped.write_bytes(data[:9] + bytes([data[9] ^ 0xFF]) + data[10:])
    path, what = record_files.find_broken_record_file([str(flipped)])
    assert path == str(flipped) and what == "bad header checksum of record 0 at byte 0"


def test_comma_separated_globs_each_must_match(tmp_path):
    a = _write(tmp_path / "a-0.tfrecord", [b"1"])
    b = _write(tmp_path / "b-0.tfrecord", [b"2"])
    pattern = f"{tmp_path}/a-*.tfrecord, {tmp_path}/b-*.tfrecord"
    assert record_files.list_record_files(pattern, "--training_file_pattern") == [a, b]
    # A file matched by two globs is listed once.
    assert record_files.list_record_files(f"{a},{tmp_path}/*.tfrecord", "--x") == [a, b]
    with pytest.raises(record_files.InputError, match=r"--x=.*nope-\*.tfrecord matches no file"):
        record_files.list_record_files(f"{a},{tmp_path}/nope-*.tfrecord", "--x")


def test_two_generations_of_one_prefix_are_refused(tmp_path):
    """Re-converting with another --num_shards leaves P-*-of-00004 beside P-*-of-00002: a glob
    over both would read every image twice."""
    import os

    old = [_write(tmp_path / f"train-{i:05d}-of-00004.tfrecord", [b"x"]) for i in range(4)]
    for i, path in enumerate(old):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    new = [_write(tmp_path / f"train-{i:05d}-of-00002.tfrecord", [b"x"]) for i in range(2)]
    with pytest.raises(record_files.InputError) as e:
        record_files.list_record_files(str(tmp_path / "train*"), "--training_file_pattern")
    message = str(e.value)
    assert "\n" not in message
    assert "matches two generations of the shards" in message and "train-*" in message
    assert "4 file(s) -of-00004" in message and "2 newer file(s) -of-00002" in message
    assert message.endswith(f"--training_file_pattern='{tmp_path / 'train'}-*-of-00002*'.")
    # One generation, or other prefixes with their own counts, are fine.
    assert record_files.list_record_files(str(tmp_path / "train-*-of-00002*"), "--x") == new
    _write(tmp_path / "val-00000-of-00001.tfrecord", [b"x"])
    assert len(record_files.list_record_files(
        f"{tmp_path / 'train-*-of-00004*'},{tmp_path / 'val*'}", "--x")) == 5

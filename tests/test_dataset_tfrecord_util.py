"""Tests for dataset/tfrecord_util.py."""

import io
import os

import pytest
from PIL import Image

from dataset import tfrecord_util


def _values(i):
    return {"image/source_id": str(i), "image/height": 10, "image/width": 20,
            "image/object/bbox/xmin": [0.25], "image/object/class/label": [3],
            "image/object/class/text": ["cat"], "image/object/area": []}


def test_make_example_types_and_round_trip():
    ex = tfrecord_util.make_example(_values(7))
    f = ex.features.feature
    assert f["image/height"].int64_list.value == [10]
    assert f["image/source_id"].bytes_list.value == [b"7"]
    assert f["image/object/bbox/xmin"].float_list.value == [0.25]
    # An empty list still has the schema's kind, so a typed VarLen parser accepts it.
    assert f["image/object/area"].WhichOneof("kind") == "float_list"
    back = tfrecord_util.parse_example(ex.SerializeToString())
    assert back["image/object/class/text"] == [b"cat"]
    assert back["image/object/class/label"] == [3]
    assert back["image/object/area"] == []


def test_make_example_rejects_unknown_keys():
    with pytest.raises(KeyError, match="image/objects/typo"):
        tfrecord_util.make_example({"image/objects/typo": [1]})


def test_feature_helpers():
    assert tfrecord_util.int64_feature(5).int64_list.value == [5]
    assert tfrecord_util.bytes_feature("é").bytes_list.value == ["é".encode()]
    assert list(tfrecord_util.float_list_feature([0.5, 1]).float_list.value) == [0.5, 1.0]
    assert tfrecord_util.bytes_list_feature([b"a", "b"]).bytes_list.value == [b"a", b"b"]


def test_shard_names():
    assert tfrecord_util.shard_filename("out/train", 3, 32) == "out/train-00003-of-00032.tfrecord"
    assert tfrecord_util.shard_filenames("p", 2) == ["p-00000-of-00002.tfrecord",
                                                     "p-00001-of-00002.tfrecord"]


def _ids(path):
    return [int(r["image/source_id"][0]) for r in tfrecord_util.read_examples(path)]


def test_sharded_writer_round_robin(tmp_path):
    prefix = str(tmp_path / "sub" / "train")
    with tfrecord_util.ShardedWriter(prefix, 3) as w:
        for i in range(7):
            w.write(tfrecord_util.make_example(_values(i)).SerializeToString())
    assert w.filenames == tfrecord_util.shard_filenames(prefix, 3)
    assert [_ids(f) for f in w.filenames] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(os.listdir(tmp_path / "sub")) == [os.path.basename(f) for f in w.filenames]


def test_sharded_writer_never_leaves_empty_shards(tmp_path):
    prefix = str(tmp_path / "small")
    w = tfrecord_util.ShardedWriter(prefix, 100)
    for i in range(2):
        w.write(tfrecord_util.make_example(_values(i)).SerializeToString())
    files = w.commit()
    assert files == tfrecord_util.shard_filenames(prefix, 2)
    assert [_ids(f) for f in files] == [[0], [1]]
    empty = tfrecord_util.ShardedWriter(str(tmp_path / "empty"), 4)
    assert empty.commit() == [str(tmp_path / "empty-00000-of-00001.tfrecord")]


def test_sharded_writer_abort_and_exception_leave_nothing(tmp_path):
    w = tfrecord_util.ShardedWriter(str(tmp_path / "a"), 2)
    w.write(tfrecord_util.make_example(_values(0)).SerializeToString())
    w.abort()
    with pytest.raises(RuntimeError):
        with tfrecord_util.ShardedWriter(str(tmp_path / "b"), 2) as w2:
            w2.write(tfrecord_util.make_example(_values(0)).SerializeToString())
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []


def test_stale_shards_are_reported_not_deleted(tmp_path):
    prefix = str(tmp_path / "val")
    old = tmp_path / "val-00000-of-00009.tfrecord"
    old.write_bytes(b"")
    (tmp_path / "val_other-00000-of-00009.tfrecord").write_bytes(b"")
    new = tfrecord_util.ShardedWriter(prefix, 1).commit()
    assert tfrecord_util.stale_shards(prefix, new) == [str(old)]
    assert old.exists()


def test_reading_works_in_graph_mode_too(tmp_path):
    import tensorflow as tf

    prefix = str(tmp_path / "g")
    with tfrecord_util.ShardedWriter(prefix, 1) as w:
        w.write(tfrecord_util.make_example(_values(4)).SerializeToString())
    with tf.Graph().as_default():  # TF1-style callers; leaves eager mode untouched afterwards
        assert not tf.executing_eagerly()
        assert _ids(prefix + "-*") == [4]
    assert tf.executing_eagerly()


def test_encoders_give_decodable_images():
    img = Image.new("RGB", (9, 5), (10, 200, 30))
    jpg = tfrecord_util.encode_jpeg(img)
    png = tfrecord_util.encode_png(Image.new("L", (4, 3), 1))
    assert jpg[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(jpg)).size == (9, 5)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_resolve_num_workers():
    assert tfrecord_util.resolve_num_workers(None) == (os.cpu_count() or 1)
    assert tfrecord_util.resolve_num_workers(0) == (os.cpu_count() or 1)
    assert tfrecord_util.resolve_num_workers(3) == 3
    with pytest.raises(ValueError, match="--num_threads"):
        tfrecord_util.resolve_num_workers(-1)


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_keeps_input_order(workers):
    items = list(range(-20, 0))
    assert list(tfrecord_util.parallel_map(abs, items, workers)) == [abs(i) for i in items]


def test_parallel_map_can_be_closed_early():
    gen = tfrecord_util.parallel_map(abs, list(range(-50, 0)), 2)
    assert next(gen) == 50
    gen.close()  # terminates the pool; must not hang

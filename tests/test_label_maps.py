"""Tests for dataset/label_maps.py."""

import json

import pytest
import yaml

from dataset import label_maps


def test_coco_map_is_the_80_class_90_id_coco_2017_map():
    m = label_maps.get_label_map("coco")
    assert len(m) == 80
    assert m[1] == "person" and m[90] == "toothbrush" and m[13] == "stop sign"
    assert m[44] == "bottle" and m[67] == "dining table" and m[88] == "teddy bear"
    assert set(range(1, 91)) - set(m) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert label_maps.num_classes_of(m) == 90
    assert label_maps.get_label_map(None) == m


def test_voc_map_has_20_classes_with_ids_1_to_20():
    m = label_maps.get_label_map("VOC")
    assert list(m) == list(range(1, 21))
    assert m[1] == "aeroplane" and m[15] == "person" and m[20] == "tvmonitor"
    assert label_maps.name_to_id(m)["diningtable"] == 11


def test_returned_maps_are_copies():
    m = label_maps.get_label_map("voc")
    m[1] = "changed"
    assert label_maps.get_label_map("voc")[1] == "aeroplane"


def test_dict_in_both_orientations_and_background_dropped():
    assert label_maps.get_label_map({2: "b", 1: "a"}) == {1: "a", 2: "b"}
    assert list(label_maps.get_label_map({2: "b", 1: "a"})) == [1, 2]
    assert label_maps.get_label_map({"a": 1, "b": 2}) == {1: "a", 2: "b"}
    assert label_maps.get_label_map({"1": "a", "3": "c"}) == {1: "a", 3: "c"}
    # The reference's VOC json map lists background:0; id 0 is never a class here.
    assert label_maps.get_label_map({"background": 0, "cat": 1}) == {1: "cat"}


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text(yaml.safe_dump({1: "circle", 2: "square"}))
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"circle": 1, "square": 2}))
    assert label_maps.get_label_map(str(y)) == {1: "circle", 2: "square"}
    assert label_maps.get_label_map(str(j)) == {1: "circle", 2: "square"}


@pytest.mark.parametrize("spec, words", [
    ("kitti", ["unknown label map 'kitti'", "'coco'"]),
    ({1: "a", 2: "a"}, ["appear under several ids"]),
    ({0: "thing"}, ["id 0", ">= 1"]),
    ({"a": "b"}, ["integer ids"]),
    ({1: ""}, ["non-empty strings"]),
    ({}, ["non-empty mapping"]),
])
def test_bad_maps_say_what_to_fix(spec, words):
    with pytest.raises(label_maps.LabelMapError) as e:
        label_maps.get_label_map(spec)
    for w in words:
        assert w in str(e.value)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(label_maps.LabelMapError, match="does not exist"):
        label_maps.get_label_map(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(label_maps.LabelMapError, match="bad.yaml' could not be parsed"):
        label_maps.get_label_map(str(bad))
    txt = tmp_path / "m.txt"
    txt.write_text("1 a")
    with pytest.raises(label_maps.LabelMapError, match="unknown label map"):
        label_maps.get_label_map(str(txt))
    with pytest.raises(label_maps.LabelMapError, match="unsupported extension"):
        label_maps.load_label_map_file(str(txt))


def test_yaml_is_parsed_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(label_maps.LabelMapError, match="could not be parsed"):
        label_maps.get_label_map(str(evil))

"""Tests for dataset/sample_dataset.py: deterministic, exact ground truth, both layouts."""

import hashlib
import json
import os

import numpy as np
from PIL import Image

from dataset import create_pascal_tfrecord, label_maps, sample_dataset


def _tree_digest(root):
    digest = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sample_dataset.write_coco(str(tmp_path / name), 6, seed=seed)
        sample_dataset.write_voc(str(tmp_path / name), 6, seed=seed, years=("VOC2007", "VOC2012"))
    a, b, c = (_tree_digest(tmp_path / n) for n in "abc")
    assert a == b and len(a) > 30
    assert a != c


def test_boxes_are_the_exact_extent_of_the_drawn_shapes(tmp_path):
    sample = sample_dataset.write_coco(str(tmp_path), 12, seed=5, image_format="png")
    n_objects = 0
    for info in sample.images:
        pixels = np.asarray(Image.open(os.path.join(sample.image_dir, info.file_name)))
        assert pixels.shape == (info.height, info.width, 3)
        colors, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
        background = colors[np.argmax(counts)]  # a solid background covers most pixels
        fg = np.any(pixels != background, axis=-1)
        covered = np.zeros_like(fg)
        for obj in info.objects:
            x, y, w, h = obj.box
            region = fg[y:y + h, x:x + w]
            ys, xs = np.nonzero(region)
            # Foreground inside the box touches all four edges: the box is the exact extent.
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, w, h)
            assert obj.area == region.sum()
            covered[y:y + h, x:x + w] = True
            n_objects += 1
        assert not np.any(fg & ~covered), "every shape pixel lies inside some box"
    assert n_objects > 10


def test_coco_files_sizes_ids_and_classes(tmp_path):
    sample = sample_dataset.write_coco(str(tmp_path), 20, seed=0)
    with open(sample.instances_file) as f:
        inst = json.load(f)
    ids = [im["id"] for im in inst["images"]]
    assert ids == [100 + 3 * i for i in range(20)]
    sizes = [(im["width"], im["height"]) for im in inst["images"]]
    assert all(64 <= w <= 160 and 64 <= h <= 160 for w, h in sizes)
    assert sum(w != h for w, h in sizes) >= 10
    assert {c["id"]: c["name"] for c in inst["categories"]} == sample_dataset.SHAPE_LABEL_MAP
    assert {a["category_id"] for a in inst["annotations"]} == {1, 2, 3}
    by_id = {im.image_id: im for im in sample.images}
    for ann in inst["annotations"]:
        assert tuple(ann["bbox"]) in {o.box for o in by_id[ann["image_id"]].objects}
    with open(sample.captions_file) as f:
        caps = json.load(f)
    assert "categories" not in caps and len(caps["annotations"]) == 20
    with open(sample.image_info_file) as f:
        info = json.load(f)
    assert "annotations" not in info and len(info["images"]) == 20
    assert label_maps.get_label_map(sample.label_map_file) == sample_dataset.SHAPE_LABEL_MAP


def test_voc_tree_matches_ground_truth(tmp_path):
    sample = sample_dataset.write_voc(str(tmp_path), 8, seed=2, years=("VOC2007", "VOC2012"))
    assert sorted(os.listdir(sample.data_dir)) == ["VOC2007", "VOC2012", "label_map.json"]
    assert label_maps.get_label_map(sample.label_map_file) == sample_dataset.SHAPE_LABEL_MAP
    names = {y: [os.path.splitext(i.file_name)[0] for i in imgs]
             for y, imgs in sample.images.items()}
    assert names["VOC2007"][0] == "000001" and names["VOC2012"][0] == "2012_000001"
    for year, images in sample.images.items():
        main_dir = os.path.join(sample.data_dir, year, "ImageSets", "Main")
        for set_name in ("train", "val", "trainval"):
            for list_name in (f"{set_name}.txt", f"aeroplane_{set_name}.txt"):
                assert os.path.isfile(os.path.join(main_dir, list_name))
        _, train = create_pascal_tfrecord.read_image_list(sample.data_dir, year, "train")
        _, val = create_pascal_tfrecord.read_image_list(sample.data_dir, year, "val")
        assert sorted(train + val) == sorted(names[year]) and len(val) == 2
        for info in images:
            xml = os.path.join(sample.data_dir, year, "Annotations",
                               os.path.splitext(info.file_name)[0] + ".xml")
            data = create_pascal_tfrecord.parse_voc_xml(xml)
            assert data["filename"] == info.file_name
            assert (int(data["size"]["width"]), int(data["size"]["height"])) == (info.width,
                                                                                 info.height)
            got = [(o["name"], int(o["bndbox"]["xmin"]), int(o["bndbox"]["ymin"]),
                    int(o["bndbox"]["xmax"]), int(o["bndbox"]["ymax"])) for o in data["object"]]
            want = [(sample_dataset.SHAPE_LABEL_MAP[o.class_id], o.box[0], o.box[1],
                     o.box[0] + o.box[2], o.box[1] + o.box[3]) for o in info.objects]
            assert got == want
            assert os.path.isfile(os.path.join(sample.data_dir, year, "JPEGImages",
                                               info.file_name))


def test_voc_class_names_option_uses_builtin_voc_names(tmp_path):
    sample = sample_dataset.write_voc(str(tmp_path), 4, seed=0, voc_class_names=True)
    assert sample.label_map_file is None
    assert sample.label_map == {1: "aeroplane", 2: "bicycle", 3: "bird"}
    xml_dir = os.path.join(sample.data_dir, "VOC2012", "Annotations")
    text = "".join(open(os.path.join(xml_dir, f)).read() for f in os.listdir(xml_dir))
    assert "<name>bicycle</name>" in text or "<name>aeroplane</name>" in text
    assert "circle" not in text


def test_cli(tmp_path, capsys):
    rc = sample_dataset.main([f"--output_dir={tmp_path}", "--num_images=3", "--format=both",
                              "--seed=0", "--image_format=png", "--voc_years=VOC2007,VOC2012"])
    assert rc == 0
    assert len(os.listdir(tmp_path / "coco" / "images")) == 3
    assert sorted(os.listdir(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages"))[0].endswith(
        ".png")
    assert "--label_map_json_path=" in capsys.readouterr().out

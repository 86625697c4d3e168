"""Tests for dataset/sample_dataset.py: deterministic, exact ground truth, both layouts."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from badinput import check, run_in_process, snapshot
from conftest import ROOT
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


def _run(argv):
    """The tool's command line, in-process (tests/badinput.py)."""
    return run_in_process(sample_dataset.PROG, sample_dataset.SampleOptions, sample_dataset.run,
                          argv)


def test_cli(tmp_path):
    outcome = _run([f"--output_dir={tmp_path}", "--num_images=3", "--format=both", "--seed=0",
                    "--image_format=png", "--voc_years=VOC2007,VOC2012"])
    assert outcome.status == 0
    assert len(os.listdir(tmp_path / "coco" / "images")) == 3
    assert sorted(os.listdir(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages"))[0].endswith(
        ".png")
    assert "--label_map_json_path=" in outcome.stdout


def test_library_defaults_are_the_flags_defaults(tmp_path):
    """The flags' defaults are the library's: the tool with only --output_dir writes what
    write_coco and write_voc write with only the directory and the count."""
    assert _run([f"--output_dir={tmp_path / 'cli'}"]).status == 0
    sample_dataset.write_coco(str(tmp_path / "lib"), sample_dataset.DEFAULTS.num_images)
    sample_dataset.write_voc(str(tmp_path / "lib"), sample_dataset.DEFAULTS.num_images)
    assert _tree_digest(tmp_path / "cli") == _tree_digest(tmp_path / "lib")


BAD_FLAGS = [
    ("no-output-dir", [], r"--output_dir is required"),
    ("no-images", ["--num_images=0"], r"--num_images must be >= 1, got 0"),
    ("sizes-crossed", ["--min_size=200", "--max_size=100"],
     r"--max_size=100 is smaller than --min_size=200"),
    ("side-too-small", ["--min_size=8"], r"--min_size must be >= 16, got 8"),
    ("side-too-large", ["--max_size=100000"], r"--max_size must be <= 4096"),
    ("negative-noise", ["--noise=-1"], r"--noise must be >= 0"),
    ("negative-seed", ["--seed=-3"], r"--seed must be >= 0"),
    ("year-not-voc", ["--voc_years=2012"], r"--voc_years: '2012' is not a VOC year"),
    ("year-twice", ["--voc_years=VOC2007,VOC2007"], r"--voc_years=VOC2007,VOC2007 names a "
                                                    r"year twice"),
    ("no-years", ["--format=voc", "--voc_years=,"], r"--voc_years is empty"),
    ("unknown-kind", ["--kind=stripes"], r"--kind=stripes: value should be one of"),
    ("unknown-format", ["--format=yolo"], r"--format=yolo: value should be one of"),
    ("count-not-a-number", ["--num_images=many"], r"--num_images=many"),
    ("output-is-a-file", ["--output_dir={tmp}/a_file"], r"--output_dir '.*a_file' is a file"),
]


@pytest.mark.parametrize("case", BAD_FLAGS, ids=[c[0] for c in BAD_FLAGS])
def test_bad_flags_are_one_line_and_write_nothing(case, tmp_path):
    _, args, pattern = case
    (tmp_path / "a_file").write_text("the user's")
    out = f"--output_dir={tmp_path / 'out'}"
    argv = [a.format(tmp=tmp_path) for a in args]
    if args and not any(a.startswith("--output_dir") for a in args):
        argv.append(out)
    before = snapshot(str(tmp_path))
    check(_run(argv), 1, pattern, before, str(tmp_path), may_add=False)


def test_voc_years_apply_only_to_the_voc_layout(tmp_path):
    outcome = _run([f"--output_dir={tmp_path}", "--format=coco", "--voc_years=", "--num_images=2"])
    assert outcome.status == 0
    assert os.listdir(tmp_path) == ["coco"]


def test_the_script_runs_as_a_user_runs_it(tmp_path):
    """`python dataset/sample_dataset.py ...` from the repository root, without PYTHONPATH: the
    flags, the exit statuses and the one error line of the real entry point."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run([sys.executable, "dataset/sample_dataset.py", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)

    ok = run(f"--output_dir={tmp_path}", "--num_images=2", "--format", "voc", "--kind=clutter",
             "--voc_class_names")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"VOC: VOC2012 under {tmp_path / 'VOCdevkit'}"
    assert len(os.listdir(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")) == 2
    for args, line in (([f"--output_dir={tmp_path}", "--num_images=-1"],
                        "sample_dataset.py: error: --num_images must be >= 1, got -1."),
                       ([f"--output_dir={tmp_path}", "extra"],
                        "sample_dataset.py: error: unexpected argument 'extra'; every option is "
                        "a --flag=value (see --help).")):
        bad = run(*args)
        assert (bad.returncode, bad.stderr.strip(), bad.stdout) == (1, line, "")

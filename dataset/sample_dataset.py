r"""A small, deterministic detection dataset of filled shapes, in COCO and PASCAL VOC layouts.

Each image (random size in [min_size, max_size] per side, so most are not square) has a solid
background and 0..4 non-overlapping filled shapes of 3 classes: 1 'circle', 2 'square',
3 'triangle'. Ground-truth boxes are exact: each shape is drawn from a mask and its box is the
mask's pixel extent, so in a PNG the non-background pixels inside a box span it exactly. Boxes are
in continuous pixel coordinates: a shape covering pixel columns x0..x1 has x=x0, w=x1-x0+1.

    python dataset/sample_dataset.py --output_dir=/tmp/shapes --num_images=32 --format=both

writes

    <output_dir>/coco/images/<12-digit id>.jpg
    <output_dir>/coco/annotations/instances_sample.json   boxes [x, y, w, h], absolute pixels
    <output_dir>/coco/annotations/captions_sample.json    captions only (the seed's eval recipe)
    <output_dir>/coco/annotations/image_info_sample.json  images only (test-dev style)
    <output_dir>/coco/label_map.yaml                      {1: circle, 2: square, 3: triangle}
    <output_dir>/VOCdevkit/<year>/{JPEGImages,Annotations,ImageSets/Main}
    <output_dir>/VOCdevkit/label_map.json                 {"circle": 1, ...}

VOC class names (a choice): by default the VOC xml uses the shape names and `label_map.json` is
passed to the converter with --label_map_json_path. With --voc_class_names the shapes are named
after the first three VOC classes (1 aeroplane, 2 bicycle, 3 bird) so the converter's built-in
VOC map applies and the seed README's command runs unchanged. VOC boxes are written as
xmin=x, ymin=y, xmax=x+w, ymax=y+h (the same continuous coordinates as the COCO boxes, so the two
layouts describe the same ground truth). ImageSets/Main holds <set>.txt and <class>_<set>.txt for
train, val (every 4th image) and trainval, plus aeroplane_<set>.txt, the list the reference
converter reads. Several --voc_years (e.g. VOC2007,VOC2012) give different images per year (the
seed is offset per year) with VOC-style names ('000001' for 2007, '2012_000001' otherwise).

COCO image ids are 100 + 3 * index, deliberately neither 0-based nor contiguous, so code that
confuses an index with an id fails the round-trip tests. Generated data is never committed.

Exit status: 0 when the sample was written; 1 for a user error (a bad flag, an --output_dir
that cannot be written), printed as one line `sample_dataset.py: error: ...` before anything
is generated.
"""

from __future__ import annotations

import os
import sys

# Runnable as `python dataset/sample_dataset.py` without PYTHONPATH (see create_coco_tfrecord).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from typing import Dict, List, Optional, Sequence, Tuple  # noqa: E402
from xml.sax.saxutils import escape  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import cli  # noqa: E402
import errors  # noqa: E402
import outputs  # noqa: E402
from bounds import Range  # noqa: E402
from dataset import clutter_dataset, label_maps  # noqa: E402

SHAPE_LABEL_MAP: Dict[int, str] = {1: "circle", 2: "square", 3: "triangle"}
VOC_NAMES_FOR_SHAPES: Dict[int, str] = {i: label_maps.VOC_LABEL_MAP[i] for i in SHAPE_LABEL_MAP}
# The kinds of set: 'shapes' (this module's), 'clutter' (clutter_dataset.py: harder).
LABEL_MAPS: Dict[str, Dict[int, str]] = {"shapes": SHAPE_LABEL_MAP,
                                         "clutter": clutter_dataset.CLUTTER_LABEL_MAP}
VOC_SETS = ("train", "val", "trainval")
_EXTENSIONS = {"jpg": ("JPEG", ".jpg"), "png": ("PNG", ".png")}
PROG = "sample_dataset.py"
FORMATS = ("coco", "voc", "both")
# Image sides in pixels: the smallest that the shapes' size range fits into, and the largest
# any preset's input takes (hparams_config.MAX_IMAGE_SIZE).
SIDES = "[16, 4096]"
_VOC_YEAR = re.compile(r"VOC\d{4}")


@dataclasses.dataclass
class SampleOptions:
    """The tool's flags; their defaults are also those of the library functions below."""

    output_dir: str = cli.field("", "Where to write (created; required).")
    num_images: int = cli.field(16, "Images (per VOC year).", bounds="[1, inf)")
    format: str = cli.field("both", "Which layouts to write.", choices=FORMATS)
    seed: int = cli.field(0, "Random seed: the same options give the same bytes.",
                          bounds="[0, inf)")
    image_format: str = cli.field("jpg", "Image file format.", choices=tuple(_EXTENSIONS))
    min_size: int = cli.field(64, "Smallest image side, pixels.", bounds=SIDES)
    max_size: int = cli.field(160, "Largest image side, pixels.", bounds=SIDES)
    voc_years: str = cli.field("VOC2012", "Comma-separated VOC years, e.g. VOC2007,VOC2012 "
                                          "(for the VOC converter's --year=merged).")
    noise: float = cli.field(0.0, "Gaussian pixel noise std in 0..255 units (photo-like JPEG "
                                  "decoding cost); shapes and boxes are unchanged.",
                             bounds="[0, 255]")
    voc_class_names: bool = cli.field(False, "Name class i after VOC class i, so the VOC "
                                             "converter's built-in label map applies.")
    kind: str = cli.field("shapes", "shapes: 3 classes, plain (this module); clutter: 10 "
                                    "classes of shape x texture at many scales, occluded, on "
                                    "textured backgrounds (dataset/clutter_dataset.py).",
                          choices=tuple(LABEL_MAPS))


DEFAULTS = SampleOptions()


def voc_years(opts: SampleOptions) -> List[str]:
    """The years of --voc_years, in order."""
    return [y.strip() for y in opts.voc_years.split(",") if y.strip()]


@dataclasses.dataclass
class SampleObject:
    """One shape: `box` is [x, y, w, h] in absolute pixels (exact mask extent); `area` is the
    mask's pixel count; `polygon` is a COCO segmentation polygon [x1, y1, x2, y2, ...]."""

    class_id: int
    box: Tuple[int, int, int, int]
    area: int
    polygon: List[float]
    difficult: bool = False


@dataclasses.dataclass
class SampleImage:
    image_id: int
    file_name: str
    width: int
    height: int
    objects: List[SampleObject]


@dataclasses.dataclass
class CocoSample:
    """Paths of a written COCO sample and its ground truth."""

    image_dir: str
    instances_file: str
    captions_file: str
    image_info_file: str
    label_map_file: str
    images: List[SampleImage]


@dataclasses.dataclass
class VocSample:
    """Paths of a written VOC tree; `images[year]` holds the ground truth per year."""

    data_dir: str
    label_map_file: Optional[str]
    label_map: Dict[int, str]
    images: Dict[str, List[SampleImage]]


def _color(rng: np.random.Generator, avoid: Optional[Tuple[int, int, int]] = None
           ) -> Tuple[int, int, int]:
    """A random RGB color, far from `avoid` so shapes stand out from the background."""
    while True:
        c = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if avoid is None or sum(abs(a - b) for a, b in zip(c, avoid)) > 200:
            return c  # type: ignore[return-value]


def _shape_mask(class_id: int, x: int, y: int, w: int, h: int, size: Tuple[int, int]
                ) -> Tuple[np.ndarray, List[float]]:
    """(boolean HxW mask, polygon) of a shape filling the pixel block [x, x+w) x [y, y+h)."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if class_id == 1:
        draw.ellipse([x, y, x + w - 1, y + h - 1], fill=255)
        cx, cy, rx, ry = x + w / 2, y + h / 2, w / 2, h / 2
        polygon = []
        for k in range(24):
            t = 2 * math.pi * k / 24
            polygon += [round(cx + rx * math.cos(t), 2), round(cy + ry * math.sin(t), 2)]
    elif class_id == 2:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=255)
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    else:
        draw.polygon([(x + (w - 1) // 2, y), (x, y + h - 1), (x + w - 1, y + h - 1)], fill=255)
        polygon = [x + w / 2, y, x, y + h, x + w, y + h]
    return np.asarray(mask) > 0, [float(v) for v in polygon]


def _clutter_images(num_images: int, seed: int, min_size: int, max_size: int, id_fn, name_fn,
                    ext: str) -> List[Tuple[SampleImage, Image.Image]]:
    """`generate_images` for kind='clutter' (clutter_dataset.py): image i from (seed, i)."""
    out = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        pixels, drawn = clutter_dataset.clutter_image(rng, width, height)
        objects = [SampleObject(class_id, clutter_dataset.box_of(visible), int(visible.sum()),
                                polygon) for class_id, visible, polygon in drawn]
        image_id = int(id_fn(i))
        out.append((SampleImage(image_id, name_fn(image_id) + ext, width, height, objects),
                    Image.fromarray(pixels, "RGB")))
    return out


def _place_shapes(rng: np.random.Generator, pixels: np.ndarray, bg: Tuple[int, int, int],
                  max_objects: int) -> List[SampleObject]:
    """Draw 0..max_objects non-touching shapes into `pixels` (HxWx3, in place) on the solid
    background `bg`; returns their ground truth."""
    height, width = pixels.shape[:2]
    # About one image in ten has no objects, as some COCO images do.
    n_objects = 0 if rng.random() < 0.1 else int(rng.integers(1, max_objects + 1))
    taken: List[Tuple[int, int, int, int]] = []
    objects: List[SampleObject] = []
    lo, hi = max(6, min(width, height) // 8), max(8, min(width, height) // 2)
    for _ in range(n_objects):
        for _attempt in range(20):
            class_id = int(rng.integers(1, 4))
            w = int(rng.integers(lo, hi + 1))
            h = w if class_id in (1, 2) else int(rng.integers(lo, hi + 1))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            # Shapes never touch (2 px gap), so each is fully visible.
            if all(x + w + 2 <= tx or tx + tw + 2 <= x or y + h + 2 <= ty or ty + th + 2 <= y
                   for tx, ty, tw, th in taken):
                break
        else:
            continue
        mask, polygon = _shape_mask(class_id, x, y, w, h, (width, height))
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
               int(ys.max() - ys.min() + 1))
        pixels[mask] = _color(rng, avoid=bg)
        taken.append((x, y, w, h))
        objects.append(SampleObject(class_id, box, int(mask.sum()), polygon,
                                    difficult=bool(rng.random() < 0.15)))
    return objects


def generate_images(num_images: int, seed: int = DEFAULTS.seed,
                    min_size: int = DEFAULTS.min_size, max_size: int = DEFAULTS.max_size,
                    max_objects: int = 4, id_fn=lambda i: 100 + 3 * i,
                    name_fn=lambda image_id: f"{image_id:012d}",
                    image_format: str = DEFAULTS.image_format, noise: float = DEFAULTS.noise,
                    kind: str = DEFAULTS.kind) -> List[Tuple[SampleImage, Image.Image]]:
    """`num_images` (ground truth, RGB image) pairs; the same arguments give the same output.

    `noise` > 0 adds Gaussian pixel noise of that standard deviation (in 0..255 units), which
    makes JPEGs as costly to decode as photos (benchmarks); shapes and boxes are unchanged.
    `kind='clutter'` makes the harder set of clutter_dataset.py (`max_objects` and `noise`
    do not apply to it).
    """
    sides = Range.parse(SIDES)
    if num_images < 0 or sides.problem(min_size) or sides.problem(max_size) or (
            max_size < min_size):
        raise ValueError(f"need num_images >= 0 and min_size <= max_size, both in {SIDES}, got "
                         f"{num_images}, {min_size}, {max_size}.")
    if kind not in LABEL_MAPS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(LABEL_MAPS)}")
    ext = _EXTENSIONS[image_format][1]
    if kind == "clutter":
        return _clutter_images(num_images, seed, min_size, max_size, id_fn, name_fn, ext)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_images):
        width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        bg = _color(rng)
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[:] = bg
        objects = _place_shapes(rng, pixels, bg, max_objects)
        if noise > 0:
            # A separate stream, so the shapes do not depend on the noise setting.
            noisy = np.random.default_rng([seed, i]).normal(0.0, noise, pixels.shape)
            pixels = np.clip(pixels + noisy, 0, 255).astype(np.uint8)
        image_id = int(id_fn(i))
        info = SampleImage(image_id, name_fn(image_id) + ext, width, height, objects)
        out.append((info, Image.fromarray(pixels, "RGB")))
    return out


def _save(image: Image.Image, path: str, image_format: str) -> None:
    fmt = _EXTENSIONS[image_format][0]
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _caption(info: SampleImage, names: Dict[int, str]) -> str:
    if not info.objects:
        return "an empty background"
    return "a picture of " + ", ".join(f"a {names[o.class_id]}" for o in info.objects)


def write_coco(output_dir: str, num_images: int, seed: int = DEFAULTS.seed,
               image_format: str = DEFAULTS.image_format, min_size: int = DEFAULTS.min_size,
               max_size: int = DEFAULTS.max_size, noise: float = DEFAULTS.noise,
               kind: str = DEFAULTS.kind) -> CocoSample:
    """Write the COCO layout under `<output_dir>/coco` (see the module docstring)."""
    names = LABEL_MAPS[kind]
    root = os.path.join(output_dir, "coco")
    image_dir = os.path.join(root, "images")
    ann_dir = os.path.join(root, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    pairs = generate_images(num_images, seed, min_size, max_size, image_format=image_format,
                            noise=noise, kind=kind)
    images, annotations, captions = [], [], []
    for info, image in pairs:
        _save(image, os.path.join(image_dir, info.file_name), image_format)
        images.append({"id": info.image_id, "file_name": info.file_name, "width": info.width,
                       "height": info.height})
        for obj in info.objects:
            annotations.append({"id": len(annotations) + 1, "image_id": info.image_id,
                                "category_id": obj.class_id, "bbox": list(obj.box),
                                "area": obj.area, "iscrowd": 0, "segmentation": [obj.polygon]})
        captions.append({"id": len(captions) + 1, "image_id": info.image_id,
                         "caption": _caption(info, names)})
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in names.items()]
    info_block = {"description": f"VFPN sample {kind} (seed {seed})", "version": "1.0"}
    files = {
        "instances_sample.json": {"info": info_block, "images": images,
                                  "annotations": annotations, "categories": categories},
        "captions_sample.json": {"info": info_block, "images": images,
                                 "annotations": captions},
        "image_info_sample.json": {"info": info_block, "images": images,
                                   "categories": categories},
    }
    for name, data in files.items():
        with open(os.path.join(ann_dir, name), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    label_map_file = os.path.join(root, "label_map.yaml")
    with open(label_map_file, "w", encoding="utf-8") as f:
        yaml.safe_dump(names, f, default_flow_style=False)
    return CocoSample(image_dir, os.path.join(ann_dir, "instances_sample.json"),
                      os.path.join(ann_dir, "captions_sample.json"),
                      os.path.join(ann_dir, "image_info_sample.json"), label_map_file,
                      [info for info, _ in pairs])


def _voc_xml(info: SampleImage, year: str, names: Dict[int, str]) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(names[o.class_id])}</name>\n"
        f"\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{int(o.difficult)}</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{o.box[0]}</xmin>\n\t\t\t<ymin>{o.box[1]}</ymin>\n"
        f"\t\t\t<xmax>{o.box[0] + o.box[2]}</xmax>\n\t\t\t<ymax>{o.box[1] + o.box[3]}</ymax>\n"
        f"\t\t</bndbox>\n\t</object>\n" for o in info.objects)
    return (f"<annotation>\n\t<folder>{year}</folder>\n"
            f"\t<filename>{escape(info.file_name)}</filename>\n"
            f"\t<source><database>VFPN sample shapes</database></source>\n"
            f"\t<size>\n\t\t<width>{info.width}</width>\n\t\t<height>{info.height}</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}"
            f"</annotation>\n")


def write_voc(output_dir: str, num_images: int, seed: int = DEFAULTS.seed,
              years: Sequence[str] = voc_years(DEFAULTS),
              image_format: str = DEFAULTS.image_format,
              voc_class_names: bool = DEFAULTS.voc_class_names,
              min_size: int = DEFAULTS.min_size, max_size: int = DEFAULTS.max_size,
              noise: float = DEFAULTS.noise, kind: str = DEFAULTS.kind) -> VocSample:
    """Write `<output_dir>/VOCdevkit/<year>/...` for each year (see the module docstring).
    With `voc_class_names`, class i is named after VOC class i."""
    names = ({i: label_maps.VOC_LABEL_MAP[i] for i in LABEL_MAPS[kind]} if voc_class_names
             else LABEL_MAPS[kind])
    data_dir = os.path.join(output_dir, "VOCdevkit")
    all_images: Dict[str, List[SampleImage]] = {}
    for k, year in enumerate(years):
        name_fn = ((lambda image_id: f"{image_id:06d}") if year == "VOC2007"
                   else (lambda image_id, y=year: f"{y[3:]}_{image_id:06d}"))
        pairs = generate_images(num_images, seed + 1000 * k, min_size, max_size,
                                id_fn=lambda i: i + 1, name_fn=name_fn,
                                image_format=image_format, noise=noise, kind=kind)
        _write_voc_year(os.path.join(data_dir, year), year, pairs, names, image_format)
        all_images[year] = [info for info, _ in pairs]
    label_map_file = None
    if not voc_class_names:
        label_map_file = os.path.join(data_dir, "label_map.json")
        with open(label_map_file, "w", encoding="utf-8") as f:
            json.dump({n: i for i, n in names.items()}, f, indent=1)
    return VocSample(data_dir, label_map_file, dict(names), all_images)


def _write_voc_year(base: str, year: str, pairs: List[Tuple[SampleImage, Image.Image]],
                    names: Dict[int, str], image_format: str) -> None:
    """One year's JPEGImages, Annotations and ImageSets/Main under `base`; every 4th image
    is in val, the others in train."""
    image_dir, ann_dir = os.path.join(base, "JPEGImages"), os.path.join(base, "Annotations")
    main_dir = os.path.join(base, "ImageSets", "Main")
    for d in (image_dir, ann_dir, main_dir):
        os.makedirs(d, exist_ok=True)
    splits: Dict[str, List[SampleImage]] = {"train": [], "val": []}
    for i, (info, image) in enumerate(pairs):
        _save(image, os.path.join(image_dir, info.file_name), image_format)
        stem = os.path.splitext(info.file_name)[0]
        with open(os.path.join(ann_dir, stem + ".xml"), "w", encoding="utf-8") as f:
            f.write(_voc_xml(info, year, names))
        splits["val" if i % 4 == 3 else "train"].append(info)
    splits["trainval"] = [info for info, _ in pairs]
    class_files = sorted(set(names.values()) | {"aeroplane"})
    for set_name in VOC_SETS:
        stems = [os.path.splitext(i.file_name)[0] for i in splits[set_name]]
        with open(os.path.join(main_dir, f"{set_name}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(s + "\n" for s in stems))
        for cls in class_files:
            with open(os.path.join(main_dir, f"{cls}_{set_name}.txt"), "w",
                      encoding="utf-8") as f:
                for info in splits[set_name]:
                    present = any(names[o.class_id] == cls for o in info.objects)
                    f.write(f"{os.path.splitext(info.file_name)[0]} "
                            f"{1 if present else -1:2d}\n")


def check_options(opts: SampleOptions) -> None:
    """Flag-only checks, creating nothing; each error names the flag."""
    if not opts.output_dir:
        raise errors.UsageError("--output_dir is required: the directory to write the sample "
                                "into (created).")
    cli.check_bounds(opts)
    if opts.max_size < opts.min_size:
        raise errors.UsageError(f"--max_size={opts.max_size} is smaller than --min_size="
                                f"{opts.min_size}; give max_size >= min_size.")
    if opts.format != "coco":
        years = voc_years(opts)
        if not years:
            raise errors.UsageError("--voc_years is empty; give e.g. --voc_years=VOC2012 (or "
                                    "--format=coco).")
        bad = [y for y in years if not _VOC_YEAR.fullmatch(y)]
        if bad:
            raise errors.UsageError(f"--voc_years: '{bad[0]}' is not a VOC year; write VOC and "
                                    f"four digits, e.g. --voc_years=VOC2007,VOC2012.")
        if len(set(years)) < len(years):
            raise errors.UsageError(f"--voc_years={opts.voc_years} names a year twice; name "
                                    f"each once.")
    outputs.check_locations([outputs.Planned("output_dir", opts.output_dir, (),
                                             directory=True)])


def write_sample(opts: SampleOptions) -> Tuple[Optional[CocoSample], Optional[VocSample]]:
    """The layouts of --format under --output_dir: (COCO sample or None, VOC sample or None).

    Raises `errors.UsageError` for a bad flag and `errors.OutputError` for an --output_dir that
    cannot be written, before anything is generated.
    """
    check_options(opts)
    coco = voc = None
    if opts.format in ("coco", "both"):
        coco = write_coco(opts.output_dir, opts.num_images, opts.seed, opts.image_format,
                          opts.min_size, opts.max_size, opts.noise, opts.kind)
    if opts.format in ("voc", "both"):
        voc = write_voc(opts.output_dir, opts.num_images, opts.seed, voc_years(opts),
                        opts.image_format, opts.voc_class_names, opts.min_size, opts.max_size,
                        opts.noise, opts.kind)
    return coco, voc


def run(opts: SampleOptions) -> int:
    """Write the sample and say where it is; exit status 0."""
    coco, voc = write_sample(opts)
    if coco:
        print(f"COCO: {len(coco.images)} images in {coco.image_dir}, boxes in "
              f"{coco.instances_file}")
    if voc:
        extra = (f" (pass --label_map_json_path={voc.label_map_file})"
                 if voc.label_map_file else "")
        print(f"VOC: {', '.join(voc.images)} under {voc.data_dir}{extra}")
    return 0


if __name__ == "__main__":
    cli.run_tool(PROG, run, SampleOptions)

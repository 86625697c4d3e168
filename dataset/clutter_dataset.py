"""A harder synthetic detection set: ten classes of shape x texture at many scales, in clutter.

Where the sample set (sample_dataset.py) has 0..4 solid shapes of one narrow size range on a
plain background, each image here has:

* a textured background: low-frequency colour noise, fine grain and, in some images, faint
  stripes or a faint checkerboard;
* 4..14 objects of ten classes, five shapes (circle, square, triangle, diamond, cross) each
  either solid or striped (stripes of two colours at a random angle), so a class is told apart
  by its outline *and* its texture;
* a COCO-like spread of sizes: the longer side is log-uniform from 16 px to 45% of the image's
  shorter side, so at a 256-px training size (images of 320..480 px) about half the objects are
  under 32 px and a few percent are over 96 px; aspect ratios from 0.6 to 1.6;
* partial occlusion: objects may overlap earlier ones, as long as every object keeps at least
  60% of its own pixels visible; boxes and areas are those of the visible pixels (as COCO's
  boxes follow the visible segmentation);
* unlabelled distractors: outlines of the same five shapes (hollow, so their texture differs),
  thick line segments and small blobs.

Boxes are exact (the visible mask's pixel extent, continuous coordinates as in the sample set).
Images are independent of one another: image i depends only on (seed, i), so a set of N images
is the first N of any larger set with the same seed. Written through sample_dataset's COCO and
VOC writers:

    python dataset/sample_dataset.py --kind=clutter --output_dir=/tmp/clutter \
        --num_images=512 --format=coco --min_size=320 --max_size=480
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
TEXTURES = ("solid", "striped")
CLUTTER_LABEL_MAP: Dict[int, str] = {
    1 + t * len(SHAPES) + s: f"{texture}_{shape}"
    for t, texture in enumerate(TEXTURES) for s, shape in enumerate(SHAPES)}
MIN_VISIBLE = 0.6  # fraction of an object's own pixels that must stay visible
# The smallest object's longer side, pixels: about 10 px at a 256-px training size, where a
# stripe period of 4 px is still visible.
SMALLEST = 16


def _outline(shape: str, x: float, y: float, w: float, h: float) -> List[Tuple[float, float]]:
    """The polygon of `shape` filling the box [x, x+w] x [y, y+h] (a circle: 32 points)."""
    if shape == "circle":
        cx, cy, rx, ry = x + w / 2, y + h / 2, w / 2, h / 2
        return [(cx + rx * math.cos(2 * math.pi * k / 32), cy + ry * math.sin(2 * math.pi * k / 32))
                for k in range(32)]
    if shape == "square":
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if shape == "triangle":
        return [(x + w / 2, y), (x + w, y + h), (x, y + h)]
    if shape == "diamond":
        return [(x + w / 2, y), (x + w, y + h / 2), (x + w / 2, y + h), (x, y + h / 2)]
    # cross: a plus sign whose arms are a third of the box wide
    a, b, c, d = x + w / 3, x + 2 * w / 3, y + h / 3, y + 2 * h / 3
    return [(a, y), (b, y), (b, c), (x + w, c), (x + w, d), (b, d), (b, y + h), (a, y + h),
            (a, d), (x, d), (x, c), (a, c)]


def _mask(polygon: List[Tuple[float, float]], size: Tuple[int, int], width: int = 0
          ) -> np.ndarray:
    """Boolean HxW mask of the filled polygon (or of its outline `width` px wide)."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    if width:
        draw.line(polygon + polygon[:1], fill=255, width=width, joint="curve")
    else:
        draw.polygon(polygon, fill=255)
    return np.asarray(image) > 0


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured float HxWx3 background in 0..255."""
    grid = rng.uniform(30, 225, size=(rng.integers(3, 7), rng.integers(3, 7), 3))
    low = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((width, height),
                                                                   Image.BICUBIC), np.float32)
    pattern = rng.random()
    if pattern < 0.25:  # faint stripes
        period, angle = rng.uniform(6, 20), rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        low += (np.sin(2 * math.pi * phase) * rng.uniform(8, 20))[..., None]
    elif pattern < 0.4:  # faint checkerboard
        cell = int(rng.integers(8, 24))
        yy, xx = np.mgrid[0:height, 0:width]
        low += (((yy // cell + xx // cell) % 2) * 2 - 1)[..., None] * rng.uniform(8, 20)
    grain = rng.normal(0, rng.uniform(4, 14), size=(height, width, 3))
    return np.clip(low + grain, 0, 255)


def _color_far_from(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A random RGB colour whose channels differ from `colour`'s by more than 150 in total."""
    for _ in range(50):
        c = rng.integers(0, 256, size=3).astype(np.float32)
        if np.abs(c - colour).sum() > 150:
            return c
    return 255.0 - colour


def _paint(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator, striped: bool,
           size: float) -> None:
    """Fill `mask` with one colour (far from the background under it) or with stripes of two
    colours, period about a quarter of the object's size (at least 4 px)."""
    under = pixels[mask].mean(axis=0)
    first = _color_far_from(rng, under)
    if not striped:
        pixels[mask] = first
        return
    second = _color_far_from(rng, first)
    period, angle = max(4.0, size / 4), rng.uniform(0, math.pi)
    ys, xs = np.nonzero(mask)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
    band = (phase % 1.0) < 0.5
    pixels[ys[band], xs[band]] = first
    pixels[ys[~band], xs[~band]] = second


def _distractors(rng: np.random.Generator, pixels: np.ndarray) -> None:
    """Unlabelled clutter: hollow shape outlines, thick line segments and small blobs."""
    height, width = pixels.shape[:2]
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.random()
        side = float(np.exp(rng.uniform(np.log(10), np.log(0.3 * min(width, height)))))
        x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        if kind < 0.45:
            polygon = _outline(SHAPES[int(rng.integers(len(SHAPES)))], x, y, side, side)
            mask = _mask(polygon, (width, height), width=int(max(1, side // 12)))
        elif kind < 0.8:
            end = (x + rng.uniform(-side, side), y + rng.uniform(-side, side))
            image = Image.new("L", (width, height), 0)
            ImageDraw.Draw(image).line([(x, y), end], fill=255, width=int(rng.integers(2, 6)))
            mask = np.asarray(image) > 0
        else:
            r = rng.uniform(2, 6)
            image = Image.new("L", (width, height), 0)
            ImageDraw.Draw(image).ellipse([x, y, x + 2 * r, y + 2 * r * rng.uniform(0.5, 1.5)],
                                          fill=255)
            mask = np.asarray(image) > 0
        if mask.any():
            pixels[mask] = _color_far_from(rng, pixels[mask].mean(axis=0))


def clutter_image(rng: np.random.Generator, width: int, height: int
                  ) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray, List[float]]]]:
    """(HxWx3 uint8 pixels, [(class id, visible mask, polygon)]) of one image."""
    pixels = _background(rng, height, width)
    _distractors(rng, pixels)
    objects: List[Tuple[int, np.ndarray, List[float]]] = []
    full: List[np.ndarray] = []  # each object's own (unoccluded) mask
    largest = 0.45 * min(width, height)
    for _ in range(int(rng.integers(4, 15))):
        for _attempt in range(10):
            class_id = int(rng.integers(1, len(CLUTTER_LABEL_MAP) + 1))
            shape = SHAPES[(class_id - 1) % len(SHAPES)]
            side = float(np.exp(rng.uniform(np.log(SMALLEST), np.log(largest))))
            ratio = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
            w, h = (side, side / ratio) if ratio >= 1 else (side * ratio, side)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            polygon = _outline(shape, x, y, w, h)
            mask = _mask(polygon, (width, height))
            if mask.sum() < 20:
                continue
            # Every earlier object keeps MIN_VISIBLE of its own pixels.
            if all((visible & ~mask).sum() >= MIN_VISIBLE * own.sum()
                   for (_, visible, _), own in zip(objects, full)):
                break
        else:
            continue
        _paint(pixels, mask, rng, striped=class_id > len(SHAPES), size=max(w, h))
        objects = [(c, visible & ~mask, p) for c, visible, p in objects]
        objects.append((class_id, mask, [float(v) for xy in polygon for v in xy]))
        full.append(mask)
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def box_of(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """[x, y, w, h] of a mask's pixel extent (continuous coordinates), None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1))

"""Images in and out: read image files for inference, expand `--input_image` specs, draw
detections with class names, write the result, and say whether a window can be shown.

`read_image` gives uint8 RGB whatever the file holds, upright as viewers show it: a photo's
EXIF orientation is applied (`dataset.validation.upright`, as the converters do), grayscale is
expanded, alpha and palettes are dropped, and 16-bit images are scaled to 8 bits the way the
dataset converters do (`dataset.validation.to_rgb`), so a 16-bit PNG is not clipped to white.
Errors name the file (`ImageReadError`, a `errors.DataError`). `write_image` writes atomically
(outputs.py); where pictures may go and what they are called is decided there too.

Labels come from a {class id: name} label map (see `dataset.label_maps.for_config`); a class id
it lacks is drawn as 'class <id>'.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

import errors
import outputs
from dataset import validation
from detections import Detections

# Box colours by class id (RGB).
COLORS = [(255, 56, 56), (56, 56, 255), (56, 255, 56), (255, 157, 151), (255, 178, 29),
          (207, 210, 49), (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52),
          (0, 212, 187), (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255),
          (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200)]


class ImageReadError(errors.DataError):
    """An input image that is missing or cannot be decoded; the message names the file."""


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB [h, w, 3] (see the module docstring for conversions)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageReadError(f"'{path}': no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated files fail here
            rgb, _ = validation.to_rgb(validation.upright(image)[0])
            return np.array(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"'{path}': cannot decode it as an image ({e})") from None


def expand_image_inputs(spec: str) -> Tuple[List[str], List[str]]:
    """Files named by an image spec: comma-separated paths and/or glob patterns.

    Returns (paths in order, problems): a pattern that matches nothing is a problem named by
    its pattern; a plain path is kept as is (a missing one fails by name when read).
    """
    paths, problems = [], []
    for piece in (p.strip() for p in (spec or "").split(",")):
        if not piece:
            continue
        if glob.has_magic(piece):
            matches = sorted(p for p in glob.glob(piece) if os.path.isfile(p))
            if matches:
                paths.extend(matches)
            else:
                problems.append(f"'{piece}': no file matches this pattern")
        else:
            paths.append(piece)
    return paths, problems


def class_name(label_map: Dict[int, str], class_id: int) -> str:
    """The label of `class_id`: its name in `label_map`, else 'class <id>'."""
    return label_map.get(int(class_id), f"class {int(class_id)}")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def draw_detections(image: np.ndarray, detections: Detections, label_map: Dict[int, str],
                    score_thresh: float = 0.0, max_output_size: Optional[int] = None,
                    line_thickness: Optional[int] = None) -> np.ndarray:
    """A copy of `image` (uint8 RGB [h, w, 3]) with labelled boxes ('name: 87%').

    Draws the detections with score > score_thresh, at most max_output_size, best first.
    """
    from PIL import Image, ImageDraw

    det = detections.filter(score_thresh, max_output_size)
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    h, w = image.shape[:2]
    thickness = line_thickness or max(2, round(0.003 * max(h, w)))
    font = _font(max(8, round(0.018 * max(h, w))))
    for box, score, cls in zip(det.boxes, det.scores, det.classes):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        color = COLORS[int(cls) % len(COLORS)]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=thickness)
        text = f"{class_name(label_map, cls)}: {100 * float(score):.0f}%"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = ymin - th - 4 if ymin - th - 4 >= 0 else ymin
        draw.rectangle([xmin, ty, xmin + tw + 4, ty + th + 4], fill=color)
        draw.text((xmin + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def write_image(image: np.ndarray, path: str) -> str:
    """Write uint8 RGB `image` to `path` atomically (format from the suffix; JPEG quality 95).
    Whether `path` may be replaced is decided before (outputs.check_plan)."""
    from PIL import Image

    try:
        with outputs.atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, quality=95)
    except OSError as e:
        raise errors.OutputError(f"cannot write '{path}': {e}") from None
    return path


def display_available() -> Tuple[bool, str]:
    """Whether cv2.imshow can open a window here, and why not."""
    import cv2

    match = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if match and match.group(1).upper() == "NONE":
        return False, "OpenCV has no GUI support here (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                 os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY is not set)"
    return True, ""

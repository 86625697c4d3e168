"""Checks shared by the converters and `validate_tfrecord.py`, and the summary they print.

What is checked: degenerate boxes (w <= 0 or h <= 0), boxes
outside the image beyond `BOX_TOLERANCE_PX`, class ids outside 1..num_classes, per-object lists of
different lengths, more instances than `max_instances_per_image`, missing/unreadable images,
annotation sizes that disagree with the image, duplicate or non-numeric image ids.

Non-RGB images (grayscale, CMYK, RGBA, palette, 16-bit) are not errors: they are converted to RGB
and re-encoded as JPEG, and the conversion is counted. A photo with an EXIF orientation is turned
upright (`upright`), as viewers and annotation tools show it, and re-encoded: its boxes and size
are those of the upright picture.

Policy (`--on_error`): 'skip' skips the bad annotation (or the whole image for an image-level
problem), counts it in the `Summary` and keeps going; 'fail' raises `DataError` with one line that
names the file, the annotation/image id, the problem and what to do.

Box conventions: COCO json boxes are [x, y, width, height] in absolute pixels; VOC xml boxes are
(xmin, ymin, xmax, ymax) in absolute pixels; records store ymin/xmin/ymax/xmax normalized to
[0, 1] by the image height/width.
"""

from __future__ import annotations

import dataclasses
import io
import math
import numbers
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

import bounds
import errors
from dataset import tfrecord_util

ON_ERROR_CHOICES = ("skip", "fail")
DEFAULT_MAX_INSTANCES = bounds.DEFAULT_MAX_INSTANCES  # the hparam's default too
# Annotation tools often put a box edge a fraction of a pixel past the border (rounding); such
# boxes are clipped to the image. Anything further out is an error.
BOX_TOLERANCE_PX = 1.0
ANNOTATION, IMAGE = "annotation", "image"
# The EXIF tag saying how the camera was held: 1 = pixels as stored, 2..8 = mirrored or turned.
EXIF_ORIENTATION = 0x0112

# reason -> (what a skip drops, what to do about it)
REASONS: Dict[str, Tuple[str, str]] = {
    "degenerate_box": (ANNOTATION, "fix or remove the box; width and height must be > 0"),
    "box_out_of_image": (ANNOTATION, "fix the box so it lies inside the image"),
    "class_id_out_of_range": (ANNOTATION, "use class ids 1..num_classes, or raise num_classes "
                                          "(--num_classes / hparam num_classes)"),
    "unknown_class": (ANNOTATION, "add the class to the label map (--label_map_json_path) or fix "
                                  "the class name in the xml"),
    "unknown_category": (ANNOTATION, "add the category to the json's 'categories' list or fix the "
                                     "annotation's category_id"),
    "label_not_in_label_map": (ANNOTATION, "check the records against the label map they were "
                                           "made with (the label_map hparam)"),
    "malformed_annotation": (ANNOTATION, "give the annotation a box of 4 finite numbers"),
    "bad_segmentation": (ANNOTATION, "fix the segmentation polygon/RLE, or convert without "
                                     "--include_masks"),
    "annotation_image_not_listed": (ANNOTATION, "fix its image_id, or pass the image list that "
                                                "contains it (--image_info_file)"),
    "too_many_instances": (IMAGE, "raise --max_instances_per_image (and the hparam "
                                  "max_instances_per_image to match) or split the image's "
                                  "annotations"),
    "missing_image": (IMAGE, "check --image_dir / --data_dir and the file name in the "
                             "annotations"),
    "unreadable_image": (IMAGE, "replace or re-save the image file, or remove it from the "
                                "annotations"),
    "image_size_mismatch": (IMAGE, "fix width/height in the annotations so they match the image "
                                   "file (boxes are relative to them)"),
    "duplicate_image_id": (IMAGE, "give every image its own id"),
    "bad_image_id": (IMAGE, f"use integer image ids in 0..{tfrecord_util.MAX_SOURCE_ID} (they "
                            f"become the records' image/source_id)"),
    "missing_annotation_file": (IMAGE, "add the annotation xml or remove the image from the "
                                       "ImageSets list"),
    "bad_annotation_file": (IMAGE, "fix the annotation xml"),
    # Only found in existing records (validate_tfrecord.py).
    "box_label_count_mismatch": (IMAGE, "re-create the record: every per-object list needs one "
                                        "entry per box"),
    "missing_key": (IMAGE, "re-create the record with dataset/create_*_tfrecord.py"),
    "bad_source_id": (IMAGE, f"write image/source_id as an integer in "
                             f"0..{tfrecord_util.MAX_SOURCE_ID} (the json image id)"),
    "corrupt_record": (IMAGE, "re-create the TFRecord file; it is truncated or corrupt"),
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad item: `file` and `item` say where (e.g. 'annotation id 7 (image id 3)')."""

    reason: str
    file: str
    item: str
    detail: str

    @property
    def level(self) -> str:
        return REASONS[self.reason][0]

    @property
    def hint(self) -> str:
        return REASONS[self.reason][1]

    @property
    def where(self) -> str:
        return f"{self.file}: {self.item}"

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} [{self.reason}]"

    def fail_message(self) -> str:
        return (f"{self}. To fix: {self.hint}; or rerun with --on_error=skip to skip and count "
                f"such items.")


class Summary:
    """Counts of what a conversion (or validation) wrote, skipped and converted, per reason,
    with the first few examples of each."""

    def __init__(self, title: str = "summary", max_examples: int = 3):
        self.title = title
        self.max_examples = max_examples
        self.images_seen = 0
        self.images_written = 0
        self.boxes_written = 0
        self.boxes_in_skipped_images = 0
        self.problems: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}
        self.first_message: Dict[str, str] = {}
        self.notes: Counter = Counter()
        self.note_examples: Dict[str, List[str]] = {}
        self.output_files: List[str] = []
        self.json_file: Optional[str] = None  # ground-truth json written (VOC converter)
        self.warnings: List[str] = []

    def add_problem(self, problem: Problem) -> None:
        self.problems[problem.reason] += 1
        self.first_message.setdefault(problem.reason, str(problem))
        ex = self.examples.setdefault(problem.reason, [])
        if len(ex) < self.max_examples:
            ex.append(problem.where)

    def add_note(self, note: str, where: str, count: int = 1) -> None:
        """Count a non-error event (an image converted to RGB, a box clipped, ...)."""
        self.notes[note] += count
        ex = self.note_examples.setdefault(note, [])
        if len(ex) < self.max_examples:
            ex.append(where)

    def _count(self, level: str) -> int:
        return sum(n for r, n in self.problems.items() if REASONS[r][0] == level)

    @property
    def images_skipped(self) -> int:
        return self._count(IMAGE)

    @property
    def boxes_skipped(self) -> int:
        return self._count(ANNOTATION)

    @property
    def num_problems(self) -> int:
        return sum(self.problems.values())

    def problem_messages(self) -> List[str]:
        return list(self.first_message.values())

    def format(self) -> str:
        """A multi-line human-readable report."""
        lines = [f"== {self.title} ==",
                 f"images seen: {self.images_seen}, written: {self.images_written}, "
                 f"skipped: {self.images_skipped}",
                 f"boxes written: {self.boxes_written}, skipped: {self.boxes_skipped}, in skipped "
                 f"images: {self.boxes_in_skipped_images}"]
        if self.problems:
            lines.append("skipped, by reason:")
            for reason, n in sorted(self.problems.items()):
                lines.append(f"  {reason} ({REASONS[reason][0]}): {n}; e.g. "
                             f"{'; '.join(self.examples[reason])}")
                lines.append(f"    first: {self.first_message[reason]}")
                lines.append(f"    to fix: {REASONS[reason][1]}")
        if self.notes:
            lines.append("converted / adjusted (not errors):")
            for note, n in sorted(self.notes.items()):
                lines.append(f"  {note}: {n}; e.g. {'; '.join(self.note_examples[note])}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.output_files:
            lines.append(f"output: {len(self.output_files)} file(s), first "
                         f"{self.output_files[0]}")
        if self.json_file:
            lines.append(f"ground-truth json: {self.json_file}")
        return "\n".join(lines)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "images_seen": self.images_seen, "images_written": self.images_written,
            "images_skipped": self.images_skipped, "boxes_written": self.boxes_written,
            "boxes_skipped": self.boxes_skipped,
            "boxes_in_skipped_images": self.boxes_in_skipped_images,
            "problems": dict(self.problems), "examples": dict(self.examples),
            "notes": dict(self.notes), "output_files": list(self.output_files),
            "json_file": self.json_file,
        }


class ProblemHandler:
    """Applies the --on_error policy: 'skip' counts the problem, 'fail' raises
    `errors.DataError`."""

    def __init__(self, on_error: str, summary: Summary):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"--on_error must be one of {ON_ERROR_CHOICES}, got '{on_error}'.")
        self.on_error = on_error
        self.summary = summary

    def __call__(self, problem: Problem) -> None:
        if self.on_error == "fail":
            raise errors.DataError(problem.fail_message())
        self.summary.add_problem(problem)


def check_common_options(opts: Any) -> None:
    """The flags both converters share: --on_error and --num_threads; errors name the flag."""
    if opts.on_error not in ON_ERROR_CHOICES:
        raise errors.UsageError(f"--on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got "
                                f"'{opts.on_error}'.")
    if opts.num_threads is not None and opts.num_threads < 0:
        raise errors.UsageError(f"--num_threads must be >= 0 (0 or unset: one per CPU), got "
                                f"{opts.num_threads}.")


def require_written(summary: Summary) -> None:
    """Raise `errors.DataError` when a conversion wrote no record, saying why in one line (the
    summary printed before it lists examples of each reason)."""
    if summary.images_written:
        return
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.problems.items()))
    raise errors.DataError(f"no records were written: all {summary.images_seen} image(s) were "
                           f"skipped ({reasons or 'no reason recorded'}); the summary above "
                           f"shows examples and what to do.")


# -------------------------------------------------------------------------------------------------
# Ids
# -------------------------------------------------------------------------------------------------
def check_image_id(image_id: Any) -> Optional[str]:
    """None if a json image id (an int, or its digits as a string) can become a record's
    image/source_id (`tfrecord_util.source_id_problem`), else what is wrong."""
    if isinstance(image_id, numbers.Integral) and not isinstance(image_id, bool):
        image_id = int(image_id)  # numpy ints too
    problem = tfrecord_util.source_id_problem(image_id)
    return f"image id {problem}" if problem else None


class IdRegistry:
    """Remembers where each id was first seen, to report duplicates with both places."""

    def __init__(self):
        self._seen: Dict[Any, str] = {}

    def check(self, key: Any, where: str) -> Optional[str]:
        """None the first time `key` is seen; afterwards a message naming the first place."""
        if key in self._seen:
            return f"duplicate image id {key!r} (first seen at {self._seen[key]})"
        self._seen[key] = where
        return None


# -------------------------------------------------------------------------------------------------
# Boxes and classes
# -------------------------------------------------------------------------------------------------
def _finite_numbers(values: Sequence[Any], n: int) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == n and
            all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                for v in values))


@dataclasses.dataclass
class BoxCheck:
    """Result of a box check: `reason`/`detail` are set when the box is bad; otherwise `box` is
    (xmin, ymin, xmax, ymax) in absolute pixels, clipped to the image, and `clipped` says whether
    clipping moved an edge (by at most the tolerance)."""

    reason: Optional[str] = None
    detail: str = ""
    box: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    clipped: bool = False


def check_box_xyxy(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int,
                   tolerance: float = BOX_TOLERANCE_PX) -> BoxCheck:
    """Check an absolute-pixel box (xmin, ymin, xmax, ymax) against a width x height image."""
    if not _finite_numbers([xmin, ymin, xmax, ymax], 4):
        return BoxCheck("malformed_annotation", f"box {[xmin, ymin, xmax, ymax]} is not 4 finite "
                                                f"numbers")
    w, h = xmax - xmin, ymax - ymin
    desc = f"box [xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}] (w={w:g}, h={h:g})"
    if w <= 0 or h <= 0:
        return BoxCheck("degenerate_box", f"{desc} has zero or negative size")
    if (xmin < -tolerance or ymin < -tolerance or xmax > width + tolerance or
            ymax > height + tolerance):
        return BoxCheck("box_out_of_image", f"{desc} extends outside the {width}x{height} (WxH) "
                                            f"image by more than {tolerance:g} px")
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
               min(max(xmax, 0.0), width), min(max(ymax, 0.0), height))
    if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
        return BoxCheck("degenerate_box", f"{desc} has zero size inside the {width}x{height} image")
    return BoxCheck(box=clipped, clipped=clipped != (xmin, ymin, xmax, ymax))


def check_box_xywh(bbox: Any, width: int, height: int,
                   tolerance: float = BOX_TOLERANCE_PX) -> BoxCheck:
    """Check a COCO box [x, y, w, h] (absolute pixels) against a width x height image."""
    if not _finite_numbers(bbox, 4):
        return BoxCheck("malformed_annotation", f"bbox {bbox!r} is not [x, y, w, h] of 4 finite "
                                                f"numbers")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return BoxCheck("degenerate_box", f"bbox [x={x:g}, y={y:g}, w={w:g}, h={h:g}] has zero "
                                          f"or negative size")
    return check_box_xyxy(x, y, x + w, y + h, width, height, tolerance)


def check_class_id(class_id: Any, num_classes: int) -> Optional[str]:
    """None if `class_id` is an int in 1..num_classes, else what is wrong."""
    if isinstance(class_id, bool) or not isinstance(class_id, numbers.Integral):
        return f"class id {class_id!r} is not an integer"
    if bounds.class_ids(num_classes).problem(int(class_id)):
        return (f"class id {class_id} is outside 1..num_classes={num_classes} "
                f"(0 is not a class; ids run 1..num_classes)")
    return None


def check_instance_count(count: int, max_instances: int) -> Optional[str]:
    if count > max_instances:
        return (f"{count} instances, more than max_instances_per_image={max_instances} (the "
                f"dataloader pads/truncates to that many; extra boxes break training)")
    return None


# -------------------------------------------------------------------------------------------------
# Images
# -------------------------------------------------------------------------------------------------
class ImageLoadError(Exception):
    """An image that cannot be used; `reason` is 'missing_image' or 'unreadable_image'."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class LoadedImage:
    """An image ready for a record: `encoded` is RGB JPEG bytes of `width` x `height` pixels.

    `source_format` is what the file was (e.g. 'JPEG', 'PNG'); `converted_from` is the original
    color mode when it was not RGB (e.g. 'L', 'CMYK', 'RGBA'), else None; `reencoded` says the
    JPEG was made here rather than copied from the file; `exif_orientation` is the EXIF
    orientation (2..8) that was applied, else None (width and height are the upright ones).
    """

    encoded: bytes
    width: int
    height: int
    source_format: str
    converted_from: Optional[str]
    reencoded: bool
    exif_orientation: Optional[int] = None


def upright(image: Image.Image) -> Tuple[Image.Image, Optional[int]]:
    """(the image as viewers show it, the EXIF orientation applied, or None if none was).

    Cameras store a portrait photo's pixels sideways and record an EXIF orientation; viewers
    and annotation tools (COCO's among them) show the picture turned, and boxes are drawn on
    that view. `tf.io.decode_image` ignores the tag, so every reader turns the pixels here.
    """
    orientation = image.getexif().get(EXIF_ORIENTATION)
    if orientation not in range(2, 9):
        return image, None
    return ImageOps.exif_transpose(image), int(orientation)


def to_rgb(image: Image.Image) -> Tuple[Image.Image, Optional[str]]:
    """(RGB image, original mode or None if it was RGB already).

    Alpha is dropped (as `tf.image.decode_png(channels=3)` would); palette images are expanded;
    16/32-bit grayscale is scaled to 8 bits.
    """
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0  # 16-bit range onto 8-bit
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB"), mode


def shown_as(image: LoadedImage) -> str:
    """' as shown (EXIF orientation N applied)' for a turned photo, '' otherwise: a size
    message must say that the size is the upright one, which annotations describe."""
    if not image.exif_orientation:
        return ""
    return f" as shown (EXIF orientation {image.exif_orientation} applied)"


def load_image_as_jpeg(path: str) -> LoadedImage:
    """Read, fully decode, turn upright and (if needed) convert an image file; raises
    `ImageLoadError`.

    An upright RGB JPEG is kept byte for byte (no re-compression); anything else (PNG, other
    formats, non-RGB JPEG such as grayscale or CMYK, or a photo with an EXIF orientation) is
    converted to upright RGB and re-encoded as JPEG.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageLoadError("missing_image", "image file not found") from None
    except OSError as e:
        raise ImageLoadError("unreadable_image", f"cannot read the image file ({e})") from None
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format or "unknown"
        image.load()  # decode every pixel: truncated/corrupt files fail here, not in training
        image, orientation = upright(image)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise ImageLoadError("unreadable_image",
                             f"cannot decode the image ({type(e).__name__}: {e})") from None
    width, height = image.size
    if fmt == "JPEG" and image.mode == "RGB" and orientation is None:
        return LoadedImage(data, width, height, fmt, None, False)
    try:
        rgb, converted_from = to_rgb(image)
    except (ValueError, OSError) as e:
        raise ImageLoadError("unreadable_image", f"cannot convert color mode {image.mode} to "
                                                 f"RGB ({e})") from None
    return LoadedImage(tfrecord_util.encode_jpeg(rgb), width, height, fmt, converted_from, True,
                       orientation)


def image_notes(image: LoadedImage, where: str) -> List[Tuple[str, str]]:
    """(note, where) of what loading changed: a color conversion, a re-encoding to JPEG, an
    EXIF orientation applied. Not errors; the converters count them."""
    notes = []
    if image.converted_from:
        notes.append((f"converted_to_rgb_from_{image.converted_from}", where))
    if image.reencoded and image.source_format != "JPEG":
        notes.append((f"reencoded_{image.source_format.lower()}_to_jpeg", where))
    if image.exif_orientation:
        notes.append(("exif_orientation_applied", where))
    return notes


# -------------------------------------------------------------------------------------------------
# Records
# -------------------------------------------------------------------------------------------------
REQUIRED_RECORD_KEYS = ("image/encoded", "image/source_id", "image/height", "image/width")


Errors = List[Tuple[str, str]]  # (reason, detail) pairs


def _check_keys(values: Mapping[str, List[Any]], require_source_id: bool) -> Errors:
    """Required keys present and not empty; a source id given follows the one rule."""
    errors: Errors = []
    required = [k for k in REQUIRED_RECORD_KEYS if require_source_id or k != "image/source_id"]
    # An empty string or a zero size is as missing as an absent key.
    missing = [k for k in required if not values.get(k) or not values[k][0]]
    if missing:
        errors.append(("missing_key", f"missing or empty key(s) {missing}"))
    sid = values.get("image/source_id") or [b""]
    if sid[0]:
        problem = tfrecord_util.source_id_problem(sid[0])
        if problem:
            errors.append(("bad_source_id", f"image/source_id {problem}"))
    return errors


def _check_encoded(encoded: bytes, width: int, height: int
                   ) -> Tuple[Errors, List[str], Tuple[int, int]]:
    """(errors, notes, (width, height) of the decoded image, or the given ones if it cannot be
    decoded) of a record's image/encoded."""
    errors: Errors = []
    notes: List[str] = []
    try:
        image = Image.open(io.BytesIO(encoded))
        image.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt data
        errors.append(("unreadable_image", f"image/encoded cannot be decoded "
                                           f"({type(e).__name__}: {e})"))
        return errors, notes, (width, height)
    if image.format not in ("JPEG", "PNG", "GIF", "BMP"):
        errors.append(("unreadable_image", f"image/encoded is {image.format}; "
                                           f"tf.io.decode_image reads JPEG/PNG/GIF/BMP"))
    if image.mode != "RGB":
        notes.append(f"image mode {image.mode}, not RGB")
    if (width, height) != image.size and width > 0 and height > 0:
        errors.append(("image_size_mismatch",
                       f"image/width x image/height = {width}x{height} but the encoded "
                       f"image is {image.size[0]}x{image.size[1]}"))
    return errors, notes, image.size


def _check_objects(values: Mapping[str, List[Any]], num_classes: int, max_instances: int,
                   label_map: Optional[Mapping[int, str]], width: int, height: int) -> Errors:
    """Per-object lists of one length (an empty list counts as absent, except the boxes' and
    labels'), the instance count, and each box and class id."""
    label_key = "image/object/class/label"
    lengths = {k: len(values[k]) for k in tfrecord_util.OBJECT_KEYS if values.get(k)}
    if lengths:
        # Boxes and labels are required as soon as any per-object list is not empty.
        for k in tfrecord_util.BBOX_KEYS + (label_key,):
            lengths.setdefault(k, 0)
        if len(set(lengths.values())) > 1:
            return [("box_label_count_mismatch", "per-object lists differ in length: " +
                     ", ".join(f"{k[len('image/object/'):]}={n}" for k, n in lengths.items()))]
    num = lengths.get("image/object/bbox/ymin", 0)
    errors: Errors = []
    msg = check_instance_count(num, max_instances)
    if msg:
        errors.append(("too_many_instances", msg))
    labels = values.get(label_key, [])
    tol_x = BOX_TOLERANCE_PX / width if width > 0 else 0.0
    tol_y = BOX_TOLERANCE_PX / height if height > 0 else 0.0
    for i in range(num):
        ymin, xmin, ymax, xmax = (values[k][i] for k in tfrecord_util.BBOX_KEYS)
        box = f"box {i} [ymin={ymin:.4g}, xmin={xmin:.4g}, ymax={ymax:.4g}, xmax={xmax:.4g}]"
        if not _finite_numbers([ymin, xmin, ymax, xmax], 4):
            errors.append(("malformed_annotation", f"{box} is not finite"))
        elif xmax <= xmin or ymax <= ymin:
            errors.append(("degenerate_box", f"{box} (normalized) has zero or negative size"))
        elif (xmin < -tol_x or ymin < -tol_y or xmax > 1 + tol_x or ymax > 1 + tol_y):
            errors.append(("box_out_of_image", f"{box} (normalized) is outside [0, 1]"))
        msg = check_class_id(labels[i], num_classes)
        if msg:
            errors.append(("class_id_out_of_range", f"box {i}: {msg}"))
        elif label_map is not None and labels[i] not in label_map:
            errors.append(("label_not_in_label_map", f"box {i}: class id {labels[i]} is not in "
                                                     f"the label map"))
    return errors


def check_record(values: Mapping[str, List[Any]], num_classes: int,
                 max_instances: int = DEFAULT_MAX_INSTANCES,
                 label_map: Optional[Mapping[int, str]] = None,
                 decode_image: bool = True,
                 require_source_id: bool = True) -> Tuple[Errors, List[str]]:
    """Check one parsed record ({key: list}, see `tfrecord_util.parse_example`).

    Returns (errors, notes): errors are (reason, detail) pairs; notes are non-error remarks (e.g.
    a grayscale JPEG, which the dataloader decodes to 3 channels anyway). Boxes are read as
    normalized ymin/xmin/ymax/xmax and checked in pixels using image/width and image/height
    (those of the decoded image with `decode_image`). Without `require_source_id` (training,
    which does not use it) a record may lack image/source_id; one it has must still follow
    `tfrecord_util.source_id_problem`.
    """
    errors = _check_keys(values, require_source_id)
    notes: List[str] = []
    width = int(values["image/width"][0]) if values.get("image/width") else -1
    height = int(values["image/height"][0]) if values.get("image/height") else -1
    if decode_image and values.get("image/encoded"):
        found, notes, (width, height) = _check_encoded(values["image/encoded"][0], width, height)
        errors += found
    errors += _check_objects(values, num_classes, max_instances, label_map, width, height)
    return errors, notes


@dataclasses.dataclass
class RecordVerdict:
    """What `check_records` found in one record: `problems` are empty for a good record;
    `values` is the parsed record ({key: list}; None when it could not be parsed)."""

    file: str
    index: int
    source_id: str
    problems: List[Problem]
    notes: List[str]
    values: Optional[Dict[str, List[Any]]]

    @property
    def item(self) -> str:
        return f"record {self.index} (source_id {self.source_id or '<empty>'})"


def check_records(records: Iterable[tfrecord_util.RawRecord], num_classes: int,
                  max_instances: int = DEFAULT_MAX_INSTANCES,
                  label_map: Optional[Mapping[int, str]] = None, decode_images: bool = True,
                  for_training: bool = False) -> Iterator[RecordVerdict]:
    """The verdict on each record of `records` (see `tfrecord_util.read_records`), in order.

    Every record goes through `check_record`; ids must also be unique across the records seen.
    `for_training` drops the two rules that only evaluation needs (an image/source_id on every
    record, no id twice): training reads neither, and a training set merged from several
    datasets may repeat ids. The same rules run in the input pipeline (dataloader.py) for the
    records an up-front sample did not cover.
    """
    from google.protobuf.message import DecodeError

    seen = IdRegistry()
    for raw in records:
        if raw.serialized is None:
            problem = Problem("corrupt_record", raw.file, f"record {raw.index}",
                              f"the file is truncated or corrupt here ({raw.error})")
            yield RecordVerdict(raw.file, raw.index, "", [problem], [], None)
            continue
        try:
            values = tfrecord_util.parse_example(raw.serialized)
        except DecodeError as e:
            problem = Problem("corrupt_record", raw.file, f"record {raw.index}",
                              f"not a tf.train.Example ({e})")
            yield RecordVerdict(raw.file, raw.index, "", [problem], [], None)
            continue
        sid = (values.get("image/source_id") or [b""])[0].decode("utf-8", "replace")
        found, notes = check_record(values, num_classes, max_instances, label_map,
                                    decode_images, require_source_id=not for_training)
        if sid and not for_training:
            duplicate = seen.check(sid, f"{raw.file} record {raw.index}")
            if duplicate:
                found.append(("duplicate_image_id", duplicate))
        verdict = RecordVerdict(raw.file, raw.index, sid, [], notes, values)
        verdict.problems = [Problem(reason, raw.file, verdict.item, detail)
                            for reason, detail in found]
        yield verdict

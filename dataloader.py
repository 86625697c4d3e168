"""The tf.data input pipeline: TFRecords -> batches of (images, labels) for training and eval.

Records use the keys of dataset/tfrecord_util.py (written by dataset/create_coco_tfrecord.py and
dataset/create_pascal_tfrecord.py). Conventions used throughout this module:

* boxes are [ymin, xmin, ymax, xmax]; "normalized" means divided by the original image height or
  width (the record format), "original pixels" means absolute pixels of the decoded image, and
  "network pixels" means absolute pixels of the network input (config.image_size, H x W);
* a box is continuous: a shape covering pixel columns x0..x1 spans x in [x0, x1 + 1);
* images are resized with half-pixel centres, so network pixel coordinate p shows original
  coordinate p / scale (training: per axis, see `preprocess_for_train`);
* `image_scales` = 1 / scale: network pixels * image_scale = original pixels.

Preprocessing (the EfficientDet release's, reordered for speed): resizing happens first, on
the uint8 image, so normalization, flipping and padding touch only network-size pixels; in
training only the source window that survives the random crop is resized, never the whole
jittered image (up to 4x the output's pixels at scale 2).

* eval: scale = min(H / h, W / w); resize to ceil(h * scale) x ceil(w * scale), exactly by that
  scale in both axes (`tf.raw_ops.ScaleAndTranslate`), so network boxes * image_scale are original
  boxes; pad bottom/right.
* training: drop crowd boxes (config.skip_crowd_during_training); jitter s ~ U(train_scale_min,
  train_scale_max), scale = s * min(H / h, W / w) as the reference; a random crop of the output
  size from the scaled image (a random integer window of the original image, resized); random
  horizontal flip (config.input_rand_hflip), which is equivalent in distribution to the
  reference's flip-before-crop; pad bottom/right. Boxes go through the same maps, are clipped to
  the visible region, and boxes thinner than `MIN_TRAIN_BOX_SIDE` network pixels are dropped.
* both: ImageNet normalization on [0, 1] pixels (config.mean_rgb / config.stddev_rgb); padding is
  0 after normalization, i.e. the mean colour.

Data problems stop the pipeline with one readable line naming the record (its file, its index
in the file and its image/source_id), the key and the fix. The rules are dataset/validation.py's,
which validate_tfrecord.py applies (trainer.py also runs them in Python on a sample before
training): more instances than config.max_instances_per_image, class ids outside
1..num_classes, per-object lists of different lengths, source ids that break
`tfrecord_util.source_id_problem` (a missing one only in eval), boxes with ymin >= ymax or
xmin >= xmax or a non-finite coordinate, and boxes outside [0, 1] by more than
validation.BOX_TOLERANCE_PX pixels. File patterns are checked in Python before any graph is
built.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
from absl import logging

import anchors
import errors
import hparams_config
from dataset import tfrecord_util, validation
from record_files import InputError, list_record_files

AUTOTUNE = tf.data.AUTOTUNE

# Pipeline sizes. The reference uses a 64-record shuffle buffer after a 32-file interleave; both
# are kept (the interleave mixes 32 shards, so 64 records already come from many images).
SHUFFLE_BUFFER = 64
INTERLEAVE_CYCLE = 32
READ_BUFFER_BYTES = 8 * 1024 * 1024  # per open file; large sequential reads help on GCS

# Training boxes thinner than this (network pixels) after crop/scale are dropped: they show no
# object, and their log-size box targets would be huge (a cause of NaN losses).
MIN_TRAIN_BOX_SIDE = 0.5

# Starts every record-check message: errors.from_tf_error finds it in TensorFlow's error text.
RECORD_CHECK_MARKER = errors.graph_message("DataError")

# The map functions are graph code already (tf.cond, no Python control flow on tensors), so
# AutoGraph's source conversion is skipped: it only cost seconds of start-up per pipeline.
_plain = tf.autograph.experimental.do_not_convert


# -------------------------------------------------------------------------------------------------
# Parsing and checks
# -------------------------------------------------------------------------------------------------
def _feature_spec(key: str):
    """How the pipeline parses `key`: per-object lists are variable-length, image keys scalar."""
    dtype = {tfrecord_util.INT64: tf.int64, tfrecord_util.FLOAT: tf.float32,
             tfrecord_util.BYTES: tf.string}[tfrecord_util.FEATURE_TYPES[key]]
    if key.startswith("image/object/"):
        return tf.io.VarLenFeature(dtype)
    return tf.io.FixedLenFeature((), dtype, default_value="" if key != "image/encoded" else None)


# The per-object lists whose lengths are checked: all but the masks, whose PNG bytes would cost
# a copy per record.
_COUNTED = tuple(key for key in tfrecord_util.OBJECT_KEYS if key != "image/object/mask")
# The keys the pipeline reads, typed by the one record schema (dataset/tfrecord_util.py).
_FEATURES = {key: _feature_spec(key) for key in ("image/encoded", "image/source_id", *_COUNTED)}


def _dense(sparse: tf.SparseTensor) -> tf.Tensor:
    return tf.sparse.to_dense(sparse)


def _str(x: tf.Tensor) -> tf.Tensor:
    if x.dtype == tf.string:
        return x
    if x.dtype.is_floating:
        return tf.strings.as_string(x, shortest=True)  # 0.1, not 0.100000
    return tf.strings.as_string(x)


def _message(*parts: Any) -> tf.Tensor:
    """A scalar string tensor joining Python strings and tensors (no quotes, unlike format)."""
    return tf.strings.join([p if isinstance(p, str) else _str(p) for p in parts])


def _joined(values: tf.Tensor) -> tf.Tensor:
    return tf.strings.reduce_join(_str(values), separator=",")


Message = Callable[[], tf.Tensor]


def _check(ok: tf.Tensor, message: Message) -> tf.Tensor:
    """An assertion of `ok` whose `message()` is built only when it fails: tf.debugging.Assert
    computes its data for every record, and the string work would cost more than the checks."""
    def fail() -> tf.Tensor:
        with tf.control_dependencies([tf.debugging.Assert(False, [message()])]):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), fail)


def _where(raw_id: tf.Tensor, file: Optional[tf.Tensor], index: Optional[tf.Tensor]
           ) -> Message:
    """What names a record in a check's message: its file and index when known, its id."""
    def where() -> tf.Tensor:
        shown_id = tf.where(tf.equal(raw_id, ""), "(none)", raw_id)
        if file is None:
            return _message(RECORD_CHECK_MARKER, "TFRecord with image/source_id=", shown_id)
        return _message(RECORD_CHECK_MARKER, file, " record ", index, " (image/source_id=",
                        shown_id, ")")

    return where


def _source_id_checks(where: Message, raw_id: tf.Tensor, required: bool
                      ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """(the float64 source id, '' -> -1, the checks): `tfrecord_util.source_id_problem` in
    graph form; an empty id passes unless `required` (eval)."""
    empty = tf.equal(raw_id, "")
    numeric = tf.strings.regex_full_match(raw_id, tfrecord_util.SOURCE_ID_PATTERN)
    numeric_check = _check(tf.logical_or(numeric, tf.logical_and(empty, not required)),
                           lambda: _message(
        where(), ": image/source_id must be the image id in the COCO json, in digits (eval "
        "matches detections and ground truth on it); rebuild the records with "
        "dataset/create_coco_tfrecord.py or create_pascal_tfrecord.py"))
    with tf.control_dependencies([numeric_check]):
        id64 = tf.strings.to_number(tf.where(empty, "-1", raw_id), tf.float64)
    # source_ids is float32 (reference), exact only up to MAX_SOURCE_ID: a larger id would
    # silently match the wrong ground truth in COCO eval.
    limit = tfrecord_util.MAX_SOURCE_ID
    range_check = _check(id64 <= limit, lambda: _message(
        where(), ": ids above ", str(limit), " do not fit the float32 source_ids label exactly; "
        "renumber the images (the converters number them from 1)"))
    return id64, [numeric_check, range_check]


def _count_checks(where: Message, sizes: Dict[str, tf.Tensor], max_instances: int
                  ) -> List[tf.Tensor]:
    """Every per-object list that is not empty has one entry per box (the box and label lists
    always count), and there are at most `max_instances` boxes (dataset/validation.py's
    box_label_count_mismatch and too_many_instances)."""
    n = sizes["image/object/class/label"]
    always = ("image/object/class/label",) + tfrecord_util.BBOX_KEYS
    same = tf.reduce_all(tf.stack([
        tf.equal(size, n) if key in always else tf.logical_or(tf.equal(size, 0),
                                                               tf.equal(size, n))
        for key, size in sizes.items()]))

    def listed() -> tf.Tensor:
        """'class/label 2, bbox/ymin 1, ...': the lists the record has."""
        names = tf.constant([key[len("image/object/"):] for key in sizes])
        counts = tf.stack(list(sizes.values()))
        return tf.strings.reduce_join(tf.boolean_mask(
            tf.strings.join([names, _str(counts)], " "), counts > 0), separator=", ")

    return [
        _check(same, lambda: _message(
            where(), " has per-object lists of different lengths (", listed(), "); check it "
            "with dataset/validate_tfrecord.py")),
        _check(n <= max_instances, lambda: _message(
            where(), " has ", n, " ground-truth instances, more than max_instances_per_image=",
            str(max_instances), "; raise the hparam (--hparams=max_instances_per_image=N) or "
            "drop boxes when converting (--max_instances_per_image)")),
    ]


def _label_check(where: Message, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    label_ok = tf.reduce_all(tf.logical_and(labels >= 1, labels <= num_classes))
    return _check(label_ok, lambda: _message(
        where(), " has class ids ", _joined(labels), " outside 1..num_classes=",
        str(num_classes), "; set the num_classes hparam or fix the label map used for "
        "conversion"))


def _first_bad_box(good: tf.Tensor, boxes: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """(index, 'ymin,xmin,ymax,xmax') of the first box that is not `good` (some is not)."""
    i = tf.argmax(tf.cast(tf.logical_not(good), tf.int32), output_type=tf.int32)
    return i, _joined(boxes[i])


# The leading bytes of the formats tf.io.decode_image reads: JPEG, PNG, GIF, BMP.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def _image_format_check(where: Message, encoded: tf.Tensor) -> tf.Tensor:
    """image/encoded starts as a JPEG, PNG, GIF or BMP does (the validator's unreadable_image
    for bytes of another kind; a truncated image of a known kind still fails in decoding)."""
    known = tf.reduce_any(tf.stack([tf.equal(tf.strings.substr(encoded, 0, len(s)), s)
                                    for s in _IMAGE_SIGNATURES]))
    return _check(known, lambda: _message(
        where(), " has an image/encoded that is not a JPEG, PNG, GIF or BMP image; check it "
        "with dataset/validate_tfrecord.py"))


def _box_order_check(where: Message, boxes: tf.Tensor) -> tf.Tensor:
    """Finite boxes with ymin < ymax and xmin < xmax (the validator's malformed_annotation and
    degenerate_box)."""
    good = tf.logical_and(tf.reduce_all(tf.math.is_finite(boxes), axis=1),
                          tf.logical_and(boxes[:, 0] < boxes[:, 2], boxes[:, 1] < boxes[:, 3]))

    def message() -> tf.Tensor:
        i, box = _first_bad_box(good, boxes)
        return _message(where(), " has box ", i, " (ymin,xmin,ymax,xmax = ", box, ") with "
                        "ymin >= ymax, xmin >= xmax or a non-finite coordinate; check it with "
                        "dataset/validate_tfrecord.py")

    return _check(tf.reduce_all(good), message)


def _box_range_check(where: Message, boxes: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
    """Normalized boxes inside [0, 1], give or take validation.BOX_TOLERANCE_PX pixels of the
    `hw` image (the validator's box_out_of_image)."""
    tol = validation.BOX_TOLERANCE_PX / tf.tile(hw, [2])  # (y, x, y, x)
    lo = tf.reduce_all(boxes[:, :2] >= -tol[:2], axis=1)
    hi = tf.reduce_all(boxes[:, 2:] <= 1.0 + tol[2:], axis=1)
    good = tf.logical_and(lo, hi)

    def message() -> tf.Tensor:
        i, box = _first_bad_box(good, boxes)
        return _message(where(), " has box ", i, " (ymin,xmin,ymax,xmax = ", box, ") outside "
                        "[0, 1]: boxes are normalized by the image height and width; check it "
                        "with dataset/validate_tfrecord.py")

    return _check(tf.reduce_all(good), message)


def parse_record(serialized: tf.Tensor, num_classes: int, max_instances: int,
                 file: Optional[tf.Tensor] = None, index: Optional[tf.Tensor] = None,
                 require_source_id: bool = False) -> Dict[str, tf.Tensor]:
    """Parse and check one serialized tf.train.Example; decode its image.

    The checks are dataset/validation.py's record rules, the ones validate_tfrecord.py applies
    (see the module docstring); each failure stops the pipeline with one line naming the
    record: its `file` and `index` in it (when given) and its image/source_id. Missing keys
    fall back as the reference decoder: image/source_id '' (-> -1; refused when
    `require_source_id`, as eval needs it), image/object/is_crowd all 0. A missing
    image/object/area becomes the box area in original pixels (the reference uses normalized
    units there, which puts every object into COCO's 'small' area range when no json is given).

    Returns:
      image: uint8 [h, w, 3] (grayscale/RGBA are converted to 3 channels).
      source_id: float32 scalar, the numeric image/source_id ('' -> -1).
      boxes: float32 [N, 4], normalized [ymin, xmin, ymax, xmax].
      classes: int32 [N], class ids 1..num_classes.
      is_crowd: bool [N].
      area: float32 [N], original pixels.
    """
    ex = tf.io.parse_single_example(serialized, _FEATURES)
    raw_id = ex["image/source_id"]
    coords = [_dense(ex[key]) for key in tfrecord_util.BBOX_KEYS]
    labels = _dense(ex["image/object/class/label"])
    crowd = _dense(ex["image/object/is_crowd"])
    area = _dense(ex["image/object/area"])
    # No quotes in messages: the assertion text escapes them.
    where = _where(raw_id, file, index)
    id64, checks = _source_id_checks(where, raw_id, require_source_id)
    checks += _count_checks(where, {key: tf.size(ex[key]) for key in _COUNTED},
                            max_instances)
    checks.append(_label_check(where, labels, num_classes))
    # The stack waits for the checks, so lists of different lengths fail with the message
    # above rather than inside the Pack op.
    with tf.control_dependencies(checks):
        boxes = tf.stack(coords, axis=1)
    checks.append(_box_order_check(where, boxes))
    checks.append(_image_format_check(where, ex["image/encoded"]))
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        checks.append(_box_range_check(where, boxes, hw))
    with tf.control_dependencies(checks):
        boxes = tf.identity(boxes)
        source_id = tf.cast(id64, tf.float32)
        pixel_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * hw[0] * hw[1]
        area = tf.cond(tf.size(area) > 0, lambda: area, lambda: pixel_area)
        crowd = tf.cond(tf.size(crowd) > 0, lambda: crowd, lambda: tf.zeros_like(labels))
        return {"image": image, "source_id": source_id, "boxes": boxes,
                "classes": tf.cast(labels, tf.int32), "is_crowd": crowd > 0,
                "area": tf.cast(area, tf.float32)}


def _read_files(files: tf.data.Dataset, num_files: int, deterministic: bool
                ) -> tf.data.Dataset:
    """(file, index in the file, serialized record) of every record of `files`, interleaved
    one record per file in turn over at most INTERLEAVE_CYCLE open files: the order eval reads
    (and, with shuffled files, training)."""
    def read(path: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES)
        return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(path).repeat(),
                                    tf.data.Dataset.range(2 ** 62), records))

    return files.interleave(_plain(read), cycle_length=min(INTERLEAVE_CYCLE, num_files),
                            block_length=1, num_parallel_calls=AUTOTUNE,
                            deterministic=deterministic)


def records_in_eval_order(files: Sequence[str], limit: int
                          ) -> Iterator[tfrecord_util.RawRecord]:
    """The first `limit` records an eval `InputReader` of `files` reads, in its order, read
    eagerly (images stay encoded): what a caller checks before evaluating them. A truncated or
    corrupt file raises tf.errors.DataLossError (record_files.find_broken_record_file names
    it)."""
    dataset = _read_files(tf.data.Dataset.from_tensor_slices(list(files)), len(files), True)
    for path, index, serialized in dataset.take(limit).as_numpy_iterator():
        yield tfrecord_util.RawRecord(path.decode("utf-8"), int(index), serialized)


# -------------------------------------------------------------------------------------------------
# Image and box transforms
# -------------------------------------------------------------------------------------------------
def normalize_image(image: tf.Tensor, mean_rgb: Sequence[float],
                    stddev_rgb: Sequence[float]) -> tf.Tensor:
    """(image / 255 - mean) / std as float32 [h, w, 3]; `image` [h, w, 3] holds [0, 255] values
    (uint8 or float), mean/std are per RGB channel on [0, 1] pixels."""
    mean = tf.constant(mean_rgb, tf.float32)
    std = tf.constant(stddev_rgb, tf.float32)
    shape = tf.shape(image)
    # One multiply-add per value, on rows of w * 3 values: broadcasting a 3-vector over the
    # last axis is about twice as slow on CPU as broadcasting a whole row.
    rows = tf.reshape(tf.cast(image, tf.float32), [shape[0], shape[1] * 3])
    out = rows * tf.tile(1.0 / (255.0 * std), [shape[1]]) + tf.tile(-mean / std, [shape[1]])
    return tf.reshape(out, shape)


def _pad(image: tf.Tensor, out_hw: Tuple[int, int]) -> tf.Tensor:
    """Top-left placement, zeros bottom/right; static [out_h, out_w, 3]."""
    image = tf.image.pad_to_bounding_box(image, 0, 0, out_hw[0], out_hw[1])
    image.set_shape([out_hw[0], out_hw[1], 3])
    return image


def _clip_boxes(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    hi = tf.stack([height, width, height, width])
    return tf.clip_by_value(boxes, 0.0, hi)


def preprocess_for_eval(image: tf.Tensor, boxes_px: tf.Tensor, out_hw: Tuple[int, int],
                        mean_rgb: Sequence[float], stddev_rgb: Sequence[float]
                        ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Resize by scale = min(H / h, W / w), normalize, pad bottom/right.

    Args:
      image: uint8 [h, w, 3].
      boxes_px: float32 [N, 4] yxyx, original pixels.
      out_hw: (H, W) of the network input.

    Returns:
      image float32 [H, W, 3]; boxes float32 [N, 4] yxyx network pixels (= boxes_px * scale,
      clipped to the resized image); image_scale float32 scalar = 1 / scale.
    """
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(out_hw[0] / hw[0], out_hw[1] / hw[1])
    # ceil: the last partial row/column still samples inside the image; 1e-3 absorbs rounding.
    size = tf.cast(tf.math.ceil(hw * scale - 1e-3), tf.int32)
    size = tf.clip_by_value(size, 1, tf.constant(out_hw, tf.int32))
    # ScaleAndTranslate with the triangle kernel and no antialiasing is bilinear resizing with
    # half-pixel centres, but by `scale` exactly in both axes (tf.image.resize would use the
    # per-axis ratios of the rounded sizes), so predictions * image_scale are original pixels.
    resized = tf.raw_ops.ScaleAndTranslate(
        images=image[None], size=size, scale=tf.stack([scale, scale]),
        translation=tf.zeros([2]), kernel_type="triangle", antialias=False)[0]
    out = _pad(normalize_image(resized, mean_rgb, stddev_rgb), out_hw)
    size_f = tf.cast(size, tf.float32)
    boxes = _clip_boxes(boxes_px * scale, size_f[0], size_f[1])
    return out, boxes, 1.0 / scale


def preprocess_for_train(image: tf.Tensor, boxes_px: tf.Tensor, out_hw: Tuple[int, int],
                         mean_rgb: Sequence[float], stddev_rgb: Sequence[float],
                         jitter: tf.Tensor, offset_frac: tf.Tensor, flip: tf.Tensor
                         ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scale jitter, random crop, horizontal flip, normalize, pad; boxes follow exactly.

    scale = jitter * min(H / h, W / w). The crop of the output size from the image scaled by
    `scale` is taken as an integer window of the original image, [y0, y0 + hh) x [x0, x0 + ww)
    with hh = round(H / scale) (at most h), resized to ch = round(hh * scale) x cw (at most H x W).
    Using the window's own ratios sy = ch / hh, sx = cw / ww for the boxes keeps boxes and pixels
    aligned exactly; they differ from `scale` by < 0.5 / hh (relative).

    Args:
      image: uint8 [h, w, 3].
      boxes_px: float32 [N, 4] yxyx, original pixels.
      out_hw: (H, W).
      jitter: float scalar, the random scale factor s (1: the image fits the output).
      offset_frac: float [2] in [0, 1): where the window lies in the range of valid (y, x)
        offsets (0: top/left).
      flip: bool scalar, mirror horizontally.

    Returns:
      image float32 [H, W, 3]; boxes float32 [N, 4] yxyx network pixels, clipped to the visible
      crop; keep bool [N] (False for boxes thinner than MIN_TRAIN_BOX_SIDE after clipping, e.g.
      cropped away); image_scale float32 scalar = 1 / scale.
    """
    shape = tf.shape(image)[:2]
    hw = tf.cast(shape, tf.float32)
    out = tf.constant(out_hw, tf.float32)
    scale = tf.cast(jitter, tf.float32) * tf.reduce_min(out / hw)
    window = tf.clip_by_value(tf.cast(tf.round(out / scale), tf.int32), 1, shape)  # (hh, ww)
    room = tf.cast(shape - window + 1, tf.float32)
    start = tf.minimum(tf.cast(tf.floor(tf.cast(offset_frac, tf.float32) * room), tf.int32),
                       shape - window)  # (y0, x0)
    crop = tf.clip_by_value(tf.cast(tf.round(tf.cast(window, tf.float32) * scale), tf.int32),
                            1, tf.constant(out_hw, tf.int32))  # (ch, cw)
    pixels = tf.slice(image, tf.concat([start, [0]], 0), tf.concat([window, [3]], 0))
    resized = tf.image.resize(pixels, crop, method="bilinear")  # float32, [0, 255]
    resized = normalize_image(resized, mean_rgb, stddev_rgb)
    resized = tf.cond(flip, lambda: tf.reverse(resized, axis=[1]), lambda: resized)
    out_image = _pad(resized, out_hw)

    ratio = tf.cast(crop, tf.float32) / tf.cast(window, tf.float32)  # (sy, sx)
    start_f, crop_f = tf.cast(start, tf.float32), tf.cast(crop, tf.float32)
    boxes = (boxes_px - tf.tile(start_f, [2])) * tf.tile(ratio, [2])
    boxes = _clip_boxes(boxes, crop_f[0], crop_f[1])
    mirrored = tf.stack([boxes[:, 0], crop_f[1] - boxes[:, 3], boxes[:, 2],
                         crop_f[1] - boxes[:, 1]], axis=1)
    boxes = tf.where(flip, mirrored, boxes)
    keep = tf.logical_and(boxes[:, 2] - boxes[:, 0] >= MIN_TRAIN_BOX_SIDE,
                          boxes[:, 3] - boxes[:, 1] >= MIN_TRAIN_BOX_SIDE)
    return out_image, boxes, keep, 1.0 / scale


def sample_train_params(seed: tf.Tensor, scale_min: float, scale_max: float,
                        rand_hflip: bool) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(jitter, offset_frac [2], flip) for `preprocess_for_train` from a stateless seed [2]."""
    u = tf.random.stateless_uniform([4], seed=seed)
    jitter = scale_min + (scale_max - scale_min) * u[0]
    flip = tf.logical_and(tf.constant(bool(rand_hflip)), u[3] < 0.5)
    return jitter, u[1:3], flip


def _pad_rows(rows: tf.Tensor, max_rows: int) -> tf.Tensor:
    """[N, C] -> [max_rows, C], padded with -1 (N <= max_rows is checked in parse_record)."""
    rows = tf.pad(rows, [[0, max_rows - tf.shape(rows)[0]], [0, 0]], constant_values=-1.0)
    rows.set_shape([max_rows, rows.shape[1]])
    return rows


# -------------------------------------------------------------------------------------------------
# The reader
# -------------------------------------------------------------------------------------------------
class InputReader:
    """Builds the tf.data pipeline of one split; an Estimator input_fn as is.

    Each element is (images, labels):
      images: float32 [B, H, W, 3], normalized (see module docstring).
      labels: dict
        cls_targets_<l>: int32 [B, H_l, W_l, A], class index (id - 1) of each anchor, -1 for
          background; l = min_level..max_level, A anchors per location.
        box_targets_<l>: float32 [B, H_l, W_l, 4A], (ty, tx, th, tw) per anchor, 0 for
          background (anchors.py's coder, network pixels).
        mean_num_positives: float32 [B], the batch mean of positive anchors per image, repeated.
        source_ids: float32 [B], numeric image/source_id ('' -> -1).
        image_scales: float32 [B], 1 / scale: network pixels * image_scale = original pixels.
        groundtruth_data: float32 [B, max_instances_per_image, 7], rows (ymin, xmin, ymax, xmax,
          is_crowd, area, class id) padded with -1. Eval: the record's boxes in original pixels,
          crowd boxes included. Training: the augmented boxes (network pixels) times
          image_scale, i.e. at original resolution but in the crop's frame, with the record's
          area (as the reference); only eval uses them.

    Batches: static size in both modes (TPUs; every replica gets a full batch). Training drops
    nothing (it repeats). Eval reads the split once, or its first `max_images` records, and fills
    the last batch with blank images whose source id is tfrecord_util.PADDING_SOURCE_ID (no objects,
    skipped by the COCO metric), so every image is evaluated whatever the batch size: 18 images
    at batch 8 are 3 batches, the last with 6 blanks. (The reference drops the remainder.) The
    blanks are all background, so they add a little to that batch's eval loss, never to AP.

    Batch size: an explicit `batch_size` argument is used as given (the per-replica batch).
    Otherwise params['batch_size'] is used (Estimator/TPUEstimator pass it; TPUEstimator's is
    already per shard); when an `input_context` comes with it, that value is the global batch and
    is divided by `input_context.get_per_replica_batch_size`.

    Sharding: with an `input_context` of several input pipelines each pipeline reads every
    num_input_pipelines-th file, or every num_input_pipelines-th record when there are fewer
    files than pipelines.
    """

    def __init__(self, file_pattern: Union[str, Sequence[str]], is_training: bool,
                 config: hparams_config.Config,
                 use_fake_data: bool = False, cache: bool = False, seed: Optional[int] = None,
                 max_images: Optional[int] = None):
        """Checks the pattern now, so a typo fails before any graph is built.

        Args:
          file_pattern: glob of TFRecord shards, several globs separated by commas, or the
            list of files `list_record_files` returned for it.
          is_training: augmentation, shuffling, repetition; errors name --training_file_pattern
            (else --validation_file_pattern).
          config: the detection config (image_size, levels/anchors, num_classes,
            max_instances_per_image, augmentation and normalization keys).
          use_fake_data: every step sees the first batch (take(1).cache().repeat()).
          cache: cache the serialized records in memory after the first pass (saves reading and
            the file system; images are still decoded and augmented every time).
          seed: makes file order, shuffling and augmentation reproducible (tests, benchmarks);
            None draws fresh randomness (the graph-level seed applies in graph mode).
          max_images: eval only: read at most this many records (--eval_samples); None reads
            the whole split.
        """
        if max_images is not None and (is_training or max_images < 1):
            raise InputError(f"max_images={max_images!r}: a positive count of eval images "
                             "(training repeats the split and takes no limit).")
        self._flag = "--training_file_pattern" if is_training else "--validation_file_pattern"
        self._files = (list_record_files(file_pattern, self._flag)
                       if isinstance(file_pattern, str) else list(file_pattern))
        self._file_pattern = file_pattern
        self._is_training = bool(is_training)
        self._config = config
        self._use_fake_data = bool(use_fake_data)
        self._cache = bool(cache)
        self._seed = seed
        self._max_images = max_images
        self._out_hw = hparams_config.image_hw(config)
        self._anchors = anchors.Anchors.from_config(config)
        self._labeler = anchors.AnchorLabeler(self._anchors, config.num_classes)

    @property
    def files(self) -> List[str]:
        """The TFRecord files that will be read (after skipping non-record matches)."""
        return list(self._files)

    # -- per element ------------------------------------------------------------------------------
    def _example_fn(self, record: Tuple[tf.Tensor, tf.Tensor, tf.Tensor],
                    seed: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """One (image, labels) pair of a (file, index, serialized) record."""
        c = self._config
        file, index, serialized = record
        d = parse_record(serialized, c.num_classes, c.max_instances_per_image, file, index,
                         require_source_id=not self._is_training)
        hw = tf.cast(tf.shape(d["image"])[:2], tf.float32)
        boxes_px = d["boxes"] * tf.tile(hw, [2])
        classes, crowd, area = d["classes"], d["is_crowd"], d["area"]
        if self._is_training:
            if c.skip_crowd_during_training:
                keep = tf.logical_not(crowd)
                boxes_px, classes, crowd, area = (tf.boolean_mask(t, keep)
                                                  for t in (boxes_px, classes, crowd, area))
            jitter, offset_frac, flip = sample_train_params(
                seed, c.train_scale_min, c.train_scale_max, c.input_rand_hflip)
            image, boxes, keep, image_scale = preprocess_for_train(
                d["image"], boxes_px, self._out_hw, c.mean_rgb, c.stddev_rgb, jitter,
                offset_frac, flip)
            boxes, classes, crowd, area = (tf.boolean_mask(t, keep)
                                           for t in (boxes, classes, crowd, area))
            gt_boxes = boxes * image_scale
        else:
            image, boxes, image_scale = preprocess_for_eval(
                d["image"], boxes_px, self._out_hw, c.mean_rgb, c.stddev_rgb)
            gt_boxes = boxes_px  # exact originals, not clipped or rescaled
        rows = tf.concat([gt_boxes, tf.cast(crowd, tf.float32)[:, None], area[:, None],
                          tf.cast(classes, tf.float32)[:, None]], axis=1)
        return image, self._labels(boxes, classes, d["source_id"], image_scale, rows)

    def _labels(self, boxes: tf.Tensor, classes: tf.Tensor, source_id: tf.Tensor,
                image_scale: tf.Tensor, gt_rows: tf.Tensor) -> Dict[str, tf.Tensor]:
        """One image's labels dict (see the class docstring) from boxes [N, 4] yxyx network
        pixels, class ids [N] and ground-truth rows [N, 7]."""
        valid = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
        cls_targets, box_targets, num_positives = self._labeler.label_anchors(
            boxes, classes, valid)
        labels: Dict[str, tf.Tensor] = {}
        for level in self._anchors.levels:
            labels[f"cls_targets_{level}"] = cls_targets[level]
            labels[f"box_targets_{level}"] = box_targets[level]
        labels["num_positives"] = num_positives
        labels["source_ids"] = tf.cast(source_id, tf.float32)
        labels["image_scales"] = tf.cast(image_scale, tf.float32)
        labels["groundtruth_data"] = _pad_rows(gt_rows, self._config.max_instances_per_image)
        return labels

    def _padding_example(self) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """A blank image (the mean colour) without objects and with source id PADDING_IMAGE_ID,
        which the COCO metric skips; it fills the last eval batch."""
        image = tf.zeros([*self._out_hw, 3], tf.float32)
        labels = self._labels(tf.zeros([0, 4]), tf.zeros([0], tf.int32),
                              tf.constant(tfrecord_util.PADDING_SOURCE_ID, tf.float32),
                              tf.constant(1.0), tf.zeros([0, 7]))
        return image, labels

    @staticmethod
    def _batch_fn(images: tf.Tensor, labels: Dict[str, tf.Tensor]
                  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        labels = dict(labels)
        num_positives = labels.pop("num_positives")
        # The loss normalizer: the batch mean, one copy per image so it shards like the batch.
        labels["mean_num_positives"] = tf.tile(tf.reduce_mean(num_positives, keepdims=True),
                                               tf.shape(num_positives))
        return images, labels

    # -- pipeline ---------------------------------------------------------------------------------
    def _resolve_batch_size(self, params: Optional[Mapping[str, Any]],
                            input_context: Optional[tf.distribute.InputContext],
                            batch_size: Optional[int]) -> int:
        if batch_size is None:
            if params and params.get("batch_size") is not None:
                batch_size = params["batch_size"]
                if input_context is not None:
                    batch_size = input_context.get_per_replica_batch_size(int(batch_size))
            else:
                raise InputError("InputReader needs a batch size: pass batch_size=... or "
                                 "params={'batch_size': ...} (the Estimator passes params).")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch size must be a positive integer, got {batch_size!r}.")
        return int(batch_size)

    def __call__(self, params: Optional[Dict[str, Any]] = None,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 batch_size: Optional[int] = None) -> tf.data.Dataset:
        """The dataset of (images, labels) batches; usable as an Estimator input_fn.

        Training repeats forever; eval makes one pass. Works in eager and graph mode.
        """
        batch = self._resolve_batch_size(params, input_context, batch_size)
        deterministic = not self._is_training or self._seed is not None
        records, num_files = self._records(input_context, deterministic)
        ds = self._examples(records, batch, deterministic)
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.map(_plain(self._batch_fn), num_parallel_calls=AUTOTUNE)
        if self._use_fake_data:
            ds = ds.take(1).cache().repeat()
        ds = ds.prefetch(AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = deterministic
        options.experimental_optimization.map_parallelization = True
        ds = ds.with_options(options)
        logging.debug("%s: %d file(s), batch %d per replica, training=%s, cache=%s, fake=%s",
                      self._flag, num_files, batch, self._is_training, self._cache,
                      self._use_fake_data)
        return ds

    def _records(self, input_context: Optional[tf.distribute.InputContext],
                 deterministic: bool) -> Tuple[tf.data.Dataset, int]:
        """(the (file, index, serialized) records this input pipeline reads, its file count):
        its share of the files (of the records when there are fewer files than pipelines),
        files shuffled per epoch in training, at most `max_images`, cached if asked."""
        num_files = len(self._files)
        files = tf.data.Dataset.from_tensor_slices(self._files)
        shard_records = False
        if input_context is not None and input_context.num_input_pipelines > 1:
            pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            if num_files >= pipelines:
                files = files.shard(pipelines, index)
                num_files = len(self._files[index::pipelines])
            else:
                logging.warning("%s: %d file(s) for %d input pipelines; sharding by record, so "
                                "every pipeline reads every file. Write more shards.",
                                self._flag, num_files, pipelines)
                shard_records = True
        if self._is_training:
            # reshuffled per epoch (each repetition re-iterates this dataset).
            files = files.shuffle(num_files, seed=self._seed, reshuffle_each_iteration=True)
        records = _read_files(files, num_files, deterministic)  # (file, index, serialized)
        if shard_records:
            records = records.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        if self._max_images is not None:
            records = records.take(self._max_images)  # before cache(): it caches whole passes
        if self._cache:
            records = records.cache()
        return records, num_files

    def _examples(self, records: tf.data.Dataset, batch: int,
                  deterministic: bool) -> tf.data.Dataset:
        """(image, labels) examples of `records`: in training repeated, shuffled and augmented
        with one seed pair each; in eval one pass, followed by padding examples that fill
        the last batch."""
        if self._is_training:
            records = records.repeat()
            records = records.shuffle(SHUFFLE_BUFFER, seed=self._seed)
            # One stateless seed pair per example: reproducible with `seed`, independent of
            # the order in which the parallel map runs.
            seeds = tf.data.Dataset.random(seed=self._seed).batch(2, drop_remainder=True)
            return tf.data.Dataset.zip((records, seeds)).map(
                _plain(self._example_fn), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic)
        ds = records.map(_plain(lambda *record: self._example_fn(record)),
                         num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        if batch > 1:
            # batch - 1 blanks after the split: the last partial batch is filled and no
            # batch of blanks only is formed (drop_remainder drops the unused ones).
            blanks = tf.data.Dataset.from_tensors(self._padding_example()).repeat(batch - 1)
            ds = ds.concatenate(blanks)
        return ds

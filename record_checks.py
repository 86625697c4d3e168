"""The checks main.py runs on records before it trains or evaluates (trainer.prepare calls
them; nothing is created or recorded before they pass).

* Classes: the records' largest class id against num_classes, and the label map resolved to
  {id: name} (`check_records_and_label_map`).
* Training: the first `TRAIN_SAMPLE_RECORDS` records through dataset/validate_tfrecord.py's
  rules (`validation.check_records`), so a conversion's systematic mistake stops the run at
  once; the input pipeline (dataloader.py) applies the same rules to every record it reads.
* Eval: the records eval will read (its first --eval_samples, in its order) through the same
  rules plus a numeric, unique image/source_id on each, and, with --val_json_file, each record
  must be the json image its id names (`coco_json.check_record_images`): records and ground
  truth from different conversions share ids but not images.

Images are not decoded; each failure is one `errors.DataError` line naming the record's file,
index and source id.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import tensorflow as tf

import coco_json
import dataloader
import errors
import record_files
from dataset import label_maps, tfrecord_util, validation
from hparams_config import Config
from run_options import RunOptions

# Training records checked before the first step: enough to catch a conversion's systematic
# mistake at once; the input pipeline checks every record as it reads.
TRAIN_SAMPLE_RECORDS = 500


def _record_problem(problem: validation.Problem, flag: str, pattern: Optional[str]) -> str:
    """One line for a bad record: where, what, what to do, and where to see them all."""
    return (f"{problem}; to fix: {problem.hint}. `python dataset/validate_tfrecord.py "
            f"--file_pattern='{pattern}' ...` lists every bad record of {flag}.")


def check_training_records(config: Config, opts: RunOptions, files: List[str]) -> None:
    """The first TRAIN_SAMPLE_RECORDS records of `files` through the validator's rules
    (`validation.check_records` for training: images are not decoded); the first bad record
    is a DataError naming its file, index and source id."""
    verdicts = validation.check_records(
        tfrecord_util.read_records(files, TRAIN_SAMPLE_RECORDS), config.num_classes,
        config.max_instances_per_image, decode_images=False, for_training=True)
    for verdict in verdicts:
        if verdict.problems:
            raise errors.DataError(_record_problem(verdict.problems[0], "--training_file_pattern",
                                                   opts.training_file_pattern))


def _eval_record_images(config: Config, opts: RunOptions, files: List[str]
                        ) -> Iterator[coco_json.RecordImage]:
    """The images of the records eval will read (its first --eval_samples, in its order), each
    checked with the validator's rules (a numeric, unique image/source_id included; images are
    not decoded). The first bad record is a DataError naming it."""
    verdicts = validation.check_records(
        dataloader.records_in_eval_order(files, opts.eval_samples), config.num_classes,
        config.max_instances_per_image, decode_images=False)
    try:
        for verdict in verdicts:
            if verdict.problems:
                raise errors.DataError(_record_problem(
                    verdict.problems[0], "--validation_file_pattern",
                    opts.validation_file_pattern))
            values = verdict.values
            yield coco_json.RecordImage(
                verdict.file, verdict.index, int(verdict.source_id),
                int(values["image/height"][0]), int(values["image/width"][0]),
                (values.get("image/filename") or [b""])[0].decode("utf-8", "replace"))
    except tf.errors.DataLossError as e:
        broken = record_files.find_broken_record_file(files)
        detail = (f"{broken[0]}: {broken[1]}" if broken
                  else errors.first_line(e.message or str(e)))
        raise errors.DataError(f"{detail}; re-create the records with the dataset "
                               f"converters.") from None


def check_eval_records(config: Config, opts: RunOptions, files: List[str]) -> None:
    """Eval's records and ground truth must describe the same images, checked before anything
    is evaluated or recorded: every record eval reads follows the validator's rules, and with
    --val_json_file (not test-dev) each one is the json image its source id names
    (`coco_json.check_record_images`)."""
    images = _eval_record_images(config, opts, files)
    if opts.val_json_file and not opts.testdev_dir:
        coco_json.check_record_images(images, opts.val_json_file)
    else:
        for _ in images:
            pass


# -------------------------------------------------------------------------------------------------
# Classes
# -------------------------------------------------------------------------------------------------
def _max_label_and_names(files: List[str], limit: int = 2000) -> Tuple[int, Dict[int, str]]:
    """The largest class label and the {label: class text} seen in the first `limit` records."""
    best, names, count = 0, {}, 0
    for path in files:
        for raw in _records(path, limit - count):
            feature = tf.train.Example.FromString(raw).features.feature
            labels = list(feature["image/object/class/label"].int64_list.value)
            texts = list(feature["image/object/class/text"].bytes_list.value)
            if labels:
                best = max(best, max(labels))
            for label, text in zip(labels, texts):
                names.setdefault(int(label), text.decode("utf-8", "replace"))
            count += 1
        if count >= limit:
            break
    return best, names


def _records(path: str, limit: int):
    """The first `limit` serialized records of `path`; a broken file is a DataError naming it."""
    try:
        yield from tf.data.TFRecordDataset(path).take(limit).as_numpy_iterator()
    except tf.errors.DataLossError as e:
        broken = record_files.find_broken_record_file([path])
        detail = broken[1] if broken else errors.first_line(e.message)
        raise errors.DataError(f"{path}: {detail}; re-create it with the dataset "
                               f"converters.") from None


def _json_categories(val_json_file: Optional[str]) -> Dict[int, str]:
    """{id: name} of the json's categories; a json that is not a COCO json is a DataError."""
    if not val_json_file:
        return {}
    categories = coco_json.load_gt_json(val_json_file).dataset["categories"]
    return {c["id"]: str(c["name"]) for c in categories
            if isinstance(c, dict) and isinstance(c.get("id"), int) and "name" in c}


def check_records_and_label_map(config: Config, opts: RunOptions, files: List[str]) -> None:
    """Check num_classes against the records' labels; resolve the label map to {id: name}.

    A path or built-in name given as `label_map` is read here, once, and the mapping is what
    config.yaml stores, so a model directory runs anywhere after a move. With no label map,
    the classes are named from the validation json or the records' class texts.
    """
    top, record_names = _max_label_and_names(files)
    if top > config.num_classes:
        raise errors.DataError(
            f"records {files[0]} ... hold class id {top} but num_classes is "
            f"{config.num_classes}; pass --hparams=num_classes={top} (ids run 1..num_classes, no "
            f"background entry).")
    if not isinstance(config.label_map, dict):
        found = [(f"--val_json_file={opts.val_json_file}", _json_categories(opts.val_json_file)),
                 (f"the class texts of {files[0]} ...", record_names)]
        config.label_map = label_maps.resolve(config.label_map, config.num_classes, found)

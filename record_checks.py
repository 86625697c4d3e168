"""The checks main.py runs on records before it trains or evaluates (trainer.prepare calls
them; nothing is created or recorded before they pass).

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

from typing import Iterator, List, Optional

import tensorflow as tf

import coco_json
import dataloader
import errors
import record_files
from dataset import tfrecord_util, validation
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
                  else (e.message or str(e)).splitlines()[0])
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

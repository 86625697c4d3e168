r"""Check existing TFRecords against a model config before training or eval.

    python dataset/validate_tfrecord.py --file_pattern='tfrecord/pascal*.tfrecord' \
        --model_name=efficientdet-d0 --hparams=voc_config.yaml

The config is `hparams_config.get_detection_config(model_name, hparams)`; records are checked
with `dataset.validation.check_record` against its num_classes, max_instances_per_image and (when
set) label_map: missing keys, non-numeric or duplicate image/source_id, undecodable images, width/
height that disagree with the image, per-object lists of different lengths, degenerate boxes,
boxes outside [0, 1] (normalized ymin/xmin/ymax/xmax), class ids outside 1..num_classes, too many
instances, truncated/corrupt files. Every problem is printed on one line naming the file, the
record index (0-based, in file order) and the source_id, then a summary by reason.

Exit status: 0 when no problem was found, 1 when some were, 2 for a usage error (bad flag,
pattern that matches nothing).
"""

from __future__ import annotations

import os
import sys

# Runnable as `python dataset/validate_tfrecord.py` without PYTHONPATH (repo root first).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import dataclasses  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Dict, List, Mapping, Optional  # noqa: E402

import errors  # noqa: E402
from dataset import label_maps, tfrecord_util, validation  # noqa: E402
from dataset.validation import Problem, UsageError  # noqa: E402


@dataclasses.dataclass
class ValidationReport:
    """What `validate_tfrecords` found. `problems` are in file/record order."""

    file_pattern: str
    files: List[str] = dataclasses.field(default_factory=list)
    num_records: int = 0
    bad_records: int = 0
    problems: List[Problem] = dataclasses.field(default_factory=list)
    notes: Counter = dataclasses.field(default_factory=Counter)
    errors: List[str] = dataclasses.field(default_factory=list)  # not tied to one record
    checked_against: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.errors

    @property
    def good_records(self) -> int:
        return self.num_records - self.bad_records

    def counts(self) -> Dict[str, int]:
        return dict(Counter(p.reason for p in self.problems))

    def format(self, max_lines: Optional[int] = None) -> str:
        """Every problem (or the first `max_lines`) on its own line, then the totals."""
        shown = self.problems if max_lines is None else self.problems[:max_lines]
        lines = [str(p) for p in shown]
        if len(shown) < len(self.problems):
            lines.append(f"... and {len(self.problems) - len(shown)} more problem(s)")
        lines.append(f"== validate {self.file_pattern} {self.checked_against}==")
        lines.append(f"files: {len(self.files)}, records: {self.num_records}, good: "
                     f"{self.good_records}, with problems: {self.bad_records}")
        for reason, n in sorted(self.counts().items()):
            lines.append(f"  {reason}: {n}; to fix: {validation.REASONS[reason][1]}")
        for note, n in sorted(self.notes.items()):
            lines.append(f"  note: {note}: {n} record(s) (not an error)")
        lines.extend(f"error: {e}" for e in self.errors)
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def validate_tfrecords(file_pattern: str, num_classes: int,
                       max_instances_per_image: int = validation.DEFAULT_MAX_INSTANCES,
                       label_map: Optional[Mapping[int, str]] = None,
                       decode_images: bool = True) -> ValidationReport:
    """Check every record of the files matching `file_pattern` (comma-separated patterns ok).

    Raises `UsageError` when the pattern is empty or matches no file.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    if not file_pattern or not file_pattern.strip():
        raise UsageError("--file_pattern is required, e.g. --file_pattern='tfrecord/train-*'.")
    files: List[str] = []
    for pattern in (p.strip() for p in file_pattern.split(",") if p.strip()):
        files.extend(sorted(tf.io.gfile.glob(pattern)))
    if not files:
        raise UsageError(f"--file_pattern={file_pattern} matches no files; check the path "
                         f"(and quote the pattern so the shell does not expand it).")
    report = ValidationReport(file_pattern=file_pattern, files=files)
    seen = validation.IdRegistry()
    for path in files:
        index = -1
        try:
            for index, serialized in enumerate(tfrecord_util.iter_serialized(path)):
                report.num_records += 1
                try:
                    values = tfrecord_util.example_to_dict(tf.train.Example.FromString(serialized))
                except DecodeError as e:
                    report.bad_records += 1
                    report.problems.append(Problem("corrupt_record", path, f"record {index}",
                                                   f"not a tf.train.Example ({e})"))
                    continue
                sid = values.get("image/source_id", [b""])
                sid = sid[0].decode("utf-8", "replace") if sid else ""
                item = f"record {index} (source_id {sid or '<empty>'})"
                errors, notes = validation.check_record(values, num_classes,
                                                        max_instances_per_image, label_map,
                                                        decode_images)
                if sid:
                    msg = seen.check(sid, f"{path} record {index}")
                    if msg:
                        errors.append(("duplicate_image_id", msg))
                for reason, detail in errors:
                    report.problems.append(Problem(reason, path, item, detail))
                report.bad_records += bool(errors)
                for note in notes:
                    report.notes[note] += 1
        except tf.errors.DataLossError as e:
            report.num_records += 1  # the unreadable tail counts as one bad record
            report.bad_records += 1
            report.problems.append(Problem("corrupt_record", path, f"record {index + 1}",
                                           f"the file is truncated or corrupt here "
                                           f"({e.message.splitlines()[0]})"))
    if report.num_records == 0:
        report.errors.append(f"the {len(files)} file(s) matching {file_pattern} hold no records.")
    return report


def validate_with_config(file_pattern: str, model_name: str, hparams: str = "",
                         decode_images: bool = True) -> ValidationReport:
    """`validate_tfrecords` with num_classes, max_instances_per_image and label_map taken from
    `hparams_config.get_detection_config(model_name, hparams)`."""
    import hparams_config

    try:
        config = hparams_config.get_detection_config(model_name, hparams or None)
    except hparams_config.HparamsError as e:
        raise UsageError(f"--model_name/--hparams: {e}") from None
    label_map = None
    if config.label_map is not None:
        try:
            label_map = label_maps.get_label_map(config.label_map)
        except label_maps.LabelMapError as e:
            raise UsageError(f"hparam label_map: {e}") from None
    height, width = hparams_config.image_hw(config)
    report = validate_tfrecords(file_pattern, config.num_classes, config.max_instances_per_image,
                                label_map, decode_images)
    report.checked_against = (f"against {model_name} (num_classes={config.num_classes}, "
                              f"max_instances_per_image={config.max_instances_per_image}, "
                              f"input {width}x{height}) ")
    return report


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("file_pattern", None, "TFRecord glob(s), comma-separated (required).")
    flags.DEFINE_string("model_name", "efficientdet-d1", "Model whose config the records must "
                        "fit.")
    flags.DEFINE_string("hparams", "", "Overrides: 'k=v,...' and/or a .yaml path, as in "
                        "main.py.")
    flags.DEFINE_boolean("decode_images", True, "Also decode every image (slower, thorough).")
    flags.DEFINE_integer("max_lines", None, "Print at most this many problem lines (default: "
                         "all).")


def main(argv: List[str]) -> None:
    from absl import flags

    import cli

    del argv
    cli.import_tensorflow()  # keeps TF's start-up noise (CUDA probes) out of the log
    f = flags.FLAGS
    try:
        report = validate_with_config(f.file_pattern or "", f.model_name, f.hparams,
                                      f.decode_images)
    except errors.UserError as e:  # bad flags or paths; a bug keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report.format(f.max_lines))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)

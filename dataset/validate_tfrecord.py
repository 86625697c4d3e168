r"""Check existing TFRecords against a model config before training or eval.

    python dataset/validate_tfrecord.py --file_pattern='tfrecord/pascal*.tfrecord' \
        --model_name=efficientdet-d0 --hparams=voc_config.yaml

The config is `hparams_config.get_detection_config(model_name, hparams)`; the files are those
training would read for the same pattern (`record_files.list_record_files`), and each record
goes through `dataset.validation.check_records` against the config's num_classes,
max_instances_per_image and (when set) label_map: missing keys, non-numeric or duplicate
image/source_id, undecodable images, width/height that disagree with the image, per-object
lists of different lengths, degenerate boxes, boxes outside [0, 1] (normalized
ymin/xmin/ymax/xmax), class ids outside 1..num_classes, too many instances, truncated/corrupt
files. Every problem is printed on one line naming the file, the record index (0-based, in file
order) and the source_id, then a summary by reason. Training and eval apply the same rules.

Exit status: 0 when no problem was found; 1 for a user error (a bad flag or config, a pattern
that matches no TFRecord file), printed as one line `validate_tfrecord.py: error: ...`; 2 when
the records have problems (the report on stdout names each, one line on stderr counts them).
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

import cli  # noqa: E402
import errors  # noqa: E402
from dataset import label_maps, tfrecord_util, validation  # noqa: E402
from dataset.validation import Problem  # noqa: E402

PROG = "validate_tfrecord.py"
# Exit status when the records have problems (0: none, 1: a user error such as a bad flag).
PROBLEMS_FOUND = 2


@dataclasses.dataclass
class ValidateOptions:
    """The tool's flags: each default and help text is written here once."""

    file_pattern: Optional[str] = cli.field(None, "TFRecord glob(s), comma-separated "
                                                  "(required).")
    model_name: str = cli.field("efficientdet-d1", "Model whose config the records must fit.")
    hparams: str = cli.field("", "Overrides: 'k=v,...' and/or a .yaml path, as in main.py.")
    decode_images: bool = cli.field(True, "Also decode every image (slower, thorough).")
    max_lines: Optional[int] = cli.field(None, "Print at most this many problem lines (default: "
                                               "all).")


def check_options(opts: ValidateOptions) -> None:
    """Flag-only checks; each error names the flag."""
    if not opts.file_pattern or not opts.file_pattern.strip():
        raise errors.UsageError("--file_pattern is required, e.g. "
                                "--file_pattern='tfrecord/train-*'.")
    if opts.max_lines is not None and opts.max_lines < 0:
        raise errors.UsageError(f"--max_lines must be >= 0 (or unset for all), got "
                                f"{opts.max_lines}.")


@dataclasses.dataclass
class ValidationReport:
    """What `validate_tfrecords` found. `problems` are in file/record order."""

    file_pattern: str
    files: List[str] = dataclasses.field(default_factory=list)
    num_records: int = 0
    bad_records: int = 0
    problems: List[Problem] = dataclasses.field(default_factory=list)
    notes: Counter = dataclasses.field(default_factory=Counter)
    checked_against: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

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
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def validate_tfrecords(file_pattern: str, num_classes: int,
                       max_instances_per_image: int = validation.DEFAULT_MAX_INSTANCES,
                       label_map: Optional[Mapping[int, str]] = None,
                       decode_images: bool = True) -> ValidationReport:
    """Check every record of the files matching `file_pattern` (comma-separated patterns ok).

    Raises `record_files.InputError` (a UsageError naming --file_pattern) when the pattern
    matches no TFRecord file, every match is empty, or it mixes two generations of shards.
    """
    import record_files

    files = record_files.list_record_files(file_pattern, "--file_pattern")
    report = ValidationReport(file_pattern=file_pattern, files=files)
    for verdict in validation.check_records(tfrecord_util.read_records(files), num_classes,
                                            max_instances_per_image, label_map, decode_images):
        report.num_records += 1
        report.bad_records += bool(verdict.problems)
        report.problems.extend(verdict.problems)
        report.notes.update(verdict.notes)
    return report


def validate_with_config(opts: ValidateOptions) -> ValidationReport:
    """`validate_tfrecords` of --file_pattern with num_classes, max_instances_per_image and
    label_map taken from `hparams_config.get_detection_config(model_name, hparams)`."""
    import hparams_config

    check_options(opts)
    try:
        config = hparams_config.get_detection_config(opts.model_name, opts.hparams or None)
    except hparams_config.HparamsError as e:
        raise errors.UsageError(f"--model_name/--hparams: {e}") from None
    label_map = None
    if config.label_map is not None:
        try:
            label_map = label_maps.get_label_map(config.label_map)
        except label_maps.LabelMapError as e:
            raise errors.UsageError(f"hparam label_map: {e}") from None
    height, width = hparams_config.image_hw(config)
    report = validate_tfrecords(opts.file_pattern, config.num_classes,
                                config.max_instances_per_image, label_map, opts.decode_images)
    report.checked_against = (f"against {opts.model_name} (num_classes={config.num_classes}, "
                              f"max_instances_per_image={config.max_instances_per_image}, "
                              f"input {width}x{height}) ")
    return report


def run(opts: ValidateOptions) -> int:
    """Validate and print the report; the exit status: 0 (no problem) or `PROBLEMS_FOUND`,
    said in one error line on stderr."""
    report = validate_with_config(opts)
    print(report.format(opts.max_lines), flush=True)
    if report.ok:
        return 0
    print(f"{PROG}: error: {report.bad_records} of {report.num_records} record(s) have problems "
          f"({', '.join(sorted(report.counts()))}); the lines above name each one.",
          file=sys.stderr)
    return PROBLEMS_FOUND


if __name__ == "__main__":
    # TensorFlow reads the records; imported first, its start-up noise stays out of the log.
    cli.run_tool(PROG, run, ValidateOptions, tensorflow=True)

"""Allowed ranges of numbers, written as intervals: one notation for hparams and flags.

A range is written as in mathematics, e.g. ``'[0, 1)'`` (0 allowed, 1 not), ``'(0, inf)'``
(any positive number) or ``'[1, 4096]'``. `Range.parse` reads it, `Range.problem` says what a
value outside it violates, and `out_of_range` words the one error line, so every error shows the
very range its table declares. No heavy imports: the CLIs use it before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

_INTERVAL = re.compile(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*")


def _number(text: str) -> float:
    value = float(text)  # 'inf', '-inf', '1e-3', '4096'
    return int(value) if value.is_integer() else value


def _show(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Range:
    """A closed, open or half-open interval of numbers (either end may be infinite)."""

    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = True

    @classmethod
    def parse(cls, text: str) -> Range:
        """'[0, 1)' -> Range(0, 1, True, False). A malformed text is a bug in a table."""
        m = _INTERVAL.fullmatch(text)
        if not m:
            raise ValueError(f"not an interval: {text!r}; write e.g. '[0, 1)' or '(0, inf)'")
        return cls(_number(m.group(2)), _number(m.group(3)), m.group(1) == "[",
                   m.group(4) == "]")

    @property
    def bounded(self) -> bool:
        """Whether both ends are finite (then an error also shows the whole range)."""
        return not (math.isinf(self.low) or math.isinf(self.high))

    def problem(self, value: Any) -> Optional[str]:
        """What `value` violates ('must be >= 1', 'must be < 1', 'must be a number'), or None
        when it is a number in the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and math.isnan(value)):
            return "must be a number"
        if value < self.low or (value == self.low and not self.low_inclusive):
            return f"must be {'>=' if self.low_inclusive else '>'} {_show(self.low)}"
        if value > self.high or (value == self.high and not self.high_inclusive):
            return f"must be {'<=' if self.high_inclusive else '<'} {_show(self.high)}"
        return None

    def __str__(self) -> str:
        return (f"{'[' if self.low_inclusive else '('}{_show(self.low)}, {_show(self.high)}"
                f"{']' if self.high_inclusive else ')'}")


def out_of_range(name: str, value: Any, allowed: Range, meaning: str = "") -> Optional[str]:
    """The one error line for `value` of `name` (e.g. "hparam 'momentum'", '--bm_runs') when
    it is outside `allowed`, else None; `meaning` says what the number is ('a fraction of the
    run's steps'). E.g. "--bm_runs must be >= 1, got 0"."""
    problem = allowed.problem(value)
    if problem is None:
        return None
    what = f"{name} is {meaning}:" if meaning else name
    whole = f" (allowed: {allowed})" if allowed.bounded else ""
    return f"{what} {problem}, got {value!r}{whole}"


# -------------------------------------------------------------------------------------------------
# Numbers the config and the dataset tools share: the tools run without TensorFlow, so they do
# not import hparams_config, and hparams_config sits below dataset/.
# -------------------------------------------------------------------------------------------------
def class_ids(num_classes: int) -> Range:
    """The class ids of a model with `num_classes` classes, 1..num_classes: num_classes counts
    the real classes and 0 is never a class (no background id). The one rule for label maps
    (the hparam and label-map files) and the records' labels."""
    return Range(1, num_classes)


# Ground-truth boxes an image may hold, by default: the hparam max_instances_per_image (the
# input pipeline pads every image's boxes to that many) and the dataset tools'
# --max_instances_per_image (what a converted record may hold).
DEFAULT_MAX_INSTANCES = 100

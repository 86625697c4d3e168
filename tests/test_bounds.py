"""bounds.py: the interval notation every range table uses, and its one error wording."""

import math

import pytest

from bounds import Range, out_of_range


def test_parse_and_show_round_trip():
    for text in ("[0, 1)", "(0, inf)", "[1, 4096]", "[-inf, 0]", "(0.5, 1e-05]"):
        assert str(Range.parse(text)) == text
    r = Range.parse(" ( 0 , 1 ] ")
    assert (r.low, r.high, r.low_inclusive, r.high_inclusive) == (0, 1, False, True)
    assert Range.parse("[0, inf)").high == math.inf and not Range.parse("[0, inf)").bounded
    with pytest.raises(ValueError, match="not an interval"):
        Range.parse("0..1")


@pytest.mark.parametrize("text,inside,outside", [
    ("[0, 1)", [0, 0.5, 0.999], [-0.001, 1, 1.5]),
    ("(0, inf)", [1e-9, 1e30], [0, -1]),
    ("[1, 10000]", [1, 10000], [0, 10001]),
])
def test_ends_are_open_or_closed_as_written(text, inside, outside):
    r = Range.parse(text)
    assert all(r.problem(v) is None for v in inside)
    assert all(r.problem(v) for v in outside)


def test_problems_and_the_error_line():
    r = Range.parse("[0, 1)")
    assert r.problem(-1) == "must be >= 0" and r.problem(1) == "must be < 1"
    assert Range.parse("(0, inf)").problem(0) == "must be > 0"
    for not_a_number in ("abc", None, True, float("nan")):
        assert r.problem(not_a_number) == "must be a number"
    assert out_of_range("--bm_runs", 0, Range.parse("[1, inf)")) == "--bm_runs must be >= 1, got 0"
    assert out_of_range("hparam 'alpha'", 2.0, Range.parse("[0, 1]"), "a weight") == (
        "hparam 'alpha' is a weight: must be <= 1, got 2.0 (allowed: [0, 1])")
    assert out_of_range("x", 0.5, r) is None

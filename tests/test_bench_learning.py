"""benchmarks/bench_learning.py's bookkeeping: curves read from eval_history.json, paired
differences with their standard error, and the report's tables (no training here)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import bench_learning  # noqa: E402


def _metrics(ap):
    return {"AP": ap, "AP50": ap + 0.2, "AP75": ap, "APs": ap / 2, "APm": ap, "APl": ap + 0.1,
            "loss": 1.0, "ARmax100": 0.5}


def test_curve_from_eval_history(tmp_path):
    (tmp_path / "eval_history.json").write_text(json.dumps({
        "format": 2, "archive_set": "k", "sets": {"k": {"set": {}, "steps": {
            "64": _metrics(0.1), "128": _metrics(0.3)}}}}))
    curve = bench_learning.read_curve(str(tmp_path))
    assert sorted(curve) == [64, 128]
    assert curve[128] == {"AP": 0.3, "AP50": 0.5, "AP75": 0.3, "APs": 0.15, "APm": 0.3,
                          "APl": 0.4}
    assert bench_learning.read_curve(str(tmp_path / "none")) == {}


CURVES = {"vfpn": {0: {64: _metrics(0.30)}, 1: {64: _metrics(0.34)}, 2: {64: _metrics(0.26)}},
          "bifpn": {0: {64: _metrics(0.28)}, 1: {64: _metrics(0.30)}, 2: {64: _metrics(0.25)}}}


def test_paired_difference_and_its_standard_error():
    mean, se, n = bench_learning.paired_difference(CURVES, "vfpn", "bifpn", 64)
    # differences 0.02, 0.04, 0.01: mean 0.02333, sample std 0.01528, se = std / sqrt(3)
    assert n == 3
    assert mean == pytest.approx(0.023333, abs=1e-6)
    assert se == pytest.approx(0.015275 / 3 ** 0.5, abs=1e-6)


def test_report_has_a_table_per_metric_and_the_paired_summary():
    costs = {"vfpn": {"params": 4.27e6, "flops": 0.696e9, "latency_ms": 21.0},
             "bifpn": {"params": 3.83e6, "flops": 0.578e9, "latency_ms": 17.5}}
    text = bench_learning.report(CURVES, ["vfpn", "bifpn"], "bifpn", 32,
                                 {"vfpn": [60.0], "bifpn": [54.0]}, "header", costs)
    for metric in ("AP", "AP50", "APs", "APm", "APl"):
        assert f"**{metric}**" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| vfpn | 0.3000"))
    assert "+0.0233 ± 0.0088 (n=3)" in row
    assert "4.27M | 0.696 | 21.0" in row

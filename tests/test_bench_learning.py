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


FAKE_MAIN = """
import json, os, sys
model_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--model_dir="))
os.makedirs(model_dir)
with open(os.path.join(os.path.dirname(__file__), "calls"), "a") as f:
    f.write(model_dir + "\\n")
with open(os.path.join(model_dir, "eval_history.json"), "w") as f:
    json.dump({"sets": {"k": {"steps": {"64": {"AP": 0.25, "APs": 0.1}}}}}, f)
"""


def _fake_run(tmp_path, work, copy, flag="--lr=1"):
    """train_one of a stand-in for main.py that writes one eval and logs its call."""
    script = tmp_path / "bin" / "fake_main.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(FAKE_MAIN)
    run_dir = os.path.join(work, "runs", "vfpn-s0")
    cmd = [sys.executable, str(script), f"--model_dir={run_dir}/model", flag]
    return bench_learning.train_one(cmd, run_dir, dict(os.environ),
                                    bench_learning.threading.Lock(), work, copy)


def test_records_carry_finished_runs_to_another_work_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_learning, "machine_line", lambda: "Machine: test CPU")
    copy = str(tmp_path / "records" / "vfpn-s0.json")
    first = _fake_run(tmp_path, str(tmp_path / "work1"), copy)
    assert first["curve"] == {64: {"AP": 0.25, "APs": 0.1}}
    assert first["machine"] == "Machine: test CPU"
    record = json.loads(open(copy).read())
    assert record["cmd"][1:] == ["--model_dir={work_dir}/runs/vfpn-s0/model", "--lr=1"]
    assert record["machine"] == "Machine: test CPU"
    # Another work dir (another session): the record is reused, nothing is trained again.
    again = _fake_run(tmp_path, str(tmp_path / "work2"), copy)
    assert again["curve"] == first["curve"]
    assert (tmp_path / "bin" / "calls").read_text().count("\n") == 1
    assert not (tmp_path / "work2").exists()
    # A record of another command is never overwritten or taken for this one.
    with pytest.raises(bench_learning.BenchError, match="finished run of another command"):
        _fake_run(tmp_path, str(tmp_path / "work3"), copy, flag="--lr=2")
    assert json.loads(open(copy).read()) == record


def test_a_run_finished_before_records_is_copied_with_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_learning, "machine_line", lambda: "Machine: test CPU")
    work = str(tmp_path / "work")
    _fake_run(tmp_path, work, "")
    old = os.path.join(work, "runs", "vfpn-s0", "bench_run.json")
    record = json.loads(open(old).read())
    del record["machine"]  # as records were before they named their machine
    record["cmd"] = [a.replace("{work_dir}", work) for a in record["cmd"]]  # absolute then
    open(old, "w").write(json.dumps(record))
    copy = str(tmp_path / "records" / "vfpn-s0.json")
    _fake_run(tmp_path, work, copy)
    assert json.loads(open(copy).read())["machine"] == "Machine: test CPU (when copied)"
    assert (tmp_path / "bin" / "calls").read_text().count("\n") == 1

"""benchmarks/bench_model.py and bench_end_to_end.py read model_inspect.py's --results_json
(through benchmarks/machine.model_inspect_results), not its printed lines: the keys they read
are the ones model_inspect writes. No timing is asserted."""

import os
import sys

import pytest

import inference
from conftest import SMALL, tiny_hparams

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import bench_model  # noqa: E402
import machine  # noqa: E402


def test_bench_model_row_from_a_bm_result():
    result = inference.BenchmarkResult(
        model_name="efficientdet-d0", fpn_name="vfpn", precision="float32", batch_size=2,
        runs=3, mean_batch_s=0.05, median_batch_s=0.04, params=4_312_345,
        flops_per_image=3_024_000_000)
    row = bench_model.row_values(result.as_dict())
    assert row == pytest.approx(dict(mean=25.0, median=20.0, fps=40.0, params=4.312345,
                                     flops=3.024))


@pytest.mark.heavy
def test_model_inspect_results_runs_the_cli_and_reads_its_json():
    """One real process, as the benchmarks run it; its temporary directory is gone after."""
    got = machine.model_inspect_results(["--runmode=bm", f"--hparams={tiny_hparams(**SMALL)}",
                                         "--bm_runs=1", "--threads=1"])
    assert (got["model_name"], got["runs"], got["batch_size"]) == ("efficientdet-d0", 1, 1)
    assert got["median_image_ms"] > 0 and got["params"] > 0
    with pytest.raises(RuntimeError, match="--results_json applies to --runmode=bm or "
                                           "--runmode=saved_model_benchmark"):
        machine.model_inspect_results(["--runmode=dry"])

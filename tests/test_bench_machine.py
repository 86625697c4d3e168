"""benchmarks/machine.py, what every benchmark script shares: the common flags at each script's
own defaults, the results-file policy, the markdown tables and the work directory."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import machine  # noqa: E402


def test_common_flags_take_the_scripts_defaults_and_the_shared_wording():
    p = machine.parser("Timing of things.\n\nMore.", runs=20, noise=12.0, batches="1,8")
    assert p.description == "Timing of things."
    args = p.parse_args(["--runs=3", "--noise", "0.5"])
    assert (args.runs, args.noise, args.batches, args.out, args.overwrite) == (3, 0.5, "1,8", "",
                                                                              False)
    assert " ".join(machine.COMMON_FLAGS["runs"][1].split()) in " ".join(p.format_help().split())
    with pytest.raises(SystemExit):  # argparse's usage error: --runs takes a whole number
        p.parse_args(["--runs=many"])
    assert not hasattr(machine.parser("x", out=False).parse_args([]), "out")
    with pytest.raises(KeyError):  # a flag that is not common is the script's own
        machine.parser("x", precision="")


def test_an_existing_results_file_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "results.md"
    out.write_text("earlier results")
    p = machine.parser("x")
    with pytest.raises(SystemExit) as e:
        machine.check_outputs(p.parse_args([f"--out={out}"]))
    assert "already exists; pass --overwrite" in str(e.value) and "--out" in str(e.value)
    machine.check_outputs(p.parse_args([f"--out={out}", "--overwrite"]))
    machine.print_and_save("| a |\n", str(out))
    assert out.read_text() == "| a |\n" and capsys.readouterr().out == "| a |\n\n"


def test_table_text():
    rows = [machine.row("d0", 1, "2.50")]
    assert machine.table(["Machine: x.", "Data: y."], ("model", "batch", "ms"), rows) == (
        "Machine: x.\nData: y.\n\n| model | batch | ms |\n|---|---|---|\n| d0 | 1 | 2.50 |\n")
    assert machine.table([], ("a",), []) == "| a |\n|---|\n"
    line = machine.line("float32")
    assert line.startswith("Machine: ") and " CPUs; Python " in line and line.endswith(
        "; float32.")


def test_work_dir_is_removed_only_when_it_is_temporary(tmp_path):
    with machine.work_dir(None, "bench_test_") as work:
        assert os.path.basename(work).startswith("bench_test_")
        open(os.path.join(work, "data"), "w").close()
    assert not os.path.exists(work)
    kept = tmp_path / "kept" / "deeper"
    with machine.work_dir(str(kept), "bench_test_") as work:
        assert work == str(kept) and kept.is_dir()
        open(os.path.join(work, "data"), "w").close()
    assert (kept / "data").exists()

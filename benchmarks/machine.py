"""The machine line, table output and model_inspect.py runs shared by the benchmark scripts
(they run as `python benchmarks/<name>.py`, so this module is importable beside them).

Results files follow outputs.py's policy: `check_outputs` refuses, before anything runs, an
`--out` (or `--plot`) file that exists unless `--overwrite` (`add_overwrite_flag`), and
`print_and_save` writes atomically. `model_inspect_results` runs a timing runmode in its own
process and reads its numbers from the --results_json file, not from the printed line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence

# outputs.py and cli.py live in the repository root, one level up.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cli  # noqa: E402
import outputs  # noqa: E402


def _cpuinfo(key: str) -> str:
    """The first `key : value` of /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_features() -> str:
    """The vector and matrix extensions that decide CPU inference speed (and whether bf16 is
    native): AVX2, AVX-512, AVX-512 BF16, AMX."""
    flags = _cpuinfo("flags").split()
    if not flags:
        return "CPU features unknown"
    amx = [n for n in flags if n.startswith("amx")]
    return ", ".join([f"AVX2 {'yes' if 'avx2' in flags else 'no'}",
                      f"AVX-512 {'yes' if 'avx512f' in flags else 'no'}",
                      f"AVX-512 BF16 {'yes' if 'avx512_bf16' in flags else 'no'}",
                      f"AMX {'yes (' + ' '.join(amx) + ')' if amx else 'no'}"])


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (else what `platform` knows) and its features."""
    name = (_cpuinfo("model name")
            or f"{platform.machine()} {platform.processor()}".strip() or "unknown CPU")
    return f"{name} ({cpu_features()})"


def run_model_inspect(args: Sequence[str]) -> None:
    """Run `model_inspect.py <args>` in its own process (a fresh runtime per measurement);
    RuntimeError with the end of its stderr if it fails."""
    cmd = [sys.executable, os.path.join(ROOT, "model_inspect.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")


def model_inspect_results(args: Sequence[str]) -> Dict[str, Any]:
    """The timing result of `model_inspect.py <args>` (--runmode=bm or saved_model_benchmark),
    read from the --results_json file it writes into a temporary directory: the fields of
    inference.BenchmarkResult or EndToEndResult, plus mean_image_ms, median_image_ms and fps."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        run_model_inspect([*args, f"--results_json={path}"])
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (--out, --plot); without it they "
                             "are refused before anything runs")


def check_outputs(args: argparse.Namespace, flags: Sequence[str] = ("out",)) -> None:
    """Exit with one line (status 1) before the benchmark runs when a file named by `flags`
    cannot be written, or exists and --overwrite was not given."""
    plan = [outputs.Planned(f, getattr(args, f), (getattr(args, f),)) for f in flags
            if getattr(args, f)]
    cli.run_and_report(os.path.basename(sys.argv[0]), outputs.check_plan, plan, (),
                       args.overwrite)


def print_and_save(text: str, out: Optional[str]) -> None:
    """Prints a results table and, when `out` is set, writes it there atomically (results_*.md;
    `check_outputs` decided beforehand that it may)."""
    print(text)
    if out:
        outputs.write_file(out, text)

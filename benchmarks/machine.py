"""The machine line and table output shared by the benchmark scripts (they run as
`python benchmarks/<name>.py`, so this module is importable beside them).

Results files follow outputs.py's policy: `check_outputs` refuses, before anything runs, an
`--out` (or `--plot`) file that exists unless `--overwrite` (`add_overwrite_flag`), and
`print_and_save` writes atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Optional, Sequence

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

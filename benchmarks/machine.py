"""The machine line and table output shared by the benchmark scripts (they run as
`python benchmarks/<name>.py`, so this module is importable beside them)."""

from __future__ import annotations

import platform
from typing import Optional


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".strip() or "unknown CPU"


def print_and_save(text: str, out: Optional[str]) -> None:
    """Prints a results table and, when `out` is set, writes it there (results_*.md)."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)

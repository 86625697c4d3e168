"""The machine line and table output shared by the benchmark scripts (they run as
`python benchmarks/<name>.py`, so this module is importable beside them)."""

from __future__ import annotations

import platform
from typing import Optional


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


def print_and_save(text: str, out: Optional[str]) -> None:
    """Prints a results table and, when `out` is set, writes it there (results_*.md)."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)

"""What the benchmark scripts share (they run as `python benchmarks/<name>.py`, so this module
is importable beside them): their flags, the machine line, tables and work directories.

* `parser(doc, out=True, **defaults)`: an argparse parser described by the script's docstring,
  with the flags every benchmark words alike (`--runs`, `--threads`, `--batches`, ...; see
  `COMMON_FLAGS`) at the script's own defaults, and `--out` / `--overwrite` for a results file.
* `line(details)`: the `Machine: ...` line above every table (CPU and its features, CPU count,
  Python and TensorFlow versions), `row(...)` and `table(...)` the markdown around the numbers.
* `work_dir(path, prefix)`: the directory a benchmark generates its data in.
* `model_inspect_results(args)`: runs a timing runmode of model_inspect.py in its own process
  and reads its numbers from the `--results_json` file, not from the printed line.

Results files follow outputs.py's policy: `check_outputs` refuses, before anything runs, an
`--out` (or `--plot`) file that exists unless `--overwrite`, and `print_and_save` writes
atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

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


# The flags several benchmarks share, worded once: {name: (type, help)}. Each script gives its
# own default (`parser(doc, runs=20)`); a flag that means something else in one script (e.g.
# bench_converters' --threads, a list of worker counts) is that script's own.
COMMON_FLAGS: Dict[str, Tuple[type, str]] = {
    "models": (str, "comma-separated model names"),
    "model_name": (str, "the model preset"),
    "fpns": (str, "comma-separated feature networks (hparam fpn_name)"),
    "batches": (str, "comma-separated batch sizes"),
    "runs": (int, "timed calls per measurement, after the warm-ups"),
    "warmup": (int, "untimed calls, batches or steps before the timed ones"),
    "repeats": (int, "interleaved rounds; the table reports the median over them"),
    "rounds": (int, "interleaved rounds; the table reports the median over them"),
    "threads": (int, "threads of each timed process (0: the runtime's default)"),
    "image_size": (int, "the model's input size, pixels"),
    "batch": (int, "training batch size"),
    "steps": (int, "training steps"),
    "every": (int, "steps between two examples/sec summaries (the first interval is dropped)"),
    "num_images": (int, "images generated with dataset/sample_dataset.py"),
    "min_size": (int, "smallest side of a generated image, pixels"),
    "max_size": (int, "largest side of a generated image, pixels"),
    "noise": (float, "pixel noise std; 0 gives flat, unrealistically cheap JPEGs"),
    "work_dir": (str, "where the generated data goes (default: a temporary directory, removed "
                      "afterwards)"),
}


def parser(doc: str, out: bool = True, **defaults: Any) -> argparse.ArgumentParser:
    """A benchmark's parser: its description is the first line of `doc` (the script's module
    docstring); one flag per keyword of `defaults`, typed and worded by `COMMON_FLAGS`, with
    that default; with `out`, `--out` (a markdown results file) and `--overwrite`."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    for name, default in defaults.items():
        kind, text = COMMON_FLAGS[name]
        p.add_argument(f"--{name}", type=kind, default=default, help=text)
    if out:
        p.add_argument("--out", default="", help="markdown results file")
        p.add_argument("--overwrite", action="store_true",
                       help="replace existing output files (--out, --plot, ...); without it "
                            "they are refused before anything runs")
    return p


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


def line(details: str = "") -> str:
    """`Machine: <CPU (features)>, <n> CPUs; Python <v>; TF <v>; <details>.`: the line above
    every results table (TensorFlow is imported for its version)."""
    tf = cli.import_tensorflow()
    return (f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
            f"TF {tf.__version__}" + (f"; {details}." if details else "."))


def row(*cells: Any) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(above: Sequence[str], columns: Sequence[str], rows: Sequence[str]) -> str:
    """A results text: the lines `above` (the machine line, what was measured) and a blank
    line, when there are any, then the markdown table of `columns` and `rows` (see `row`)."""
    head = [*above, ""] if above else []
    return "\n".join([*head, row(*columns), "|" + "---|" * len(columns), *rows]) + "\n"


@contextlib.contextmanager
def work_dir(path: Optional[str], prefix: str) -> Iterator[str]:
    """`path` when given (created if needed, kept afterwards), else a new temporary directory
    named `prefix...`, removed with everything in it afterwards."""
    if path:
        os.makedirs(path, exist_ok=True)
        yield path
        return
    made = tempfile.mkdtemp(prefix=prefix)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def quiet_env(**extra: str) -> Dict[str, str]:
    """The environment of a child process: this one's, with TensorFlow's C++ INFO and WARNING
    lines off, plus `extra`."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)

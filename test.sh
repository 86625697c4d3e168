#!/usr/bin/env bash
# Set up (or reuse) .venv, install requirements.txt, lint, and run the test suite.
#   ./test.sh                 what CI runs: lint, the suite, then the docs tests (the tutorial
#                             notebook, the README's commands and demo.sh, run as a user would)
#   ./test.sh tests/test_x.py any other pytest arguments (lint, then just that)
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=/dev/null
. ./tools/venv.sh
python -m ruff check .
if [ $# -gt 0 ]; then
    exec python -m pytest -q "$@"
fi
python -m pytest -q
python -m pytest -q -m docs -n 0

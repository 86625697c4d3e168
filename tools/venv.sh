# Sourced by demo.sh and test.sh: activate .venv, creating it with a Python 3.9-3.11 (what
# TensorFlow 2.15 supports) and installing requirements.txt when it is new or the
# requirements changed since the last install.
_vfpn_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.10 python3.9 python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' \
                2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    if ! _py=$(_vfpn_python); then
        echo "error: no Python 3.9-3.11 found (TensorFlow 2.15 needs one); set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    echo "creating .venv with $("$_py" --version 2>&1)"
    "$_py" -m venv .venv
fi
# shellcheck source=/dev/null
. .venv/bin/activate
if ! cmp -s requirements.txt .venv/.requirements-installed 2>/dev/null; then
    echo "installing requirements.txt into .venv (a few minutes the first time)"
    python -m pip install -q --upgrade pip
    python -m pip install -q -r requirements.txt
    cp requirements.txt .venv/.requirements-installed
fi

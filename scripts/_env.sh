# Sourced by scripts/test.sh and scripts/demo.sh: make sure ./.venv exists and holds cyclekit
# with the extras named in $1 (e.g. "dev"); reinstall only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "cyclekit needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.x" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv (first run: installs PyTorch, a few minutes)" >&2
    "$PY" -m venv .venv
fi
stamp=".venv/.cyclekit-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
fi

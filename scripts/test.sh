#!/usr/bin/env bash
# Install cyclekit with its dev extras into ./.venv (created if missing) and run the test suite.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# The stamp skips the (slow) reinstall when pyproject.toml has not changed.
stamp=.venv/.cyclekit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi
exec .venv/bin/python -m pytest "$@"

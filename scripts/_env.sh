# Sourced by scripts/test.sh and scripts/demo.sh: make sure ./.venv exists and holds cyclekit
# with the extras named in $CYCLEKIT_EXTRAS (e.g. "dev"). Installs again only when
# pyproject.toml changed or more extras are wanted than were installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
want="${CYCLEKIT_EXTRAS:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "cyclekit needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.x" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv (first run: installs PyTorch, a few minutes)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.cyclekit-installed
have=$(cat "$stamp" 2>/dev/null || echo "none")
if [ "$have" = "none" ] || [ pyproject.toml -nt "$stamp" ] || { [ -n "$want" ] && [ "$have" != "$want" ]; }; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${want:+[$want]}"
    echo "$want" > "$stamp"
fi

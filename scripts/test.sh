#!/usr/bin/env bash
# Create ./.venv if missing, install cyclekit with its dev extras, run the test suite.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
CYCLEKIT_EXTRAS=dev source "$(dirname "$0")/_env.sh"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Create ./.venv if missing, install cyclekit, run `cyclekit demo` (a few minutes on a CPU).
# Usage: ./scripts/demo.sh [cyclekit demo options...]   e.g. ./scripts/demo.sh --minutes 1
set -euo pipefail
CYCLEKIT_EXTRAS="" source "$(dirname "$0")/_env.sh"
exec .venv/bin/cyclekit demo "$@"

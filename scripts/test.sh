#!/usr/bin/env bash
# The project's test command: set up .venv (scripts/setup.sh) and run the whole test suite,
# slow end-to-end tests included. Extra arguments go to pytest (e.g. -m "not slow", -k losses).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The project's test command: set up .venv (scripts/setup.sh) and run the whole test suite, slow
# end-to-end tests included, then the verl integration tests in their own venv
# (scripts/test_verl.sh; verl pins its own transformers). Extra arguments go to the main pytest run
# (e.g. -m "not slow", -k losses); SDAR_SKIP_VERL=1 skips the verl part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
if [ "${SDAR_SKIP_VERL:-0}" != "1" ]; then
    bash scripts/test_verl.sh -q
fi

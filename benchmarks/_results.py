"""What every side-by-side benchmark records besides its numbers: the machine and the result file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine_info() -> dict:
    """Versions, cores, torch threads and the 1-minute load average (shared machines are noisy)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
    }


def write_result(result: dict, path: Path) -> Path:
    """Write ``result`` as indented JSON to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path

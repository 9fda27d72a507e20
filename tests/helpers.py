"""Plain helpers several test files share (fixtures live in conftest.py).

* ``TOY_RUN``: the config of a tiny training run (tiny-random model, toy environment, two
  iterations of two tasks x two copies), written with ``write_run_config``; ``read_jsonl`` reads
  the run's ``metrics.jsonl`` / ``samples.jsonl``.
* ``free_port``: a loopback port nothing listens on (a master port, or a dead server's address).
* ``torchrun_command``: ``python -m torch.distributed.run ... -m sdar.cli ARGS`` on one node.
* ``SEARCH_CORPUS``: six Wikipedia-style passages for the Search-QA tests.
* ``lock_held_elsewhere``: another real process holding a run folder's lock, as a live trainer does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sdar.envs.search.retrievers import Document

# ---- a tiny training run ---------------------------------------------------------------------
TOY_RUN: dict[str, Any] = {
    "method": "sdar",
    "model": {"name": "tiny-random"},
    "env": {"name": "toy", "prompt_mode": "action_only", "max_steps": 3},
    "rollout": {"tasks_per_iteration": 2, "group_size": 2, "max_prompt_tokens": 256,
                "generation": {"max_new_tokens": 6}},
    "teacher": {"max_prompt_tokens": 512},
    "optim": {"lr": 1.0e-3, "mini_batch_size": 6, "micro_batch_size": 3},
    "eval": {"every": 1, "num_tasks": 2, "before_training": True},
    "iterations": 2,
    "save_every": 1,
    "log_samples": 2,
    "tensorboard": True,
}


def write_run_config(path: Path, base: dict[str, Any] = TOY_RUN, **top: Any) -> Path:
    """Write ``base`` with its top-level keys replaced by ``top`` as YAML to ``path``."""
    data = copy.deepcopy(base)
    data.update(top)
    path.write_text(yaml.safe_dump(data))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- processes -------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port that was free a moment ago; nothing listens on it when this returns."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(port: int, *sdar_args: str, nproc: int = 2) -> list[str]:
    """``sdar *sdar_args`` under ``torchrun`` with ``nproc`` processes on this machine."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "sdar.cli", *sdar_args,
    ]


# ---- Search-QA -------------------------------------------------------------------------------
SEARCH_CORPUS = [
    Document(
        "0",
        '"Chuck Berry"\nAmerican musician (1926–2017). Charles Berry was a guitarist and singer.',
    ),
    Document(
        "1", '"Moby-Dick"\nNovel by Herman Melville. Moby-Dick is an 1851 novel about a whale.'
    ),
    Document(
        "2", '"Herman Melville"\nAmerican writer (1819–1891). Herman Melville wrote Moby-Dick.'
    ),
    Document("3", '"Paris"\nCapital of France. Paris is the capital and largest city of France.'),
    Document(
        "4", '"France"\nCountry in Western Europe. France is a country whose capital is Paris.'
    ),
    Document("5", '"Guitar"\nStringed musical instrument. The guitar has six strings.'),
]


# ---- a run folder another process holds ---------------------------------------------------------------
@contextlib.contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[int]:
    """Another Python process takes ``folder``'s lock (``RunLock``, as ``sdar train`` and
    ``sdar sft`` do) and keeps it until the block ends, when it is killed with SIGKILL (no clean-up
    of its own: the operating system drops the lock). Yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from sdar.trainer.run_dir import RunLock; lock = RunLock(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(600)", str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stdout.close()

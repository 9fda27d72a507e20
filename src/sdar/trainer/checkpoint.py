"""Atomic, resumable checkpoints.

A checkpoint is a folder ``RUN_DIR/checkpoints/iter_NNNNNN/`` holding

* ``model.pt``: the trainable weights (the LoRA adapter only, when LoRA is used);
* ``optimizer.pt``: the AdamW state;
* ``trainer_state.pt``: iteration, the RNG states (Python, NumPy, torch, the sampling generator)
  and anything else the trainer needs to continue exactly where it stopped.

It is written into a hidden temporary folder and renamed into place, so a crash or Ctrl-C while
saving never leaves a half-written checkpoint that resume would pick up. The learning-rate schedule
is a function of the iteration, so it needs no state of its own.

Weights and optimizer state are always stored as whole tensors, also when training shards them
(``distributed.strategy: fsdp``): the saving functions gather the shards, the loading functions cut
this rank's shard, so any checkpoint resumes on any number of processes, sharded or not.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from sdar.trainer.sharding import shard_like, whole

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^iter_(\d{6})$")


def trainable_state_dict(model: torch.nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all of them for full fine-tuning, the adapter for LoRA),
    whole and on the CPU. A sharded model gathers each one: every rank must call this, and the ranks
    that do not write pass ``keep=False`` (they join the gathers and get an empty dict)."""
    state = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = whole(p.detach())
            if keep:
                state[name] = full.cpu().clone()
    return state


def load_trainable_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [k for k, p in params.items() if p.requires_grad and k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            f"was it written with a different model or LoRA setting?"
        )
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(shard_like(params[k], v))


def optimizer_state_dict(optimizer: torch.optim.Optimizer, keep: bool = True) -> dict[str, Any]:
    """``optimizer.state_dict()`` with whole tensors (sharded moments gathered, on the CPU), so the
    file is the same whether training was sharded or not. Under sharding every rank must call it;
    ``keep=False`` as in :func:`trainable_state_dict` (returns an empty dict)."""
    state = optimizer.state_dict()  # its per-parameter dicts are the live ones: build new ones
    gathered = {
        index: {key: whole(v).cpu() if isinstance(v, DTensor) else v for key, v in entries.items()}
        for index, entries in state["state"].items()
    }
    return {**state, "state": gathered} if keep else {}


def load_optimizer_state_dict(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a state written by :func:`optimizer_state_dict` (or ``optimizer.state_dict()``) into
    ``optimizer``, whose parameters may be sharded: each moment is cut like its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # the moments have their parameter's shape; "step" is a scalar and stays whole
    sharded = {
        index: {key: shard_like(params[index], v) if torch.is_tensor(v) and v.dim() > 0 else v
                for key, v in entries.items()}
        for index, entries in state["state"].items()
    }
    optimizer.load_state_dict({**state, "state": sharded})


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_checkpoint(run_dir: str | Path, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``iteration`` atomically and keep only the ``keep`` most recent ones."""
    return write_checkpoint(run_dir, iteration, trainable_state_dict(model), optimizer_state_dict(optimizer),
                            trainer_state, keep)


def write_checkpoint(run_dir: str | Path, iteration: int, model_state: dict[str, torch.Tensor],
                     optimizer_state: dict[str, Any], trainer_state: dict[str, Any], keep: int = 2) -> Path:
    """:func:`save_checkpoint` from states already gathered (by every rank of a sharded model)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:06d}"
    tmp = root / f".tmp-iter_{iteration:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(model_state, tmp / "model.pt")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save({"iteration": iteration, **trainer_state}, tmp / "trainer_state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run directory (then its latest checkpoint)."""
    path = Path(path)
    if (path / "trainer_state.pt").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {path} (expected {path}/checkpoints/iter_NNNNNN/)")
    return latest


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
                    ) -> dict[str, Any]:
    """Load weights (and optimizer state when given) from a checkpoint; return its trainer state."""
    path = resolve_checkpoint(path)
    load_trainable_state_dict(model, torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    if optimizer is not None:
        load_optimizer_state_dict(optimizer, torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    return torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)


def apply_warm_start(model, lora, checkpoint: str | Path):
    """Load the warm start ``checkpoint`` (a run directory or a checkpoint folder, e.g. what
    ``sdar sft`` wrote) into a freshly loaded policy; returns ``(model, state)``.

    With LoRA (``lora`` is the run's :class:`~sdar.models.loading.LoraSettings`) the warm-start
    adapter is merged into the base weights and a fresh adapter is returned in its place
    (:func:`~sdar.models.loading.fold_adapter`): the KL reference, the adapter switched off, is then
    the warm-started policy, and the run's checkpoints hold the new adapter only, so whatever loads
    them (resume, ``sdar eval``) applies the same warm start first. ``state`` is the loaded tensors
    (for full fine-tuning the trainer copies them into the frozen reference model too).
    """
    from sdar.models.loading import fold_adapter, is_lora

    state = torch.load(resolve_checkpoint(checkpoint) / "model.pt", map_location="cpu", weights_only=True)
    load_trainable_state_dict(model, state)
    if is_lora(model):
        model = fold_adapter(model, lora)
    return model, state

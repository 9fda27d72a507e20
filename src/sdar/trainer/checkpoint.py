"""Atomic, resumable checkpoints.

A checkpoint is a folder ``RUN_DIR/checkpoints/iter_NNNNNN/`` holding

* ``model.pt``: the trainable weights (the LoRA adapter only, when LoRA is used);
* ``optimizer.pt``: the AdamW state;
* ``trainer_state.pt``: iteration, the RNG states (Python, NumPy, torch, the sampling generator),
  the warm start the weights sit on (:func:`warm_start_record`; resume and ``sdar eval`` check it)
  and anything else the trainer needs to continue exactly where it stopped (e.g. the training
  metrics of an iteration whose validation was interrupted), as plain numbers, strings, lists,
  dicts and tensors.

It is written into a hidden temporary folder (``.tmp-iter_NNNNNN-<pid>-<random>``) and renamed into place, so
a crash or Ctrl-C while saving never leaves a half-written checkpoint that resume would pick up; a
failed write removes its folder and says which file failed and why (a full disk by name), and
:func:`remove_partial_checkpoints` clears folders a killed process left behind. The learning-rate
schedule is a function of the iteration, so it needs no state of its own.

Loading never runs code from a checkpoint: every file is read with ``torch.load(weights_only=True)``
(tensors and plain containers only), so a file carrying a pickled Python object is refused
(:class:`UnsafeCheckpointError`) instead of executed. A file that cannot be read (truncated,
corrupt) raises :class:`CheckpointError` naming it; :func:`read_latest_checkpoint` then falls back to
the previous complete checkpoint with a warning.

Weights and optimizer state are always stored as whole tensors, also when training shards them
(``distributed.strategy: fsdp``): the saving functions gather the shards, the loading functions cut
this rank's shard, so any checkpoint resumes on any number of processes, sharded or not.
"""

from __future__ import annotations

import errno
import logging
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from sdar.errors import UserError
from sdar.storage import atomic_directory
from sdar.trainer.sharding import shard_like, whole

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^iter_(\d{6})$")
_PARTIAL = re.compile(r"^\.tmp-iter_\d{6}-\d+(-[0-9a-f]+)?$")
CHECKPOINT_FILES = ("model.pt", "optimizer.pt", "trainer_state.pt")

# Checkpoints written before the trainer state was stored without NumPy objects hold NumPy's RNG
# state as a pickled array; rebuilding an array runs no user code, so these few are allowed.
_NUMPY_ARRAY_GLOBALS = [np.ndarray, np.dtype, (getattr(np, "_core", None) or np.core).multiarray._reconstruct,
                        *[t for t in [getattr(getattr(np, "dtypes", None), "UInt32DType", None)] if t is not None]]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file cannot be written or read; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds a pickled Python object, which loading would have to execute."""


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
    """The RNG states as plain numbers and tensors (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple: a checkpoint of an earlier sdar version
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
    final = Path(run_dir) / "checkpoints" / f"iter_{iteration:06d}"
    try:
        # written as .tmp-iter_NNNNNN-<pid>-<random> (what remove_partial_checkpoints clears), renamed;
        # a failed or interrupted write leaves no partial folder behind
        with atomic_directory(final, replace=True) as tmp:
            for name, state in zip(CHECKPOINT_FILES, (model_state, optimizer_state,
                                                      {"iteration": iteration, **trainer_state})):
                _save_file(state, tmp / name)
    except OSError as err:  # creating, replacing or renaming a folder (a file: CheckpointError)
        raise CheckpointError(write_failure(Path(err.filename or final), err)) from err
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def _save_file(obj: Any, path: Path) -> None:
    """``torch.save`` through a Python file, so a full disk surfaces as ``OSError(ENOSPC)``;
    any failure becomes a :class:`CheckpointError` naming ``path``."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch's writer saw a short write
        raise CheckpointError(write_failure(path, err)) from err


def write_failure(path: Path, err: BaseException) -> str:
    """One line saying which file could not be written, why, and how much space is left there."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif isinstance(err, OSError) and err.strerror:
        reason = err.strerror
    else:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    where = Path(path)
    while not where.exists() and where.parent != where:
        where = where.parent
    try:
        free = f"; {shutil.disk_usage(where).free / 2**30:.2f} GiB free on {where}"
    except OSError:
        free = ""
    return f"could not write checkpoint file {path}: {reason}{free}"


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes that never finished (a process killed or a
    disk full while saving); return them. Only one process writes a run directory, so any such
    folder found at start-up is dead."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    partial = sorted(p for p in root.iterdir() if p.is_dir() and _PARTIAL.match(p.name))
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    if partial:
        logger.info("removed %d unfinished checkpoint folder(s): %s", len(partial), ", ".join(p.name for p in partial))
    return partial


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
        raise CheckpointError(f"no checkpoint in {path} (expected {path}/checkpoints/iter_NNNNNN/)")
    return latest


def load_file(path: str | Path) -> Any:
    """One checkpoint file, read without running code from it (``weights_only=True``).

    Raises :class:`UnsafeCheckpointError` when the file holds a pickled Python object, and
    :class:`CheckpointError` naming the file when it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        unsafe = re.search(r"Unsupported global[^\n]*", text)  # other opcodes: a corrupt file
        if unsafe:
            raise UnsafeCheckpointError(
                f"{path} holds a pickled Python object ({unsafe.group(0).split(' was ')[0]}); loading it could "
                f"run arbitrary code, so it is refused. Only load checkpoints written by sdar") from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        raise CheckpointError(f"checkpoint file {path} is corrupt: "
                              f"{detail.group(1).strip() if detail else _last_line(text)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated: {_last_line(str(err))}") from None


def _last_line(text: str) -> str:
    """The gist of a torch error: its last non-empty line, up to its first full stop."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1].split(". ")[0] if lines else "unreadable"


def read_checkpoint(path: str | Path, with_optimizer: bool = True) -> dict[str, Any]:
    """All files of checkpoint ``path`` (a checkpoint folder or a run directory), read into memory
    before anything is applied: ``{"path", "model", "optimizer" (or None), "trainer_state"}``."""
    path = resolve_checkpoint(path)
    return {"path": path, "model": load_file(path / "model.pt"),
            "optimizer": load_file(path / "optimizer.pt") if with_optimizer else None,
            "trainer_state": load_file(path / "trainer_state.pt")}


def read_latest_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """:func:`read_checkpoint` of the newest checkpoint of ``run_dir`` that reads; an unreadable
    one is skipped with a warning naming its file (a checkpoint carrying a pickled object is not:
    that is an error). Raises :class:`CheckpointError` when none is left."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'} to resume from")
    errors = []
    for path in reversed(found):
        try:
            checkpoint = read_checkpoint(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as err:
            errors.append(str(err))
            logger.warning("%s; trying the previous checkpoint", err)
            continue
        if errors:
            logger.warning("resuming from the older checkpoint %s: the newer one is unreadable", path.name)
        return checkpoint
    raise CheckpointError(f"no readable checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(errors)}")


def apply_checkpoint(checkpoint: dict[str, Any], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load what :func:`read_checkpoint` read into ``model`` (and ``optimizer``); return the trainer state."""
    load_trainable_state_dict(model, checkpoint["model"])
    if optimizer is not None:
        load_optimizer_state_dict(optimizer, checkpoint["optimizer"])
    return checkpoint["trainer_state"]


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
                    ) -> dict[str, Any]:
    """Load weights (and optimizer state when given) from a checkpoint; return its trainer state."""
    return apply_checkpoint(read_checkpoint(path, with_optimizer=optimizer is not None), model, optimizer)


def warm_start_record(checkpoint: str | Path | None) -> dict[str, str] | None:
    """What a run's checkpoints record of the warm start under them (``trainer_state["warm_start"]``):
    the warm start's checkpoint folder and the sha256 of its weights file; ``None`` without one.
    The digest is remembered for the process while the file's size and mtime stay the same, so a
    resume's check and the trainer's record read the weights once."""
    from sdar.models.packaged import file_sha256

    if not checkpoint:
        return None
    folder = resolve_checkpoint(checkpoint).resolve()
    return {"path": str(folder), "sha256": file_sha256(folder / "model.pt")}


def warm_start_for(trainer_state: dict[str, Any], init_checkpoint: str | Path | None, where: str | Path
                   ) -> str | None:
    """The warm start to load before checkpoint ``where`` (whose trainer state is ``trainer_state``),
    given the config's ``init_checkpoint``.

    A checkpoint records the warm start it was trained on (:func:`warm_start_record`). Without
    ``init_checkpoint`` the recorded one is used (a config other than the run's own, e.g.
    ``sdar eval CHECKPOINT --config FILE``, then still evaluates the trained policy, not its adapter
    on the bare model); a given one must hold the same weights. Raises :class:`CheckpointError` when
    the weights differ, when the recorded folder is gone and none is given, or when a checkpoint
    trained without a warm start is given one. Checkpoints written before this record existed are
    trusted to the config.
    """
    if "warm_start" not in trainer_state:
        return str(init_checkpoint) if init_checkpoint else None
    recorded = trainer_state["warm_start"]
    if recorded is None:
        if init_checkpoint:
            raise CheckpointError(f"{where} was trained without a warm start; init_checkpoint={init_checkpoint} would "
                                  f"put other weights under it: drop init_checkpoint")
        return None
    if not init_checkpoint:
        if not (Path(recorded["path"]) / "model.pt").is_file():
            raise CheckpointError(f"{where} was trained on the warm start {recorded['path']}, which is gone: give "
                                  f"init_checkpoint=DIR with the same weights (sha256 {recorded['sha256'][:12]}...)")
        logger.info("warm start %s, recorded in %s", recorded["path"], where)
        init_checkpoint = recorded["path"]
    found = warm_start_record(init_checkpoint)
    if found["sha256"] != recorded["sha256"]:
        raise CheckpointError(f"{where} was trained on the warm start {recorded['path']} (sha256 "
                              f"{recorded['sha256'][:12]}...); init_checkpoint={init_checkpoint} holds other weights "
                              f"(sha256 {found['sha256'][:12]}...): drop init_checkpoint to load the recorded one, "
                              f"or name a folder with the same weights")
    return str(init_checkpoint)


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

    state = load_file(resolve_checkpoint(checkpoint) / "model.pt")
    load_trainable_state_dict(model, state)
    if is_lora(model):
        model = fold_adapter(model, lora)
    return model, state

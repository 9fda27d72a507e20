"""Checks on a run directory that happen before anything is loaded or written.

A command that refuses a run directory must leave it exactly as it was, so every check here only
reads. :func:`check_new_run` decides whether a new run may start in a directory;
:func:`clear_unresumable_run` is the one deletion, done only when the user asked for it
(``sdar train --restart``) and only for a run that has no checkpoint to resume from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sdar.errors import UserError
from sdar.reporting.run_log import METRICS_FILE, SAMPLES_FILE, SKILLS_FILE, TENSORBOARD_DIR
from sdar.trainer.checkpoint import list_checkpoints, remove_partial_checkpoints

LOG_FILES = (METRICS_FILE, SAMPLES_FILE, SKILLS_FILE)
"""The files a training run appends to; a new run must never mix its lines into an old run's."""


class RunDirError(UserError, FileExistsError):
    """The run directory cannot be used as asked; the message names the flag that helps."""


def check_writable(run_dir: Path) -> None:
    """Raise unless ``run_dir`` is a directory this process can write to, or can be created (its
    nearest existing parent is a writable directory). Creates nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    existing = run_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"cannot create run directory {run_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {existing} (permission denied); choose another --output-dir")


def logged_files(run_dir: Path) -> list[str]:
    """Names of the run's log files that hold anything."""
    return [name for name in LOG_FILES if (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0]


def check_new_run(run_dir: Path, restart: bool = False, resumable: bool = True) -> None:
    """Raise :class:`RunDirError` unless a new run may start in ``run_dir``; writes nothing.

    Refused: a directory holding a complete checkpoint (continue it with ``--resume``), and one
    holding logs but no checkpoint, i.e. a run stopped before its first checkpoint, which cannot be
    resumed: ``restart=True`` accepts that one (the caller then calls
    :func:`clear_unresumable_run`). ``resumable=False`` (``sdar sft``, which has no resume) words
    the messages without ``--resume`` / ``--restart``.
    """
    check_writable(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        remedy = (f"continue it with `sdar train --resume {run_dir}`, or choose another --output-dir"
                  if resumable else "choose another --output-dir, or delete it first")
        raise RunDirError(f"{run_dir} already holds a run (checkpoint {checkpoints[-1].name}); {remedy}")
    logs = logged_files(run_dir)
    if logs and not (restart and resumable):
        if not resumable:
            raise RunDirError(f"{run_dir} already holds {', '.join(logs)} of an earlier run; choose another "
                              f"--output-dir, or delete it first")
        raise RunDirError(f"{run_dir} holds {', '.join(logs)} of a run stopped before its first checkpoint, "
                          f"which cannot be resumed; start it again with --restart (replaces those logs), "
                          f"or choose another --output-dir")


def clear_unresumable_run(run_dir: Path) -> list[str]:
    """Delete what a run without checkpoints left in ``run_dir`` (its logs, TensorBoard events,
    report, config and partial checkpoint folders); return the names deleted. Refuses a directory
    holding a complete checkpoint: that run can be resumed, and deleting it is the user's call."""
    if list_checkpoints(run_dir):
        raise RunDirError(f"{run_dir} holds checkpoints; --restart only replaces a run without any")
    removed = [name for name in (*LOG_FILES, "config.yaml") if (run_dir / name).is_file()]
    for name in removed:
        (run_dir / name).unlink()
    for name in (TENSORBOARD_DIR, "report"):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
            removed.append(name + "/")
    removed += [p.name for p in remove_partial_checkpoints(run_dir)]
    return removed

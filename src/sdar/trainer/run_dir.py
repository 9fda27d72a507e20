"""Checks on a run directory that happen before anything is loaded or written, and its lock.

A command that refuses a run directory must leave it exactly as it was, so every check here only
reads. :func:`check_new_run` decides whether a new run may start in a directory;
:func:`clear_unresumable_run` is the one deletion, done only when the user asked for it
(``sdar train --restart``) and only for a run that has no checkpoint to resume from.
:class:`RunLock` keeps a second trainer out of a directory one is training in.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the checks above still hold)
    fcntl = None

from sdar.errors import UserError
from sdar.reporting.run_log import (
    GATE_ACTIONS_FILE,
    METRICS_FILE,
    SAMPLES_FILE,
    SKILLS_FILE,
    TENSORBOARD_DIR,
)
from sdar.trainer.checkpoint import list_checkpoints, remove_partial_checkpoints

LOG_FILES = (METRICS_FILE, SAMPLES_FILE, SKILLS_FILE, GATE_ACTIONS_FILE)
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


LOCK_FILE = ".sdar-lock"
"""Hidden file in the run directory that the training process holds an exclusive ``flock`` on; it
holds that process's pid. The file stays after the run: only a live process's lock counts."""


LOCK_WAIT = 0.5
"""Seconds :class:`RunLock` keeps trying before it refuses: a :func:`lock_holder` probe holds the
lock for an instant, and a trainer starting then must not be refused for it."""


def _flock_within(handle, seconds: float) -> None:
    """An exclusive ``flock`` on ``handle``, retried for up to ``seconds``; ``BlockingIOError`` when
    another holder keeps it that long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class RunLock:
    """An exclusive lock on ``run_dir`` (created if missing) for as long as this process trains there.

    A second trainer on the same directory, in another process or this one, raises
    :class:`RunDirError` naming the holder's pid instead of mixing its checkpoints and log lines
    into the first one's. The operating system drops the lock when the holder exits, killed or not,
    so no stale lock ever needs clearing. :meth:`release` (idempotent) drops it sooner.
    """

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_FILE
        self._file = None
        if fcntl is None:
            return
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            _flock_within(handle, LOCK_WAIT)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirError(
                f"{run_dir} is in use: another sdar process (pid {holder}) is training there; let it finish or "
                f"stop it (SIGINT or SIGTERM writes a checkpoint) and resume, or choose another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None


def lock_holder(run_dir: str | Path) -> str | None:
    """The pid, as its lock file names it, of a live process holding ``run_dir``'s lock
    (:class:`RunLock`); None when none does. Writes nothing: a folder without a lock file has no
    holder, and a free lock is taken (shared) and dropped at once; a :class:`RunLock` taken in that
    instant waits for it (``LOCK_WAIT`` seconds at most)."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        try:  # shared: it conflicts with a holder's exclusive lock only, and a read-only file allows it
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None

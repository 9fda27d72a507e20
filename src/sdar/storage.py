"""Where sdar keeps the files it builds, and how it writes folders so that no reader sees half of one.

* :func:`cache_root`: the one cache folder shared by the converted packaged models
  (``checkpoints/``, ``tokenizers/``), the generated ALFWorld games (``alfworld/``) and the offline
  Search-QA set (``search/``). First match wins: ``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar``,
  ``~/.cache/sdar``.
* :func:`atomic_directory`: write a folder under a temporary name beside its destination and rename
  it into place only when the writing finished; used for run checkpoints and cache entries.
* :func:`publish_directory`: that final rename on its own, for writers that build the folder inside
  a larger scratch folder of their own.

A rename within one file system is atomic, so a crash, Ctrl-C or full disk while writing leaves at
most a hidden ``.tmp-...`` folder, never a destination that looks complete but is not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def cache_root(*parts: str) -> Path:
    """The sdar cache folder joined with ``parts``: ``$SDAR_CACHE``, else ``$XDG_CACHE_HOME/sdar``,
    else ``~/.cache/sdar`` (empty variables count as unset; ``~`` is expanded). Nothing is created.
    """
    if os.environ.get("SDAR_CACHE"):
        root = Path(os.environ["SDAR_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "sdar"
    else:
        root = Path.home() / ".cache" / "sdar"
    return root.joinpath(*parts)


def publish_directory(
    folder: str | os.PathLike, target: str | os.PathLike, replace: bool = False
) -> Path:
    """Rename the finished ``folder`` to ``target`` (same file system) and return ``target``.

    When ``target`` already exists: with ``replace`` it is deleted first (for a folder that is
    rewritten, such as a checkpoint of the same iteration); without, another writer finished first
    (a cache entry built by two processes at once): ``folder`` is deleted and theirs is kept, so the
    caller should check what it then reads. An empty ``target`` folder is replaced in either case.
    """
    folder, target = Path(folder), Path(target)
    if replace and target.exists():
        shutil.rmtree(target)
    try:
        os.replace(folder, target)
    except OSError:
        if replace or not target.is_dir():
            raise
        shutil.rmtree(folder, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder to write ``target``'s content into; it becomes ``target`` when the
    ``with`` block ends normally (:func:`publish_directory`, whose ``replace`` this passes on) and is
    deleted when the block raises (including ``KeyboardInterrupt``), so nothing is left behind.

    The folder is ``<target's parent>/.tmp-<target's name>-<pid>-<random>``, created with any
    missing parents, with the usual permissions, and unique (``mkdir`` of a fresh random name fails
    rather than reuse a folder), so two writers of one ``target`` never
    share or delete each other's folder, not even two processes with the same id in different
    containers sharing a cache.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".tmp-{target.name}-{os.getpid()}-{secrets.token_hex(4)}")
    scratch.mkdir()
    try:
        yield scratch
        publish_directory(scratch, target, replace=replace)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already after a successful publish


__all__ = ["atomic_directory", "cache_root", "publish_directory"]

"""ALFWorld with the real engine: official games when present, generated games otherwise.

``make_alfworld_env(**options)`` is the registry factory (``make_env("alfworld", ...)``). Where
the games come from, in order:

1. ``data_dir=PATH``: a folder holding ``json_2.1.1/<split>/`` (official or generated), or that
   folder itself.
2. ``data_dir`` unset and ``ALFWORLD_DATA`` set to a folder with games (what ``alfworld-download``
   writes).
3. Otherwise (or ``data_dir="offline"``): generated games in the sdar cache,
   ``<cache>/alfworld/offline-v<version>-<preset>-n<games>-s<seed>/`` (``<cache>`` is
   :func:`sdar.storage.cache_root`: ``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar`` or
   ``~/.cache/sdar``), generated on first use of each split with a log line.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sdar.envs.alfworld.data import (
    DATA_FOLDER,
    SPLITS,
    TASK_TYPES,
    AlfworldDataError,
    GameRecord,
    env_data_dir,
    find_games,
    normalize_split,
    normalize_task_types,
    split_dir,
)
from sdar.storage import cache_root, publish_directory

log = logging.getLogger(__name__)

OFFLINE = "offline"


def offline_games_dir(preset: str = "standard", games: int = 120, seed: int = 0) -> Path:
    """Where the auto-generated offline games of these settings live in the cache."""
    from sdar.envs.alfworld.generator import GENERATOR_VERSION

    return cache_root("alfworld", f"offline-v{GENERATOR_VERSION}-{preset}-n{games}-s{seed}")


def offline_split_size(split: str, games: int) -> int:
    """Train gets ``games`` games; each validation split a fifth of that (at least 6)."""
    return games if split == "train" else max(6, games // 5)


def ensure_offline_games(
    split: str, preset: str = "standard", games: int = 120, seed: int = 0
) -> Path:
    """Generate the offline games of ``split`` into the cache unless already there; returns the
    data folder (the one holding ``json_2.1.1``). Safe when several processes race: each writes
    into a private folder and the first finished one is moved into place."""
    from sdar.envs.alfworld.generator import config_from_preset, generate_games

    split = normalize_split(split)
    root = offline_games_dir(preset, games, seed)
    done_marker = root / f".{split}.complete"
    if done_marker.is_file():
        return root
    n = offline_split_size(split, games)
    log.info(
        "ALFWorld: no official data configured; generating %d offline %s games (preset %r) "
        "into %s (one-time, about 0.5 s per game; set ALFWORLD_DATA or data_dir to use the "
        "official games)",
        n,
        split,
        preset,
        root,
    )
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # generate_games writes <folder>/json_2.1.1/<split>/; only that split folder is published.
    # Another process may finish first: its games are identical, and publish_directory keeps them.
    with tempfile.TemporaryDirectory(prefix=f".{split}-", dir=root) as staging:
        generate_games(staging, split, n, seed=seed, config=config_from_preset(preset))
        (root / DATA_FOLDER).mkdir(exist_ok=True)
        publish_directory(Path(staging) / DATA_FOLDER / split, root / DATA_FOLDER / split)
    done_marker.write_text(f"{n} games in {time.perf_counter() - start:.1f} s\n")
    return root


def resolve_games(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    task_types: Any = None,
    max_plan_length: int | None = None,
    preset: str = "standard",
    offline_games: int = 120,
    offline_seed: int = 0,
    max_games: int | None = None,
) -> list[GameRecord]:
    """The games an environment with these options plays (see the module docstring)."""
    split = normalize_split(split)
    types = normalize_task_types(task_types)
    if data_dir is None:
        data_dir = env_data_dir()
    if data_dir is None or str(data_dir) == OFFLINE:
        data_dir = ensure_offline_games(split, preset, offline_games, offline_seed)
    elif split_dir(data_dir, split) is None:
        raise AlfworldDataError(find_games_error(data_dir, split))
    games = find_games(data_dir, split, types, max_plan_length)
    if max_games is not None:
        if max_games < 1:
            raise ValueError(f"max_games must be >= 1, got {max_games}")
        games = games[:max_games]
    return games


def find_games_error(data_dir, split) -> str:
    try:
        find_games(data_dir, split)
    except AlfworldDataError as err:
        return str(err)
    return f"no ALFWorld games for split {split!r} in {data_dir}"


def make_alfworld_env(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    max_steps: int = 50,
    history_length: int = 2,
    task_types: Any = None,
    max_plan_length: int | None = None,
    max_games: int | None = None,
    preset: str = "standard",
    offline_games: int = 120,
    offline_seed: int = 0,
    num_workers: int = 1,
    reset_timeout_s: float = 120.0,
    step_timeout_s: float = 30.0,
    answer_example: bool = True,
):
    """Build an ALFWorld environment (``sdar.envs.alfworld.env.AlfworldEnv``).

    Options:
        split: ``train``, ``valid_seen`` (in-distribution) or ``valid_unseen`` (out-of-distribution
            floorplans); ALFWorld's ``eval_in_distribution``/``eval_out_of_distribution`` also work.
        data_dir: folder with ``json_2.1.1`` (or that folder); default ``ALFWORLD_DATA``, else the
            offline games in the sdar cache. ``"offline"`` forces the offline games.
        max_steps: step limit of an episode (50, as in the paper).
        history_length: H, past (observation, action) pairs shown in the prompt (2).
        task_types: keep only these task types (full names or the keys pick, look, clean, heat,
            cool, pick_two; list or comma-separated string). Default: all six.
        max_plan_length: keep only games whose stored expert plan is at most this long.
        max_games: keep only the first N games (sorted by task id) after filtering.
        preset: generator preset of the offline games (``easy``: pick-and-place in 3-receptacle
            rooms, expert plan <= 4 steps, for CPU quickstarts; ``medium``; ``standard``: all six
            types in whole floorplans). Ignored with official data.
        offline_games: number of offline training games (each validation split gets a fifth,
            at least 6).
        offline_seed: generator seed of the offline games.
        num_workers: engine worker processes.
        reset_timeout_s / step_timeout_s: an engine slower than this counts as hung and is
            restarted (the episode fails).
        answer_example: the prompt's answer format ends with an example answer,
            ``<action>go to countertop 1</action>`` (this project's prompt, the default); ``False``
            names no action, as the released template (verl-agent's, which SDAR uses) asks.
    """
    from sdar.envs.alfworld.env import AlfworldEnv

    games = resolve_games(
        split, data_dir, task_types, max_plan_length, preset, offline_games, offline_seed, max_games
    )
    return AlfworldEnv(
        games,
        split=normalize_split(split),
        max_steps=max_steps,
        history_length=history_length,
        num_workers=num_workers,
        reset_timeout_s=reset_timeout_s,
        step_timeout_s=step_timeout_s,
        answer_example=answer_example,
    )


def route_task_type(task_type: str) -> tuple[str, ...]:
    """Skill routing keys of an ALFWorld task type (full name or short key)."""
    (full,) = normalize_task_types([task_type])
    return (TASK_TYPES[full],)


__all__ = [
    "SPLITS",
    "TASK_TYPES",
    "AlfworldDataError",
    "GameRecord",
    "ensure_offline_games",
    "find_games",
    "make_alfworld_env",
    "offline_games_dir",
    "resolve_games",
    "route_task_type",
]

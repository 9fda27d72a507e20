"""ALFWorld games on disk: the official ``json_2.1.1`` layout, task types, where games come from.

Both the official data and the games written by ``sdar.envs.alfworld.generator`` use one layout::

    <root>/json_2.1.1/<split>/<task_type>-<Object>-<MovableRecep>-<Target>-<scene>/<trial>/
        traj_data.json      task type and PDDL parameters (read by ALFWorld's own loader too)
        game.tw-pddl        JSON {pddl_domain, grammar, pddl_problem, solvable, walkthrough, ...}
        initial_state.pddl  the PDDL problem (official data; the generator writes it as well)

``<root>`` may be given as the folder holding ``json_2.1.1`` (what ``ALFWORLD_DATA`` points to) or
as ``json_2.1.1`` itself. The task type of a game is the prefix of its task folder name, which is
how ALFWorld names them (``pick_heat_then_place_in_recep-Apple-None-Fridge-12``).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "valid_seen", "valid_unseen")
# ALFWorld's own names for the two evaluation splits, accepted as aliases.
SPLIT_ALIASES = {"eval_in_distribution": "valid_seen", "eval_out_of_distribution": "valid_unseen"}
DATA_FOLDER = "json_2.1.1"

# The six ALFWorld task types and the skill file each routes to (src/sdar/skills/alfworld/<key>.md).
TASK_TYPES: dict[str, str] = {
    "pick_and_place_simple": "pick",
    "look_at_obj_in_light": "look",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_two_obj_and_place": "pick_two",
}
SKILL_KEY_TO_TASK_TYPE = {v: k for k, v in TASK_TYPES.items()}


class AlfworldDataError(FileNotFoundError):
    """No usable ALFWorld games where the configuration points."""


@dataclass(frozen=True)
class GameRecord:
    """One playable game.

    Attributes:
        path: the ``game.tw-pddl`` file.
        task_type: one of ``TASK_TYPES`` (from the task folder name).
        task_id: ``<split>/<task folder>/<trial>``, stable across machines.
        expert_plan_length: length of the stored expert walkthrough, ``None`` when the game file
            has none (official games before ``alfworld-generate`` was run on them).
    """

    path: Path
    task_type: str
    task_id: str
    expert_plan_length: int | None = None

    @property
    def skill_key(self) -> str:
        return TASK_TYPES[self.task_type]


def normalize_split(split: str) -> str:
    """``train``/``valid_seen``/``valid_unseen`` (or ALFWorld's eval aliases) -> canonical name."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(
            f"unknown ALFWorld split {split!r}; use one of {list(SPLITS)} "
            f"(valid_seen = in-distribution, valid_unseen = out-of-distribution)"
        )
    return split


def normalize_task_types(task_types: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """A task-type filter given as full names or skill keys (list or comma-separated string) ->
    the full ALFWorld names, in ``TASK_TYPES`` order. ``None`` means all six."""
    if task_types is None:
        return tuple(TASK_TYPES)
    if isinstance(task_types, str):
        task_types = [t for t in task_types.split(",") if t.strip()]
    wanted = set()
    for t in task_types:
        t = t.strip()
        if t in TASK_TYPES:
            wanted.add(t)
        elif t in SKILL_KEY_TO_TASK_TYPE:
            wanted.add(SKILL_KEY_TO_TASK_TYPE[t])
        else:
            raise ValueError(
                f"unknown ALFWorld task type {t!r}; use a full name {list(TASK_TYPES)} "
                f"or a short key {list(SKILL_KEY_TO_TASK_TYPE)}"
            )
    if not wanted:
        raise ValueError("the task-type filter is empty; leave it unset for all six task types")
    return tuple(t for t in TASK_TYPES if t in wanted)


def task_type_of_folder(name: str) -> str | None:
    """The task type encoded as the prefix of an ALFWorld task folder name, or ``None``."""
    prefix = name.split("-", 1)[0]
    return prefix if prefix in TASK_TYPES else None


def split_dir(data_dir: str | Path, split: str) -> Path | None:
    """The folder of ``split`` under ``data_dir`` (which holds ``json_2.1.1`` or is it), if any."""
    root = Path(data_dir).expanduser()
    for candidate in (root / DATA_FOLDER / split, root / split):
        if candidate.is_dir():
            return candidate
    return None


def find_games(
    data_dir: str | Path,
    split: str,
    task_types: tuple[str, ...] | None = None,
    max_plan_length: int | None = None,
) -> list[GameRecord]:
    """All solvable games of ``split`` under ``data_dir``, sorted by task id.

    Follows ALFWorld's own selection: task folders with ``movable`` or ``Sliced`` in the name are
    skipped (ALFWorld does not support them), as are games marked unsolvable or lacking the
    ``solvable`` key. ``max_plan_length`` keeps only games whose stored expert walkthrough is at
    most that long (a curriculum knob; games without a walkthrough are then dropped).

    Raises:
        AlfworldDataError: the split folder is missing or holds no usable game; the message says
            what was expected and how to use the offline games instead.
    """
    split = normalize_split(split)
    wanted = set(normalize_task_types(task_types))
    folder = split_dir(data_dir, split)
    if folder is None:
        raise AlfworldDataError(_missing_message(data_dir, split))
    games: list[GameRecord] = []
    skipped = {"movable_or_sliced": 0, "unsolvable": 0, "filtered": 0}
    for task_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        task_type = task_type_of_folder(task_dir.name)
        if task_type is None:
            continue
        if "movable" in task_dir.name or "Sliced" in task_dir.name:
            skipped["movable_or_sliced"] += 1
            continue
        if task_type not in wanted:
            skipped["filtered"] += 1
            continue
        for trial in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            game_file = trial / "game.tw-pddl"
            if not game_file.is_file():
                continue
            info = _read_game_header(game_file)
            if not info.get("solvable"):
                skipped["unsolvable"] += 1
                continue
            plan_length = info.get("plan_length")
            if max_plan_length is not None and (
                plan_length is None or plan_length > max_plan_length
            ):
                skipped["filtered"] += 1
                continue
            games.append(
                GameRecord(
                    game_file, task_type, f"{split}/{task_dir.name}/{trial.name}", plan_length
                )
            )
    if not games:
        raise AlfworldDataError(
            f"no usable ALFWorld game in {folder} (task types {sorted(wanted)}, "
            f"max_plan_length={max_plan_length}, skipped: {skipped}). " + _offline_hint()
        )
    log.debug("found %d ALFWorld games in %s (skipped %s)", len(games), folder, skipped)
    return games


def order_for_seeds(games: list[GameRecord]) -> list[GameRecord]:
    """A fixed shuffle of ``games`` so that consecutive seeds visit mixed task types.

    Seed ``s`` plays ``order_for_seeds(games)[s % len(games)]``; the order depends only on the
    sorted game list, so the same seed gives the same game on every machine.
    """
    ordered = list(games)
    random.Random(len(ordered)).shuffle(ordered)
    return ordered


def _read_game_header(game_file: Path) -> dict:
    """``solvable`` and the walkthrough length of a game file (the file is small JSON)."""
    try:
        data = json.loads(game_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("skipping unreadable ALFWorld game %s: %s", game_file, err)
        return {"solvable": False}
    walkthrough = data.get("walkthrough")
    meta = data.get("sdar") or {}
    plan_length = meta.get("expert_plan_length")
    if plan_length is None and isinstance(walkthrough, list):
        plan_length = len(walkthrough)
    return {"solvable": bool(data.get("solvable")), "plan_length": plan_length}


def _offline_hint() -> str:
    return (
        "To play without the official data, use the offline games: leave data_dir unset (and "
        "ALFWORLD_DATA unset) to auto-generate a small set into the sdar cache, pass "
        "data_dir='offline', or write your own with `sdar alfworld generate --out DIR` and pass "
        "data_dir=DIR."
    )


def _missing_message(data_dir: str | Path, split: str) -> str:
    return (
        f"ALFWorld split {split!r} not found under {Path(data_dir).expanduser()}: expected "
        f"{DATA_FOLDER}/{split}/<task>-<params>/<trial>/game.tw-pddl (the official games come from "
        f"`alfworld-download`, which needs network access; point ALFWORLD_DATA or data_dir at the "
        f"folder that holds {DATA_FOLDER}). " + _offline_hint()
    )


def env_data_dir() -> str | None:
    """``ALFWORLD_DATA`` when it points at a folder with ALFWorld games, else ``None``.

    Importing ``alfworld`` sets ``ALFWORLD_DATA`` to ``~/.cache/alfworld`` when unset, so that
    default folder without games counts as unset; any other folder without games is an error the
    caller reports (the user asked for it explicitly).
    """
    value = os.environ.get("ALFWORLD_DATA")
    if not value:
        return None
    if any(split_dir(value, s) for s in SPLITS):
        return value
    if Path(value).expanduser().resolve() == (Path.home() / ".cache" / "alfworld").resolve():
        return None
    raise AlfworldDataError(
        f"ALFWORLD_DATA={value} holds no {DATA_FOLDER}/{{train,valid_seen,valid_unseen}} folder. "
        + _offline_hint()
    )

"""Offline ALFWorld games: PDDL problems built from the ``alfworld`` package's own scene data.

The official games cannot be downloaded everywhere, but the ``alfworld`` package ships what a game
is made of: the PDDL domain and text grammar, the receptacle layout and object list of each of
ALFRED's 120 floorplans (``alfworld/gen/layouts``), the receptacle/object compatibility and
object-property tables (``alfworld.gen.constants``) and the goal templates of the six task types
(``alfworld.gen.goal_library``). This module samples a scene and a goal from those, writes the game
in the official folder layout (so ``data.find_games`` and ALFWorld's own loader read it), and keeps
it only if ALFWorld's planner expert solves it in the real engine; the expert's plan length is
stored in the game file.

Splits follow ALFRED's scene split: ``train`` and ``valid_seen`` use the training floorplans,
``valid_unseen`` the held-out ones (``alfworld.gen.constants.TEST_SCENE_NUMBERS``), so the two never
share a room. Generation is deterministic: game ``i`` of (split, seed) depends on nothing else.

Difficulty knobs (``GeneratorConfig``): the task types, how many receptacles the room keeps,
how many distractor objects it holds, whether closed receptacles (fridge, cabinets, drawers) may
appear where the task does not need them, and bounds on the expert plan length. ``PRESETS`` holds
the ones the docs use (``easy`` for the CPU quickstart).

Deliberate simplifications (documented in docs/environments/alfworld.md): every receptacle gets
its own location; the agent starts in the middle of the room; object positions are sampled near
their receptacle only to form unique ALFRED-style ids; no sliced or movable-receptacle tasks
(ALFWorld skips those too).
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from sdar.envs.alfworld.data import DATA_FOLDER, TASK_TYPES, normalize_split, normalize_task_types

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1

# The receptacle type each state-changing task needs, and the domain's name for the state change.
APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
OBJECT_PROPERTY = {  # alfworld.gen.constants.VAL_ACTION_OBJECTS key -> PDDL predicate
    "Cleanable": "cleanable",
    "Heatable": "heatable",
    "Coolable": "coolable",
}
REQUIRED_PROPERTY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
LAMPS = ("DeskLamp", "FloorLamp")


@dataclass(frozen=True)
class GeneratorConfig:
    """Difficulty knobs of generated games.

    Attributes:
        task_types: task types to generate (full names or short keys); game ``i`` gets type
            ``task_types[i % len(task_types)]`` so every type is equally represented.
        max_receptacles: receptacles the room keeps (the ones the task needs plus random others
            from the floorplan); ``None`` keeps the whole floorplan, as in the official games.
        distractors: objects besides the task's own, placed in random compatible receptacles.
        openable_receptacles: allow closed receptacles (fridge, cabinet, drawer, safe, microwave)
            beyond those the task needs; ``False`` makes short, easy games.
        min_plan_length / max_plan_length: keep only games whose planner-expert plan length lies
            in this range (``None`` = no bound).
        max_attempts: samples tried per game before giving up with an error (strict knobs can
            make a game type impossible, e.g. ``max_plan_length=3``).
    """

    task_types: tuple[str, ...] = tuple(TASK_TYPES)
    max_receptacles: int | None = None
    distractors: int = 8
    openable_receptacles: bool = True
    min_plan_length: int = 1
    max_plan_length: int | None = None
    max_attempts: int = 200

    def __post_init__(self):
        object.__setattr__(self, "task_types", normalize_task_types(self.task_types))
        if self.max_receptacles is not None and self.max_receptacles < 2:
            raise ValueError(
                f"max_receptacles must be >= 2 (or None for the whole floorplan), "
                f"got {self.max_receptacles}"
            )
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}")
        if self.max_plan_length is not None and self.max_plan_length < self.min_plan_length:
            raise ValueError(
                f"max_plan_length ({self.max_plan_length}) is below min_plan_length "
                f"({self.min_plan_length})"
            )


PRESETS: dict[str, GeneratorConfig] = {
    # Pick-and-place in a tiny open room: the CPU quickstart (expert plan <= 4 steps).
    "easy": GeneratorConfig(
        task_types=("pick_and_place_simple",),
        max_receptacles=3,
        distractors=1,
        openable_receptacles=False,
        max_plan_length=4,
    ),
    # All six types in small rooms: a curriculum step for small models.
    "medium": GeneratorConfig(max_receptacles=6, distractors=3, max_plan_length=12),
    # All six types in whole ALFRED floorplans, like the official games.
    "standard": GeneratorConfig(),
}


def config_from_preset(preset: str = "standard", **overrides) -> GeneratorConfig:
    """A preset's config with some knobs replaced (``overrides`` with value ``None`` are ignored
    except ``max_receptacles``/``max_plan_length``, where ``None`` cannot be told from unset)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ALFWorld generator preset {preset!r}; known: {sorted(PRESETS)}")
    values = asdict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GeneratorConfig(**values)


# ----- the package's scene data ----------------------------------------------------------------
@dataclass(frozen=True)
class Floorplan:
    number: int
    receptacles: tuple[tuple[str, str], ...]  # (ALFRED id, receptacle type)
    object_types: tuple[str, ...]  # pickupable object types present in the scene
    lamps: tuple[str, ...]


def _layouts_dir() -> Path:
    import alfworld.gen

    return Path(alfworld.gen.__file__).resolve().parent / "layouts"


@lru_cache(maxsize=1)
def _constants():
    from alfworld.gen import constants

    return constants


def receptacle_type(alfred_id: str) -> str:
    """``Cabinet|+00.68|+00.50|-02.20`` -> ``Cabinet``; ``Sink|...|SinkBasin`` -> ``SinkBasin``."""
    parts = alfred_id.split("|")
    return parts[4] if len(parts) == 5 else parts[0]


@lru_cache(maxsize=1)
def load_floorplans() -> dict[int, Floorplan]:
    """Every floorplan the package ships a layout for, with its receptacles and objects."""
    constants = _constants()
    pickupable = set().union(*constants.VAL_RECEPTACLE_OBJECTS.values())
    pickupable = {t for t in pickupable if "Sliced" not in t}
    plans = {}
    for path in sorted(_layouts_dir().glob("FloorPlan*-openable.json")):
        number = int(re.search(r"FloorPlan(\d+)-", path.name).group(1))
        receptacle_ids = json.loads(path.read_text())
        objects_path = path.with_name(f"FloorPlan{number}-objects.json")
        present = json.loads(objects_path.read_text()) if objects_path.is_file() else []
        receptacles = tuple(
            (rid, receptacle_type(rid))
            for rid in sorted(receptacle_ids)
            if receptacle_type(rid) in constants.VAL_RECEPTACLE_OBJECTS
        )
        rtypes = {t for _, t in receptacles}
        object_types = tuple(sorted(t for t in set(present) if t in pickupable and t not in rtypes))
        lamps = tuple(sorted(t for t in set(present) if t in LAMPS))
        plans[number] = Floorplan(number, receptacles, object_types, lamps)
    if not plans:
        raise FileNotFoundError(
            f"no floorplan layouts found in {_layouts_dir()}; is alfworld installed?"
        )
    return plans


def split_floorplans(split: str) -> list[int]:
    """Floorplans of a split: ALFRED's held-out scenes for valid_unseen, the others otherwise."""
    split = normalize_split(split)
    unseen = set(_constants().TEST_SCENE_NUMBERS)
    numbers = sorted(load_floorplans())
    return [n for n in numbers if (n in unseen) == (split == "valid_unseen")]


# ----- one game ----------------------------------------------------------------------------------
@dataclass
class GameSpec:
    """A sampled game before it is written: scene, goal and instruction."""

    task_type: str
    floorplan: int
    object_target: str
    parent_target: str  # "" for look_at_obj_in_light
    toggle_target: str  # "" except for look_at_obj_in_light
    instruction: str
    receptacles: list[tuple[str, str]]  # (ALFRED id, type), all kept in the room
    objects: list[tuple[str, str, str]] = field(default_factory=list)  # (id, type, receptacle id)


def mangle(alfred_id: str) -> str:
    """ALFRED id -> PDDL name, the encoding ALFWorld's demangler reverses ("apple 1")."""
    for raw, code in (
        ("|", "_bar_"),
        ("+", "_plus_"),
        ("-", "_minus_"),
        (".", "_dot_"),
        (",", "_comma_"),
    ):
        alfred_id = alfred_id.replace(raw, code)
    return alfred_id


def _can_contain(rtype: str, otype: str) -> bool:
    return otype in _constants().VAL_RECEPTACLE_OBJECTS.get(rtype, ())


def _openable(rtype: str) -> bool:
    return rtype in _constants().OPENABLE_CLASS_SET


def sample_game(
    task_type: str, floorplans: list[int], config: GeneratorConfig, rng: random.Random
) -> GameSpec | None:
    """Sample a scene and goal of ``task_type``; ``None`` if this draw cannot host the task."""
    plan = load_floorplans()[rng.choice(floorplans)]
    rooms = list(plan.receptacles)
    appliance = APPLIANCE.get(task_type)
    if appliance and not any(t == appliance for _, t in rooms):
        return None
    if task_type == "look_at_obj_in_light" and not plan.lamps:
        return None

    needs_property = REQUIRED_PROPERTY.get(task_type)
    candidates = [
        t
        for t in plan.object_types
        if needs_property is None or t in _constants().VAL_ACTION_OBJECTS[needs_property]
    ]
    if not candidates:
        return None
    obj = rng.choice(candidates)
    optional_ok = lambda rid_t: config.openable_receptacles or not _openable(rid_t[1])
    sources = [r for r in rooms if _can_contain(r[1], obj) and r[1] != appliance and optional_ok(r)]
    if not sources:
        return None
    source = rng.choice(sources)

    needed: list[tuple[str, str]] = [source]
    toggle, parent = "", ""
    if task_type == "look_at_obj_in_light":
        toggle = rng.choice(plan.lamps)
        holders = [r for r in rooms if not _openable(r[1])]
        if not holders:
            return None
        lamp_holder = rng.choice(holders)
        needed.append(lamp_holder)
    else:
        targets = [
            r
            for r in rooms
            if _can_contain(r[1], obj) and r[1] not in (source[1], appliance) and optional_ok(r)
        ]
        if not targets:
            return None
        target = rng.choice(targets)
        parent = target[1]
        needed.append(target)
        if appliance:
            needed.append(rng.choice([r for r in rooms if r[1] == appliance]))
    needed = list(dict.fromkeys(needed))
    if config.max_receptacles is not None and len(needed) > config.max_receptacles:
        return None
    others = [r for r in rooms if r not in needed and optional_ok(r)]
    rng.shuffle(others)
    budget = len(others) if config.max_receptacles is None else config.max_receptacles - len(needed)
    kept = needed + others[: max(0, budget)]
    kept.sort()

    taken: set[str] = {rid for rid, _ in kept}

    def place(otype: str, holder: str) -> str:
        base = [float(v) for v in holder.split("|")[1:4]]
        while True:
            coords = [v + rng.uniform(-0.4, 0.4) for v in base]
            oid = otype + "|" + "|".join(f"{v:+06.2f}" for v in coords)
            if oid not in taken:
                taken.add(oid)
                return oid

    objects = []
    count = 2 if task_type == "pick_two_obj_and_place" else 1
    for k in range(count):
        holder = (
            source
            if k == 0
            else rng.choice(
                [
                    r
                    for r in kept
                    if _can_contain(r[1], obj) and r[1] != parent and r[1] != appliance
                ]
            )
        )
        objects.append((place(obj, holder[0]), obj, holder[0]))
    if toggle:
        objects.append((place(toggle, lamp_holder[0]), toggle, lamp_holder[0]))
    distractor_types = [t for t in plan.object_types if t != obj]
    for _ in range(config.distractors if distractor_types else 0):
        otype = rng.choice(distractor_types)
        holders = [r for r in kept if _can_contain(r[1], otype)]
        if holders:
            holder = rng.choice(holders)[0]
            objects.append((place(otype, holder), otype, holder))

    from alfworld.gen import goal_library

    template = rng.choice(goal_library.gdict[task_type]["templates"])
    instruction = template.format(
        obj=obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep=""
    )
    return GameSpec(task_type, plan.number, obj, parent, toggle, instruction, kept, objects)


def pddl_problem(spec: GameSpec) -> str:
    """The PDDL problem text of ``spec`` (ALFWorld's domain ``alfred``; goal from its library)."""
    from alfworld.gen import goal_library

    constants = _constants()
    locations = {rid: f"loc_{i + 1}" for i, (rid, _) in enumerate(spec.receptacles)}
    rtypes = sorted({t for _, t in spec.receptacles})
    otypes = sorted({t for _, t, _ in spec.objects} | {spec.object_target})
    objects = ["agent1 - agent", "loc_start - location"]
    objects += [f"{loc} - location" for loc in locations.values()]
    objects += [f"{mangle(rid)} - receptacle" for rid, _ in spec.receptacles]
    objects += [f"{mangle(oid)} - object" for oid, _, _ in spec.objects]
    objects += [f"{t}Type - rtype" for t in rtypes] + [f"{t}Type - otype" for t in otypes]

    init = ["(atLocation agent1 loc_start)"]
    for rid, rtype in spec.receptacles:
        init.append(f"(receptacleType {mangle(rid)} {rtype}Type)")
        init.append(f"(receptacleAtLocation {mangle(rid)} {locations[rid]})")
        if _openable(rtype):
            init.append(f"(openable {mangle(rid)})")
    for rtype in rtypes:
        init += [
            f"(canContain {rtype}Type {otype}Type)"
            for otype in otypes
            if _can_contain(rtype, otype)
        ]
    for oid, otype, holder in spec.objects:
        name = mangle(oid)
        init += [
            f"(objectType {name} {otype}Type)",
            f"(inReceptacle {name} {mangle(holder)})",
            f"(objectAtLocation {name} {locations[holder]})",
        ]
        if otype in LAMPS:
            init.append(f"(toggleable {name})")
            continue
        init.append(f"(pickupable {name})")
        for key, predicate in OBJECT_PROPERTY.items():
            if otype in constants.VAL_ACTION_OBJECTS[key]:
                init.append(f"({predicate} {name})")
        if otype in constants.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {name})")

    # The library's goals close the enclosing "(define" themselves and write "#" for "-".
    goal = (
        goal_library.gdict[spec.task_type]["pddl"]
        .format(
            obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target, mrecep=""
        )
        .replace("#", "-")
    )
    return (
        f"(define (problem sdar_{spec.task_type}_{spec.floorplan})\n(:domain alfred)\n"
        "(:objects\n  " + "\n  ".join(objects) + "\n)\n"
        "(:init\n  " + "\n  ".join(init) + "\n)\n" + goal.strip() + "\n"
    )


@lru_cache(maxsize=1)
def _domain_and_grammar() -> tuple[str, str]:
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def write_game(spec: GameSpec, folder: Path, meta: dict) -> Path:
    """Write ``spec`` in the official layout into ``folder``; returns the game file path."""
    domain, grammar = _domain_and_grammar()
    problem = pddl_problem(spec)
    folder.mkdir(parents=True, exist_ok=True)
    traj = {
        "task_type": spec.task_type,
        "task_id": meta["task_id"],
        "scene": {"floor_plan": f"FloorPlan{spec.floorplan}", "scene_num": spec.floorplan},
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {
            "anns": [{"task_desc": spec.instruction, "high_descs": [], "votes": []}]
        },
    }
    (folder / "traj_data.json").write_text(json.dumps(traj, indent=1))
    (folder / "initial_state.pddl").write_text(problem)
    game = {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", spec.instruction),
        "pddl_problem": problem,
        "solvable": None,
        "walkthrough": None,
        "sdar": meta,
    }
    path = folder / "game.tw-pddl"
    path.write_text(json.dumps(game))
    return path


def solve_with_expert(game_path: Path) -> list[str] | None:
    """Plan the game with ALFWorld's planner expert and play the plan in the real engine; the
    winning command list, or ``None`` if there is no plan, the plan does not win, the goal holds
    already, or the engine fails."""
    import sys

    import fast_downward

    from sdar.envs.alfworld.engine import build_engine, reuse_translations, set_planning

    argv = list(sys.argv)  # fast-downward's translator overwrites sys.argv; give it back after
    translate = fast_downward.pddl2sas
    reuse_translations(max_entries=2)  # load and reset translate the same problem: do it once
    try:
        engine = build_engine(str(game_path))
        set_planning(engine, True)
        state = engine.reset()
        set_planning(engine, False)
        plan = list(state.get("extra.expert_plan") or [])
        if state["won"] or not plan:
            return None
        for command in plan:
            if command not in state["admissible_commands"]:
                return None
            state, _, _ = engine.step(command)
        return plan if state["won"] else None
    except Exception as err:  # noqa: BLE001 - an unplayable sample is simply rejected
        log.debug("expert failed on %s: %s", game_path, err)
        return None
    finally:
        sys.argv[:] = argv
        fast_downward.pddl2sas = translate


@dataclass(frozen=True)
class GeneratedGame:
    path: Path
    task_type: str
    floorplan: int
    expert_plan_length: int
    attempts: int


def _game_rng(split: str, seed: int, index: int, attempt: int) -> random.Random:
    # String seeding is stable across processes and Python versions (hashed with SHA-512).
    return random.Random(f"sdar-alfworld/{split}/{seed}/{index}/{attempt}")


def generate_game(
    out_dir: str | Path, split: str, seed: int, index: int, config: GeneratorConfig
) -> GeneratedGame:
    """Generate game ``index`` of ``(split, seed)`` into ``out_dir`` (official layout), checked
    solvable by the planner expert within the plan-length bounds."""
    split = normalize_split(split)
    task_type = config.task_types[index % len(config.task_types)]
    floorplans = split_floorplans(split)
    split_root = Path(out_dir) / DATA_FOLDER / split
    for attempt in range(config.max_attempts):
        spec = sample_game(task_type, floorplans, config, _game_rng(split, seed, index, attempt))
        if spec is None:
            continue
        target = spec.parent_target or spec.toggle_target
        folder = (
            split_root
            / f"{task_type}-{spec.object_target}-None-{target}-{spec.floorplan}"
            / f"trial_sdar_s{seed}_{index:05d}"
        )
        if folder.exists():
            shutil.rmtree(folder)
        meta = {
            "generator_version": GENERATOR_VERSION,
            "task_id": f"sdar_{split}_s{seed}_{index:05d}",
            "split": split,
            "seed": seed,
            "index": index,
            "floorplan": spec.floorplan,
            "config": asdict(config),
        }
        path = write_game(spec, folder, meta)
        plan = solve_with_expert(path)
        max_len = config.max_plan_length
        if (
            plan is None
            or len(plan) < config.min_plan_length
            or (max_len is not None and len(plan) > max_len)
        ):
            shutil.rmtree(folder)
            if not any(folder.parent.iterdir()):
                folder.parent.rmdir()
            continue
        game = json.loads(path.read_text())
        game["solvable"], game["walkthrough"] = True, plan
        game["sdar"]["expert_plan_length"] = len(plan)
        path.write_text(json.dumps(game))
        return GeneratedGame(path, task_type, spec.floorplan, len(plan), attempt + 1)
    raise RuntimeError(
        f"could not generate a solvable {task_type} game for split {split!r} (seed {seed}, index "
        f"{index}) in {config.max_attempts} attempts with {config}; loosen the knobs "
        f"(max_plan_length, max_receptacles, openable_receptacles) or raise max_attempts"
    )


def generate_games(
    out_dir: str | Path,
    split: str,
    n: int,
    seed: int = 0,
    config: GeneratorConfig | None = None,
    progress: Callable[[int, GeneratedGame], None] | None = None,
) -> list[GeneratedGame]:
    """Generate ``n`` games of ``split`` into ``out_dir/json_2.1.1/<split>/`` (official layout).

    Deterministic per ``(split, seed, n, config)``: running it twice writes identical files.
    Returns the games in index order. ``progress(i, game)`` is called after each game.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    config = config or GeneratorConfig()
    games = []
    start = time.perf_counter()
    for index in range(n):
        game = generate_game(out_dir, split, seed, index, config)
        games.append(game)
        if progress:
            progress(index, game)
    elapsed = time.perf_counter() - start
    log.info(
        "generated %d ALFWorld %s games in %s in %.1f s (%.2f s per game)",
        n,
        split,
        Path(out_dir) / DATA_FOLDER / split,
        elapsed,
        elapsed / n,
    )
    return games

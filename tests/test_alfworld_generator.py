"""Offline ALFWorld games: all six types, solvable by the planner expert in the real engine,
deterministic per seed, seen/unseen floorplans disjoint, knobs respected, and readable by both
this project's loader and ALFWorld's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdar.envs.alfworld.data import TASK_TYPES, find_games
from sdar.envs.alfworld.engine import build_engine
from sdar.envs.alfworld.generator import (
    PRESETS,
    GeneratorConfig,
    config_from_preset,
    generate_games,
    mangle,
    receptacle_type,
    split_floorplans,
)


@pytest.fixture(scope="module")
def medium_games(tmp_path_factory):
    out = tmp_path_factory.mktemp("alfworld-medium")
    return out, generate_games(out, "train", 6, seed=3, config=PRESETS["medium"])


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_all_six_types_are_generated_and_won_by_replaying_the_stored_plan(medium_games):
    _, games = medium_games
    assert sorted(g.task_type for g in games) == sorted(TASK_TYPES)
    for game in games:
        data = json.loads(game.path.read_text())
        assert data["solvable"] is True
        assert (
            data["sdar"]["expert_plan_length"]
            == len(data["walkthrough"])
            == game.expert_plan_length
        )
        assert game.expert_plan_length <= PRESETS["medium"].max_plan_length
        # the task folder name carries the task type, as in the official data
        assert game.path.parent.parent.name.split("-")[0] == game.task_type
        traj = json.loads((game.path.parent / "traj_data.json").read_text())
        assert traj["task_type"] == game.task_type
        engine = build_engine(str(game.path))
        state = engine.reset()
        assert not state["won"]
        for command in data["walkthrough"]:
            assert command in state["admissible_commands"]
            state, _, _ = engine.step(command)
        assert state["won"]


def test_generated_text_is_real_alfworld_text(medium_games):
    _, games = medium_games
    by_type = {g.task_type: g for g in games}
    engine = build_engine(str(by_type["pick_heat_then_place_in_recep"].path))
    intro = engine.reset().feedback
    assert "You are in the middle of a room. Looking quickly around you, you see" in intro
    assert re.search(r"Your task is to: (put a hot|heat some) \w+", intro)
    walkthrough = json.loads(by_type["pick_heat_then_place_in_recep"].path.read_text())[
        "walkthrough"
    ]
    assert any(re.fullmatch(r"heat \w+ \d+ with microwave \d+", c) for c in walkthrough)
    assert re.fullmatch(r"move \w+ \d+ to \w+ \d+", walkthrough[-1])  # the 0.4.2 grammar's wording
    clean = json.loads(by_type["pick_clean_then_place_in_recep"].path.read_text())["walkthrough"]
    assert any(re.fullmatch(r"clean \w+ \d+ with sinkbasin \d+", c) for c in clean)


def test_generation_is_deterministic_per_seed(tmp_path):
    config = PRESETS["easy"]
    generate_games(tmp_path / "a", "train", 2, seed=7, config=config)
    generate_games(tmp_path / "b", "train", 2, seed=7, config=config)
    generate_games(tmp_path / "c", "train", 2, seed=8, config=config)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 6 and a == b
    assert a != c


def test_easy_preset_makes_tiny_short_games(tmp_path):
    games = generate_games(tmp_path, "train", 4, seed=0, config=PRESETS["easy"])
    for game in games:
        assert game.task_type == "pick_and_place_simple"
        assert game.expert_plan_length <= 4
        problem = json.loads(game.path.read_text())["pddl_problem"]
        assert len(re.findall(r" - receptacle$", problem, re.MULTILINE)) <= 3
        assert "(openable" not in problem
        # one target object plus one distractor
        assert len(re.findall(r" - object$", problem, re.MULTILINE)) == 2


def test_unseen_floorplans_are_disjoint_from_seen_ones(tmp_path):
    seen, unseen = set(split_floorplans("train")), set(split_floorplans("valid_unseen"))
    assert seen == set(split_floorplans("valid_seen"))
    assert seen and unseen and not seen & unseen
    assert len(seen | unseen) == 120
    games = generate_games(tmp_path, "valid_unseen", 2, seed=0, config=PRESETS["easy"])
    assert {g.floorplan for g in games} <= unseen


def test_alfred_ids_are_mangled_the_way_alfworld_demangles_them():
    assert (
        mangle("Apple|+01.00|+00.90|-01.50")
        == "Apple_bar__plus_01_dot_00_bar__plus_00_dot_90_bar__minus_01_dot_50"
    )
    assert receptacle_type("Sink|-01.90|+00.97|-01.50|SinkBasin") == "SinkBasin"
    assert receptacle_type("Cabinet|+00.68|+00.50|-02.20") == "Cabinet"


def test_bad_knobs_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="max_receptacles must be >= 2"):
        GeneratorConfig(max_receptacles=1)
    with pytest.raises(ValueError, match="unknown ALFWorld task type 'bake'"):
        GeneratorConfig(task_types=("bake",))
    with pytest.raises(ValueError, match="unknown ALFWorld generator preset"):
        config_from_preset("hard")
    impossible = GeneratorConfig(
        task_types=("pick_two",),
        max_receptacles=2,
        distractors=0,
        openable_receptacles=False,
        max_plan_length=3,
        max_attempts=3,
    )
    with pytest.raises(RuntimeError, match="loosen the knobs"):
        generate_games(tmp_path, "train", 1, config=impossible)
    assert config_from_preset("easy", distractors=0).distractors == 0


def test_our_loader_and_alfworlds_own_loader_read_generated_games(medium_games):
    out, games = medium_games
    records = find_games(out, "train")
    assert sorted(r.path for r in records) == sorted(g.path for g in games)
    assert {r.task_type for r in records} == set(TASK_TYPES)
    assert all(
        r.expert_plan_length == g.expert_plan_length
        for r in records
        for g in games
        if r.path == g.path
    )
    assert len(find_games(out, "train", task_types=("heat",))) == 1
    shortest = min(g.expert_plan_length for g in games)
    assert all(
        r.expert_plan_length <= shortest for r in find_games(out, "train", max_plan_length=shortest)
    )

    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    config = {
        "env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6]},
        "dataset": {"data_path": str(out / "json_2.1.1" / "train"), "num_train_games": -1},
    }
    official = AlfredTWEnv(config, train_eval="train")
    assert sorted(official.game_files) == sorted(str(g.path) for g in games)

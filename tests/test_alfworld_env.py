"""The ALFWorld environment on the real engine: six task types won by the expert, lost by the step
limit, invalid actions; the official-data path with a game written here in the official layout;
groups, prompts, the missing-data error, and engines that crash or hang."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest

from sdar.envs import make_env
from sdar.envs.alfworld import AlfworldDataError, make_alfworld_env
from sdar.envs.alfworld.data import TASK_TYPES
from sdar.envs.alfworld.env import ENGINE_FAILURE_OBSERVATION, WIN_REWARD
from sdar.envs.alfworld.generator import PRESETS, generate_games

SIX = list(TASK_TYPES)


@pytest.fixture(scope="module")
def games_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("alfworld-env-games")
    generate_games(out, "train", 6, seed=11, config=PRESETS["medium"])
    return out


@pytest.fixture(scope="module")
def env(games_dir):
    with make_alfworld_env(data_dir=games_dir) as e:
        yield e


@pytest.fixture(scope="module")
def short_env(games_dir):
    with make_alfworld_env(data_dir=games_dir, max_steps=3) as e:
        yield e


def seed_of(env, task_type: str) -> int:
    return next(i for i, g in enumerate(env.games) if g.task_type == task_type)


def play_expert(env, states, index=0):
    total = 0.0
    while not states[index].done:
        response = env.scripted_action(index, "expert", random.Random(0))
        parsed = env.parse_action(response)
        assert parsed.format_ok
        actions = [None if s.done else "look" for s in states]
        actions[index] = parsed.action
        states = env.step(actions)
        total += states[index].reward
    return states, total


# ----- the six task types ----------------------------------------------------------------------
@pytest.mark.parametrize("task_type", SIX)
def test_expert_wins_each_task_type(env, task_type):
    seed = seed_of(env, task_type)
    game = env.game_for_seed(seed)
    states = env.reset([seed])
    first = states[0]
    assert first.task.task_type == task_type and first.task.skill_keys == (TASK_TYPES[task_type],)
    assert first.observation.startswith("You are in the middle of a room.")
    assert "-= Welcome" not in first.observation and "Welcome" in first.raw_observation
    assert first.admissible_actions and "look" in first.admissible_actions
    states, total = play_expert(env, states)
    final = states[0]
    assert final.won and final.done and final.reward == WIN_REWARD and total == WIN_REWARD
    assert final.step == game.expert_plan_length
    assert final.metrics["won"] == 1.0 and final.metrics["engine_failure"] == 0.0


@pytest.mark.parametrize("task_type", SIX)
def test_step_limit_ends_each_task_type_as_a_loss(short_env, task_type):
    states = short_env.reset([seed_of(short_env, task_type)])
    for step in range(1, 4):
        assert not states[0].done
        states = short_env.step(["inventory"])
        assert states[0].step == step and states[0].reward == 0.0 and states[0].valid_action
    assert states[0].done and not states[0].won
    assert states[0].metrics["won"] == 0.0
    with pytest.raises(ValueError, match="already done"):
        short_env.step(["look"])


@pytest.mark.parametrize("task_type", SIX)
def test_invalid_actions_are_sent_to_the_engine_and_flagged(env, task_type):
    states = env.reset([seed_of(env, task_type)])
    before = states[0].admissible_actions
    states = env.step(["put the thing somewhere"])  # not in the 0.4.2 grammar
    assert states[0].observation == "Nothing happens." and not states[0].valid_action
    assert states[0].step == 1 and not states[0].done and states[0].admissible_actions == before
    parsed = env.parse_action("I think I should go to the fridge.")  # no action tag
    assert not parsed.format_ok
    states = env.step([parsed.action])
    assert states[0].observation == "Nothing happens." and not states[0].valid_action
    states = env.step([env.parse_action("<action> Look </action>").action])  # normalised command
    assert states[0].valid_action and states[0].step == 3
    states, _ = play_expert(env, states)  # the episode goes on and can still be won
    assert states[0].won


# ----- batches and groups ---------------------------------------------------------------------
def test_group_copies_start_identical_and_step_independently(env):
    states = env.reset([0, 1], group_size=2)
    assert len(states) == 4
    assert states[0].raw_observation == states[1].raw_observation
    assert states[0].task == states[1].task and states[2].task == states[3].task
    assert env.reset([0])[0].task == states[0].task  # same seed, same game
    states = env.reset([0, 1], group_size=2)
    go = next(a for a in states[0].admissible_actions if a.startswith("go to"))
    states = env.step([go, "look", "look", "look"])
    assert states[0].observation.startswith("You arrive at")
    assert states[1].observation != states[0].observation
    assert env.num_tasks() == 6


def test_prompt_shows_task_history_admissible_actions_and_format(env):
    state = env.reset([0])[0]
    history = [
        ("You arrive at drawer 1. The drawer 1 is closed.", "open drawer 1"),
        ("You open the drawer 1. The drawer 1 is open. In it, you see nothing.", "look"),
    ]
    prompt = env.render_prompt(state, history, think=True)
    assert f"Your task is to: {state.task.instruction}." in prompt
    assert history[0][0] in prompt and "Action: open drawer 1" in prompt
    assert (
        prompt.index(history[0][0]) < prompt.index(history[1][0]) < prompt.index(state.observation)
    )
    assert all(f"'{a}'" in prompt for a in state.admissible_actions)
    assert "<think>" in prompt and "<action>" in prompt
    short = env.render_prompt(state, [], think=False)
    assert "<think>" not in short and "<action>" in short and "not taken any action" in short


def test_answer_example_option_drops_only_the_example_answer(games_dir, env):
    """``answer_example: false`` (the released template's instruction) names no action; every other
    line of the prompt is the default's, and the default keeps the example answer."""
    with make_env("alfworld", data_dir=str(games_dir), answer_example=False) as plain:
        history = [("You arrive at drawer 1. The drawer 1 is closed.", "open drawer 1")]
        for think in (True, False):
            state, plain_state = env.reset([1])[0], plain.reset([1])[0]
            with_example = env.render_prompt(state, history, think=think).splitlines()
            without = plain.render_prompt(plain_state, history, think=think).splitlines()
            assert with_example[:-1] == without[:-1]
            assert with_example[-1].endswith(", for example <action>go to countertop 1</action>.")
            assert with_example[-1] == without[-1][:-1] + ", for example <action>go to countertop 1</action>."
            assert "countertop 1</action>" not in "\n".join(without)
    # a value that is not a boolean (a string from a CLI option or YAML) is refused, not read as true
    with pytest.raises(ValueError, match="answer_example must be true or false, got 'False'"):
        make_env("alfworld", data_dir=str(games_dir), answer_example="False")


def test_random_policy_picks_admissible_actions(env):
    states = env.reset([2])
    rng = random.Random(5)
    for _ in range(3):
        parsed = env.parse_action(env.scripted_action(0, "random", rng))
        assert parsed.format_ok and parsed.action in states[0].admissible_actions
        states = env.step([parsed.action])
        assert states[0].valid_action
    with pytest.raises(ValueError, match="no scripted policy 'oracle'"):
        env.scripted_action(0, "oracle", rng)
    with pytest.raises(IndexError, match="out of range"):
        env.scripted_action(1, "random", rng)


# ----- the official-data path -------------------------------------------------------------------
OFFICIAL_TASK = "pick_heat_then_place_in_recep-Apple-None-Fridge-12"
OFFICIAL_TRIAL = "trial_T20190908_000000_000001"
# Object, receptacle and location names as the official games write them (ALFRED ids, mangled).
OFFICIAL_NAMES = {
    "APPLE": "Apple_bar__plus_00_dot_90_bar__plus_00_dot_97_bar__minus_01_dot_80",
    "MUG": "Mug_bar__minus_00_dot_30_bar__plus_00_dot_97_bar__minus_01_dot_75",
    "COUNTER": "CounterTop_bar__plus_00_dot_69_bar__plus_00_dot_95_bar__minus_02_dot_48",
    "FRIDGE": "Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07",
    "MICROWAVE": "Microwave_bar__minus_00_dot_24_bar__plus_01_dot_69_bar__minus_02_dot_53",
    "LOC_C": "loc_bar_3_bar__minus_7_bar_2_bar_45",
    "LOC_F": "loc_bar__minus_6_bar_4_bar_3_bar_15",
    "LOC_M": "loc_bar_1_bar__minus_8_bar_2_bar_0",
}
OFFICIAL_PROBLEM_TEMPLATE = """(define (problem plan_trial_T20190908_000000_000001)
(:domain alfred)
(:objects
agent1 - agent
loc_bar_0_bar_0_bar_0_bar_0 - location
LOC_C - location
LOC_F - location
LOC_M - location
AppleType - otype
MugType - otype
CounterTopType - rtype
FridgeType - rtype
MicrowaveType - rtype
APPLE - object
MUG - object
COUNTER - receptacle
FRIDGE - receptacle
MICROWAVE - receptacle
)
(:init
(atLocation agent1 loc_bar_0_bar_0_bar_0_bar_0)
(receptacleType COUNTER CounterTopType)
(receptacleType FRIDGE FridgeType)
(receptacleType MICROWAVE MicrowaveType)
(receptacleAtLocation COUNTER LOC_C)
(receptacleAtLocation FRIDGE LOC_F)
(receptacleAtLocation MICROWAVE LOC_M)
(openable FRIDGE)
(openable MICROWAVE)
(objectType APPLE AppleType)
(objectType MUG MugType)
(pickupable APPLE)
(heatable APPLE)
(pickupable MUG)
(inReceptacle APPLE COUNTER)
(inReceptacle MUG COUNTER)
(objectAtLocation APPLE LOC_C)
(objectAtLocation MUG LOC_C)
(canContain CounterTopType AppleType)
(canContain CounterTopType MugType)
(canContain FridgeType AppleType)
(canContain MicrowaveType AppleType)
)
(:goal (exists (?o - object ?r - receptacle)
  (and (objectType ?o AppleType) (receptacleType ?r FridgeType) (isHot ?o) (inReceptacle ?o ?r))))
)
"""
OFFICIAL_PROBLEM = OFFICIAL_PROBLEM_TEMPLATE
for _short, _name in OFFICIAL_NAMES.items():
    OFFICIAL_PROBLEM = OFFICIAL_PROBLEM.replace(_short, _name)


def write_official_game(root: Path, split: str, task_folder: str, solvable=True) -> Path:
    """One game in the layout ``alfworld-download`` produces, written by hand."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    folder = root / "json_2.1.1" / split / task_folder / OFFICIAL_TRIAL
    folder.mkdir(parents=True)
    (folder / "traj_data.json").write_text(
        json.dumps(
            {
                "task_type": task_folder.split("-")[0],
                "pddl_params": {
                    "object_target": "Apple",
                    "parent_target": "Fridge",
                    "toggle_target": "",
                    "mrecep_target": "",
                    "object_sliced": False,
                },
                "scene": {"floor_plan": "FloorPlan12", "scene_num": 12},
            }
        )
    )
    (folder / "initial_state.pddl").write_text(OFFICIAL_PROBLEM)
    grammar = (
        Path(ALFRED_TWL2_PATH).read_text().replace("UNKNOWN GOAL", "put a hot apple in fridge")
    )
    (folder / "game.tw-pddl").write_text(
        json.dumps(
            {
                "pddl_domain": Path(ALFRED_PDDL_PATH).read_text(),
                "grammar": grammar,
                "pddl_problem": OFFICIAL_PROBLEM,
                "solvable": solvable,
                "walkthrough": None,
            }
        )
    )
    return folder / "game.tw-pddl"


def test_official_layout_loads_through_alfworld_data(tmp_path, monkeypatch):
    game = write_official_game(tmp_path, "valid_seen", OFFICIAL_TASK)
    write_official_game(
        tmp_path, "valid_seen", "pick_heat_then_place_in_recep-Apple-None-Fridge-13", solvable=False
    )
    write_official_game(
        tmp_path, "valid_seen", "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-12"
    )
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with make_env("alfworld", split="eval_in_distribution") as official:
        assert official.num_tasks() == 1 and official.games[0].path == game
        states = official.reset([5])
        task = states[0].task
        assert task.task_type == "pick_heat_then_place_in_recep" and task.skill_keys == ("heat",)
        assert task.instruction == "put a hot apple in fridge"
        assert task.task_id == f"valid_seen/{OFFICIAL_TASK}/{OFFICIAL_TRIAL}"
        assert "a countertop 1, a fridge 1, and a microwave 1" in states[0].observation
        assert "take apple 1 from countertop 1" not in states[0].admissible_actions
        states, total = play_expert(official, states)
        assert states[0].won and total == WIN_REWARD and states[0].step == 7
    with pytest.raises(AlfworldDataError, match="valid_unseen"):
        make_alfworld_env(split="valid_unseen")  # ALFWORLD_DATA has no such split


def test_missing_data_error_says_what_is_missing_and_how_to_go_offline(tmp_path, monkeypatch):
    with pytest.raises(AlfworldDataError) as err:
        make_alfworld_env(data_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert "json_2.1.1/train" in message and "alfworld-download" in message
    assert "sdar alfworld generate" in message and "offline" in message
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(AlfworldDataError, match="ALFWORLD_DATA"):
        make_alfworld_env()
    with pytest.raises(ValueError, match="unknown ALFWorld split 'test'"):
        make_alfworld_env(split="test", data_dir=tmp_path)


def test_offline_default_generates_into_the_cache_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("SDAR_CACHE", str(tmp_path / "cache"))
    caplog.set_level("INFO")
    with make_alfworld_env(split="valid_unseen", preset="easy", offline_games=10) as first:
        assert first.num_tasks() == 6  # validation splits get max(6, n // 5) games
        paths = [g.path for g in first.games]
    assert "generating 6 offline valid_unseen games" in caplog.text
    assert all(str(tmp_path / "cache" / "alfworld") in str(p) for p in paths)
    caplog.clear()
    with make_alfworld_env(split="valid_unseen", preset="easy", offline_games=10) as again:
        assert [g.path for g in again.games] == paths
    assert "generating" not in caplog.text


# ----- engines that fail -----------------------------------------------------------------------
def test_engine_that_raises_on_a_game_fails_only_its_episode(games_dir, tmp_path, caplog):
    broken = tmp_path / "json_2.1.1" / "train"
    for game in sorted(games_dir.glob("json_2.1.1/train/*/*/game.tw-pddl"))[:1]:
        target = broken / game.parent.parent.name / game.parent.name
        target.mkdir(parents=True)
        data = json.loads(game.read_text())
        data["pddl_problem"] = data["pddl_problem"][:300]  # cut mid-file: the PDDL parser fails
        data["broken_by_test"] = True
        (target / "game.tw-pddl").write_text(json.dumps(data))
        (target / "traj_data.json").write_text((game.parent / "traj_data.json").read_text())
    for game in sorted(games_dir.glob("json_2.1.1/train/*/*/game.tw-pddl"))[1:2]:
        target = broken / game.parent.parent.name / game.parent.name
        target.mkdir(parents=True)
        for name in ("game.tw-pddl", "traj_data.json"):
            (target / name).write_text((game.parent / name).read_text())
    caplog.set_level("ERROR")
    with make_alfworld_env(data_dir=tmp_path) as env:
        bad = next(i for i, g in enumerate(env.games) if "broken_by_test" in g.path.read_text())
        states = env.reset([bad, 1 - bad])
        assert states[0].done and not states[0].won and states[0].metrics["engine_failure"] == 1.0
        assert states[0].observation == ENGINE_FAILURE_OBSERVATION
        assert not states[1].done
        assert "ALFWorld engine error" in caplog.text and env.engine_failures == 1
        states, _ = play_expert(env, states, index=1)
        assert states[1].won


@pytest.mark.slow
def test_hung_engine_is_restarted_and_the_other_episodes_go_on(games_dir, caplog):
    caplog.set_level("ERROR")
    with make_alfworld_env(data_dir=games_dir, step_timeout_s=3) as env:
        states = env.reset([0, 1])
        states = env.step(["look", "inventory"])
        os.kill(env._pool.worker_pid(0), signal.SIGSTOP)  # the engine process stops answering
        states = env.step(["look", "look"])
        assert states[0].done and not states[0].won and states[0].metrics["engine_failure"] == 1.0
        assert not states[1].done and states[1].step == 2  # rebuilt by replay in a new process
        assert "did not answer within 3 s" in caplog.text and env.engine_failures == 1
        states, _ = play_expert(env, states, index=1)
        assert states[1].won


@pytest.mark.slow
def test_engine_process_killed_between_steps_loses_no_episode(games_dir, caplog):
    caplog.set_level("WARNING")
    with make_alfworld_env(data_dir=games_dir) as env:
        states = env.reset([3])
        states = env.step(["inventory"])
        pid = env._pool.worker_pid(0)
        os.kill(pid, signal.SIGKILL)
        env._pool._workers[0].process.join(timeout=10)
        states = env.step(["look"])
        assert not states[0].done and states[0].step == 2 and states[0].valid_action
        assert "while idle" in caplog.text and env.engine_failures == 0
        states, _ = play_expert(env, states)
        assert states[0].won


def test_reset_of_a_reused_engine_restores_the_exact_initial_state(env):
    from sdar.envs.alfworld.engine import build_engine

    seed = seed_of(env, "pick_two_obj_and_place")
    first = env.reset([seed])[0]
    play_expert(env, [first])  # changes the engine's state all the way to a win
    again = env.reset([seed])[0]  # same engine, translation reused from the worker's cache
    fresh = build_engine(str(env.game_for_seed(seed).path)).reset()  # a new engine, no cache
    assert again.raw_observation == first.raw_observation == fresh.feedback
    assert again.admissible_actions == first.admissible_actions == fresh["admissible_commands"]
    assert again.step == 0 and not again.done


@pytest.mark.slow
def test_two_workers_and_chunked_batches_play_to_the_same_results(games_dir, monkeypatch):
    from sdar.envs.alfworld import engine

    monkeypatch.setattr(engine, "MAX_IN_FLIGHT", 1)  # forces run() to split every batch
    with make_alfworld_env(data_dir=games_dir, num_workers=2) as env:
        states = env.reset([0, 1], group_size=2)
        assert env._pool.worker_pid(0) != env._pool.worker_pid(1)
        assert states[0].raw_observation == states[1].raw_observation
        while not all(s.done for s in states):
            actions = [
                None if s.done else env.parse_action(env.scripted_action(i, "expert", None)).action
                for i, s in enumerate(states)
            ]
            states = env.step(actions)
        assert all(s.won for s in states)
        assert [s.step for s in states] == [
            env.game_for_seed(k).expert_plan_length for k in (0, 0, 1, 1)
        ]

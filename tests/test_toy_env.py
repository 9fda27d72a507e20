"""The toy counting environment used by the trainer's tests: win, loss, invalid actions, step limit."""

import random

import pytest

from sdar.envs import make_env
from sdar.envs.play import play_episodes


def test_expert_wins_every_task():
    env = make_env("toy")
    summary = play_episodes(env, "expert", episodes=4, seed=0)
    assert summary["success"] == 1.0
    # target t needs t increments and one submit
    assert summary["mean_steps"] == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert summary["mean_return"] == 10.0


def test_wrong_submit_loses_and_invalid_action_is_flagged():
    env = make_env("toy")
    states = env.reset([0], group_size=2)  # target 1, two copies of the same task
    assert states[0].task == states[1].task
    states = env.step(["jump", "submit"])
    assert not states[0].valid_action and not states[0].done
    assert "Unknown action" in states[0].observation
    assert states[1].valid_action and states[1].done and not states[1].won and states[1].reward == 0.0
    with pytest.raises(ValueError, match="already done"):
        env.step(["increment", "submit"])
    states = env.step(["increment", None])
    states = env.step(["submit", None])
    assert states[0].won and states[0].reward == 10.0


def test_step_limit_ends_the_episode():
    env = make_env("toy", max_steps=3)
    states = env.reset([3])
    for _ in range(3):
        states = env.step(["decrement"])
    assert states[0].done and not states[0].won and states[0].step == 3


def test_parse_and_render():
    env = make_env("toy")
    state = env.reset([1])[0]
    assert env.parse_action("<think>x</think><action> submit </action>").action == "submit"
    assert not env.parse_action("submit").format_ok
    prompt = env.render_prompt(state, [("The counter shows 0.", "increment")], think=False)
    assert "Reach the number 2" in prompt and "Action: increment" in prompt and "<think>" not in prompt
    assert env.scripted_action(0, "random", random.Random(0)).startswith("<action>")


def test_action_only_demonstrations_drop_the_reasoning(tmp_path):
    import json

    path = tmp_path / "demos.jsonl"
    play_episodes(make_env("toy"), "expert", episodes=1, seed=0, demos_path=str(path), think=False)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["response"] for r in rows] == ["<action>increment</action>", "<action>submit</action>"]
    assert all("<think>" not in r["prompt"] for r in rows)

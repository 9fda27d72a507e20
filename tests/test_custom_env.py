"""The documented way to add an environment (docs/environments/README.md, "Adding an
environment"): subclass ``AgentEnv``, give it skill files, ``register_env`` its factory, and
``sdar train`` runs on it like on a shipped one.

What a user would notice: the run trains on the new environment's episodes (its tasks, its prompt,
its skills) and its metrics count them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from helpers import read_jsonl, write_run_config

from sdar.cli import main
from sdar.envs import (
    ENVIRONMENTS,
    AgentEnv,
    EnvState,
    ParsedAction,
    TaskInfo,
    make_env,
    register_env,
)
from sdar.envs.base import extract_tag

WORDS = ("apple", "pear", "plum")


class ParrotEnv(AgentEnv):
    """Say the word the task names: reward 10 for the right word, ``max_steps`` tries."""

    name = "parrot"
    history_length = 1
    max_steps = 2
    policies = ("expert", "random")

    def __init__(self, split: str = "train", max_steps: int = 2):
        self.check_limits(max_steps)
        self.split = split
        self.max_steps = max_steps
        self.states: list[EnvState] = []

    def num_tasks(self) -> int:
        return len(WORDS)

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        self.states = []
        for seed in seeds:
            word = WORDS[seed % len(WORDS)]
            task = TaskInfo(task_id=f"parrot-{self.split}-{word}",
                            instruction=f"Say the word {word}.", task_type="fruit",
                            skill_keys=("fruit",))
            self.states += [EnvState(task=task, observation="Your turn.", raw_observation="start",
                                     admissible_actions=list(WORDS)) for _ in range(group_size)]
        return list(self.states)

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        self.check_step_actions(self.states, actions)
        self.states = [s if a is None else self._said(s, a.strip().lower())
                       for s, a in zip(self.states, actions)]
        return list(self.states)

    def _said(self, state: EnvState, word: str) -> EnvState:
        won = state.task.instruction == f"Say the word {word}."
        step = state.step + 1
        return EnvState(task=state.task, observation=f"You said {word}.",
                        raw_observation=f"said={word}", admissible_actions=list(WORDS),
                        reward=10.0 if won else 0.0, done=won or step >= self.max_steps, won=won,
                        valid_action=word in WORDS, step=step)

    def render_prompt(
        self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True
    ) -> str:
        lines = [f"Task: {state.task.instruction}"]
        lines += [f"Observation: {obs}\nAction: {act}" for obs, act in history]
        lines.append(f"Now: {state.observation} Words: {', '.join(WORDS)}.")
        lines.append("Answer with one word in <action>...</action>.")
        return "\n".join(lines)

    def parse_action(self, response: str) -> ParsedAction:
        word = extract_tag(response, "action")
        return ParsedAction(word or "", word is not None)

    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        if policy == "expert":
            return f"<action>{self.states[index].task.instruction.split()[-1].rstrip('.')}</action>"
        if policy == "random":
            return f"<action>{rng.choice(WORDS)}</action>"
        return super().scripted_action(index, policy, rng)


def make_parrot_env(split: str = "train", max_steps: int = 2) -> ParrotEnv:
    return ParrotEnv(split=split, max_steps=max_steps)


@pytest.fixture()
def parrot():
    register_env("parrot", f"{__name__}:make_parrot_env")
    yield
    del ENVIRONMENTS["parrot"]


def test_a_registered_env_is_built_by_name(parrot):
    env = make_env("parrot", split="test", max_steps=1)
    assert isinstance(env, ParrotEnv) and env.max_steps == 1
    states = env.reset([1], group_size=2)
    assert [s.task.task_id for s in states] == ["parrot-test-pear"] * 2
    replies = [env.scripted_action(0, "expert", random.Random(0)), "<action>plum</action>"]
    states = env.step([env.parse_action(r).action for r in replies])
    assert [(s.won, s.done, s.reward) for s in states] == [(True, True, 10.0), (False, True, 0.0)]


def test_sdar_train_runs_one_iteration_on_a_registered_env(parrot, tmp_path):
    skills = tmp_path / "skills" / "parrot"
    skills.mkdir(parents=True)
    (skills / "general.md").write_text("Say exactly the word the task names.\n")
    (skills / "fruit.md").write_text("The words are fruits; answer with the fruit's name alone.\n")
    config = write_run_config(
        tmp_path / "parrot.yaml",
        env={"name": "parrot", "prompt_mode": "action_only"},
        teacher={"max_prompt_tokens": 512, "skills_dir": str(tmp_path / "skills")},
        eval={"every": 1, "num_tasks": 3, "before_training": False},
        iterations=1,
        tensorboard=False,
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output-dir", str(run), "--no-report"]) == 0

    (line,) = read_jsonl(run / "metrics.jsonl")
    assert line["iteration"] == 1
    assert line["train/episodes"] == 4.0  # 2 tasks x 2 copies of parrot episodes
    assert line["val/episodes"] == 3.0  # one per word
    assert 1.0 <= line["train/episode_length"] <= 2.0  # the parrot's step limit
    samples = read_jsonl(run / "samples.jsonl")
    assert samples and all(s["task_id"].startswith("parrot-train-") for s in samples)
    assert all(s["task_type"] == "fruit" and "Say the word" in s["prompt"] for s in samples)
    assert all(s["skill_files"] == ["parrot/general.md", "parrot/fruit.md"] for s in samples)

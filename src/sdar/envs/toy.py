"""A toy environment for smoke tests and debugging the trainer: count up to a target number.

Not a benchmark. The agent starts at 0 and must reach the task's target (1-4) with
``increment`` / ``decrement`` and then ``submit``. Winning gives reward 10. It exercises everything
the trainer needs (groups, admissible actions, invalid actions, step limits, skills routing by task
type, raw observations that repeat across trajectories for GiGPO) in microseconds per step, so the
trainer's tests spend their time in the model, not the environment.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sdar.envs.base import (
    AgentEnv,
    EnvState,
    ParsedAction,
    TaskInfo,
    check_reset_args,
    check_step_actions,
    extract_tag,
)

ACTIONS = ("increment", "decrement", "submit")


class CounterEnv(AgentEnv):
    """Reach the target number, then submit. Task type ``low`` (target 1-2) or ``high`` (3-4)."""

    name = "toy"
    history_length = 2
    policies = ("expert", "random")

    def __init__(self, split: str = "train", max_steps: int = 8):
        if split not in ("train", "test"):
            raise ValueError(f"toy env split must be 'train' or 'test', got {split!r}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.split = split
        self.max_steps = max_steps
        self._values: list[int] = []
        self._targets: list[int] = []
        self.states: list[EnvState] = []

    def num_tasks(self) -> int:
        return 4

    def _task(self, seed: int) -> TaskInfo:
        target = seed % 4 + 1
        task_type = "low" if target <= 2 else "high"
        return TaskInfo(task_id=f"{self.split}-{target}", instruction=f"Reach the number {target}, then submit.",
                        task_type=task_type, skill_keys=(task_type,))

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        check_reset_args(seeds, group_size)
        tasks = [self._task(s) for s in seeds for _ in range(group_size)]
        self._targets = [s % 4 + 1 for s in seeds for _ in range(group_size)]
        self._values = [0] * len(tasks)
        self.states = [EnvState(task=t, observation="The counter shows 0.", raw_observation="value=0",
                                admissible_actions=list(ACTIONS)) for t in tasks]
        return list(self.states)

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        check_step_actions(self.states, actions)
        new = []
        for i, (s, a) in enumerate(zip(self.states, actions)):
            if a is None:
                new.append(s)
                continue
            a = a.strip().lower()
            valid = a in ACTIONS
            won = False
            if a == "increment":
                self._values[i] += 1
            elif a == "decrement":
                self._values[i] -= 1
            elif a == "submit":
                won = self._values[i] == self._targets[i]
            step = s.step + 1
            done = won or a == "submit" or step >= self.max_steps
            v = self._values[i]
            obs = f"The counter shows {v}." if valid else f"Unknown action. The counter shows {v}."
            new.append(EnvState(task=s.task, observation=obs, raw_observation=f"value={v}",
                                admissible_actions=list(ACTIONS), reward=10.0 if won else 0.0, done=done, won=won,
                                valid_action=valid, step=step, metrics={"final_value": float(v)}))
        self.states = new
        return list(new)

    def render_prompt(self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True) -> str:
        lines = [f"Task: {state.task.instruction}"]
        for obs, act in history:
            lines.append(f"Observation: {obs}\nAction: {act}")
        lines.append(f"Now: {state.observation}")
        lines.append("Allowed actions: " + ", ".join(state.admissible_actions or []))
        if think:
            lines.append("Think in <think>...</think>, then give one action in <action>...</action>.")
        else:
            lines.append("Answer with one action in <action>...</action>.")
        return "\n".join(lines)

    def parse_action(self, response: str) -> ParsedAction:
        action = extract_tag(response, "action")
        return ParsedAction(action or "", action is not None)

    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        if policy == "random":
            return f"<action>{rng.choice(ACTIONS)}</action>"
        if policy == "expert":
            v, t = self._values[index], self._targets[index]
            action = "increment" if v < t else "decrement" if v > t else "submit"
            return f"<think>The counter is {v} and the target is {t}.</think><action>{action}</action>"
        return super().scripted_action(index, policy, rng)


def make_toy_env(split: str = "train", max_steps: int = 8) -> CounterEnv:
    """Factory for ``make_env("toy", ...)``."""
    return CounterEnv(split=split, max_steps=max_steps)

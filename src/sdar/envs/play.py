"""Scripted play of any ``AgentEnv``: success statistics and optional demonstrations.

Used by ``sdar env play`` and by the supervised warm start (``sdar sft``), which reads the
demonstration file this writes: one JSON line per step, ``{"prompt", "response", "task_id",
"task_type", "step", "won"}``, where ``prompt`` is the user message the agent would see.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sdar.envs.base import AgentEnv, EnvState

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass
class Turn:
    """One scripted turn: episode ``index`` in ``state`` (before the action), the last turns of
    its history as ``(observation, action)`` pairs, the scripted ``response`` and its parsed action."""

    index: int
    state: EnvState
    history: list[tuple[str, str]]
    response: str
    action: str


def scripted_play(env: AgentEnv, policy: str, states: list[EnvState], rng: random.Random, think: bool = True,
                  history_length: int | None = None) -> Iterator[tuple[list[Turn], list[EnvState]]]:
    """Play ``policy`` from the freshly reset ``states`` until every episode is done; yields, for
    every batch step, its turns and the states after it. ``history_length`` (default
    ``env.history_length``; 0: none) bounds each turn's history. With ``think=False`` responses lose
    their ``<think>`` part."""
    keep = env.history_length if history_length is None else history_length
    histories: list[list[tuple[str, str]]] = [[] for _ in states]
    while not all(s.done for s in states):
        turns = []
        for i, s in enumerate(states):
            if s.done:
                continue
            response = env.scripted_action(i, policy, rng)
            if not think:  # action-only prompts get action-only demonstrations
                response = _THINK.sub("", response).strip()
            action = env.parse_action(response).action
            turns.append(Turn(i, s, list(histories[i][-keep:] if keep else []), response, action))
            histories[i].append((s.observation, action))
        actions: list[str | None] = [None] * len(states)
        for t in turns:
            actions[t.index] = t.action
        states = env.step(actions)
        yield turns, states


def play_episodes(env: AgentEnv, policy: str, episodes: int, seed: int = 0, demos_path: str | None = None,
                  rng: random.Random | None = None, think: bool = True) -> dict:
    """Play ``episodes`` episodes (seeds ``seed .. seed + episodes - 1``, one copy each) in one batch.

    With ``think=False`` prompts are rendered in the action-only mode and the scripted responses
    lose their ``<think>`` part, so demonstrations match ``env.prompt_mode: action_only``.

    Returns ``{"episodes", "success", "mean_steps", "mean_return", "per_task_type": {type: success}}``.
    """
    rng = rng or random.Random(seed)
    states = start = env.reset(list(range(seed, seed + episodes)), group_size=1)
    returns = [0.0] * len(states)
    demos = []
    for turns, states in scripted_play(env, policy, start, rng, think=think):
        for t in turns:
            prompt = env.render_prompt(t.state, t.history, think=think)
            demos.append({"prompt": prompt, "response": t.response, "task_id": t.state.task.task_id,
                          "task_type": t.state.task.task_type, "step": t.state.step, "index": t.index})
            returns[t.index] += states[t.index].reward
    by_type: dict[str, list[bool]] = defaultdict(list)
    for s in states:
        by_type[s.task.task_type].append(s.won)
    if demos_path:
        path = Path(demos_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for d in demos:
                d["won"] = states[d.pop("index")].won
                f.write(json.dumps(d) + "\n")
    n = len(states)
    return {
        "env": env.name,
        "policy": policy,
        "episodes": n,
        "success": sum(s.won for s in states) / n,
        "mean_steps": sum(s.step for s in states) / n,
        "mean_return": sum(returns) / n,
        "per_task_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())},
    }

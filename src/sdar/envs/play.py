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
from pathlib import Path

from sdar.envs.base import AgentEnv

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def play_episodes(env: AgentEnv, policy: str, episodes: int, seed: int = 0, demos_path: str | None = None,
                  rng: random.Random | None = None, think: bool = True) -> dict:
    """Play ``episodes`` episodes (seeds ``seed .. seed + episodes - 1``, one copy each) in one batch.

    With ``think=False`` prompts are rendered in the action-only mode and the scripted responses
    lose their ``<think>`` part, so demonstrations match ``env.prompt_mode: action_only``.

    Returns ``{"episodes", "success", "mean_steps", "mean_return", "per_task_type": {type: success}}``.
    """
    rng = rng or random.Random(seed)
    states = env.reset(list(range(seed, seed + episodes)), group_size=1)
    histories: list[list[tuple[str, str]]] = [[] for _ in states]
    returns = [0.0] * len(states)
    demos = []
    while not all(s.done for s in states):
        actions: list[str | None] = []
        for i, s in enumerate(states):
            if s.done:
                actions.append(None)
                continue
            response = env.scripted_action(i, policy, rng)
            if not think:  # action-only prompts get action-only demonstrations
                response = _THINK.sub("", response).strip()
            prompt = env.render_prompt(s, histories[i][-env.history_length:] if env.history_length else [], think=think)
            demos.append({"prompt": prompt, "response": response, "task_id": s.task.task_id,
                          "task_type": s.task.task_type, "step": s.step, "index": i})
            parsed = env.parse_action(response)
            histories[i].append((s.observation, parsed.action))
            actions.append(parsed.action)
        states = env.step(actions)
        for i, s in enumerate(states):
            if actions[i] is not None:
                returns[i] += s.reward
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

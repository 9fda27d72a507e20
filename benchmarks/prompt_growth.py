"""Prompt tokens at episode step 50 / at step 1 in ALFWorld (target <= 1.5, bounded history).

Random-policy ALFWorld episodes are played to the 50-step limit; at every step the student prompt
is built exactly as the rollout collector builds it (``PromptBuilder``, the model's chat template,
the last H = 2 (observation, action) pairs) and its token count recorded. For contrast the same
states are also rendered with the whole history (H = all), which is what a naive multi-turn
chat transcript grows like. Only the tokenizer is needed, no model.

    python benchmarks/prompt_growth.py            # 8 episodes of the standard offline preset
    python benchmarks/prompt_growth.py --smoke    # 2 short episodes, seconds

Episodes the random policy wins before the limit are reported but left out of the ratio at the
limit step (they have no such step). Step 1 carries no history at all, so the ratio against step
H + 1 (the first step showing H pairs) is reported too: it isolates growth beyond the window.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

from transformers import AutoTokenizer

from sdar.envs import make_env
from sdar.models.loading import prepare_tokenizer
from sdar.models.packaged import smollm2_tokenizer_folder
from sdar.rollout import PromptBuilder

RESULTS = Path(__file__).resolve().parent / "results"
UNBOUNDED = 10**6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=None, help="default 8 (smoke 2)")
    parser.add_argument(
        "--steps", type=int, default=None, help="episode step limit (default 50, smoke 6)"
    )
    parser.add_argument(
        "--preset", default=None, help="offline game preset (default standard, smoke easy)"
    )
    parser.add_argument(
        "--think", action="store_true", help="render the <think> format instruction"
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default results/prompt_growth.json; smoke: ..._smoke.json)",
    )
    args = parser.parse_args(argv)
    episodes = args.episodes or (2 if args.smoke else 8)
    steps = args.steps or (6 if args.smoke else 50)
    preset = args.preset or ("easy" if args.smoke else "standard")

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(smollm2_tokenizer_folder()))
    games = 10 if args.smoke else 40  # smoke: the same cached games as the ALFWorld env tests
    env = make_env("alfworld", preset=preset, offline_games=games, max_steps=steps)
    builder = PromptBuilder(env, tokenizer, None, think=args.think)
    h = env.history_length
    rng = random.Random(0)
    states = env.reset(list(range(episodes)), group_size=1)
    histories: list[list[tuple[str, str]]] = [[] for _ in states]
    bounded: list[list[int]] = [[] for _ in states]
    full: list[list[int]] = [[] for _ in states]
    while not all(s.done for s in states):
        actions: list[str | None] = []
        for i, s in enumerate(states):
            if s.done:
                actions.append(None)
                continue
            bounded[i].append(len(builder.build(s, histories[i][-h:], UNBOUNDED).ids))
            full[i].append(len(builder.build(s, histories[i], UNBOUNDED).ids))
            action = env.parse_action(env.scripted_action(i, "random", rng)).action
            histories[i].append((s.observation, action))
            actions.append(action)
        states = env.step(actions)
    env.close()

    reached = [i for i in range(episodes) if len(bounded[i]) == steps]
    if not reached:
        raise SystemExit(
            f"no episode reached step {steps} (all were won earlier); raise --episodes"
        )

    def at(series: list[list[int]], step: int) -> float:
        return statistics.mean(series[i][step - 1] for i in reached)

    result = {
        "benchmark": "prompt_growth",
        "target": f"prompt tokens at step {steps} / at step 1 <= 1.5",
        "settings": {
            "env": "alfworld",
            "preset": preset,
            "offline_games": games,
            "episodes": episodes,
            "steps": steps,
            "history_length": h,
            "policy": "random",
            "think": args.think,
            "tokenizer": "SmolLM2-135M-Instruct",
            "smoke": args.smoke,
        },
        "episodes_reaching_limit": len(reached),
        "bounded_history": {
            "step_1": at(bounded, 1),
            f"step_{steps}": at(bounded, steps),
            "ratio": at(bounded, steps) / at(bounded, 1),
            "max_over_steps": max(max(bounded[i]) for i in reached),
            # step 1 has no history at all; step H + 1 is the first with H pairs
            f"step_{h + 1}": at(bounded, h + 1),
            f"ratio_step_{steps}_over_step_{h + 1}": at(bounded, steps) / at(bounded, h + 1),
        },
        "full_history": {
            "step_1": at(full, 1),
            f"step_{steps}": at(full, steps),
            "ratio": at(full, steps) / at(full, 1),
        },
        "per_episode_bounded": bounded,
    }
    out = args.out or RESULTS / ("prompt_growth_smoke.json" if args.smoke else "prompt_growth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("bounded_history", "full_history")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

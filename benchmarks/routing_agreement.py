"""How often the released code's WebShop skill routing picks the same categories as this project's.

``teacher.routing: task_type`` routes a WebShop goal once, by whole keywords of its instruction
(``sdar.envs.webshop.routing``); ``teacher.routing: released`` routes every teacher prompt by
keyword substrings of the whole prompt (``sdar.skills.released.route_teacher``). On the test goals
of the generated catalog this counts the goals (or steps) where the two give the same category
set, reading (a) the instruction alone, (b) the whole first-step prompt, (c) the whole prompt at
every step of oracle episodes (history H = 2). Only the environment is needed, no model.

    python benchmarks/routing_agreement.py            # 200 test goals
    python benchmarks/routing_agreement.py --smoke    # 20 goals, seconds
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from sdar.envs import make_env
from sdar.skills.released import route_observation, route_teacher

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--goals", type=int, default=None, help="test goals (default 200, smoke 20)")
    parser.add_argument("--smoke", action="store_true", help="a small run for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS / "routing_agreement.json")
    args = parser.parse_args(argv)
    n = args.goals or (20 if args.smoke else 200)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import write_result

    env = make_env("webshop", split="test")
    states = env.reset(list(range(n)))
    own = [set(s.task.skill_keys) for s in states]
    instruction = sum(set(route_observation("webshop", s.task.instruction)) == k for s, k in zip(states, own))
    first = sum(set(route_teacher("webshop", s.task, env.render_prompt(s, [], think=True))) == k
                for s, k in zip(states, own))
    rng = random.Random(0)
    history: list[list[tuple[str, str]]] = [[] for _ in states]
    steps = same = 0
    while not all(s.done for s in states):
        actions = []
        for i, s in enumerate(states):
            if s.done:
                actions.append(None)
                continue
            prompt = env.render_prompt(s, history[i][-2:], think=True)
            steps += 1
            same += set(route_teacher("webshop", s.task, prompt)) == own[i]
            action = env.parse_action(env.scripted_action(i, "oracle", rng)).action
            history[i].append((s.observation, action))
            actions.append(action)
        states = env.step(actions)
    env.close()
    result = {
        "goals": n,
        "same_set_instruction_only": instruction,
        "same_set_first_step_prompt": first,
        "oracle_steps": steps,
        "same_set_oracle_steps": same,
        "notes": "user message only (Qwen2.5's chat template and default system prompt hold no keyword); every "
                 "think-mode WebShop prompt of this project carries the answer-format example "
                 "'search[red running shoes]', which the released substring rule routes to footwear",
    }
    print(write_result(result, args.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

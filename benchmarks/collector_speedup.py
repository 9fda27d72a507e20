"""Rollout tokens per second: batched step-wise collector / one env at a time (target >= 3x).

The same N episodes (tasks ``seed .. seed + N - 1``, one copy each) are played twice per round:

* ``batched``: ``collect_rollout`` over all N at once; every step generates for all live episodes
  in one batched call (docs/algorithm.md, "Rollout");
* ``sequential``: ``collect_rollout`` called N times, one episode each (what a per-environment
  agent loop does).

Decoding is greedy, so both sides play (nearly) the same episodes; the generated token counts of
both are recorded to show it (padding in a batch can flip a near-tie, so they may differ slightly).
Throughput = generated response tokens / wall time of the whole rollout (environment included);
the share spent inside generation is reported too. An untimed batched pass over the same seeds
warms up first (first-time game loading); then rounds alternate which side goes first.

    python benchmarks/collector_speedup.py            # SmolLM2-135M, ALFWorld easy, 16 envs
    # long responses, as the paper's agents write them:
    python benchmarks/collector_speedup.py --prompt-mode think --max-new-tokens 128 --out ...
    python benchmarks/collector_speedup.py --smoke    # tiny random model, toy env, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _results import machine_info, write_result  # benchmarks/_results.py

from sdar.envs import make_env
from sdar.models.generation import GenerationConfig, generate
from sdar.models.loading import ModelConfig, load_policy
from sdar.rollout import PromptBuilder, collect_rollout

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default smollm2-135m (smoke: tiny-random)")
    parser.add_argument("--env", default=None, help="default alfworld (smoke: toy)")
    parser.add_argument(
        "--envs", type=int, default=None, help="episodes played (default 16; smoke 4)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="episode step limit (default 8)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--prompt-mode",
        choices=["action_only", "think"],
        default="action_only",
        help="action_only: the action tag alone (short responses); think: reasoning first, as the "
        "paper's agents write (responses run to --max-new-tokens, so decoding dominates)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 2; smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model on the toy env")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default results/collector_speedup.json; smoke: ..._smoke.json)",
    )
    args = parser.parse_args(argv)
    model_name = args.model or ("tiny-random" if args.smoke else "smollm2-135m")
    env_name = args.env or ("toy" if args.smoke else "alfworld")
    n_envs = args.envs or (4 if args.smoke else 16)
    max_steps = args.max_steps or (3 if args.smoke else 8)
    repeats = args.repeats or (1 if args.smoke else 2)
    options: dict = {"max_steps": max_steps}
    if env_name == "alfworld":
        options.update(preset="easy", offline_games=40)

    model, tokenizer = load_policy(ModelConfig(name=model_name))
    env = make_env(env_name, **options)
    builder = PromptBuilder(env, tokenizer, None, think=args.prompt_mode == "think")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, greedy=True)
    generation_s = [0.0]

    def generate_fn(prompt_ids: list[list[int]]) -> list[list[int]]:
        t0 = time.perf_counter()
        out = generate(model, tokenizer, prompt_ids, config)
        generation_s[0] += time.perf_counter() - t0
        return out

    def play(seeds: list[int]) -> dict:
        generation_s[0] = 0.0
        t0 = time.perf_counter()
        rollout = collect_rollout(
            env,
            builder,
            generate_fn,
            tokenizer,
            seeds,
            1,
            env.history_length,
            1024,
            0.1,
            progress=False,
        )
        return {
            "episodes": len(rollout.episodes),
            "step_samples": len(rollout.samples),
            "response_tokens": sum(len(s.response_ids) for s in rollout.samples),
            "seconds": time.perf_counter() - t0,
            "generation_seconds": generation_s[0],
        }

    seeds = list(range(n_envs))
    # Untimed warm-up on the same seeds: the first reset of an ALFWorld game loads and compiles
    # it (seconds per game, see env_latency_alfworld.json), which would otherwise be charged to
    # whichever side runs first.
    play(seeds)
    runs: dict[str, list[dict]] = {"batched": [], "sequential": []}
    for r in range(repeats):
        order = ["batched", "sequential"] if r % 2 == 0 else ["sequential", "batched"]
        for side in order:
            if side == "batched":
                runs[side].append(play(seeds))
            else:
                parts = [play([s]) for s in seeds]
                runs[side].append({k: sum(p[k] for p in parts) for k in parts[0]})
    env.close()

    def tps(side: str) -> float:
        return statistics.median(x["response_tokens"] / x["seconds"] for x in runs[side])

    result = {
        "benchmark": "collector_speedup",
        "target": f"batched / sequential tokens per second >= 3 at {n_envs} environments",
        "settings": {
            "model": model_name,
            "env": env_name,
            "env_options": options,
            "envs": n_envs,
            "max_new_tokens": args.max_new_tokens,
            "decoding": "greedy",
            "prompt_mode": args.prompt_mode,
            "repeats": repeats,
            "smoke": args.smoke,
        },
        "runs": runs,
        "tokens_per_second": {"batched": tps("batched"), "sequential": tps("sequential")},
        "speedup": tps("batched") / tps("sequential"),
        "generation_only_speedup": statistics.median(
            (b["response_tokens"] / b["generation_seconds"])
            / (s["response_tokens"] / s["generation_seconds"])
            for b, s in zip(runs["batched"], runs["sequential"])
        ),
        "machine": machine_info(),
    }
    out = args.out or RESULTS / (
        "collector_speedup_smoke.json" if args.smoke else "collector_speedup.json"
    )
    write_result(result, out)
    print(
        json.dumps(
            {k: result[k] for k in ("tokens_per_second", "speedup", "generation_only_speedup")},
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

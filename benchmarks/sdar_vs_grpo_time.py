"""SDAR iteration time / GRPO iteration time on the same rollouts (target <= 1.15).

One ``Trainer`` collects one iteration's rollout; then the learning half of the iteration
(``Trainer.learn``: old and reference log-probs, the teacher pass where the method needs it,
advantages, the PPO update) runs on those very step samples for three variants, interleaved
round-robin so that the shared machine's load hits all of them alike:

* ``grpo``: lambda = 0, no teacher pass;
* ``sdar_cache``: SDAR with the skill-prefix key/value cache (``teacher.prefix_cache=true``);
* ``sdar_no_cache``: SDAR recomputing the skill prefix for every row.

Before every timed call the trainable weights and the optimizer state are put back, so each
variant updates the same starting model. An iteration is ``rollout + learn``; the rollout is the
same for every method, so the reported iteration ratio is
``(rollout_s + learn_sdar) / (rollout_s + learn_grpo)``; the learn-only ratio (the cost SDAR adds
where it adds it) is reported too. Medians over the repeats; on a GPU every variant first runs
once untimed (CUDA start-up).

    python benchmarks/sdar_vs_grpo_time.py            # configs/bench/webshop.yaml settings
    python benchmarks/sdar_vs_grpo_time.py --config configs/bench/alfworld.yaml   # ALFWorld
    python benchmarks/sdar_vs_grpo_time.py --smoke    # tiny random model, toy env, seconds

Switching the method on a live ``Trainer`` (``config``, ``spec`` and ``needs``) is a benchmark
device, not an API: it is what "the same rollouts" requires.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _results import machine_info, write_result  # benchmarks/_results.py

from sdar.methods import METHODS, LossConfig, required_inputs
from sdar.trainer.config import load_config
from sdar.trainer.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"grpo": ("grpo", True), "sdar_cache": ("sdar", True), "sdar_no_cache": ("sdar", False)}

SMOKE_OVERRIDES = [
    "model={name: tiny-random, lora: null}",
    "env={name: toy, prompt_mode: action_only, max_steps: 3}",
    "rollout.tasks_per_iteration=2",
    "rollout.group_size=2",
    "rollout.max_prompt_tokens=256",
    "rollout.generation={max_new_tokens: 6}",
    "teacher.max_prompt_tokens=512",
    "optim.mini_batch_size=8",
    "optim.micro_batch_size=4",
]


def use_variant(trainer: Trainer, base, method: str, prefix_cache: bool) -> None:
    loss = LossConfig.for_method(method)
    trainer.config = dataclasses.replace(
        base, loss=loss, teacher=dataclasses.replace(base.teacher, prefix_cache=prefix_cache)
    )
    trainer.spec = METHODS[method]
    trainer.needs = required_inputs(loss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        default=str(ROOT / "configs" / "bench" / "webshop.yaml"),
        help="run config whose model, env, rollout and optim settings are timed",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default 3; smoke 1)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny random model on the toy env")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default results/sdar_vs_grpo_time.json; smoke: ..._smoke.json)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.smoke else 3)
    overrides = (SMOKE_OVERRIDES if args.smoke else []) + list(args.overrides)
    overrides += ["method=sdar", "eval.every=0", "eval.before_training=false", "tensorboard=false"]
    config = load_config(args.config, overrides)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp) / "run")
        t0 = time.perf_counter()
        rollout = trainer.collect(1)
        rollout_s = time.perf_counter() - t0
        samples = [s for s in rollout.samples if s.response_ids]
        params = {
            n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
        }
        optimizer_state = trainer.optimizer.state_dict()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        parts: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        names = list(VARIANTS)
        # (round, variant) in running order; the order of the variants rotates between rounds.
        # On a GPU the first passes of a process pay CUDA's start-up (6 s against 2.3-3.2 s for
        # the same GRPO learn step on an H100), so every variant first runs once untimed there.
        warm_up = [(None, name) for name in names] if trainer.device.type == "cuda" else []
        schedule = warm_up + [
            (r, name)
            for r in range(repeats)
            for name in names[r % len(names) :] + names[: r % len(names)]
        ]
        for r, name in schedule:
            method, cache = VARIANTS[name]
            with torch.no_grad():
                for n, p in trainer.model.named_parameters():
                    if n in params:
                        p.copy_(params[n])
            trainer.optimizer.load_state_dict(optimizer_state)
            use_variant(trainer, config, method, cache)
            t0 = time.perf_counter()
            metrics = trainer.learn(1, samples)
            if r is None:
                continue
            times[name].append(time.perf_counter() - t0)
            parts[name].append({k: v for k, v in metrics.items() if k.startswith("timing/")})
        if trainer.log is not None:
            trainer.log.close()
        trainer.train_env.close()

    learn = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "benchmark": "sdar_vs_grpo_time",
        "target": "iteration ratio SDAR/GRPO <= 1.15 with the prefix cache on",
        "settings": {
            "config": os.path.relpath(args.config, ROOT) if not args.smoke else "smoke",
            "overrides": overrides,
            "repeats": repeats,
            "untimed_warm_up": bool(warm_up),
            "smoke": args.smoke,
            "model": config.model.name,
            "lora": config.model.lora is not None,
            "env": config.env.name,
            "tasks_x_group": [config.rollout.tasks_per_iteration, config.rollout.group_size],
            "max_new_tokens": config.rollout.generation.max_new_tokens,
        },
        "rollout": {
            "seconds": rollout_s,
            "step_samples": len(samples),
            "mean_prompt_tokens": statistics.mean(len(s.prompt_ids) for s in samples),
            "mean_response_tokens": statistics.mean(len(s.response_ids) for s in samples),
        },
        "learn_seconds": {v: {"median": learn[v], "all": times[v]} for v in VARIANTS},
        "learn_breakdown": parts,
        "ratios": {
            "iteration_sdar_cache_over_grpo": (rollout_s + learn["sdar_cache"])
            / (rollout_s + learn["grpo"]),
            "iteration_sdar_no_cache_over_grpo": (rollout_s + learn["sdar_no_cache"])
            / (rollout_s + learn["grpo"]),
            "learn_sdar_cache_over_grpo": learn["sdar_cache"] / learn["grpo"],
            "learn_sdar_no_cache_over_grpo": learn["sdar_no_cache"] / learn["grpo"],
        },
        "machine": machine_info(),
    }
    out = args.out or RESULTS / (
        "sdar_vs_grpo_time_smoke.json" if args.smoke else "sdar_vs_grpo_time.json"
    )
    write_result(result, out)
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

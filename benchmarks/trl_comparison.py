"""Time per training step: this project's GRPO versus TRL's ``GRPOTrainer`` (target: faster).

Both train the same model (full fine-tuning, float32, CPU) on the same single-turn task: offline
Search-QA with one step (``env.max_steps=1``: the agent must answer at once; reward = exact match,
computed by the very same environment), with the same prompts (the environment's user message in
the model's chat template, action-only format), B tasks x G samples per step, the same response
budget, temperature 1.0, learning rate, one optimizer step per batch, no KL term and no entropy
bonus (TRL's default ``beta=0``; here ``loss.c_kl=0``, ``loss.c_ent=0``), no gradient
checkpointing on either side (TRL's default turns it on; it is switched off here).

A step is everything from sampling to the optimizer step: for this project one
``Trainer.run_iteration`` (rollout, old log-probs, advantages, update); for TRL one trainer step
(generation, reward, advantages, loss, update), timed by a callback between ``on_step_begin`` and
``on_step_end``. The two alternate in blocks of ``--steps`` steps for ``--rounds`` rounds in one
process; medians are reported. Differences that remain, stated so nobody has to find them: TRL
generates with ``model.generate`` (``transformers``), this project with its own batched sampler;
this project scores the old log-probs in a separate no-grad pass (as verl does), TRL skips it when
it takes one step per generation; the loss reductions differ slightly (TRL ``dapo`` token-level,
here token-mean over the mini-batch), which does not change the cost.

    python benchmarks/trl_comparison.py            # SmolLM2-135M, 4 tasks x 4, 32 new tokens
    python benchmarks/trl_comparison.py --smoke    # tiny random model, 1 round of 1 step, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _results import machine_info, write_result  # benchmarks/_results.py

from sdar.envs import make_env
from sdar.models.loading import ModelConfig, load_policy
from sdar.trainer.config import load_config
from sdar.trainer.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_POOL = 64  # training tasks the TRL dataset draws from


def trl_steps(model, tokenizer, env, args, steps: int, out_dir: str) -> list[float]:
    """Train TRL's GRPOTrainer for ``steps`` steps; returns each step's wall time."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    states = env.reset(list(range(PROMPT_POOL)), group_size=1)
    rows = [
        {"prompt": [{"role": "user", "content": env.render_prompt(s, [], think=False)}], "seed": i}
        for i, s in enumerate(states)
    ]

    def exact_match(prompts, completions, seed, **_) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        env.reset(list(seed), group_size=1)
        new = env.step([env.parse_action(t).action for t in texts])
        return [float(s.reward) for s in new]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, *a, **k):
            self._t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t0)

    timer = StepTimer()
    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.tasks * args.group,
        num_generations=args.group,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        learning_rate=args.lr,
        beta=0.0,
        max_steps=steps,
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL's default is True; this project's run does not use it
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=exact_match,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    return timer.times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default smollm2-135m (smoke: tiny-random)")
    parser.add_argument(
        "--tasks", type=int, default=None, help="prompts per step (default 4, smoke 2)"
    )
    parser.add_argument(
        "--group", type=int, default=None, help="samples per prompt (default 4, smoke 2)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 32 (smoke 8)")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per block (default 3, smoke 1)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="blocks per side (default 2, smoke 1)"
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default results/trl_comparison.json; smoke: ..._smoke.json)",
    )
    args = parser.parse_args(argv)
    try:
        import trl
    except ImportError:
        raise SystemExit(
            "trl_comparison.py needs TRL: pip install trl==1.16.0 (the project's dev extra)"
        ) from None
    args.model = args.model or ("tiny-random" if args.smoke else "smollm2-135m")
    args.tasks = args.tasks or (2 if args.smoke else 4)
    args.group = args.group or (2 if args.smoke else 4)
    args.max_new_tokens = args.max_new_tokens or (8 if args.smoke else 32)
    steps = args.steps or (1 if args.smoke else 3)
    rounds = args.rounds or (1 if args.smoke else 2)
    batch = args.tasks * args.group

    overrides = [
        f"model={{name: {args.model}, lora: null}}",
        "method=grpo",
        "loss.c_kl=0",
        "loss.c_ent=0",
        "env={name: search, prompt_mode: action_only, max_steps: 1}",
        f"rollout.tasks_per_iteration={args.tasks}",
        f"rollout.group_size={args.group}",
        f"rollout.generation={{max_new_tokens: {args.max_new_tokens}, temperature: 1.0}}",
        f"optim.mini_batch_size={batch}",
        f"optim.micro_batch_size={batch}",
        f"optim.lr={args.lr:.3e}",  # YAML reads 1e-06 as a string, 1.000e-06 as a float
        "eval.every=0",
        "eval.before_training=false",
        "tensorboard=false",
        "log_samples=0",
    ]
    config = load_config(None, overrides)
    ours_times: list[float] = []
    trl_times: list[float] = []
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        ours = Trainer(config, Path(tmp) / "ours")
        trl_model, trl_tokenizer = load_policy(ModelConfig(name=args.model))
        reward_env = make_env("search", max_steps=1)
        iteration = 0
        for r in range(rounds):
            for _ in range(steps):
                iteration += 1
                t0 = time.perf_counter()
                ours.run_iteration(iteration)
                ours_times.append(time.perf_counter() - t0)
            trl_times += trl_steps(
                trl_model, trl_tokenizer, reward_env, args, steps, f"{tmp}/trl{r}"
            )
        reward_env.close()
        if ours.log is not None:
            ours.log.close()
        ours.train_env.close()

    import trl

    ours_s, trl_s = statistics.median(ours_times), statistics.median(trl_times)
    # the first step of a block carries one-time work (TRL builds its trainer state, data loader)
    warm_ours = [t for i, t in enumerate(ours_times) if i % steps] or ours_times
    warm_trl = [t for i, t in enumerate(trl_times) if i % steps] or trl_times
    result = {
        "benchmark": "trl_comparison",
        "target": "this project's GRPO step time < TRL GRPOTrainer step time",
        "settings": {
            "model": args.model,
            "fine_tuning": "full, float32",
            "task": "Search-QA, 1 step (answer at once)",
            "tasks_per_step": args.tasks,
            "group_size": args.group,
            "max_new_tokens": args.max_new_tokens,
            "lr": args.lr,
            "kl": 0.0,
            "entropy_bonus": 0.0,
            "steps_per_block": steps,
            "rounds": rounds,
            "smoke": args.smoke,
            "sdar_overrides": overrides,
        },
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "step_seconds": {
            "sdar_grpo": {"median": ours_s, "all": ours_times},
            "trl_grpo_trainer": {"median": trl_s, "all": trl_times},
        },
        "ratio_sdar_over_trl": ours_s / trl_s,
        "ratio_sdar_over_trl_without_first_step_of_blocks": statistics.median(warm_ours)
        / statistics.median(warm_trl),
        "machine": machine_info(),
    }
    out = args.out or RESULTS / (
        "trl_comparison_smoke.json" if args.smoke else "trl_comparison.json"
    )
    write_result(result, out)
    print(
        json.dumps(
            {
                "step_seconds_median": {"sdar_grpo": ours_s, "trl": trl_s},
                "ratio_sdar_over_trl": result["ratio_sdar_over_trl"],
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

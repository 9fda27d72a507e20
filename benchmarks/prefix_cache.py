"""Teacher scoring time with and without the skill-prefix KV cache.

Described in docs/algorithm.md, "Skill-prefix cache".

The teacher re-scores every step sample with ``"[Privileged Skill Information]\\n" + skills +
"\\n\\n"`` in front of the student prompt. All samples of one task type share that prefix, so its
keys/values can be computed once and reused (``score_with_prefix(use_cache=True)``) instead of
being recomputed for every row (``use_cache=False``). This script times both on the same rows,
checks they agree, and writes a JSON summary.

    python benchmarks/prefix_cache.py          # SmolLM2-135M, writes results/prefix_cache.json
    python benchmarks/prefix_cache.py --smoke         # tiny random model, a few rows, seconds

The skill text is the project's own WebShop "apparel" routing (general + apparel files); prompts
are WebShop-like step prompts rendered with the model's chat template; responses are fixed
think/action texts. Only lengths matter for the timing, and they are recorded in the output.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sdar.models.loading import ModelConfig, load_policy
from sdar.models.scoring import score_with_prefix

RESULTS = Path(__file__).resolve().parent / "results"
SKILL_HEADER = "[Privileged Skill Information]\n"


def skill_text() -> tuple[str, str]:
    """The skills the teacher would see for a WebShop apparel task, and where they came from."""
    from sdar.skills import SkillLibrary

    selection = SkillLibrary("webshop").select_keys(["apparel"])
    return selection.text, "sdar.skills webshop: " + ", ".join(selection.files)


def step_prompt(row: int) -> str:
    """A WebShop-like step prompt (instruction, two past steps, current page, clickables)."""
    size = ["small", "medium", "large", "x-large"][row % 4]
    price = 20 + 5 * (row % 7)
    items = "\n".join(
        f"[B0{row:02d}{k:04d}] men's cotton t-shirt, style {k}, crew neck  ${10 + 3 * k:.2f}"
        for k in range(10)
    )
    return (
        "You are an expert autonomous agent operating in the WebShop e-commerce platform.\n"
        f"Your task is to: find me a slim fit cotton t-shirt for men in size {size}, and price "
        f"lower than {price}.00 dollars.\n"
        "Prior to this step, you have already taken 2 step(s). Below are the most recent 2 "
        "observations and the corresponding actions you took:\n"
        "[Observation 1: 'search'] [Action 1: 'search[slim fit cotton t-shirt men]']\n"
        f"[Observation 2: 'results page 1'] [Action 2: 'click[next >]']\n"
        f"You are now at step 3 and your current observation is: results page 2\n{items}\n"
        "Your admissible actions of the current situation are: ['click[back to search]', "
        "'click[< prev]', " + ", ".join(f"'click[b0{row:02d}{k:04d}]'" for k in range(10)) + "].\n"
        "Now it's your turn to take an action. First reason step by step inside <think> </think>, "
        "then give one admissible action inside <action> </action>."
    )


def response_text(row: int) -> str:
    return (
        f"<think>The results on page 2 include cotton t-shirts; item {row % 10} looks like a slim "
        "fit crew neck within the price limit, so I will open it and check the size options."
        f"</think><action>click[b0{row:02d}{row % 10:04d}]</action>"
    )


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def measure(fn) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process (all its threads) and the result of ``fn()``.

    CPU time counts the work done, so it stays meaningful on a machine shared with other jobs,
    where wall time also counts waiting for a core.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="model name (default smollm2-135m; tiny-random with --smoke)"
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="step samples sharing the prefix (default 8; 4 with --smoke)",
    )
    parser.add_argument("--micro-batch-size", type=int, default=4, help="rows per forward pass")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs, median reported (default 3; 1 with --smoke)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model, few rows: checks the script works, the timing means little",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default "
        "benchmarks/results/prefix_cache.json, prefix_cache_smoke.json with --smoke)",
    )
    args = parser.parse_args(argv)
    model_name = args.model or ("tiny-random" if args.smoke else "smollm2-135m")
    n_rows = args.rows or (4 if args.smoke else 8)
    repeats = args.repeats or (1 if args.smoke else 3)
    output = (
        Path(args.out)
        if args.out
        else RESULTS / ("prefix_cache_smoke.json" if args.smoke else "prefix_cache.json")
    )

    model, tokenizer = load_policy(ModelConfig(name=model_name))
    skills, skill_source = skill_text()
    prefix = encode(tokenizer, SKILL_HEADER + skills + "\n\n")
    prompts = [
        encode(
            tokenizer,
            tokenizer.apply_chat_template(
                [{"role": "user", "content": step_prompt(i)}],
                add_generation_prompt=True,
                tokenize=False,
            ),
        )
        for i in range(n_rows)
    ]
    responses = [
        encode(tokenizer, response_text(i)) + [tokenizer.eos_token_id] for i in range(n_rows)
    ]

    def run(use_cache: bool):
        with torch.no_grad():
            return score_with_prefix(
                model,
                prefix,
                prompts,
                responses,
                use_cache=use_cache,
                pad_id=tokenizer.pad_token_id,
                micro_batch_size=args.micro_batch_size,
            )

    run(True)  # warm-up: allocator, kernels
    timings: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    results = {}
    for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
        for use_cache in (True, False):
            wall, cpu, results[use_cache] = measure(functools.partial(run, use_cache))
            timings[use_cache].append((wall, cpu))
    diff = (results[True].log_probs - results[False].log_probs).abs().max().item()

    def median(use_cache: bool, index: int) -> float:
        return statistics.median(t[index] for t in timings[use_cache])

    result = {
        "model": model_name,
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "rows": n_rows,
        "micro_batch_size": args.micro_batch_size,
        "repeats": repeats,
        "skill_source": skill_source,
        "prefix_tokens": len(prefix),
        "mean_prompt_tokens": sum(map(len, prompts)) / n_rows,
        "mean_response_tokens": sum(map(len, responses)) / n_rows,
        "with_cache_s": median(True, 0),
        "without_cache_s": median(False, 0),
        "speedup": median(False, 0) / median(True, 0),
        "with_cache_cpu_s": median(True, 1),
        "without_cache_cpu_s": median(False, 1),
        "cpu_speedup": median(False, 1) / median(True, 1),
        "max_abs_diff": diff,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {os.path.relpath(output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bfloat16 autocast vs float32: iteration time and log-prob agreement (target: bf16 <= 0.6x fp32).

Two ``Trainer`` objects on the same config and seed, one with ``model.autocast=none`` and one with
``model.autocast=bf16``, run whole SDAR iterations (rollout, old / reference / teacher log-probs,
advantages, update) alternately, so that the shared machine's load hits both alike. Reported:
seconds per iteration and per phase for each, medians over ``--rounds``, and their ratio.

Log-prob agreement: the step samples of the fp32 trainer's first rollout are scored by both
trainers' models before either has updated (LoRA starts at B = 0 and the seed is shared, so the
weights are identical): the policy's log-probs of the sampled tokens and the teacher's, max and
mean absolute difference over response tokens. The learning outcome in both precisions is the
canary (``benchmarks/canary.py`` with ``model.autocast`` none and bf16), reported beside it.

    python benchmarks/bf16_iteration.py                    # configs/bench/gate_study.yaml setting
    python benchmarks/bf16_iteration.py --config configs/bench/alfworld.yaml
    python benchmarks/bf16_iteration.py --smoke            # tiny random model, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _results import machine_info, write_result  # benchmarks/_results.py

from sdar.trainer.config import load_config
from sdar.trainer.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.6
SMOKE = ["model={name: tiny-random, lora: null}", "rollout.tasks_per_iteration=2", "rollout.group_size=2",
         "eval.every=0", "iterations=3"]


def phases(metrics: dict) -> dict:
    keys = ("timing/rollout_s", "timing/old_ref_log_probs_s", "timing/teacher_s", "timing/update_s")
    return {k.split("/")[1]: metrics.get(k, 0.0) for k in keys}


@torch.no_grad()
def logprob_agreement(fp32: Trainer, bf16: Trainer, samples) -> dict:
    from sdar.trainer.teacher import teacher_log_probs

    out = {}
    for name, score in (("policy", lambda t: t._score(t.model, samples)[0]),
                        ("teacher", lambda t: teacher_log_probs(
                            t.model, t.train_prompts, samples, t.config.teacher.max_prompt_tokens,
                            t.config.teacher.on_overflow, t.pad_id, context=t.config.teacher.context).log_probs)):
        with fp32._autocast():
            a = torch.cat(score(fp32))
        with bf16._autocast():
            b = torch.cat(score(bf16))
        diff = (a - b).abs()
        out[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "tokens": int(diff.numel()), "mean_log_prob_fp32": float(a.mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bench/gate_study.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides (method=sdar is the default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="result JSON (default: results/bf16_iteration.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model: plumbing only")
    args = parser.parse_args(argv)
    overrides = ["method=sdar", *(SMOKE if args.smoke else []), *args.overrides]
    output = Path(args.out) if args.out else (
        Path(tempfile.gettempdir()) / "bf16_iteration_smoke.json" if args.smoke else RESULTS / "bf16_iteration.json")
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("fp32", "bf16"):
            config = load_config(ROOT / args.config, [*overrides, f"model.autocast={'none' if name == 'fp32' else 'bf16'}"])
            trainers[name] = Trainer(config, Path(tmp) / name)
        first = trainers["fp32"].collect(1)
        samples = [s for s in first.samples if s.response_ids]
        agreement = logprob_agreement(trainers["fp32"], trainers["bf16"], samples)
        times: dict[str, list[dict]] = {"fp32": [], "bf16": []}
        for round_index in range(1, args.rounds + 1):
            for name in (("fp32", "bf16") if round_index % 2 else ("bf16", "fp32")):
                t0 = time.perf_counter()
                metrics = trainers[name].run_iteration(round_index)
                times[name].append({"total_s": time.perf_counter() - t0, **phases(metrics),
                                    "step_samples": metrics.get("train/step_samples")})
                print(f"round {round_index} {name}: {times[name][-1]['total_s']:.1f} s", flush=True)
    median = {n: statistics.median(r["total_s"] for r in rows) for n, rows in times.items()}
    per_sample = {n: statistics.median(r["total_s"] / max(r["step_samples"] or 1, 1) for r in rows)
                  for n, rows in times.items()}
    ratio = median["bf16"] / median["fp32"]
    result = {
        "config": args.config, "overrides": overrides, "rounds": args.rounds,
        "seconds_per_iteration_median": median, "seconds_per_step_sample_median": per_sample,
        "ratio_bf16_over_fp32": ratio,
        "ratio_per_step_sample": per_sample["bf16"] / per_sample["fp32"],
        "target": TARGET, "met": ratio <= TARGET, "rounds_detail": times, "logprob_agreement": agreement,
        "machine": machine_info(), "smoke": args.smoke,
        "note": "each trainer samples its own rollouts after round 1, so rounds differ in step samples; "
                "the per-step-sample ratio corrects for that",
    }
    write_result(result, output)
    print(f"bf16 / fp32 iteration time: {ratio:.2f} (per step sample "
          f"{result['ratio_per_step_sample']:.2f}); policy log-probs max |diff| "
          f"{agreement['policy']['max_abs_diff']:.3f}, mean {agreement['policy']['mean_abs_diff']:.4f}; {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The trainer canary: GRPO must take a weak agent to >= 90% success on a toy task, in minutes.

Run it first after changing the trainer, the losses or the rollout:

    python benchmarks/canary.py                 # exit status 0 when validation success >= 0.9

Setting (``configs/bench/canary.yaml``): ``toy_panels`` with one panel of four words (the right
word is the fruit); the warm start only learned the answer format from random-policy turns, so it
wins about a quarter of the tasks at most. GRPO then trains 25 iterations of 8 tasks x group 8 with four
optimizer steps each. Config overrides after the options apply to the warm start and the run (e.g.
``model.autocast=none`` for the float32 twin, with its own ``--runs-dir`` and ``--out``). Writes
``benchmarks/results/canary.json`` (success before and after, the curve, seconds, machine, commit);
``--seed`` picks the run seed, ``--out`` the result file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from gate_study import _commit, finished, read_metrics, run, sdar, warm_start

CONFIG = ROOT / "configs" / "bench" / "canary.yaml"
TARGET = 0.9
SMOKE = ["model={name: tiny-random, lora: null, autocast: none}", "iterations=1", "rollout.tasks_per_iteration=2",
         "rollout.group_size=2", "eval.every=1", "eval.num_tasks=2"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for the warm start and the run, e.g. model.autocast=none "
                             "(give each setting its own --runs-dir and --out)")
    parser.add_argument("--runs-dir", default="runs/canary", help="where the warm start and the run go")
    parser.add_argument("--out", default="benchmarks/results/canary.json", help="the result JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the RL run (the warm start does not depend on it)")
    parser.add_argument("--demo-episodes", type=int, default=256, help="random-policy episodes of the warm start")
    parser.add_argument("--fresh", action="store_true", help="delete an earlier canary run first")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny random model, 1 iteration: plumbing only, exit status 0 whatever the success")
    args = parser.parse_args(argv)
    from _results import check_not_in_use, lane_threads, machine_info

    from sdar.trainer.config import load_config

    lane_threads(2)  # the run's threads, unless OMP_NUM_THREADS says otherwise; its record shows them
    runs_dir = ROOT / args.runs_dir
    run_dir = runs_dir / f"grpo-seed{args.seed}"
    if args.fresh and runs_dir.exists():
        for held in (runs_dir / "warm", run_dir):  # an earlier canary's `sdar sft` or run, still going
            check_not_in_use(held, SystemExit)
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    recorded = runs_dir / "overrides.json"
    # a folder from before overrides were recorded holds a canary without any
    earlier = (json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file()
               else [] if (runs_dir / "warm").exists() or run_dir.exists() else None)
    if earlier is not None and earlier != overrides:
        parser.error(f"{runs_dir} holds a canary with overrides {earlier}; use another --runs-dir or --fresh")
    recorded.write_text(json.dumps(overrides) + "\n", encoding="utf-8")
    sft_dir, start = warm_start(runs_dir, overrides, 8 if args.smoke else args.demo_episodes, CONFIG)
    iterations = load_config(CONFIG, overrides).iterations
    if not finished(run_dir, iterations):
        if run_dir.exists():
            check_not_in_use(run_dir, SystemExit)  # an earlier canary's run, still going
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        # the code that trains (a later commit may land while it runs)
        (run_dir / "commit.txt").write_text(_commit() + "\n", encoding="utf-8")
        run(sdar("train", "--config", str(CONFIG), *overrides, f"seed={args.seed}", f"init_checkpoint={sft_dir}",
                 "--output-dir", str(run_dir), "--no-report"), runs_dir / "train.log")
    commit_file = run_dir / "commit.txt"
    commit = commit_file.read_text(encoding="utf-8").strip() if commit_file.is_file() else "unknown"
    metrics = read_metrics(run_dir)
    curve = {m["iteration"]: m["val/success"] for m in metrics if "val/success" in m}
    final = curve[iterations]
    result = {
        "passed": final >= TARGET, "target": TARGET, "success_before": curve.get(0), "success_after": final,
        "validation_curve": curve, "warm_start_eval": start.get("success"),
        "train_success": {m["iteration"]: m["train/success"] for m in metrics if "train/success" in m},
        "seconds": round(time.perf_counter() - started, 1),
        # wall time of the RL run itself, from its metrics lines (iteration 0 to the last)
        "train_seconds": round(metrics[-1]["time"] - metrics[0]["time"], 1) if len(metrics) > 1 else None, "config": str(CONFIG.relative_to(ROOT)),
        "seed": args.seed, "smoke": args.smoke, "overrides": overrides, "commit": commit, "machine": machine_info(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    verdict = "PASSED" if result["passed"] else "FAILED"
    print(f"canary {verdict}: validation success {curve.get(0)} -> {final} (target >= {TARGET}); {out}")
    return 0 if result["passed"] or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())

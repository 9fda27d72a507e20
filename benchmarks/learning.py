"""Learning comparison at CPU scale: methods x seeds x environments, same budget.

For every environment of the grid (settings in ``configs/bench/<env>.yaml``):

1. **Warm start, once per environment, identical for every method.** The packaged 135M model
   never wins these tasks on its own, and GRPO learns nothing from groups that all fail. So the
   environment's scripted expert (ALFWorld ``expert``, WebShop / Search-QA ``oracle``) plays
   ``--demo-episodes`` training episodes, its turns are written as demonstrations in the run's
   prompt format (with ``prompt_mode: action_only`` the ``<think>`` part of the expert's response
   is dropped, so the demonstrations show what the agent is asked to write), and the real
   ``sdar sft`` command fine-tunes on them. Every RL run starts from that checkpoint
   (``init_checkpoint=``).
2. **Validation before RL, once per environment**: ``sdar eval`` of the warm start on the
   validation panel, into ``<runs-dir>/<env>/start_eval.json``. Evaluation samples with its own
   generator seeded from ``eval.seed``, so every run would log this same number before training;
   the runs skip that evaluation (``eval.before_training: false`` in the bench configs) and the
   tables show this value as the "before RL" column. The record carries what it validated (``env``,
   ``config``, ``overrides`` and ``identity``: environment, warm start, model and panel settings);
   the aggregation refuses a record whose identity differs from the runs' ``config.yaml`` and shows
   "n/a" where there is no record.
3. **RL runs** ``sdar train --config configs/bench/<env>.yaml method=<m> seed=<s>
   init_checkpoint=<sft>`` into ``<runs-dir>/<env>/<m>-seed<s>``. Resumable: a finished run (its
   last checkpoint, or its ``metrics.jsonl`` when the checkpoints were deleted to save disk,
   reaches the final iteration) is skipped, a run with an earlier checkpoint is continued with
   ``sdar train --resume``; so rerunning this script after an interruption finishes the grid.
   ``--jobs N`` trains N runs at the same time (each its own process; on a GPU, mind its memory).
   A failed run does not stop the others: the script aggregates the rest, then lists the failures
   and exits with status 1.
4. **Aggregate** with ``sdar.reporting.write_aggregate_report`` into
   ``<out>/<env>/`` (validation and training success, mean +- std over seeds, learning-curve PNGs)
   and ``<out>/<env>/teacher/`` (teacher gap and gate of the methods that have a teacher: SDAR vs
   GRPO+OPSD), ``<out>/runs/<env>/`` (each finished run's config and metrics, and the
   validation before RL), plus ``<out>/summary.md`` / ``summary.json``: one row per (env,
   method) with the seeds that finished, and the exact settings (each env's resolved config is
   copied next to it).

    python benchmarks/learning.py                         # the full grid (hours on 2 cores)
    python benchmarks/learning.py --envs alfworld --methods grpo sdar --seeds 0   # a part of it
    python benchmarks/learning.py --aggregate-only        # tables of the runs finished so far
    python benchmarks/learning.py --jobs 6                # one GPU: 6 runs at a time
    python benchmarks/learning.py --smoke --envs search   # tiny random model, 1 iteration, minutes

Default grid: ALFWorld GRPO, SDAR, GRPO+OPSD x seeds 0,1,2; WebShop and Search-QA GRPO, SDAR x
seeds 0,1. ``--smoke`` swaps in the tiny random model and one-iteration settings (plumbing only;
its numbers mean nothing), one seed unless ``--seeds`` says otherwise, and writes its aggregate to
``benchmarks/results/learning_smoke/`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import check_not_in_use, run_lanes, run_logged  # benchmarks/_results.py

CONFIGS = ROOT / "configs" / "bench"
GRID = {
    "alfworld": {"methods": ["grpo", "sdar", "grpo_opsd"], "seeds": [0, 1, 2], "policy": "expert"},
    "webshop": {"methods": ["grpo", "sdar"], "seeds": [0, 1], "policy": "oracle"},
    "search": {"methods": ["grpo", "sdar"], "seeds": [0, 1], "policy": "oracle"},
}
SUCCESS_KEYS = ("val/success", "train/success")
TEACHER_KEYS = ("sdar/teacher_gap_mean", "sdar/gate_mean", "sdar/gate_active_ratio")
SMOKE_OVERRIDES = [
    "model={name: tiny-random, lora: null}",
    "iterations=1",
    "rollout.tasks_per_iteration=1",
    "rollout.group_size=2",
    "rollout.generation={max_new_tokens: 8, temperature: 1.0}",
    "eval.every=1",
    "eval.num_tasks=2",
    "optim.mini_batch_size=8",
    "optim.micro_batch_size=4",
]
# Smoke episodes are long enough for the scripted expert to win (the warm start keeps won
# episodes only): ALFWorld's easy games take 4 steps, WebShop's up to 6, Search-QA's 2.
SMOKE_ENV_OVERRIDES = {
    "alfworld": ["env.options={preset: easy, offline_games: 10}", "env.max_steps=4"],
    "webshop": ["env.max_steps=6"],
    "search": ["env.max_steps=2"],
}


def repo_relative(path: Path) -> Path:
    """``path`` relative to the repository root when it lies inside it, else unchanged."""
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return path


def sdar_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdar.cli", *args]


def run(cmd: list[str], log_path: Path) -> None:
    """Run one command, its output appended to ``log_path``; a failure ends the script
    (``SystemExit`` with the end of the log)."""
    run_logged(cmd, log_path, ROOT, error=SystemExit, echo=True)


def last_checkpoint_iteration(run_dir: Path) -> int | None:
    from sdar.trainer.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir) if (run_dir / "checkpoints").is_dir() else None
    if ckpt is None:
        return None
    match = re.search(r"(\d+)$", ckpt.name)
    return int(match.group(1)) if match else None


def logged_iteration(run_dir: Path) -> int | None:
    """The last iteration in the run's ``metrics.jsonl`` (None without one; iteration 0 is the
    validation before training, not a completed iteration)."""
    from sdar.reporting.run_log import read_metrics

    if not (run_dir / "metrics.jsonl").is_file():
        return None
    last = max((line["iteration"] for line in read_metrics(run_dir)), default=0)
    return last if last > 0 else None


def iterations_done(run_dir: Path) -> int | None:
    """Completed iterations: the later of the last checkpoint and the metrics log (a run whose
    checkpoints were deleted to save disk still counts by its log, which the tables use)."""
    done = [d for d in (last_checkpoint_iteration(run_dir), logged_iteration(run_dir)) if d]
    return max(done, default=None)


def is_finished(run_dir: Path, iterations: int) -> bool:
    return (iterations_done(run_dir) or 0) >= iterations


def write_demonstrations(env_name: str, config, policy: str, episodes: int, path: Path) -> dict:
    """Expert turns in the run's prompt format (``sdar env play --write-demos`` renders <think>)."""
    from sdar.envs import make_env
    from sdar.envs.play import play_episodes

    think = config.env.prompt_mode == "think"
    options = dict(config.env.options)
    if config.env.max_steps is not None:
        options["max_steps"] = config.env.max_steps
    raw = path.with_suffix(".raw.jsonl")
    with make_env(env_name, split=config.env.train_split or "train", **options) as env:
        summary = play_episodes(env, policy, episodes, seed=0, demos_path=str(raw), think=think)
    lines = []
    for line in raw.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not think:  # the agent is asked for the action tag alone
            row["response"] = re.sub(
                r"<think>.*?</think>\s*", "", row["response"], flags=re.DOTALL
            ).strip()
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw.unlink()
    return summary


def warm_start(env_name: str, config_path: Path, overrides: list[str], env_dir: Path, args) -> Path:
    """The shared supervised warm start of one environment (skipped when it already exists)."""
    from sdar.trainer.config import load_config

    sft_dir = env_dir / "sft"
    if last_checkpoint_iteration(sft_dir) is not None:
        print(f"[{env_name}] warm start exists: {sft_dir}")
        return sft_dir
    check_not_in_use(sft_dir, SystemExit)  # an earlier grid's `sdar sft`, still going
    config = load_config(config_path, overrides)
    demos = env_dir / "demos.jsonl"
    summary = write_demonstrations(
        env_name, config, GRID[env_name]["policy"], args.demo_episodes, demos
    )
    print(
        f"[{env_name}] {summary['episodes']} expert episodes, "
        f"success {summary['success']:.2f} -> {demos}"
    )
    run(
        sdar_command(
            "sft",
            *overrides,
            "--config",
            str(config_path),
            "--demos",
            str(demos),
            "--output-dir",
            str(sft_dir),
            "--epochs",
            str(args.sft_epochs),
        ),
        env_dir / "sft.log",
    )
    return sft_dir


START_RECORD = "start_eval.json"
# What fixes the validation number of a run's start model (everything else in a run's config, the
# method, seed, optimizer and loss, only matters once training starts).
START_KEYS = {
    "env": ("name", "val_split", "options", "max_steps", "history_length",
            "invalid_action_penalty", "prompt_mode"),
    "model": ("name", "dtype", "lora", "init_seed"),
    "eval": ("num_tasks", "seed", "temperature", "greedy", "with_skills", "max_new_tokens"),
    "rollout": ("max_prompt_tokens",),
    "rollout.generation": ("max_new_tokens", "top_p", "top_k", "stop_token_ids"),
}


def start_identity(config: dict) -> dict:
    """The settings that decide a start model's validation, as flat ``section.key -> value``.

    ``config`` is a resolved config as plain data (a run's ``config.yaml``, or ``config_to_dict``
    of a loaded config), so a start record and the runs it stands for compare key by key. Holds
    the environment and its settings, the model, the warm start (``init_checkpoint``) and the
    panel (``eval.*``); JSON round-tripped so that tuples and lists compare equal.
    """
    identity = {"init_checkpoint": config.get("init_checkpoint")}
    for section, keys in START_KEYS.items():
        node = config
        for part in section.split("."):
            node = (node or {}).get(part) or {}
        identity.update({f"{section}.{key}": node.get(key) for key in keys})
    return json.loads(json.dumps(identity, default=str))


def record_identity(record: dict) -> dict:
    """What a start record says it validated, in ``start_identity``'s keys.

    Records written by ``validate_start`` carry ``identity``. Older ones (the committed Search-QA
    and WebShop records) hold only ``sdar eval``'s own fields: the warm start, the model name, the
    split and the panel settings, so they are checked on those.
    """
    if "identity" in record:
        return record["identity"]
    legacy = {
        "init_checkpoint": record.get("init_checkpoint"),
        "model.name": record.get("model"),
        "env.val_split": record.get("split"),
    }
    panel = record.get("eval_config") or {}
    legacy.update({f"eval.{k}": panel[k] for k in START_KEYS["eval"] if k in panel})
    return legacy


def check_start_record(record: dict, run_configs: dict[str, dict], where: str) -> None:
    """Raise ``ValueError`` unless the start record validated the model every run starts from.

    ``run_configs``: run name -> its ``config.yaml`` as a dict. Every key the record identifies
    must equal the run's value: the environment name first (a record copied from another
    environment), then the warm start, model and panel settings.
    """
    claimed = record_identity(record)
    for name, config in run_configs.items():
        actual = start_identity(config)
        for key in sorted(claimed, key=lambda k: (k != "env.name", k)):
            if key in actual and claimed[key] != actual[key]:
                raise ValueError(
                    f"{where} does not belong to run {name}: {key} is {claimed[key]!r} in the "
                    f"start record, {actual[key]!r} in the run's config.yaml (delete the record "
                    f"to measure the start model again)"
                )


def read_start_record(env_dir: Path, run_dirs: list[Path]) -> float | None:
    """The validation success of the runs' shared start model, or ``None`` without a record.

    Raises ``ValueError`` (via ``check_start_record``) when ``<env_dir>/start_eval.json`` does not
    match the runs' environment or config: a wrong "before RL" number is worse than none.
    """
    from sdar.reporting.aggregate import load_run_config

    path = env_dir / START_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    check_start_record(record, {d.name: load_run_config(d) or {} for d in run_dirs}, str(path))
    return record["success"]


def validate_start(
    config_path: Path, overrides: list[str], sft_dir: Path | None, env_dir: Path
) -> None:
    """Validate the model every RL run of the environment starts from, once.

    The panel is sampled with its own generator seeded from ``eval.seed`` (not the run's seed), so
    this number is what each run would log before training; the bench configs therefore set
    ``eval.before_training: false`` and the tables show this value as every method's iteration 0.
    Written to ``<env_dir>/start_eval.json`` by the real ``sdar eval`` command (skipped when it
    exists), then given ``env`` and ``identity`` (``start_identity`` of the evaluated config: the
    environment, warm start, model and panel settings), which the aggregation checks against the
    runs' configs.
    """
    from sdar.trainer.config import config_to_dict, load_config

    path = env_dir / START_RECORD
    if path.is_file():
        return
    settings = ["method=grpo", *overrides]
    if sft_dir is not None:
        settings.append(f"init_checkpoint={sft_dir}")
    cmd = sdar_command("eval", "--config", str(config_path), *settings)
    run([*cmd, "--output", str(path)], env_dir / "start_eval.log")
    identity = start_identity(config_to_dict(load_config(config_path, settings)))
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(env=identity["env.name"], config=str(config_path), overrides=settings,
                  identity=identity)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def load_iterations(config_path: Path, overrides: list[str]) -> int:
    """The grid's iteration budget (the same for every method and seed)."""
    from sdar.trainer.config import load_config

    return load_config(config_path, ["method=grpo", *overrides]).iterations


def train_run(
    env_name: str,
    method: str,
    seed: int,
    config_path: Path,
    overrides: list[str],
    sft_dir: Path | None,
    env_dir: Path,
) -> tuple[Path, str]:
    """Start, resume or skip one run; returns its directory and what was done."""
    run_dir = env_dir / f"{method}-seed{seed}"
    run_overrides = [f"method={method}", f"seed={seed}", *overrides]
    if sft_dir is not None:
        run_overrides.append(f"init_checkpoint={sft_dir}")
    iterations = load_iterations(config_path, overrides)
    done = last_checkpoint_iteration(run_dir)
    log = env_dir / f"{method}-seed{seed}.log"
    if is_finished(run_dir, iterations):
        return run_dir, "finished earlier"
    if done is not None and (run_dir / "config.yaml").is_file():
        run(sdar_command("train", "--resume", str(run_dir), "--no-report"), log)
        return run_dir, f"resumed from iteration {done}"
    if run_dir.exists():
        # Stopped before its first checkpoint (only the step-0 evaluation was logged) or without
        # its config.yaml: nothing can be resumed, so the run starts again from the warm start.
        check_not_in_use(run_dir, SystemExit)  # an earlier grid's run, still before its first checkpoint
        print(f"{run_dir} has no checkpoint; starting it again", flush=True)
        shutil.rmtree(run_dir)
    run(
        sdar_command(
            "train",
            *run_overrides,
            "--config",
            str(config_path),
            "--output-dir",
            str(run_dir),
            "--no-report",
        ),
        log,
    )
    return run_dir, "trained"


def train_grid(planned: list[tuple], jobs: int) -> dict:
    """Train the planned runs, ``jobs`` at a time (each its own process), in the grid's order.

    Returns ``{(env, method, seed): what was done}``, or the exception of a run that failed: a
    failed run does not stop the others, and ``main`` reports it after aggregating the rest.
    """

    def one(args: tuple):
        try:
            return train_run(*args)[1]
        except (SystemExit, OSError, ValueError) as err:  # run(): SystemExit with the log end
            return err

    outcomes = run_lanes(one, planned, jobs)
    return {args[:3]: outcome for args, outcome in zip(planned, outcomes)}


def aggregate(
    env_name: str, run_dirs: list[Path], out_dir: Path, before_rl: float | None = None
) -> dict:
    """Success tables and curves of one environment; teacher gap/gate of the teacher methods.

    With ``before_rl`` (the shared validation of the start model) the validation curve begins
    with it at iteration 0, for every method.
    """
    from sdar.reporting import write_aggregate_report
    from sdar.reporting.aggregate import aggregate_runs, load_run_config, mean_std_curves
    from sdar.reporting.plots import plot_mean_std

    write_aggregate_report(run_dirs, out_dir, keys=SUCCESS_KEYS, group_by=["loss.method"])
    if before_rl is not None:
        # Runs that skipped their own validation before training get the shared one at iteration
        # 0; a group whose runs logged iteration 0 themselves keeps its curve as it is.
        curves = mean_std_curves(run_dirs, "val/success", ["loss.method"])
        for label, (xs, means, stds) in curves.items():
            if xs[0] > 0:
                curves[label] = ([0, *xs], [before_rl, *means], [0.0, *stds])
        if curves:
            plot_mean_std(
                curves,
                "val/success: mean +- std over seeds (iteration 0: the start model)",
                "success",
                out_dir / "curves_val_success.png",
            )
    with_teacher = [
        d
        for d in run_dirs
        if (load_run_config(d) or {}).get("loss", {}).get("method") in ("sdar", "grpo_opsd")
    ]
    if with_teacher:
        write_aggregate_report(
            with_teacher, out_dir / "teacher", keys=TEACHER_KEYS, group_by=["loss.method"]
        )
    return aggregate_runs(run_dirs, key="val/success", group_by=["loss.method"])


def copy_records(run_dirs: list[Path], env_dir: Path, dest: Path) -> None:
    """Each run's ``config.yaml`` and ``metrics.jsonl`` (no checkpoints) and the environment's
    ``start_eval.json`` into ``dest``, so the results folder holds every number it reports."""
    pairs = [(d / name, dest / d.name / name) for d in run_dirs for name in ("config.yaml", "metrics.jsonl")]
    if (env_dir / START_RECORD).is_file():
        pairs.append((env_dir / START_RECORD, dest / START_RECORD))
    for source, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and target.samefile(source)):  # --runs-dir may be the records
            shutil.copy(source, target)


def summary_rows(env_name: str, result: dict, before_rl: float | None) -> list[dict]:
    rows = []
    for label, group in result["groups"].items():
        rows.append(
            {
                "env": env_name,
                "method": label.split("=", 1)[-1],
                "seeds": group["seeds"],
                "n": group["n"],
                "before_rl": before_rl,
                "final": group["final"],
                "best": group["best"],
            }
        )
    return rows


def pct(stats: dict) -> str:
    if stats["std"] is None:
        return f"{100 * stats['mean']:.1f}"
    return f"{100 * stats['mean']:.1f} +- {100 * stats['std']:.1f}"


def before(row: dict) -> str:
    """The before-RL column: one measurement, shared by every method of the environment."""
    value = row.get("before_rl")
    return "n/a" if value is None else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: the grid's methods per env"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="default: the grid's seeds per env"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "runs" / "bench",
        help="where run directories go (default runs/bench)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="aggregate results folder (default benchmarks/results/learning)",
    )
    parser.add_argument(
        "--demo-episodes", type=int, default=None, help="expert episodes (default 64, smoke 2)"
    )
    parser.add_argument(
        "--sft-epochs", type=int, default=None, help="warm-start epochs (default 2, smoke 1)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at the same time, each its own process (default 1). On one GPU keep "
        "jobs x (peak memory of a run) under the machine's or card's memory (watch one run "
        "first)",
    )
    parser.add_argument(
        "--no-warm-start", action="store_true", help="start every method from the base model"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny random model, one iteration per run"
    )
    parser.add_argument(
        "--warm-start-only", action="store_true", help="write the warm starts of --envs and stop"
    )
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="train nothing: aggregate the runs of the grid that have finished (partial results)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for every run, key.sub=value"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    args.demo_episodes = args.demo_episodes or (2 if args.smoke else 64)
    args.sft_epochs = args.sft_epochs or (1 if args.smoke else 2)
    out = (args.out or (
        ROOT / "benchmarks" / "results" / ("learning_smoke" if args.smoke else "learning")
    )).resolve()
    # Paths inside the repository are written relative to it (commands, configs, tables), so
    # committed results name no machine's folders; everything runs from the repository root.
    args.runs_dir = repo_relative(args.runs_dir.resolve())
    os.chdir(ROOT)
    out.mkdir(parents=True, exist_ok=True)

    summary: dict = {
        "grid": {},
        "rows": [],
        "settings": {
            "smoke": args.smoke,
            "overrides": args.overrides,
            "demo_episodes": args.demo_episodes,
            "sft_epochs": args.sft_epochs,
            "warm_start": not args.no_warm_start,
        },
    }
    started = time.time()
    planned: list[tuple] = []  # train_run's arguments, in the grid's order
    for env_name in args.envs:
        config_path = CONFIGS / f"{env_name}.yaml"
        overrides = (
            SMOKE_OVERRIDES + SMOKE_ENV_OVERRIDES[env_name]
            if args.smoke
            else []
        ) + list(args.overrides)
        env_dir = args.runs_dir / env_name
        env_dir.mkdir(parents=True, exist_ok=True)
        sft_dir = (
            None
            if args.no_warm_start or args.aggregate_only
            else warm_start(env_name, config_path, overrides, env_dir, args)
        )
        if not (args.aggregate_only or args.warm_start_only):
            validate_start(config_path, overrides, sft_dir, env_dir)
        seeds = (
            args.seeds
            if args.seeds is not None
            else ([0] if args.smoke else GRID[env_name]["seeds"])
        )
        # seed-major: an interrupted grid has the same number of seeds for every method
        for seed in seeds:
            for method in args.methods or GRID[env_name]["methods"]:
                planned.append((env_name, method, seed, config_path, overrides, sft_dir, env_dir))
    if args.warm_start_only:
        return 0
    outcomes = {} if args.aggregate_only else train_grid(planned, args.jobs)

    failures = []
    for env_name in args.envs:
        env_dir = args.runs_dir / env_name  # this environment's, never the last planned run's
        run_dirs = []
        for env, method, seed, config_path, overrides, _, _ in planned:
            if env != env_name:
                continue
            run_dir = env_dir / f"{method}-seed{seed}"
            outcome = outcomes.get((env, method, seed))
            done = iterations_done(run_dir)
            if args.aggregate_only:
                finished = is_finished(run_dir, load_iterations(config_path, overrides))
                what = "finished" if finished else f"not finished ({done or 0} iterations)"
            elif isinstance(outcome, BaseException):
                finished, what = False, f"failed (log: {env_dir / f'{method}-seed{seed}.log'})"
                failures.append(f"[{env_name}] {method} seed {seed}: {outcome}")
            else:
                finished, what = True, outcome
            print(f"[{env_name}] {method} seed {seed}: {what} ({run_dir})", flush=True)
            summary["grid"].setdefault(env_name, []).append(
                {
                    "method": method,
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "status": what,
                    "iterations_done": done,
                }
            )
            if finished:
                run_dirs.append(run_dir)
        if not run_dirs:
            print(f"[{env_name}] no finished run to aggregate")
            continue
        try:
            before_rl = read_start_record(env_dir, run_dirs)
        except ValueError as err:
            raise SystemExit(f"[{env_name}] {err}") from None
        if before_rl is None:
            print(f"[{env_name}] no validation before RL ({env_dir / START_RECORD})", flush=True)
        else:
            print(f"[{env_name}] validation before RL: {100 * before_rl:.1f}% "
                  f"({env_dir / START_RECORD})", flush=True)
        result = aggregate(env_name, run_dirs, out / env_name, before_rl)
        rows = summary_rows(env_name, result, before_rl)
        if before_rl is None:
            for row in rows:
                row["before_rl_note"] = f"no {START_RECORD} beside the runs in {env_dir}"
        summary["rows"] += rows
        shutil.copy(run_dirs[0] / "config.yaml", out / env_name / "config_of_first_run.yaml")
        copy_records(run_dirs, env_dir, out / "runs" / env_name)

    summary["wall_seconds_this_call"] = time.time() - started
    previous = out / "summary.json"
    if previous.is_file():  # keep the environments that this call did not touch
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        kept = [r for r in earlier.get("rows", []) if r["env"] not in args.envs]
        summary["rows"] = kept + summary["rows"]
        for env_name, runs in earlier.get("grid", {}).items():
            summary["grid"].setdefault(env_name, runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = [
        "# Learning comparison (validation success %, mean +- std over seeds)",
        "",
        "| env | method | seeds | before RL | final | best |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        md.append(
            f"| {r['env']} | {r['method']} | {r['n']} | {before(r)} | {pct(r['final'])} | "
            f"{pct(r['best'])} |"
        )
    notes = dict.fromkeys(
        f"before RL n/a for {r['env']}: {r['before_rl_note']}"
        for r in summary["rows"]
        if r.get("before_rl") is None and r.get("before_rl_note")
    )
    if notes:
        md += ["", *notes]
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    print(f"wrote {out / 'summary.json'}")
    if failures:
        print(f"\n{len(failures)} run(s) failed; the tables hold the others:", file=sys.stderr)
        for failure in failures:
            print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

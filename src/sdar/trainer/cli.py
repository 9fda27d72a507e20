"""``sdar train``, ``sdar eval``, ``sdar sft`` and ``sdar report``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sdar.errors import UserError

if TYPE_CHECKING:
    from sdar.trainer.config import TrainConfig

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train an agent (SDAR or any baseline)",
                                  description="Train an agent. Config keys can be overridden as key.sub=value.")
    train.add_argument("--config", help="YAML config (see configs/); required unless --resume")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-5")
    train.add_argument("--output-dir", help="run directory (default: the config's output_dir)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    train.add_argument("--restart", action="store_true",
                       help="start again in a run directory whose run stopped before its first checkpoint "
                            "(replaces its logs; a directory with a checkpoint is never replaced)")
    train.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser("eval", help="evaluate a checkpoint (or the untrained model) on the validation panel")
    ev.add_argument("target", nargs="?", help="run directory or checkpoint folder; omit with --config to "
                                              "evaluate the untrained model (Vanilla / Skill-Prompt)")
    ev.add_argument("--config", help="YAML config (default: the run directory's config.yaml)")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="config overrides (e.g. eval.num_tasks=32), also without a target")
    ev.add_argument("--split", help="validation split (e.g. valid_unseen); default: the config's env.val_split")
    ev.add_argument("--with-skills", action="store_true", help="show the skills to the agent (Skill-Prompt)")
    ev.add_argument("--passes", type=int, default=1,
                    help="play the panel N times, pass k (1..N) sampling from eval.seed + k - 1 (pass 1 samples as "
                         "training's validation does); success is the mean over passes (default 1)")
    ev.add_argument("--output", help="result JSON (default: RUN_DIR/eval/<name>.json or ./eval-<time>.json)")
    ev.add_argument("--episodes", metavar="FILE",
                    help="also write every step of every panel episode (each pass) to FILE, one JSON line each: "
                         "the task, the observation and admissible actions, the response, the parsed action, "
                         "whether it was valid, the reward, whether the episode was won")
    ev.set_defaults(func=run_eval)

    sft = subparsers.add_parser("sft", help="supervised warm start on expert demonstrations (before RL)")
    sft.add_argument("--config", required=True,
                     help="YAML config (its seed, model, sft section, optim.weight_decay, optim.grad_clip, "
                          "optim.micro_batch_size and tensorboard are used)")
    sft.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    sft.add_argument("--demos", required=True, help="JSONL written by `sdar env play --write-demos`")
    sft.add_argument("--output-dir", required=True, help="where the warm-start checkpoint goes")
    # each flag overrides its key of the config's sft section (defaults there: 2, 1e-4, 8, all)
    sft.add_argument("--epochs", type=int, help="passes over the demonstrations (sft.epochs, default 2)")
    sft.add_argument("--lr", type=float, help="learning rate (sft.lr, default 1e-4)")
    sft.add_argument("--batch-size", type=int,
                     help="demonstrations per optimizer step (sft.batch_size, default 8)")
    sft.add_argument("--max-demos", type=int,
                     help="use at most this many demonstrations (sft.max_demos, default all)")
    sft.set_defaults(func=run_sft_command)

    from sdar.reporting import add_report_arguments, report_command

    rep = subparsers.add_parser("report", help="write PNG curves and the token-level HTML view of a run "
                                               "(or mean +- std over several runs)")
    add_report_arguments(rep)
    rep.set_defaults(func=report_command)


def run_train(args: argparse.Namespace) -> int:
    """``sdar train``. Under ``torchrun`` / ``accelerate launch`` every rank runs this; rank 0 alone
    logs at INFO, shows progress bars, prints the success table and writes the report."""
    from sdar.reporting import write_report
    from sdar.trainer.checkpoint import list_checkpoints
    from sdar.trainer.config import load_config
    from sdar.trainer.distributed import init_distributed, shutdown
    from sdar.trainer.trainer import Trainer

    context = init_distributed()
    if not context.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if args.output_dir and Path(args.output_dir).resolve() != run_dir.resolve():
                raise UserError(f"--output-dir {args.output_dir} contradicts --resume {run_dir}: a resumed "
                                f"run stays in its own directory; drop --output-dir")
            if args.restart:
                raise UserError("--restart starts a new run and --resume continues one; give only one of them")
            if not run_dir.is_dir():
                raise UserError(f"--resume {run_dir}: no such run directory")
            if not list_checkpoints(run_dir):
                raise UserError(f"--resume {run_dir}: the run has no checkpoint (it stopped before its first "
                                f"one), so it cannot be resumed; start it again with `sdar train --config "
                                f"{run_dir / 'config.yaml'} --output-dir {run_dir} --restart`")
            config = load_config(args.config or run_dir / "config.yaml", args.overrides)
            done = completed_iterations(run_dir)
            if done is not None and done >= config.iterations:
                print(f"nothing to do: {run_dir} has completed {done} of iterations={config.iterations}; "
                      f"to train on, resume with a larger iterations=N")
                return 0
        else:
            if not args.config:
                raise UserError("give --config FILE (see configs/), or --resume RUN_DIR")
            config = load_config(args.config, args.overrides)
            run_dir = Path(args.output_dir or config.output_dir)
        trainer = Trainer(config, run_dir, resume=bool(args.resume), restart=args.restart)
        try:
            trainer.train()
        except KeyboardInterrupt:  # the conventional exit status of a process ended by a signal
            return 128 + int(trainer.stop_signal or signal.SIGINT)
    finally:
        shutdown(context)
    if context.is_main:
        print_success_table(run_dir)
        if not args.no_report:
            path = write_report(run_dir)
            print(f"report: {path}")
    return 0


def completed_iterations(run_dir: Path) -> int | None:
    """The iteration of the run's latest checkpoint, or None when there is none or its state is
    unreadable (the trainer then reports or skips it) or it still owes an iteration's validation."""
    from sdar.trainer.checkpoint import CheckpointError, latest_checkpoint, load_file

    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    try:
        state = load_file(latest / "trainer_state.pt")
    except CheckpointError:
        return None
    return None if state.get("unlogged_metrics") else int(state["iteration"])


def print_success_table(run_dir: Path) -> None:
    """Validation success at the start, best and end of the run, overall and per task type."""
    from sdar.reporting import read_metrics
    from sdar.reporting.aggregate import format_success_table, success_table

    table = success_table(read_metrics(run_dir))
    if table:
        print("\nvalidation success on the fixed panel:\n" + format_success_table(table))


def run_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from sdar.rollout import PromptBuilder, rollout_metrics
    from sdar.skills import SkillLibrary
    from sdar.trainer.checkpoint import resolve_checkpoint
    from sdar.trainer.config import load_config
    from sdar.trainer.evaluation import episode_rows, load_eval_policy, play_panel
    from sdar.trainer.trainer import make_run_env

    checkpoint = None
    run_dir = None
    if args.target and "=" in args.target and not Path(args.target).exists():
        # `sdar eval --config FILE key=value ...`: argparse gives the first override to `target`
        args.overrides.insert(0, args.target)
        args.target = None
    if args.target:
        checkpoint = resolve_checkpoint(args.target)
        run_dir = checkpoint.parent.parent
    config_path = args.config or (run_dir / "config.yaml" if run_dir else None)
    if config_path is None:
        raise UserError("give a run directory or checkpoint, or --config FILE for the untrained model")
    config = load_config(config_path, args.overrides)
    if args.passes < 1:
        raise UserError(f"--passes must be at least 1, not {args.passes}")
    split = args.split or config.env.val_split
    if config.init_checkpoint:
        resolve_checkpoint(config.init_checkpoint)  # before the model loads: names a missing path
    with make_run_env(config.env, split) as env:  # a bad split or option fails before the model loads
        model, tokenizer, init_checkpoint = load_eval_policy(config, checkpoint)
        skills = SkillLibrary(config.env.name, config.teacher.skills_dir) if args.with_skills else None
        builder = PromptBuilder(env, tokenizer, skills, config.env.prompt_mode == "think", config.teacher.layout,
                                routing=config.teacher.routing, student_layout=config.teacher.student_layout,
                                chat_template_kwargs=config.model.chat_template_kwargs)
        history = config.env.history_length if config.env.history_length is not None else env.history_length
        passes, steps = [], []
        for k in range(args.passes):  # pass k samples from eval.seed + k; the panel stays the same
            if args.passes > 1:
                print(f"pass {k + 1} of {args.passes}", flush=True)
            rollout = play_panel(model, tokenizer, env, builder, config, history, with_skills=args.with_skills,
                                 prefix="val", sample_seed=config.eval.seed + k)
            passes.append(rollout_metrics(rollout, "val"))
            if args.episodes:
                steps.extend(episode_rows(rollout, k + 1))
    metrics = {key: sum(p[key] for p in passes) / len(passes) for key in passes[0] if all(key in p for p in passes)}
    result = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "model": config.model.name,
        "split": split,
        "with_skills": args.with_skills,
        "num_tasks": config.eval.num_tasks,
        "passes": args.passes,
        "success": metrics.get("val/success"),
        "success_per_pass": [p.get("val/success") for p in passes],
        "per_task_type": {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith("val/success/")},
        "metrics": metrics,
        "eval_config": dataclasses.asdict(config.eval),
    }
    if args.output:
        out = Path(args.output)
    elif run_dir is not None:
        name = (f"{checkpoint.name}-{split or 'val'}{'-skills' if args.with_skills else ''}"
                f"{f'-{args.passes}passes' if args.passes > 1 else ''}.json")
        out = run_dir / "eval" / name
    else:
        out = Path(f"eval-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if args.episodes:  # before the result: a result file always has its steps beside it
        episodes = Path(args.episodes)
        episodes.parent.mkdir(parents=True, exist_ok=True)
        episodes.write_text("".join(json.dumps(row) + "\n" for row in steps), encoding="utf-8")
        print(f"episodes: {episodes} ({len(steps)} steps)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    shown = ("success", "success_per_pass", "per_task_type", "split", "with_skills") if args.passes > 1 else (
        "success", "per_task_type", "split", "with_skills")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
    print(f"written: {out}")
    return 0


def run_sft_command(args: argparse.Namespace) -> int:
    from sdar.trainer.sft import run_sft

    path = run_sft(load_sft_config(args), args.demos, args.output_dir)
    print(f"warm start: {path}\nstart RL from it with: sdar train --config {args.config} "
          f"init_checkpoint={args.output_dir}")
    return 0


SFT_FLAGS = ("epochs", "lr", "batch_size", "max_demos")
"""The ``sdar sft`` flags (``--batch-size`` is ``batch_size``), each named as the key of the
config's ``sft`` section that it sets."""


def load_sft_config(args: argparse.Namespace) -> TrainConfig:
    """The config of ``sdar sft``: ``--config`` with its ``KEY=VALUE`` overrides, then each flag
    given (``--epochs 3`` is ``sft.epochs=3``), so a flag wins and is validated like any key."""
    from sdar.trainer.config import load_config

    flags = [f"sft.{key}={getattr(args, key)!r}" for key in SFT_FLAGS if getattr(args, key) is not None]
    return load_config(args.config, [*args.overrides, *flags])

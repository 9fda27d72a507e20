"""What a trained policy does on the validation panel, step by step: where its actions fail.

A success rate says that a policy fails, not how. For each run folder given, its last checkpoint
(or ``--iteration``) plays the panel once, pass 1 (``sdar eval --episodes``: the sampling of the
run's own validation, so at the iteration of a validation it replays that validation exactly), every
step written, and the table sorts its steps:

- the share of steps whose action the environment refused (invalid), and of those: no action found
  in the response; the episode's previous action again; an action naming an object or receptacle
  (``word N``) that no admissible action names; anything else;
- the actions it took, by verb (:func:`sdar.trainer.teacher_check.verb`; ``go`` for ``go to``),
  over all steps and over the invalid ones; the invalid actions it repeated most;
- the share of steps whose action is the one the prompt's answer format shows as its example
  (``go to countertop 1``, :data:`sdar.envs.alfworld.prompts.EXAMPLE_ACTION`), whether or not
  the room has a countertop 1; for a run whose prompts name no example (the ALFWorld option
  ``answer_example: false`` in its config) the share is marked so.

Writes into ``--out``: ``<run>.eval.json`` and ``<run>.steps.jsonl`` (what ``sdar eval`` wrote, or
pass 1 of the final passes, below), ``summary.json`` (per run: its numbers, the checkpoint, whether
pass 1 equals the run's logged validation at that iteration; the code commit, the machine and the
command) and ``summary.md``; ``logs/`` (git-ignored) holds each play's output. A run whose two
files are already in ``--out`` for the same checkpoint is not played again, nor one whose final
passes played that checkpoint and wrote their steps (``final_eval.json`` and
``final_episodes.jsonl`` in the run folder, benchmarks/alfworld_headroom.py): their pass 1 is the
play, copied into ``--out`` (marked ``from_final_passes``; no log). With ``--iteration`` naming
another checkpoint the panel is played. With ``--start`` what each run started from plays too,
as the run loaded it (``sdar eval --config`` with the run's config: its warm start folded into the
weights under a fresh adapter, the run's iteration 0), once per warm start (``start-<folder>``;
``start-<run>`` for a run without one). Two runs or two warm starts of one name are refused.

    python benchmarks/panel_actions.py runs/alfworld_headroom_reader/grpo-lr1e-4-seed0 \\
        runs/alfworld_headroom_reader/sdar-sibling-l1-lr1e-4-seed0 --start \\
        --out benchmarks/results/alfworld_panel_actions
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _results import machine_info, run_logged, write_summary
from gate_study import read_metrics
from learning import last_checkpoint_iteration, sdar_command

from sdar.envs.alfworld.prompts import EXAMPLE_ACTION
from sdar.trainer.teacher_check import verb

ENTITY = re.compile(r"\b[a-z]+ \d+\b")  # an ALFWorld object or receptacle: "countertop 1", "keychain 2"
KINDS = ("no action found", "the previous action again", "names something not in the list", "other")


def invalid_kind(row: dict, previous: str | None) -> str:
    """Why an invalid step's action failed, the first of :data:`KINDS` that holds."""
    action = row["action"]
    if not action:
        return KINDS[0]
    if action == previous:
        return KINDS[1]
    listed = set(ENTITY.findall(" ".join(row["admissible_actions"] or [])))
    if any(entity not in listed for entity in ENTITY.findall(action)):
        return KINDS[2]
    return KINDS[3]


def tabulate(rows: list[dict]) -> dict:
    """A run's numbers from its steps (one pass, in episode then step order; at least one step)."""
    if not rows:
        raise SystemExit("a play with no steps: nothing to tabulate")
    episodes: dict[int, list[dict]] = {}
    for row in rows:
        episodes.setdefault(row["episode"], []).append(row)
    kinds, invalid = Counter(), []
    for steps in episodes.values():
        previous = None
        for row in steps:
            if not row["valid_action"]:
                kinds[invalid_kind(row, previous)] += 1
                invalid.append(row)
            previous = row["action"]
    n = len(rows)
    return {
        "episodes": len(episodes),
        "success": sum(steps[0]["won"] for steps in episodes.values()) / len(episodes),
        "steps": n,
        "steps_per_episode": n / len(episodes),
        "invalid_share": len(invalid) / n,
        "example_action_share": sum(r["action"] == EXAMPLE_ACTION for r in rows) / n,
        "invalid_kinds": {kind: kinds[kind] / len(invalid) if invalid else 0.0 for kind in KINDS},
        "verbs": {v: c / n for v, c in Counter(verb(r["action"]) for r in rows).most_common()},
        "invalid_verbs": {v: c / len(invalid) for v, c in Counter(verb(r["action"]) for r in invalid).most_common()},
        "top_invalid_actions": Counter(r["action"] for r in invalid).most_common(5),
    }


def play(name: str, target: list[str], out: Path, same: Callable[[dict], bool]) -> tuple[dict, list[dict]]:
    """Pass 1 of the panel with every step, ``sdar eval *target`` from ROOT into ``out`` as ``name``:
    played unless ``out`` holds both files of a play that ``same`` accepts."""
    result, steps = out / f"{name}.eval.json", out / f"{name}.steps.jsonl"
    if not (result.is_file() and steps.is_file() and same(json.loads(result.read_text(encoding="utf-8")))):
        log = out / "logs" / f"{name}.log"  # names this machine's paths: git-ignored
        print(f"{name}: playing the panel (progress: {log})", flush=True)
        run_logged(sdar_command("eval", *target, "--output", str(result.resolve()), "--episodes",
                                str(steps.resolve())), log, ROOT, error=SystemExit)
    rows = [json.loads(line) for line in steps.read_text(encoding="utf-8").splitlines()]
    record = json.loads(result.read_text(encoding="utf-8"))
    warm = record.get("init_checkpoint")  # a checkpoint records its warm start's absolute path
    if warm and repo_relative(warm) != warm:
        record["init_checkpoint"] = repo_relative(warm)
        result.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record, rows


def play_checkpoint(run_dir: Path, iteration: int | None, out: Path) -> tuple[int, dict, list[dict]]:
    """The run's checkpoint of ``iteration`` (default: its latest) plays the panel (:func:`play`);
    returns that iteration with the play. Where the run's final passes of that checkpoint wrote
    their steps (``final_eval.json`` and ``final_episodes.jsonl``, benchmarks/alfworld_headroom.py),
    their pass 1 is that play: copied into ``out``, not played again."""
    chosen = iteration if iteration is not None else last_checkpoint_iteration(run_dir)
    ckpt = run_dir / "checkpoints" / f"iter_{chosen:06d}" if chosen is not None else None
    if ckpt is None or not (ckpt / "trainer_state.pt").is_file():
        raise SystemExit(f"no checkpoint {f'iter_{iteration:06d} ' if iteration is not None else ''}in {run_dir}")
    ckpt = ckpt.resolve()

    def same(r: dict) -> bool:
        return r["checkpoint"] is not None and (ROOT / r["checkpoint"]).resolve() == ckpt

    copy_final_pass(run_dir, same, out)
    record, rows = play(run_dir.name, [repo_relative(str(ckpt))], out, same)
    return chosen, record, rows


def copy_final_pass(run_dir: Path, same: Callable[[dict], bool], out: Path) -> None:
    """Pass 1 of the run's final passes as a play of ``out`` (``<run>.eval.json``, ``<run>.steps.jsonl``;
    the result holds the fields this script reads, its paths named from the repository's root, and
    ``from_final_passes``), when the run folder holds them for the checkpoint ``same`` accepts and
    ``out`` has no play of that checkpoint yet; pass 1 samples as a single play does. Each file is
    written whole (a temporary name, then renamed; the result last)."""
    final, episodes = run_dir / "final_eval.json", run_dir / "final_episodes.jsonl"
    result, steps = out / f"{run_dir.name}.eval.json", out / f"{run_dir.name}.steps.jsonl"
    if not (final.is_file() and episodes.is_file()):
        return
    if result.is_file() and steps.is_file() and same(json.loads(result.read_text(encoding="utf-8"))):
        return
    record = json.loads(final.read_text(encoding="utf-8"))
    if not same(record):
        return
    rows = [json.loads(line) for line in episodes.read_text(encoding="utf-8").splitlines() if line.strip()]
    first = [r for r in rows if r["pass"] == 1]
    kept = ("model", "split", "with_skills", "num_tasks", "eval_config")
    paths = {k: repo_relative(record[k]) if record.get(k) else record.get(k) for k in ("checkpoint", "init_checkpoint")}
    copied = {**paths, **{k: record[k] for k in kept if k in record}, "passes": 1,
              "success": record["success_per_pass"][0],
              "from_final_passes": f"pass 1 of {record['passes']} in {repo_relative(str(final))}"}
    for path, text in ((steps, "".join(json.dumps(r) + "\n" for r in first)), (result, json.dumps(copied, indent=2))):
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    print(f"{run_dir.name}: pass 1 of its final passes (no play)", flush=True)


def start_of(run_dir: Path) -> tuple[str, str | None]:
    """The name of the run's start play and its warm start (the config's ``init_checkpoint``, named
    from the repository's root): ``start-<warm start folder>``, shared by the runs of one warm
    start, or ``start-<run>`` for a run without one (its config is the start)."""
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"{run_dir} has no config.yaml: not a run folder")
    warm = yaml.safe_load(config.read_text(encoding="utf-8")).get("init_checkpoint")
    return (f"start-{Path(warm).name}", repo_relative(warm)) if warm else (f"start-{run_dir.name}", None)


def play_start(run_dir: Path, name: str, warm: str | None, out: Path) -> tuple[dict, list[dict]]:
    """What the run started from plays the panel as the run loaded it (``sdar eval --config`` with
    the run's config: its ``init_checkpoint`` under a fresh adapter, the run's iteration 0), as
    ``name`` with its warm start ``warm`` (:func:`start_of`)."""
    return play(name, ["--config", repo_relative(str(run_dir / "config.yaml"))], out,
                lambda r: r["checkpoint"] is None and r["init_checkpoint"] == warm)


def repo_relative(path: str) -> str:
    """``path`` named from the repository's root where it lies inside it (records hold no path of
    the machine they were made on), else as an absolute path (the plays run from the root)."""
    from learning import repo_relative as relative

    return str(relative(Path(path).resolve()))


def logged_validation(run_dir: Path, iteration: int) -> float | None:
    """The run's validation success logged at ``iteration`` (None without one)."""
    return next((m["val/success"] for m in read_metrics(run_dir)
                 if m.get("iteration") == iteration and "val/success" in m), None)


def example_in_prompt(run_dir: Path) -> bool:
    """Whether the run's prompts end with the example answer (its config's ALFWorld option
    ``answer_example``, true unless set)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    return (config["env"].get("options") or {}).get("answer_example", True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def summary_markdown(summary: dict) -> str:
    lines = ["# What the policies do on the panel", "",
             (f"Pass 1 of the panel (`sdar eval --episodes`), commit {summary['commit']}, "
              f"{summary['machine']['cpu']}. Shares in %."), "",
             "| run | checkpoint | success | = logged validation | steps per episode | the default prompt's "
             "example action | invalid | " + " | ".join(KINDS) + " | most repeated invalid actions |",
             "| --- " * (7 + len(KINDS) + 1) + "|"]
    for run in summary["runs"]:
        same = {True: "yes", False: "no", None: "-"}[run["matches_logged_validation"]]
        top = "; ".join(f"`{a}` x{c}" for a, c in run["top_invalid_actions"][:3])
        checkpoint = Path(run["checkpoint"]).name if run["checkpoint"] else "iteration 0"
        example = _pct(run["example_action_share"]) + ("" if run.get("example_in_prompt", True) else " (not in its prompts)")
        lines.append(f"| {run['run']} | {checkpoint} | {_pct(run['success'])} | {same} | "
                     f"{run['steps_per_episode']:.1f} | {example} | "
                     f"{_pct(run['invalid_share'])} | "
                     + " | ".join(_pct(run["invalid_kinds"][k]) for k in KINDS) + f" | {top} |")
    lines += ["", (f"The default prompt's example action: the share of all steps that took `{EXAMPLE_ACTION}`, "
                   "the action the answer format shows as its example unless the run's config sets the ALFWorld "
                   "option `answer_example: false` (marked: not in its prompts). "
                   "The invalid kinds are shares of the invalid steps. Actions by verb (share of all steps / of "
                   "the invalid ones):"), ""]
    for run in summary["runs"]:
        verbs = ", ".join(f"{v} {_pct(s)} / {_pct(run['invalid_verbs'].get(v, 0.0))}"
                          for v, s in run["verbs"].items())
        lines.append(f"- {run['run']}: {verbs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with checkpoints/ and metrics.jsonl)")
    parser.add_argument("--iteration", type=int, help="the checkpoint to play (default: each run's latest)")
    parser.add_argument("--start", action="store_true",
                        help="also play what each run started from, as it loaded it (its iteration 0), once per warm start")
    parser.add_argument("--out", required=True, help="folder for the steps, the eval results and the tables")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(r).name for r in args.runs]
    if len(set(names)) < len(names):
        raise SystemExit(f"two runs named alike in {names}: their plays would share files; use two --out folders")
    starts = [start_of(Path(r)) for r in args.runs] if args.start else []  # (name, warm start) per run
    seen: dict[str, str | None] = {}
    for name, warm in starts:
        if seen.setdefault(name, warm) != warm:
            raise SystemExit(f"two warm starts would both play as {name}: use two --out folders")
    runs, started = [], set()

    def row(name: str, record: dict, rows: list[dict], logged: float | None, run_dir: Path) -> dict:
        numbers = tabulate(rows)
        if abs(numbers["success"] - record["success"]) > 1e-9:  # the steps and the result are one pass
            raise SystemExit(f"{name}: its steps give {numbers['success']}, its result {record['success']}")
        return {"run": name, "checkpoint": record["checkpoint"], "init_checkpoint": record["init_checkpoint"],
                "logged_validation": logged,
                "matches_logged_validation": None if logged is None else abs(logged - record["success"]) < 1e-9,
                "example_in_prompt": example_in_prompt(run_dir), **numbers}

    for k, run_dir in enumerate(map(Path, args.runs)):
        if args.start and starts[k][0] not in started:
            name, warm = starts[k]
            started.add(name)
            runs.append(row(name, *play_start(run_dir, name, warm, out), logged_validation(run_dir, 0), run_dir))
        iteration, record, rows = play_checkpoint(run_dir, args.iteration, out)
        runs.append(row(run_dir.name, record, rows, logged_validation(run_dir, iteration), run_dir))
    command = "python benchmarks/panel_actions.py " + " ".join(repo_relative(r) for r in args.runs)
    summary = {"runs": runs, "eval_config": record["eval_config"], "machine": machine_info(),
               "command": command + (f" --iteration {args.iteration}" if args.iteration is not None else "")
               + (" --start" if args.start else "") + f" --out {repo_relative(args.out)}"}
    write_summary(summary, out, summary_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

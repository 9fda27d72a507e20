"""Which actions a run's gate favoured, summed over its training: its ``gate_actions.jsonl`` read whole.

``gate_actions.jsonl`` (docs/outputs.md) says per iteration which actions the distillation term
favoured most and least: per action its step samples, tokens, mean gate and gap, and ``push``, the
sum over its tokens of ``gate - the iteration's mean gate`` (the advantage the term gives it beyond
the iteration's mean, per unit of lambda). One iteration's line says little; this script adds the
lines of each run given, over all its logged iterations and per window of ``--window`` iterations:

- per verb (the action's first word, as ``sdar teacher-check`` groups its gaps: ``go`` for ``go to``,
  ``(none)`` for a response without an action): tokens and push, so a gate that favours
  walking over placing shows as a positive ``go`` and a negative ``move``;
- the actions with the highest and the lowest summed push, with their step samples and mean gap;
- for ALFWorld runs, the push on the prompt's example action (``go to countertop 1``), marked where
  the run's prompts name no example (``answer_example: false``).

A line lists at most the 10 actions of highest and the 10 of lowest push, so the sums cover the
listed actions only; ``coverage`` (listed tokens / all the iteration's tokens) says how much that
is. It trains and plays nothing. Writes ``summary.json`` (per run; with the code commit and the
command) and ``summary.md`` into ``--out``.

    python benchmarks/gate_actions.py runs/alfworld_headroom_plain/sdar-sibling-l1-lr1e-4-seed0 \\
        --out benchmarks/results/gate_actions
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _results import write_summary
from panel_actions import EXAMPLE_ACTION, example_in_prompt, repo_relative

from sdar.reporting.run_log import read_gate_actions
from sdar.trainer.teacher_check import verb

TOP = 5  # actions shown at each end


def read_lines(run_dir: Path) -> list[dict]:
    """The run's ``gate_actions.jsonl`` lines in iteration order (a half-written last line, of a run
    still training or killed, skipped); a one-line error without any."""
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{run_dir}: not a run folder (no config.yaml)")
    if not (run_dir / "gate_actions.jsonl").is_file():
        raise SystemExit(f"{run_dir}: no gate_actions.jsonl (a method without a gate, or a run trained before "
                         "the file existed)")
    lines = read_gate_actions(run_dir)
    if not lines:
        raise SystemExit(f"{run_dir}: gate_actions.jsonl has no iteration yet")
    return lines


def add_up(lines: list[dict]) -> dict:
    """The listed actions of ``lines`` (at least one line) summed: per verb and per action tokens and push, per action
    step samples and the token-weighted mean gap, and the share of all tokens the lists cover."""
    verbs: dict[str, dict] = defaultdict(lambda: {"tokens": 0, "push": 0.0})
    actions: dict[str, dict] = defaultdict(lambda: {"step_samples": 0, "tokens": 0, "push": 0.0, "gap_tokens": 0.0})
    listed = total = 0
    for line in lines:
        total += line["tokens"]
        for a in line["actions"]:
            listed += a["tokens"]
            v = verbs[verb(a["action"])]
            v["tokens"] += a["tokens"]
            v["push"] += a["push"]
            s = actions[a["action"]]
            s["step_samples"] += a["step_samples"]
            s["tokens"] += a["tokens"]
            s["push"] += a["push"]
            s["gap_tokens"] += a["gap"] * a["tokens"]
    ranked = sorted(({"action": name, "step_samples": s["step_samples"], "tokens": s["tokens"], "push": s["push"],
                      "gap": s["gap_tokens"] / s["tokens"] if s["tokens"] else 0.0} for name, s in actions.items()),
                    key=lambda a: (-a["push"], a["action"]))  # ties by name, as the trainer lists them
    example = actions.get(EXAMPLE_ACTION)
    return {
        "iterations": [lines[0]["iteration"], lines[-1]["iteration"]],
        "lines": len(lines),
        "coverage": listed / total if total else None,
        "verbs": {name: dict(v) for name, v in sorted(verbs.items(), key=lambda kv: -kv[1]["push"])},
        "highest": ranked[:TOP],
        "lowest": ranked[max(TOP, len(ranked) - TOP):][::-1],  # never one of the highest
        "example_push": example["push"] if example else 0.0,
        "example_step_samples": example["step_samples"] if example else 0,
    }


def summarise(run_dir: Path, window: int) -> dict:
    """A run's sums over all its logged iterations and per window of ``window`` iterations
    (1..window, window+1..2*window, ...)."""
    lines = read_lines(run_dir)
    windows: dict[int, list[dict]] = defaultdict(list)
    for line in lines:
        windows[(line["iteration"] - 1) // window].append(line)
    import yaml

    env = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["env"]["name"]
    return {"run": run_dir.name, "path": repo_relative(str(run_dir)), "env": env,
            "example_in_prompt": example_in_prompt(run_dir) if env == "alfworld" else None,
            "all": add_up(lines),
            "windows": [{"from": k * window + 1, "to": (k + 1) * window, **add_up(windows[k])} for k in sorted(windows)]}


def _verbs(part: dict) -> str:
    return ", ".join(f"{name} {v['push']:+.1f} ({v['push'] / v['tokens']:+.4f} per token)" if v["tokens"]
                     else f"{name} {v['push']:+.1f}" for name, v in part["verbs"].items())


def _actions(actions: list[dict]) -> str:
    return "; ".join(f"{_name(a['action'])} {a['push']:+.1f} ({a['step_samples']} samples, gap {a['gap']:+.3f})"
                     for a in actions) or "-"


def _name(action: str) -> str:
    """An action as the table shows it: in backticks, ``(none)`` for a response without one."""
    return f"`{action}`" if action else "(none)"


def summary_markdown(summary: dict) -> str:
    lines = ["# Which actions the gate favoured", "",
             (f"From each run's `gate_actions.jsonl`, commit {summary['commit']}. Push: the sum over an action's "
              "tokens of the gate minus its iteration's mean gate, summed over iterations (per unit of lambda, "
              "the advantage the distillation term gave it beyond the mean). Only the actions an iteration "
              "listed (its 10 highest and 10 lowest) are summed; coverage is their share of the tokens."), "",
             "| run | iterations (lines) | coverage | push by verb | example action: push (listed step samples) |",
             "| --- | --- | --- | --- | --- |"]
    for run in summary["runs"]:
        parts = [(run["run"], run["all"])] + [(f"window {w['from']}-{w['to']}", w) for w in run["windows"]]
        for name, part in parts:
            first, last = part["iterations"]
            coverage = "-" if part["coverage"] is None else f"{100 * part['coverage']:.0f}%"
            example = f"{part['example_push']:+.1f} ({part['example_step_samples']}"
            example = {True: example + ")", False: example + "; not in its prompts)", None: "- (not ALFWorld)"}[
                run["example_in_prompt"]]
            lines.append(f"| {name} | {first}-{last} ({part['lines']}) | {coverage} | "
                         f"{_verbs(part)} | {example} |")
    lines += ["", ("Highest and lowest summed push over all logged iterations (action, push, step samples, "
                   f"token-weighted mean gap in nats per token; the lowest list holds none of the {TOP} highest, so "
                   f"with at most {TOP} actions it is empty; with the gate held at 0.5 every push is 0 and the "
                   "order is by name):"), ""]
    for run in summary["runs"]:
        lines += [f"- {run['run']}, highest: {_actions(run['all']['highest'])}",
                  f"- {run['run']}, lowest: {_actions(run['all']['lowest'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, each with a gate_actions.jsonl")
    parser.add_argument("--window", type=int, default=10, help="iterations per window (default 10)")
    parser.add_argument("--out", required=True, help="folder for summary.json and summary.md")
    args = parser.parse_args(argv)
    if args.window < 1:
        raise SystemExit(f"--window must be at least 1, not {args.window}")
    names = [Path(r).name for r in args.runs]
    if len(set(names)) < len(names):
        raise SystemExit(f"two runs named alike in {names}: use two --out folders")
    out = Path(args.out)
    runs = [summarise(Path(r), args.window) for r in args.runs]
    command = ("python benchmarks/gate_actions.py " + " ".join(repo_relative(r) for r in args.runs)
               + (f" --window {args.window}" if args.window != 10 else "") + f" --out {repo_relative(args.out)}")
    write_summary({"runs": runs, "window": args.window, "command": command}, out, summary_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

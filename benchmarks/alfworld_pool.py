"""The ALFWorld reader regime pooled over its replicates: what each arm gained, seed by seed.

Each folder of ``alfworld_headroom.py --regime reader`` (``--out``) holds one replicate: the same
config, search and arms, every run started from one warm start made on one machine. A warm start
remade on another CPU differs (weights digest), and runs whose checkpoints stayed on another machine
cannot continue there, so each CPU that trained the grid has its own folder. This script reads the
folders' ``summary.json`` (never the runs), checks that they describe the same regime, and writes
``summary.json`` / ``summary.md`` into ``--out``:

- one row per arm (GRPO, SDAR with the sibling context at lambda 1, and the controls): in each
  folder the gain of every finished seed over 3 passes of the panel (the run's last checkpoint
  against the warm start, both played the same way), the seeds finished in all, how many gained
  :data:`TARGET_GAIN` or more, and the mean +- std over every finished seed by both measures (over
  3 passes, and at the last validation);
- one line per folder: its state, the CPUs its runs trained on, its warm-start digest and the warm
  start's validation success (one pass and 3 passes).

Seeds of different folders start from different warm starts, so the pooled rows answer "does this
arm gain, over replicates", not the issue target's "three seeds from one warm start" (each folder's
own summary.md says that). The README's table is this ``summary.md`` table, copied between the
markers ``<!-- alfworld-pool -->`` and ``<!-- /alfworld-pool -->``; ``--readme`` rewrites that block,
and a test fails when it differs from what the committed folders give.

    python benchmarks/alfworld_pool.py             # the committed folders -> benchmarks/results/alfworld_pool/
    python benchmarks/alfworld_pool.py --readme    # also rewrite README.md's block
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from alfworld_headroom import TARGET_GAIN
from gate_pool import PoolError, check_same, read_studies, write_pool
from gate_study import mean_std

# the committed replicates of the reader regime, in the order they were made
FOLDERS = ("alfworld_headroom_reader", "alfworld_headroom_reader_avx512")
# what every pooled folder must share (the warm start and the machine may differ)
SAME = ("regime", "config", "iterations", "search", "choice", "passes")
SAME_START = ("env_name", "env_options", "num_tasks", "split", "model", "demo_options", "demo_episodes",
              "sibling_reading_twins", "eval_config")
MARKS = ("<!-- alfworld-pool -->", "<!-- /alfworld-pool -->")


def arms(studies: dict[str, dict]) -> list[str]:
    """Every arm the folders tabulate, in the order the first folder that has it lists it."""
    names: list[str] = []
    for study in studies.values():
        names += [a["arm"] for a in study["arms"] if a["arm"] not in names]
    return names


def cpus(study: dict) -> str:
    """The CPUs a folder's runs trained on (``run_machines``, dates dropped), or "CPU not recorded"."""
    seen: list[str] = []
    for lines in study.get("run_machines", {}).values():
        for line in lines:  # "trained 2026-12-04 22:08:06: AMD EPYC (AVX512, bfloat16 native), 1 thread(s)"
            cpu = re.sub(r", \d+ thread\(s\)$", "", line.split(": ", 1)[-1])
            if cpu not in seen:
                seen.append(cpu)
    return "; ".join(seen) or "CPU not recorded"


def pool(studies: dict[str, dict]) -> dict:
    """The pooled rows (see the module docstring) of folders already checked by ``check_same``."""
    rows = []
    for arm in arms(studies):
        per_study, passes, last = {}, [], []
        for name, study in studies.items():
            done = sorted((r for r in study["runs"] if r["arm"] == arm and r["finished"]
                           and r["setting"] == study["choice"]["setting"]), key=lambda r: r["seed"])
            if done:
                per_study[name] = {r["seed"]: r["gain_passes"] for r in done}
            passes += [r["gain_passes"] for r in done if r["gain_passes"] is not None]
            last += [r["gain"] for r in done]
        stats, stats_last = mean_std(passes), mean_std(last)
        rows.append({"arm": arm, "per_study": per_study, "seeds": len(last),
                     "reached_target_passes": sum(g >= TARGET_GAIN for g in passes),  # alfworld_headroom.target_met's rule
                     "reached_target_last": sum(g >= TARGET_GAIN for g in last),
                     "gain_passes": stats, "gain_last_validation": stats_last})
    folders = [{"folder": name, "state": s["state"], "cpus": cpus(s),
                "warm_start_sha256": s["before_rl"].get("warm_start_sha256"),
                "before_rl": s["before_rl"]["success"],
                "before_rl_passes": (s["before_rl"].get("passes") or {}).get("success")}
               for name, s in studies.items()]
    return {"target_gain": TARGET_GAIN, "folders": folders, "rows": rows}


def _points(value: float | None) -> str:
    return "-" if value is None else f"{round(100 * value, 1) + 0.0:+.1f}"  # + 0.0: never "-0.0"


def _spread(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    return _points(stats["mean"]) + ("" if stats["n"] == 1 else f" +- {100 * stats['std']:.1f}")


def table(summary: dict) -> str:
    """The pooled table in Markdown (what the README's block holds)."""
    names = [f["folder"] for f in summary["folders"]]
    target = f"{100 * summary['target_gain']:.0f}"
    head = ["arm", *names, "seeds finished",
            f"+{target} or more (3 passes / last validation)", "gain, 3 passes", "gain, last validation"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in summary["rows"]:
        cells = [" / ".join(f"s{seed} {_points(g)}" for seed, g in sorted(r["per_study"][n].items()))
                 if n in r["per_study"] else "-" for n in names]
        lines.append(f"| {r['arm']} | " + " | ".join(cells) + f" | {r['seeds']} | {r['reached_target_passes']} / "
                     f"{r['reached_target_last']} | {_spread(r['gain_passes'])} | {_spread(r['gain_last_validation'])} |")
    return "\n".join(lines) + "\n"


def summary_markdown(summary: dict) -> str:
    folders = [f"- `{f['folder']}`: {f['state']}; {f['cpus']}; warm start "
               f"{(f['warm_start_sha256'] or 'digest not recorded')[:12]}, {100 * f['before_rl']:.1f}% of the panel, "
               + ("3 passes not played" if f["before_rl_passes"] is None
                  else f"{100 * f['before_rl_passes']:.1f}% over 3 passes") for f in summary["folders"]]
    return "\n".join([
        "# The ALFWorld reader regime pooled over its replicates", "",
        "Written by `python benchmarks/alfworld_pool.py` from each folder's `summary.json`; the folders:", "",
        *folders, "",
        ("Gain in points of validation success on the 48-game panel, finished runs only: in each folder's column "
         "per seed (`s<seed>`), the run's last checkpoint over 3 passes minus its folder's warm start over 3 passes; "
         "mean +- std over every finished seed of every folder, over 3 passes and at the last validation "
         "(iteration 30, one pass). Seeds of different folders start from different warm starts. Arms: `grpo`; "
         "`sdar-sibling-l1` (SDAR, a successful sibling's actions as the teacher's context, lambda 1); "
         "`grpo_opsd-sibling-l1` (the same with the gate held at 0.5); `sdar-sibling-skip-l1` (the SDAR arm "
         "with groups without a winner left out of the term, `teacher.no_winner: skip`)."), "",
        table(summary)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", nargs="+", help="alfworld_headroom.py --regime reader output folders "
                                                     "(default: the committed ones)")
    parser.add_argument("--out", default="benchmarks/results/alfworld_pool", help="where summary.json / .md go")
    parser.add_argument("--readme", action="store_true", help="also rewrite README.md's pooled-table block")
    args = parser.parse_args(argv)
    folders = [Path(p) for p in args.folders] if args.folders else [ROOT / "benchmarks" / "results" / f
                                                                     for f in FOLDERS]
    try:
        studies = read_studies(folders, "alfworld_headroom.py --regime reader")
        if any(s.get("regime") != "reader" for s in studies.values()):
            raise PoolError("only folders of alfworld_headroom.py --regime reader pool here")
        check_same(studies, SAME, SAME_START)
    except PoolError as err:
        parser.error(str(err))
    summary = pool(studies)
    write_pool(summary, ROOT / args.out, table(summary), summary_markdown(summary), args.readme, MARKS)
    return 0


if __name__ == "__main__":
    sys.exit(main())

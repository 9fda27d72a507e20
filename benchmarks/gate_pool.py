"""The gate study pooled over its warm starts: how often each setting learns, over every seed run.

Each folder of ``gate_study.py`` (``--out``) holds one warm start's grid: the same config, the same
12 iterations and 32 test tasks, 3 seeds per setting, a warm start made on one machine in one
precision. Warm starts remade on another CPU differ (weights digest), so each folder is an
independent replication of the study, and pooling them is the honest way to say how often a setting
learns. This script reads the folders' ``summary.json`` (never the runs), checks that they describe
the same study, and writes ``summary.json`` / ``summary.md`` into ``--out``:

- one row per setting of ``gate_study.RUNS``: each warm start's validation success per seed after
  the last iteration, the seeds that *learned* (final validation success of at least
  :data:`LEARNED`, half the test tasks), the mean +- std
  over every seed, and the gate on disagreement tokens (positive / negative advantage) averaged
  over the folders that logged it;
- one line per folder: its state (how many of its runs finished), precision, CPU, warm-start
  digest and validation success before RL.

The README's pooled table is this ``summary.md`` table, copied between the markers
``<!-- gate-pool -->`` and ``<!-- /gate-pool -->``; ``--readme`` rewrites that block, and a test
fails when it differs from what the committed folders give.

    python benchmarks/gate_pool.py                  # the committed folders -> benchmarks/results/gate_pool/
    python benchmarks/gate_pool.py --readme         # also rewrite README.md's block
    python benchmarks/gate_pool.py --studies benchmarks/results/gate_study benchmarks/results/gate_study_fp32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _results import write_result  # benchmarks/_results.py
from gate_study import RUNS, _fmt, mean_std

# the committed folders of gate_study.py, in the order they were made
STUDIES = ("gate_study", "gate_study_fp32", "gate_study_avx512", "gate_study_amx")
LEARNED = 0.5
# what every pooled folder must share (the warm start, machine and precision may differ)
SAME = ("config", "iterations", "seeds")
SAME_START = ("env_name", "env_options", "num_tasks", "split", "model")
MARK_START, MARK_END = "<!-- gate-pool -->", "<!-- /gate-pool -->"


class PoolError(ValueError):
    """The folders given do not describe the same study."""


def read_study(folder: Path, script: str = "gate_study.py") -> dict:
    """``folder``'s ``summary.json``, written by ``benchmarks/<script> --out folder``."""
    path = folder / "summary.json"
    if not path.is_file():
        raise PoolError(f"{folder}: no summary.json (run benchmarks/{script} --out {folder} first)")
    return json.loads(path.read_text(encoding="utf-8"))


def check_same(studies: dict[str, dict], same: tuple[str, ...] = SAME, same_start: tuple[str, ...] = SAME_START) -> None:
    """Raise :class:`PoolError` naming the first field of ``same`` (the summary's) or ``same_start``
    (its warm start's, ``before_rl``) where a folder differs from the first one."""
    (first_name, first), *rest = studies.items()
    for name, study in rest:
        for key in same:
            if study.get(key) != first.get(key):
                raise PoolError(f"{name}: {key} {study.get(key)!r} differs from {first_name}'s {first.get(key)!r}")
        for key in same_start:
            if study["before_rl"].get(key) != first["before_rl"].get(key):
                raise PoolError(f"{name}: warm start {key} {study['before_rl'].get(key)!r} differs from "
                                f"{first_name}'s {first['before_rl'].get(key)!r}")


def precision(study: dict) -> str:
    return "float32" if "model.autocast=none" in study.get("overrides", []) else "bfloat16"


def describe(name: str, study: dict) -> dict:
    machine = study.get("machine", {})
    cpu = " ".join(str(machine[k]) for k in ("cpu", "cpu_capability") if machine.get(k)) or "not recorded"
    return {"folder": name, "state": study["state"], "precision": precision(study), "cpu": cpu,
            "warm_start_sha256": study["before_rl"].get("warm_start_sha256"),
            "before_rl": study["before_rl"]["success"]}


def pool(studies: dict[str, dict]) -> dict:
    """The pooled rows (see the module docstring) of folders already checked by :func:`check_same`."""
    rows = []
    for run, overrides in RUNS:
        per_study, finals, gate_pos, gate_neg = {}, [], [], []
        for name, study in studies.items():
            row = next((r for r in study["rows"] if r["run"] == run), None)
            if row is None or not row["per_seed_final"]:
                continue
            per_study[name] = dict(zip(row["seeds"], row["per_seed_final"]))
            finals += row["per_seed_final"]
            signals = row["signals"]
            if signals.get("teacher/gate_disagree_pos_adv") is not None:
                gate_pos.append(signals["teacher/gate_disagree_pos_adv"])
                gate_neg.append(signals["teacher/gate_disagree_neg_adv"])
        stats = mean_std(finals)
        rows.append({
            "run": run, "overrides": overrides, "per_study": per_study, "seeds": len(finals),
            "learned": sum(v >= LEARNED for v in finals), "mean": stats["mean"], "std": stats["std"],
            "gate_disagree_pos_adv": statistics.fmean(gate_pos) if gate_pos else None,
            "gate_disagree_neg_adv": statistics.fmean(gate_neg) if gate_neg else None,
            "gate_disagree_folders": len(gate_pos),
        })
    return {"learned_threshold": LEARNED, "studies": [describe(n, s) for n, s in studies.items()], "rows": rows}


def table(summary: dict) -> str:
    """The pooled table in Markdown (what the README's block holds)."""
    names = [s["folder"] for s in summary["studies"]]
    head = ["setting", *names, f"learned (>= {100 * summary['learned_threshold']:.0f}%)", "mean +- std",
            "gate + / - on disagreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in summary["rows"]:
        cells = [" / ".join(f"{100 * v:.1f}" for _, v in sorted(r["per_study"][n].items())) if n in r["per_study"]
                 else "-" for n in names]
        spread = _fmt({"mean": r["mean"], "std": r["std"], "n": r["seeds"]})
        gate = (f"{r['gate_disagree_pos_adv']:.2f} / {r['gate_disagree_neg_adv']:.2f}"
                if r["gate_disagree_folders"] else "-")
        lines.append(f"| {r['run']} | " + " | ".join(cells) + f" | {r['learned']} of {r['seeds']} | {spread} | {gate} |")
    return "\n".join(lines) + "\n"


def summary_markdown(summary: dict) -> str:
    folders = [f"- `{s['folder']}`: {s['state']}; {s['precision']}, CPU {s['cpu']}, warm start "
               f"{(s['warm_start_sha256'] or 'digest not recorded')[:12]}, {100 * s['before_rl']:.1f}% before RL"
               for s in summary["studies"]]
    return "\n".join([
        "# The gate study pooled over its warm starts", "",
        "Written by `python benchmarks/gate_pool.py` from each folder's `summary.json`; the folders:", "",
        *folders, "",
        ("Validation success in % on the 32 test tasks after the last iteration, per seed (seeds 0 / 1 / 2) "
         "in each folder; learned: seeds at or above the threshold, over every folder; mean +- std over every "
         "seed; gate on disagreement: the gate's token mean where teacher and student log-probs differ by 1 "
         "nat or more, on samples with positive / negative advantage, averaged over the folders that logged "
         "it (`-`: none did). Settings: `sdar-l<lambda>-c<share of tasks with corrupted hints>`, "
         "`opsd_sampled` at coefficient 0.1 (`-k1.25`: 1.25), `grpo_opsd` the released naive GRPO+OPSD "
         "(gate held at 0.5) at lambda 0.01 or, `-l1`, 1."), "",
        table(summary)])


def replace_block(text: str, block: str, marks: tuple[str, str] = (MARK_START, MARK_END)) -> str:
    """``text`` with the part between the two ``marks`` (default :data:`MARK_START` and
    :data:`MARK_END`) replaced by ``block``."""
    start, end = marks
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise PoolError(f"expected one {start} ... {end} block")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{block}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", nargs="+", help="gate_study.py output folders (default: the committed ones)")
    parser.add_argument("--out", default="benchmarks/results/gate_pool", help="where summary.json / .md go")
    parser.add_argument("--readme", action="store_true", help="also rewrite README.md's pooled-table block")
    args = parser.parse_args(argv)
    folders = [Path(p) for p in args.studies] if args.studies else [ROOT / "benchmarks" / "results" / s
                                                                      for s in STUDIES]
    try:
        studies = read_studies(folders)
        check_same(studies)
    except PoolError as err:
        parser.error(str(err))
    summary = pool(studies)
    write_pool(summary, ROOT / args.out, table(summary), summary_markdown(summary), args.readme)
    return 0


def read_studies(folders: list[Path], script: str = "gate_study.py") -> dict[str, dict]:
    """Each folder's ``summary.json`` (:func:`read_study`) by folder name; two folders of one name refused."""
    studies = {f.name: read_study(f, script) for f in folders}
    if len(studies) != len(folders):
        raise PoolError("two folders of the same name: pool folders with different names")
    return studies


def write_pool(summary: dict, out: Path, table_text: str, markdown: str, readme: bool,
               marks: tuple[str, str] = (MARK_START, MARK_END)) -> None:
    """Write a pool's ``summary.json`` and ``summary.md`` into ``out``, with ``readme`` also README.md's
    block between ``marks`` (:func:`replace_block`), and print its table."""
    out.mkdir(parents=True, exist_ok=True)
    write_result(summary, out / "summary.json")
    (out / "summary.md").write_text(markdown, encoding="utf-8")
    if readme:
        path = ROOT / "README.md"
        path.write_text(replace_block(path.read_text(encoding="utf-8"), table_text, marks), encoding="utf-8")
    print(table_text, end="")
    print(f"written to {out}" + (" and README.md" if readme else ""))


if __name__ == "__main__":
    sys.exit(main())

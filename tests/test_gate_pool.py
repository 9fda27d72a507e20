"""benchmarks/gate_pool.py: the gate study pooled over warm starts, and the README block it writes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gate_pool  # noqa: E402


def _study(finals: dict[str, list[float]], digest: str, gates: dict[str, tuple[float, float]] | None = None,
           overrides: list[str] | None = None, iterations: int = 12) -> dict:
    """A gate_study summary.json holding only what the pool reads."""
    gates = gates or {}
    rows = []
    for run, values in finals.items():
        pos, neg = gates.get(run, (None, None))
        rows.append({"run": run, "seeds": list(range(len(values))), "per_seed_final": values,
                     "signals": {"teacher/gate_disagree_pos_adv": pos, "teacher/gate_disagree_neg_adv": neg}})
    return {"state": f"{len(finals) * 3} of 45 runs finished", "config": "configs/bench/gate_study.yaml",
            "iterations": iterations, "seeds": [0, 1, 2], "overrides": overrides or [],
            "machine": {"cpu": "AMD EPYC", "cpu_capability": "AVX2"},
            "before_rl": {"env_name": "toy_panels", "env_options": {"panels": 3}, "num_tasks": 32,
                          "split": "test", "model": "smollm2-135m", "success": 0.0,
                          "warm_start_sha256": digest},
            "rows": rows}


def _write(folder: Path, study: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(study), encoding="utf-8")
    return folder


def test_pool_counts_learned_seeds_and_averages_the_gate_where_logged():
    studies = {
        "a": _study({"grpo": [0.25, 0.0, 0.5], "sdar-l1-c0": [1.0, 0.9, 0.4]}, "aa" * 32),
        "b": _study({"grpo": [0.0, 0.1, 0.0], "sdar-l1-c0": [0.5, 0.75, 1.0]}, "bb" * 32,
                    gates={"sdar-l1-c0": (0.4, 0.1)}, overrides=["model.autocast=none"]),
    }
    gate_pool.check_same(studies)
    summary = gate_pool.pool(studies)
    rows = {r["run"]: r for r in summary["rows"]}
    sdar = rows["sdar-l1-c0"]
    assert sdar["seeds"] == 6 and sdar["learned"] == 5  # 0.4 is below the threshold, 0.5 is at it
    assert sdar["mean"] == pytest.approx(statistics.fmean([1.0, 0.9, 0.4, 0.5, 0.75, 1.0]))
    assert sdar["std"] == pytest.approx(statistics.stdev([1.0, 0.9, 0.4, 0.5, 0.75, 1.0]))
    assert sdar["per_study"] == {"a": {0: 1.0, 1: 0.9, 2: 0.4}, "b": {0: 0.5, 1: 0.75, 2: 1.0}}
    # only folder b logged the gate on disagreement tokens: its values, counted once
    assert (sdar["gate_disagree_pos_adv"], sdar["gate_disagree_neg_adv"], sdar["gate_disagree_folders"]) == (0.4, 0.1, 1)
    assert rows["grpo"]["learned"] == 1 and rows["grpo"]["gate_disagree_folders"] == 0
    # a setting no folder ran is a row without seeds
    assert rows["opsd_sampled-c0"]["seeds"] == 0 and rows["opsd_sampled-c0"]["mean"] is None
    assert [s["precision"] for s in summary["studies"]] == ["bfloat16", "float32"]

    text = gate_pool.table(summary)
    line = next(x for x in text.splitlines() if x.startswith("| sdar-l1-c0 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["sdar-l1-c0", "100.0 / 90.0 / 40.0", "50.0 / 75.0 / 100.0", "5 of 6",
                     f"{100 * sdar['mean']:.1f} +- {100 * sdar['std']:.1f}", "0.40 / 0.10"]
    empty = next(x for x in text.splitlines() if x.startswith("| opsd_sampled-c0 |"))
    assert [c.strip() for c in empty.strip("|").split("|")] == ["opsd_sampled-c0", "-", "-", "0 of 0", "-", "-"]


@pytest.mark.parametrize("change, field", [
    ({"iterations": 16}, "iterations"),
    ({"config": "configs/bench/other.yaml"}, "config"),
])
def test_pool_refuses_folders_of_another_study(change, field):
    first = _study({"grpo": [0.0, 0.0, 0.0]}, "aa" * 32)
    other = {**_study({"grpo": [0.0, 0.0, 0.0]}, "bb" * 32), **change}
    with pytest.raises(gate_pool.PoolError, match=f"b: {field}"):
        gate_pool.check_same({"a": first, "b": other})


def test_pool_refuses_another_environment_and_main_says_so_in_one_line(tmp_path):
    first = _write(tmp_path / "a", _study({"grpo": [0.0, 0.0, 0.0]}, "aa" * 32))
    other = _study({"grpo": [0.0, 0.0, 0.0]}, "bb" * 32)
    other["before_rl"]["num_tasks"] = 48
    second = _write(tmp_path / "b", other)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gate_pool.py"), "--studies", str(first),
                           str(second), "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("b: warm start num_tasks 48 differs from a's 32")
    assert not (tmp_path / "out").exists()
    missing = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gate_pool.py"), "--studies",
                              str(tmp_path / "none"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 2 and "no summary.json" in missing.stderr


def test_main_writes_the_pool_and_reads_back(tmp_path):
    a = _write(tmp_path / "a", _study({"grpo": [0.0, 0.5, 0.0]}, "aa" * 32))
    b = _write(tmp_path / "b", _study({"grpo": [1.0, 0.0, 0.0]}, "bb" * 32))
    gate_pool.main(["--studies", str(a), str(b), "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    grpo = next(r for r in written["rows"] if r["run"] == "grpo")
    assert grpo["learned"] == 2 and grpo["seeds"] == 6 and grpo["mean"] == pytest.approx(0.25)
    assert written["commit"]  # the code that pooled them
    md = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "| grpo | 0.0 / 50.0 / 0.0 | 100.0 / 0.0 / 0.0 | 2 of 6 |" in md
    assert "`a`: 3 of 45 runs finished; bfloat16, CPU AMD EPYC AVX2, warm start aaaaaaaaaaaa" in md


def test_replace_block_rewrites_only_between_the_markers():
    text = f"head\n{gate_pool.MARK_START}\nold\n{gate_pool.MARK_END}\ntail\n"
    assert gate_pool.replace_block(text, "new\n") == f"head\n{gate_pool.MARK_START}\nnew\n{gate_pool.MARK_END}\ntail\n"
    for broken in ("no markers\n", text + text, f"{gate_pool.MARK_END}\n{gate_pool.MARK_START}\n"):
        with pytest.raises(gate_pool.PoolError, match="expected one"):
            gate_pool.replace_block(broken, "new\n")


def test_readme_block_and_committed_pool_are_what_the_committed_folders_give():
    """Hand edits, or a gate-study folder updated without rerunning ``gate_pool.py --readme``, fail here."""
    studies = {name: gate_pool.read_study(ROOT / "benchmarks" / "results" / name) for name in gate_pool.STUDIES}
    gate_pool.check_same(studies)
    summary = gate_pool.pool(studies)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(gate_pool.MARK_START)[1].split(gate_pool.MARK_END)[0]
    assert block == "\n" + gate_pool.table(summary), "rerun: python benchmarks/gate_pool.py --readme"
    committed = ROOT / "benchmarks" / "results" / "gate_pool" / "summary.md"
    assert committed.read_text(encoding="utf-8") == gate_pool.summary_markdown(summary), \
        "rerun: python benchmarks/gate_pool.py --readme"

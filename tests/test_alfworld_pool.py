"""benchmarks/alfworld_pool.py: the ALFWorld reader regime pooled over replicates, and its README block."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import alfworld_pool


def _run(arm: str, seed: int, gain: float | None, gain_passes: float | None, finished: bool = True) -> dict:
    return {"run": f"{arm}-lr1e-4-seed{seed}", "arm": arm, "setting": "lr1e-4", "seed": seed, "finished": finished,
            "gain": gain, "gain_passes": gain_passes}


def _study(runs: list[dict], digest: str, machines: dict | None = None, iterations: int = 30) -> dict:
    """An alfworld_headroom.py --regime reader summary.json holding only what the pool reads."""
    return {"state": f"{sum(r['finished'] for r in runs)} of 12 runs finished", "regime": "reader",
            "config": "configs/bench/alfworld_headroom_long.yaml", "iterations": iterations, "passes": 3,
            "search": [{"setting": "lr1e-4"}], "choice": {"setting": "lr1e-4"},
            "arms": [{"arm": "grpo"}, {"arm": "sdar-sibling-l1"}],
            "runs": runs, "run_machines": machines or {},
            "before_rl": {"env_name": "alfworld", "env_options": {"preset": "easy"}, "num_tasks": 48,
                          "split": "valid_seen", "model": "smollm2-135m", "success": 0.25,
                          "passes": {"success": 0.2361, "per_pass": [0.25, 0.25, 0.2083]},
                          "warm_start_sha256": digest}}


def _write(folder: Path, study: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(study), encoding="utf-8")
    return folder


def test_pool_counts_finished_seeds_only_and_the_target_by_both_measures():
    studies = {
        "a": _study([_run("grpo", 0, 0.10, 0.16), _run("grpo", 1, 0.17, 0.22),
                     _run("grpo", 2, None, None, finished=False), _run("sdar-sibling-l1", 0, -0.29, -0.22)],
                    "aa" * 32, {"grpo-lr1e-4-seed0": [
                        "trained 2026-12-04 22:08:06: AMD EPYC (AVX512, bfloat16 native), 1 thread(s)",
                        "resumed 2026-12-05 00:42:43: AMD EPYC (AVX512, bfloat16 native), 1 thread(s)"]}),
        "b": _study([_run("grpo", 0, 0.15, 0.14), {**_run("grpo", 0, 0.5, 0.5), "setting": "lr3e-4"}], "bb" * 32),
    }  # b's lr3e-4 run: a search run of a setting not chosen, never pooled
    alfworld_pool.check_same(studies, alfworld_pool.SAME, alfworld_pool.SAME_START)
    summary = alfworld_pool.pool(studies)
    rows = {r["arm"]: r for r in summary["rows"]}
    grpo = rows["grpo"]
    assert grpo["seeds"] == 3  # the unfinished seed 2 does not count
    assert grpo["per_study"] == {"a": {0: 0.16, 1: 0.22}, "b": {0: 0.14}}
    assert grpo["gain_passes"]["mean"] == pytest.approx(statistics.fmean([0.16, 0.22, 0.14]))
    assert grpo["gain_passes"]["std"] == pytest.approx(statistics.stdev([0.16, 0.22, 0.14]))
    assert grpo["gain_last_validation"]["mean"] == pytest.approx(statistics.fmean([0.10, 0.17, 0.15]))
    # +15 or more: 0.16 and 0.22 over 3 passes; 0.17 and 0.15 (exactly the target) at the last validation
    assert (grpo["reached_target_passes"], grpo["reached_target_last"]) == (2, 2)
    assert rows["sdar-sibling-l1"]["per_study"] == {"a": {0: -0.22}}
    folders = {f["folder"]: f for f in summary["folders"]}
    assert folders["a"]["cpus"] == "AMD EPYC (AVX512, bfloat16 native)"  # two parts on one CPU: named once
    assert folders["b"]["cpus"] == "CPU not recorded"
    assert folders["a"]["before_rl_passes"] == 0.2361

    assert alfworld_pool._points(-0.0001) == "+0.0" and alfworld_pool._points(-0.1875) == "-18.8"

    text = alfworld_pool.table(summary)
    line = next(x for x in text.splitlines() if x.startswith("| grpo |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["grpo", "s0 +16.0 / s1 +22.0", "s0 +14.0", "3", "2 / 2",
                     f"+{100 * grpo['gain_passes']['mean']:.1f} +- {100 * grpo['gain_passes']['std']:.1f}",
                     (f"+{100 * grpo['gain_last_validation']['mean']:.1f} +- "
                      f"{100 * grpo['gain_last_validation']['std']:.1f}")]
    sdar = next(x for x in text.splitlines() if x.startswith("| sdar-sibling-l1 |"))
    assert [c.strip() for c in sdar.strip("|").split("|")] == ["sdar-sibling-l1", "s0 -22.0", "-", "1", "0 / 0",
                                                                "-22.0", "-29.0"]


@pytest.mark.parametrize("change, field", [
    ({"iterations": 40}, "iterations"),
    ({"config": "configs/bench/alfworld_headroom.yaml"}, "config"),
    ({"passes": 1}, "passes"),
])
def test_pool_refuses_folders_of_another_grid(change, field):
    first = _study([_run("grpo", 0, 0.1, 0.1)], "aa" * 32)
    other = {**_study([_run("grpo", 0, 0.1, 0.1)], "bb" * 32), **change}
    with pytest.raises(alfworld_pool.PoolError, match=f"b: {field}"):
        alfworld_pool.check_same({"a": first, "b": other}, alfworld_pool.SAME, alfworld_pool.SAME_START)


def test_main_refuses_another_regime_or_panel_in_one_line_and_writes_nothing(tmp_path):
    first = _write(tmp_path / "a", _study([_run("grpo", 0, 0.1, 0.1)], "aa" * 32))
    other = _study([_run("grpo", 0, 0.1, 0.1)], "bb" * 32)
    other["before_rl"]["num_tasks"] = 12
    second = _write(tmp_path / "b", other)
    script = str(ROOT / "benchmarks" / "alfworld_pool.py")
    done = subprocess.run([sys.executable, script, "--folders", str(first), str(second), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("b: warm start num_tasks 12 differs from a's 48")
    long = _write(tmp_path / "c", {**_study([], "cc" * 32), "regime": "long"})
    done = subprocess.run([sys.executable, script, "--folders", str(long), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "only folders of alfworld_headroom.py --regime reader" in done.stderr
    gate = _write(tmp_path / "d", {"state": "0 of 45 runs finished", "rows": []})  # a gate_study folder: no regime
    done = subprocess.run([sys.executable, script, "--folders", str(gate), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "only folders of alfworld_headroom.py --regime reader" in done.stderr
    assert not (tmp_path / "out").exists()


def test_main_writes_the_pool_and_reads_back(tmp_path):
    a = _write(tmp_path / "a", _study([_run("grpo", 0, 0.2, 0.25)], "aa" * 32))
    b = _write(tmp_path / "b", _study([_run("grpo", 1, 0.0, 0.05)], "bb" * 32))
    alfworld_pool.main(["--folders", str(a), str(b), "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    grpo = next(r for r in written["rows"] if r["arm"] == "grpo")
    assert grpo["seeds"] == 2 and grpo["gain_passes"]["mean"] == pytest.approx(0.15)
    assert grpo["per_study"] == {"a": {"0": 0.25}, "b": {"1": 0.05}}  # JSON keys are strings
    assert written["commit"]  # the code that pooled them
    md = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "| grpo | s0 +25.0 | s1 +5.0 | 2 | 1 / 1 | +15.0 +- 14.1 | +10.0 +- 14.1 |" in md
    assert ("`a`: 1 of 12 runs finished; CPU not recorded; warm start aaaaaaaaaaaa, 25.0% of the panel, "
            "23.6% over 3 passes") in md


def test_readme_block_and_committed_pool_are_what_the_committed_folders_give():
    """Hand edits, or a replicate folder updated without rerunning ``alfworld_pool.py --readme``, fail here."""
    studies = alfworld_pool.read_studies([ROOT / "benchmarks" / "results" / name for name in alfworld_pool.FOLDERS])
    alfworld_pool.check_same(studies, alfworld_pool.SAME, alfworld_pool.SAME_START)
    summary = alfworld_pool.pool(studies)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = alfworld_pool.MARKS
    block = readme.split(start)[1].split(end)[0]
    assert block == "\n" + alfworld_pool.table(summary), "rerun: python benchmarks/alfworld_pool.py --readme"
    committed = ROOT / "benchmarks" / "results" / "alfworld_pool" / "summary.md"
    assert committed.read_text(encoding="utf-8") == alfworld_pool.summary_markdown(summary), \
        "rerun: python benchmarks/alfworld_pool.py --readme"

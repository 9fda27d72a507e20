"""The learning grid's "before RL" record must belong to the runs it is shown with.

``benchmarks/learning.py`` validates each environment's warm start once (``start_eval.json``) and
shows that number as every run's iteration 0. A record copied from another environment once stood
in the ALFWorld tables; these tests build small run folders (the committed Search-QA runs'
``config.yaml`` with a short metrics log) and check that the aggregation refuses a record whose
environment or settings differ from the runs', and shows "n/a" where there is none.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks" / "results" / "learning" / "runs"


def _load_learning():
    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


learning = _load_learning()


def _fake_runs(runs_dir: Path, env: str = "search") -> list[Path]:
    """GRPO and SDAR seed 0 of ``env``: the committed config, 8 logged iterations."""
    run_dirs = []
    for method, final in (("grpo", 0.5), ("sdar", 0.75)):
        run_dir = runs_dir / env / f"{method}-seed0"
        run_dir.mkdir(parents=True)
        shutil.copy(RECORDS / env / f"{method}-seed0" / "config.yaml", run_dir / "config.yaml")
        lines = [
            {"iteration": it, "train/success": 0.25, **({"val/success": final} if it in (4, 8) else {})}
            for it in range(1, 9)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        run_dirs.append(run_dir)
    return run_dirs


def _record_for(run_dir: Path, success: float = 0.4375) -> dict:
    """A start record as ``validate_start`` writes it for the runs' own settings."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    identity = learning.start_identity(config)
    return {"success": success, "env": identity["env.name"], "identity": identity}


def test_start_identity_holds_env_warm_start_and_panel_not_method_or_seed():
    grpo = yaml.safe_load((RECORDS / "search" / "grpo-seed0" / "config.yaml").read_text())
    sdar = yaml.safe_load((RECORDS / "search" / "sdar-seed1" / "config.yaml").read_text())
    identity = learning.start_identity(grpo)
    assert identity["env.name"] == "search"
    assert identity["init_checkpoint"] == "runs/bench/search/sft"
    assert identity["eval.num_tasks"] == 16 and identity["eval.greedy"] is True
    assert identity == learning.start_identity(sdar)  # method and seed do not enter


def test_matching_record_gives_the_before_rl_value(tmp_path):
    run_dirs = _fake_runs(tmp_path)
    (tmp_path / "search" / "start_eval.json").write_text(json.dumps(_record_for(run_dirs[0], 0.4375)))
    assert learning.read_start_record(tmp_path / "search", run_dirs) == 0.4375
    assert learning.read_start_record(tmp_path / "nowhere", run_dirs) is None


def test_record_of_another_environment_is_refused(tmp_path):
    search_runs = _fake_runs(tmp_path / "s")
    alfworld_runs = _fake_runs(tmp_path / "a", env="alfworld")
    record = _record_for(search_runs[0])
    (tmp_path / "a" / "alfworld" / "start_eval.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"env\.name is 'search' in the start record, 'alfworld'"):
        learning.read_start_record(tmp_path / "a" / "alfworld", alfworld_runs)


def test_record_with_other_panel_settings_is_refused():
    config = yaml.safe_load((RECORDS / "search" / "grpo-seed0" / "config.yaml").read_text())
    record = {"success": 0.5, "identity": learning.start_identity(config)}
    record["identity"]["eval.num_tasks"] = 32
    with pytest.raises(ValueError, match=r"eval\.num_tasks is 32 in the start record, 16 in the run"):
        learning.check_start_record(record, {"grpo-seed0": config}, "start_eval.json")


def test_older_record_without_identity_is_checked_on_the_fields_it_has():
    """The committed Search-QA record (no ``identity``) fits its runs and not ALFWorld's: it is
    the file that had been committed as ALFWorld's start record."""
    record = json.loads((RECORDS / "search" / "start_eval.json").read_text())
    assert "identity" not in record
    configs = {d.name: yaml.safe_load((d / "config.yaml").read_text())
               for d in sorted((RECORDS / "search").glob("*-seed*"))}
    learning.check_start_record(record, configs, "search")
    alfworld = yaml.safe_load((RECORDS / "alfworld" / "grpo-seed0" / "config.yaml").read_text())
    with pytest.raises(ValueError, match=r"env\.val_split is 'test' in the start record, 'valid_seen'"):
        learning.check_start_record(record, {"grpo-seed0": alfworld}, "alfworld")


def test_aggregate_only_refuses_a_foreign_record_and_marks_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # main() changes to the repository root; restored afterwards
    runs, out = tmp_path / "runs", tmp_path / "out"
    run_dirs = _fake_runs(runs, env="webshop")
    args = ["--aggregate-only", "--envs", "webshop", "--runs-dir", str(runs), "--out", str(out)]
    # no record: the tables say n/a and why, nothing is invented
    assert learning.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["before_rl"] for r in summary["rows"]] == [None, None]
    table = (out / "summary.md").read_text()
    assert "| webshop | grpo | 1 | n/a | 50.0 | 50.0 |" in table
    assert "before RL n/a for webshop: no start_eval.json beside the runs" in table
    # a record of Search-QA's warm start beside WebShop runs: a clear error, no tables rewritten
    shutil.copy(RECORDS / "search" / "start_eval.json", runs / "webshop" / "start_eval.json")
    with pytest.raises(SystemExit, match=r"\[webshop\] .*start_eval.json does not belong to run"):
        learning.main(args)
    # the runs' own record: its value is every method's before-RL value, and it is copied along
    (runs / "webshop" / "start_eval.json").write_text(json.dumps(_record_for(run_dirs[0], 0.25)))
    assert learning.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["before_rl"] for r in summary["rows"]] == [0.25, 0.25]
    assert json.loads((out / "runs" / "webshop" / "start_eval.json").read_text())["success"] == 0.25


def test_each_environment_keeps_its_own_record_when_several_are_aggregated(tmp_path, monkeypatch):
    """The bug that put Search-QA's record in the ALFWorld folder: the aggregation copied every
    environment's record from the last planned environment's run folder."""
    monkeypatch.chdir(ROOT)
    runs, out = tmp_path / "runs", tmp_path / "out"
    for env, success in (("webshop", 0.125), ("search", 0.5)):
        run_dirs = _fake_runs(runs, env=env)
        (runs / env / "start_eval.json").write_text(json.dumps(_record_for(run_dirs[0], success)))
    args = ["--aggregate-only", "--envs", "webshop", "search", "--runs-dir", str(runs), "--out", str(out)]
    assert learning.main(args) == 0
    for env, success in (("webshop", 0.125), ("search", 0.5)):
        copied = json.loads((out / "runs" / env / "start_eval.json").read_text())
        assert (copied["env"], copied["success"]) == (env, success)
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["env"], r["before_rl"]) for r in summary["rows"]} == {("webshop", 0.125), ("search", 0.5)}

"""Every script in ``benchmarks/`` runs in its ``--smoke`` size and writes well-formed results.

No timing is asserted (CI machines are shared); what is checked is that each script still runs
end to end against the current library and that its result file holds the numbers the README
quotes. A script added to ``benchmarks/`` without an entry in ``SCRIPTS`` fails the first test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

# script -> keys the result JSON must hold (a dotted key walks into sub-objects); every script
# takes its result path as --out
SCRIPTS = {
    "sdar_vs_grpo_time.py": [
        "ratios.iteration_sdar_cache_over_grpo",
        "ratios.iteration_sdar_no_cache_over_grpo",
        "ratios.learn_sdar_cache_over_grpo",
    ],
    "collector_speedup.py": ["speedup", "generation_only_speedup", "tokens_per_second.batched"],
    "trl_comparison.py": [
        "ratio_sdar_over_trl",
        "step_seconds.sdar_grpo.median",
        "step_seconds.trl_grpo_trainer.median",
    ],
    "prompt_growth.py": ["bounded_history.ratio", "full_history.ratio"],
    "micro_batch.py": [
        "results.1.backward.seconds",
        "results.2.backward.time_over_one_row",
        "turns.prompt_tokens",
    ],
    "logprob_memory.py": ["results"],
    "prefix_cache.py": [],
    "env_latency_alfworld.py": [],
    "env_latency_webshop.py": [],
    "env_latency_search.py": [],
    "bf16_iteration.py": ["ratio_bf16_over_fp32", "logprob_agreement.policy.max_abs_diff",
                          "logprob_agreement.teacher.mean_abs_diff"],
    "canary.py": ["seconds", "validation_curve", "train_success"],
    "bf16_support.py": ["float32.gflops", "bfloat16.gflops", "bf16_time_over_fp32", "cpu_features"],
    "routing_agreement.py": ["goals", "oracle_steps"],
}
LEARNING = "learning.py"
# grids with their own tests below (their --out is a folder)
GRIDS = {"gate_study.py", "teacher_check_grid.py", "alfworld_headroom.py"}
# read committed result folders and train nothing (tests/test_gate_pool.py, tests/test_alfworld_pool.py)
REPORTS = {"gate_pool.py", "alfworld_pool.py"}
# reads given run folders' gate_actions.jsonl (its own test below; the arithmetic: tests/test_gate_actions.py)
GATE_ACTIONS = "gate_actions.py"
# plays the panel with the checkpoints of given run folders (its own test below)
PANEL_ACTIONS = "panel_actions.py"

pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _walk(data, dotted: str):
    for key in dotted.split("."):
        assert isinstance(data, dict) and key in data, f"result lacks {dotted!r}"
        data = data[key]
    return data


def test_every_benchmark_script_is_smoke_tested():
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SCRIPTS) | {LEARNING, PANEL_ACTIONS, GATE_ACTIONS} | GRIDS | REPORTS, "add new benchmark scripts to SCRIPTS in this test"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_smoke_writes_result(script, tmp_path):
    keys = SCRIPTS[script]
    out = tmp_path / "result.json"
    extra = ["--runs-dir", str(tmp_path / "runs")] if script == "canary.py" else []
    _run([str(BENCH / script), "--smoke", "--out", str(out), *extra])
    data = json.loads(out.read_text())
    assert isinstance(data, dict) and data
    for key in keys:
        value = _walk(data, key)
        if isinstance(value, float):
            assert math.isfinite(value) and value > 0, f"{script}: {key} = {value}"


def test_learning_grid_smoke_runs_skips_finished_runs_and_aggregates(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [
        str(BENCH / LEARNING),
        "--smoke",
        "--envs",
        "search",
        "--methods",
        "grpo",
        "sdar",
        "--runs-dir",
        str(runs),
        "--out",
        str(out),
    ]
    _run([*args, "--jobs", "2"])  # the two runs train side by side
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["method"], r["n"]) for r in summary["rows"]] == [("grpo", 1), ("sdar", 1)]
    # the start model is validated once (sdar eval), and that number is every method's "before RL"
    start = json.loads((runs / "search" / "start_eval.json").read_text())
    assert start["checkpoint"] is None and start["init_checkpoint"] == str(runs / "search" / "sft")
    # ... and says what it validated: the runs' environment, warm start, model and panel
    assert start["env"] == "search" and start["identity"]["env.name"] == "search"
    assert start["identity"]["init_checkpoint"] == str(runs / "search" / "sft")
    run_config = yaml.safe_load((runs / "search" / "grpo-seed0" / "config.yaml").read_text())
    assert start["identity"]["eval.num_tasks"] == run_config["eval"]["num_tasks"] == 2
    assert [r["before_rl"] for r in summary["rows"]] == [start["success"]] * 2
    records = out / "runs" / "search"  # the results folder holds what it reports
    assert json.loads((records / "start_eval.json").read_text()) == start
    for method in ("grpo", "sdar"):
        assert (records / f"{method}-seed0" / "metrics.jsonl").read_text() == (
            runs / "search" / f"{method}-seed0" / "metrics.jsonl"
        ).read_text()
    for method in ("grpo", "sdar"):  # and the runs do not repeat it
        first = json.loads((runs / "search" / f"{method}-seed0" / "metrics.jsonl").open().readline())
        assert first["iteration"] == 1
    assert {g["status"] for g in summary["grid"]["search"]} == {"trained"}
    assert all(g["iterations_done"] == 1 for g in summary["grid"]["search"])
    # the shared warm start was used by every run
    for method in ("grpo", "sdar"):
        config = (runs / "search" / f"{method}-seed0" / "config.yaml").read_text()
        assert str(runs / "search" / "sft") in config
    assert (out / "search" / "curves_val_success.png").stat().st_size > 0
    teacher = json.loads((out / "search" / "teacher" / "aggregate.json").read_text())
    assert list(teacher["sdar/gate_mean"]["groups"]) == ["loss.method=sdar"]
    # a second call finds every run finished and trains nothing
    _run(args)
    again = json.loads((out / "summary.json").read_text())
    assert {g["status"] for g in again["grid"]["search"]} == {"finished earlier"}
    # a finished run whose checkpoints were deleted (to save disk) still counts by its metrics log
    shutil.rmtree(runs / "search" / "grpo-seed0" / "checkpoints")
    # --aggregate-only trains nothing and leaves unfinished runs out of the table
    _run([*args, "--seeds", "0", "1", "--aggregate-only"])
    partial = json.loads((out / "summary.json").read_text())
    assert [(r["method"], r["n"]) for r in partial["rows"]] == [("grpo", 1), ("sdar", 1)]
    statuses = {(g["method"], g["seed"]): g["status"] for g in partial["grid"]["search"]}
    assert statuses[("grpo", 0)] == "finished" and statuses[("sdar", 1)].startswith("not finished")
    done = {(g["method"], g["seed"]): g["iterations_done"] for g in partial["grid"]["search"]}
    assert done[("grpo", 0)] == 1 and done[("sdar", 1)] is None
    assert not (runs / "search" / "grpo-seed1").exists()
    # a run stopped before its first checkpoint (only its step-0 metrics written) starts again
    stopped = runs / "search" / "grpo-seed1"
    stopped.mkdir(parents=True)
    (stopped / "metrics.jsonl").write_text('{"iteration": 0, "val/success": 0.0}\n')
    _run([*args, "--methods", "grpo", "--seeds", "1"])
    rerun = json.loads((out / "summary.json").read_text())
    assert {(g["method"], g["seed"]): g["status"] for g in rerun["grid"]["search"]} == {
        ("grpo", 1): "trained"
    }
    assert (stopped / "config.yaml").exists()
    # checkpoints without a config.yaml cannot be resumed either: the run starts again
    orphan = runs / "search" / "grpo-seed2"
    (orphan / "checkpoints" / "iter_000000").mkdir(parents=True)
    _run([*args, "--methods", "grpo", "--seeds", "2"])
    status = {(g["method"], g["seed"]): g["status"] for g in json.loads((out / "summary.json").read_text())["grid"]["search"]}
    assert status == {("grpo", 2): "trained"} and (orphan / "config.yaml").exists()
    # a failing run does not stop the others: they are aggregated, the failure listed, status 1
    broken = runs / "search" / "sdar-seed3" / "checkpoints" / "iter_000000"
    broken.mkdir(parents=True)
    (broken / "trainer_state.pt").write_bytes(b"not a checkpoint")
    # with its config.yaml, so the grid tries to resume it (without one it would start it again)
    shutil.copy(runs / "search" / "sdar-seed0" / "config.yaml", broken.parent.parent / "config.yaml")
    failed = subprocess.run(
        [sys.executable, *args, "--seeds", "0", "3", "--jobs", "2"],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "1 run(s) failed" in failed.stderr and "sdar seed 3" in failed.stderr
    after = json.loads((out / "summary.json").read_text())
    statuses = {(g["method"], g["seed"]): g["status"] for g in after["grid"]["search"]}
    # ... and is neither trained again nor deleted
    assert statuses[("grpo", 0)] == statuses[("sdar", 0)] == "finished earlier"
    assert not (runs / "search" / "grpo-seed0" / "checkpoints").exists()
    assert statuses[("grpo", 3)] == "trained" and statuses[("sdar", 3)].startswith("failed")
    assert [(r["method"], r["n"]) for r in after["rows"]] == [("grpo", 2), ("sdar", 1)]


def test_learning_smoke_warm_starts_of_alfworld_and_webshop_are_won_episodes(tmp_path):
    """The smoke episodes are long enough for the scripted experts to win (SFT keeps wins only)."""
    runs = tmp_path / "runs"
    done = _run(
        [
            str(BENCH / LEARNING),
            "--smoke",
            "--envs",
            "alfworld",
            "webshop",
            "--warm-start-only",
            "--runs-dir",
            str(runs),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    for env_name in ("alfworld", "webshop"):
        assert f"[{env_name}] 2 expert episodes, success 1.00" in done.stdout
        demos = [json.loads(line) for line in (runs / env_name / "demos.jsonl").open()]
        assert demos and all(row["won"] for row in demos)
        assert (runs / env_name / "sft" / "checkpoints" / "iter_000000").is_dir()


def test_learning_writes_repository_paths_relative_to_the_repository():
    import importlib.util

    spec = importlib.util.spec_from_file_location("learning_bench", BENCH / LEARNING)
    learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning)
    assert learning.repo_relative(ROOT / "runs" / "bench" / "alfworld") == Path(
        "runs/bench/alfworld"
    )
    outside = Path("/somewhere/else/runs")
    assert learning.repo_relative(outside) == outside


def test_gate_study_smoke_trains_skips_finished_runs_and_aggregates(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [str(BENCH / "gate_study.py"), "--smoke", "--runs-dir", str(runs), "--out", str(out),
            "--only", "grpo", "sdar-l1-c1", "grpo_opsd-l1", "--seeds", "0"]
    first = _run(args)
    assert "grpo-seed0: trained" in first.stdout and "sdar-l1-c1-seed0: trained" in first.stdout
    assert f"grpo-seed0: starting (progress: {runs / 'logs' / 'grpo-seed0.log'})" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["run"]: r for r in summary["rows"]}
    assert rows["grpo"]["seeds"] == [0] and rows["sdar-l1-c1"]["seeds"] == [0]
    assert rows["opsd_sampled-c0"]["seeds"] == []  # not asked for: reported as missing, not invented
    # the gate split on the tokens where teacher and student disagree is tabulated too
    assert "teacher/gate_disagree_pos_adv" in rows["sdar-l1-c1"]["signals"]
    assert "| gate + on disagreement | gate - on disagreement |" in (out / "summary.md").read_text()
    sys.path.insert(0, str(BENCH))
    import gate_study

    # the whole grid, not only the seeds trained here
    assert summary["state"].startswith(f"3 of {3 * len(gate_study.RUNS)} ")
    assert summary["state"].endswith("; core comparisons (CORE): 3 of 18")  # grpo, sdar-l1-c1, grpo_opsd-l1
    # SDAR lambda 1 without its gate: the released beta-0 method at lambda 1, its gate 0.5 on every token
    ungated = yaml.safe_load((runs / "grpo_opsd-l1-seed0" / "config.yaml").read_text())
    assert ungated["loss"]["method"] == "grpo_opsd" and ungated["loss"]["sdar_lambda"] == 1.0
    assert ungated["loss"]["beta"] == 0.0
    logged = [json.loads(line) for line in (runs / "grpo_opsd-l1-seed0" / "metrics.jsonl").read_text().splitlines()]
    gates = [m["sdar/gate_mean"] for m in logged if "sdar/gate_mean" in m]
    assert gates and all(g == 0.5 for g in gates)
    # the corrupted run really ran with corrupted hints, from the shared warm start
    config = yaml.safe_load((runs / "sdar-l1-c1-seed0" / "config.yaml").read_text())
    assert config["env"]["options"]["hint_corruption"] == 1.0 and config["teacher"]["context"] == "hint"
    assert config["init_checkpoint"] == str(runs / "warm")
    # the warm start's demonstrations: every random turn and its twin with a hint naming its word
    demos = [json.loads(line) for line in (runs / "demos.jsonl").read_text().splitlines()]
    plain = [d for d in demos if not d.get("hinted")]
    twins = [d for d in demos if d.get("hinted")]
    assert len(plain) == len(twins) > 0
    for p, t in zip(plain, twins):
        assert t["response"] == p["response"] and t["prompt"].endswith(p["prompt"])
        assert t["response"] in t["prompt"]
    assert (out / "runs" / "grpo-seed0" / "metrics.jsonl").is_file() and (out / "summary.md").is_file()
    # the code that trained each run is recorded with it and in the summary
    commit = (out / "runs" / "grpo-seed0" / "commit.txt").read_text().strip()
    assert commit and summary["run_commits"]["grpo-seed0"] == commit
    # and the machine it trained on, in the run's own record (kept when tables are drawn elsewhere)
    part = json.loads((out / "runs" / "grpo-seed0" / "machine.jsonl").read_text())
    assert part["part"] == "trained" and part["cpu"] == summary["machine"]["cpu"] and part["torch_threads"] == 1
    assert len(summary["run_machines"]["grpo-seed0"]) == 1
    assert summary["run_machines"]["grpo-seed0"][0].startswith(f"trained {part['started']}: {part['cpu']} (")
    again = _run(args)
    assert "grpo-seed0: finished earlier" in again.stdout
    # a new machine: the run folders are gone, the committed records stay; the warm start is remade,
    # found equal to the committed one (same weights digest), and the committed runs still count
    assert len(summary["before_rl"]["warm_start_sha256"]) == 64
    shutil.rmtree(runs)
    moved = _run(args)
    assert "grpo-seed0: finished earlier" in moved.stdout and "sdar-l1-c1-seed0: finished earlier" in moved.stdout
    assert json.loads((out / "summary.json").read_text())["state"].startswith("3 of ")
    assert json.loads((out / "summary.json").read_text())["run_machines"] == summary["run_machines"]
    # tables only on a machine without the warm start: the committed start record serves, nothing is trained
    shutil.rmtree(runs)
    tables = _run([*args, "--aggregate-only"])
    assert "no warm start here" in tables.stdout and not (runs / "warm").exists()
    assert json.loads((out / "summary.json").read_text())["state"].startswith("3 of ")
    # a warm start that differs from the committed one is refused, not mixed with the committed runs
    record = json.loads((out / "summary.json").read_text())
    record["before_rl"]["warm_start_sha256"] = "0" * 64
    (out / "summary.json").write_text(json.dumps(record))
    refused = subprocess.run([sys.executable, *args], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             capture_output=True, text=True, timeout=900, check=False)
    assert refused.returncode != 0 and "differs from the one the committed runs started from" in refused.stderr


def test_gate_study_float32_runs_everything_without_autocast_in_its_own_record(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run([str(BENCH / "gate_study.py"), "--smoke", "--float32", "--runs-dir", str(runs), "--out", str(out),
          "--only", "grpo", "--seeds", "0"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overrides"][-1] == "model.autocast=none"
    assert "with these overrides of configs/bench/gate_study.yaml: `" in (out / "summary.md").read_text()
    # the override reached the warm start and the run (after the smoke model's own settings)
    for log in (runs / "warm.log", runs / "logs" / "grpo-seed0.log"):
        assert "model.autocast=none" in log.read_text()


def test_alfworld_headroom_smoke_searches_chooses_trains_the_arms_and_resumes(tmp_path):
    sys.path.insert(0, str(BENCH))
    from alfworld_headroom import REGIMES

    SEARCH = REGIMES["short"].search

    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [str(BENCH / "alfworld_headroom.py"), "--smoke", "--runs-dir", str(runs), "--out", str(out), "--jobs", "2"]
    first = _run(args)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == f"{len(SEARCH) + 5} of {len(SEARCH) + 5} runs finished (complete)"
    # the choice comes from the search runs' training success, and the arms ran at it
    choice = summary["choice"]
    assert set(choice["train_success_last_third"]) == {name for name, _ in SEARCH}
    best = max(choice["train_success_last_third"].values())
    assert choice["train_success_last_third"][choice["setting"]] == best
    arm_runs = [r for r in summary["runs"] if r["seed"] != 0 or r["arm"] != "grpo"]
    assert {r["setting"] for r in arm_runs} == {choice["setting"]}
    lr = float(next(o for o in dict(SEARCH)[choice["setting"]] if o.startswith("optim.lr=")).split("=")[1])
    config = yaml.safe_load((runs / f"sdar-sibling-l1-{choice['setting']}-seed2" / "config.yaml").read_text())
    assert config["loss"]["method"] == "sdar" and config["optim"]["lr"] == lr and config["loss"]["sdar_lambda"] == 1.0
    assert config["teacher"]["context"] == "sibling" and config["init_checkpoint"] == str(runs / "warm")
    # the warm start imitated the other game set (offline seed 1), RL plays offline seed 0
    assert config["env"]["options"]["offline_seed"] == 0
    assert summary["before_rl"]["demo_options"][0] == "env.options.offline_seed=1"
    demos = [json.loads(line) for line in (runs / "demos.jsonl").read_text().splitlines()]
    assert demos and all(d["response"].startswith("<action>") for d in demos)  # the action tag alone
    assert all("_s1_" in d["task_id"] for d in demos)  # generated games are named trial_sdar_s<seed>_<n>
    made = json.loads((runs / "warm_start.json").read_text())
    assert made["demo_episodes"] == 2 and summary["before_rl"]["demo_episodes"] == 2
    assert json.loads((out / "choice.json").read_text()) == choice
    # every run's validation curve starts at the shared warm start's value; gains are curve end - start
    # the final passes: pass 1 replays the last validation (same weights, same sampling seed), the
    # gain by passes is the runs' mean minus the warm start's mean over as many passes
    start_passes = summary["before_rl"]["passes"]
    assert len(start_passes["per_pass"]) == 3 and start_passes["per_pass"][0] == summary["before_rl"]["success"]
    for r in summary["runs"]:
        assert r["finished"] and r["iterations_done"] == 2 and set(r["train_success_curve"]) == {"1", "2"}
        assert r["validation_curve"]["0"] == summary["before_rl"]["success"]
        assert math.isclose(r["gain"], r["validation_curve"]["2"] - summary["before_rl"]["success"])
        assert r["signals"]["actor/optimizer_steps"] >= 1
        final = r["final_passes"]
        assert len(final["per_pass"]) == 3 and final["per_pass"][0] == r["validation_curve"]["2"]
        assert math.isclose(final["success"], sum(final["per_pass"]) / 3)
        assert math.isclose(r["gain_passes"], final["success"] - start_passes["success"])
        kept = json.loads((out / "runs" / r["run"] / "final_eval.json").read_text())
        assert kept["passes"] == 3 and str(ROOT) not in json.dumps(kept)
        # every step of the passes beside the run's result (panel_actions.py reads pass 1 there)
        steps = [json.loads(line) for line in (runs / r["run"] / "final_episodes.jsonl").read_text().splitlines()]
        assert {s["pass"] for s in steps} == {1, 2, 3}
    assert all(len(a["gains_passes"]) == 3 for a in summary["arms"] if a["arm"] == "sdar-sibling-l1")
    assert (out / "runs" / f"grpo-{choice['setting']}-seed1" / "metrics.jsonl").is_file()
    assert "trained" in first.stdout
    again = _run(args)
    assert "trained" not in again.stdout and again.stdout.count("finished earlier") == len(SEARCH) + 5
    status = _run([*args, "--status"]).stdout.splitlines()  # where the grid stands, from the folders alone
    assert status[0].startswith("warm start: ") and "; 3 passes " in status[0]
    assert len(status) == 1 + len(SEARCH) + 5 and all(": finished, 2 of 2; validation (%) " in s for s in status[1:])
    # the passes were made once each, in the first call
    finals = list((runs / "logs").glob("*-final.log"))
    assert len(finals) == len(SEARCH) + 5 and (runs / "warm.log").read_text().count("--passes") == 1
    assert all(f.read_text().count("--passes") == 1 for f in finals)
    # --setting imposes the other setting: its search run is GRPO's seed 0 there, its arms are not trained yet
    other = next(s for s in choice["train_success_last_third"] if s != choice["setting"])
    _run([*args, "--setting", other, "--aggregate-only"])
    imposed = json.loads((out / "summary.json").read_text())
    assert imposed["state"] == "1 of 6 runs finished (partial: rerun to continue)"
    assert imposed["choice"]["setting"] == other and imposed["choice"]["rule"] == "imposed with --setting"
    assert json.loads((out / "choice.json").read_text()) == choice  # the search's choice stays recorded


def test_alfworld_headroom_reader_regime_smoke_imitates_the_sibling_reading_twins(tmp_path):
    # the reader regime: a warm start with sibling-reading twins; its search of one setting is
    # chosen at once and its run trains with the arms, seed by seed, the controls' seed 0 with them
    runs, out = tmp_path / "runs", tmp_path / "out"
    done = _run([str(BENCH / "alfworld_headroom.py"), "--regime", "reader", "--smoke",
                 "--runs-dir", str(runs), "--out", str(out)])
    demos = [json.loads(line) for line in (runs / "demos.jsonl").read_text().splitlines()]
    twins = [d for d in demos if d.get("sibling_twin")]
    assert len(twins) * 2 == len(demos) > 0
    assert all(t["prompt"].startswith("[Privileged Skill Information]\nA successful attempt") for t in twins)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["before_rl"]["sibling_reading_twins"] is True and summary["regime"] == "reader"
    assert summary["state"] == "12 of 12 runs finished (complete)"
    assert summary["choice"]["rule"] == "the only setting of this regime's search"
    order = [line.split(": trained in ")[0] for line in done.stdout.splitlines() if ": trained in " in line]
    # seed 0: the comparison's two arms, then the two controls; then the comparison's seeds 1 and 2,
    # then the controls' (the comparison reaches three seeds first)
    comparison, controls = ("grpo", "sdar-sibling-l1"), ("grpo_opsd-sibling-l1", "sdar-sibling-skip-l1")
    assert order == ([f"{arm}-lr1e-4-seed0" for arm in comparison + controls]
                     + [f"{arm}-lr1e-4-seed{seed}" for seed in (1, 2) for arm in comparison]
                     + [f"{arm}-lr1e-4-seed{seed}" for seed in (1, 2) for arm in controls])
    assert [a["arm"] for a in summary["arms"]] == ["grpo", "sdar-sibling-l1", "grpo_opsd-sibling-l1",
                                                   "sdar-sibling-skip-l1"]
    skip = yaml.safe_load((runs / "sdar-sibling-skip-l1-lr1e-4-seed0" / "config.yaml").read_text())
    assert skip["teacher"]["no_winner"] == "skip" and skip["loss"]["method"] == "sdar"
    control = yaml.safe_load((runs / "grpo_opsd-sibling-l1-lr1e-4-seed0" / "config.yaml").read_text())
    assert control["loss"]["method"] == "grpo_opsd" and control["loss"]["sdar_lambda"] == 1.0
    assert control["teacher"]["context"] == "sibling"
    config = yaml.safe_load((runs / "sdar-sibling-l1-lr1e-4-seed0" / "config.yaml").read_text())
    assert config["teacher"]["context"] == "sibling" and config["optim"]["lr"] == 1e-4


def test_alfworld_headroom_only_trains_the_named_runs_and_refuses_a_name_outside_the_grid(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    base = [str(BENCH / "alfworld_headroom.py"), "--regime", "reader", "--smoke", "--runs-dir", str(runs),
            "--out", str(out)]
    done = _run([*base, "--only", "sdar-sibling-l1-lr1e-4-seed2"])
    trained = [line.split(": trained in ")[0] for line in done.stdout.splitlines() if ": trained in " in line]
    assert trained == ["sdar-sibling-l1-lr1e-4-seed2"]
    assert sorted(p.name for p in runs.glob("*-seed*") if (p / "config.yaml").is_file()) == trained
    assert json.loads((out / "summary.json").read_text())["state"] == "1 of 12 runs finished (partial: rerun to continue)"
    refused = subprocess.run([sys.executable, *base, "--only", "grpo-lr1e-4-seed3"], capture_output=True, text=True,
                             cwd=ROOT, timeout=300, check=False)
    assert refused.returncode == 2
    assert "--only: grpo-lr1e-4-seed3 not in the reader regime's grid: grpo-lr1e-4-seed0," in refused.stderr


def test_alfworld_headroom_plain_regime_smoke_demonstrates_and_trains_without_the_example(tmp_path):
    # the plain regime's override reaches every command: the demonstrations' prompts, the warm
    # start's record, the run's config and the tables
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run([str(BENCH / "alfworld_headroom.py"), "--regime", "plain", "--smoke", "--search-only",
          "--runs-dir", str(runs), "--out", str(out)])
    demos = [json.loads(line) for line in (runs / "demos.jsonl").read_text().splitlines()]
    assert demos and all(d["prompt"].endswith("inside <action> </action> tags and nothing else.") for d in demos)
    assert not any("go to countertop 1</action>" in d["prompt"] for d in demos)
    assert any(d.get("sibling_twin") for d in demos)
    config = yaml.safe_load((runs / "grpo-lr1e-4-seed0" / "config.yaml").read_text())
    assert config["env"]["options"]["answer_example"] is False
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regime"] == "plain" and summary["config_overrides"] == ["env.options.answer_example=false"]
    assert summary["before_rl"]["env_options"]["answer_example"] is False
    assert "with `env.options.answer_example=false`" in (out / "summary.md").read_text()
    # every command the grid ran carries the override: sft, the warm start's eval and passes, the run
    logs = (runs / "warm.log", runs / "logs" / "grpo-lr1e-4-seed0.log", runs / "logs" / "grpo-lr1e-4-seed0-final.log")
    commands = [line.split() for log in logs for line in log.read_text().splitlines() if line.startswith("$ ")]
    assert [c[4] for c in commands] == ["sft", "eval", "eval", "train", "eval"]  # "$ python -m sdar.cli ..."
    assert all("env.options.answer_example=false" in c for c in commands[:4])
    assert commands[4][5] == str(runs / "grpo-lr1e-4-seed0")  # the final passes: the run's own config



def test_teacher_check_grid_names_each_cells_config_with_the_env_options_its_command_set(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from teacher_check_grid import config_name

    base = "python -m sdar.cli teacher-check --config configs/bench/alfworld_headroom_long.yaml teacher.context=sibling"
    plain = {"model": "smollm2-135m", "command": base + " env.options.answer_example=false model.name=smollm2-135m"}
    assert config_name({"model": "smollm2-135m", "command": base}, Path("x.json")) == "alfworld_headroom_long"
    assert config_name(plain, Path("x.json")) == "alfworld_headroom_long, answer_example=false"
    # a cell from before commands were recorded: the config of the ENVS key its file is named after
    old = Path("smollm2-135m-alfworld_headroom_sibling-user.json")
    assert config_name({"model": "smollm2-135m"}, old) == "alfworld_headroom_long"

def test_teacher_check_grid_smoke_writes_one_json_per_cell_and_the_table(tmp_path):
    out = tmp_path / "check"
    _run([str(BENCH / "teacher_check_grid.py"), "--models", "tiny-random", "--envs", "toy_panels",
          "--layouts", "prefix", "user", "--episodes", "2", "--max-states", "4", "--out", str(out)])
    cells = sorted(p.name for p in out.glob("*.json"))
    assert cells == ["tiny-random-toy_panels-prefix.json", "tiny-random-toy_panels-user.json"]
    cell = json.loads((out / cells[1]).read_text())
    assert cell["teacher_layout"] == "user" and cell["teacher_context"] == "hint" and cell["states"] >= 2
    # what measured it: the code commit, the machine and the command, without this checkout's paths
    assert cell["commit"] and cell["machine"]["cpus"] >= 1 and cell["command"].startswith("python -m sdar.cli")
    assert str(ROOT) not in cell["command"]
    table = (out / "README.md").read_text()
    assert table.count("| tiny-random | none | gate_study | hint |") == 2
    assert "| tiny-random | none | gate_study | hint | user | bf16 |" in table  # the precision it ran in
    assert "## Probes" not in table
    # every cell reports its candidates' gaps per verb, and the README has their table
    assert sum(v["count"] for v in cell["by_verb"].values()) == cell["expert"]["count"] + cell["non_expert"]["count"]
    assert "## Gap per action verb" in table
    assert sum(f"| tiny-random-toy_panels-user | {name} | {v['count']} | {v['expert']} |" in table
               for name, v in cell["by_verb"].items()) == len(cell["by_verb"])
    # a kept cell measured without the probes asked for is refused, not reused
    refused = subprocess.run([sys.executable, str(BENCH / "teacher_check_grid.py"), "--models", "tiny-random",
                              "--envs", "toy_panels", "--layouts", "user", "--out", str(out), "--probe", "not a word"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "measured with probes [], not ['not a word'] (in this order)" in refused.stderr
    # --probe: each cell scores the action too, and the README gets the probes' table
    probed = tmp_path / "probed"
    _run([str(BENCH / "teacher_check_grid.py"), "--models", "tiny-random", "--envs", "toy_panels",
          "--layouts", "user", "--episodes", "2", "--max-states", "4", "--out", str(probed),
          "--probe", "not a word"])
    cell = json.loads((probed / "tiny-random-toy_panels-user.json").read_text())
    (probe,) = cell["probes"]
    assert probe["action"] == "not a word" and probe["count"] == cell["states"]
    assert probe["scored_as"] == "<action>not a word</action>"
    assert "--probe not a word" in cell["command"]
    assert "| tiny-random-toy_panels-user | `not a word` |" in (probed / "README.md").read_text()


def test_teacher_check_grid_smoke_on_a_warm_start(tmp_path):
    # --init: the cells load the warm start and go to warm_start/, named after its run folder;
    # --float32: forward passes without autocast, the cell named and tabulated as such
    from sdar.envs import make_env
    from sdar.envs.play import play_episodes
    from sdar.trainer.config import load_config
    from sdar.trainer.sft import run_sft

    demos = tmp_path / "demos.jsonl"
    play_episodes(make_env("toy_panels"), "expert", episodes=2, seed=0, demos_path=str(demos), think=False)
    config = load_config(ROOT / "configs/bench/gate_study.yaml", ["model.name=tiny-random", "sft.epochs=1"])
    warm = tmp_path / "tiny_warm" / "warm"  # a run folder, as init_checkpoint takes it
    run_sft(config, demos, warm)
    out = tmp_path / "check"
    _run([str(BENCH / "teacher_check_grid.py"), "--models", "tiny-random", "--envs", "toy_panels",
          "--layouts", "user", "--episodes", "2", "--max-states", "4", "--out", str(out), "--init", str(warm),
          "--float32"])
    assert not list(out.glob("*.json"))
    cell = json.loads((out / "warm_start" / "tiny-random-toy_panels-user-tiny_warm-fp32.json").read_text())
    assert cell["init_checkpoint"] == str(warm) and cell["states"] >= 2
    assert cell["autocast"] == "none" and cell["autocast_ran"] == "none" and "model.autocast=none" in cell["command"]
    assert "| tiny-random | tiny_warm/warm | gate_study | hint | user | none |" in (out / "README.md").read_text()


def test_panel_actions_replays_a_runs_last_validation_step_by_step_and_keeps_what_it_played(tmp_path):
    from helpers import read_jsonl, write_run_config

    run = tmp_path / "run"
    config = write_run_config(tmp_path / "c.yaml", method="grpo")
    _run(["-m", "sdar.cli", "train", "--config", str(config), "--output-dir", str(run), "--no-report"])
    out = tmp_path / "out"
    first = _run([str(BENCH / PANEL_ACTIONS), str(run), "--start", "--out", str(out)])
    assert "start-run: playing the panel" in first.stdout and "run: playing the panel" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    start, row = summary["runs"]
    # what the run started from (no warm start: its own config, named after it), as its logged iteration 0
    logged = [m["val/success"] for m in read_jsonl(run / "metrics.jsonl") if m.get("iteration") == 0]
    assert start["run"] == "start-run" and start["checkpoint"] is None and start["init_checkpoint"] is None
    assert start["logged_validation"] == logged[0] and start["matches_logged_validation"] is True
    assert row["run"] == "run" and row["checkpoint"].endswith("iter_000002") and row["episodes"] == 2
    # pass 1 samples as the run's validation did: the same success as its logged validation
    logged = [m["val/success"] for m in read_jsonl(run / "metrics.jsonl") if m.get("iteration") == 2]
    assert row["logged_validation"] == logged[0] and row["matches_logged_validation"] is True
    steps = read_jsonl(out / "run.steps.jsonl")
    assert len(steps) == row["steps"] and {s["pass"] for s in steps} == {1}
    assert row["invalid_share"] == sum(not s["valid_action"] for s in steps) / len(steps)
    assert summary["commit"] and summary["machine"]["cpus"] >= 1
    assert summary["command"] == f"python benchmarks/panel_actions.py {run} --start --out {out}"  # outside the repo
    assert json.loads((out / "run.eval.json").read_text())["checkpoint"] == str(run / "checkpoints" / "iter_000002")
    assert "| run | iter_000002 |" in (out / "summary.md").read_text()
    # a second call tabulates what is there without playing it again; a missing checkpoint is one line
    again = _run([str(BENCH / PANEL_ACTIONS), str(run), "--start", "--out", str(out)])
    assert "playing" not in again.stdout and json.loads((out / "summary.json").read_text())["runs"] == [start, row]
    missing = subprocess.run([sys.executable, str(BENCH / PANEL_ACTIONS), str(run), "--iteration", "7", "--out",
                              str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and missing.stderr.strip().splitlines()[-1].startswith("no checkpoint iter_000007")


def test_gate_actions_reads_a_trained_runs_file_whose_pushes_sum_to_zero(tmp_path):
    from helpers import read_jsonl, write_run_config

    run = tmp_path / "run"
    config = write_run_config(tmp_path / "c.yaml", eval={"every": 2, "num_tasks": 2})  # SDAR, two iterations
    _run(["-m", "sdar.cli", "train", "--config", str(config), "--output-dir", str(run), "--no-report"])
    logged = read_jsonl(run / "gate_actions.jsonl")
    out = tmp_path / "out"
    _run([str(BENCH / GATE_ACTIONS), str(run), "--out", str(out)])
    (row,) = json.loads((out / "summary.json").read_text())["runs"]
    assert row["env"] == "toy" and row["example_in_prompt"] is None
    assert row["all"]["iterations"] == [logged[0]["iteration"], logged[-1]["iteration"]]
    assert row["all"]["lines"] == len(logged) >= 1
    # a toy run has a handful of distinct actions: each line lists every one, and pushes (gate minus
    # the iteration's mean gate, over all tokens) then sum to zero over the verbs
    assert all(line["distinct_actions"] == len(line["actions"]) for line in logged)
    assert row["all"]["coverage"] == pytest.approx(1.0)
    assert sum(v["push"] for v in row["all"]["verbs"].values()) == pytest.approx(0.0, abs=1e-4)
    assert sum(v["tokens"] for v in row["all"]["verbs"].values()) == sum(line["tokens"] for line in logged)
    assert "| run | " in (out / "summary.md").read_text() and "- (not ALFWorld)" in (out / "summary.md").read_text()


def test_panel_actions_reads_pass_1_of_a_runs_final_passes_instead_of_playing_it(tmp_path):
    from helpers import read_jsonl, write_run_config

    run = tmp_path / "run"
    config = write_run_config(tmp_path / "c.yaml", method="grpo")
    _run(["-m", "sdar.cli", "train", "--config", str(config), "--output-dir", str(run), "--no-report"])
    # the final passes as benchmarks/alfworld_headroom.py plays them: every step written beside the result
    _run(["-m", "sdar.cli", "eval", str(run), "--passes", "2", "--output", str(run / "final_eval.json"),
          "--episodes", str(run / "final_episodes.jsonl")])
    out = tmp_path / "out"
    done = _run([str(BENCH / PANEL_ACTIONS), str(run), "--out", str(out)])
    assert "run: pass 1 of its final passes (no play)" in done.stdout and "playing" not in done.stdout
    (row,) = json.loads((out / "summary.json").read_text())["runs"]
    final = json.loads((run / "final_eval.json").read_text())
    # pass 1 samples as the run's last validation did: the same success, and the same as a play of it
    assert row["success"] == final["success_per_pass"][0] and row["matches_logged_validation"] is True
    copied = read_jsonl(out / "run.steps.jsonl")
    assert copied == [s for s in read_jsonl(run / "final_episodes.jsonl") if s["pass"] == 1] and row["steps"] == len(copied)
    assert json.loads((out / "run.eval.json").read_text())["from_final_passes"].startswith("pass 1 of 2 in ")
    played = tmp_path / "played"
    (run / "final_episodes.jsonl").rename(tmp_path / "aside.jsonl")  # without the steps: a play, as before
    _run([str(BENCH / PANEL_ACTIONS), str(run), "--out", str(played)])
    assert read_jsonl(played / "run.steps.jsonl") == copied
    assert json.loads((played / "summary.json").read_text())["runs"][0]["success"] == row["success"]

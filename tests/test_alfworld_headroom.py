"""The ALFWorld headroom grid's search rule and tables (``benchmarks/alfworld_headroom.py``), on
hand-made metrics; the grid itself runs end to end in tests/test_benchmarks_smoke.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def headroom():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import alfworld_headroom

    return alfworld_headroom


def _metrics(successes: list[float]) -> list[dict]:
    return [{"iteration": i, "train/success": s} for i, s in enumerate(successes, 1)]


def test_choose_takes_the_highest_training_success_over_the_last_third(headroom):
    search = headroom.REGIMES["short"].search
    names = [name for name, _ in search]
    # the first setting is far better early on, the second over iterations 21-30: the last third decides
    early = _metrics([0.9] * 20 + [0.1] * 10)
    late = _metrics([0.0] * 20 + [0.3] * 10)
    choice = headroom.choose({names[0]: early, names[1]: late}, 30, search)
    assert choice["setting"] == names[1]
    assert choice["overrides"] == dict(search)[names[1]]
    assert choice["train_success_last_third"] == pytest.approx({names[0]: 0.1, names[1]: 0.3})


def test_choose_breaks_a_tie_for_the_first_listed_setting(headroom):
    search = headroom.REGIMES["long"].search
    names = [name for name, _ in search]
    same = _metrics([0.2] * 30)
    assert headroom.choose({names[0]: same, names[1]: same}, 30, search)["setting"] == names[0]
    assert headroom.choose({names[1]: same, names[0]: same}, 30, search)["setting"] == names[0]


def test_each_regime_config_loads_with_every_setting_of_its_search(headroom):
    from sdar.trainer.config import load_config

    short, long = headroom.REGIMES["short"], headroom.REGIMES["long"]
    for regime in (short, long):
        for _, overrides in regime.search:
            config = load_config(regime.config, ["method=grpo", *overrides])
            assert config.eval.num_tasks == 48 and config.iterations == 30
    # the long regime: more steps and bigger groups at the same number of episodes, only wins count
    s, g = load_config(short.config, ["method=grpo"]), load_config(long.config, ["method=grpo"])
    assert (g.env.max_steps, g.rollout.group_size) == (10, 8) and s.env.max_steps == 6
    assert g.rollout.group_size * g.rollout.tasks_per_iteration == s.rollout.group_size * s.rollout.tasks_per_iteration
    assert g.env.invalid_action_penalty == 0.0 and g.loss.c_ent == 0.0
    # the same warm start recipe: model and prompt settings agree
    assert (g.model, g.env.options, g.env.prompt_mode, g.env.history_length) == (
        s.model, s.env.options, s.env.prompt_mode, s.env.history_length)


def test_summary_marks_runs_still_training_and_counts_only_finished_gains(headroom):
    start = {"success": 0.125, "num_tasks": 48}
    finished = {"run": "grpo-a-seed0", "finished": True, "iterations_done": 30, "gain": 0.25,
                "validation_curve": {"0": 0.125, "10": 0.2, "30": 0.375}, "signals": dict.fromkeys(headroom.SIGNAL_KEYS)}
    training = {**finished, "run": "grpo-a-seed1", "finished": False, "iterations_done": 7, "gain": None,
                "validation_curve": {"0": 0.125}}
    summary = {"state": "1 of 7", "before_rl": start, "iterations": 30, "target": "t", "choice": None,
               "runs": [finished, training], "arms": []}
    text = headroom.summary_markdown(summary)
    assert "| grpo-a-seed0 | 0: 12.5 / 10: 20.0 / 30: 37.5 | +25.0 |" in text
    assert "| grpo-a-seed1 (training: 7 of 30) | 0: 12.5 | - |" in text
    assert "not made yet" in text
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    row = next(line for line in text.splitlines() if line.startswith("| grpo-a-seed0 |"))
    assert header.count("|") == row.count("|") and "| KL to warm start | PPO KL |" in header


def test_a_setting_from_another_regime_is_refused_before_anything_runs(headroom, capsys):
    with pytest.raises(SystemExit) as exit_info:
        headroom.main(["--regime", "long", "--setting", "lr1e-4-kl0.01", "--aggregate-only"])
    assert exit_info.value.code == 2
    assert "is not in the long regime's search: ['lr1e-4', 'lr1e-4-dynamic']" in capsys.readouterr().err


def test_keep_run_record_copies_repo_relative_and_returns_every_part_commit(headroom, tmp_path):
    import gate_study

    run_dir = tmp_path / "grpo-seed0"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"init_checkpoint: {gate_study.ROOT}/runs/x/warm\n")
    (run_dir / "metrics.jsonl").write_text('{"iteration": 1}\n')
    (run_dir / "commit.txt").write_text("abc123\n\ndef456 (resumed)\n")
    (run_dir / "samples.jsonl").write_text('{"iteration": 1, "tokens": ["<"]}\n')
    (run_dir / "gate_actions.jsonl").write_text('{"iteration": 1, "top": []}\n')
    (run_dir / "checkpoints" / "iter_000001").mkdir(parents=True)
    dest = tmp_path / "out" / "runs" / "grpo-seed0"
    assert gate_study.keep_run_record(run_dir, dest) == "abc123; def456 (resumed)"
    assert (dest / "config.yaml").read_text() == "init_checkpoint: runs/x/warm\n"
    assert (dest / "metrics.jsonl").read_text() == '{"iteration": 1}\n'
    # the step samples and gate pushes the prose quotes come along; the weights do not
    assert (dest / "samples.jsonl").read_text() == '{"iteration": 1, "tokens": ["<"]}\n'
    assert (dest / "gate_actions.jsonl").read_text() == '{"iteration": 1, "top": []}\n'
    assert not (dest / "checkpoints").exists()
    # a run trained before commits were recorded; a record that already lies where it is kept
    (run_dir / "commit.txt").unlink()
    other = tmp_path / "elsewhere"
    assert gate_study.keep_run_record(run_dir, other) == "not recorded"
    assert not (other / "commit.txt").exists() and (other / "config.yaml").is_file()
    assert gate_study.keep_run_record(dest, dest) == "abc123; def456 (resumed)"
    assert (dest / "config.yaml").read_text() == "init_checkpoint: runs/x/warm\n"


def test_sibling_reading_twins_open_each_expert_turn_with_its_episode_as_the_teacher_would(headroom, tmp_path):
    # real expert turns of offline ALFWorld; each twin is its turn with the sibling context in front,
    # rendered as the trainer's teacher renders it in the user layout (header, context, blank line)
    from learning import write_demonstrations

    from sdar.rollout.prompts import SKILL_HEADER
    from sdar.trainer.config import load_config
    from sdar.trainer.teacher import sibling_context, sibling_text

    regime = headroom.REGIMES["reader"]
    assert regime.sibling_twins and regime.config == headroom.REGIMES["long"].config
    assert regime.folder_name() == "alfworld_headroom_reader" != headroom.REGIMES["long"].folder_name()
    config = load_config(regime.config, [*headroom.DEMO_OPTIONS, *headroom.SMOKE_DEMO])
    demos = tmp_path / "demos.jsonl"
    summary = write_demonstrations("alfworld", config, "expert", 3, demos)
    assert summary["success"] == 1.0
    import json

    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    twins = headroom.sibling_reading_twins(rows)
    assert len(twins) == len(rows) and all(t["sibling_twin"] for t in twins)
    by_turn = {(t["task_id"], t["step"]): t for t in twins}
    episode_actions = {task: [x["response"].removeprefix("<action>").removesuffix("</action>")
                              for x in sorted((x for x in rows if x["task_id"] == task), key=lambda x: x["step"])]
                       for task in {r["task_id"] for r in rows}}
    for r in rows:
        actions = episode_actions[r["task_id"]]
        twin = by_turn[(r["task_id"], r["step"])]
        assert twin["response"] == r["response"]
        assert twin["prompt"] == SKILL_HEADER + sibling_text(actions) + "\n\n" + r["prompt"]
        assert f"\n{r['step'] + 1}. {actions[r['step']]}\n" in twin["prompt"] + "\n"  # its own action, numbered
    # the trainer's sibling context of a won trajectory with these actions is the same text
    from types import SimpleNamespace

    actions = episode_actions[rows[0]["task_id"]]
    sample = SimpleNamespace(group_id=0, traj_id=1)
    assert sibling_context(sample, {0: [(0, actions)]}).text == sibling_text(actions)
    with pytest.raises(ValueError, match="not one episode"):
        headroom.sibling_reading_twins([rows[0], rows[0]])


def _write_run(folder: Path, rows: list[dict], commit: str) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "commit.txt").write_text(commit + "\n")
    return folder


def _rows(losses: list[float], seconds: float) -> list[dict]:
    return [{"iteration": i, "train/success": 0.25, "actor/loss": loss, "time": 1000.0 * i + seconds,
             "timing/update_s": seconds} for i, loss in enumerate(losses, 1)]


def test_a_restart_from_scratch_never_hides_the_longer_committed_record_and_is_compared_with_it(headroom, tmp_path):
    committed = _write_run(tmp_path / "out" / "runs" / "grpo-a-seed0", _rows([0.5, 0.4, 0.3, 0.2, 0.1], 7.0), "aaa")
    here = tmp_path / "runs" / "grpo-a-seed0"
    # nothing here yet: the committed record, with nothing to compare
    assert headroom.partial_record(here, committed) == (committed, None)
    # a restart that reproduces the first 2 iterations (timings differ: they are not compared)
    _write_run(here, _rows([0.5, 0.4], 9.0), "bbb")
    where, earlier = headroom.partial_record(here, committed)
    assert where == committed
    assert earlier == {"iterations": 5, "iterations_here": 2, "compared": 2, "first_difference": None}
    # a restart whose iteration 2 differs in one logged value
    _write_run(here, _rows([0.5, 0.41, 0.3], 9.0), "bbb")
    assert headroom.partial_record(here, committed)[1]["first_difference"] == 2
    # the restart passes the committed record: it is shown; a record lying where it is kept compares with nothing
    _write_run(here, _rows([0.5, 0.41, 0.3, 0.2, 0.1, 0.05], 9.0), "bbb")
    where, earlier = headroom.partial_record(here, committed)
    assert where == here and (earlier["iterations"], earlier["iterations_here"]) == (5, 6)
    assert headroom.partial_record(committed, committed) == (committed, None)
    # the same start continued (first iteration logged at the same time): the longer, nothing compared
    _write_run(here, _rows([0.5, 0.4, 0.3, 0.2, 0.1, 0.05], 7.0), "aaa")
    assert headroom.partial_record(here, committed) == (here, None)
    _write_run(here, _rows([0.5, 0.4], 7.0), "aaa")
    assert headroom.partial_record(here, committed) == (committed, None)
    assert headroom.partial_record(tmp_path / "none", tmp_path / "nothing") == (None, None)
    # before the restart's record replaces one it did not reproduce, that one moves to earlier/, once
    headroom.keep_earlier_record(committed)
    moved = (committed / "earlier" / "metrics.jsonl").read_text()
    assert moved.count("\n") == 5 and (committed / "earlier" / "commit.txt").read_text() == "aaa\n"
    assert not (committed / "metrics.jsonl").exists()
    _write_run(committed, _rows([1.0], 1.0), "ccc")
    headroom.keep_earlier_record(committed)  # a second call keeps the first earlier record
    assert (committed / "earlier" / "metrics.jsonl").read_text() == moved


def test_a_metric_added_to_the_trainer_between_two_starts_is_not_a_difference(headroom):
    earlier = _rows([0.5, 0.4, 0.3], 7.0)
    here = [{**r, "train/history_dropped": 0.0} for r in _rows([0.5, 0.4], 9.0)]  # logged since the restart only
    assert headroom.same_iterations(earlier, here) == (2, None)
    # a value both log still counts, wherever it differs
    here[1]["actor/loss"] = 0.41
    assert headroom.same_iterations(earlier, here) == (2, 2)
    # a metric both log somewhere but one of them skipped at an iteration is a difference there
    earlier = [{**r, "val/success": 0.25} for r in _rows([0.5, 0.4, 0.3], 7.0)]
    here = [{**r, "val/success": 0.25} for r in _rows([0.5, 0.4], 9.0)]
    del here[1]["val/success"]
    assert headroom.same_iterations(earlier, here) == (2, 2)
    # a metric logged only where its samples exist (teacher/gap_neg_adv), by the earlier record only
    earlier = _rows([0.5, 0.4, 0.3], 7.0)
    earlier[0]["teacher/gap_neg_adv"] = 0.1
    assert headroom.same_iterations(earlier, _rows([0.5, 0.4], 9.0)) == (2, 1)
    # a new metric the restart logs only where it has tokens for it (teacher/disagree_pos_adv): left out too
    here = _rows([0.5, 0.4], 9.0)
    here[1]["teacher/disagree_pos_adv"] = 0.01
    assert headroom.same_iterations(_rows([0.5, 0.4, 0.3], 7.0), here) == (2, None)


def test_a_warm_start_check_ignores_metrics_logged_since_the_committed_record_only(headroom):
    committed = {"warm_start_sha256": "aa", "success": 0.25, "metrics": {"val/success": 0.25, "val/won": 0.25}}
    fresh = {**committed, "metrics": {**committed["metrics"], "val/history_dropped": 0.0}}
    headroom.check_same_start(fresh, committed)  # the new metric alone: the same warm start
    with pytest.raises(SystemExit, match=r"differs from the one the committed runs started from \(metrics\)"):
        headroom.check_same_start({**fresh, "metrics": {"val/success": 0.25, "val/won": 0.2}}, committed)
    with pytest.raises(SystemExit, match=r"\(warm_start_sha256\)"):
        headroom.check_same_start({**fresh, "warm_start_sha256": "bb"}, committed)
    # a metric of the committed record that the fresh one lacks is a difference, not a new metric
    with pytest.raises(SystemExit, match=r"\(metrics\)"):
        headroom.check_same_start({**fresh, "metrics": {"val/success": 0.25}}, committed)


def test_summary_labels_a_run_restarted_from_scratch_with_its_comparison(headroom):
    start = {"success": 0.125, "num_tasks": 48}
    run = {"run": "grpo-a-seed0", "finished": False, "iterations_done": 24, "gain": None,
           "validation_curve": {"0": 0.125, "10": 0.3}, "signals": dict.fromkeys(headroom.SIGNAL_KEYS),
           "earlier_record": {"iterations": 24, "iterations_here": 3, "compared": 3, "first_difference": None}}
    summary = {"state": "0 of 6", "before_rl": start, "iterations": 30, "target": "t", "choice": None,
               "runs": [run], "arms": []}
    text = headroom.summary_markdown(summary)
    assert "| grpo-a-seed0 (training: 24 of 30; restarted here from scratch: 3 of 30, identical so far) |" in text
    run["earlier_record"] = {"iterations": 24, "iterations_here": 26, "compared": 24, "first_difference": 4}
    run["iterations_done"] = 26
    text = headroom.summary_markdown(summary)
    assert "| grpo-a-seed0 (training: 26 of 30; an earlier record of 24: differs from iteration 4) |" in text


def test_aggregate_keeps_a_longer_committed_record_and_saves_one_the_restart_did_not_reproduce(headroom, tmp_path):
    regime = headroom.REGIMES["long"]
    out, runs_dir = tmp_path / "out", tmp_path / "runs"
    name = "grpo-lr1e-4-seed0"
    committed = _write_run(out / "runs" / name, _rows([0.5, 0.4, 0.3, 0.2, 0.1], 7.0), "aaa")
    original = (committed / "metrics.jsonl").read_text()
    _write_run(runs_dir / name, _rows([0.5, 0.4], 9.0), "bbb")  # restarted here from scratch
    start = {"success": 0.125, "num_tasks": 48, "passes": None}
    summary = headroom.aggregate(runs_dir, out, regime, start, 30, None, "0 of 2")
    row = next(r for r in summary["runs"] if r["run"] == name)
    assert row["iterations_done"] == 5 and row["earlier_record"]["first_difference"] is None
    assert summary["run_commits"][name] == "aaa"
    assert (committed / "metrics.jsonl").read_text() == original  # the shorter restart did not replace it
    # the restart passes it without having reproduced iteration 2: the committed record moves to earlier/
    _write_run(runs_dir / name, _rows([0.5, 0.45, 0.3, 0.2, 0.1, 0.05], 9.0), "bbb")
    summary = headroom.aggregate(runs_dir, out, regime, start, 30, None, "0 of 2")
    row = next(r for r in summary["runs"] if r["run"] == name)
    assert row["iterations_done"] == 6 and row["earlier_record"]["first_difference"] == 2
    assert (committed / "earlier" / "metrics.jsonl").read_text() == original
    assert (committed / "metrics.jsonl").read_text() == (runs_dir / name / "metrics.jsonl").read_text()
    assert "an earlier record of 5: differs from iteration 2" in (out / "summary.md").read_text()


def test_aggregate_saves_a_committed_record_that_a_restart_finished_here_did_not_reproduce(headroom, tmp_path):
    # the restart trains to the end before the tables are drawn again (one lane, no stop in between)
    regime = headroom.REGIMES["long"]
    out, runs_dir = tmp_path / "out", tmp_path / "runs"
    name = "grpo-lr1e-4-seed0"
    committed = _write_run(out / "runs" / name, _rows([0.5, 0.4, 0.3], 7.0), "aaa")
    original = (committed / "metrics.jsonl").read_text()
    rows = _rows([0.5, 0.45] + [0.1] * 28, 9.0)
    rows[-1]["val/success"] = 0.5  # a finished run's last validation
    _write_run(runs_dir / name, rows, "bbb")
    start = {"success": 0.125, "num_tasks": 48, "passes": None}
    summary = headroom.aggregate(runs_dir, out, regime, start, 30, None, "0 of 2")
    row = next(r for r in summary["runs"] if r["run"] == name)
    assert row["finished"] and row["earlier_record"] == {"iterations": 3, "iterations_here": 30, "compared": 3,
                                                         "first_difference": 2}
    assert (committed / "earlier" / "metrics.jsonl").read_text() == original
    assert (committed / "metrics.jsonl").read_text() == (runs_dir / name / "metrics.jsonl").read_text()
    assert summary["run_commits"][name] == "bbb"
    assert f"| {name} (an earlier record of 3: differs from iteration 2) |" in (out / "summary.md").read_text()
    # drawn again: the earlier record stays as it was, and the finished run is not compared with its own copy
    summary = headroom.aggregate(runs_dir, out, regime, start, 30, None, "0 of 2")
    assert (committed / "earlier" / "metrics.jsonl").read_text() == original
    # the same start finished here (its first iteration logged at the committed record's time): nothing kept
    out2, runs2 = tmp_path / "out2", tmp_path / "runs2"
    _write_run(out2 / "runs" / name, _rows([0.5, 0.4, 0.3], 7.0), "aaa")
    rows = _rows([0.5, 0.4, 0.3] + [0.1] * 27, 7.0)
    rows[-1]["val/success"] = 0.5
    _write_run(runs2 / name, rows, "aaa")
    summary = headroom.aggregate(runs2, out2, regime, start, 30, None, "0 of 2")
    row = next(r for r in summary["runs"] if r["run"] == name)
    assert row["finished"] and row["earlier_record"] is None and not (out2 / "runs" / name / "earlier").exists()


def test_aggregate_only_on_a_new_machine_tabulates_the_committed_records_without_a_warm_start(headroom, tmp_path):
    import json
    import shutil

    # the committed long-regime results, as a fresh clone holds them: no runs/ folder, no warm start
    out, runs_dir = tmp_path / "out", tmp_path / "runs"
    shutil.copytree(ROOT / "benchmarks" / "results" / "alfworld_headroom_long", out)
    before = json.loads((out / "summary.json").read_text())
    assert headroom.main(["--regime", "long", "--aggregate-only", "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    assert not (runs_dir / "warm").exists()  # nothing was remade
    after = json.loads((out / "summary.json").read_text())
    assert after["before_rl"] == before["before_rl"]  # the warm start's validation and its passes kept
    assert after["choice"] == before["choice"] and after["state"] == before["state"]
    assert [(r["run"], r["finished"], r["iterations_done"], r["gain"], r["gain_passes"]) for r in after["runs"]] == [
        (r["run"], r["finished"], r["iterations_done"], r["gain"], r["gain_passes"]) for r in before["runs"]]


def test_the_reader_regime_trains_the_comparison_then_the_controls_repeats_begun_runs_first(headroom, tmp_path):
    regime = headroom.REGIMES["reader"]
    choice = {"setting": "lr1e-4", "overrides": ["optim.lr=1e-4"]}
    search_runs = [("grpo-lr1e-4", ["method=grpo", "optim.lr=1e-4"], 0)]
    comparison = ("grpo-lr1e-4", "sdar-sibling-l1-lr1e-4")
    controls = ("grpo_opsd-sibling-l1-lr1e-4", "sdar-sibling-skip-l1-lr1e-4")
    order = [(name, seed) for name, _, seed in headroom.queue(regime, search_runs, choice)]
    # each control's seed 0 with the comparison's seed 0; its seeds 1 and 2 after the comparison's three
    assert order == ([(arm, 0) for arm in comparison + controls]
                     + [(arm, seed) for seed in (1, 2) for arm in comparison]
                     + [(arm, seed) for seed in (1, 2) for arm in controls])
    arms = comparison + controls
    # a restarted grid finishes what it began: runs with a complete checkpoint first, in grid order
    runs_dir = tmp_path / "runs"
    for run, complete, config in (("sdar-sibling-l1-lr1e-4-seed1", True, True), ("grpo-lr1e-4-seed1", True, True),
                                  ("grpo-lr1e-4-seed2", False, True),  # no trainer state: nothing to resume
                                  ("grpo_opsd-sibling-l1-lr1e-4-seed2", True, False)):  # no config: started anew
        ckpt = runs_dir / run / "checkpoints" / "iter_000007"
        ckpt.mkdir(parents=True)
        if complete:
            (ckpt / "trainer_state.pt").write_bytes(b"")
        if config:
            (runs_dir / run / "config.yaml").write_text("seed: 1\n")
    order = [(name, seed) for name, _, seed in headroom.queue(regime, search_runs, choice, runs_dir)]
    assert order[:2] == [("grpo-lr1e-4", 1), ("sdar-sibling-l1-lr1e-4", 1)]
    unbegun = [(arm, seed) for seed in (0, 1, 2) for arm in arms if (arm, seed) not in order[:2]]
    assert order[2:] == sorted(unbegun, key=lambda run: (run[0] in controls and run[1] > 0, run[1]))
    # a control begun at a later seed comes before the comparison's seeds that have not begun
    ckpt = runs_dir / "grpo_opsd-sibling-l1-lr1e-4-seed1" / "checkpoints" / "iter_000029"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.pt").write_bytes(b"")
    (ckpt.parent.parent / "config.yaml").write_text("seed: 1\n")
    resumed = [(name, seed) for name, _, seed in headroom.queue(regime, search_runs, choice, runs_dir)]
    assert resumed[:3] == [("grpo-lr1e-4", 1), ("sdar-sibling-l1-lr1e-4", 1), ("grpo_opsd-sibling-l1-lr1e-4", 1)]
    assert resumed[3:6] == [("grpo-lr1e-4", 0), ("sdar-sibling-l1-lr1e-4", 0), ("grpo_opsd-sibling-l1-lr1e-4", 0)]
    assert headroom.grid_runs(regime, choice, runs_dir) == resumed
    runs = {(name, seed): overrides for name, overrides, seed in headroom.queue(regime, [], choice)}
    control = runs[("grpo_opsd-sibling-l1-lr1e-4", 2)]
    assert control == ["method=grpo_opsd", "loss.sdar_lambda=1.0", "optim.lr=1e-4"]
    # the method fixes the gate at 0.5 on this config: beta 0, the SDAR arm's lambda and teacher context
    from sdar.trainer.config import load_config

    config = load_config(regime.config, control)
    sdar = load_config(regime.config, runs[("sdar-sibling-l1-lr1e-4", 0)])
    skip = load_config(regime.config, runs[("sdar-sibling-skip-l1-lr1e-4", 1)])
    assert config.loss.method == "grpo_opsd" and config.loss.beta == 0.0 and sdar.loss.beta == 5.0
    assert config.loss.sdar_lambda == sdar.loss.sdar_lambda == 1.0
    assert config.teacher == sdar.teacher and sdar.teacher.no_winner == "self"
    # the other control: the SDAR arm, its no-winner step samples left out of the term
    assert skip.teacher.no_winner == "skip" and skip.loss == sdar.loss
    assert skip.teacher.context == sdar.teacher.context == "sibling"
    # the other regimes have no control; the long regime trains GRPO only
    assert headroom.REGIMES["short"].controls == headroom.REGIMES["long"].controls == ()
    assert [arm for arm, _, _ in headroom.REGIMES["long"].all_arms()] == ["grpo"]


def test_status_names_each_run_in_training_order_from_the_folders_and_writes_nothing(headroom, tmp_path):
    import json

    from helpers import lock_held_elsewhere

    regime = headroom.REGIMES["reader"]
    runs_dir, out = tmp_path / "runs", tmp_path / "out"

    def write(folder: Path, rows: list[dict]) -> None:
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out.mkdir()
    # no choice yet: only the search run is known
    assert headroom.status_lines(regime, runs_dir, out, 30) == ["warm start: not made yet",
                                                                "grpo-lr1e-4-seed0: not started here"]
    (out / "choice.json").write_text(json.dumps({"setting": "lr1e-4", "overrides": ["optim.lr=1e-4"]}))
    runs_dir.mkdir()
    (runs_dir / "start_eval.json").write_text(json.dumps({"success": 0.25}))
    (runs_dir / "start_eval_passes.json").write_text(json.dumps({"success": 0.236}))
    # GRPO seed 0: finished on another machine (its committed record), passes played
    write(out / "runs" / "grpo-lr1e-4-seed0", [{"iteration": i, **({"val/success": i / 100} if i % 10 == 0 else {})}
                                               for i in range(1, 31)])
    (out / "runs" / "grpo-lr1e-4-seed0" / "final_eval.json").write_text(json.dumps({"success": 0.368}))
    # SDAR seed 0: stopped here after iteration 12 (a shorter committed copy of its start too)
    write(runs_dir / "sdar-sibling-l1-lr1e-4-seed0", [{"iteration": i, **({"val/success": 0.333} if i == 10 else {})}
                                                      for i in range(1, 13)])
    write(out / "runs" / "sdar-sibling-l1-lr1e-4-seed0", [{"iteration": 1}])
    (runs_dir / "sdar-sibling-l1-lr1e-4-seed0" / "checkpoints" / "iter_000012").mkdir(parents=True)
    (runs_dir / "sdar-sibling-l1-lr1e-4-seed0" / "checkpoints" / "iter_000012" / "trainer_state.pt").write_bytes(b"")
    (runs_dir / "sdar-sibling-l1-lr1e-4-seed0" / "config.yaml").write_text("seed: 0\n")
    # GRPO seed 1: a live process holds its folder; a longer committed record of an earlier start
    write(runs_dir / "grpo-lr1e-4-seed1", [{"iteration": 1}, {"iteration": 2}])
    write(out / "runs" / "grpo-lr1e-4-seed1", [{"iteration": i, **({"val/success": 0.5} if i == 10 else {})}
                                               for i in range(1, 25)])
    # SDAR seed 1: only a committed partial record (its checkpoints stayed on another machine)
    write(out / "runs" / "sdar-sibling-l1-lr1e-4-seed1", [{"iteration": i} for i in range(1, 8)])
    with lock_held_elsewhere(runs_dir / "grpo-lr1e-4-seed1") as pid:
        before = sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*"))
        lines = headroom.status_lines(regime, runs_dir, out, 30)
        assert sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")) == before
    # the run begun here first (the grid resumes it first), then the queue's order
    begun = "sdar-sibling-l1-lr1e-4-seed0"
    queued = [f"{name}-seed{seed}" for name, seed in headroom.grid_runs(
        regime, {"setting": "lr1e-4", "overrides": ["optim.lr=1e-4"]})]
    assert [line.split(":")[0] for line in lines[1:]] == [begun, *(run for run in queued if run != begun)]
    by_run = {line.split(":")[0]: line for line in lines[1:]}
    assert lines[0] == "warm start: 25.0% of the panel; 3 passes 23.6"
    assert [by_run[run] for run in ("grpo-lr1e-4-seed0", begun, "grpo-lr1e-4-seed1", "sdar-sibling-l1-lr1e-4-seed1",
                                    "grpo-lr1e-4-seed2")] == [
        "grpo-lr1e-4-seed0: finished, 30 of 30; validation (%) 10: 10.0 / 20: 20.0 / 30: 30.0; 3 passes 36.8",
        "sdar-sibling-l1-lr1e-4-seed0: stopped after iteration 12 of 30; validation (%) 10: 33.3",
        f"grpo-lr1e-4-seed1: training (pid {pid}), 2 of 30; committed record of an earlier start: 24 of 30",
        "sdar-sibling-l1-lr1e-4-seed1: not started here; committed record of an earlier start: 7 of 30",
        "grpo-lr1e-4-seed2: not started here",
    ]
    # stopped, the restart is what the grid resumes
    assert headroom.status_lines(regime, runs_dir, out, 30)[5] == (
        "grpo-lr1e-4-seed1: stopped after iteration 2 of 30; committed record of an earlier start: 24 of 30")
    with lock_held_elsewhere(runs_dir / "warm"):  # `sdar sft` making the warm start
        assert headroom.status_lines(regime, runs_dir, out, 30)[0].startswith("warm start: being made (pid ")


def test_the_plain_regime_trains_sdar_first_in_each_seed_on_prompts_without_the_example(headroom, tmp_path):
    regime = headroom.REGIMES["plain"]
    choice = {"setting": "lr1e-4", "overrides": ["optim.lr=1e-4"]}
    search_runs = [("grpo-lr1e-4", ["method=grpo", "optim.lr=1e-4"], 0)]
    order = [(name, seed) for name, _, seed in headroom.queue(regime, search_runs, choice)]
    # the SDAR arm, then GRPO (seed 0: the search run), seed by seed
    assert order == [(arm, seed) for seed in (0, 1, 2) for arm in ("sdar-sibling-l1-lr1e-4", "grpo-lr1e-4")]
    # a run begun still comes first: the lead orders what has not begun
    begun = tmp_path / "runs" / "grpo-lr1e-4-seed0"
    (begun / "checkpoints" / "iter_000003").mkdir(parents=True)
    (begun / "checkpoints" / "iter_000003" / "trainer_state.pt").write_bytes(b"")
    (begun / "config.yaml").write_text("seed: 0\n")
    resumed = [(name, seed) for name, _, seed in headroom.queue(regime, search_runs, choice, tmp_path / "runs")]
    assert resumed == [("grpo-lr1e-4", 0), ("sdar-sibling-l1-lr1e-4", 0)] + order[2:]
    # a lead that names none of the regime's arms is refused
    with pytest.raises(ValueError, match="lead 'sdar' is none of its arms"):
        headroom.Regime("x", regime.config, regime.search, lead="sdar")
    # everything else is the reader regime's: its config, search, warm-start recipe and arms
    reader = headroom.REGIMES["reader"]
    assert (regime.config, regime.search, regime.sibling_twins, regime.arms) == (
        reader.config, reader.search, reader.sibling_twins, reader.arms)
    assert regime.controls == () and regime.folder_name() != reader.folder_name()
    from sdar.trainer.config import load_config

    config = load_config(regime.config, list(regime.overrides))
    assert config.env.options["answer_example"] is False
    assert "answer_example" not in load_config(reader.config).env.options  # the default: with the example


def test_grid_names_are_every_run_folder_a_grid_can_train(headroom):
    # what --only accepts: the search runs, then every arm and control at each setting of the search
    long = headroom.grid_names(headroom.REGIMES["long"])
    assert long == ["grpo-lr1e-4-seed0", "grpo-lr1e-4-dynamic-seed0", "grpo-lr1e-4-seed1", "grpo-lr1e-4-seed2",
                    "grpo-lr1e-4-dynamic-seed1", "grpo-lr1e-4-dynamic-seed2"]
    reader = headroom.grid_names(headroom.REGIMES["reader"])
    assert len(reader) == len(set(reader)) == 12  # the search run is GRPO's seed 0: named once
    assert {"sdar-sibling-skip-l1-lr1e-4-seed2", "grpo_opsd-sibling-l1-lr1e-4-seed0"} <= set(reader)

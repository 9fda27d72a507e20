"""benchmarks/panel_actions.py's table, from hand-made steps (its end-to-end run: test_benchmarks_smoke)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from panel_actions import (
    EXAMPLE_ACTION,
    KINDS,
    ROOT,
    invalid_kind,
    main,
    repo_relative,
    summary_markdown,
    tabulate,
)

LISTED = ["go to desk 1", "go to sidetable 1", "look"]


def step(episode: int, number: int, action: str, valid: bool, won: bool = False) -> dict:
    return {"episode": episode, "step": number, "action": action, "valid_action": valid, "won": won,
            "admissible_actions": LISTED}


def test_each_invalid_action_gets_the_first_reason_that_holds():
    assert invalid_kind(step(0, 1, "", False), None) == KINDS[0]
    assert invalid_kind(step(0, 1, "go to desk 1", False), "go to desk 1") == KINDS[1]
    assert invalid_kind(step(0, 1, "go to countertop 1", False), "look") == KINDS[2]
    assert invalid_kind(step(0, 1, "move keychain 1 to desk 1", False), None) == KINDS[2]  # keychain 1 unlisted
    assert invalid_kind(step(0, 1, "open desk 1", False), None) == KINDS[3]
    # names are whole: "table 1" is not listed because "sidetable 1" is
    assert invalid_kind(step(0, 1, "go to table 1", False), None) == KINDS[2]


def test_the_example_action_is_the_one_both_answer_formats_show_unless_switched_off(tmp_path):
    from panel_actions import example_in_prompt

    from sdar.envs.alfworld.prompts import answer_format

    for think in (False, True):
        assert f"for example <action>{EXAMPLE_ACTION}</action>." in answer_format(think)
        assert EXAMPLE_ACTION not in answer_format(think, example=False)
    assert EXAMPLE_ACTION == "go to countertop 1"
    # which a run used: its config's ALFWorld option, true unless set
    (tmp_path / "config.yaml").write_text("env:\n  name: alfworld\n  options: {preset: easy}\n")
    assert example_in_prompt(tmp_path) is True
    (tmp_path / "config.yaml").write_text("env:\n  options: {preset: easy, answer_example: false}\n")
    assert example_in_prompt(tmp_path) is False


def test_the_table_counts_steps_episodes_and_reasons_by_hand():
    rows = [
        # episode 0: won in two valid steps
        step(0, 0, "go to desk 1", True, won=True), step(0, 1, "look", True, won=True),
        # episode 1: lost: an unlisted receptacle, the same again, nothing parsed, a valid step
        step(1, 0, "go to countertop 1", False), step(1, 1, "go to countertop 1", False),
        step(1, 2, "", False), step(1, 3, "go to desk 1", True),
    ]
    got = tabulate(rows)
    assert got["episodes"] == 2 and got["steps"] == 6 and got["success"] == 0.5
    assert got["steps_per_episode"] == 3.0 and got["invalid_share"] == pytest.approx(3 / 6)
    assert got["invalid_kinds"] == pytest.approx({KINDS[0]: 1 / 3, KINDS[1]: 1 / 3, KINDS[2]: 1 / 3, KINDS[3]: 0.0})
    assert got["verbs"] == pytest.approx({"go": 4 / 6, "look": 1 / 6, "(none)": 1 / 6})
    assert got["invalid_verbs"] == pytest.approx({"go": 2 / 3, "(none)": 1 / 3})
    assert got["top_invalid_actions"] == [("go to countertop 1", 2), ("", 1)]
    assert got["example_action_share"] == pytest.approx(2 / 6)  # the answer format's example, twice
    # the previous action is the episode's own: episode 1's first step ("look", as episode 0 ended)
    # repeats nothing, and its second no longer repeats its first
    rows[2] = step(1, 0, "look", False)
    assert tabulate(rows)["invalid_kinds"] == pytest.approx({KINDS[0]: 1 / 3, KINDS[1]: 0.0, KINDS[2]: 1 / 3,
                                                             KINDS[3]: 1 / 3})
    table = summary_markdown({"commit": "abc", "machine": {"cpu": "x"}, "runs": [
        {"run": "r", "checkpoint": "runs/r/checkpoints/iter_000002", "matches_logged_validation": True, **got}]})
    assert "| r | iter_000002 | 50.0 | yes | 3.0 | 33.3 | 50.0 | 33.3 | 33.3 | 33.3 | 0.0 |" in table
    assert "`go to countertop 1`, the action the answer format shows as its example" in table
    plain = summary_markdown({"commit": "abc", "machine": {"cpu": "x"}, "runs": [
        {"run": "r", "checkpoint": None, "matches_logged_validation": None, "example_in_prompt": False, **got}]})
    assert "| r | iteration 0 | 50.0 | - | 3.0 | 33.3 (not in its prompts) | 50.0 |" in plain


def test_paths_inside_the_repository_are_recorded_from_its_root(tmp_path, monkeypatch):
    assert repo_relative(str(ROOT / "runs" / "x" / "warm")) == "runs/x/warm"
    assert repo_relative(str(tmp_path / "warm")) == str(tmp_path / "warm")  # elsewhere: absolute
    monkeypatch.chdir(tmp_path)  # the plays run from the root: a relative path elsewhere is resolved
    assert repo_relative("warm") == str(tmp_path / "warm")


def test_a_play_without_steps_and_ambiguous_names_are_refused_before_anything_plays(tmp_path):
    with pytest.raises(SystemExit, match="no steps"):
        tabulate([])
    for where in ("a", "b"):
        (tmp_path / where / "run").mkdir(parents=True)
    with pytest.raises(SystemExit, match="two runs named alike"):
        main([str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--out", str(tmp_path / "out")])
    # two warm starts of one folder name would share the start play's files
    for where in ("a", "b"):
        (tmp_path / where / f"run-{where}").mkdir()
        (tmp_path / where / f"run-{where}" / "config.yaml").write_text(f"init_checkpoint: {tmp_path / where / 'warm'}\n")
    with pytest.raises(SystemExit, match="two warm starts would both play as start-warm"):
        main([str(tmp_path / "a" / "run-a"), str(tmp_path / "b" / "run-b"), "--start", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="has no config.yaml"):
        main([str(tmp_path / "a" / "run"), "--start", "--out", str(tmp_path / "out")])
    assert not list((tmp_path / "out").glob("*.json"))


def test_pass_1_of_the_final_passes_is_copied_with_paths_from_the_root_unless_out_has_that_play(tmp_path):
    import json

    from panel_actions import copy_final_pass

    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    out.mkdir()
    ckpt = str(ROOT / "runs" / "x" / "checkpoints" / "iter_000030")  # as the grid names it: absolute
    (run / "final_eval.json").write_text(json.dumps({
        "checkpoint": ckpt, "init_checkpoint": str(ROOT / "runs" / "x" / "warm"), "model": "m", "passes": 2,
        "success": 0.25, "success_per_pass": [0.5, 0.0], "per_task_type": {}, "metrics": {}, "eval_config": {"seed": 1}}))
    steps = [step(0, 0, "look", True, won=True) | {"pass": 1}, step(0, 0, "look", False) | {"pass": 2}]
    (run / "final_episodes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))

    def same(r):
        return (ROOT / r["checkpoint"]).resolve() == Path(ckpt).resolve()

    copy_final_pass(run, lambda r: False, out)  # another checkpoint asked for: nothing copied
    assert not list(out.iterdir())
    copy_final_pass(run, same, out)
    result = json.loads((out / "run.eval.json").read_text())
    assert result["checkpoint"] == "runs/x/checkpoints/iter_000030" and result["init_checkpoint"] == "runs/x/warm"
    assert result["success"] == 0.5 and result["passes"] == 1 and result["from_final_passes"].startswith("pass 1 of 2")
    assert [json.loads(line) for line in (out / "run.steps.jsonl").read_text().splitlines()] == steps[:1]
    assert sorted(p.name for p in out.iterdir()) == ["run.eval.json", "run.steps.jsonl"]  # no temporary left
    # a play of that checkpoint in out is kept; one of another checkpoint is replaced
    (out / "run.eval.json").write_text(json.dumps({**result, "model": "kept"}))
    copy_final_pass(run, same, out)
    assert json.loads((out / "run.eval.json").read_text())["model"] == "kept"
    (out / "run.eval.json").write_text(json.dumps({**result, "checkpoint": "runs/x/checkpoints/iter_000020"}))
    copy_final_pass(run, same, out)
    assert json.loads((out / "run.eval.json").read_text()) == result

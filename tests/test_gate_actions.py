"""benchmarks/gate_actions.py: a run's gate_actions.jsonl summed by hand-checked arithmetic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from gate_actions import EXAMPLE_ACTION, add_up, main, summarise


def action(name: str, samples: int, tokens: int, gap: float, push: float) -> dict:
    return {"action": name, "step_samples": samples, "tokens": tokens, "gate": 0.5, "gap": gap, "push": push}


def make_run(folder: Path, lines: list[dict], example: bool | None = None) -> Path:
    folder.mkdir(parents=True)
    options = "{preset: easy}" if example is None else f"{{preset: easy, answer_example: {str(example).lower()}}}"
    (folder / "config.yaml").write_text(f"env:\n  name: alfworld\n  options: {options}\n", encoding="utf-8")
    (folder / "gate_actions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return folder


LINES = [
    {"iteration": 1, "gate_mean": 0.5, "tokens": 100, "distinct_actions": 3, "actions": [
        action("go to desk 1", 2, 20, 0.02, 1.5), action(EXAMPLE_ACTION, 1, 10, 0.01, 0.5),
        action("move key 1 to desk 1", 2, 30, -0.03, -2.0)]},
    {"iteration": 2, "gate_mean": 0.5, "tokens": 80, "distinct_actions": 2, "actions": [
        action("go to desk 1", 1, 10, 0.04, 1.0), action("take key 1 from desk 1", 3, 40, -0.01, -1.0)]},
    {"iteration": 11, "gate_mean": 0.5, "tokens": 50, "distinct_actions": 1, "actions": [
        action("move key 1 to desk 1", 1, 15, 0.01, 0.25)]},
]


def test_sums_by_verb_and_action_match_the_hand_sums():
    total = add_up(LINES)
    assert total["iterations"] == [1, 11] and total["lines"] == 3
    assert total["coverage"] == pytest.approx((60 + 50 + 15) / (100 + 80 + 50))
    assert total["verbs"] == {"go": {"tokens": 40, "push": pytest.approx(3.0)},
                              "move": {"tokens": 45, "push": pytest.approx(-1.75)},
                              "take": {"tokens": 40, "push": pytest.approx(-1.0)}}
    assert list(total["verbs"]) == ["go", "take", "move"]  # highest push first
    desk = total["highest"][0]
    assert desk["action"] == "go to desk 1" and desk["step_samples"] == 3 and desk["push"] == pytest.approx(2.5)
    assert desk["gap"] == pytest.approx((0.02 * 20 + 0.04 * 10) / 30)  # weighted by tokens
    assert total["example_push"] == pytest.approx(0.5) and total["example_step_samples"] == 1
    # four actions: all among the highest five, none repeated among the lowest
    assert [a["action"] for a in total["highest"]] == ["go to desk 1", EXAMPLE_ACTION, "take key 1 from desk 1",
                                                      "move key 1 to desk 1"]
    assert total["lowest"] == []


def test_lowest_never_repeats_the_highest():
    many = [{"iteration": 1, "gate_mean": 0.5, "tokens": 70, "distinct_actions": 7,
             "actions": [action(f"go to desk {k}", 1, 10, 0.0, 3.0 - k) for k in range(7)]}]
    total = add_up(many)
    assert [a["action"] for a in total["highest"]] == [f"go to desk {k}" for k in range(5)]
    assert [a["action"] for a in total["lowest"]] == ["go to desk 6", "go to desk 5"]


def test_windows_split_by_iteration_and_the_prompt_marks_the_example(tmp_path):
    run = summarise(make_run(tmp_path / "sdar-seed0", LINES, example=False), window=10)
    assert run["example_in_prompt"] is False
    assert [(w["from"], w["to"], w["lines"]) for w in run["windows"]] == [(1, 10, 2), (11, 20, 1)]
    assert run["windows"][1]["verbs"] == {"move": {"tokens": 15, "push": pytest.approx(0.25)}}
    assert summarise(make_run(tmp_path / "other", LINES), window=10)["example_in_prompt"] is True


def test_main_writes_both_files_and_refuses_a_run_without_the_file(tmp_path):
    run = make_run(tmp_path / "runs" / "sdar-seed0", LINES)
    out = tmp_path / "out"
    assert main([str(run), "--window", "5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["window"] == 5 and [w["from"] for w in summary["runs"][0]["windows"]] == [1, 11]
    assert summary["commit"] and "--window 5" in summary["command"]
    table = (out / "summary.md").read_text(encoding="utf-8")
    assert "| sdar-seed0 | 1-11 (3) | 54% | go +3.0 (+0.0750 per token), take -1.0" in table
    assert "| window 1-5 | 1-2 (2) | 61% |" in table and "| window 11-15 | 11-11 (1) | 30% |" in table
    grpo = make_run(tmp_path / "runs" / "grpo-seed0", [])
    (grpo / "gate_actions.jsonl").unlink()
    with pytest.raises(SystemExit, match="no gate_actions.jsonl"):
        main([str(grpo), "--out", str(out)])
    (grpo / "gate_actions.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SystemExit, match="has no iteration yet"):
        main([str(grpo), "--out", str(out)])
    with pytest.raises(SystemExit, match="not a run folder"):
        main([str(tmp_path), "--out", str(out)])
    twin = make_run(tmp_path / "elsewhere" / "sdar-seed0", LINES)
    with pytest.raises(SystemExit, match="two runs named alike"):
        main([str(run), str(twin), "--out", str(out)])
    with pytest.raises(SystemExit, match="--window must be at least 1"):
        main([str(run), "--window", "0", "--out", str(out)])


def test_a_half_written_last_line_is_skipped_and_no_action_shows_as_none(tmp_path):
    run = make_run(tmp_path / "sdar-seed0", LINES[:1] + [{"iteration": 2, "gate_mean": 0.5, "tokens": 10,
                                                          "distinct_actions": 1, "actions": [action("", 1, 10, 0.0, 0.0)]}])
    with (run / "gate_actions.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"iteration": 3, "gate_mean": 0.')  # a run killed while writing
    summary = summarise(run, window=10)
    assert summary["all"]["iterations"] == [1, 2] and summary["all"]["verbs"]["(none)"]["tokens"] == 10
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out)]) == 0
    assert "(none) +0.0 (1 samples" in (out / "summary.md").read_text(encoding="utf-8")
    # a config without environment options (null) reads as prompts with the example
    (run / "config.yaml").write_text("env:\n  name: alfworld\n  options: null\n", encoding="utf-8")
    assert summarise(run, window=10)["example_in_prompt"] is True

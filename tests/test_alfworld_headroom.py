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
    names = [name for name, _ in headroom.SEARCH]
    # the first setting is far better early on, the second over iterations 21-30: the last third decides
    early = _metrics([0.9] * 20 + [0.1] * 10)
    late = _metrics([0.0] * 20 + [0.3] * 10)
    choice = headroom.choose({names[0]: early, names[1]: late}, 30)
    assert choice["setting"] == names[1]
    assert choice["overrides"] == dict(headroom.SEARCH)[names[1]]
    assert choice["train_success_last_third"] == pytest.approx({names[0]: 0.1, names[1]: 0.3})


def test_choose_breaks_a_tie_for_the_first_listed_setting(headroom):
    names = [name for name, _ in headroom.SEARCH]
    same = _metrics([0.2] * 30)
    assert headroom.choose({names[0]: same, names[1]: same}, 30)["setting"] == names[0]
    assert headroom.choose({names[1]: same, names[0]: same}, 30)["setting"] == names[0]


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

"""Run logging (metrics, samples, TensorBoard), the report (PNGs, token view, summary), aggregation.

A realistic run directory is written through the real ``RunLogger``; everything is read back from
disk and checked against numbers computed by hand in the comments.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import time

import pytest
import yaml
from PIL import Image

from sdar.reporting import (
    RunLogger,
    add_report_arguments,
    aggregate_runs,
    format_aggregate_table,
    format_summary,
    mean_std_curves,
    read_metrics,
    read_samples,
    report_command,
    write_aggregate_report,
    write_report,
)
from sdar.reporting.aggregate import group_runs
from sdar.reporting.html import (
    gap_colour,
    gate_colour,
    render_page,
    select_samples,
    token_endorsement,
)

# Validation panel results (iteration -> overall, heat, cool). Best overall is iteration 5.
VAL = {0: (0.25, 0.0, 0.5), 5: (0.625, 0.5, 0.75), 10: (0.5, 0.25, 0.75)}

TEACHER_TOKENS = [
    "<think>",
    "heat it & ",
    "then <script>alert(1)</script>",
    "</think>",
    "<action>",
    'go to "microwave 1"',
    "</action>",
]
TEACHER_SAMPLE = {
    "task_id": "pick_heat_then_place_in_recep-Apple-None-Fridge-11/trial_1",
    "task_type": "pick_heat_then_place_in_recep",
    "step": 3,
    "won": True,
    "valid_action": True,
    "advantage": 1.25,
    "skill_files": ["alfworld/general.md", "alfworld/heat.md"],
    "prompt": "You are in the <middle> of a room & see a fridge 1.",
    "tokens": TEACHER_TOKENS,
    "log_probs": [-0.5, -1.0, -2.0, -0.1, -0.2, -1.5, -0.05],
    "teacher_log_probs": [-0.5, -0.8, -3.0, -0.1, -0.2, -0.5, -0.05],
    # The gate is what the trainer logged; the view colours by it as given.
    "gate": [0.5, 0.75, 0.25, 0.5, 0.5, 0.993, 0.5],
}
PLAIN_SAMPLE = {
    "task_id": "look_at_obj_in_light-Book-None-DeskLamp-7/trial_2",
    "task_type": "look_at_obj_in_light",
    "step": 0,
    "won": False,
    "valid_action": False,
    "advantage": -0.5,
    "skill_files": [],
    "prompt": "Your task is to: examine the book with the desklamp.",
    "tokens": ["<action>", "use <desklamp 1>", "</action>"],
    "log_probs": [-0.3, -2.5, -0.01],
    "teacher_log_probs": None,
    "gate": None,
}


def train_metrics(iteration: int) -> dict[str, float]:
    return {
        "train/success": 0.1 * iteration / 2,
        "train/success/pick_heat_then_place_in_recep": 0.05 * iteration,
        "train/success/look_at_obj_in_light": 0.02 * iteration,
        "train/reward_mean": iteration / 2,
        "train/episode_length": 30 - iteration,
        "train/invalid_action_rate": 0.3 / iteration,
        "sdar/gate_mean": 0.5 + 0.01 * iteration,
        "sdar/gate_active_ratio": 0.4 + 0.02 * iteration,
        "sdar/teacher_gap_mean": 0.05 * iteration,
        "sdar/loss": -0.01 * iteration,
        "actor/pg_loss": 0.02,
        "actor/kl": 0.001 * iteration,
        "actor/entropy": 1.5,
        "actor/grad_norm": 0.7,
        "actor/lr": 1e-6,
        "teacher/truncated": 0,
        "timing/rollout_s": 50.0 + iteration,
        "timing/update_s": 20.0,
    }


def val_metrics(iteration: int) -> dict[str, float]:
    overall, heat, cool = VAL[iteration]
    return {
        "val/success": overall,
        "val/success/heat": heat,
        "val/success/cool": cool,
        "val/episode_length": 20.0,
    }


def make_run(
    run_dir,
    iterations: int = 10,
    tensorboard: bool = False,
    config: dict | None = None,
    final_val: float | None = None,
):
    """A run as the trainer writes it: validation at 0, 5, 10; samples with and without teacher."""
    with RunLogger(run_dir, tensorboard=tensorboard) as logger:
        logger.log_metrics(0, val_metrics(0))
        for it in range(1, iterations + 1):
            metrics = train_metrics(it)
            if it in VAL:
                metrics.update(val_metrics(it))
            logger.log_metrics(it, metrics)
            logger.log_samples(it, [TEACHER_SAMPLE, PLAIN_SAMPLE] if it == 1 else [TEACHER_SAMPLE])
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(config or {"loss": {"method": "sdar"}, "seed": 0})
    )
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# RunLogger and reading back
# ---------------------------------------------------------------------------------------------
def test_metrics_and_samples_round_trip(run_dir):
    lines = read_metrics(run_dir)
    assert [m["iteration"] for m in lines] == list(range(11))
    assert lines[0]["val/success"] == 0.25 and "train/success" not in lines[0]
    assert lines[7]["train/reward_mean"] == 3.5 and "val/success" not in lines[7]
    assert lines[5]["val/success/heat"] == 0.5 and lines[5]["timing/rollout_s"] == 55.0
    assert all(isinstance(m["time"], float) for m in lines)
    samples = read_samples(run_dir)
    assert len(samples) == 11  # 2 at iteration 1, then 1 per iteration
    assert samples[0]["iteration"] == 1 and samples[0]["tokens"] == TEACHER_TOKENS
    assert "gate" not in samples[1] and samples[1]["teacher_log_probs"] is None
    # a method without a gate: the line has no gate field at all (not a null)
    raw = [json.loads(t) for t in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert "gate" not in raw[1] and len(raw[0]["gate"]) == len(TEACHER_TOKENS)


def test_same_iteration_twice_is_merged_and_going_back_is_refused(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log_metrics(5, {"train": {"success": 0.5}})  # nested -> "train/success"
    logger.log_metrics(5, {"val/success": 0.25})
    with pytest.raises(ValueError, match="truncate_after"):
        logger.log_metrics(4, {"train/success": 0.1})
    logger.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    (line,) = read_metrics(tmp_path)
    assert line["train/success"] == 0.5 and line["val/success"] == 0.25


def test_new_run_refuses_a_used_directory(run_dir):
    with pytest.raises(FileExistsError, match="resume=True"):
        RunLogger(run_dir, tensorboard=False)


def test_resume_truncates_lines_after_the_checkpoint(run_dir):
    logger = RunLogger(run_dir, tensorboard=False, resume=True)
    logger.truncate_after(6)
    assert [m["iteration"] for m in read_metrics(run_dir)] == [0, 1, 2, 3, 4, 5, 6]
    assert max(s["iteration"] for s in read_samples(run_dir)) == 6
    with pytest.raises(ValueError, match="back in time"):
        logger.log_metrics(5, {"train/success": 1.0})
    logger.log_metrics(7, {"train/success": 0.99})
    logger.log_samples(7, [PLAIN_SAMPLE])
    logger.close()
    lines = read_metrics(run_dir)
    assert [m["iteration"] for m in lines] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert (
        lines[-1]["train/success"] == 0.99 and "sdar/loss" not in lines[-1]
    )  # the old line 7 is gone
    raw = [json.loads(t)["iteration"] for t in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert raw == sorted(raw)
    assert [s["iteration"] for s in read_samples(run_dir)][-2:] == [6, 7]


def test_tensorboard_scalars_and_resume_purge(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path, tensorboard=True) as logger:
        for it in range(1, 5):
            logger.log_metrics(it, {"train/success": it / 10, "sdar/gate_mean": 0.5})
    # TensorBoard reads event files in name order: "events.out.tfevents.<second>.<host>.<pid>.<n>".
    # A real resume is a later process in a later second; within one second of one process the
    # writer counter n decides, and it sorts wrongly across 9 -> 10 (the test then failed after
    # other tests had opened nine writers). Start the resumed writer in a later second, as in use.
    time.sleep(1.05)
    with RunLogger(tmp_path, tensorboard=True, resume=True) as logger:
        logger.truncate_after(2)
        logger.log_metrics(3, {"train/success": 0.9, "sdar/gate_mean": 0.6})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/success")
    # Steps 3 and 4 of the first run are purged; step 3 is the resumed run's value.
    assert [(e.step, round(e.value, 6)) for e in scalars] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    assert "sdar/gate_mean" in events.Tags()["scalars"]


def test_nonfinite_values_and_crashed_last_line(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_metrics(1, {"actor/pg_loss": float("nan"), "train/success": 0.5})
        logger.log_metrics(2, {"actor/pg_loss": 0.1, "train/success": 0.75})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert '"actor/pg_loss": null' in text  # strict JSON, not NaN
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 3, "train/succ')  # the process died mid-write
    lines = read_metrics(tmp_path)
    assert [m["iteration"] for m in lines] == [1, 2]
    assert math.isnan(lines[0]["actor/pg_loss"]) and lines[1]["actor/pg_loss"] == 0.1


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="'gate' must have one number per token"):
        logger.log_samples(1, [{**TEACHER_SAMPLE, "gate": [0.5]}])
    with pytest.raises(ValueError, match="missing required field"):
        logger.log_samples(1, [{"tokens": ["a"]}])
    with pytest.raises(TypeError, match="must be a number"):
        logger.log_metrics(1, {"train/success": "high"})
    with pytest.raises(ValueError, match=">= 0"):
        logger.log_metrics(-1, {})
    logger.close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_metrics(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match="no metrics.jsonl in .*empty: is this a run directory"
    ):
        read_metrics(tmp_path / "empty")


def test_tensors_and_arrays_are_accepted(tmp_path):
    torch = pytest.importorskip("torch")
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_metrics(
            1, {"sdar/gate_mean": torch.tensor(0.25), "actor/kl": torch.tensor([0.5])}
        )
        logger.log_samples(1, [{**PLAIN_SAMPLE, "log_probs": torch.tensor([-0.5, -1.0, -0.25])}])
    (line,) = read_metrics(tmp_path)
    assert line["sdar/gate_mean"] == 0.25 and line["actor/kl"] == 0.5
    assert read_samples(tmp_path)[0]["log_probs"] == [-0.5, -1.0, -0.25]


def test_format_summary_is_one_short_line():
    metrics = {
        "iteration": 12,
        "train/success": 0.625,
        "sdar/gate_mean": 0.61349,
        "timing/rollout_s": 52.06,
        "actor/entropy": 1.0,
    }
    assert format_summary(metrics) == "it 12 | success 0.625 | gate 0.6135 | rollout 52.1s"
    assert format_summary(metrics, keys=["actor/entropy"]) == "it 12 | actor/entropy 1"


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
EVAL_RESULT = {
    "checkpoint": "checkpoints/iter_000010",
    "split": "valid_unseen",
    "success": 0.4375,
    "per_task_type": {"heat": 0.5, "cool": 0.375},
    "metrics": {},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report for all read-only checks (drawing the PNGs is the slow part)."""
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    (run / "eval").mkdir()
    (run / "eval" / "iter_000010-valid_unseen.json").write_text(json.dumps(EVAL_RESULT))
    (run / "eval" / "broken.json").write_text("[1, 2")
    index = write_report(run)
    return index, index.read_text(encoding="utf-8")


def test_report_writes_valid_pngs_per_metric_group(report):
    index, _ = report
    names = sorted(p.name for p in index.parent.glob("*.png"))
    assert names == ["losses.png", "sdar_gate.png", "timings.png", "train.png", "validation.png"]
    for name in names:
        with Image.open(index.parent / name) as image:
            image.verify()
        with Image.open(index.parent / name) as image:
            assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300


def test_summary_table_matches_hand_computation(report):
    index, page = report
    summary = (index.parent / "summary.md").read_text()
    # start = iteration 0, best = iteration 5 (62.5 %), last = iteration 10.
    assert (
        "| val/success (%) | start (it 0) | best (it 5) | last (it 10) | last - start |" in summary
    )
    assert "| overall | 25.0 | 62.5 | 50.0 | +25.0 |" in summary
    assert "| cool | 50.0 | 75.0 | 75.0 | +25.0 |" in summary
    assert "| heat | 0.0 | 50.0 | 25.0 | +25.0 |" in summary
    assert "| train/success | 0.5 |" in summary  # last training iteration 10: 0.1 * 10 / 2
    assert "<td>overall</td><td>25.0</td><td>62.5</td><td>50.0</td><td>+25.0</td>" in page


def test_html_escapes_every_token_and_the_prompt(report):
    _, page = report
    for token in TEACHER_TOKENS + PLAIN_SAMPLE["tokens"]:
        assert f">{html.escape(token)}</span>" in page
    assert "<script>" not in page and "<middle>" not in page
    assert html.escape(TEACHER_SAMPLE["prompt"]) in page
    assert (
        "<img" in page and "data:image/png;base64," in page and "http" not in page
    )  # self-contained


def test_token_colours_follow_the_gate_and_the_gap(report):
    # Gate 0.75 is halfway from white (255, 255, 255) to green (80, 185, 100):
    # (167.5, 220, 177.5) rounded half up = (168, 220, 178) = #a8dcb2. Gate 0.25 is halfway to red
    # (235, 100, 90): (245, 177.5, 172.5) -> (245, 178, 173) = #f5b2ad.
    assert gate_colour(0.75) == "#a8dcb2"
    assert gate_colour(0.25) == "#f5b2ad"
    assert gate_colour(0.5) == "#ffffff"
    assert gate_colour(1.0) == "#50b964" and gate_colour(0.0) == "#eb645a"
    assert gap_colour(1.0) == "#a8dcb2"  # gap +1 nat is half of the 2-nat scale
    assert gap_colour(-5.0) == "#eb645a"  # clipped
    _, page = report
    # Token 2 "heat it & ": gate 0.75, gap -0.8 - (-1.0) = +0.2 -> 0.1 of the way to green.
    span = re.search(
        r'<span class="tok" style="([^"]*)" title="([^"]*)">heat it &amp; </span>', page
    )
    assert span is not None
    assert span.group(1) == f"--d:{gap_colour(0.2)};--g:#a8dcb2"
    # 255 - 0.1 * (175, 70, 155) = (237.5, 248, 239.5) -> (238, 248, 240), rounded half up.
    assert gap_colour(0.2) == "#eef8f0"
    assert span.group(2) == "student lp -1.000 | teacher lp -0.800 | gap +0.200 | gate 0.750"
    # The second rendering: a radio button swaps every token's background from --g to --d.
    assert '<input type="radio" class="radio" name="view" id="view-gap">' in page
    assert "#view-gap:checked ~ main .tok { background: var(--d, transparent); }" in page


def test_sample_without_teacher_is_uncoloured_with_a_note(report):
    _, page = report
    assert 'title="student lp -2.500">use &lt;desklamp 1&gt;</span>' in page
    assert "No teacher for this method" in page
    assert page.count('<section class="sample') == 11


def test_samples_without_a_gate_open_on_the_gap_view():
    # rlsd, skill_sd, opsd_sampled: a teacher, no gate. The page starts on the gap colouring.
    ungated = {key: value for key, value in TEACHER_SAMPLE.items() if key != "gate"}
    page = render_page(
        title="t", table=None, summary_rows=[], evals=[], figures=[], samples=[ungated]
    )
    assert '<input type="radio" class="radio" name="view" id="view-gap" checked>' in page
    assert '<input type="radio" class="radio" name="view" id="view-gate">' in page
    assert "This method has no gate" in page
    span = re.search(
        r'<span class="tok" style="([^"]*)" title="([^"]*)">heat it &amp; </span>', page
    )
    assert span.group(1) == f"--d:{gap_colour(0.2)}"
    assert span.group(2) == "student lp -1.000 | teacher lp -0.800 | gap +0.200"
    gated = render_page(
        title="t",
        table=None,
        summary_rows=[],
        evals=[],
        figures=[],
        samples=[ungated, TEACHER_SAMPLE],
    )
    assert '<input type="radio" class="radio" name="view" id="view-gate" checked>' in gated


def test_endorsement_table_and_sample_selection():
    sample = {
        "tokens": ["a", "b", "a", "b", "a", "b", "c"],
        "log_probs": [-1.0] * 7,
        "teacher_log_probs": [-0.5, -2.0, -0.7, -1.5, -0.6, -1.0, -0.1],
        "gate": [0.9, 0.1, 0.8, 0.2, 0.85, 0.5, 0.99],
    }
    endorsed, rejected = token_endorsement([sample, PLAIN_SAMPLE])
    # "a": gaps 0.5, 0.3, 0.4 -> mean 0.4, gates mean 0.85; "b": gaps -1, -0.5, 0 -> mean -0.5.
    # "c" occurs once: left out.
    assert [(t, n) for t, n, _, _ in endorsed] == [("a", 3)]
    assert endorsed[0][2] == pytest.approx(0.4) and endorsed[0][3] == pytest.approx(0.85)
    assert [(t, n) for t, n, _, _ in rejected] == [("b", 3)] and rejected[0][2] == pytest.approx(
        -0.5
    )
    samples = [{"iteration": i} for i in range(10)]
    assert [s["iteration"] for s in select_samples(samples, 4)] == [0, 3, 6, 9]
    assert len(select_samples(samples, 50)) == 10


def test_report_shows_eval_results(report):
    index, page = report
    assert (
        "<td>iter_000010-valid_unseen.json</td><td>checkpoints/iter_000010</td><td>valid_unseen</td>"
        "<td>43.8</td><td>37.5</td><td>50.0</td>" in page
    )  # per-type columns sorted: cool, heat
    assert "broken.json</td><td colspan='5'>unreadable" in page
    summary = (index.parent / "summary.md").read_text()
    assert (
        "| iter_000010-valid_unseen.json | checkpoints/iter_000010 | valid_unseen | 43.8 % |"
        in summary
    )


def test_page_limits_the_samples_shown(run_dir):
    samples = read_samples(run_dir)
    page = render_page(
        title="t", table=None, summary_rows=[], evals=[], figures=[], samples=samples, max_samples=3
    )
    assert page.count('<section class="sample') == 3 and "Showing 3 of 11" in page


def test_report_of_a_run_without_validation_or_samples(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_metrics(1, {"train/success": 0.5, "custom/thing": 2.0})
    page = write_report(tmp_path).read_text()
    assert "No validation success was logged" in page and "No samples were logged" in page
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["other.png", "train.png"]


# ---------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------
def make_seed_run(path, method: str, seed: int, val_curve: list[float], lam: float = 0.01):
    """A run with validation every iteration 0..len-1 and the config of one (method, seed)."""
    with RunLogger(path, tensorboard=False) as logger:
        for it, value in enumerate(val_curve):
            logger.log_metrics(it, {"val/success": value, "train/success": value / 2})
    preset = {"sdar": lam, "grpo": 0.0}[method]
    config = {
        "seed": seed,
        "output_dir": str(path),
        "loss": {"method": method, "lam": preset},
        "eval": {"seed": 100000},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def seed_runs(tmp_path):
    curves = {
        ("sdar", 0): [0.2, 0.7, 0.6],
        ("sdar", 1): [0.3, 0.6, 0.7],
        ("sdar", 2): [0.1, 0.9, 0.8],
        ("grpo", 0): [0.2, 0.4, 0.5],
        ("grpo", 1): [0.3, 0.6, 0.5],
        ("grpo", 2): [0.1, 0.8, 0.8],
    }
    return [make_seed_run(tmp_path / f"{m}-s{s}", m, s, c) for (m, s), c in curves.items()]


def test_aggregate_mean_and_sample_std_per_method(seed_runs):
    result = aggregate_runs(seed_runs)
    assert list(result["groups"]) == [
        "sdar",
        "grpo",
    ]  # loss.lam is the method's preset: not in the label
    sdar, grpo = result["groups"]["sdar"], result["groups"]["grpo"]
    assert sdar["n"] == 3 and sdar["seeds"] == [0, 1, 2]
    # sdar final [0.6, 0.7, 0.8]: mean 0.7, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1.
    assert sdar["final"]["mean"] == pytest.approx(0.7) and sdar["final"]["std"] == pytest.approx(
        0.1
    )
    # sdar best [0.7, 0.7, 0.9]: mean 2.3 / 3,
    # std sqrt(((-1/15)^2 * 2 + (2/15)^2) / 2) = sqrt(0.04 / 3).
    assert sdar["best"]["mean"] == pytest.approx(2.3 / 3)
    assert sdar["best"]["std"] == pytest.approx(math.sqrt(0.04 / 3))
    # grpo final [0.5, 0.5, 0.8]: mean 0.6, std sqrt((0.01 + 0.01 + 0.04) / 2) = sqrt(0.03).
    assert grpo["final"]["mean"] == pytest.approx(0.6) and grpo["final"]["std"] == pytest.approx(
        math.sqrt(0.03)
    )
    assert grpo["start"]["mean"] == pytest.approx(0.2) and grpo["start"]["std"] == pytest.approx(
        0.1
    )
    table = format_aggregate_table(result)
    assert "| sdar | 3 | 0, 1, 2 | 20.0 +- 10.0 | 70.0 +- 10.0 | 76.7 +- 11.5 |" in table
    assert "| grpo | 3 | 0, 1, 2 | 20.0 +- 10.0 | 60.0 +- 17.3 | 63.3 +- 15.3 |" in table


def test_aggregate_single_run_has_no_std_and_min_mode(seed_runs):
    result = aggregate_runs(seed_runs[:1], key="train/success", mode="min")
    group = result["groups"]["all runs"]
    assert group["final"] == {"values": [0.3], "mean": 0.3, "std": None}
    assert group["best"]["mean"] == pytest.approx(0.1)  # min of [0.1, 0.35, 0.3]
    assert "| all runs | 1 | 0 | 10.0 | 30.0 | 10.0 |" in format_aggregate_table(result)


def test_grouping_by_ablation_and_explicit_keys(tmp_path, seed_runs):
    ablation = make_seed_run(tmp_path / "sdar-lam0.1", "sdar", 0, [0.1, 0.2], lam=0.1)
    # lam differs between methods (a preset) and within sdar (an ablation): only the latter is
    # named.
    groups = group_runs(seed_runs + [ablation])
    assert {k: len(v) for k, v in groups.items()} == {
        "sdar (loss.lam=0.01)": 3,
        "grpo (loss.lam=0.0)": 3,
        "sdar (loss.lam=0.1)": 1,
    }
    assert group_runs(seed_runs[:3] + [ablation]).keys() == {"loss.lam=0.01", "loss.lam=0.1"}
    groups = group_runs(seed_runs + [ablation], group_by=["loss.method"])
    assert {k: len(v) for k, v in groups.items()} == {"loss.method=sdar": 4, "loss.method=grpo": 3}
    with pytest.raises(KeyError, match="no config key"):
        group_runs(seed_runs, group_by=["loss.nothing"])
    # a seed written after the config gained the warm start's sft section (which sdar train does
    # not read) still joins its method's group
    later = make_seed_run(tmp_path / "sdar-later", "sdar", 3, [0.1, 0.2])
    config = yaml.safe_load((later / "config.yaml").read_text())
    (later / "config.yaml").write_text(yaml.safe_dump({**config, "sft": {"epochs": 2, "lr": 1e-4}}))
    assert {k: len(v) for k, v in group_runs(seed_runs + [later]).items()} == {"sdar": 4, "grpo": 3}
    with pytest.raises(ValueError, match="never logged 'val/gone'"):
        aggregate_runs(seed_runs, key="val/gone")


def test_learning_curves_mean_std_and_aggregate_report(tmp_path, seed_runs):
    curves = mean_std_curves(seed_runs, "val/success")
    iterations, means, stds = curves["sdar"]
    assert iterations == [0, 1, 2]
    assert means == pytest.approx([0.2, 2.2 / 3, 0.7])
    assert stds == pytest.approx(
        [
            0.1,
            math.sqrt(((0.7 - 2.2 / 3) ** 2 + (0.6 - 2.2 / 3) ** 2 + (0.9 - 2.2 / 3) ** 2) / 2),
            0.1,
        ]
    )
    path = write_aggregate_report(seed_runs, tmp_path / "agg", keys=["val/success", "val/missing"])
    text = path.read_text()
    assert "| sdar | 3 | 0, 1, 2 | 20.0 +- 10.0 | 70.0 +- 10.0 |" in text
    assert "Not aggregated: run" in text
    with Image.open(tmp_path / "agg" / "curves_val_success.png") as image:
        image.verify()
    saved = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert saved["val/success"]["groups"]["grpo"]["final"]["values"] == [0.5, 0.5, 0.8]


def test_report_command_for_several_runs(tmp_path, seed_runs, capsys):
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args([str(p) for p in seed_runs[:2]] + ["--max-samples", "5"])
    assert report_command(args) == 0
    assert (seed_runs[0] / "report" / "index.html").is_file()
    assert (tmp_path / "aggregate" / "aggregate.md").is_file()
    assert "| all runs | 2 | 0, 1 |" in capsys.readouterr().out

"""The trainer end to end on the toy environment with a tiny randomly initialised model.

What a user would notice: the run directory has the promised files and metrics, a resumed run is
identical to an uninterrupted one, garbage output trains without crashing, a NaN never reaches the
weights, Ctrl-C leaves a resumable checkpoint, and the CLI does all of it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, write_run_config

from sdar.losses import gap_gate
from sdar.trainer.checkpoint import latest_checkpoint
from sdar.trainer.config import load_config
from sdar.trainer.trainer import Trainer, task_seeds


def make_config(tmp_path: Path, overrides: list[str] | None = None, **top):
    path = write_run_config(tmp_path / "config.yaml", **top)
    return load_config(path, overrides), path


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_sdar_run_writes_metrics_samples_and_checkpoints(tmp_path):
    config, _ = make_config(tmp_path)
    run = tmp_path / "run"
    trainer = Trainer(config, run)
    before = weights(trainer.model)
    trainer.train()
    after = weights(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the update changed nothing"

    lines = read_jsonl(run / "metrics.jsonl")
    assert [m["iteration"] for m in lines] == [0, 1, 2]
    train_line = lines[1]
    for key in ("sdar/gate_mean", "sdar/gate_active_ratio", "sdar/teacher_gap_mean", "sdar/loss",
                "train/success", "train/reward_mean", "train/episode_length", "train/invalid_action_rate",
                "teacher/truncated", "timing/rollout_s", "timing/update_s", "actor/grad_norm", "val/success"):
        assert key in train_line, key
    assert 0.0 < train_line["sdar/gate_mean"] < 1.0
    assert "val/success" in lines[0] and "sdar/gate_mean" not in lines[0]
    assert (run / "config.yaml").is_file()
    assert load_config(run / "config.yaml") == config
    assert any((run / "tensorboard").iterdir())
    samples = read_jsonl(run / "samples.jsonl")
    assert samples and all(len(s["tokens"]) == len(s["gate"]) == len(s["teacher_log_probs"]) for s in samples)
    assert samples[0]["skill_files"][0] == "toy/general.md"
    used = read_jsonl(run / "skills_used.jsonl")
    assert set(used[0]["files"]) <= {"toy/general.md", "toy/low.md", "toy/high.md"}
    assert latest_checkpoint(run).name == "iter_000002"


def test_resume_equals_uninterrupted_run(tmp_path):
    config, _ = make_config(tmp_path, ["eval.every=0", "eval.before_training=false"])
    full = Trainer(config, tmp_path / "full")
    full.train()
    expected = weights(full.model)

    first, _ = make_config(tmp_path, ["eval.every=0", "eval.before_training=false", "iterations=1"])
    Trainer(first, tmp_path / "split").train()
    resumed = Trainer(config, tmp_path / "split", resume=True)
    assert resumed.start_iteration == 2
    resumed.train()
    got = weights(resumed.model)
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    a = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert [m["iteration"] for m in b] == [1, 2]
    assert a[-1]["train/success"] == b[-1]["train/success"]
    assert a[-1]["sdar/loss"] == pytest.approx(b[-1]["sdar/loss"], abs=0, rel=0)


def test_one_step_update_reuses_its_own_log_probs_as_old(tmp_path, monkeypatch):
    # one optimizer step over all step samples: the old log-probs come from the update's forward
    # pass; the parameters equal those of a run that scores them in a separate pass first
    import sdar.trainer.trainer as trainer_module

    overrides = ["eval.every=0", "eval.before_training=false", "iterations=1", "optim.mini_batch_size=64"]
    config, _ = make_config(tmp_path, overrides)
    assert trainer_module.reuses_update_log_probs(config.optim, 12)
    assert not trainer_module.reuses_update_log_probs(config.optim, 65)
    scored = []
    real_score = Trainer._score
    monkeypatch.setattr(Trainer, "_score", lambda self, *a, **k: scored.append(1) or real_score(self, *a, **k))
    reused = Trainer(config, tmp_path / "reused")
    reused.train()
    assert len(scored) == 1, "the reference pass only (KL term), no separate old log-prob pass"
    records = read_jsonl(tmp_path / "reused" / "samples.jsonl")
    assert records and all(len(r["log_probs"]) == len(r["tokens"]) == len(r["gate"]) for r in records)
    assert all(lp <= 0.0 for r in records for lp in r["log_probs"])

    monkeypatch.setattr(trainer_module, "reuses_update_log_probs", lambda optim, total: False)
    rescored = Trainer(config, tmp_path / "rescored")
    rescored.train()
    assert len(scored) == 3, "reference and old log-prob passes"
    a, b = weights(reused.model), weights(rescored.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    line_a = read_jsonl(tmp_path / "reused" / "metrics.jsonl")[-1]
    line_b = read_jsonl(tmp_path / "rescored" / "metrics.jsonl")[-1]
    assert line_a["sdar/loss"] == pytest.approx(line_b["sdar/loss"], rel=1e-4, abs=1e-6)


ONE_ITERATION = ["eval.every=0", "eval.before_training=false", "iterations=1", "log_samples=64"]


@pytest.mark.parametrize("gate", ["gap", "soft_or"])
def test_samples_carry_the_gate_of_the_loss(tmp_path, gate):
    # One optimizer step over all step samples, every step sample logged: the loss's gate is then
    # that of the rollout-time weights, so the logged gates' token mean and share above 0.5 are
    # the update's sdar/gate_mean and sdar/gate_active_ratio (token-weighted over micro-batches).
    config, _ = make_config(tmp_path, [*ONE_ITERATION, f"loss.gate={gate}", "optim.mini_batch_size=64"])
    Trainer(config, tmp_path / "run").train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert line["actor/optimizer_steps"] == 1  # log_samples=64 logs every step sample
    gates = [g for r in records for g in r["gate"]]
    assert sum(gates) / len(gates) == pytest.approx(line["sdar/gate_mean"], rel=1e-6, abs=0)
    assert sum(g > 0.5 for g in gates) / len(gates) == pytest.approx(line["sdar/gate_active_ratio"])
    gap_gates = [g for r in records for g in gap_gate(torch.tensor(r["log_probs"]),
                                                      torch.tensor(r["teacher_log_probs"])).tolist()]
    if gate == "gap":
        assert gates == pytest.approx(gap_gates, rel=1e-6, abs=0)
    else:  # soft-OR >= gap gate, and the entropy gate opens it further somewhere
        assert all(g >= p - 1e-6 for g, p in zip(gates, gap_gates))
        assert max(g - p for g, p in zip(gates, gap_gates)) > 1e-3


def test_gate_actions_sum_the_gate_and_gap_per_action_as_logged_token_by_token(tmp_path):
    # every step sample logged (one optimizer step): gate_actions.jsonl is then the per-action
    # regrouping of samples.jsonl's gates and gaps, recomputed here by hand. A scripted policy
    # answers with one of three actions (one of them unparsable: action "")
    config, _ = make_config(tmp_path, [*ONE_ITERATION, "optim.mini_batch_size=64"])
    trainer = Trainer(config, tmp_path / "run")
    answers = itertools.cycle(["<action>increment</action>", "hm", "<action>submit</action>"])

    def scripted(prompt_ids):
        return [trainer.tokenizer.encode(next(answers), add_special_tokens=False) for _ in prompt_ids]

    trainer._generate_fn = lambda gen_config, generator: scripted
    trainer.train()
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    (line,) = read_jsonl(tmp_path / "run" / "gate_actions.jsonl")
    by_action: dict[str, list] = {}
    for r in records:
        acc = by_action.setdefault(r["action"], [0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += len(r["gate"])
        acc[2] += sum(r["gate"])
        acc[3] += sum(t - s for t, s in zip(r["teacher_log_probs"], r["log_probs"]))
    tokens = sum(v[1] for v in by_action.values())
    mean = sum(v[2] for v in by_action.values()) / tokens
    assert line["iteration"] == 1 and line["tokens"] == tokens and line["gate_mean"] == pytest.approx(mean)
    assert line["distinct_actions"] == len(by_action) == len(line["actions"]) == 3 and "" in by_action
    for row in line["actions"]:
        n, t, g, gap = by_action[row["action"]]
        assert (row["step_samples"], row["tokens"]) == (n, t)
        assert row["gate"] == pytest.approx(g / t) and row["gap"] == pytest.approx(gap / t, abs=1e-6)
        assert row["push"] == pytest.approx(g - mean * t, abs=1e-6)
    pushes = [row["push"] for row in line["actions"]]
    assert pushes == sorted(pushes, reverse=True) and sum(pushes) == pytest.approx(0.0, abs=1e-6)
    # a method with a teacher and no gate writes none, and says so on a rank without step samples too
    rlsd, _ = make_config(tmp_path, [*ONE_ITERATION, "method=rlsd"])
    trainer = Trainer(rlsd, tmp_path / "rlsd")
    trainer.train()
    assert not (tmp_path / "rlsd" / "gate_actions.jsonl").exists()
    from sdar.trainer.teacher import TeacherScores
    from sdar.trainer.trainer import RolloutLogProbs

    empty = RolloutLogProbs(old_log_probs=[], ref_log_probs=None, old_entropy=None,
                            teacher=TeacherScores(log_probs=[], entropy=None, skill_files=[], truncated=0,
                                                  history_dropped=0, distinct_skill_texts=0, has_context=[]))
    assert trainer.sample_gates([], empty) is None


def test_gate_actions_record_keeps_both_ends_and_counts_every_action_over_ranks():
    from sdar.trainer.trainer import gate_actions_record

    # two ranks; action "a" on both: [step samples, tokens, gate sum, gap sum]
    parts = [{"a": [1, 4, 3.0, 0.4], "b": [1, 2, 0.0, -0.2]}, {"a": [1, 2, 1.0, 0.2], "c": [2, 2, 1.0, 0.0]}]
    record = gate_actions_record(parts, kept=1)
    # gate mean 5 / 10; push a = 4 - 0.5 * 6 = 1, c = 1 - 1 = 0, b = 0 - 1 = -1
    assert record["gate_mean"] == 0.5 and record["tokens"] == 10 and record["distinct_actions"] == 3
    assert [(r["action"], r["push"]) for r in record["actions"]] == [("a", 1.0), ("b", -1.0)]  # c left out
    assert record["actions"][0] == {"action": "a", "step_samples": 2, "tokens": 6, "gate": 4 / 6,
                                    "gap": pytest.approx(0.1), "push": 1.0}
    assert [r["action"] for r in gate_actions_record(parts, kept=2)["actions"]] == ["a", "c", "b"]
    assert gate_actions_record([{}, {}]) is None


def test_gate_action_sums_leave_out_skipped_steps_non_finite_values_and_undistilled_samples():
    from types import SimpleNamespace

    from sdar.trainer.trainer import gate_action_sums

    samples = [SimpleNamespace(action=a, response_ids=[1, 2]) for a in ("a", "a", "b", "c", "d")]
    gates = [torch.tensor([0.5, 0.7]), torch.tensor([0.2, 0.2]), torch.tensor([float("nan"), 0.5]),
             torch.tensor([0.5, 0.5]), torch.tensor([0.0, 0.0])]
    old = [torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([]),
           torch.tensor([-1.0, -1.0])]
    teacher = [torch.tensor([-0.5, -2.0]), torch.tensor([-1.5, -1.0]), torch.tensor([-1.0, -1.0]),
               torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0])]
    # b: a NaN gate; c: no old log-probs (its step was skipped); d: left out of the term
    sums = gate_action_sums(samples, gates, teacher, old, distilled=[True, True, True, True, False])
    assert sums == {"a": [2, 4, pytest.approx(1.6), pytest.approx(0.0)]}
    assert set(gate_action_sums(samples, gates, teacher, old)) == {"a", "d"}


def test_entropy_gate_samples_with_a_separate_old_log_prob_pass(tmp_path):
    # two optimizer steps: the old log-probs and entropies come from their own scoring pass
    config, _ = make_config(tmp_path, [*ONE_ITERATION, "loss.gate=entropy", "optim.mini_batch_size=3"])
    Trainer(config, tmp_path / "run").train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["actor/optimizer_steps"] > 1
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert records and all(len(r["gate"]) == len(r["tokens"]) for r in records)
    assert all(0.0 < g < 1.0 for r in records for g in r["gate"])


@pytest.mark.parametrize("method", ["rlsd", "opsd_sampled"])
def test_samples_of_a_method_without_a_gate_carry_none(tmp_path, method):
    config, _ = make_config(tmp_path, [*ONE_ITERATION, f"method={method}"])
    Trainer(config, tmp_path / "run").train()
    records = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert records and all(len(r["teacher_log_probs"]) == len(r["tokens"]) for r in records)
    assert all("gate" not in r for r in records)
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert not any(key.startswith("teacher/gate_") for key in line)


@pytest.mark.parametrize("method", ["grpo", "sdar"])
def test_one_update_climbs_the_advantage_weighted_log_likelihood(tmp_path, method):
    # The direction of the whole update path (advantages, PPO loss, token weighting, optimizer):
    # with only the policy-gradient term acting (no KL, entropy or distillation), one small step
    # must raise J = sum_i A_i * log p(response_i | prompt_i) over the step samples, to first order
    # by lr * |grad J|_1 under Adam's first step. A sign error anywhere lowers it.
    from test_distributed import scripted_samples

    overrides = [f"method={method}", "loss.c_kl=0", "loss.c_ent=0", "loss.sdar_lambda=0",
                 "optim.lr=1e-4", "optim.mini_batch_size=64", "optim.micro_batch_size=3"]
    config, _ = make_config(tmp_path, overrides)
    trainer = Trainer(config, tmp_path / "run")
    samples = scripted_samples(trainer)
    advantages = trainer.compute_advantages(samples)
    assert (advantages > 0).any() and (advantages < 0).any()

    def objective() -> float:
        log_probs, _ = trainer._score(trainer.model, samples)
        return sum(float(a) * float(lp.double().sum()) for a, lp in zip(advantages, log_probs))

    before = objective()
    trainer.learn(1, samples)
    after = objective()
    assert after > before + 1e-4, (before, after)


def _scored_by_hand(model, prompt_ids, response_ids, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) of each response token, from one plain forward pass."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double() / temperature
    log_probs = torch.log_softmax(logits[len(prompt_ids) - 1: -1], dim=-1)
    return log_probs.gather(1, torch.tensor(response_ids).unsqueeze(1)).squeeze(1).float()


@pytest.mark.parametrize("switch", [False, True])
def test_log_probs_are_scored_at_the_rollout_temperature_only_with_the_switch(tmp_path, monkeypatch, switch):
    # Rollouts sample at T = 0.5. rollout.score_at_temperature: the old, reference and teacher
    # log-probs are log_softmax(logits / T) (verl); without it, log_softmax(logits). The update
    # scores the same way: the first optimizer step's PPO ratio is 1 (a mismatch would clip).
    from test_distributed import scripted_samples

    import sdar.trainer.trainer as trainer_module
    from sdar.trainer.teacher import teacher_contexts

    monkeypatch.setattr(trainer_module, "reuses_update_log_probs", lambda optim, total: False)  # own old pass
    config, _ = make_config(tmp_path, ["rollout.generation.temperature=0.5", "optim.mini_batch_size=64",
                                       f"rollout.score_at_temperature={str(switch).lower()}"])
    trainer = Trainer(config, tmp_path / "run")
    assert "ref_log_probs" in trainer.needs and "teacher_log_probs" in trainer.needs
    samples = scripted_samples(trainer)
    trainer._sibling_pool = None
    rollout_lp = trainer._rollout_log_probs(1, samples, len(samples), {})
    temperature = 0.5 if switch else 1.0
    contexts = teacher_contexts(config.teacher.context, trainer.train_prompts, samples)
    for i, (s, context) in enumerate(zip(samples, contexts)):
        want = _scored_by_hand(trainer.model, s.prompt_ids, s.response_ids, temperature)
        torch.testing.assert_close(rollout_lp.old_log_probs[i], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rollout_lp.ref_log_probs[i], want, rtol=1e-4, atol=1e-5)  # the reference = policy
        teacher_prompt = trainer.train_prompts.build(s.state, s.history, config.teacher.max_prompt_tokens,
                                                     with_skills=True, on_overflow=config.teacher.on_overflow,
                                                     context=context)
        torch.testing.assert_close(rollout_lp.teacher.log_probs[i],
                                   _scored_by_hand(trainer.model, teacher_prompt.ids, s.response_ids, temperature),
                                   rtol=1e-4, atol=1e-5)
        if i == 0:  # the logits a JSD loss reads (the teacher's, row 0)
            ids = torch.tensor([teacher_prompt.ids + list(s.response_ids)])
            with torch.no_grad():
                logits = trainer.model(input_ids=ids).logits[0, len(teacher_prompt.ids) - 1: -1] / temperature
            torch.testing.assert_close(trainer._teacher_logits(samples[:1])[0], logits, rtol=1e-4, atol=1e-4)
    other = _scored_by_hand(trainer.model, samples[0].prompt_ids, samples[0].response_ids, 1.5 - temperature)
    assert not torch.allclose(rollout_lp.old_log_probs[0], other, atol=1e-3)  # the temperature matters here
    line = trainer.update(1, samples, trainer.compute_advantages(samples), rollout_lp)
    assert line["actor/optimizer_steps"] == 1
    assert line["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6) and line["actor/pg_clipfrac"] == 0.0


def test_all_invalid_actions_still_train(tmp_path):
    # a random model never writes the action tag: every action is invalid, scores all -penalty
    config, _ = make_config(tmp_path, ["method=grpo", "eval.every=0", "eval.before_training=false",
                                       "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["train/invalid_action_rate"] == 1.0
    assert line["train/success"] == 0.0
    # zero-variance groups: zero advantages, finite losses
    assert line["train/advantage_abs_mean"] == 0.0
    assert line["actor/optimizer_steps"] >= 1 and line["actor/skipped_updates"] == 0


@pytest.mark.parametrize("c_ent", [0.0, 0.001])
def test_an_iteration_without_advantage_signal_moves_the_policy_only_through_the_entropy_bonus(tmp_path, c_ent):
    # Every action is invalid, so every group's returns are equal and every advantage is 0. With no
    # entropy bonus, KL term or weight decay the gradient is exactly 0 and the weights stay put;
    # with the default bonus of 0.001 they move: AdamW scales a tiny gradient up to a step of about
    # the learning rate. The entropy is logged either way.
    config, _ = make_config(tmp_path, ["method=grpo", "eval.every=0", "eval.before_training=false", "iterations=1",
                                       "loss.c_kl=0", f"loss.c_ent={c_ent}", "optim.weight_decay=0",
                                       "optim.lr=1e-3"])
    trainer = Trainer(config, tmp_path / "run")
    before = weights(trainer.model)
    trainer.train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["train/advantage_abs_mean"] == 0.0 and line["actor/optimizer_steps"] >= 1
    assert math.isfinite(line["actor/entropy"]) and line["actor/entropy"] > 0
    moved = max(float((weights(trainer.model)[k] - v).abs().max()) for k, v in before.items())
    if c_ent == 0.0:
        assert moved == 0.0
    else:
        assert moved > 1e-4  # about lr per Adam step, whatever the bonus's size


def _returns_by_group(episodes) -> dict[int, list[float]]:
    groups: dict[int, list[float]] = {}
    for e in episodes:
        groups.setdefault(e.group_id, []).append(e.episode_return)
    return groups


def test_filter_groups_trains_only_groups_with_a_return_spread_and_plays_new_tasks_until_full(tmp_path):
    # DAPO's dynamic sampling on the counter env, with a scripted policy that submits or increments
    # at random, so some groups hold wins and losses and others only losses (target 4 cannot be
    # reached in 3 steps)
    tasks, group = 3, 4
    config, _ = make_config(tmp_path, ["method=grpo", "rollout.filter_groups=true", "rollout.max_rollout_batches=20",
                                       f"rollout.tasks_per_iteration={tasks}", f"rollout.group_size={group}",
                                       "eval.every=0", "eval.before_training=false", "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    rng = random.Random(3)

    def scripted(prompt_ids):
        return [trainer.tokenizer.encode(f"<action>{rng.choice(['increment', 'submit'])}</action>",
                                         add_special_tokens=False) for _ in prompt_ids]

    trainer._generate_fn = lambda gen_config, generator: scripted
    rollout = trainer.collect(1)
    assert 2 <= rollout.batches < 20  # not full after one batch, full before the last allowed one
    kept, dropped = _returns_by_group(rollout.episodes), _returns_by_group(rollout.dropped_episodes)
    assert all(len(set(r)) > 1 for r in kept.values()) and all(len(set(r)) == 1 for r in dropped.values())
    assert all(len(r) == group for r in [*kept.values(), *dropped.values()])
    assert set(kept) | set(dropped) == set(range(rollout.batches * tasks)) and not set(kept) & set(dropped)
    # it stopped as soon as B x G episodes were kept; only kept groups' step samples remain
    assert len(rollout.episodes) >= tasks * group > len(rollout.episodes) - group * sum(
        g >= (rollout.batches - 1) * tasks for g in kept)
    assert {s.group_id for s in rollout.samples} == set(kept)
    traj_ids = [e.traj_id for e in [*rollout.episodes, *rollout.dropped_episodes]]
    assert sorted(traj_ids) == list(range(rollout.batches * tasks * group))
    # batch b plays the tasks of task_seeds(..., b); batch 0 the tasks the iteration plays without the filter
    for b in range(rollout.batches):
        targets = [seed % 4 + 1 for seed in task_seeds(config.seed, 1, tasks, trainer.train_env.num_tasks(), b)]
        played = {e.group_id: e.task.task_id for e in [*rollout.episodes, *rollout.dropped_episodes]}
        assert [played[b * tasks + j] for j in range(tasks)] == [f"train-{t}" for t in targets]
    assert task_seeds(config.seed, 1, 8, None, 1) != task_seeds(config.seed, 1, 8, None)
    # the iteration plays the same (the script replayed), trains on the kept groups only and counts
    # every episode played in its metrics
    rng.seed(3)
    trainer.train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["train/rollout_batches"] == rollout.batches
    assert line["train/episodes"] == rollout.batches * tasks * group
    assert line["train/episodes_kept"] == len(rollout.episodes) and line["train/groups_with_signal"] == 1.0
    assert line["train/success"] == sum(e.won for e in [*rollout.episodes, *rollout.dropped_episodes]) / (
        rollout.batches * tasks * group)
    assert line["actor/optimizer_steps"] >= 1


def test_filter_groups_keeps_the_last_allowed_batch_whole(tmp_path):
    # the untrained tiny model never acts validly: no group has a spread, so every batch but the
    # last allowed one is dropped and the last one is trained on as it is
    tasks, group = 2, 2
    config, _ = make_config(tmp_path, ["method=grpo", "rollout.filter_groups=true", "rollout.max_rollout_batches=3",
                                       "eval.every=0", "eval.before_training=false", "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["train/rollout_batches"] == 3 and line["train/episodes"] == 3 * tasks * group
    assert line["train/episodes_kept"] == tasks * group and line["train/groups_with_signal"] == 0.0


def test_nan_loss_skips_the_update(tmp_path, caplog):
    config, _ = make_config(tmp_path, ["eval.every=0", "eval.before_training=false", "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    head = trainer.model.get_output_embeddings()
    # the model emits NaN logits in training mode only (rollout and scoring run in eval mode)
    head.register_forward_hook(lambda module, inputs, output: output * float("nan") if module.training else output)
    before = weights(trainer.model)
    with caplog.at_level("WARNING"):
        trainer.train()
    for k, v in weights(trainer.model).items():
        assert torch.equal(before[k], v), k
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert line["actor/skipped_updates"] >= 1 and line["actor/optimizer_steps"] == 0
    assert "non-finite" in caplog.text


def test_lora_reference_is_the_adapter_free_model(tmp_path):
    config, _ = make_config(tmp_path, ["model.lora={r: 4}", "eval.every=0", "eval.before_training=false",
                                       "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.reference is None  # no second copy of the weights
    trainer.train()
    line = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert "actor/kl" in line


def test_full_fine_tuning_reference_equals_the_policy_at_start_under_bf16_autocast(tmp_path):
    from sdar.models.loading import autocast_context
    from sdar.models.scoring import score_responses

    config, _ = make_config(tmp_path, ["model.autocast=bf16", "model.lora=null"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.reference is not None
    prompts, responses = [[5, 6, 7, 8]], [[9, 10, 11]]
    with torch.no_grad(), autocast_context(config.model, "cpu"):
        policy, reference = (score_responses(m, prompts, responses, pad_id=trainer.pad_id).log_probs
                             for m in (trainer.model, trainer.reference))
    assert torch.equal(policy, reference)  # the KL term starts at 0


@pytest.mark.slow
def test_cli_train_eval_report_and_ctrl_c(tmp_path):
    _, path = make_config(tmp_path, iterations=2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = tmp_path / "cli-run"
    cmd = [sys.executable, "-m", "sdar.cli", "train", "--config", str(path), "--output-dir", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation success" in done.stdout
    assert (run / "report" / "index.html").is_file()
    ev = subprocess.run([sys.executable, "-m", "sdar.cli", "eval", str(run)], capture_output=True, text=True,
                        env=env, timeout=600, check=False)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads((run / "eval" / "iter_000002-val.json").read_text())
    assert 0.0 <= result["success"] <= 1.0 and set(result["per_task_type"]) <= {"low", "high"}
    # the untrained model with overrides: the first KEY=VALUE is an override, not a run directory
    out = tmp_path / "untrained.json"
    ev = subprocess.run([sys.executable, "-m", "sdar.cli", "eval", "--config", str(path), "eval.num_tasks=1",
                         "--output", str(out)], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert ev.returncode == 0, ev.stderr[-3000:]
    untrained = json.loads(out.read_text())
    assert untrained["checkpoint"] is None and untrained["num_tasks"] == 1

    # Ctrl-C during a long run leaves a resumable checkpoint
    slow = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "sdar.cli", "train", "--config", str(path), "--output-dir", str(slow),
           "iterations=50", "save_every=100", "eval.every=0", "eval.before_training=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = slow / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    ckpt = latest_checkpoint(slow)
    assert ckpt is not None and "resume with" in err
    resumed = subprocess.run([sys.executable, "-m", "sdar.cli", "train", "--resume", str(slow),
                              f"iterations={int(ckpt.name.split('_')[1]) + 1}", "--no-report"],
                             capture_output=True, text=True, env=env, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = read_jsonl(metrics)
    assert [m["iteration"] for m in lines] == list(range(1, len(lines) + 1))


def test_vllm_engine_without_a_gpu_fails_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the vLLM path is tested in tests/test_vllm_generation.py")
    config, _ = make_config(tmp_path, ["rollout.engine=vllm", "iterations=1"])
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):  # before any model path is resolved
        Trainer(config, tmp_path / "run")
    with pytest.raises(Exception, match="transformers"):
        make_config(tmp_path, ["rollout.engine=sglang"])


def test_validation_panel_samples_from_its_seed_and_another_pass_from_its_own(tmp_path):
    """The panel's sampler starts from eval.seed (what training's validation and `sdar eval` pass 1
    use) unless a pass names its own seed; the tasks stay the panel's either way."""
    from sdar.models.generation import generate
    from sdar.trainer.evaluation import run_panel

    class RecordingSampler:  # the transformers path, recording which generator state it sampled from
        def __init__(self):
            self.seeds = []

        def generate(self, model, tokenizer, prompt_ids, gen, generator, batch_size):
            self.seeds.append(generator.initial_seed())
            return generate(model, tokenizer, prompt_ids, gen, generator=generator, batch_size=batch_size)

    config, _ = make_config(tmp_path, ["eval.num_tasks=2", "eval.seed=500"])
    trainer = Trainer(config, tmp_path / "run")
    panel = {"model": trainer.model, "tokenizer": trainer.tokenizer, "env": trainer.val_env,
             "builder": trainer.val_prompts, "config": config, "history_length": trainer.history_length,
             "progress": False}
    first, again, other = RecordingSampler(), RecordingSampler(), RecordingSampler()
    assert run_panel(**panel, engine=first) == run_panel(**panel, engine=again, sample_seed=500)
    run_panel(**panel, engine=other, sample_seed=501)
    assert set(first.seeds) == set(again.seeds) == {500} and set(other.seeds) == {501}
    assert first.seeds and other.seeds


def test_an_iteration_without_signal_after_one_with_still_moves_the_policy_by_adam_momentum(tmp_path, monkeypatch):
    # The zero-signal test above starts from a fresh optimizer. In a run, AdamW's moments from the
    # iterations that had a signal keep stepping the weights in an iteration whose advantages are
    # all 0 (as in verl, which steps the optimizer whatever the gradient): the step is about
    # lr * m / sqrt(v), shrinking as m decays. Measured here on the same step samples.
    from test_distributed import scripted_samples

    import sdar.trainer.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "reuses_update_log_probs", lambda optim, total: False)
    config, _ = make_config(tmp_path, ["method=grpo", "loss.c_kl=0", "loss.c_ent=0", "optim.weight_decay=0",
                                       "optim.lr=1e-3", "optim.mini_batch_size=64"])
    trainer = Trainer(config, tmp_path / "run")
    samples = scripted_samples(trainer)
    signal = trainer.compute_advantages(samples)
    assert signal.abs().sum() > 0
    trainer.update(1, samples, signal, trainer._rollout_log_probs(1, samples, len(samples), {}))
    before = weights(trainer.model)
    line = trainer.update(2, samples, torch.zeros_like(signal), trainer._rollout_log_probs(2, samples, len(samples), {}))
    assert line["actor/optimizer_steps"] == 1 and line["actor/pg_loss"] == 0.0
    moved = max(float((weights(trainer.model)[k] - v).abs().max()) for k, v in before.items())
    # Adam's second step with a zero gradient: m = 0.9 m1, v = 0.999 v1, bias corrections of step 2;
    # per weight |update| = lr * 0.9 |m1| / (1 - 0.81) / (sqrt(0.999 v1 / (1 - 0.998001)) + eps),
    # with m1 = 0.1 g1 and v1 = 0.001 g1^2 after a first step: 0.67 lr where |g1| dwarfs eps
    assert moved == pytest.approx(1e-3 * (0.09 / 0.19) / math.sqrt(0.000999 / 0.001999), rel=0.01), moved

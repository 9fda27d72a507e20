"""GRPO, GiGPO and RLSD advantages against hand computation and plain-Python loops."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from sdar.advantages import (
    discounted_returns,
    gigpo_advantages,
    grpo_advantages,
    per_token_advantages,
    rlsd_advantages,
    rlsd_mix,
)


def grpo_loop(scores, groups, trajs, cross_steps=True, norm_by_std=True, eps=1e-6):
    """Reference: group statistics with the statistics module (stdev is Bessel-corrected)."""
    values: dict[object, list[float]] = {}
    seen = set()
    for s, g, t in zip(scores, groups, trajs):
        if cross_steps or (g, t) not in seen:
            values.setdefault(g, []).append(s)
            seen.add((g, t))
    out = []
    for s, g in zip(scores, groups):
        vals = values[g]
        if len(vals) < 2 or len(set(vals)) == 1:
            out.append(0.0)
            continue
        centred = s - statistics.fmean(vals)
        out.append(centred / (statistics.stdev(vals) + eps) if norm_by_std else centred)
    return out


def test_grpo_hand_example():
    # Group a: scores 10, 10, 0, 0 -> mean 5, stdev sqrt(100 / 3).
    adv = grpo_advantages([10.0, 10.0, 0.0, 0.0], ["a"] * 4, [0, 1, 2, 3])
    expected = 5.0 / (math.sqrt(100.0 / 3.0) + 1e-6)
    torch.testing.assert_close(adv, torch.tensor([expected, expected, -expected, -expected]))
    assert adv.dtype == torch.float32


def test_grpo_cross_steps_false_counts_each_trajectory_once_by_first_step():
    # Trajectory 0 has three steps (the middle one penalised), trajectory 1 one step.
    scores = [10.0, 9.9, 10.0, 0.0]
    groups = [0, 0, 0, 0]
    trajs = ["t0", "t0", "t0", "t1"]
    adv = grpo_advantages(scores, groups, trajs, cross_steps=False)
    mean, std = 5.0, statistics.stdev([10.0, 0.0])
    expected = [(s - mean) / (std + 1e-6) for s in scores]
    torch.testing.assert_close(adv, torch.tensor(expected))
    # With cross_steps=True all four step samples form the statistics instead.
    adv_cross = grpo_advantages(scores, groups, trajs, cross_steps=True)
    torch.testing.assert_close(adv_cross, torch.tensor(grpo_loop(scores, groups, trajs)))


def test_grpo_groups_of_one_and_zero_variance_give_exact_zeros():
    scores = [3.0, 0.1, 0.1, 0.1, 7.0, 1.0]
    groups = [0, 1, 1, 1, 2, 2]
    adv = grpo_advantages(scores, groups, list(range(6)))
    assert torch.isfinite(adv).all()
    assert adv[:4].tolist() == [0.0, 0.0, 0.0, 0.0]  # a group of one; equal 0.1 values
    assert adv[4].item() == pytest.approx(-adv[5].item()) and adv[4].item() > 0
    # cross_steps=False: group 0 has one trajectory with two different step scores -> zeros.
    adv_traj = grpo_advantages([1.0, 0.9], [0, 0], [5, 5], cross_steps=False)
    assert adv_traj.tolist() == [0.0, 0.0]


def test_grpo_matches_loop_on_random_groups():
    rng = random.Random(0)
    n = 60
    groups = [rng.randrange(6) for _ in range(n)]
    trajs = [(g, rng.randrange(4)) for g in groups]
    scores = [rng.choice([0.0, 10.0]) - 0.1 * rng.randrange(2) for _ in range(n)]
    for cross_steps in (True, False):
        for norm_by_std in (True, False):
            adv = grpo_advantages(scores, groups, trajs, cross_steps, norm_by_std)
            want = grpo_loop(scores, groups, trajs, cross_steps, norm_by_std)
            torch.testing.assert_close(adv, torch.tensor(want, dtype=torch.float32))


def test_grpo_accepts_tensors_and_order_does_not_matter():
    scores = torch.tensor([1.0, 0.0, 4.0, 2.0])
    groups = torch.tensor([7, 3, 7, 3])
    adv = grpo_advantages(scores, groups, torch.arange(4))
    permuted = grpo_advantages(scores[[3, 2, 1, 0]], groups[[3, 2, 1, 0]], torch.arange(4))
    torch.testing.assert_close(permuted, adv[[3, 2, 1, 0]])


def test_grpo_errors():
    with pytest.raises(ValueError, match="group_ids has 2 entries"):
        grpo_advantages([1.0, 2.0, 3.0], [0, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="scores has 1 NaN"):
        grpo_advantages([1.0, float("nan")], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        grpo_advantages([], [], [])
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.ones(2, 2), [0, 0], [0, 1])
    with pytest.raises(TypeError, match="hashable"):
        grpo_advantages([1.0, 2.0], [[0], [0]], [0, 1])
    with pytest.raises(ValueError, match="eps"):
        grpo_advantages([1.0, 2.0], [0, 0], [0, 1], eps=0.0)


def test_discounted_returns_by_hand_and_step_order():
    rewards = [0.0, -0.1, 10.0, 1.0]
    trajs = ["a", "a", "a", "b"]
    returns = discounted_returns(rewards, trajs, gamma=0.5)
    assert returns.tolist() == pytest.approx([0.0 + 0.5 * (-0.1 + 0.5 * 10.0), -0.1 + 5.0,
                                              10.0, 1.0])
    # Same steps given out of order with explicit step indices.
    shuffled = discounted_returns([10.0, 0.0, 1.0, -0.1], ["a", "a", "b", "a"],
                                  step_indices=[2, 0, 0, 1], gamma=0.5)
    assert shuffled.tolist() == pytest.approx([10.0, 2.45, 1.0, 4.9])
    with pytest.raises(ValueError, match="repeated step_indices"):
        discounted_returns([1.0, 2.0], ["a", "a"], step_indices=[0, 0])


def test_gigpo_by_hand():
    # One group, two trajectories of three steps; the first observation ("start") is shared.
    rewards = [0.0, 0.0, 10.0, 0.0, 0.0, 0.0]
    trajs = [0, 0, 0, 1, 1, 1]
    anchors = ["start", "kitchen", "fridge", "start", "kitchen", "garden"]
    adv = gigpo_advantages(rewards, [0] * 6, trajs, anchors, gamma=0.95, omega=0.5)
    def normalised(high):  # a two-member step group with returns (high, 0), first member
        return (high / 2) / (statistics.stdev([high, 0.0]) + 1e-6)

    a_episode = normalised(10.0)
    a_start = normalised(0.95 * 0.95 * 10.0)  # step group "start": returns 9.025 and 0
    a_kitchen = normalised(0.95 * 10.0)  # step group "kitchen": returns 9.5 and 0
    # "fridge" and "garden" are step groups of one: no step-level advantage.
    expected = [a_episode + 0.5 * a_start, a_episode + 0.5 * a_kitchen, a_episode,
                -a_episode - 0.5 * a_start, -a_episode - 0.5 * a_kitchen, -a_episode]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_gigpo_step_groups_do_not_cross_task_groups():
    # Identical anchor observations in different task groups are different step groups.
    adv = gigpo_advantages([1.0, 0.0], [0, 1], [0, 1], ["same", "same"], omega=1.0)
    assert adv.tolist() == [0.0, 0.0]


def test_rlsd_mix_schedule():
    assert rlsd_mix(0) == 0.5
    assert rlsd_mix(50) == 0.25
    assert rlsd_mix(99) == pytest.approx(0.005)
    assert rlsd_mix(100) == 0.0 and rlsd_mix(150) == 0.0
    with pytest.raises(ValueError, match="iteration"):
        rlsd_mix(-1)


def test_rlsd_advantages_by_hand():
    adv = torch.tensor([[2.0, 2.0, -2.0, 0.0]])
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    teacher = torch.tensor([[-0.9, -3.0, -0.9, -0.5]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = rlsd_advantages(adv, teacher, old, mask, iteration=0)
    m = 0.5
    w0 = math.exp(0.1)  # inside [0.8, 1.2]
    w1 = 0.8  # exp(-2) clipped up
    w2 = math.exp(-0.1)  # sign(A) = -1
    expected = [2.0 * ((1 - m) + m * w0), 2.0 * ((1 - m) + m * w1), -2.0 * ((1 - m) + m * w2), 0.0]
    torch.testing.assert_close(out, torch.tensor([expected]))
    late = rlsd_advantages(adv, teacher, old, mask, iteration=100)
    torch.testing.assert_close(late, torch.where(mask.bool(), adv, 0.0))
    with pytest.raises(ValueError, match="old_log_probs has shape"):
        rlsd_advantages(adv, teacher, old[:, :2], mask, iteration=0)


def test_per_token_advantages_broadcasts_on_response_tokens():
    out = per_token_advantages(torch.tensor([1.5, -2.0]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert out.tolist() == [[0.0, 1.5, 1.5], [-2.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="one row per step sample"):
        per_token_advantages(torch.tensor([1.0]), torch.ones(2, 3))

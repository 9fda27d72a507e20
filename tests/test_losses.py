"""The loss terms of sdar.losses against hand computation and plain-Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from sdar.losses import (
    entropy_gate,
    gap_gate,
    generalized_jsd_loss,
    low_var_kl,
    opsd_sampled_loss,
    ppo_clip_loss,
    sdar_loss,
    skill_sd_loss,
    soft_or_gate,
    token_mean,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


# --- token_mean ---------------------------------------------------------------------------------

def test_token_mean_is_over_all_masked_tokens_not_per_sequence():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    # (1 + 2 + 4) / 3, not the mean of per-row means (1.5 + 4) / 2.
    assert token_mean(values, MASK).item() == pytest.approx(7.0 / 3.0)
    assert token_mean(values, MASK.bool()).item() == pytest.approx(7.0 / 3.0)


def test_token_mean_ignores_padding_even_nan():
    values = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), -1e30]])
    assert token_mean(values, MASK).item() == pytest.approx(7.0 / 3.0)


def test_token_mean_errors():
    values = torch.ones(2, 3)
    with pytest.raises(ValueError, match="no token"):
        token_mean(values, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="response_mask has shape"):
        token_mean(values, torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        token_mean(values, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="values has 1 NaN"):
        token_mean(torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), MASK)


# --- low_var_kl ---------------------------------------------------------------------------------

def test_low_var_kl_hand_values_and_clamp():
    log_probs = torch.tensor([[math.log(0.5), -1.0, -30.0]])
    ref = torch.tensor([[math.log(0.25), -1.0, 0.0]])
    kl = low_var_kl(log_probs, ref)
    d = math.log(0.5)  # ref - log_probs
    assert kl[0, 0].item() == pytest.approx(math.exp(d) - d - 1.0, rel=1e-6)
    assert kl[0, 1].item() == 0.0
    assert kl[0, 2].item() == 10.0  # exp(30) - 31 clamped to [-10, 10]


def test_low_var_kl_gradient_reaches_only_log_probs():
    log_probs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], requires_grad=True)
    low_var_kl(log_probs, ref).sum().backward()
    assert ref.grad is None
    d = ref.detach() - log_probs.detach()
    # d/dl [exp(d) - d - 1] = -exp(d) + 1
    torch.testing.assert_close(log_probs.grad, 1.0 - torch.exp(d))


def test_low_var_kl_mask_ignores_padding():
    log_probs = torch.tensor([[-1.0, float("nan")]])
    ref = torch.tensor([[-0.5, float("nan")]])
    kl = low_var_kl(log_probs, ref, torch.tensor([[1, 0]]))
    assert kl[0, 1].item() == 0.0 and math.isfinite(kl[0, 0].item())
    with pytest.raises(ValueError, match="ref_log_probs has 1 NaN"):
        low_var_kl(torch.tensor([[-1.0, -1.0]]), ref)


# --- ppo_clip_loss ------------------------------------------------------------------------------

def ppo_token_loop(lp, old, adv, clip_low=0.2, clip_high=0.2, dual_clip=3.0):
    ratio = math.exp(lp - old)
    pg = max(-adv * ratio, -adv * min(max(ratio, 1 - clip_low), 1 + clip_high))
    if adv < 0 and dual_clip is not None:
        pg = min(pg, -adv * dual_clip)
    return pg


def test_ppo_clip_loss_hand_cases():
    # token 0: A=1, r=1.5 -> clipped at 1.2 -> -1.2; token 1: A=-1, r=5 -> max(5, 1.2) = 5 -> dual
    # clip min(5, 3) = 3; token 2: A=2, r=1 -> -2; token 3 is padding.
    log_probs = torch.tensor([[math.log(1.5), math.log(5.0)], [0.0, 123.0]])
    old = torch.zeros(2, 2)
    adv = torch.tensor([[1.0, -1.0], [2.0, 7.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = ppo_clip_loss(log_probs, old, adv, mask)
    assert loss.item() == pytest.approx((-1.2 + 3.0 - 2.0) / 3.0, rel=1e-6)
    # Only token 0 takes the clipped branch; token 1 keeps the unclipped 5 and hits the dual clip.
    assert metrics["pg_clipfrac"].item() == pytest.approx(1.0 / 3.0)
    assert metrics["pg_clipfrac_lower"].item() == pytest.approx(1.0 / 3.0)  # token 1
    assert metrics["ppo_kl"].item() == pytest.approx(-(math.log(1.5) + math.log(5.0)) / 3.0)
    loss_no_dual, _ = ppo_clip_loss(log_probs, old, adv, mask, dual_clip=None)
    assert loss_no_dual.item() == pytest.approx((-1.2 + 5.0 - 2.0) / 3.0, rel=1e-6)


def test_ppo_clip_loss_matches_plain_loop():
    gen = torch.Generator().manual_seed(0)
    log_probs = -torch.rand(4, 6, generator=gen) * 2
    old = log_probs + torch.randn(4, 6, generator=gen) * 0.5
    adv = torch.randn(4, 6, generator=gen) * 2
    mask = (torch.rand(4, 6, generator=gen) > 0.3).int()
    mask[0, 0] = 1
    for clip_low, clip_high, dual in ((0.2, 0.2, 3.0), (0.1, 0.28, None), (0.3, 0.1, 1.5)):
        loss, _ = ppo_clip_loss(log_probs, old, adv, mask, clip_low, clip_high, dual)
        per_token = [
            ppo_token_loop(log_probs[i, j].item(), old[i, j].item(), adv[i, j].item(),
                           clip_low, clip_high, dual)
            for i in range(4) for j in range(6) if mask[i, j]
        ]
        assert loss.item() == pytest.approx(sum(per_token) / len(per_token), rel=1e-5)


def test_ppo_clip_loss_gradient_only_unclipped_tokens_and_only_log_probs():
    # A=1, r=1 (unclipped): d/dl (-A r) = -1; A=1, r=1.5 (clipped): 0.
    log_probs = torch.tensor([[0.0, math.log(1.5)]], requires_grad=True)
    old = torch.zeros(1, 2, requires_grad=True)
    adv = torch.ones(1, 2, requires_grad=True)
    loss, _ = ppo_clip_loss(log_probs, old, adv, torch.ones(1, 2))
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.5, 0.0]]))
    assert old.grad is None and adv.grad is None


def test_ppo_clip_loss_bad_coefficients():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(x, x, x, torch.ones(1, 2), dual_clip=0.5)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip_loss(x, x, x, torch.ones(1, 2), clip_low=1.0)


# --- gates --------------------------------------------------------------------------------------

def test_gap_gate_values_from_algorithm_md():
    gaps = [-1.0, -0.2, 0.0, 0.2, 1.0]
    log_probs = torch.full((1, 5), -2.0)
    teacher = log_probs + torch.tensor([gaps])
    gate = gap_gate(log_probs, teacher, beta=5.0)
    expected = [0.007, 0.27, 0.5, 0.73, 0.993]
    for value, want in zip(gate[0].tolist(), expected):
        assert value == pytest.approx(want, abs=5e-3)
    assert torch.equal(gap_gate(log_probs, teacher, beta=0.0), torch.full((1, 5), 0.5))


def test_entropy_and_soft_or_gates():
    entropy = torch.tensor([[2.0, 0.5]], requires_grad=True)
    teacher_entropy = torch.tensor([[1.0, 0.5]])
    g_h = entropy_gate(entropy, teacher_entropy, beta_entropy=3.0)
    assert g_h[0, 0].item() == pytest.approx(sigmoid(3.0))
    assert g_h[0, 1].item() == pytest.approx(0.5)
    assert not g_h.requires_grad
    g = soft_or_gate(torch.tensor([[0.2, 0.0]]), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(g, torch.tensor([[1 - 0.8 * 0.5, 0.0]]))


# --- sdar_loss ----------------------------------------------------------------------------------

def sdar_inputs():
    log_probs = torch.tensor([[-1.0, -0.5, -3.0], [-2.0, -0.1, -9.0]], requires_grad=True)
    teacher = torch.tensor([[-0.8, -1.5, -3.0], [-2.0, -0.3, 4.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return log_probs, teacher, mask


def test_sdar_loss_value_and_metrics_by_hand():
    log_probs, teacher, mask = sdar_inputs()
    loss, metrics = sdar_loss(log_probs, teacher, mask, beta=5.0)
    gaps = [0.2, -1.0, 0.0, 0.0, -0.2]
    gates = [sigmoid(5.0 * d) for d in gaps]
    assert loss.item() == pytest.approx(sum(g * d for g, d in zip(gates, gaps)) / 5, rel=1e-5)
    assert metrics["gate_mean"].item() == pytest.approx(sum(gates) / 5, rel=1e-5)
    assert metrics["gate_active_ratio"].item() == pytest.approx(1 / 5)  # only gap +0.2 is > 0.5
    assert metrics["teacher_gap_mean"].item() == pytest.approx(sum(gaps) / 5, abs=1e-6)
    assert metrics["sdar_loss"].item() == pytest.approx(loss.item())


def test_sdar_loss_gradient_is_minus_gate_over_n_and_teacher_gets_none():
    log_probs, teacher, mask = sdar_inputs()
    loss, _ = sdar_loss(log_probs, teacher, mask, beta=5.0)
    loss.backward()
    gate = torch.sigmoid(5.0 * (teacher.detach() - log_probs.detach()))
    expected = torch.where(mask.bool(), -gate / 5.0, torch.zeros(()))
    torch.testing.assert_close(log_probs.grad, expected)
    assert log_probs.grad[1, 2].item() == 0.0
    assert teacher.grad is None


def test_sdar_loss_beta_zero_gate_is_half_everywhere():
    log_probs, teacher, mask = sdar_inputs()
    loss, metrics = sdar_loss(log_probs, teacher, mask, beta=0.0)
    loss.backward()
    assert metrics["gate_mean"].item() == 0.5
    assert metrics["gate_active_ratio"].item() == 0.0
    expected = torch.where(mask.bool(), torch.tensor(-0.5 / 5.0), torch.zeros(()))
    torch.testing.assert_close(log_probs.grad, expected)


def test_sdar_loss_padding_never_changes_result():
    log_probs, teacher, mask = sdar_inputs()
    loss, metrics = sdar_loss(log_probs, teacher, mask)
    loss.backward()
    grad = log_probs.grad.clone()
    lp2 = log_probs.detach().clone()
    t2 = teacher.detach().clone()
    lp2[1, 2], t2[1, 2] = float("nan"), float("inf")
    lp2.requires_grad_()
    loss2, metrics2 = sdar_loss(lp2, t2, mask)
    loss2.backward()
    assert loss2.item() == loss.item()
    assert torch.equal(lp2.grad, grad)
    assert {k: v.item() for k, v in metrics.items()} == {k: v.item() for k, v in metrics2.items()}


def test_sdar_loss_precomputed_gate_and_old_log_probs():
    log_probs, teacher, mask = sdar_inputs()
    gate = torch.full((2, 3), 0.25)
    loss, metrics = sdar_loss(log_probs, teacher, mask, gate=gate,
                              old_log_probs=log_probs.detach() - 1.0)
    gaps = [0.2, -1.0, 0.0, 0.0, -0.2]
    assert loss.item() == pytest.approx(0.25 * sum(gaps) / 5, rel=1e-5)
    assert metrics["teacher_gap_old_mean"].item() == pytest.approx(sum(gaps) / 5 + 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sdar_loss(log_probs, teacher, mask, gate=torch.full((2, 3), 1.5))


def test_sdar_loss_bad_input_errors_name_the_argument():
    log_probs, teacher, mask = sdar_inputs()
    with pytest.raises(ValueError, match="teacher_log_probs has shape"):
        sdar_loss(log_probs, teacher[:, :2], mask)
    with pytest.raises(ValueError, match="response_mask has shape"):
        sdar_loss(log_probs, teacher, mask[:, :2])
    with pytest.raises(ValueError, match="no token"):
        sdar_loss(log_probs, teacher, torch.zeros_like(mask))
    bad = teacher.detach().clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_log_probs has 1 NaN/inf.*\(0, 1\)"):
        sdar_loss(log_probs, bad, mask)
    bad_lp = log_probs.detach().clone()
    bad_lp[1, 0] = -float("inf")
    with pytest.raises(ValueError, match="sdar_loss: log_probs has 1 NaN/inf"):
        sdar_loss(bad_lp, teacher, mask)
    with pytest.raises(ValueError, match="beta"):
        sdar_loss(log_probs, teacher, mask, beta=-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        sdar_loss(log_probs.long(), teacher, mask)


# --- Skill-SD and textbook OPSD -----------------------------------------------------------------

def test_skill_sd_loss_value_and_gradient_by_hand():
    lp_value, old, teacher = -1.0, -1.2, -0.5
    log_probs = torch.tensor([[lp_value, -2.0]], requires_grad=True)
    loss, metrics = skill_sd_loss(log_probs, torch.tensor([[old, 0.0]]),
                                  torch.tensor([[teacher, 0.0]]), torch.tensor([[1, 0]]))
    rho = math.exp(lp_value - old)
    d = teacher - lp_value
    k3 = math.exp(d) - 1 - d
    assert loss.item() == pytest.approx(rho * k3, rel=1e-6)
    assert metrics["skill_sd_rho_mean"].item() == pytest.approx(rho, rel=1e-6)
    loss.backward()
    # d(rho k3)/dl = rho k3 + rho (1 - exp(d)): gradient flows through both factors.
    assert log_probs.grad[0, 0].item() == pytest.approx(rho * k3 + rho * (1 - math.exp(d)), rel=1e-5)
    assert log_probs.grad[0, 1].item() == 0.0


def test_skill_sd_ratio_is_capped_at_exp_10():
    log_probs = torch.tensor([[0.0]], requires_grad=True)
    loss, metrics = skill_sd_loss(log_probs, torch.tensor([[-15.0]]), torch.tensor([[-1.0]]),
                                  torch.ones(1, 1))
    assert metrics["skill_sd_rho_mean"].item() == pytest.approx(math.exp(10.0), rel=1e-5)
    loss.backward()
    # rho is constant above the cap, so only k3 contributes: rho * (1 - exp(-1)).
    assert log_probs.grad.item() == pytest.approx(math.exp(10.0) * (1 - math.exp(-1.0)), rel=1e-5)


def test_opsd_sampled_loss_advantage_form():
    log_probs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    teacher = torch.tensor([[-0.5, -2.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = opsd_sampled_loss(log_probs, teacher, mask)
    # -(0.5)(-1) - (-0.5)(-2) = 0.5 - 1.0, over 2 tokens
    assert loss.item() == pytest.approx(-0.25)
    assert metrics["opsd_reverse_kl"].item() == pytest.approx(0.0)  # (-0.5 + 0.5) / 2
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.25, 0.25, 0.0]]))
    assert teacher.grad is None


def jsd_loop(student_logits, teacher_logits, beta):
    s = [math.exp(x) for x in student_logits]
    t = [math.exp(x) for x in teacher_logits]
    s = [x / sum(s) for x in s]
    t = [x / sum(t) for x in t]
    if beta == 0.0:
        return sum(ti * math.log(ti / si) for ti, si in zip(t, s))
    if beta == 1.0:
        return sum(si * math.log(si / ti) for ti, si in zip(t, s))
    m = [beta * ti + (1 - beta) * si for ti, si in zip(t, s)]
    kl_t = sum(ti * math.log(ti / mi) for ti, mi in zip(t, m))
    kl_s = sum(si * math.log(si / mi) for si, mi in zip(s, m))
    return beta * kl_t + (1 - beta) * kl_s


def test_generalized_jsd_matches_plain_loop_for_several_betas():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, generator=gen)
    teacher = torch.randn(2, 3, 5, generator=gen)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    positions = [(0, 0), (0, 1), (1, 0)]
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        loss, metrics = generalized_jsd_loss(logits, teacher, mask, jsd_beta=beta)
        want = sum(jsd_loop(logits[i, j].tolist(), teacher[i, j].tolist(), beta)
                   for i, j in positions) / 3
        assert loss.item() == pytest.approx(want, rel=1e-5), beta
        assert metrics["opsd_jsd"].item() == pytest.approx(loss.item())


def test_generalized_jsd_endpoints_are_scaled_limits():
    gen = torch.Generator().manual_seed(2)
    logits, teacher = torch.randn(1, 2, 6, generator=gen), torch.randn(1, 2, 6, generator=gen)
    mask = torch.ones(1, 2)
    forward_kl, _ = generalized_jsd_loss(logits.double(), teacher.double(), mask, jsd_beta=0.0)
    small, _ = generalized_jsd_loss(logits.double(), teacher.double(), mask, jsd_beta=1e-6)
    assert (small / 1e-6).item() == pytest.approx(forward_kl.item(), rel=1e-3)


def test_generalized_jsd_top_k_gradient_and_padding():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, 3.0, 1.0, -2.0], [9.0, 9.0, 9.0, float("nan")]]])
    mask = torch.tensor([[1, 0]])
    # Teacher top-2 is tokens 1 and 2; both distributions renormalised over them.
    loss, _ = generalized_jsd_loss(logits, teacher, mask, jsd_beta=0.5, top_k=2)
    assert loss.item() == pytest.approx(jsd_loop([1.0, 0.0], [3.0, 1.0], 0.5), rel=1e-5)
    full, _ = generalized_jsd_loss(logits, teacher.nan_to_num(), mask, top_k=4)
    full_none, _ = generalized_jsd_loss(logits, teacher.nan_to_num(), mask)
    assert full.item() == pytest.approx(full_none.item())
    loss.backward()
    assert logits.grad[0, 0, 0].item() == 0.0 and logits.grad[0, 0, 3].item() == 0.0
    assert logits.grad[0, 0, 1].item() != 0.0
    assert torch.equal(logits.grad[0, 1], torch.zeros(4))
    with pytest.raises(ValueError, match="top_k"):
        generalized_jsd_loss(logits, teacher, mask, top_k=5)
    with pytest.raises(ValueError, match="teacher_logits has shape"):
        generalized_jsd_loss(logits, teacher[..., :3], mask)


def test_generalized_jsd_chunked_gradient_matches_plain_autograd():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 4, 9, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 4, 9, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
    weights = mask.bool()
    for beta, top_k in ((0.5, None), (0.2, 3), (0.0, None), (1.0, 5)):
        plain = base.clone().requires_grad_()
        s = torch.log_softmax(plain[weights], -1)
        t = torch.log_softmax(teacher[weights], -1)
        if top_k is not None:
            support = teacher[weights].topk(top_k, -1).indices
            s = torch.log_softmax(plain[weights].gather(-1, support), -1)
            t = torch.log_softmax(teacher[weights].gather(-1, support), -1)
        if beta == 0.0:
            per = (t.exp() * (t - s)).sum(-1)
        elif beta == 1.0:
            per = (s.exp() * (s - t)).sum(-1)
        else:
            m = torch.log(beta * t.exp() + (1 - beta) * s.exp())
            per = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
        per.mean().backward()
        for chunk_size in (1, 3, None):
            chunked = base.clone().requires_grad_()
            loss, _ = generalized_jsd_loss(chunked, teacher, mask, jsd_beta=beta, top_k=top_k,
                                           chunk_size=chunk_size)
            loss.backward()
            assert loss.item() == pytest.approx(per.mean().item(), rel=1e-10)
            torch.testing.assert_close(chunked.grad, plain.grad)
    logits = base.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: generalized_jsd_loss(x, teacher, mask, jsd_beta=0.3, chunk_size=2)[0], (logits,)
    )


def test_generalized_jsd_nan_on_response_position_is_named():
    logits = torch.zeros(1, 3, 4)
    teacher = torch.zeros(1, 3, 4)
    logits[0, 2, 1] = float("nan")  # padding: fine
    loss, _ = generalized_jsd_loss(logits, teacher, torch.tensor([[1, 1, 0]]))
    assert loss.item() == 0.0
    teacher[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"teacher_logits hold NaN/inf.*\(0, 1\)"):
        generalized_jsd_loss(logits, teacher, torch.tensor([[1, 1, 0]]))


def expected_gradient(loss_fn, logits, sampling_logits, teacher_logits):
    """Exact expectation, over one token sampled from ``softmax(sampling_logits)``, of the gradient
    of ``loss_fn(student_log_prob, teacher_log_prob, mask)`` with respect to the student's
    ``logits`` (one response position)."""
    logits = logits.clone().requires_grad_()
    p_sample = torch.softmax(sampling_logits, -1)
    student = torch.log_softmax(logits, -1)
    teacher = torch.log_softmax(teacher_logits, -1)
    mask = torch.ones(1, 1)
    total = sum(p_sample[y] * loss_fn(student[y].view(1, 1), teacher[y].view(1, 1), mask)[0]
                for y in range(len(logits)))
    (grad,) = torch.autograd.grad(total, logits)
    return grad


def expected_sdar_gradient(logits, sampling_logits, teacher_logits, beta):
    """:func:`expected_gradient` of ``sdar_loss`` at ``beta``."""
    return expected_gradient(lambda s, t, m: sdar_loss(s, t, m, beta=beta), logits, sampling_logits, teacher_logits)


def test_sdar_expected_gradient_is_zero_when_the_teacher_equals_the_student():
    # What docs/algorithm.md "When the teacher adds nothing" states: on the policy's own samples
    # and with a teacher that scores like the student (gate 0.5 everywhere), the term's gradient
    # has mean zero: it only adds sampling noise. Each single sample's gradient is not zero.
    logits = torch.tensor([1.5, -0.3, 0.2, 2.0, -1.1, 0.0], dtype=torch.float64)
    grad = expected_sdar_gradient(logits, logits, logits, beta=5.0)
    assert grad.abs().max().item() < 1e-12
    one = logits.clone().requires_grad_()
    loss, metrics = sdar_loss(torch.log_softmax(one, -1)[3].view(1, 1),
                              torch.log_softmax(logits, -1)[3].view(1, 1), torch.ones(1, 1))
    (single,) = torch.autograd.grad(loss, one)
    assert metrics["gate_mean"].item() == 0.5
    assert single.abs().max().item() > 0.1
    # A teacher that prefers token 2 makes the expected step raise token 2's probability.
    teacher = logits.clone()
    teacher[2] += 1.0
    grad = expected_sdar_gradient(logits, logits, teacher, beta=5.0)
    stepped = torch.softmax(logits - 0.1 * grad, -1)
    assert stepped[2] > torch.softmax(logits, -1)[2]


def test_sdar_term_is_textbook_opsd_at_beta_over_4_for_small_gaps_and_bounded_for_large_ones():
    # What docs/algorithm.md "What the gate is, to first order" states. On the policy's own samples
    # (the first mini-batch) the term's expected gradient is -E[(g - 1/2) grad log pi]; with
    # g = sigmoid(beta * gap) = 1/2 + beta * gap / 4 + O((beta * gap)^3) it is beta / 4 times
    # textbook OPSD's (the reverse-KL gradient), up to a relative error of order (beta * gap)^2;
    # for large gaps |g - 1/2| < 1/2 bounds it whatever the teacher says, where OPSD's grows.
    logits = torch.tensor([1.5, -0.3, 0.2, 2.0, -1.1, 0.0], dtype=torch.float64)
    direction = torch.tensor([0.3, -1.0, 2.0, -0.5, 0.7, 1.1], dtype=torch.float64)
    errors = []
    for scale in (0.3, 0.03, 0.003):
        teacher = logits + scale * direction
        sdar = expected_sdar_gradient(logits, logits, teacher, beta=5.0)
        opsd = expected_gradient(opsd_sampled_loss, logits, logits, teacher)
        assert opsd.norm() > 0.1 * scale  # not a comparison of two zeros
        errors.append(((sdar - 1.25 * opsd).norm() / (1.25 * opsd).norm()).item())
    # about (beta * gap)^2 / 12: 20% when the logits move by up to 0.6, 0.4% by up to 0.06
    assert 0.1 < errors[0] < 0.3 and 0.002 < errors[1] < 0.006
    assert errors[2] < errors[1] / 50  # shrinks as the square of the gap
    # the same at beta 1: the factor is beta / 4, not a constant
    teacher = logits + 0.003 * direction
    torch.testing.assert_close(expected_sdar_gradient(logits, logits, teacher, beta=1.0),
                               0.25 * expected_gradient(opsd_sampled_loss, logits, logits, teacher), rtol=1e-3, atol=1e-12)
    # large gaps: OPSD's expected gradient grows with the teacher's gap, SDAR's stays below
    # 1/2 E_pi |grad log pi| (per logit), the bound of a weight g - 1/2 in [-1/2, 1/2]
    p = torch.softmax(logits, -1)
    score = torch.eye(6, dtype=torch.float64) - p  # row y: grad of log pi(y) w.r.t. the logits
    bound = 0.5 * (p[:, None] * score.abs()).sum(0)
    norms = {}
    for scale in (2.0, 20.0):
        teacher = logits + scale * direction
        sdar = expected_sdar_gradient(logits, logits, teacher, beta=5.0)
        assert (sdar.abs() <= bound + 1e-12).all()
        norms[scale] = (sdar.norm().item(), expected_gradient(opsd_sampled_loss, logits, logits, teacher).norm().item())
    assert norms[20.0][1] > 8 * norms[2.0][1]  # OPSD: about ten times the gap, ten times the step
    assert norms[20.0][0] < 1.5 * norms[2.0][0]  # SDAR: saturated
    # after the first mini-batch (policy != sampling policy) the match does not hold even for a tiny
    # gap: SDAR keeps the pull-back to the sampling policy that OPSD does not have
    moved = logits + 0.2 * torch.tensor([1.0, -1.0, 0.5, 0.0, -0.5, 1.0], dtype=torch.float64)
    teacher = moved + 0.03 * direction
    sdar = expected_sdar_gradient(moved, logits, teacher, beta=5.0)
    opsd = expected_gradient(opsd_sampled_loss, moved, logits, teacher)
    assert ((sdar - 1.25 * opsd).norm() / (1.25 * opsd).norm()).item() > 0.2


def test_sdar_term_never_lowers_a_sampled_token_so_a_collapsed_wrong_policy_gets_no_gradient():
    # docs/algorithm.md "What the gate is, to first order": each sample's gradient raises its token
    # with weight g in [0, 1]. A policy collapsed onto token 0, which the teacher rejects by ~12 nats,
    # samples only token 0: the SDAR term's batch gradient is then ~0 (g = sigmoid(5 * -12)), where
    # textbook OPSD's weight is the gap itself and lowers token 0.
    logits = torch.tensor([6.0, 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    teacher = torch.log_softmax(torch.tensor([-6.0, 6.0, 0.0, 0.0], dtype=torch.float64), -1)
    student = torch.log_softmax(logits, -1)
    batch = student[0].expand(2, 3)  # 6 samples, all token 0
    mask = torch.ones(2, 3)
    sdar, metrics = sdar_loss(batch, teacher[0].expand(2, 3), mask, beta=5.0)
    (sdar_grad,) = torch.autograd.grad(sdar, logits, retain_graph=True)
    opsd, _ = opsd_sampled_loss(batch, teacher[0].expand(2, 3), mask)
    (opsd_grad,) = torch.autograd.grad(opsd, logits)
    assert metrics["gate_mean"].item() < 1e-20 and sdar_grad.abs().max().item() < 1e-20
    assert opsd_grad[0].item() > 1e-2  # a descent step lowers token 0's logit
    assert (opsd_grad[1:] < 0).all()  # and raises the others


def test_sdar_expected_gradient_with_constant_gate_pulls_back_to_the_sampling_policy():
    # After the first mini-batch the policy differs from the one that sampled: with the gate at
    # 0.5 (beta 0, or a teacher equal to the student) the expected gradient is exactly that of
    # 0.5 * KL(sampling policy || policy), an anchor to the rollout-time policy.
    logits = torch.tensor([0.4, -0.3, 1.2, 0.9, -1.1], dtype=torch.float64)
    old = torch.tensor([0.1, 0.2, 1.0, 1.3, -0.5], dtype=torch.float64)
    grad = expected_sdar_gradient(logits, old, torch.zeros(5, dtype=torch.float64), beta=0.0)
    at = logits.clone().requires_grad_()
    p_old = torch.softmax(old, -1)
    kl = (p_old * (torch.log(p_old) - torch.log_softmax(at, -1))).sum()
    (kl_grad,) = torch.autograd.grad(0.5 * kl, at)
    torch.testing.assert_close(grad, kl_grad)
    assert kl_grad.abs().max().item() > 1e-3

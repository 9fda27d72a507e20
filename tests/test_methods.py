"""The method registry, LossConfig validation and actor_loss against hand-composed objectives."""

from __future__ import annotations

import math

import pytest
import torch

from sdar.losses import low_var_kl, ppo_clip_loss, sdar_loss, token_mean
from sdar.methods import (
    METHODS,
    LossConfig,
    LossInputs,
    actor_loss,
    distillation_gate,
    required_inputs,
)

ALL_METHODS = ["grpo", "sdar", "grpo_opsd", "opsd", "skill_grpo", "rlsd", "skill_sd",
               "opsd_sampled", "opsd_jsd"]


def make_inputs(seed: int = 0, vocab: int = 7, **overrides) -> LossInputs:
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 5)
    log_probs = (-torch.rand(shape, generator=gen) * 3).requires_grad_()
    mask = torch.ones(shape, dtype=torch.long)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    fields = {
        "log_probs": log_probs,
        "old_log_probs": log_probs.detach() + 0.1 * torch.randn(shape, generator=gen),
        "advantages": torch.randn(3, 1, generator=gen).expand(shape).clone(),
        "response_mask": mask,
        "ref_log_probs": log_probs.detach() + 0.2 * torch.randn(shape, generator=gen),
        "teacher_log_probs": log_probs.detach() + 0.5 * torch.randn(shape, generator=gen),
        "entropy": torch.rand(shape, generator=gen).requires_grad_(),
        "teacher_entropy": torch.rand(shape, generator=gen),
        "logits": torch.randn(*shape, vocab, generator=gen).requires_grad_(),
        "teacher_logits": torch.randn(*shape, vocab, generator=gen),
    }
    fields.update(overrides)
    return LossInputs(**fields)


def test_registry_holds_every_method_of_section_8():
    assert sorted(METHODS) == sorted(ALL_METHODS)
    assert METHODS["skill_grpo"].student_sees_skills
    assert METHODS["opsd_jsd"].needs_teacher_logits
    assert not METHODS["grpo"].needs_teacher


def test_presets_and_defaults():
    assert LossConfig().method == "sdar"
    sdar = LossConfig.for_method("sdar")
    assert (sdar.c_pg, sdar.sdar_lambda, sdar.beta, sdar.c_ent, sdar.c_kl) == \
        (1.0, 0.01, 5.0, 0.001, 0.01)
    assert LossConfig.for_method("grpo_opsd").beta == 0.0
    assert LossConfig.for_method("opsd").c_pg == 0.0
    assert LossConfig.for_method("grpo").sdar_lambda == 0.0
    assert LossConfig.for_method("sdar", c_kl=0.001).c_kl == 0.001


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown method 'ppo'.*grpo, sdar, grpo_opsd"):
        LossConfig(method="ppo")
    with pytest.raises(ValueError, match="unknown gate 'max'; known gates: gap, entropy, soft_or"):
        LossConfig(gate="max")
    with pytest.raises(ValueError, match="'grpo_opsd' fixes beta=0"):
        LossConfig(method="grpo_opsd", beta=5.0)
    with pytest.raises(ValueError, match="'opsd' fixes c_pg=0"):
        LossConfig(method="opsd", c_pg=1.0)
    with pytest.raises(ValueError, match="'grpo' fixes sdar_lambda=0"):
        LossConfig(method="grpo", sdar_lambda=0.01)
    with pytest.raises(ValueError, match="has no gate"):
        LossConfig(method="grpo", gate="entropy")
    with pytest.raises(ValueError, match="c_kl"):
        LossConfig(c_kl=-0.1)
    with pytest.raises(ValueError, match="dual_clip"):
        LossConfig(dual_clip=1.0)
    with pytest.raises(ValueError, match="jsd_top_k"):
        LossConfig(method="opsd_jsd", jsd_top_k=0)
    with pytest.raises(ValueError, match="unknown field"):
        LossConfig.for_method("sdar", lamda=0.1)


def test_required_inputs_per_method():
    base = {"ref_log_probs", "entropy"}
    assert required_inputs(LossConfig.for_method("grpo")) == base
    assert required_inputs(LossConfig.for_method("skill_grpo")) == base
    for name in ("sdar", "grpo_opsd", "opsd", "rlsd", "skill_sd", "opsd_sampled"):
        assert required_inputs(LossConfig.for_method(name)) == base | {"teacher_log_probs"}, name
    assert required_inputs(LossConfig.for_method("opsd_jsd")) == base | {"logits", "teacher_logits"}
    assert required_inputs(LossConfig.for_method("sdar", gate="soft_or")) == \
        base | {"teacher_log_probs", "teacher_entropy"}
    assert required_inputs(LossConfig.for_method("grpo", c_kl=0.0, c_ent=0.0)) == set()
    assert required_inputs(LossConfig.for_method("sdar", sdar_lambda=0.0)) == base


def test_missing_input_is_named():
    inputs = make_inputs(teacher_log_probs=None)
    with pytest.raises(ValueError, match=r"'sdar'.*\['teacher_log_probs'\]"):
        actor_loss(LossConfig(), inputs)
    with pytest.raises(ValueError, match="unknown method"):
        actor_loss(LossConfig(method="nope"), inputs)


def grpo_by_hand(config: LossConfig, inputs: LossInputs) -> torch.Tensor:
    pg, _ = ppo_clip_loss(inputs.log_probs, inputs.old_log_probs, inputs.advantages,
                          inputs.response_mask)
    entropy = token_mean(inputs.entropy, inputs.response_mask)
    kl = token_mean(low_var_kl(inputs.log_probs, inputs.ref_log_probs), inputs.response_mask)
    return config.c_pg * pg - config.c_ent * entropy + config.c_kl * kl


def test_grpo_loss_is_the_three_terms():
    config = LossConfig.for_method("grpo")
    inputs = make_inputs()
    loss, metrics = actor_loss(config, inputs)
    assert loss.item() == pytest.approx(grpo_by_hand(config, inputs).item(), rel=1e-6)
    for key in ("actor/loss", "actor/pg_loss", "actor/pg_clipfrac", "actor/kl", "actor/entropy"):
        assert isinstance(metrics[key], float), key
    assert metrics["actor/loss"] == pytest.approx(loss.item())
    skill_loss, _ = actor_loss(LossConfig.for_method("skill_grpo"), inputs)
    assert skill_loss.item() == loss.item()


def test_sdar_adds_lambda_times_sdar_loss_and_logs_gate_metrics():
    inputs = make_inputs()
    config = LossConfig.for_method("sdar", sdar_lambda=0.5)
    loss, metrics = actor_loss(config, inputs)
    term, term_metrics = sdar_loss(inputs.log_probs, inputs.teacher_log_probs,
                                   inputs.response_mask, beta=5.0)
    want = grpo_by_hand(config, inputs) + 0.5 * term
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    for key in ("gate_mean", "gate_active_ratio", "teacher_gap_mean"):
        assert metrics[f"sdar/{key}"] == pytest.approx(term_metrics[key].item())
    assert metrics["sdar/loss"] == pytest.approx(term.item())
    assert "sdar/teacher_gap_old_mean" in metrics


def grad_of(config: LossConfig, inputs: LossInputs) -> torch.Tensor:
    inputs.log_probs.grad = None
    loss, _ = actor_loss(config, inputs)
    loss.backward()
    return inputs.log_probs.grad.clone()


def test_released_grpo_opsd_gradient_ignores_the_teacher():
    # docs/algorithm.md, "The methods", note: with beta = 0 the gate is 0.5 and the teacher only
    # shifts the loss value, never the gradient.
    config = LossConfig.for_method("grpo_opsd")
    inputs = make_inputs()
    grad = grad_of(config, inputs)
    inputs.teacher_log_probs = inputs.teacher_log_probs - 3.0
    torch.testing.assert_close(grad_of(config, inputs), grad)
    grpo_grad = grad_of(LossConfig.for_method("grpo"), inputs)
    mask = inputs.response_mask.bool()
    n_tokens = mask.sum()
    torch.testing.assert_close(grad, grpo_grad - torch.where(mask, 0.01 * 0.5 / n_tokens, 0.0))


def test_distill_mask_sets_the_gate_to_zero_on_its_rows_and_keeps_the_token_mean():
    # teacher.no_winner=skip: row 1 has no context; its tokens keep GRPO's gradient only, the
    # other rows keep -lambda * g / n_tokens with n_tokens over every response token
    config = LossConfig.for_method("sdar", sdar_lambda=0.5)
    inputs = make_inputs()
    full = grad_of(config, inputs)
    grpo = grad_of(LossConfig.for_method("grpo"), inputs)
    inputs.distill_mask = torch.tensor([[True], [False], [True]])
    skipped = grad_of(config, inputs)
    torch.testing.assert_close(skipped[1], grpo[1])
    torch.testing.assert_close(skipped[[0, 2]], full[[0, 2]])
    # the loss by hand: the term's sum over the kept rows, divided by all response tokens
    mask = inputs.response_mask.bool()
    gate = torch.sigmoid(5.0 * (inputs.teacher_log_probs - inputs.log_probs.detach()))
    term = torch.where(mask & inputs.distill_mask, gate * (inputs.teacher_log_probs - inputs.log_probs.detach()),
                       0.0).sum() / mask.sum()
    loss, metrics = actor_loss(config, inputs)
    assert loss.item() == pytest.approx((grpo_by_hand(config, inputs) + 0.5 * term).item(), rel=1e-6)
    assert metrics["sdar/gate_mean"] == pytest.approx(
        (torch.where(mask & inputs.distill_mask, gate, 0.0).sum() / mask.sum()).item(), rel=1e-6)
    # a per-token mask works the same; methods without the gated term and bad shapes are refused
    inputs.distill_mask = torch.tensor([[True], [False], [True]]).expand(3, 5)
    torch.testing.assert_close(grad_of(config, inputs), skipped)
    with pytest.raises(ValueError, match="distill_mask sets the gate of L_SDAR, which method 'opsd_sampled'"):
        actor_loss(LossConfig.for_method("opsd_sampled"), inputs)
    inputs.distill_mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"distill_mask must be \[3, 1\] or \[3, 5\], got \[3, 2\]"):
        actor_loss(config, inputs)


def test_opsd_gradient_does_not_depend_on_advantages():
    config = LossConfig.for_method("opsd", c_ent=0.0, c_kl=0.0)
    inputs = make_inputs()
    grad = grad_of(config, inputs)
    inputs.advantages = inputs.advantages * -7.0
    torch.testing.assert_close(grad_of(config, inputs), grad)
    gate = torch.sigmoid(5.0 * (inputs.teacher_log_probs - inputs.log_probs.detach()))
    mask = inputs.response_mask.bool()
    torch.testing.assert_close(grad, torch.where(mask, -0.01 * gate / mask.sum(), 0.0))


def test_entropy_gate_and_soft_or_gate_in_actor_loss():
    inputs = make_inputs()
    for gate_name in ("entropy", "soft_or"):
        config = LossConfig.for_method("sdar", gate=gate_name, beta_entropy=2.0, c_ent=0.0,
                                       c_kl=0.0)
        _, metrics = actor_loss(config, inputs)
        g_h = torch.sigmoid(2.0 * (inputs.entropy.detach() - inputs.teacher_entropy))
        g_gap = torch.sigmoid(5.0 * (inputs.teacher_log_probs - inputs.log_probs.detach()))
        gate = g_h if gate_name == "entropy" else 1 - (1 - g_h) * (1 - g_gap)
        assert metrics["sdar/gate_mean"] == pytest.approx(
            token_mean(gate, inputs.response_mask).item(), rel=1e-6)


def test_distillation_gate_is_the_gate_actor_loss_applies():
    # One function picks the gate; actor_loss's gate metrics are its values, and the methods whose
    # distillation term is not L_SDAR have none.
    inputs = make_inputs()
    args = (inputs.log_probs, inputs.teacher_log_probs, inputs.entropy, inputs.teacher_entropy)
    for method, gate_name in (("sdar", "gap"), ("sdar", "soft_or"), ("opsd", "entropy"),
                              ("grpo_opsd", "gap")):
        config = LossConfig.for_method(method, gate=gate_name)
        gate = distillation_gate(config, *args)
        assert not gate.requires_grad and gate.shape == inputs.log_probs.shape
        _, metrics = actor_loss(config, inputs)
        mask = inputs.response_mask.bool()
        assert metrics["sdar/gate_mean"] == pytest.approx(gate[mask].mean().item(), rel=1e-6)
        assert metrics["sdar/gate_active_ratio"] == pytest.approx(
            (gate[mask] > 0.5).float().mean().item())
    assert torch.equal(distillation_gate(LossConfig.for_method("grpo_opsd"), *args),
                       torch.full_like(inputs.log_probs, 0.5))
    for method in ("grpo", "skill_grpo", "rlsd", "skill_sd", "opsd_sampled", "opsd_jsd"):
        assert distillation_gate(LossConfig.for_method(method), *args) is None, method


def test_rlsd_changes_advantages_then_decays_to_grpo():
    inputs = make_inputs(iteration=0)
    config = LossConfig.for_method("rlsd")
    early, metrics = actor_loss(config, inputs)
    assert metrics["rlsd/mix"] == 0.5
    grpo, _ = actor_loss(LossConfig.for_method("grpo"), inputs)
    assert early.item() != pytest.approx(grpo.item())
    inputs.iteration = 100
    late, metrics = actor_loss(config, inputs)
    assert metrics["rlsd/mix"] == 0.0
    assert late.item() == pytest.approx(grpo.item(), rel=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_backward_and_padding_is_inert(method):
    config = LossConfig.for_method(method)
    inputs = make_inputs()
    loss, metrics = actor_loss(config, inputs)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    padding = ~inputs.response_mask.bool()
    assert torch.count_nonzero(inputs.log_probs.grad[padding]) == 0
    # Garbage in the padding of every per-token input changes nothing.
    poisoned = make_inputs()
    for name in ("log_probs", "old_log_probs", "advantages", "ref_log_probs",
                 "teacher_log_probs", "entropy", "teacher_entropy"):
        value = getattr(poisoned, name).detach().clone()
        value[padding] = float("nan")
        setattr(poisoned, name, value.requires_grad_(name in ("log_probs", "entropy")))
    poisoned_loss, poisoned_metrics = actor_loss(config, poisoned)
    assert poisoned_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert poisoned_metrics == pytest.approx(metrics, rel=1e-6)


def test_opsd_jsd_top_k_uses_logits_and_bad_shapes_fail():
    inputs = make_inputs()
    _, m_full = actor_loss(LossConfig.for_method("opsd_jsd"), inputs)
    loss_top, m_top = actor_loss(LossConfig.for_method("opsd_jsd", jsd_top_k=2), inputs)
    assert m_full["opsd/jsd"] > 0 and m_top["opsd/jsd"] > 0
    assert m_full["opsd/jsd"] != pytest.approx(m_top["opsd/jsd"])
    loss_top.backward()
    assert inputs.logits.grad is not None
    bad = make_inputs(teacher_log_probs=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="teacher_log_probs has shape"):
        actor_loss(LossConfig(), bad)

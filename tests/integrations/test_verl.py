"""The verl integration: registered SDAR policy losses against this project's own loss functions.

Runs only where verl is installed (``bash scripts/test_verl.sh`` builds ``.venv-verl``); the main
suite skips it. Everything is CPU tensors: verl's real registry, real ActorConfig, real ``ppo_loss``
and real padding conversions, compared with ``sdar.methods.actor_loss`` / ``sdar.losses``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip(
    "verl", reason="verl is not installed here; run `bash scripts/test_verl.sh` (own venv .venv-verl)"
)

import torch
from verl import DataProto
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig, PolicyLossConfig
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from sdar.integrations import verl as sdar_verl
from sdar.losses import (
    entropy_gate,
    gap_gate,
    ppo_clip_loss,
    sdar_loss,
    soft_or_gate,
)
from sdar.methods import LossConfig, LossInputs, actor_loss

GATES = {"sdar": "gap", "sdar_entropy_gate": "entropy", "sdar_soft_or": "soft_or"}
NAMES = list(GATES)


def actor_config(loss_mode: str = "sdar", **overrides) -> FSDPActorConfig:
    fields = {"strategy": "fsdp", "ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 2,
              "rollout_n": 2, "policy_loss": PolicyLossConfig(loss_mode=loss_mode),
              "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}
    fields.update(overrides)
    return FSDPActorConfig(**fields)


def random_batch(seed: int = 0, rows: int = 3, width: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    old = -rand(rows, width).abs() - 0.1
    mask = torch.ones(rows, width, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 2:] = False
    return {
        "old_log_prob": old,
        "log_prob": (old + 0.3 * rand(rows, width)).requires_grad_(),
        "advantages": rand(rows, 1).expand(rows, width).clone(),
        "response_mask": mask,
        "teacher_log_prob": old + 0.5 * rand(rows, width),
        "entropy": rand(rows, width).abs() * 2,
        "teacher_entropy": rand(rows, width).abs() * 2,
    }


def registered_loss(name, batch, config=None, **extra):
    fn = get_policy_loss_fn(name)
    return fn(
        old_log_prob=batch["old_log_prob"], log_prob=batch["log_prob"],
        advantages=batch["advantages"], response_mask=batch["response_mask"],
        loss_agg_mode="token-mean", config=config or actor_config(name), rollout_is_weights=None,
        teacher_log_prob=batch["teacher_log_prob"], entropy=batch["entropy"],
        teacher_entropy=batch["teacher_entropy"], **extra,
    )


def grad_of(loss, leaf):
    (grad,) = torch.autograd.grad(loss, leaf)
    return grad


# ---- registry -----------------------------------------------------------------------------------
def test_every_sdar_name_is_in_verls_registry():
    assert sdar_verl.POLICY_LOSS_GATES == GATES
    for name in NAMES:
        assert name in POLICY_LOSS_REGISTRY
        assert get_policy_loss_fn(name).__name__ == f"compute_policy_loss_{name}"
    POLICY_LOSS_REGISTRY.pop("sdar")
    sdar_verl.register_policy_losses()
    assert "sdar" in POLICY_LOSS_REGISTRY


# ---- equality with this project's losses ---------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_registered_loss_equals_actor_loss_and_its_gradient(name):
    batch = random_batch()
    loss, metrics = registered_loss(name, batch)
    reference_config = LossConfig(method="sdar", gate=GATES[name], c_ent=0.0,
                                  c_kl=0.0, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    reference, reference_metrics = actor_loss(reference_config, LossInputs(
        log_probs=batch["log_prob"], old_log_probs=batch["old_log_prob"],
        advantages=batch["advantages"], response_mask=batch["response_mask"],
        teacher_log_probs=batch["teacher_log_prob"], entropy=batch["entropy"],
        teacher_entropy=batch["teacher_entropy"],
    ))
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_of(loss, batch["log_prob"]),
                               grad_of(reference, batch["log_prob"]))
    assert metrics["sdar/gate_mean"] == pytest.approx(reference_metrics["sdar/gate_mean"])


@pytest.mark.parametrize("name", NAMES)
def test_registered_loss_is_ppo_clip_plus_lambda_sdar_with_the_named_gate(name):
    batch = random_batch(seed=1)
    loss, _ = registered_loss(name, batch)
    mask = batch["response_mask"]
    pg, _ = ppo_clip_loss(batch["log_prob"], batch["old_log_prob"], batch["advantages"], mask,
                          clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    g_gap = gap_gate(batch["log_prob"], batch["teacher_log_prob"], beta=5.0)
    g_entropy = entropy_gate(batch["entropy"], batch["teacher_entropy"], beta_entropy=5.0)
    gate = {"sdar": None, "sdar_entropy_gate": g_entropy,
            "sdar_soft_or": soft_or_gate(g_gap, g_entropy)}[name]
    distil, _ = sdar_loss(batch["log_prob"], batch["teacher_log_prob"], mask, beta=5.0, gate=gate)
    expected = pg + 0.01 * distil
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad_of(loss, batch["log_prob"]),
                               grad_of(expected, batch["log_prob"]))


def test_hand_computed_value_and_gradient():
    # One row, two tokens, ratio 1 (no clipping): pg = -A per token; gap = l_T - l.
    log_prob = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    batch = {
        "old_log_prob": torch.tensor([[-1.0, -2.0]]),
        "log_prob": log_prob,
        "advantages": torch.tensor([[0.5, 0.5]]),
        "response_mask": torch.tensor([[1, 1]]),
        "teacher_log_prob": torch.tensor([[-0.8, -2.4]]),
        "entropy": None,
        "teacher_entropy": None,
    }
    loss, metrics = registered_loss("sdar", batch)
    g1, g2 = 1 / (1 + math.exp(-5 * 0.2)), 1 / (1 + math.exp(-5 * -0.4))
    expected = -0.5 + 0.01 * (g1 * 0.2 + g2 * -0.4) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # d/dl of -A * exp(l - l_old) at ratio 1 is -A; of 0.01 * g * (l_T - l) / n is -0.01 * g / n.
    expected_grad = [(-0.5 - 0.01 * g1) / 2, (-0.5 - 0.01 * g2) / 2]
    assert grad_of(loss, log_prob).tolist()[0] == pytest.approx(expected_grad, abs=1e-6)
    assert metrics["sdar/gate_mean"] == pytest.approx((g1 + g2) / 2, abs=1e-6)


def test_ppo_part_equals_verls_vanilla_loss_including_global_token_scaling():
    batch = random_batch(seed=2)
    config = actor_config("sdar")
    config.global_batch_info.update(dp_size=2, batch_num_tokens=21)
    no_distil = LossConfig(method="sdar", sdar_lambda=0.0)
    ours, _ = registered_loss("sdar", batch, config=config, loss_config=no_distil)
    vanilla, _ = get_policy_loss_fn("vanilla")(
        old_log_prob=batch["old_log_prob"], log_prob=batch["log_prob"],
        advantages=batch["advantages"], response_mask=batch["response_mask"],
        loss_agg_mode="token-mean", config=config, rollout_is_weights=None,
    )
    torch.testing.assert_close(ours, vanilla)
    torch.testing.assert_close(grad_of(ours, batch["log_prob"]),
                               grad_of(vanilla, batch["log_prob"]))
    # With the default lambda the difference is exactly 0.01 * L_SDAR, scaled the same way.
    with_distil, _ = registered_loss("sdar", batch, config=config)
    distil, _ = sdar_loss(batch["log_prob"], batch["teacher_log_prob"], batch["response_mask"])
    scale = batch["response_mask"].sum() / 21 * 2
    torch.testing.assert_close(with_distil - vanilla, 0.01 * distil * scale)


def test_loss_config_sets_lambda_and_beta():
    batch = random_batch(seed=3)
    loss, metrics = registered_loss(
        "sdar", batch, loss_config=LossConfig(method="grpo_opsd"))  # beta 0: gate 0.5 everywhere
    assert metrics["sdar/gate_mean"] == pytest.approx(0.5)
    pg, _ = ppo_clip_loss(batch["log_prob"], batch["old_log_prob"], batch["advantages"],
                          batch["response_mask"], clip_low=0.2, clip_high=0.28)
    distil, _ = sdar_loss(batch["log_prob"], batch["teacher_log_prob"], batch["response_mask"],
                          beta=0.0)
    torch.testing.assert_close(loss, pg + 0.01 * distil)


# ---- errors --------------------------------------------------------------------------------------
def test_clear_errors_for_what_cannot_work():
    batch = random_batch()
    fn = get_policy_loss_fn("sdar")
    plain = {"old_log_prob": batch["old_log_prob"], "log_prob": batch["log_prob"],
             "advantages": batch["advantages"], "response_mask": batch["response_mask"],
             "config": actor_config()}
    with pytest.raises(ValueError, match="set_loss_fn"):
        fn(**plain)  # as verl's stock ppo_loss would call it: no teacher
    with pytest.raises(ValueError, match="token-mean"):
        fn(**plain, loss_agg_mode="seq-mean-token-mean", teacher_log_prob=batch["teacher_log_prob"])
    with pytest.raises(ValueError, match="rollout_correction"):
        fn(**plain, rollout_is_weights=torch.ones_like(batch["old_log_prob"]),
           teacher_log_prob=batch["teacher_log_prob"])
    with pytest.raises(ValueError, match="calculate_entropy"):
        get_policy_loss_fn("sdar_entropy_gate")(**plain, teacher_log_prob=batch["teacher_log_prob"])
    with pytest.raises(ValueError, match="no SDAR term"):
        fn(**plain, teacher_log_prob=batch["teacher_log_prob"], loss_config=LossConfig("grpo"))
    with pytest.raises(ValueError, match="sdar_entropy_gate"):
        fn(**plain, teacher_log_prob=batch["teacher_log_prob"],
           loss_config=LossConfig(gate="entropy"))


# ---- the full actor loss through verl's own ppo_loss --------------------------------------------
def verl_micro_batch(prompt_lens, response_lens, width_p=5, width_r=4, seed=0):
    """A micro-batch in verl's no-padding layout, built by verl's own conversion."""
    generator = torch.Generator().manual_seed(seed)
    rows = len(prompt_lens)
    prompts = torch.zeros(rows, width_p, dtype=torch.long)
    responses = torch.zeros(rows, width_r, dtype=torch.long)
    attention = torch.zeros(rows, width_p + width_r, dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        prompts[row, width_p - p:] = torch.randint(3, 50, (p,), generator=generator)
        responses[row, :r] = torch.randint(3, 50, (r,), generator=generator)
        attention[row, width_p - p:width_p + r] = 1
    response_mask = attention[:, width_p:].clone()
    old = -torch.rand(rows, width_r, generator=generator) - 0.2
    per_token = {
        "old_log_probs": old,
        "advantages": torch.randn(rows, 1, generator=generator).expand(rows, width_r).clone(),
        "ref_log_prob": old + 0.2 * torch.randn(rows, width_r, generator=generator),
        sdar_verl.TEACHER_LOG_PROBS_KEY: old + 0.4 * torch.randn(rows, width_r, generator=generator),
        sdar_verl.TEACHER_ENTROPY_KEY: torch.rand(rows, width_r, generator=generator) * 3,
    }
    proto = DataProto.from_dict(tensors={
        "prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": attention, "response_mask": response_mask,
        "position_ids": torch.clamp(attention.cumsum(1) - 1, min=0), **per_token,
    })
    data = left_right_2_no_padding(proto.to_tensordict())
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    student = -torch.rand(rows, width_r, generator=generator) - 0.1
    student = (student + 0.0).requires_grad_()
    entropy = (torch.rand(rows, width_r, generator=generator) * 3).requires_grad_()
    return data, per_token, response_mask, student, entropy


def as_model_output(per_response: torch.Tensor, prompt_lens, response_lens) -> torch.Tensor:
    """verl's model output: one value per sequence token, position t scoring token t + 1."""
    pieces, offsets = [], [0]
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        pieces.append(torch.cat([per_response.new_zeros(p - 1), per_response[row, :r],
                                 per_response.new_zeros(1)]))
        offsets.append(offsets[-1] + p + r)
    return torch.nested.nested_tensor_from_jagged(torch.cat(pieces), offsets=torch.tensor(offsets))


@pytest.mark.parametrize("name", NAMES)
def test_sdar_actor_loss_through_verls_ppo_loss_equals_actor_loss(name):
    prompt_lens, response_lens = [3, 5, 2], [4, 2, 3]
    data, per_token, mask, student, entropy = verl_micro_batch(prompt_lens, response_lens)
    config = actor_config(name, use_kl_loss=True, kl_loss_coef=0.01, kl_loss_type="low_var_kl",
                          entropy_coeff=0.001)
    model_output = {"log_probs": as_model_output(student, prompt_lens, response_lens),
                    "entropy": as_model_output(entropy, prompt_lens, response_lens)}
    loss, metrics = sdar_verl.make_actor_loss(config)(model_output=model_output, data=data)
    reference, _ = actor_loss(
        LossConfig(method="sdar", gate=GATES[name], c_ent=0.001, c_kl=0.01,
                   clip_low=0.2, clip_high=0.28, dual_clip=3.0),
        LossInputs(log_probs=student, old_log_probs=per_token["old_log_probs"],
                   advantages=per_token["advantages"], response_mask=mask,
                   ref_log_probs=per_token["ref_log_prob"],
                   teacher_log_probs=per_token[sdar_verl.TEACHER_LOG_PROBS_KEY],
                   entropy=entropy, teacher_entropy=per_token[sdar_verl.TEACHER_ENTROPY_KEY]),
    )
    torch.testing.assert_close(loss, reference)
    grads = torch.autograd.grad(loss, [student, entropy])
    reference_grads = torch.autograd.grad(reference, [student, entropy])
    for got, want in zip(grads, reference_grads):
        torch.testing.assert_close(got, want)
    assert "sdar/gate_mean" in metrics and "kl_loss" in metrics


def test_sdar_actor_loss_errors_name_the_fix():
    data, _, _, student, _ = verl_micro_batch([2, 3], [2, 2])
    output = {"log_probs": as_model_output(student, [2, 3], [2, 2])}
    with pytest.raises(ValueError, match="loss_mode"):
        sdar_verl.sdar_actor_loss(actor_config("vanilla"), output, data)
    del data[sdar_verl.TEACHER_LOG_PROBS_KEY]
    with pytest.raises(KeyError, match="teacher log-probs"):
        sdar_verl.sdar_actor_loss(actor_config("sdar"), output, data)


# ---- teacher inputs ------------------------------------------------------------------------------
def rollout_batch():
    prompts = torch.tensor([[0, 0, 11, 12], [21, 22, 23, 24]])
    responses = torch.tensor([[31, 32, 0], [41, 42, 43]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses,
                 "input_ids": torch.cat([prompts, responses], 1), "attention_mask": attention,
                 "response_mask": attention[:, 4:].clone(),
                 "position_ids": torch.clamp(attention.cumsum(1) - 1, min=0)},
        meta_info={"temperature": 0.7},
    )


def test_build_teacher_batch_layout():
    teacher = sdar_verl.build_teacher_batch(rollout_batch(), [[7, 8, 9], []], pad_token_id=0)
    tensors = teacher.batch
    assert tensors["prompts"].tolist() == [[7, 8, 9, 11, 12], [0, 21, 22, 23, 24]]
    assert tensors["responses"].tolist() == [[31, 32, 0], [41, 42, 43]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0],
                                                  [0, 1, 1, 1, 1, 1, 1, 1]]
    assert tensors["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 6],
                                                [0, 0, 1, 2, 3, 4, 5, 6]]
    assert tensors["input_ids"].tolist() == [[7, 8, 9, 11, 12, 31, 32, 0],
                                             [0, 21, 22, 23, 24, 41, 42, 43]]
    assert tensors["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert teacher.meta_info == {"temperature": 0.7}
    wrong = DataProto.from_dict(tensors={"old_log_probs": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="build_teacher_batch for this same batch"):
        sdar_verl.attach_teacher_outputs(rollout_batch(), wrong)
    with pytest.raises(ValueError, match="one .possibly empty. list"):
        sdar_verl.build_teacher_batch(rollout_batch(), [[1]], pad_token_id=0)


class TinyCausalScorer:
    """A real (tiny) causal model: log p(y_t | y_<t) from a bag of the preceding token ids."""

    def __init__(self, vocab=64, dim=8):
        generator = torch.Generator().manual_seed(5)
        self.embed = torch.randn(vocab, dim, generator=generator)
        self.out = torch.randn(dim, vocab, generator=generator)

    def sequence_log_probs(self, ids: list[int]) -> torch.Tensor:
        """Per position t < len - 1: log-prob of ids[t + 1] given ids[: t + 1]."""
        values = []
        for t in range(len(ids) - 1):
            context = self.embed[torch.tensor(ids[: t + 1])].mean(0)
            values.append(torch.log_softmax(context @ self.out, -1)[ids[t + 1]])
        return torch.stack(values)


class FakeRayTrainer:
    """Stands in for RayPPOTrainer's log-prob pass: verl's own padding conversions around a tiny
    real model, as the actor worker does around the policy."""

    scorer = TinyCausalScorer()

    class tokenizer:
        pad_token_id = 0
        eos_token_id = 1

    def _compute_old_log_prob(self, batch):
        data = left_right_2_no_padding(batch.to_tensordict())
        per_sequence = [self.scorer.sequence_log_probs(row.tolist()) for row in data["input_ids"]]
        padded = [torch.cat([v, v.new_zeros(1)]) for v in per_sequence]
        offsets = torch.tensor([0] + [len(v) for v in padded]).cumsum(0)
        values = torch.nested.nested_tensor_from_jagged(torch.cat(padded), offsets=offsets)
        log_probs = no_padding_2_padding(values, data)
        return DataProto.from_dict(tensors={"old_log_probs": log_probs,
                                            "entropys": -log_probs}), 0.0


class MixedTrainer(sdar_verl.SdarTrainerMixin, FakeRayTrainer):
    pass


def test_mixin_scores_the_skill_prefixed_prompt_with_the_same_model():
    batch = rollout_batch()
    prefixes = [[7, 8, 9], [5]]
    batch.non_tensor_batch[sdar_verl.SKILL_PREFIX_KEY] = np.array(prefixes, dtype=object)
    output, _ = MixedTrainer()._compute_old_log_prob(batch)
    teacher = output.batch[sdar_verl.TEACHER_LOG_PROBS_KEY]
    student = output.batch["old_log_probs"]
    scorer = FakeRayTrainer.scorer
    rows = [([11, 12], [31, 32]), ([21, 22, 23, 24], [41, 42, 43])]
    for row, (prompt, response) in enumerate(rows):
        for who, prefix, got in (("student", [], student), ("teacher", prefixes[row], teacher)):
            context = prefix + prompt
            want = scorer.sequence_log_probs(context + response)[len(context) - 1:]
            torch.testing.assert_close(got[row, : len(response)], want, msg=who)
    assert not torch.allclose(teacher[1], student[1])  # the prefix changes the scores
    assert output.batch[sdar_verl.TEACHER_ENTROPY_KEY].shape == teacher.shape
    del batch.non_tensor_batch[sdar_verl.SKILL_PREFIX_KEY]
    with pytest.raises(KeyError, match="skill_prefix_ids"):
        MixedTrainer()._compute_old_log_prob(batch)

"""SDAR inside verl (tested against verl 0.9.1): policy losses in verl's registry + teacher inputs.

For teams that already train with verl, the engine the SDAR authors used. Importing this module
registers, through ``verl.trainer.ppo.core_algos.register_policy_loss``:

=====================  ==========================================================================
``loss_mode``          actor loss (docs/algorithm.md, "The objective")
=====================  ==========================================================================
``sdar``               PPO clip (+ dual clip) + lambda * L_SDAR with the gap gate (released code)
``sdar_entropy_gate``  the same with the entropy gate ``sigmoid(beta_h * (H_student - H_teacher))``
``sdar_soft_or``       the same with the soft-OR of the gap and entropy gates
=====================  ==========================================================================

Both terms are computed by this project's own functions (``sdar.methods.actor_loss``, i.e.
``ppo_clip_loss`` + ``sdar_loss``); the clip range comes from verl's actor config
(``clip_ratio_low`` / ``clip_ratio_high`` / ``clip_ratio_c``) exactly as verl's ``vanilla`` loss
reads it, and verl's own ``ppo_loss`` still adds the entropy bonus (``entropy_coeff``) and the KL
loss (``use_kl_loss``, ``kl_loss_type=low_var_kl``, ``kl_loss_coef``). lambda, beta and the gate
sharpness come from a ``sdar.methods.LossConfig`` (defaults: the released 0.01 / 5 / 5).

Why a replacement actor loss is needed. verl 0.9.1 hands a policy loss only ``old_log_prob``,
``log_prob``, ``advantages``, ``response_mask``, ``loss_agg_mode``, ``config`` and
``rollout_is_weights``; the teacher's log-probs cannot reach it through that signature. They
travel in the actor batch instead, and ``sdar_actor_loss`` (a drop-in for verl's
``verl.workers.utils.losses.ppo_loss``) puts the micro-batch's teacher tensors in scope and then calls
verl's ``ppo_loss`` unchanged, which calls the registered policy loss.

Actor-batch keys (``DataProto.batch``, all ``[batch, response_len]`` aligned with ``responses``,
right-padded like ``old_log_probs``):

* ``teacher_log_probs`` (``TEACHER_LOG_PROBS_KEY``): log-probs of the sampled response tokens under
  the rollout-time weights with the skill-prefixed prompt. Required.
* ``teacher_entropy`` (``TEACHER_ENTROPY_KEY``): the teacher's next-token entropy at each response
  position. Required for ``sdar_entropy_gate`` / ``sdar_soft_or`` (which also need the student
  entropy, so set ``actor.calculate_entropy=True``).
* ``non_tensor_batch["skill_prefix_ids"]`` (``SKILL_PREFIX_KEY``): one list of token ids per row,
  the tokenised ``"[Privileged Skill Information]\\n" + skills + "\\n\\n"`` prefix
  (``sdar.rollout.prompts.PromptBuilder.skill_prefix_ids`` builds it). Read by ``SdarTrainerMixin``.

Teacher log-probs are computed the way the released code does it: the same actor, with the
rollout-time weights, scores the unchanged response tokens after the skill-prefixed prompt, once
per iteration before the update. ``build_teacher_batch`` lays such a batch out as verl expects
(left-padded prompts, right-padded responses, attention mask, position ids), so verl's own
``compute_log_prob`` can score it; ``attach_teacher_outputs`` copies the result into the actor
batch. ``SdarTrainerMixin`` does both inside ``RayPPOTrainer._compute_old_log_prob`` and installs
``sdar_actor_loss`` on the actor workers. Supported: ``loss_agg_mode=token-mean`` (what SDAR uses),
no rollout-correction importance weights, 2-D position ids (text models).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

try:
    from verl import DataProto
    from verl.trainer.ppo import core_algos as _verl_core_algos
except ImportError as _error:  # pragma: no cover - exercised only where verl is missing
    raise ImportError(
        "sdar.integrations.verl needs verl 0.9.x, which is not installed in this environment. "
        "Install it with `pip install 'sdar[verl]'`, or run `bash scripts/test_verl.sh`, which "
        "builds a separate .venv-verl (verl pins its own transformers, so keep it out of the "
        f"main environment). Original error: {_error}"
    ) from _error

from sdar.methods import LossConfig, LossInputs, actor_loss

__all__ = [
    "POLICY_LOSS_GATES",
    "SKILL_PREFIX_KEY",
    "TEACHER_ENTROPY_KEY",
    "TEACHER_LOG_PROBS_KEY",
    "SdarTrainerMixin",
    "attach_teacher_outputs",
    "build_teacher_batch",
    "make_actor_loss",
    "register_policy_losses",
    "sdar_actor_loss",
]

TEACHER_LOG_PROBS_KEY = "teacher_log_probs"
TEACHER_ENTROPY_KEY = "teacher_entropy"
SKILL_PREFIX_KEY = "skill_prefix_ids"

POLICY_LOSS_GATES: dict[str, str] = {
    "sdar": "gap",
    "sdar_entropy_gate": "entropy",
    "sdar_soft_or": "soft_or",
}
"""verl ``policy_loss.loss_mode`` name -> SDAR gate (``LossConfig.gate``)."""


# ---- the policy losses ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _MicroBatchScope:
    """What ``sdar_actor_loss`` hands the registered policy loss for one micro-batch."""

    teacher_log_probs: Tensor | None
    teacher_entropy: Tensor | None
    entropy: Tensor | None
    loss_config: LossConfig | None


_SCOPE: contextvars.ContextVar[_MicroBatchScope | None] = contextvars.ContextVar(
    "sdar_verl_micro_batch", default=None
)


def _verl_get(config: Any, name: str, default: Any = None) -> Any:
    """Read a field from verl's ActorConfig or a DictConfig/dict alike."""
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(name, default)
    getter = getattr(config, "get", None)
    if callable(getter):
        return getter(name, default)
    return getattr(config, name, default)


def _clip_settings(config: Any) -> tuple[float, float, float]:
    """(clip_low, clip_high, dual_clip) read exactly as verl's ``vanilla`` loss reads them."""
    clip = _verl_get(config, "clip_ratio", 0.2)
    low = _verl_get(config, "clip_ratio_low", None)
    high = _verl_get(config, "clip_ratio_high", None)
    dual = _verl_get(config, "clip_ratio_c", 3.0)
    return (float(clip if low is None else low), float(clip if high is None else high),
            float(dual))


def _global_token_scale(config: Any, response_mask: Tensor) -> Tensor | float:
    """Factor turning a micro-batch token mean into verl's ``agg_loss`` token-mean.

    verl normalises by the global mini-batch's token count and multiplies by the data-parallel
    size (so that summed micro-batch gradients, averaged over ranks, give the global token mean).
    """
    info = _verl_get(config, "global_batch_info", None) or {}
    dp_size = info.get("dp_size", 1) or 1
    batch_num_tokens = info.get("batch_num_tokens", None)
    if batch_num_tokens is None:
        if dp_size > 1:
            raise ValueError(
                "sdar policy loss: verl passed dp_size > 1 without batch_num_tokens; the global "
                "token count is needed to normalise the loss across data-parallel ranks"
            )
        return 1.0
    local_tokens = response_mask.bool().sum()
    return local_tokens / batch_num_tokens * dp_size


def _loss_config_for(name: str, loss_config: LossConfig | None, verl_config: Any) -> LossConfig:
    """The LossConfig the policy loss ``name`` computes with: gate from the name, clip from verl,
    entropy and KL terms off (verl's ``ppo_loss`` adds those itself)."""
    gate = POLICY_LOSS_GATES[name]
    base = loss_config if loss_config is not None else LossConfig(method="sdar")
    if not isinstance(base, LossConfig):
        raise TypeError(f"policy loss {name!r}: loss_config must be a sdar.methods.LossConfig, "
                        f"got {type(base).__name__}")
    if base.spec.distillation != "sdar":
        raise ValueError(
            f"policy loss {name!r}: LossConfig(method={base.method!r}) has no SDAR term; use "
            f"method 'sdar', 'grpo_opsd' (beta 0) or 'opsd' (no PPO term)"
        )
    if base.gate not in ("gap", gate):
        raise ValueError(
            f"policy loss {name!r} uses the {gate!r} gate but LossConfig.gate is {base.gate!r}; "
            f"the verl loss_mode chooses the gate: use loss_mode "
            f"{next(k for k, v in POLICY_LOSS_GATES.items() if v == base.gate)!r} instead"
        )
    clip_low, clip_high, dual_clip = _clip_settings(verl_config)
    return dataclasses.replace(base, gate=gate, c_ent=0.0, c_kl=0.0, clip_low=clip_low,
                               clip_high=clip_high, dual_clip=dual_clip)


def _make_policy_loss(name: str):
    gate = POLICY_LOSS_GATES[name]

    def policy_loss(
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: Tensor | None = None,
        *,
        teacher_log_prob: Tensor | None = None,
        entropy: Tensor | None = None,
        teacher_entropy: Tensor | None = None,
        loss_config: LossConfig | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        scope = _SCOPE.get()
        if scope is not None:
            teacher_log_prob = scope.teacher_log_probs if teacher_log_prob is None \
                else teacher_log_prob
            teacher_entropy = scope.teacher_entropy if teacher_entropy is None else teacher_entropy
            entropy = scope.entropy if entropy is None else entropy
            loss_config = scope.loss_config if loss_config is None else loss_config
        if teacher_log_prob is None:
            raise ValueError(
                f"verl policy loss {name!r} needs the micro-batch's teacher log-probs, which "
                f"verl's stock ppo_loss does not pass. Put them in the actor batch under "
                f"{TEACHER_LOG_PROBS_KEY!r} (build_teacher_batch + attach_teacher_outputs, or "
                f"SdarTrainerMixin) and install the actor loss with "
                f"actor_rollout_wg.set_loss_fn(sdar.integrations.verl.make_actor_loss(...))"
            )
        if loss_agg_mode != "token-mean":
            raise ValueError(
                f"verl policy loss {name!r} supports loss_agg_mode='token-mean' only (SDAR's "
                f"token mean over the batch), got {loss_agg_mode!r}; set "
                f"actor_rollout_ref.actor.loss_agg_mode=token-mean"
            )
        if rollout_is_weights is not None:
            raise ValueError(
                f"verl policy loss {name!r} does not apply rollout-correction importance weights; "
                f"disable algorithm.rollout_correction (SDAR recomputes old log-probs instead)"
            )
        if gate != "gap" and (entropy is None or teacher_entropy is None):
            raise ValueError(
                f"verl policy loss {name!r} needs the student entropy (set "
                f"actor_rollout_ref.actor.calculate_entropy=True) and the teacher entropy in the "
                f"batch under {TEACHER_ENTROPY_KEY!r}"
            )
        mask = response_mask.bool()
        config_used = _loss_config_for(name, loss_config, config)
        inputs = LossInputs(
            log_probs=log_prob,
            old_log_probs=old_log_prob,
            advantages=advantages,
            response_mask=mask,
            teacher_log_probs=teacher_log_prob.to(log_prob.dtype),
            entropy=None if entropy is None else entropy.detach(),
            teacher_entropy=None if teacher_entropy is None else teacher_entropy.to(log_prob.dtype),
        )
        loss, metrics = actor_loss(config_used, inputs)
        # verl logs its own actor/pg_loss (the returned value); ours would be unscaled duplicates.
        metrics.pop("actor/loss", None)
        metrics.pop("actor/pg_loss", None)
        return loss * _global_token_scale(config, mask), metrics

    policy_loss.__name__ = f"compute_policy_loss_{name}"
    policy_loss.__qualname__ = policy_loss.__name__
    policy_loss.__doc__ = (
        f"verl policy loss {name!r}: token-mean PPO clip + lambda * L_SDAR ({gate} gate).\n\n"
        "verl's PolicyLossFn signature, plus keyword-only ``teacher_log_prob``, ``entropy``,\n"
        "``teacher_entropy`` and ``loss_config`` (taken from ``sdar_actor_loss``'s micro-batch\n"
        "scope when not passed). Returns ``(loss, metrics)`` scaled like verl's ``agg_loss``."
    )
    return policy_loss


def register_policy_losses() -> dict[str, Any]:
    """Register every name of ``POLICY_LOSS_GATES`` in verl's policy-loss registry (idempotent).

    Runs at import; call it again in a process that cleared the registry. Returns name -> function.
    """
    registered = {}
    for name in POLICY_LOSS_GATES:
        registered[name] = _verl_core_algos.register_policy_loss(name)(_make_policy_loss(name))
    return registered


register_policy_losses()


# ---- the actor loss that carries the teacher tensors ------------------------------------------------
def _padded(value: Tensor | None) -> Tensor | None:
    if value is None:
        return None
    return value.to_padded_tensor(0.0) if value.is_nested else value


def sdar_actor_loss(config: Any, model_output: dict, data: Any, dp_group: Any = None, *,
                    loss_config: LossConfig | None = None):
    """Drop-in replacement for verl's ``verl.workers.utils.losses.ppo_loss`` (same signature).

    Reads ``teacher_log_probs`` (and, if present, ``teacher_entropy``) of the micro-batch ``data``
    and the student entropy of ``model_output``, makes them visible to the registered SDAR policy
    loss, then runs verl's ``ppo_loss`` unchanged (entropy bonus, KL loss, metrics, global-batch
    normalisation all as verl does them). ``config.policy_loss.loss_mode`` must be one of
    ``POLICY_LOSS_GATES``; ``loss_config`` sets lambda / beta / beta_entropy (default: released).
    """
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    loss_mode = _verl_get(_verl_get(config, "policy_loss", None), "loss_mode", "vanilla")
    if loss_mode not in POLICY_LOSS_GATES:
        raise ValueError(
            f"sdar_actor_loss: actor policy_loss.loss_mode is {loss_mode!r}; set "
            f"actor_rollout_ref.actor.policy_loss.loss_mode to one of {list(POLICY_LOSS_GATES)}"
        )
    keys = set(data.keys())  # TensorDict refuses `in` on itself
    if TEACHER_LOG_PROBS_KEY not in keys:
        raise KeyError(
            f"sdar_actor_loss: the actor batch has no {TEACHER_LOG_PROBS_KEY!r}; compute the "
            f"teacher log-probs before the update (SdarTrainerMixin, or build_teacher_batch + "
            f"attach_teacher_outputs)"
        )
    entropy = model_output.get("entropy", None)
    scope = _MicroBatchScope(
        teacher_log_probs=_padded(data[TEACHER_LOG_PROBS_KEY]),
        teacher_entropy=_padded(data[TEACHER_ENTROPY_KEY]) if TEACHER_ENTROPY_KEY in keys
        else None,
        entropy=None if entropy is None else no_padding_2_padding(entropy, data),
        loss_config=loss_config,
    )
    token = _SCOPE.set(scope)
    try:
        return ppo_loss(config, model_output, data, dp_group)
    finally:
        _SCOPE.reset(token)


def make_actor_loss(actor_config: Any, loss_config: LossConfig | None = None):
    """``sdar_actor_loss`` bound to verl's actor config, for ``actor_rollout_wg.set_loss_fn``."""
    return functools.partial(sdar_actor_loss, config=actor_config, loss_config=loss_config)


# ---- teacher inputs -----------------------------------------------------------------------------
def build_teacher_batch(batch: DataProto, skill_prefix_ids: Sequence[Sequence[int]],
                        pad_token_id: int) -> DataProto:
    """The teacher's view of an actor batch: skill prefix + the same prompt, the same responses.

    Args:
        batch: verl's rollout batch with ``prompts`` ``[B, P]`` (left-padded), ``responses``
            ``[B, R]`` (right-padded), ``attention_mask`` ``[B, P + R]`` and ``response_mask``
            ``[B, R]``. Its ``meta_info`` (e.g. ``temperature``) is carried over, because verl's
            log-prob pass divides the logits by the rollout temperature.
        skill_prefix_ids: one list of token ids per row (may be empty: that row's teacher equals
            the student), the tokenised skill block that goes before the chat-rendered prompt.
        pad_token_id: id written into padding positions (never attended).

    Returns:
        A ``DataProto`` with ``prompts`` ``[B, P']`` (prefix + prompt, left-padded to the longest),
        the unchanged ``responses`` and ``response_mask``, ``input_ids`` = prompts + responses,
        ``attention_mask`` and ``position_ids`` (0, 1, ... over attended tokens), ready for verl's
        ``compute_log_prob``; its ``old_log_probs`` are the teacher log-probs of the response
        tokens, aligned with ``batch``'s.
    """
    tensors = batch.batch
    keys = set(tensors.keys())
    for key in ("prompts", "responses", "attention_mask", "response_mask"):
        if key not in keys:
            raise KeyError(f"build_teacher_batch: the batch has no {key!r}; it needs a verl "
                           f"rollout batch (prompts, responses, attention_mask, response_mask)")
    prompts, responses = tensors["prompts"], tensors["responses"]
    attention_mask = tensors["attention_mask"]
    rows, prompt_width = prompts.shape
    if len(skill_prefix_ids) != rows:
        raise ValueError(f"build_teacher_batch: {len(skill_prefix_ids)} skill prefixes for a batch "
                         f"of {rows} rows; give one (possibly empty) list of ids per row")
    if "position_ids" in keys and tensors["position_ids"].dim() != 2:
        raise ValueError("build_teacher_batch: only 2-D position_ids (text models) are supported; "
                         "multimodal rope position ids would need the prefix inserted per axis")
    prompt_mask = attention_mask[:, :prompt_width].bool()
    teacher_prompts = []
    for row in range(rows):
        prefix = torch.as_tensor(list(skill_prefix_ids[row]), dtype=prompts.dtype)
        teacher_prompts.append(torch.cat([prefix, prompts[row][prompt_mask[row]].cpu()]))
    width = max(len(p) for p in teacher_prompts)
    new_prompts = torch.full((rows, width), pad_token_id, dtype=prompts.dtype)
    new_prompt_mask = torch.zeros((rows, width), dtype=attention_mask.dtype)
    for row, ids in enumerate(teacher_prompts):
        new_prompts[row, width - len(ids):] = ids
        new_prompt_mask[row, width - len(ids):] = 1
    device = prompts.device
    new_prompts, new_prompt_mask = new_prompts.to(device), new_prompt_mask.to(device)
    new_attention = torch.cat([new_prompt_mask, attention_mask[:, prompt_width:]], dim=1)
    position_ids = torch.clamp(torch.cumsum(new_attention, dim=1) - 1, min=0)
    teacher = DataProto.from_dict(
        tensors={
            "prompts": new_prompts,
            "responses": responses,
            "response_mask": tensors["response_mask"],
            "input_ids": torch.cat([new_prompts, responses], dim=1),
            "attention_mask": new_attention,
            "position_ids": position_ids,
        },
        meta_info=dict(batch.meta_info),
    )
    return teacher


def attach_teacher_outputs(target: DataProto, teacher_output: DataProto) -> DataProto:
    """Copy verl's log-prob output for a teacher batch into ``target`` under the SDAR keys.

    ``teacher_output`` is what verl's log-prob pass returned for ``build_teacher_batch(...)``:
    ``old_log_probs`` -> ``teacher_log_probs`` and, if present, ``entropys`` -> ``teacher_entropy``.
    Shapes must match ``target``'s responses. Returns ``target`` (modified in place).
    """
    log_probs = teacher_output.batch["old_log_probs"]
    keys = set(target.batch.keys())
    expected = target.batch["responses"].shape if "responses" in keys else None
    if expected is None and "old_log_probs" in keys:
        expected = target.batch["old_log_probs"].shape
    if expected is not None and log_probs.shape != expected:
        raise ValueError(f"attach_teacher_outputs: teacher log-probs have shape "
                         f"{tuple(log_probs.shape)} but the batch's responses have {tuple(expected)}; "
                         f"score the batch returned by build_teacher_batch for this same batch")
    target.batch[TEACHER_LOG_PROBS_KEY] = log_probs.float()
    if "entropys" in set(teacher_output.batch.keys()):
        target.batch[TEACHER_ENTROPY_KEY] = teacher_output.batch["entropys"].float()
    return target


class SdarTrainerMixin:
    """Mix into verl's ``RayPPOTrainer`` (``class Trainer(SdarTrainerMixin, RayPPOTrainer)``).

    * ``init_workers`` additionally installs ``sdar_actor_loss`` on the actor workers, with
      ``self.sdar_loss_config`` (a ``LossConfig``; default the released settings).
    * ``_compute_old_log_prob`` additionally scores the teacher batch (skill prefixes from
      ``batch.non_tensor_batch["skill_prefix_ids"]``) with the same weights and adds
      ``teacher_log_probs`` / ``teacher_entropy`` to the output that verl unions into the batch.

    Not compatible with verl's rollout-correction bypass mode, which skips the old log-prob pass.
    """

    sdar_loss_config: LossConfig | None = None

    def init_workers(self) -> None:
        super().init_workers()  # type: ignore[misc]
        from verl.utils.config import omega_conf_to_dataclass

        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)  # type: ignore[attr-defined]
        self.actor_rollout_wg.set_loss_fn(  # type: ignore[attr-defined]
            make_actor_loss(actor_config, self.sdar_loss_config)
        )

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)  # type: ignore[misc]
        if SKILL_PREFIX_KEY not in batch.non_tensor_batch:
            raise KeyError(
                f"SdarTrainerMixin: the batch has no non_tensor_batch[{SKILL_PREFIX_KEY!r}]; the "
                f"dataset / agent loop must provide each row's tokenised skill prefix"
            )
        pad_id = self.tokenizer.pad_token_id  # type: ignore[attr-defined]
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id  # type: ignore[attr-defined]
        teacher = build_teacher_batch(batch, list(batch.non_tensor_batch[SKILL_PREFIX_KEY]), pad_id)
        teacher_output, _ = super()._compute_old_log_prob(teacher)  # type: ignore[misc]
        attach_teacher_outputs(old_log_prob, teacher_output)
        return old_log_prob, mfu

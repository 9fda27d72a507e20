"""The loss terms of SDAR and of the baselines it is compared with, as small pure functions.

Tensors in, tensors and metrics out; nothing here knows about models, environments or trainers.
Headings cited are those of ``docs/algorithm.md`` (the project's page mapping every line of the
objective to a function here).

Conventions shared by every function:

* Per-token tensors are ``[batch, response_len]`` (one row per step sample) and must all have the
  same shape. ``response_mask`` is 0/1 or bool of that shape and marks the response tokens.
* Positions outside the mask never influence a value or a gradient, whatever they hold (NaN
  included): they are replaced by 0 before anything is computed.
* ``token_mean`` is over all masked tokens of the batch passed in (not a per-sequence mean). When
  a trainer accumulates gradients over micro-batches it weights each micro-batch itself.
* Bad input (shape mismatch, wrong mask, all-zero mask, NaN/inf on response tokens, out-of-range
  coefficients) raises ``ValueError``/``TypeError`` naming the argument.
* ``log_probs`` (the current policy) is the only input that carries gradient unless a docstring
  says otherwise; every other log-prob input is detached inside the function.
* Metrics are 0-d tensors (detached); ``sdar.methods.actor_loss`` turns them into floats.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdar._checks import (
    check_finite,
    check_mask,
    check_number,
    check_same_shape,
    check_tensor,
    masked_fill_invalid,
)
from sdar.models.logprobs import generalized_jsd_from_logits

__all__ = [
    "entropy_gate",
    "gap_gate",
    "generalized_jsd_loss",
    "low_var_kl",
    "opsd_sampled_loss",
    "ppo_clip_loss",
    "sdar_loss",
    "skill_sd_loss",
    "soft_or_gate",
    "token_mean",
]

# exp() of a log-ratio above this overflows float32 long before it means anything; verl clamps too.
_LOG_RATIO_CLAMP = 20.0


def _prepare(where: str, response_mask: Tensor, **per_token: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Validate same-shape per-token tensors and a mask; return (bool mask, zero-padded tensors)."""
    (first_name, first), *_ = per_token.items()
    check_tensor(where, first_name, first, ndim=2)
    check_same_shape(where, first_name, first, **dict(list(per_token.items())[1:]))
    mask = check_mask(where, response_mask, first.shape, shape_of=first_name)
    cleaned = []
    for name, value in per_token.items():
        check_finite(where, name, value, mask)
        cleaned.append(masked_fill_invalid(value, mask))
    return mask, cleaned


def _mean(values: Tensor, mask: Tensor) -> Tensor:
    """Token mean without checks, for values already zeroed outside ``mask``."""
    return values.sum() / mask.sum()


def _std(values: Tensor, mask: Tensor) -> Tensor:
    """Population standard deviation over masked tokens (metric only, detached)."""
    values = values.detach()
    mean = _mean(values, mask)
    return torch.sqrt(_mean(torch.where(mask, (values - mean) ** 2, 0.0), mask))


def token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the tokens where ``mask`` is set.

    See section "Notation and tensor contracts" for why it is not a mean of per-row means.

    Args:
        values: ``[batch, response_len]`` floating tensor (any shape works if ``mask`` matches).
        mask: 0/1 or bool tensor of the same shape; must select at least one token.

    Returns:
        0-d tensor ``sum(values * mask) / sum(mask)``; differentiable in ``values``. The mean is
        over the tokens of this batch only: the trainer weights micro-batches when accumulating.
        Masked-out positions may hold anything (NaN included) without changing the result.
    """
    check_tensor("token_mean", "values", values)
    mask_bool = check_mask("token_mean", mask, values.shape, shape_of="values")
    check_finite("token_mean", "values", values, mask_bool)
    return _mean(masked_fill_invalid(values, mask_bool), mask_bool)


def low_var_kl(
    log_probs: Tensor, ref_log_probs: Tensor, response_mask: Tensor | None = None
) -> Tensor:
    """Per-token "low-variance" k3 estimate of KL(pi_theta || pi_ref) (section
    "KL to the reference").

    ``k3 = exp(l_ref - l) - (l_ref - l) - 1``, clamped to ``[-10, 10]`` as verl does. The log-ratio
    is first clamped to ``[-20, 20]`` so that ``exp`` cannot overflow to inf.

    Args:
        log_probs: ``[batch, response_len]`` current-policy log-probs of the sampled tokens (grad).
        ref_log_probs: same shape, frozen reference model; detached here.
        response_mask: optional mask of the same shape; when given, positions outside it are
            ignored (result 0 there) and only response tokens are checked for NaN/inf.

    Returns:
        ``[batch, response_len]`` per-token KL estimate (>= 0); average it with ``token_mean``.
    """
    where = "low_var_kl"
    check_tensor(where, "log_probs", log_probs)
    check_same_shape(where, "log_probs", log_probs, ref_log_probs=ref_log_probs)
    ref_log_probs = ref_log_probs.detach()
    if response_mask is not None:
        mask = check_mask(where, response_mask, log_probs.shape)
        check_finite(where, "log_probs", log_probs, mask)
        check_finite(where, "ref_log_probs", ref_log_probs, mask)
        log_probs = masked_fill_invalid(log_probs, mask)
        ref_log_probs = masked_fill_invalid(ref_log_probs, mask)
    else:
        check_finite(where, "log_probs", log_probs)
        check_finite(where, "ref_log_probs", ref_log_probs)
    log_ratio = torch.clamp(ref_log_probs - log_probs, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-mean PPO clipped surrogate with dual clip (``L_GRPO`` of section "PPO surrogate").

    Per token, with ``r = exp(l - l_old)`` and advantage ``A``::

        pg = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))
        pg = min(pg, -A * dual_clip)      where A < 0 (dual clip; skipped if dual_clip is None)
        loss = token_mean(pg)

    Args:
        log_probs: ``[batch, response_len]`` current policy, with gradient.
        old_log_probs: rollout-time policy, same shape; detached here.
        advantages: per-token advantages (the step sample's advantage on each of its response
            tokens), same shape; detached here.
        response_mask: 0/1 or bool, same shape.
        clip_low, clip_high: ratio clip range ``[1 - clip_low, 1 + clip_high]``.
        dual_clip: lower bound factor for negative advantages, > 1; ``None`` disables it.

    Returns:
        ``(loss, metrics)``: 0-d loss; metrics ``pg_loss``, ``pg_clipfrac`` (share of tokens where
        the ratio clip is active), ``pg_clipfrac_lower`` (share where the dual clip is active),
        ``ppo_kl`` (token mean of ``l_old - l``), all detached 0-d tensors.
    """
    where = "ppo_clip_loss"
    check_number(where, "clip_low", clip_low, 0.0, 1.0, high_open=True)
    check_number(where, "clip_high", clip_high, 0.0)
    if dual_clip is not None:
        check_number(where, "dual_clip", dual_clip, 1.0, low_open=True)
    mask, (log_probs, old_log_probs, advantages) = _prepare(
        where,
        response_mask,
        log_probs=log_probs,
        old_log_probs=old_log_probs.detach(),
        advantages=advantages.detach(),
    )
    log_ratio = torch.clamp(log_probs - old_log_probs, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    if dual_clip is not None:
        pg_floor = -advantages * dual_clip
        lower_clipped = (advantages < 0) & (pg > pg_floor)
        pg = torch.where(advantages < 0, torch.minimum(pg, pg_floor), pg)
    else:
        lower_clipped = torch.zeros_like(mask)
    pg = masked_fill_invalid(pg, mask)
    loss = _mean(pg, mask)
    metrics = {
        "pg_loss": loss.detach(),
        "pg_clipfrac": _mean((clipped & mask).float(), mask),
        "pg_clipfrac_lower": _mean((lower_clipped & mask).float(), mask),
        "ppo_kl": _mean(-log_ratio.detach(), mask),
    }
    return loss, metrics


def gap_gate(log_probs: Tensor, teacher_log_probs: Tensor, beta: float = 5.0) -> Tensor:
    """SDAR's gate ``g = sg(sigmoid(beta * (l_T - sg(l))))`` (section "The SDAR term").

    Args:
        log_probs: ``[batch, response_len]`` student log-probs of the sampled tokens.
        teacher_log_probs: same shape, the teacher (skills in the prompt) on the same tokens.
        beta: gate sharpness, >= 0; ``beta = 0`` gives 0.5 everywhere (the released "GRPO+OPSD").

    Returns:
        Detached gate in ``(0, 1)``, same shape. Values at padding positions are meaningless;
        ``sdar_loss`` masks them.
    """
    check_number("gap_gate", "beta", beta, 0.0)
    check_same_shape("gap_gate", "log_probs", log_probs, teacher_log_probs=teacher_log_probs)
    gap = teacher_log_probs.detach() - log_probs.detach()
    return torch.sigmoid(beta * gap)


def entropy_gate(entropy: Tensor, teacher_entropy: Tensor, beta_entropy: float = 5.0) -> Tensor:
    """Entropy gate ``g = sg(sigmoid(beta_h * (H_student - H_teacher)))`` (section "Gate variants").

    Distils where the teacher is more certain than the student. This variant is compared in the
    paper but absent from the released code; the formula is this project's interpretation.

    Args:
        entropy: ``[batch, response_len]`` student next-token entropy (nats) at each position.
        teacher_entropy: same shape, the teacher's entropy at the same positions.
        beta_entropy: gate sharpness, >= 0.

    Returns:
        Detached gate in ``(0, 1)``, same shape.
    """
    check_number("entropy_gate", "beta_entropy", beta_entropy, 0.0)
    check_same_shape("entropy_gate", "entropy", entropy, teacher_entropy=teacher_entropy)
    return torch.sigmoid(beta_entropy * (entropy.detach() - teacher_entropy.detach()))


def soft_or_gate(gap_gate_values: Tensor, entropy_gate_values: Tensor) -> Tensor:
    """Soft-OR of two gates, ``1 - (1 - g_gap) * (1 - g_entropy)`` (section "Gate variants").

    Open when either gate is open. Both inputs are gates in ``[0, 1]`` of the same shape; the
    result is detached.
    """
    check_same_shape(
        "soft_or_gate", "gap_gate_values", gap_gate_values, entropy_gate_values=entropy_gate_values
    )
    return 1.0 - (1.0 - gap_gate_values.detach()) * (1.0 - entropy_gate_values.detach())


def sdar_loss(
    log_probs: Tensor,
    teacher_log_probs: Tensor,
    response_mask: Tensor,
    beta: float = 5.0,
    *,
    gate: Tensor | None = None,
    old_log_probs: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The gated sampled-token self-distillation term ``L_SDAR``, code-exact (section
    "The SDAR term").

    ::

        gap_k  = l_T_k - sg(l_k)
        g_k    = sg(sigmoid(beta * gap_k))
        L_SDAR = token_mean(g_k * (l_T_k - l_k))

    Its gradient w.r.t. ``log_probs`` is ``-g_k / n_tokens`` on response tokens and 0 elsewhere:
    each sampled token is reinforced with a bounded weight. No importance weight, no clipping.
    Minimise ``lambda * L_SDAR`` together with the GRPO loss.

    Args:
        log_probs: ``[batch, response_len]`` student log-probs of the sampled tokens, with grad.
        teacher_log_probs: same shape; the same network with the rollout-time weights and the
            skills in the prompt, scoring the same tokens. Detached here (no gradient reaches it).
        response_mask: 0/1 or bool, same shape.
        beta: gap-gate sharpness, >= 0 (``beta = 0``: ``g = 0.5`` everywhere).
        gate: optional precomputed gate of the same shape, values in ``[0, 1]`` (what
            ``sdar.methods.distillation_gate`` returns for the configured gate); replaces the gap
            gate ``gap_gate(log_probs, teacher_log_probs, beta)``. Detached here. ``beta`` is then
            unused.
        old_log_probs: optional rollout-time log-probs; adds ``teacher_gap_old_mean`` and
            ``teacher_gap_old_std`` (the gap under the policy that sampled the tokens).

    Returns:
        ``(loss, metrics)``: 0-d loss; metrics ``gate_mean``, ``gate_active_ratio`` (share of
        tokens with ``g > 0.5``), ``teacher_gap_mean``, ``teacher_gap_std``, ``sdar_loss``
        (+ the two ``teacher_gap_old_*`` keys), all detached 0-d tensors.
    """
    where = "sdar_loss"
    check_number(where, "beta", beta, 0.0)
    extra = {}
    if gate is not None:
        extra["gate"] = gate.detach()
    if old_log_probs is not None:
        extra["old_log_probs"] = old_log_probs.detach()
    mask, (log_probs, teacher_log_probs, *rest) = _prepare(
        where,
        response_mask,
        log_probs=log_probs,
        teacher_log_probs=teacher_log_probs.detach(),
        **extra,
    )
    rest_by_name = dict(zip(extra, rest))
    gap = teacher_log_probs - log_probs.detach()
    if gate is None:
        g = gap_gate(log_probs, teacher_log_probs, beta)
    else:
        g = rest_by_name["gate"]
        if bool(((g < 0) | (g > 1)).any()):
            raise ValueError(f"{where}: gate values must lie in [0, 1] on response tokens")
    g = masked_fill_invalid(g, mask)
    loss = _mean(g * (teacher_log_probs - log_probs), mask)
    metrics = {
        "gate_mean": _mean(g, mask),
        "gate_active_ratio": _mean(((g > 0.5) & mask).float(), mask),
        "teacher_gap_mean": _mean(gap, mask),
        "teacher_gap_std": _std(gap, mask),
        "sdar_loss": loss.detach(),
    }
    if old_log_probs is not None:
        gap_old = masked_fill_invalid(teacher_log_probs - rest_by_name["old_log_probs"], mask)
        metrics["teacher_gap_old_mean"] = _mean(gap_old, mask)
        metrics["teacher_gap_old_std"] = _std(gap_old, mask)
    return loss, metrics


def skill_sd_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    teacher_log_probs: Tensor,
    response_mask: Tensor,
    max_log_ratio: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Skill-SD's importance-weighted k3 distillation term (section "Skill-SD").

    ::

        rho = exp(min(l - l_old, max_log_ratio))
        k3  = exp(l_T - l) - 1 - (l_T - l)
        L   = token_mean(rho * k3)

    Gradient flows through both ``rho`` and ``k3`` (via ``log_probs``); ``old_log_probs`` and
    ``teacher_log_probs`` are detached. The baseline adds ``0.001 * L`` to the GRPO loss.

    Returns:
        ``(loss, metrics)`` with metrics ``skill_sd_loss``, ``skill_sd_k3_mean``,
        ``skill_sd_rho_mean`` (detached 0-d tensors).
    """
    where = "skill_sd_loss"
    check_number(where, "max_log_ratio", max_log_ratio)
    mask, (log_probs, old_log_probs, teacher_log_probs) = _prepare(
        where,
        response_mask,
        log_probs=log_probs,
        old_log_probs=old_log_probs.detach(),
        teacher_log_probs=teacher_log_probs.detach(),
    )
    rho = torch.exp(torch.clamp(log_probs - old_log_probs, max=max_log_ratio))
    diff = teacher_log_probs - log_probs
    k3 = torch.exp(diff) - 1.0 - diff
    per_token = masked_fill_invalid(rho * k3, mask)
    loss = _mean(per_token, mask)
    if not bool(torch.isfinite(loss)):
        raise ValueError(
            f"{where}: the loss overflowed (exp of the teacher-student gap); a response token has "
            f"a student log-prob far below the teacher's. Check the teacher/student alignment"
        )
    metrics = {
        "skill_sd_loss": loss.detach(),
        "skill_sd_k3_mean": _mean(masked_fill_invalid(k3.detach(), mask), mask),
        "skill_sd_rho_mean": _mean(masked_fill_invalid(rho.detach(), mask), mask),
    }
    return loss, metrics


def opsd_sampled_loss(
    log_probs: Tensor, teacher_log_probs: Tensor, response_mask: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Textbook OPSD, sampled-token advantage form (section "Textbook OPSD").

    ``L = token_mean(-sg(l_T - l) * l)``: a policy gradient on the student's own samples whose
    per-token advantage is the teacher-student log-prob gap, i.e. a single-sample estimate of the
    gradient of the reverse KL ``KL(pi_student || pi_teacher)``. The gradient w.r.t. ``log_probs``
    is ``-(l_T - l) / n_tokens`` on response tokens. ``teacher_log_probs`` is detached.

    Returns:
        ``(loss, metrics)`` with ``opsd_loss`` and ``opsd_reverse_kl`` (token mean of ``l - l_T``,
        the sampled reverse-KL estimate), detached 0-d tensors.
    """
    mask, (log_probs, teacher_log_probs) = _prepare(
        "opsd_sampled_loss",
        response_mask,
        log_probs=log_probs,
        teacher_log_probs=teacher_log_probs.detach(),
    )
    advantage = teacher_log_probs - log_probs.detach()
    loss = _mean(-advantage * log_probs, mask)
    metrics = {"opsd_loss": loss.detach(), "opsd_reverse_kl": _mean(-advantage, mask)}
    return loss, metrics


def generalized_jsd_loss(
    logits: Tensor,
    teacher_logits: Tensor,
    response_mask: Tensor,
    jsd_beta: float = 0.5,
    top_k: int | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Textbook OPSD, full-vocabulary or top-k generalised JSD (section "Textbook OPSD").

    Per response position, with teacher distribution ``T`` and student distribution ``S``::

        M   = jsd_beta * T + (1 - jsd_beta) * S
        JSD = jsd_beta * KL(T || M) + (1 - jsd_beta) * KL(S || M)
        L   = token_mean(JSD)

    At the endpoints the mixture form vanishes, so (as in the GKD paper, arXiv 2306.13649) its
    scaled limits are used instead: ``jsd_beta = 0`` gives forward ``KL(T || S)``, ``jsd_beta = 1``
    reverse ``KL(S || T)``. ``jsd_beta = 0.5`` is the symmetric Jensen-Shannon divergence.

    With ``top_k``, the support is restricted to the teacher's ``k`` most likely tokens at each
    position and both distributions are renormalised over it (this project's choice: the teacher's
    support is where the privileged information shows).

    Memory: positions are processed in row chunks (``chunk_size`` rows, default about 8M logits
    per chunk) and the backward pass recomputes each chunk, so no float32 ``[B, T, V]`` copy is
    made; the only full-size extra is the logits' gradient. The chunked kernel is
    ``sdar.models.logprobs.generalized_jsd_from_logits``, next to the chunked log-prob kernel.

    Args:
        logits: ``[batch, response_len, vocab]`` student logits at the response positions (the
            logits that predict each response token), any float dtype, with gradient.
        teacher_logits: same shape, the teacher's logits; detached here.
        response_mask: ``[batch, response_len]`` 0/1 or bool.
        jsd_beta: mixture coefficient in ``[0, 1]``.
        top_k: ``None`` for the full vocabulary, else ``1 <= top_k <= vocab``.
        chunk_size: rows per chunk, ``None`` for the default.

    Returns:
        ``(loss, metrics)`` with ``opsd_jsd`` (the loss, detached 0-d tensor), computed in float32
        (float64 for float64 logits).
    """
    where = "generalized_jsd_loss"
    check_tensor(where, "logits", logits, ndim=3)
    check_same_shape(where, "logits", logits, teacher_logits=teacher_logits)
    check_number(where, "jsd_beta", jsd_beta, 0.0, 1.0)
    vocab = logits.shape[-1]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or not 1 <= top_k <= vocab):
        raise ValueError(f"{where}: top_k must be None or an int in [1, {vocab}], got {top_k!r}")
    mask = check_mask(where, response_mask, logits.shape[:2], shape_of="logits[..., 0]")
    per_token = generalized_jsd_from_logits(
        logits, teacher_logits.detach(), mask, jsd_beta, top_k, chunk_size, where=where
    )
    loss = _mean(per_token, mask)
    return loss, {"opsd_jsd": loss.detach()}

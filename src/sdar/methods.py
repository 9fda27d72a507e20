"""Every training method of the paper as one loss code path with different switches.

``actor_loss(config, inputs)`` builds the full objective (section "The objective"; headings cited
are those of ``docs/algorithm.md``) for the method named in ``config`` (the rows of section
"The methods"), so a trainer needs no per-method branches: it asks ``required_inputs(config)``
which optional tensors to compute, fills a ``LossInputs`` and calls ``actor_loss``. ``METHODS``
says, per method, what it needs (teacher pass, teacher logits, entropies, skills in the student
prompt, reference model) and which coefficients it presets.

::

    L = c_pg * L_GRPO(A')  - c_ent * H  + c_kl * KL_lowvar(l, l_ref)  + coef * L_distil

    method        A' (advantages)        L_distil (coef)
    grpo          A                      -
    skill_grpo    A (student sees skills) -
    sdar          A                      L_SDAR, gate per config.gate   (sdar_lambda)
    grpo_opsd     A                      L_SDAR with beta = 0, g = 0.5  (sdar_lambda)
    opsd          A, but c_pg = 0        L_SDAR                         (sdar_lambda)
    rlsd          RLSD-reweighted A      -
    skill_sd      A                      Skill-SD rho * k3              (skill_sd_coef)
    opsd_sampled  A                      -sg(l_T - l) * l               (opsd_coef)
    opsd_jsd      A                      generalised JSD on logits      (opsd_coef)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor

from sdar._checks import check_finite, check_mask, check_number, check_same_shape, check_tensor
from sdar.advantages import rlsd_advantages, rlsd_mix
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

__all__ = [
    "GATES",
    "METHODS",
    "GateName",
    "LossConfig",
    "LossInputs",
    "MethodName",
    "MethodSpec",
    "actor_loss",
    "distillation_gate",
    "required_inputs",
]

GATES = ("gap", "entropy", "soft_or")
"""Gate variants of section "Gate variants": ``gap`` (released code), ``entropy``, ``soft_or``."""

GateName = Literal[GATES]  # type: ignore[valid-type]
"""The type of ``LossConfig.gate``, built from ``GATES``: the config loader checks a value against
it and lists the gates in its error."""


@dataclass(frozen=True)
class MethodSpec:
    """What one training method is and what its loss needs.

    ``needs_*`` describe the method with its preset coefficients and the default gate; the exact
    set for a concrete configuration is ``required_inputs(config)``.
    """

    name: str
    """Key in ``METHODS`` and value of ``LossConfig.method``."""
    summary: str
    """One line: what the method is (its row in section "The methods")."""
    distillation: str | None
    """Which distillation term is added: ``"sdar"``, ``"skill_sd"``, ``"opsd_sampled"``,
    ``"opsd_jsd"`` or ``None``."""
    needs_teacher: bool
    """Needs ``teacher_log_probs`` (a teacher pass with the skills in the prompt)."""
    needs_teacher_logits: bool = False
    """Needs full ``logits`` and ``teacher_logits`` (``opsd_jsd`` only)."""
    needs_entropy: bool = False
    """Needs student and teacher entropies beyond the entropy bonus (non-gap gates)."""
    student_sees_skills: bool = False
    """The student's own rollout and update prompts carry the skills (``skill_grpo``)."""
    needs_ref: bool = True
    """Uses the KL-to-reference term at its default ``c_kl > 0``."""
    reweights_advantages: bool = False
    """Advantages are reweighted per token by the teacher (``rlsd``)."""
    gated: bool = False
    """The distillation term goes through a gate, so ``LossConfig.gate`` applies."""
    presets: Mapping[str, float] = field(default_factory=dict)
    """Coefficients the method fixes (e.g. ``beta = 0`` for ``grpo_opsd``); setting them to
    anything else is an error."""


def _spec(**kwargs) -> MethodSpec:
    kwargs["presets"] = MappingProxyType(dict(kwargs.get("presets", {})))
    return MethodSpec(**kwargs)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        _spec(name="grpo", summary="GRPO: lambda = 0", distillation=None, needs_teacher=False,
              presets={"sdar_lambda": 0.0}),
        _spec(name="sdar", summary="SDAR: GRPO + lambda * gated sampled-token self-distillation",
              distillation="sdar", needs_teacher=True, gated=True),
        _spec(name="grpo_opsd", summary="GRPO+OPSD as released: SDAR with beta = 0 (g = 0.5)",
              distillation="sdar", needs_teacher=True, presets={"beta": 0.0}),
        _spec(name="opsd", summary="OPSD as released: SDAR with c_pg = 0", distillation="sdar",
              needs_teacher=True, gated=True, presets={"c_pg": 0.0}),
        _spec(name="skill_grpo", summary="Skill-GRPO: GRPO with the skills in the student prompt",
              distillation=None, needs_teacher=False, student_sees_skills=True,
              presets={"sdar_lambda": 0.0}),
        _spec(name="rlsd", summary="RLSD: GRPO with teacher-reweighted token advantages",
              distillation=None, needs_teacher=True, reweights_advantages=True,
              presets={"sdar_lambda": 0.0}),
        _spec(name="skill_sd", summary="Skill-SD: GRPO + 0.001 * token_mean(rho * k3)",
              distillation="skill_sd", needs_teacher=True, presets={"sdar_lambda": 0.0}),
        _spec(name="opsd_sampled", summary="GRPO + textbook OPSD, sampled-token advantage form",
              distillation="opsd_sampled", needs_teacher=True, presets={"sdar_lambda": 0.0}),
        _spec(name="opsd_jsd", summary="GRPO + textbook OPSD, full-vocabulary / top-k JSD",
              distillation="opsd_jsd", needs_teacher=False, needs_teacher_logits=True,
              presets={"sdar_lambda": 0.0}),
    )
}
"""All methods, by name (section "The methods")."""

MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
"""The type of ``LossConfig.method``, built from ``METHODS``: the config loader checks a value
against it and lists the methods in its error."""

# Defaults of the fields that a method may preset (None in LossConfig means "not set by the user").
_GENERAL_DEFAULTS = {"c_pg": 1.0, "sdar_lambda": 0.01, "beta": 5.0}


def _known_methods() -> str:
    return ", ".join(METHODS)


@dataclass
class LossConfig:
    """Coefficients of the actor loss ``L`` (section "The objective") for one method.

    Fields left at ``None`` take the method's preset, else the released default; setting a field
    that the method fixes to another value (``grpo_opsd`` with ``beta=5``, ``opsd`` with
    ``c_pg=1``, ``grpo`` with ``sdar_lambda>0``) is an error, because it would silently be another
    method. After construction every field holds a concrete value.
    """

    method: MethodName = "sdar"
    """One of ``METHODS``: grpo, sdar, grpo_opsd, opsd, skill_grpo, rlsd, skill_sd, opsd_sampled,
    opsd_jsd."""
    c_pg: float | None = None
    """Weight of the PPO/GRPO surrogate; 1.0 (``opsd``: 0). section "The objective"."""
    c_ent: float = 0.001
    """Weight of the entropy bonus ``-c_ent * H``; needs ``LossInputs.entropy`` when > 0."""
    c_kl: float = 0.01
    """Weight of the low-variance KL to the reference model; 0.01 ALFWorld/WebShop, 0.001
    Search-QA (section "KL to the reference"). 0 disables it and the reference pass."""
    sdar_lambda: float | None = None
    """lambda, the weight of ``L_SDAR``; 0.01 for sdar / grpo_opsd / opsd, 0 otherwise."""
    beta: float | None = None
    """Gap-gate sharpness; 5.0 (``grpo_opsd``: 0, so g = 0.5). section "The SDAR term"."""
    gate: GateName = "gap"
    """Gate of ``L_SDAR``: ``gap`` (released), ``entropy`` or ``soft_or`` (section "Gate variants";
    only for the gated methods sdar and opsd)."""
    beta_entropy: float = 5.0
    """Entropy-gate sharpness (project choice: same scale as ``beta``, both are nats)."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (section "PPO surrogate")."""
    clip_high: float = 0.2
    """PPO ratio clip above 1 (section "PPO surrogate")."""
    dual_clip: float | None = 3.0
    """Dual-clip bound for negative advantages, > 1; None disables (section "PPO surrogate")."""
    rlsd_clip: float = 0.2
    """RLSD weight clip ``[1 - rlsd_clip, 1 + rlsd_clip]`` (section "RLSD reweighting")."""
    rlsd_decay_iterations: int = 100
    """RLSD mixing ``m = 0.5 * (1 - it / rlsd_decay_iterations)``, 0 afterwards (section
    "RLSD reweighting")."""
    skill_sd_coef: float = 0.001
    """Weight of the Skill-SD term (section "Skill-SD")."""
    opsd_coef: float = 0.01
    """Weight of the textbook OPSD terms (project choice: SDAR's lambda, so that the rows differ
    only in the distillation term)."""
    jsd_beta: float = 0.5
    """Generalised-JSD mixture coefficient in [0, 1] (0 forward KL, 1 reverse KL)."""
    jsd_top_k: int | None = None
    """Restrict the JSD to the teacher's top-k tokens; None = full vocabulary."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"loss.method: unknown method {self.method!r}; known methods: {_known_methods()}"
            )
        spec = METHODS[self.method]
        for name, default in _GENERAL_DEFAULTS.items():
            preset = spec.presets.get(name)
            value = getattr(self, name)
            if value is None:
                setattr(self, name, default if preset is None else preset)
            elif preset is not None and float(value) != preset:
                raise ValueError(
                    f"loss.method: {self.method!r} fixes {name}={preset:g} "
                    f"({spec.summary}); got {name}={value!r}. Remove {name} or pick another method"
                )

        def check(name: str, low: float, high: float | None = None, **open_ends: bool) -> None:
            value = check_number("", f"loss.{name}", getattr(self, name), low, high, **open_ends)
            setattr(self, name, value)

        for name in ("c_pg", "c_ent", "c_kl", "sdar_lambda", "beta", "beta_entropy",
                     "skill_sd_coef", "opsd_coef", "clip_high"):
            check(name, 0.0)
        check("clip_low", 0.0, 1.0, high_open=True)
        if self.dual_clip is not None:
            check("dual_clip", 1.0, low_open=True)
        check("rlsd_clip", 0.0, 1.0, high_open=True)
        check("jsd_beta", 0.0, 1.0)
        check_number("", "loss.rlsd_decay_iterations", self.rlsd_decay_iterations, 1, integer=True)
        if self.jsd_top_k is not None:
            check_number("", "loss.jsd_top_k", self.jsd_top_k, 1, integer=True,
                         hint="null uses the full vocabulary")
        if self.gate not in GATES:
            raise ValueError(
                f"loss.gate: unknown gate {self.gate!r}; known gates: {', '.join(GATES)}"
            )
        if self.gate != "gap" and not spec.gated:
            gated = ", ".join(name for name, s in METHODS.items() if s.gated)
            raise ValueError(
                f"loss.gate: method {self.method!r} has no gate, so gate={self.gate!r} would be "
                f"ignored; gates apply to: {gated}"
            )

    @classmethod
    def for_method(cls, method: str, **overrides: object) -> LossConfig:
        """The configuration of ``method`` with its presets, plus any field ``overrides``."""
        known = {f.name for f in fields(cls)} - {"method"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"LossConfig.for_method: unknown field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(method=method, **overrides)  # type: ignore[arg-type]

    @property
    def spec(self) -> MethodSpec:
        """The ``MethodSpec`` of ``method``."""
        return METHODS[self.method]

    def distillation_coef(self) -> float:
        """Weight of the method's distillation term (0 when it has none)."""
        kind = self.spec.distillation
        if kind == "sdar":
            return float(self.sdar_lambda)
        if kind == "skill_sd":
            return self.skill_sd_coef
        if kind in ("opsd_sampled", "opsd_jsd"):
            return self.opsd_coef
        return 0.0


@dataclass
class LossInputs:
    """Tensors of one (micro-)batch for ``actor_loss``; per-token tensors are ``[B, T]``.

    Which optional fields must be filled is ``required_inputs(config)``; extra ones are ignored.
    Only ``log_probs``, ``entropy`` and ``logits`` may carry gradient; everything else is detached.
    """

    log_probs: Tensor
    """Current policy log-probs of the sampled response tokens, with gradient."""
    old_log_probs: Tensor
    """Rollout-time policy log-probs (no gradient)."""
    advantages: Tensor
    """Per-token advantages: the step sample's advantage on each response token."""
    response_mask: Tensor
    """0/1 or bool, marks the response tokens."""
    ref_log_probs: Tensor | None = None
    """Frozen reference model log-probs (KL term, when ``c_kl > 0``)."""
    teacher_log_probs: Tensor | None = None
    """Teacher (rollout-time weights, skills in the prompt) log-probs of the same tokens."""
    entropy: Tensor | None = None
    """Student next-token entropy per position, with gradient (entropy bonus, entropy gates)."""
    teacher_entropy: Tensor | None = None
    """Teacher next-token entropy per position (entropy / soft-OR gates)."""
    logits: Tensor | None = None
    """``[B, T, V]`` student logits at the response positions (``opsd_jsd`` only), with grad."""
    teacher_logits: Tensor | None = None
    """``[B, T, V]`` teacher logits at the same positions (``opsd_jsd`` only)."""
    iteration: int = 0
    """Training iteration, for the RLSD schedule."""
    distill_mask: Tensor | None = None
    """0/1 or bool, ``[B, T]`` or ``[B, 1]``: where the gate of ``L_SDAR`` applies; elsewhere it
    is 0, so those tokens add nothing to the term (still counted in its token mean, so every
    distilled token keeps the weight ``lambda / tokens``). ``None``: every response token. The
    trainer fills it under ``teacher.no_winner: skip``; methods whose distillation term is not
    ``L_SDAR`` (all but sdar, grpo_opsd and opsd) refuse it."""


def required_inputs(config: LossConfig) -> set[str]:
    """Names of the optional ``LossInputs`` fields that ``actor_loss(config, ...)`` will read.

    ``log_probs``, ``old_log_probs``, ``advantages`` and ``response_mask`` are always required and
    not listed. Terms whose coefficient is 0 need nothing.
    """
    spec = config.spec
    needed: set[str] = set()
    if config.c_kl > 0:
        needed.add("ref_log_probs")
    if config.c_ent > 0:
        needed.add("entropy")
    coef = config.distillation_coef()
    if spec.reweights_advantages or (coef > 0 and spec.needs_teacher):
        needed.add("teacher_log_probs")
    if coef > 0 and spec.needs_teacher_logits:
        needed |= {"logits", "teacher_logits"}
    if coef > 0 and spec.gated and config.gate in ("entropy", "soft_or"):
        needed |= {"entropy", "teacher_entropy"}
    return needed


def distillation_gate(
    config: LossConfig,
    log_probs: Tensor,
    teacher_log_probs: Tensor,
    entropy: Tensor | None = None,
    teacher_entropy: Tensor | None = None,
    keep: Tensor | None = None,
) -> Tensor | None:
    """The gate ``g`` that ``L_SDAR`` applies under ``config`` (sections "The SDAR term" and
    "Gate variants"); ``None`` for a method without one (its distillation term is not ``L_SDAR``).

    ``config.gate`` picks :func:`~sdar.losses.gap_gate` (``grpo_opsd``: ``beta = 0``, so 0.5
    everywhere), :func:`~sdar.losses.entropy_gate` or :func:`~sdar.losses.soft_or_gate` of the
    two. ``actor_loss`` and the trainer's ``samples.jsonl`` both take the gate from here.

    Args:
        config: the loss configuration.
        log_probs: ``[batch, response_len]`` student log-probs of the sampled tokens.
        teacher_log_probs: same shape, the teacher's.
        entropy, teacher_entropy: same shape, student and teacher next-token entropies; read
            only by the ``entropy`` and ``soft_or`` gates.
        keep: 0/1 or bool, ``log_probs``' shape or ``[batch, 1]``: where the gate applies; 0
            elsewhere (a NaN gate stays NaN). ``LossInputs.distill_mask``, from
            ``teacher.no_winner: skip``.

    Returns:
        Detached gate in ``[0, 1]`` of ``log_probs``' shape (padding positions meaningless), or
        ``None``.
    """
    spec = config.spec
    if spec.distillation != "sdar":
        return None
    gate = config.gate if spec.gated else "gap"
    if gate == "gap":
        g = gap_gate(log_probs, teacher_log_probs, config.beta)
    else:
        g_entropy = entropy_gate(entropy, teacher_entropy, config.beta_entropy)
        g = g_entropy if gate == "entropy" else soft_or_gate(gap_gate(log_probs, teacher_log_probs, config.beta),
                                                              g_entropy)
    return g if keep is None else g * keep.to(g.dtype)


def actor_loss(config: LossConfig, inputs: LossInputs) -> tuple[Tensor, dict[str, float]]:
    """The full actor loss ``L`` of section "The objective", for ``config.method``.

    ::

        L = c_pg * ppo_clip_loss(A')  - c_ent * token_mean(entropy)
            + c_kl * token_mean(low_var_kl(l, l_ref))  + coef * L_distil

    with ``A'`` and ``L_distil`` chosen by the method (see the module docstring). All means are
    over the masked tokens of this batch (the trainer weights micro-batches).

    Returns:
        ``(loss, metrics)``: 0-d loss with gradient; metrics as Python floats: ``actor/loss``,
        ``actor/pg_loss``, ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``, ``actor/ppo_kl``,
        ``actor/kl`` (if ``c_kl > 0``), ``actor/entropy`` (if ``entropy`` given; the trainer always gives it), and per method
        ``sdar/gate_mean``, ``sdar/gate_active_ratio``, ``sdar/teacher_gap_mean``,
        ``sdar/teacher_gap_std``, ``sdar/teacher_gap_old_mean``, ``sdar/teacher_gap_old_std``,
        ``sdar/loss``; ``rlsd/mix``, ``rlsd/advantage_scale``; ``skill_sd/loss``, ...;
        ``opsd/loss``, ``opsd/reverse_kl``; ``opsd/jsd``.

    Raises:
        ValueError: a required input is missing (named, with the reason), or any input is bad.
    """
    if not isinstance(config, LossConfig):
        raise TypeError(f"actor_loss: config must be a LossConfig, got {type(config).__name__}")
    missing = sorted(name for name in required_inputs(config) if getattr(inputs, name) is None)
    if missing:
        raise ValueError(
            f"actor_loss: method {config.method!r} with this LossConfig needs LossInputs fields "
            f"{missing} (see required_inputs(config)); compute them or set the matching "
            f"coefficient to 0"
        )
    spec = config.spec
    where = "actor_loss"
    check_tensor(where, "log_probs", inputs.log_probs, ndim=2)
    per_token = {
        name: getattr(inputs, name)
        for name in ("old_log_probs", "advantages", "ref_log_probs", "teacher_log_probs",
                     "entropy", "teacher_entropy")
        if getattr(inputs, name) is not None
    }
    check_same_shape(where, "log_probs", inputs.log_probs, **per_token)
    mask = check_mask(where, inputs.response_mask, inputs.log_probs.shape)
    if inputs.distill_mask is not None:
        if spec.distillation != "sdar":
            raise ValueError(f"{where}: distill_mask sets the gate of L_SDAR, which method {config.method!r} "
                             "does not have")
        rows = inputs.log_probs.shape[0]
        if inputs.distill_mask.dim() != 2 or inputs.distill_mask.shape[0] != rows or \
                inputs.distill_mask.shape[1] not in (1, inputs.log_probs.shape[1]):
            raise ValueError(f"{where}: distill_mask must be [{rows}, 1] or {list(inputs.log_probs.shape)}, "
                             f"got {list(inputs.distill_mask.shape)}")
    check_finite(where, "log_probs", inputs.log_probs, mask)

    metrics: dict[str, Tensor] = {}
    advantages = inputs.advantages
    if spec.reweights_advantages:
        advantages = rlsd_advantages(
            advantages, inputs.teacher_log_probs, inputs.old_log_probs, mask, inputs.iteration,
            clip=config.rlsd_clip, decay_iterations=config.rlsd_decay_iterations,
        )
        metrics["rlsd/mix"] = torch.tensor(rlsd_mix(inputs.iteration,
                                                    config.rlsd_decay_iterations))
        # How much the reweighting scaled the advantages overall (1.0 = unchanged).
        original = torch.where(mask, inputs.advantages.detach().abs(), 0.0).sum()
        metrics["rlsd/advantage_scale"] = (
            torch.where(mask, advantages.abs(), 0.0).sum() / original.clamp(min=1e-12)
        )

    pg_loss, pg_metrics = ppo_clip_loss(
        inputs.log_probs, inputs.old_log_probs, advantages, mask,
        clip_low=config.clip_low, clip_high=config.clip_high, dual_clip=config.dual_clip,
    )
    metrics.update({f"actor/{key}": value for key, value in pg_metrics.items()})
    loss = config.c_pg * pg_loss

    if inputs.entropy is not None:
        entropy_mean = token_mean(inputs.entropy, mask)
        metrics["actor/entropy"] = entropy_mean.detach()
        if config.c_ent > 0:
            loss = loss - config.c_ent * entropy_mean
    if config.c_kl > 0:
        kl = token_mean(low_var_kl(inputs.log_probs, inputs.ref_log_probs, mask), mask)
        metrics["actor/kl"] = kl.detach()
        loss = loss + config.c_kl * kl

    coef = config.distillation_coef()
    if coef > 0:
        if spec.distillation == "sdar":
            gate = distillation_gate(config, inputs.log_probs, inputs.teacher_log_probs,
                                     inputs.entropy, inputs.teacher_entropy, keep=inputs.distill_mask)
            term, term_metrics = sdar_loss(
                inputs.log_probs, inputs.teacher_log_probs, mask, beta=float(config.beta),
                gate=gate, old_log_probs=inputs.old_log_probs,
            )
            metrics.update({f"sdar/{key.removeprefix('sdar_')}": v
                            for key, v in term_metrics.items()})
        elif spec.distillation == "skill_sd":
            term, term_metrics = skill_sd_loss(
                inputs.log_probs, inputs.old_log_probs, inputs.teacher_log_probs, mask
            )
            metrics.update({f"skill_sd/{key.removeprefix('skill_sd_')}": v
                            for key, v in term_metrics.items()})
        elif spec.distillation == "opsd_sampled":
            term, term_metrics = opsd_sampled_loss(inputs.log_probs, inputs.teacher_log_probs, mask)
            metrics.update({f"opsd/{key.removeprefix('opsd_')}": v
                            for key, v in term_metrics.items()})
        elif spec.distillation == "opsd_jsd":
            term, term_metrics = generalized_jsd_loss(
                inputs.logits, inputs.teacher_logits, mask, jsd_beta=config.jsd_beta,
                top_k=config.jsd_top_k,
            )
            metrics["opsd/jsd"] = term_metrics["opsd_jsd"]
        else:  # a METHODS entry with a distillation kind this function does not know
            raise AssertionError(f"unhandled distillation term {spec.distillation!r}")
        loss = loss + coef * term

    metrics["actor/loss"] = loss.detach()
    return loss, {key: float(value.item()) for key, value in metrics.items()}

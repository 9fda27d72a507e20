"""Scoring sampled responses: per-token log-probs (and entropies) of the response tokens.

Used four times per iteration with the same layout: the rollout-time log-probs ``l_old``, the
reference ``l_ref``, the teacher ``l_T`` (with the skill prefix, :func:`score_with_prefix`) under
``torch.no_grad()``, and the current policy ``l`` with gradient for the update.

Layout of one micro-batch (the verl layout): prompts left-padded to the longest prompt ``P``,
responses right-padded to the longest response ``T``, so that every row's response occupies columns
``P .. P+T-1`` and the logits predicting it are those at ``P-1 .. P+T-2``. An attention mask hides
the padding and explicit position ids start every prompt at position 0 (or right after the
prefix), so a row's scores do not depend on its batch mates beyond float rounding. Only the last
``T+1`` positions go through the output head (``logits_to_keep``), so long prompts cost no
vocabulary-sized activations.

Temperature: by default responses are scored at temperature 1, i.e. ``log_softmax(logits)``, the
model's own distribution, which is what the SDAR/GRPO losses compare. Pass ``temperature`` to
score ``log_softmax(logits / temperature)`` instead (as verl does when it rolls out at T != 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from sdar.models.generation import (
    cache_argument,
    cache_from_layers,
    cache_layers,
    cached_start_length,
    returned_cache,
    shared_prefix_length,
)
from sdar.models.logprobs import log_probs_from_logits

logger = logging.getLogger(__name__)


@dataclass
class ScoredBatch:
    """Response-aligned scores, padded on the right to the longest response ``T`` of the batch.

    Attributes:
        log_probs: [B, T] float32, ``log p(response token k | prompt, earlier response tokens)``;
            0 at padding. Carries gradient when scored under grad.
        response_mask: [B, T] bool, True at real response tokens.
        entropy: [B, T] float32 entropy of the next-token distribution at each response position
            (0 at padding), or None when not asked for.
        logits: [B, T, V] logits predicting each response token (already divided by the
            temperature; 0 at padding), or None when not asked for. Large: V is the vocabulary.
    """

    log_probs: torch.Tensor
    response_mask: torch.Tensor
    entropy: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _check_rows(prompt_ids, response_ids) -> None:
    if isinstance(prompt_ids, torch.Tensor) or isinstance(response_ids, torch.Tensor):
        raise TypeError("prompt_ids and response_ids must be lists of token-id lists, not tensors")
    if len(prompt_ids) != len(response_ids):
        raise ValueError(
            f"got {len(prompt_ids)} prompts but {len(response_ids)} responses; pass one response "
            "per prompt"
        )
    for i, prompt in enumerate(prompt_ids):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty; the first response token needs a context")


def _check_micro_batch(micro_batch_size: int | None) -> None:
    if micro_batch_size is not None and (
        not isinstance(micro_batch_size, int) or micro_batch_size < 1
    ):
        raise ValueError(
            f"micro_batch_size must be a positive integer or None, got {micro_batch_size!r}"
        )


def _layout(
    prompts, responses, pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """ids [b, P+T], attention mask [b, P+T], padded responses [b, T] and T (module docstring)."""
    width_p = max(len(p) for p in prompts)
    width_t = max(len(r) for r in responses)
    ids = torch.full((len(prompts), width_p + width_t), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        ids[row, width_p - len(prompt) : width_p] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width_p - len(prompt) : width_p + len(response)] = 1
        if response:
            ids[row, width_p : width_p + len(response)] = torch.tensor(response, dtype=torch.long)
    return ids.to(device), mask.to(device), ids[:, width_p:].to(device), width_t


def _score_micro_batch(
    model,
    prompts,
    responses,
    *,
    pad_id: int,
    prefix: torch.Tensor | None,
    prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
    with_entropy: bool,
    return_logits: bool,
    temperature: float,
):
    """Scores of one micro-batch, each row's input being ``prefix + prompt + response``.

    ``prefix`` [1, L] is prepended as tokens; or ``prefix_cache`` (per layer keys/values of the
    prefix, batch 1) stands for it; or neither (no prefix).
    """
    device = next(model.parameters()).device
    ids, mask, targets, width_t = _layout(prompts, responses, pad_id, device)
    batch = ids.shape[0]
    if width_t == 0:
        empty = torch.zeros((batch, 0), dtype=torch.float32, device=device)
        return empty, empty.clone() if with_entropy else None, None
    kwargs = {}
    position_offset = 0
    if prefix_cache is not None:
        prefix_len = prefix_cache[0][0].shape[-2]
        # A fresh cache per micro-batch: the forward pass appends to it in place.
        kwargs[cache_argument(model)] = cache_from_layers(
            model,
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix_cache],
        )
        kwargs["use_cache"] = True
        mask = torch.cat([mask.new_ones((batch, prefix_len)), mask], dim=1)
        position_offset = prefix_len
        position_ids = (mask[:, prefix_len:].cumsum(-1) - 1).clamp(min=0) + position_offset
    else:
        if prefix is not None:
            ids = torch.cat([prefix.expand(batch, -1), ids], dim=1)
            mask = torch.cat([mask.new_ones((batch, prefix.shape[1])), mask], dim=1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs["use_cache"] = False
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        logits_to_keep=width_t + 1,
        **kwargs,
    )
    logits = out.logits[:, :-1, :]
    if temperature != 1.0:
        logits = logits / temperature
    log_probs, entropy = log_probs_from_logits(logits, targets, with_entropy=with_entropy)
    return log_probs, entropy, logits if return_logits else None


def _score(
    model,
    prompt_ids,
    response_ids,
    *,
    pad_id: int,
    prefix,
    prefix_cache,
    with_entropy: bool,
    micro_batch_size: int | None,
    return_logits: bool,
    temperature: float,
) -> ScoredBatch:
    device = next(model.parameters()).device
    lengths = torch.tensor([len(r) for r in response_ids], dtype=torch.long)
    width = int(lengths.max()) if len(lengths) else 0
    response_mask = (torch.arange(width)[None, :] < lengths[:, None]).to(device)
    size = micro_batch_size or max(len(prompt_ids), 1)
    # Micro-batches of similar lengths waste less compute on padding; rows go back in place below.
    # One micro-batch keeps the input order (no copy of possibly vocabulary-sized results).
    order = list(range(len(prompt_ids)))
    if size < len(order):
        order.sort(key=lambda i: (len(prompt_ids[i]), len(response_ids[i])))
    parts_lp, parts_ent, parts_logits = [], [], []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        log_probs, entropy, logits = _score_micro_batch(
            model,
            [prompt_ids[i] for i in chunk],
            [response_ids[i] for i in chunk],
            pad_id=pad_id,
            prefix=prefix,
            prefix_cache=prefix_cache,
            with_entropy=with_entropy,
            return_logits=return_logits,
            temperature=temperature,
        )
        extra = width - log_probs.shape[1]
        parts_lp.append(F.pad(log_probs.float(), (0, extra)))
        if with_entropy:
            parts_ent.append(F.pad(entropy.float(), (0, extra)))
        if return_logits:
            vocab = model.get_output_embeddings().weight.shape[0]
            if logits is None:
                logits = log_probs.new_zeros((log_probs.shape[0], 0, vocab))
            parts_logits.append(F.pad(logits, (0, 0, 0, extra)))
    if not parts_lp:
        raise ValueError("nothing to score: prompt_ids is empty")
    restore = None
    if order != sorted(order):
        restore = torch.argsort(torch.tensor(order, device=device))

    def in_place(parts):
        joined = torch.cat(parts)
        return joined if restore is None else joined[restore]

    # where(), not a product: padding becomes exactly 0 with no gradient, even if not finite.
    log_probs = torch.where(response_mask, in_place(parts_lp), 0.0)
    entropy = torch.where(response_mask, in_place(parts_ent), 0.0) if with_entropy else None
    logits = (
        torch.where(response_mask[..., None], in_place(parts_logits), 0.0)
        if return_logits
        else None
    )
    return ScoredBatch(
        log_probs=log_probs, response_mask=response_mask, entropy=entropy, logits=logits
    )


def score_responses(
    model,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    with_entropy: bool = False,
    micro_batch_size: int | None = None,
    pad_id: int,
    return_logits: bool = False,
    temperature: float = 1.0,
) -> ScoredBatch:
    """Log-probs (and optionally entropies / logits) of each response given its prompt.

    A start of at least ``MIN_SHARED_PREFIX`` tokens that every prompt shares (the chat header and
    task preamble of an agent prompt) is encoded once per call and its key/value cache reused by
    all rows, as :func:`score_with_prefix` does for the skill prefix; the scores are the same up to
    float rounding. Under grad the gradient flows through that cache into the shared start's
    encoding. Every row is encoded whole where that extra forward call is not safe: gradient
    checkpointing in training mode (drops caches) and an FSDP-sharded model under grad.

    Args:
        model: causal LM (plain or peft), used in whatever mode and grad state the caller set:
            call under ``torch.no_grad()`` for ``l_old``/``l_ref``; under grad for the update
            (gradient then flows into ``log_probs``, ``entropy`` and ``logits``).
        prompt_ids: one unpadded, non-empty token-id list per row.
        response_ids: one token-id list per row (the sampled ids, EOS included when produced).
        with_entropy: also return the per-position entropy of the next-token distribution.
        micro_batch_size: rows per forward pass (default: all), rows of similar length together
            (results come back in input order). Under grad every micro-batch's
            graph is kept until backward, so for the update call this once per micro-batch.
        pad_id: id written at padded positions (never attended to or scored).
        return_logits: also return the [B, T, V] response logits (memory-heavy).
        temperature: score ``log_softmax(logits / temperature)``; default 1 (the model itself).

    Returns:
        :class:`ScoredBatch` padded to the longest response, on the model's device.
    """
    _check_rows(prompt_ids, response_ids)
    _check_micro_batch(micro_batch_size)
    prefix_cache = None
    shared = cached_start_length(prompt_ids) if _may_share_prompt_start(model) else 0
    if shared:
        prefix_cache = compute_prefix_cache(model, prompt_ids[0][:shared])
        prompt_ids = [p[shared:] for p in prompt_ids]
    return _score(
        model,
        prompt_ids,
        response_ids,
        pad_id=pad_id,
        prefix=None,
        prefix_cache=prefix_cache,
        with_entropy=with_entropy,
        micro_batch_size=micro_batch_size,
        return_logits=return_logits,
        temperature=temperature,
    )


def _checkpointing_drops_cache(model) -> bool:
    """True when transformers would silently drop a passed KV cache (its checkpointed layers do in
    training mode under grad), which would make the model ignore the prefix."""
    return (
        model.training
        and torch.is_grad_enabled()
        and any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    )


def _may_share_prompt_start(model) -> bool:
    """Whether encoding the prompts' common start separately (one more forward call) is safe.

    Not when checkpointing would drop the cache, and not for an FSDP-sharded model under grad:
    there every forward call is a collective that all ranks must make equally often, and ranks'
    micro-batches need not share a start (sdar.trainer.sharding). Without grad the trainer gathers
    the whole weights first, so forward calls are local.
    """
    if _checkpointing_drops_cache(model):
        return False
    return not (torch.is_grad_enabled() and isinstance(model, FSDPModule))


def compute_prefix_cache(
    model, prefix_ids: Sequence[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of ``prefix_ids`` at positions ``0..L-1``, batch 1.

    Computed in the caller's grad mode; only the last position goes through the output head.
    """
    device = next(model.parameters()).device
    prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    try:
        return cache_layers(returned_cache(out))
    except TypeError as error:
        raise TypeError(f"{error}: not supported with the prefix cache; use use_cache=False") from None


def score_with_prefix(
    model,
    prefix_ids: Sequence[int],
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    use_cache: bool = True,
    with_entropy: bool = False,
    micro_batch_size: int | None = None,
    pad_id: int,
    return_logits: bool = False,
    temperature: float = 1.0,
) -> ScoredBatch:
    """Teacher scoring: every row's input is ``prefix_ids + prompt_ids[i] + response_ids[i]``.

    For SDAR the prefix is the tokenised ``"[Privileged Skill Information]\\n" + skills + "\\n\\n"``
    (docs/algorithm.md, "Skill-prefix cache") and the trainer calls this once per distinct skill
    text. With ``use_cache=True`` the prefix's key/value cache is computed once and shared by all
    rows and micro-batches (expanded over the batch, each prompt placed right after it with its padding
    masked and positions continuing from ``len(prefix_ids)``); the tokens that every prompt starts
    with are cached along with the prefix. ``use_cache=False`` feeds the whole concatenation through
    the model. Both give the same scores up to float rounding.

    Arguments and result as in :func:`score_responses`; scores are for the response tokens only.
    Call under ``torch.no_grad()`` with the rollout-time weights for the teacher.
    """
    _check_rows(prompt_ids, response_ids)
    _check_micro_batch(micro_batch_size)
    prefix_ids = list(prefix_ids)
    if not prefix_ids:
        return score_responses(
            model,
            prompt_ids,
            response_ids,
            with_entropy=with_entropy,
            micro_batch_size=micro_batch_size,
            pad_id=pad_id,
            return_logits=return_logits,
            temperature=temperature,
        )
    if not prompt_ids:
        raise ValueError("nothing to score: prompt_ids is empty")
    prefix = prefix_cache = None
    if use_cache and _checkpointing_drops_cache(model):
        logger.warning(
            "gradient checkpointing in training mode under grad drops KV caches; "
            "scoring the skill prefix without its cache (same result, slower)"
        )
        use_cache = False
    if use_cache:
        # The prompts' common start (chat header, task preamble) joins the cached prefix.
        shared = shared_prefix_length(prompt_ids)
        prefix_cache = compute_prefix_cache(model, prefix_ids + list(prompt_ids[0][:shared]))
        prompt_ids = [p[shared:] for p in prompt_ids]
    else:
        device = next(model.parameters()).device
        prefix = torch.tensor([prefix_ids], dtype=torch.long, device=device)
    return _score(
        model,
        prompt_ids,
        response_ids,
        pad_id=pad_id,
        prefix=prefix,
        prefix_cache=prefix_cache,
        with_entropy=with_entropy,
        micro_batch_size=micro_batch_size,
        return_logits=return_logits,
        temperature=temperature,
    )


__all__ = ["ScoredBatch", "compute_prefix_cache", "score_responses", "score_with_prefix"]

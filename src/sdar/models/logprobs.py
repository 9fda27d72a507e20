"""Per-position quantities of logits without a second [B, T, V] copy: log-probs of given tokens,
next-token entropies, and the generalised JSD between two models' distributions.

``log_softmax(logits.float(), -1).gather(...)`` materialises one or two full float32 copies of the
logits (the upcast and the log-softmax output) and autograd keeps one alive for the backward pass.
With vocabularies of 49k-152k that is the largest tensor of a training step. Here the rows
(``B * T`` positions) are processed in chunks: the forward pass keeps only the per-row results,
and the backward pass recomputes each chunk's softmax from the logits (which are alive anyway)
and writes straight into the logits' gradient. Extra memory is a few chunk-sized float32 buffers.
Both kernels cut the rows the same way (:func:`_rows_per_chunk`, :func:`_blocks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "generalized_jsd_from_logits", "log_probs_from_logits"]

DEFAULT_CHUNK_ELEMENTS = 1 << 23
"""Default chunk budget in logits elements (8M: 32 MiB per float32 buffer), giving
``max(1, DEFAULT_CHUNK_ELEMENTS // vocab)`` rows per chunk."""


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for every logits dtype except float64, which is kept (exact gradient checks)."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _chunk_log_softmax(logits_chunk: Tensor) -> Tensor:
    # The dtype argument lets CUDA read half-precision logits and write float32 in one kernel.
    return torch.log_softmax(logits_chunk, dim=-1, dtype=_compute_dtype(logits_chunk))


def _chunk_entropy(log_probs: Tensor) -> Tensor:
    """Entropy per row; ``0 * log 0`` counts as 0 so that -inf logits (banned tokens) are fine."""
    p_log_p = log_probs.exp().mul_(log_probs)
    p_log_p.masked_fill_(log_probs == -torch.inf, 0.0)
    return -p_log_p.sum(-1)


class _ChunkedLogProbs(torch.autograd.Function):
    """Forward: per-row log-prob of the token (+ entropy). Backward: recompute softmax per chunk.

    Gradients, per row with softmax ``p``, token ``y``, entropy ``H``::

        d log p_y / d x = onehot(y) - p
        d H / d x       = -p * (log p + H)

    Each chunk needs at most two chunk-sized float32 buffers at a time (in-place updates).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, token_ids: Tensor, with_entropy: bool, rows: int):
        # logits [B, T, V] with any strides (a slice of the model output is not copied).
        dtype = _compute_dtype(logits)
        log_probs = torch.empty(token_ids.shape, dtype=dtype, device=logits.device)
        entropy_shape = token_ids.shape if with_entropy else (0,)
        entropy = torch.empty(entropy_shape, dtype=dtype, device=logits.device)
        for b, start, stop in _blocks(token_ids.shape, rows):
            chunk = _chunk_log_softmax(logits[b, start:stop])
            ids = token_ids[b, start:stop, None]
            log_probs[b, start:stop] = chunk.gather(-1, ids).squeeze(-1)
            if with_entropy:
                entropy[b, start:stop] = _chunk_entropy(chunk)
            del chunk
        ctx.rows = rows
        ctx.with_entropy = with_entropy
        ctx.save_for_backward(logits, token_ids, entropy)
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_log_probs: Tensor | None, grad_entropy: Tensor | None):
        logits, token_ids, entropy = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        use_entropy = ctx.with_entropy and grad_entropy is not None
        for b, start, stop in _blocks(token_ids.shape, ctx.rows):
            log_p = _chunk_log_softmax(logits[b, start:stop])
            grad = log_p.exp()  # p for now; becomes the gradient in place
            if use_entropy:
                # term = p * (log p + H), in the log_p buffer; 0 where p = 0 (log p = -inf).
                term = log_p.add_(entropy[b, start:stop, None]).mul_(grad)
                term.masked_fill_(grad == 0, 0.0)
            else:
                del log_p
            if grad_log_probs is not None:
                g_lp = grad_log_probs[b, start:stop, None].to(grad.dtype)
                grad.mul_(-g_lp)
                grad.scatter_add_(-1, token_ids[b, start:stop, None], g_lp)
            else:
                grad.zero_()
            if use_entropy:
                g_h = grad_entropy[b, start:stop, None].to(grad.dtype)
                grad.addcmul_(term, g_h, value=-1.0)
                del term, log_p
            # Rows nobody takes a gradient from (padding) get exactly 0, even if their logits are
            # NaN (fully masked attention rows can be): 0 * NaN would otherwise poison the update.
            unused = grad_log_probs[b, start:stop, None] == 0 if grad_log_probs is not None \
                else torch.ones_like(grad[:, :1], dtype=torch.bool)
            if use_entropy:
                unused = unused & (grad_entropy[b, start:stop, None] == 0)
            grad.masked_fill_(unused, 0.0)
            grad_logits[b, start:stop] = grad
            del grad
        return grad_logits, None, None, None


def _rows_per_chunk(where: str, chunk_size: int | None, vocab: int) -> int:
    """Rows (positions) per chunk: ``chunk_size``, or ``max(1, DEFAULT_CHUNK_ELEMENTS // vocab)``
    for ``None``; anything but ``None`` or an int >= 1 raises ``ValueError`` naming ``where``."""
    if chunk_size is None:
        return max(1, DEFAULT_CHUNK_ELEMENTS // vocab)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be None or an int >= 1, got {chunk_size!r}")
    return chunk_size


def _blocks(shape: torch.Size, rows: int):
    """``(b, start, stop)`` row blocks of at most ``rows`` positions covering a ``[B, T]`` grid."""
    batch, length = shape
    for b in range(batch):
        for start in range(0, length, rows):
            yield b, start, min(start + rows, length)


def log_probs_from_logits(
    logits: Tensor,
    token_ids: Tensor,
    with_entropy: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-prob of each given token, and optionally each position's entropy, from logits.

    Equal to ``torch.log_softmax(logits.float(), -1).gather(-1, token_ids[..., None])[..., 0]``
    (bit for bit on CPU, where the same kernels run on row chunks; on CUDA the upcast is fused
    into the softmax kernel) but never holds more than two chunks of
    float32 copies; the backward pass recomputes the softmax chunk by chunk. Differentiable
    (first order) in ``logits`` through both outputs; call it under ``torch.no_grad()`` for scoring.

    Args:
        logits: ``[B, T, V]`` (any leading shape ``[..., V]``) logits in any float dtype, where
            position ``t`` holds the logits that predict ``token_ids[..., t]`` (shift before
            calling).
        token_ids: ``[B, T]`` integer tensor (the leading shape of ``logits``), ids in ``[0, V)``.
        with_entropy: also return the entropy (nats) of the next-token distribution at each
            position, used by the entropy bonus and the entropy / soft-OR gates.
        chunk_size: rows (positions) per chunk; ``None`` picks
            ``max(1, DEFAULT_CHUNK_ELEMENTS // V)``. Smaller saves memory, larger saves launches.

    Returns:
        ``(log_probs, entropy)``: float32 tensors (float64 for float64 logits) of ``token_ids``'
        shape; ``entropy`` is ``None`` unless ``with_entropy``. The function does not know which positions are padding, so it
        does not reject bad logits: a position whose logits hold NaN or +inf gets NaN, a token
        whose logit is -inf gets -inf, and the losses reject either on response tokens, naming the
        argument. Positions that receive no gradient (padding) pass exactly 0 back to the logits,
        even when their logits are NaN.
    """
    where = "log_probs_from_logits"
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"{where}: logits must be a floating-point torch.Tensor")
    if logits.dim() < 2 or logits.shape[-1] == 0:
        raise ValueError(
            f"{where}: logits must be [B, T, V] (vocabulary last), got shape {tuple(logits.shape)}"
        )
    if not isinstance(token_ids, Tensor) or token_ids.is_floating_point() or token_ids.is_complex() \
            or token_ids.dtype == torch.bool:
        raise TypeError(f"{where}: token_ids must be an integer torch.Tensor (e.g. torch.long)")
    if token_ids.shape != logits.shape[:-1]:
        raise ValueError(
            f"{where}: token_ids has shape {tuple(token_ids.shape)} but logits has shape "
            f"{tuple(logits.shape)}; token_ids must match the logits without the vocabulary dim"
        )
    vocab = logits.shape[-1]
    rows = _rows_per_chunk(where, chunk_size, vocab)
    leading = token_ids.shape
    flat_ids = token_ids.reshape(-1).long()
    if flat_ids.numel() == 0:
        empty = torch.empty(leading, dtype=_compute_dtype(logits), device=logits.device)
        return empty, (empty.clone() if with_entropy else None)
    low, high = int(flat_ids.min()), int(flat_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(
            f"{where}: token_ids must lie in [0, {vocab}) for a vocabulary of {vocab}, got values "
            f"in [{low}, {high}]; is the tokenizer's vocabulary larger than the model's?"
        )
    # One long row grid when the layout allows it (fewest chunks); otherwise keep [B, T, V] so that
    # a sliced model output (e.g. logits[:, p:-1]) is read in place instead of copied.
    try:
        grid = logits.view(1, -1, vocab)
    except RuntimeError:
        grid = logits.unsqueeze(0) if logits.dim() == 2 else logits.reshape(-1, *logits.shape[-2:])
    log_probs, entropy = _ChunkedLogProbs.apply(
        grid, flat_ids.view(grid.shape[:-1]), bool(with_entropy), rows
    )
    log_probs = log_probs.reshape(leading)
    return log_probs, (entropy.reshape(leading) if with_entropy else None)


def _jsd_per_row(
    student_logits: Tensor, teacher_logits: Tensor, jsd_beta: float, top_k: int | None
) -> Tensor:
    """Generalised JSD of each row of ``[n, V]`` logits (definition in
    :func:`generalized_jsd_from_logits`)."""
    if top_k is not None and top_k < student_logits.shape[-1]:
        support = teacher_logits.topk(top_k, dim=-1).indices
        student_logits = student_logits.gather(-1, support)
        teacher_logits = teacher_logits.gather(-1, support)
    dtype = _compute_dtype(student_logits)
    student = F.log_softmax(student_logits, dim=-1, dtype=dtype)
    teacher = F.log_softmax(teacher_logits, dim=-1, dtype=dtype)
    if jsd_beta == 0.0:
        return (teacher.exp() * (teacher - student)).sum(-1)
    if jsd_beta == 1.0:
        return (student.exp() * (student - teacher)).sum(-1)
    log_mixture = torch.logaddexp(teacher + math.log(jsd_beta), student + math.log(1.0 - jsd_beta))
    kl_teacher = (teacher.exp() * (teacher - log_mixture)).sum(-1)
    kl_student = (student.exp() * (student - log_mixture)).sum(-1)
    return jsd_beta * kl_teacher + (1.0 - jsd_beta) * kl_student


class _ChunkedJSD(torch.autograd.Function):
    """Per-position JSD over row chunks; the backward pass recomputes one chunk at a time.

    Only chunk-sized float32 buffers ever exist, and the student gradient is written straight
    into a ``[B, T, V]`` buffer, instead of autograd keeping every intermediate of every row.
    Positions outside ``mask`` are zeroed before use and get value and gradient 0.
    """

    @staticmethod
    def forward(ctx, logits, teacher_logits, mask, jsd_beta, top_k, rows, where):
        batch, length, _ = logits.shape
        per_token = torch.zeros(batch, length, dtype=_compute_dtype(logits), device=logits.device)
        for b, start, stop in _blocks(mask.shape, rows):
            keep = mask[b, start:stop, None]
            if not bool(keep.any()):
                continue
            student = torch.where(keep, logits[b, start:stop], 0.0)
            teacher = torch.where(keep, teacher_logits[b, start:stop], 0.0)
            for name, value in (("logits", student), ("teacher_logits", teacher)):
                bad = ~torch.isfinite(value).all(-1)
                if bool(bad.any()):
                    first = (b, start + int(bad.nonzero()[0]))
                    raise ValueError(
                        f"{where}: {name} hold NaN/inf on a response position "
                        f"(first at {first}); check the model's forward pass"
                    )
            per_token[b, start:stop] = _jsd_per_row(student, teacher, jsd_beta, top_k)
        ctx.save_for_backward(logits, teacher_logits, mask)
        ctx.settings = (jsd_beta, top_k, rows)
        return per_token

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_per_token):
        logits, teacher_logits, mask = ctx.saved_tensors
        jsd_beta, top_k, rows = ctx.settings
        grad_logits = torch.zeros_like(logits)
        for b, start, stop in _blocks(mask.shape, rows):
            keep = mask[b, start:stop, None]
            if not bool(keep.any()):
                continue
            student = torch.where(keep, logits[b, start:stop], 0.0).detach().requires_grad_()
            teacher = torch.where(keep, teacher_logits[b, start:stop], 0.0)
            with torch.enable_grad():
                values = _jsd_per_row(student, teacher, jsd_beta, top_k)
                weights = torch.where(keep[:, 0], grad_per_token[b, start:stop], 0.0)
                (grad,) = torch.autograd.grad(values, student, weights.to(values.dtype))
            grad_logits[b, start:stop] = grad
        return grad_logits, None, None, None, None, None, None


def generalized_jsd_from_logits(
    logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    jsd_beta: float = 0.5,
    top_k: int | None = None,
    chunk_size: int | None = None,
    *,
    where: str = "generalized_jsd_from_logits",
) -> Tensor:
    """Generalised JSD between the student's and the teacher's next-token distributions at each
    position, in row chunks (the kernel of ``sdar.losses.generalized_jsd_loss``, which checks the
    arguments and states the definition).

    Per position, with teacher distribution ``T``, student distribution ``S`` and
    ``M = jsd_beta * T + (1 - jsd_beta) * S``: ``jsd_beta * KL(T || M) + (1 - jsd_beta) *
    KL(S || M)``; ``jsd_beta = 0`` gives ``KL(T || S)`` and ``jsd_beta = 1`` gives ``KL(S || T)``.
    With ``top_k`` both distributions are renormalised over the teacher's ``top_k`` most likely
    tokens. The forward pass keeps only the per-position values; the backward pass recomputes one
    chunk at a time and writes the student gradient straight into a ``[B, T, V]`` buffer.

    Args:
        logits: ``[B, T, V]`` student logits, any float dtype, with gradient.
        teacher_logits: same shape; no gradient flows into it (pass it detached).
        mask: ``[B, T]`` bool; positions outside it are zeroed before use and get value and
            gradient 0, whatever their logits hold.
        jsd_beta: mixture coefficient in ``[0, 1]``.
        top_k: ``None`` for the full vocabulary, else ``1 <= top_k <= V``.
        chunk_size: rows per chunk, ``None`` for ``max(1, DEFAULT_CHUNK_ELEMENTS // V)``.
        where: the name error messages start with (the caller's).

    Returns:
        ``[B, T]`` float32 (float64 for float64 logits) per-position JSD, 0 outside ``mask``.
        NaN/inf logits on a masked position raise ``ValueError`` naming the argument and the
        first such position.
    """
    rows = _rows_per_chunk(where, chunk_size, logits.shape[-1])
    return _ChunkedJSD.apply(logits, teacher_logits, mask, float(jsd_beta), top_k, rows, where)

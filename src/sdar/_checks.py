"""Input validation shared by the loss, advantage and log-prob functions.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) with a message that
names the calling function, the argument, what is wrong and how to fix it, so that a bad batch
fails loudly instead of producing a silently wrong number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_tensor(where: str, name: str, value: object, ndim: int | None = None) -> Tensor:
    """Return ``value`` if it is a floating-point tensor (of ``ndim`` dims if given), else raise."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(
            f"{where}: {name} must be a floating-point tensor, got dtype {value.dtype}; "
            f"convert it with .float()"
        )
    if ndim is not None and value.dim() != ndim:
        raise ValueError(
            f"{where}: {name} must have {ndim} dimensions, got shape {tuple(value.shape)}"
        )
    return value


def check_same_shape(where: str, reference_name: str, reference: Tensor, **others: Tensor) -> None:
    """Raise if any tensor in ``others`` does not have ``reference``'s shape."""
    for name, value in others.items():
        check_tensor(where, name, value)
        if value.shape != reference.shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(value.shape)} but {reference_name} has shape "
                f"{tuple(reference.shape)}; all per-token tensors must be [batch, response_len]"
            )


def check_mask(where: str, mask: object, shape: torch.Size, shape_of: str = "log_probs") -> Tensor:
    """Validate a 0/1 or bool response mask of ``shape`` and return it as a bool tensor.

    Raises if the mask has the wrong shape, holds values other than 0 and 1, or selects no token
    at all (a token mean over zero tokens is undefined).
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where}: response_mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(
            f"{where}: response_mask has shape {tuple(mask.shape)} but {shape_of} has shape "
            f"{tuple(shape)}; the mask must mark the response tokens of exactly those positions"
        )
    if mask.dtype == torch.bool:
        mask_bool = mask
    else:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(
                f"{where}: response_mask must hold only 0 and 1 (or be bool); got other values. "
                f"Pass the attention/response mask, not weights"
            )
        mask_bool = mask != 0
    if not bool(mask_bool.any()):
        raise ValueError(
            f"{where}: response_mask selects no token (all zeros); a token mean over zero tokens is "
            f"undefined. Drop step samples without response tokens before computing the loss"
        )
    return mask_bool


def check_finite(where: str, name: str, value: Tensor, mask: Tensor | None = None) -> None:
    """Raise if ``value`` holds NaN or +-inf (only positions where ``mask`` is true are checked)."""
    bad = ~torch.isfinite(value.detach())
    if mask is not None:
        bad = bad & mask
    if bool(bad.any()):
        count = int(bad.sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{where}: {name} has {count} NaN/inf value(s)"
            f"{' on response tokens' if mask is not None else ''} (first at index {first}); "
            f"check how {name} was computed (overflow in half precision, log(0), empty softmax)"
        )


def check_number(
    where: str,
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number inside the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        low_text = "-inf" if low is None else f"{low:g}"
        high_text = "inf" if high is None else f"{high:g}"
        raise ValueError(
            f"{where}: {name}={value:g} is outside its allowed range "
            f"{left}{low_text}, {high_text}{right}"
        )
    return value


def masked_fill_invalid(value: Tensor, mask: Tensor) -> Tensor:
    """``value`` with every position outside ``mask`` replaced by 0.

    Done first in every loss so that padding (which may hold anything, even NaN) can change neither
    the value nor the gradient: the backward of ``torch.where`` sends zero to unselected positions.
    """
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))

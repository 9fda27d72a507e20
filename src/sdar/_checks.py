"""Input validation shared by the loss, advantage and log-prob functions, and the one number-range
check (``check_number``) that the config dataclasses use as well.

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
    *,
    integer: bool = False,
    hint: str = "",
) -> float:
    """Return ``value`` if it is a finite real number inside the given bounds, else raise.

    The one range check of the package: loss and advantage arguments and every bounded numeric
    config key (all but the seeds) use it, so all say the same thing, e.g. ``optim.lr must be > 0, got -1.0``. ``where``
    prefixes the message (the calling function; empty when ``name`` is already a full config
    key). ``low_open`` / ``high_open`` exclude the bound itself. ``integer``: the value must be
    an ``int`` (not a bool) and is returned as one; otherwise it is returned as a float.
    ``hint`` is appended to a range error (how to get what the user probably wanted).

    Raises ``TypeError`` for something that is not a number (an int when ``integer``), and
    ``ValueError`` for NaN, infinity or a value outside the bounds.
    """
    prefix = f"{where}: " if where else ""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{prefix}{name} must be {kind}, got {value!r}")
    number = value if integer else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{prefix}{name} must be finite, got {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        allowed = _range_text(low, high, low_open, high_open)
        raise ValueError(f"{prefix}{name} must be {allowed}, got {value!r}{'; ' + hint if hint else ''}")
    return number


def _range_text(low: float | None, high: float | None, low_open: bool = False,
               high_open: bool = False) -> str:
    """The allowed range in words: ``>= 1``, ``> 0``, ``<= 1`` or ``in [0, 1)``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def masked_fill_invalid(value: Tensor, mask: Tensor) -> Tensor:
    """``value`` with every position outside ``mask`` replaced by 0.

    Done first in every loss so that padding (which may hold anything, even NaN) can change neither
    the value nor the gradient: the backward of ``torch.where`` sends zero to unselected positions.
    """
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))

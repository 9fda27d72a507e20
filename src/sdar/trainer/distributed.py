"""Multi-process data-parallel training over ``torch.distributed`` (one process per device).

Launch with ``torchrun --nproc_per_node N -m sdar.cli train --config ...`` (or ``accelerate
launch``); both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``,
which :func:`init_distributed` reads. Without them (a plain ``sdar train``) everything here is a
no-op for a world of one process, so the single-process trainer runs the same code path.

The strategy is data parallel with every rank holding the full model ("DDP"), but the gradient
sum is done by hand (:func:`all_reduce_gradients`, once per optimizer step) instead of by the
``DistributedDataParallel`` wrapper: the trainer needs *sums* weighted by global token counts (DDP
averages), ranks may hold no step sample at all in a mini-batch (DDP would hang waiting for their
backward), and generation runs on the bare model.

Only small Python objects travel through :func:`all_gather_objects` (scores, ids, token counts,
episode outcomes, metric sums); tensors that are large (gradients, parameters) go through the
tensor collectives in flat buckets.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from sdar.rollout import Rollout

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Elements per flat bucket when reducing gradients or broadcasting parameters: large enough for
# few collectives, small enough that the extra buffer stays a fraction of the model.
_BUCKET_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (0 is the main process: logs, samples, checkpoints).
        world_size: number of processes (1 without a launcher).
        local_rank: rank on this machine; selects the GPU.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU); ``None`` for a world of one.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistributedContext()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} must be an integer (set by torchrun / "
            f"accelerate launch)"
        ) from None


def init_distributed(timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group the launcher describes, or return the single-process context.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT`` through
    torch's ``env://`` rendezvous). Backend: ``nccl`` when CUDA is available (and this process
    is pinned to ``cuda:LOCAL_RANK``, so ``model.device: auto`` lands on its own GPU), ``gloo``
    otherwise. Safe to call twice: an already initialised group is reused.

    Args:
        timeout_s: how long a collective may wait for the slowest rank before failing (a rank that
            crashed makes the others fail after this long instead of hanging forever).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={world_size} are inconsistent: need 0 <= RANK < "
            f"WORLD_SIZE; launch with torchrun --nproc_per_node N"
        )
    if world_size == 1:
        return SINGLE
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"a process group (rank {dist.get_rank()} of {dist.get_world_size()}) is "
                f"already initialised and differs from RANK={rank}, WORLD_SIZE={world_size}"
            )
        return DistributedContext(rank, world_size, local_rank, dist.get_backend())
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(
                f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun (which "
                f"sets it) or export {name} on every rank"
            )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this machine shows {torch.cuda.device_count()} GPU(s); "
                f"start at most one process per GPU (--nproc_per_node), or hide the GPUs "
                f"(CUDA_VISIBLE_DEVICES=) to run CPU processes over gloo"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info("rank %d of %d joined the process group (%s)", rank, world_size, backend)
    return DistributedContext(rank, world_size, local_rank, backend)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group (no-op for a world of one or when already left)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``count`` items.

    Shares differ by at most one item and the lower ranks take the larger shares; concatenating
    the shares of ranks 0, 1, ... gives back the original order (the trainer relies on this so a
    multi-process iteration lists its step samples in the single-process order).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"shard_bounds: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
        )
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_objects(context: DistributedContext, obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank. ``[obj]`` for one rank."""
    if not context.enabled:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(context: DistributedContext, obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (the others' argument is ignored)."""
    if not context.enabled:
        return obj
    box = [obj if context.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(context: DistributedContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a Ctrl-C or a NaN)."""
    if not context.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device(context))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def _device(context: DistributedContext) -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if context.backend == "nccl"
        else torch.device("cpu")
    )


def _buckets(tensors: Sequence[torch.Tensor]) -> Iterable[list[int]]:
    """Indices of ``tensors`` in groups of one dtype and device, about ``_BUCKET_ELEMENTS`` each."""
    group: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        if group and (
            size + t.numel() > _BUCKET_ELEMENTS
            or t.dtype != tensors[group[0]].dtype
            or t.device != tensors[group[0]].device
        ):
            yield group
            group, size = [], 0
        group.append(i)
        size += t.numel()
    if group:
        yield group


def all_reduce_gradients(context: DistributedContext, params: Sequence[torch.nn.Parameter]) -> None:
    """Replace every parameter's gradient by the **sum** over ranks (not the mean).

    A parameter without a gradient on this rank (no step sample here in this mini-batch) takes
    part with zeros, so every rank joins every collective and ends with the same ``.grad``. A
    parameter without a gradient on *every* rank keeps ``None`` (as in one process: the optimizer
    then leaves it alone, weight decay included).
    """
    if not context.enabled:
        return
    has_grad = torch.tensor(
        [p.grad is not None for p in params], dtype=torch.float32, device=_device(context)
    )
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    used = [p for p, flag in zip(params, has_grad.tolist()) if flag > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in used]
    for group in _buckets(grads):
        flat = torch.cat([grads[i].reshape(-1) for i in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in group:
            n = grads[i].numel()
            grads[i].copy_(flat[offset : offset + n].view_as(grads[i]))
            offset += n


@torch.no_grad()
def broadcast_parameters(
    context: DistributedContext, module: torch.nn.Module, src: int = 0
) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (same layout)."""
    if not context.enabled:
        return
    tensors = [t for t in list(module.parameters()) + list(module.buffers())]
    for group in _buckets(tensors):
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in group])
        dist.broadcast(flat, src=src)
        offset = 0
        for i in group:
            n = tensors[i].numel()
            tensors[i].copy_(flat[offset : offset + n].view_as(tensors[i]))
            offset += n


def sum_dicts(dicts: Iterable[dict[str, float]]) -> dict[str, float]:
    """Key-wise sum of number dicts (keys missing from some dicts count as 0)."""
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def rank_seed(seed: int, rank: int, salt: str = "") -> int:
    """Seed of rank ``rank``'s sampling generator: ``seed`` itself on rank 0 with no salt (so a
    world of one samples exactly as the single-process trainer always did), a derived seed
    otherwise (different per rank, reproducible from ``seed``, ``rank`` and ``salt``)."""
    if rank == 0 and not salt:
        return seed
    return random.Random(f"sdar-rank-{seed}-{rank}-{salt}").getrandbits(63)


def gather_rollout(context: DistributedContext, rollout: Rollout) -> Rollout:
    """All ranks' episodes and step samples in rank order, for metrics (a world of one: as is).

    The step samples travel without their environment state and history (not needed for metrics,
    and an environment's state need not be cheap to pickle); prompt and response ids are kept.
    """
    if not context.enabled:
        return rollout
    light = [dataclasses.replace(s, state=None, history=[]) for s in rollout.samples]
    parts = all_gather_objects(context, (light, rollout.episodes))
    return Rollout(
        [s for samples, _ in parts for s in samples], [e for _, eps in parts for e in eps]
    )

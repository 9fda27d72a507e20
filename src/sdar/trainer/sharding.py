"""Sharded weights for multi-process training (``distributed.strategy: fsdp``, docs/distributed.md).

PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps 1/N of every parameter, of its
gradient and of its AdamW moments on each of the N ranks. A forward pass all-gathers one decoder
layer at a time and frees it again; the backward pass reduce-scatters each layer's gradient. Every
forward and backward pass is therefore a collective that all ranks must run together, in the same
order. This trainer's ranks do not naturally do that, so it arranges two things:

* **Phases without gradient** (rollouts, old / reference / teacher log-probs, validation): ranks
  run different numbers of forward passes (episodes end at different steps, ranks hold different
  numbers of step samples). :func:`full_weights` gathers every parameter once for the phase and
  keeps it whole until the phase ends, so the forward passes inside need no communication.
  Parameters are a quarter of the fp32 training state with AdamW (weights, gradients, two moments),
  so the other three quarters stay sharded throughout.
* **The update**: every rank runs the same number of forward/backward passes per mini-batch (a rank
  with fewer micro-batches runs zero-weighted padding passes, ``Trainer.update``), and the
  reduce-scatter **sums** over ranks (gradient divide factor 1) instead of averaging, as the
  trainer's token weighting requires (docs/distributed.md, "Exactness of the update").

Checkpoints stay whole tensors (``sdar.trainer.checkpoint`` gathers them with :func:`whole`), so a
run written sharded resumes on any number of processes, sharded or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from sdar.trainer.distributed import DistributedContext


def is_sharded(model: torch.nn.Module | None) -> bool:
    return isinstance(model, FSDPModule)


def _units(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a transformers causal LM (plain or peft): the modules whose class
    the model lists in ``_no_split_modules`` (the unit transformers itself never splits)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_model(model: torch.nn.Module, context: DistributedContext) -> None:
    """Shard ``model`` in place over all ranks: one FSDP unit per decoder layer, plus the root (the
    embeddings, final norm and output head). Every rank must hold the same weights when calling
    this (each keeps its shard of its own copy). LoRA: the frozen base weights and the adapters of
    a layer share its unit; frozen and trainable parameters are sharded alike."""
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(
            f"distributed.strategy=fsdp: found no decoder layers in {type(model).__name__} (it lists "
            f"none in _no_split_modules); use distributed.strategy=ddp for this model"
        )
    mesh = init_device_mesh("cuda" if context.backend == "nccl" else "cpu", (context.world_size,))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    # The root's parameters stay gathered from its forward pass until the end of the backward.
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    for unit in _units(model):
        unit.set_gradient_divide_factor(1.0)  # a sum over ranks, not FSDP's default mean
        # Plain SUM collectives: gloo has no pre-multiplied sum, and a factor of 1 needs none.
        unit.set_force_sum_reduction_for_comms(True)


@contextlib.contextmanager
def full_weights(*models: torch.nn.Module | None) -> Iterator[None]:
    """Inside, the sharded ``models`` hold their whole parameters and keep them across forward
    passes, so each rank may run any number of forward passes without communicating. Entering is
    one all-gather per FSDP unit: every rank must enter together. Leaving frees the gathered
    parameters. Models that are not sharded (and ``None``) are left alone, so this is a no-op for
    one process and for ``ddp``."""
    units = [
        (unit, unit is not model)  # (unit, its reshard_after_forward: decoder layers yes, root no)
        for model in models
        if is_sharded(model)
        for unit in _units(model)
    ]
    for unit, _ in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit, reshard_after_forward in units:
            unit.reshard()
            unit.set_reshard_after_forward(reshard_after_forward, recurse=False)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded one (an all-gather every rank must join); a plain tensor
    as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(like: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full`` (a whole tensor, the same on every rank) in the layout of ``like``: this rank's
    shard when ``like`` is sharded (cut locally, no communication), else ``full`` itself; on
    ``like``'s device and in its dtype."""
    full = full.to(like.device, like.dtype)
    if isinstance(like, DTensor):
        return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)
    return full

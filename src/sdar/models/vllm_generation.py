"""Rollout generation with vLLM on GPU, behind the same call contract as ``generation.generate``.

Optional (``pip install 'sdar[vllm]'``; vLLM is a CUDA wheel pinned to its own torch). vLLM only
*samples*: old, reference and teacher log-probs are still computed by the training model with
``sdar.models.scoring``, so every loss refers to the training model's exact probabilities and the
only thing vLLM decides is which tokens were sampled. Its own log-probs are never used.

Contract kept from ``generate``: prompt ids in, the exact sampled response ids out (a stop token,
if produced, is the last id; otherwise exactly ``max_new_tokens`` ids), ``GenerationConfig``
honoured (temperature, top-p, top-k, greedy, stop tokens), and seeded: one seed per prompt is drawn
from the caller's ``torch.Generator``, so the same generator state gives the same responses. The
engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise) so that
``sync_weights`` can hand it the training model's tensors without serialising them.

Weights: ``sync_weights(model)`` must be called after every optimiser update (and once before the
first rollout if the policy was not loaded from the same checkpoint). It sends full weights for
full fine-tuning and base + merged LoRA delta for a peft model (computed without touching the
trained model), then clears vLLM's prefix cache, whose keys/values belong to the old weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from sdar.models.generation import GenerationConfig, _check_prompts, default_stop_token_ids

__all__ = ["VllmGenerator", "sampling_kwargs", "trained_weights"]

_PEFT_PREFIX = "base_model.model."


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "the vLLM rollout engine needs vllm (CUDA only): `pip install 'sdar[vllm]'`, or use "
            f"rollout.engine=transformers. Original error: {error}"
        ) from error
    return vllm


def sampling_kwargs(config: GenerationConfig, stop_token_ids: Sequence[int],
                    seed: int | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` that reproduce ``config`` for one prompt.

    ``ignore_eos=True`` with explicit ``stop_token_ids`` makes the stop set exactly ours (vLLM
    would otherwise also stop at the tokenizer's EOS even when ``config`` names other ids); vLLM
    keeps a stop token id in the output ids, as ``generate`` does. Greedy is temperature 0.
    """
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": config.max_new_tokens,
        "stop_token_ids": [int(i) for i in stop_token_ids],
        "ignore_eos": True,
        "skip_special_tokens": False,
        "detokenize": False,
        "seed": seed,
    }
    if config.greedy:
        kwargs.update(temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kwargs.update(temperature=float(config.temperature), top_p=float(config.top_p),
                      top_k=config.top_k if config.top_k > 0 else -1)
    return kwargs


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") \
        and hasattr(module, "active_adapters")


def trained_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's current weights under Hugging Face checkpoint names, detached.

    Full fine-tuning: the model's state dict. peft LoRA: every adapted layer's base weight plus the
    active adapters' delta (``base + B @ A * scale``), and all other base weights, with peft's
    ``base_model.model.`` prefix and ``.base_layer`` removed and adapter tensors left out; the
    model itself is not modified (no merge/unmerge round trip that would drift bf16 weights).
    """
    if not hasattr(model, "peft_config"):
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
        return
    merged: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not _is_lora_layer(module):
            continue
        base = module.base_layer.weight.detach()
        weight = base
        for adapter in module.active_adapters:
            if adapter in getattr(module, "lora_A", {}):
                weight = weight + module.get_delta_weight(adapter)
        merged[f"{module_name}.base_layer.weight"] = weight.to(base.dtype)
    for name, tensor in model.state_dict().items():
        if ".lora_" in name or ".original_module." in name:
            continue
        clean = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name.replace(".base_layer.", "."))
        yield clean.removeprefix(_PEFT_PREFIX), merged.get(name, tensor).detach()


class VllmGenerator:
    """A vLLM engine that samples rollouts like ``sdar.models.generation.generate``.

    Args:
        model_path: a Hugging Face checkpoint folder or hub name with the policy's architecture and
            tokenizer (e.g. a folder ``save_pretrained`` wrote, or the base model of a LoRA run).
        dtype: vLLM weight dtype; use the training model's dtype so greedy outputs match.
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache); the rest is
            left for the training model, its optimiser and activations on the same GPU.
        max_model_len: longest prompt + response; default: the prompt and response budgets of
            the run (set it, a smaller value saves KV-cache memory).
        enable_prefix_caching: reuse KV for shared prompt prefixes (cleared on every sync).
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``, ``enforce_eager``).
    """

    def __init__(self, model_path: str, *, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.35, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, seed: int = 0, **engine_kwargs: Any):
        if not torch.cuda.is_available():
            raise RuntimeError("VllmGenerator needs a CUDA GPU; on CPU use the transformers "
                               "generation path (rollout.engine=transformers)")
        if not 0.0 < gpu_memory_utilization < 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1), got "
                             f"{gpu_memory_utilization!r}")
        # In-process engine: sync_weights passes tensors by reference instead of pickling them.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(model_path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, enable_prefix_caching=enable_prefix_caching, seed=seed,
            **engine_kwargs,
        )
        self.syncs = 0

    # ---- the generation contract ---------------------------------------------------------------
    def generate(
        self,
        model,
        tokenizer,
        prompt_ids: Sequence[Sequence[int]],
        config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> list[list[int]]:
        """Sample one response per prompt; same arguments and result as ``generate``.

        ``model`` is the training model: it is not run, only asked for its default stop tokens
        (with ``tokenizer``) when ``config.stop_token_ids`` is None. Seeds: one per prompt, drawn
        from ``generator`` (torch's global RNG when None), so equal generator states give equal
        responses. ``batch_size`` splits the prompts into engine calls of that size.
        """
        config = config or GenerationConfig()
        _check_prompts(prompt_ids)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if not prompt_ids:
            return []
        stop_ids = config.stop_token_ids or default_stop_token_ids(model, tokenizer)
        seeds = torch.randint(0, 2**31 - 1, (len(prompt_ids),), generator=generator).tolist()
        size = batch_size or len(prompt_ids)
        responses: list[list[int]] = []
        for start in range(0, len(prompt_ids), size):
            chunk = [list(p) for p in prompt_ids[start:start + size]]
            params = [self._vllm.SamplingParams(**sampling_kwargs(config, stop_ids, seed))
                      for seed in seeds[start:start + size]]
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in chunk], params,
                                        use_tqdm=False)
            responses.extend(list(out.outputs[0].token_ids) for out in outputs)
            if progress is not None:
                progress(len(chunk))
        return responses

    __call__ = generate

    # ---- weights -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> int:
        """Load ``model``'s current weights (full or base + merged LoRA) into the engine.

        Call after every optimiser step, before the next rollout. Clears the prefix cache.
        Returns the number of tensors sent.
        """
        weights = [(name, tensor) for name, tensor in trained_weights(model)]

        def load(engine_model):
            engine_model.load_weights(iter(weights))

        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(load)
        else:  # older engines: reach the in-process model runner directly
            load(self.llm.llm_engine.model_executor.driver_worker.model_runner.model)
        # Cached keys/values were computed with the old weights; vLLM answers False if it could not
        # drop them (requests still running), and sampling from them would be silently off-policy.
        if self.llm.reset_prefix_cache() is False:
            raise RuntimeError("vLLM could not clear its prefix cache after the weight update; "
                               "call sync_weights only between generate calls")
        self.syncs += 1
        return len(weights)

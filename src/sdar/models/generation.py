"""Batched sampling of responses from the policy (the rollout's generation step).

A plain sampling loop over the model's forward pass with a key/value cache, rather than
``model.generate``, so that the exact sampled token ids come back (no re-tokenisation), every random
draw comes from the caller's ``torch.Generator`` (same generator state -> same responses), and the
distribution sampled from is exactly ``softmax(logits / temperature)`` after the optional top-k /
top-p truncation, which is what the trainer's log-probs must refer to.

Layout: prompts are left-padded into one batch with an attention mask and explicit position ids,
so a prompt's tokens sit at positions ``0..len-1`` whatever its batch mates are. A row stops at the
first stop token (kept as its last response token) or after ``max_new_tokens``; finished rows are
dropped from the batch and from the cache, so the remaining rows do not pay for them.

Prefill: identical prompts (a GRPO group's copies at their first step) are encoded once. When the
distinct prompts of a batch start with the same tokens (the instructions every environment's
prompt opens with), that shared prefix is encoded once, its cache copied to every row, and only
the rest of each prompt is encoded, left-padded after it; positions continue from the prefix, so
each prompt still sits at ``0..len-1``. The rests are encoded either in one left-padded forward
pass (``prefill="batch"``, the default on GPUs) or one prompt at a time with their caches then
merged into the same left-padded layout (``prefill="rows"``, the default on CPU, where a padded
batch costs more than its rows one by one: ``benchmarks/micro_batch.py``). Decoding is batched
either way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sdar._checks import check_number


@dataclass
class GenerationConfig:
    """How responses are sampled.

    Attributes:
        max_new_tokens: most tokens per response (default 512, the paper's response budget).
        temperature: logits are divided by it before the softmax (default 1.0). Must be > 0
            unless ``greedy``.
        top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches ``top_p`` (default 1.0 = off).
        top_k: keep only the ``top_k`` most likely tokens (default 0 = off).
        greedy: always take the most likely token (temperature, top_p and top_k are then unused).
            Used for greedy validation (Search-QA).
        stop_token_ids: tokens that end a response. Default ``None``: the tokenizer's EOS plus the
            model's ``generation_config.eos_token_id`` (which for chat models includes the
            end-of-turn token).
    """

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_number("", "max_new_tokens", self.max_new_tokens, 1, integer=True)
        if not self.greedy:
            check_number("", "temperature", self.temperature, 0.0, low_open=True,
                         hint="for deterministic decoding set greedy=True instead of temperature 0")
        check_number("", "top_p", self.top_p, 0.0, 1.0, low_open=True, hint="1 = off")
        check_number("", "top_k", self.top_k, 0, integer=True, hint="0 = off")
        if self.stop_token_ids is not None:
            ids = tuple(self.stop_token_ids)
            if not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
                raise ValueError(
                    f"stop_token_ids must be a non-empty list of token ids or None, got {ids!r}"
                )
            self.stop_token_ids = ids


def default_stop_token_ids(model, tokenizer) -> tuple[int, ...]:
    """The tokenizer's EOS id plus the model's generation-config EOS id(s), sorted, unique."""
    ids: set[int] = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(i) for i in eos)
    if not ids:
        raise ValueError(
            "neither the tokenizer nor the model defines an EOS token; pass "
            "GenerationConfig(stop_token_ids=[...])"
        )
    return tuple(sorted(ids))


def sample_next_tokens(
    logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row from ``logits`` [B, V] as ``config`` says; returns ids [B] (long).

    The random draw happens on the generator's device, so a CPU generator works for a GPU model.
    """
    if config.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / config.temperature
    if config.top_k and config.top_k < scores.shape[-1]:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the top one stays).
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = scores.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        return (
            torch.multinomial(probs.to(generator.device), 1, generator=generator)
            .squeeze(1)
            .to(probs.device)
        )
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def cache_argument(model) -> str:
    """Name of the forward argument taking a KV cache: ``cache`` in newer transformers (5.2x
    deprecates ``past_key_values``), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def returned_cache(output):
    """The KV cache a forward pass returned, under either of its names."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _check_prompts(prompt_ids: Sequence[Sequence[int]]) -> None:
    if isinstance(prompt_ids, torch.Tensor):
        raise TypeError("prompt_ids must be a list of token-id lists (unpadded), not a tensor")
    for i, row in enumerate(prompt_ids):
        if len(row) == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a KV cache, each [batch, kv_heads, length, head_dim].

    Raises ``TypeError`` for caches that do not expose them, or that hold sliding-window layers
    (their keys cannot be spliced or shared as plain tensors).
    """
    layers = getattr(cache, "layers", None)
    if layers is None or any(getattr(layer, "keys", None) is None for layer in layers):
        raise TypeError(f"{type(cache).__name__} does not expose per-layer keys/values")
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        raise TypeError("the cache holds sliding-window attention layers")
    return [(layer.keys, layer.values) for layer in layers]


def cache_from_layers(model, layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """A fresh ``DynamicCache`` holding ``layers`` (the forward pass appends to it, not to them)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(layers), config=model.config)


PREFILL_MODES = ("auto", "batch", "rows")
MIN_SHARED_PREFIX = 32  # shorter shared prefixes are not worth the extra forward call


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens that every prompt starts with, leaving each prompt at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    length = 0
    while length < shortest - 1 and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


def cached_start_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the start worth encoding once for all ``prompts`` (one more forward call):
    :func:`shared_prefix_length` when there are several prompts and it reaches
    ``MIN_SHARED_PREFIX``, else 0."""
    if len(prompts) < 2:
        return 0
    shared = shared_prefix_length(prompts)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _left_padded(prompts, width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def _prefill_rows(model, unique, shared: int, width: int, prefix_cache):
    """Encode each distinct prompt alone (after ``prefix_cache``, the batch-1 cache of the
    ``shared`` tokens they all start with, or None) and merge the caches into the left-padded
    layout of the batched prefill: row ``i`` holds the prefix at ``[0, shared)`` and its own tokens
    right-aligned in ``[shared, shared + width)``, zeros (masked out) between. ``prefix_cache`` is
    read, not changed. Returns ``(cache, last-position logits [U, V])``, or ``None`` when the
    model's cache cannot be spliced (the caller then encodes the batch padded)."""
    device = next(model.parameters()).device
    cache_name = cache_argument(model)
    try:
        prefix_layers = cache_layers(prefix_cache) if prefix_cache is not None else None
        merged, logits = None, []
        for row, prompt in enumerate(unique):
            own = prompt[shared:]
            kwargs = {cache_name: cache_from_layers(model, prefix_layers)} if prefix_layers else {}
            out = model(
                input_ids=torch.tensor([own], dtype=torch.long, device=device),
                position_ids=torch.arange(shared, len(prompt), device=device)[None],
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
            layers = cache_layers(returned_cache(out))
            if merged is None:
                merged = [
                    (k.new_zeros((len(unique), k.shape[1], shared + width, k.shape[3])),
                     v.new_zeros((len(unique), v.shape[1], shared + width, v.shape[3])))
                    for k, v in layers
                ]
            start = shared + width - len(own)
            for (keys, values), (k, v) in zip(merged, layers):
                keys[row, :, :shared], values[row, :, :shared] = k[0, :, :shared], v[0, :, :shared]
                keys[row, :, start:], values[row, :, start:] = k[0, :, shared:], v[0, :, shared:]
            logits.append(out.logits[:, -1, :])
    except TypeError:
        return None
    return cache_from_layers(model, merged), torch.cat(logits)


@torch.inference_mode()
def _generate_batch(
    model, prompts, config, stop_ids, pad_id, generator, prefill: str
) -> list[list[int]]:
    device = next(model.parameters()).device
    batch = len(prompts)
    # Identical prompts (a GRPO group's copies at their first step) are encoded once; each copy
    # then gets its own row of the cache and samples independently.
    first_row: dict[tuple[int, ...], int] = {}
    for prompt in prompts:
        first_row.setdefault(tuple(prompt), len(first_row))
    expand = torch.tensor([first_row[tuple(p)] for p in prompts], device=device)
    unique = [list(p) for p in first_row]
    cache_name = cache_argument(model)
    shared = cached_start_length(unique)
    # Each distinct prompt's own tokens (all of it without a shared prefix), left-padded after
    # the prefix, at positions continuing from it.
    rest = [p[shared:] for p in unique]
    rest_ids, rest_mask = _left_padded(rest, max(len(r) for r in rest), pad_id)
    rest_ids, rest_mask = rest_ids.to(device), rest_mask.to(device)
    unique_mask = torch.cat([rest_mask.new_ones((len(unique), shared)), rest_mask], dim=1)
    prefix_cache = None
    if shared:
        prefix = torch.tensor([unique[0][:shared]], dtype=torch.long, device=device)
        prefix_cache = returned_cache(model(input_ids=prefix, use_cache=True, logits_to_keep=1))
    prefilled = None
    if prefill == "rows" and len(unique) > 1:
        prefilled = _prefill_rows(model, unique, shared, rest_ids.shape[1], prefix_cache)
    if prefilled is not None:
        cache, logits = prefilled
    else:
        prefix_kwargs = {}
        if prefix_cache is not None:
            prefix_cache.batch_repeat_interleave(len(unique))
            prefix_kwargs = {cache_name: prefix_cache}
        out = model(
            input_ids=rest_ids,
            attention_mask=unique_mask,
            position_ids=(rest_mask.cumsum(-1) - 1).clamp(min=0) + shared,
            use_cache=True,
            logits_to_keep=1,
            **prefix_kwargs,
        )
        cache = returned_cache(out)
        logits = out.logits[:, -1, :]
    attention_mask = unique_mask
    if len(first_row) < batch:
        cache.batch_select_indices(expand)
        logits, attention_mask = logits[expand], unique_mask[expand]
    next_position = attention_mask.sum(-1, keepdim=True)  # [b, 1]
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # rows of `prompts` still generating
    responses: list[list[int]] = [[] for _ in range(batch)]
    for step in range(config.max_new_tokens):
        tokens = sample_next_tokens(logits, config, generator)
        for row, token in zip(active.tolist(), tokens.tolist()):
            responses[row].append(token)
        if step == config.max_new_tokens - 1:
            break
        running = ~torch.isin(tokens, stop)
        if not bool(running.any()):
            break
        if not bool(running.all()):
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, tokens = active[keep], tokens[keep]
            attention_mask, next_position = attention_mask[keep], next_position[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], 1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_name: cache},
        )
        cache = returned_cache(out)
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return responses


def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], object] | None = None,
    prefill: str = "auto",
) -> list[list[int]]:
    """Sample one response per prompt.

    Args:
        model: a causal LM (plain or peft); it is put in eval mode for the call and restored.
        tokenizer: gives the pad id and the default stop tokens.
        prompt_ids: one unpadded list of token ids per prompt (each non-empty).
        config: sampling settings; default ``GenerationConfig()``.
        generator: source of every random draw. The same generator state, prompts, ``batch_size``
            and model give the same responses. ``None`` uses torch's global RNG. A generator on
            another device than the model (a CPU generator for a GPU model) seeds a generator on
            the model's device, once per call.
        batch_size: prompts per forward batch, in the given order (default: all at once). Within
            a batch, identical prompts are encoded once (their cache rows are copied), and so is
            a prefix of at least ``MIN_SHARED_PREFIX`` tokens that all its prompts share.
        progress: called with the number of prompts finished after each batch (e.g. a tqdm bar's
            ``update``).
        prefill: how a batch's distinct prompts are encoded before decoding: ``"batch"`` in one
            left-padded forward pass, ``"rows"`` one prompt at a time (no padding) with the
            caches merged, ``"auto"`` (default) ``"rows"`` on CPU and ``"batch"`` elsewhere. The
            responses are the same up to float rounding; only speed differs. Models whose cache
            cannot be merged (sliding-window layers) are encoded as a batch whatever is asked.

    Returns:
        One list of sampled token ids per prompt, in order, without padding. A response that
        produced a stop token ends with it; otherwise it has exactly ``max_new_tokens`` tokens.
    """
    config = config or GenerationConfig()
    _check_prompts(prompt_ids)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if prefill not in PREFILL_MODES:
        raise ValueError(f"prefill must be one of {PREFILL_MODES}, got {prefill!r}")
    if not prompt_ids:
        return []
    stop_ids = config.stop_token_ids or default_stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    size = batch_size or len(prompt_ids)
    device = next(model.parameters()).device
    if prefill == "auto":
        prefill = "rows" if device.type == "cpu" else "batch"
    if generator is not None and generator.device != device:
        # Draw on the model's device from a generator seeded by the caller's: reproducible, and no
        # [batch, vocab] copy to the caller's device at every step.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()  # no dropout, and HF keeps the KV cache on even with gradient checkpointing
    try:
        responses: list[list[int]] = []
        for start in range(0, len(prompt_ids), size):
            chunk = [list(p) for p in prompt_ids[start : start + size]]
            responses.extend(
                _generate_batch(model, chunk, config, stop_ids, pad_id, generator, prefill)
            )
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return responses


__all__ = [
    "PREFILL_MODES",
    "GenerationConfig",
    "cache_argument",
    "cache_from_layers",
    "cache_layers",
    "default_stop_token_ids",
    "generate",
    "returned_cache",
    "sample_next_tokens",
]

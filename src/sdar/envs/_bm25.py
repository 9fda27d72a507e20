"""Import ``bm25s`` without letting it start JAX on a GPU.

When JAX is installed, ``bm25s`` imports it and runs one ``jax.lax.top_k`` at import time to pick
its top-k backend. With a CUDA build of JAX that call opens the GPU and, by JAX's default, reserves
75% of its memory, in every process that imports ``bm25s``: a training process then has a quarter of
the card left for torch, and parallel runs fail outright (seen on one H100: 60 GiB taken by JAX in
the first run, "Unable to initialize backend 'cuda'" in the others). Our search engines take only
BM25 scores from ``bm25s`` and rank them themselves, so its top-k backend is never used: ``bm25s``
is imported with JAX hidden and settles on NumPy. A program that has imported JAX itself keeps
its JAX setup as it is; JAX stays importable afterwards.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_bm25s() -> ModuleType:
    """``bm25s``, imported with its NumPy top-k backend unless JAX is already in use."""
    if "bm25s" in sys.modules or "jax" in sys.modules:
        return importlib.import_module("bm25s")
    sys.modules["jax"] = None  # makes `import jax.lax` raise ImportError, which bm25s handles
    try:
        return importlib.import_module("bm25s")
    finally:
        del sys.modules["jax"]

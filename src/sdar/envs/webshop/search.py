"""The shop's search engine: BM25 (``bm25s``) over each product's title, category path, features
and description, as WebShop ranks with BM25 (pyserini) over its product text.

Ranking is deterministic: ties keep catalog order. Like WebShop, a search returns at most the top 50
products; products that share no word with the query are never returned.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from functools import lru_cache

import numpy as np

from sdar.envs._bm25 import import_bm25s
from sdar.envs.webshop.catalog import Catalog, load_catalog

bm25s = import_bm25s()

MAX_RESULTS = 50
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without English stop words; a plural ``s`` is dropped so that
    ``boots`` finds ``boot`` (a light stand-in for the stemming WebShop's index uses)."""
    tokens = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in _STOPWORDS:
            continue
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        tokens.append(tok)
    return tokens


class SearchEngine:
    """BM25 over a catalog. ``search(query)`` returns catalog positions, best first.

    Args:
        catalog: the products to index.
        cache_size: how many distinct queries to remember (a GRPO group repeats the same searches).
    """

    def __init__(self, catalog: Catalog, cache_size: int = 4096):
        self.catalog = catalog
        self._bm25 = bm25s.BM25()
        # bm25s sets its own logger to DEBUG, which would print a line per index into our logs
        bm25s_log = logging.getLogger("bm25s")
        level = bm25s_log.level
        bm25s_log.setLevel(max(level, logging.INFO))
        try:
            corpus = [tokenize(p.search_text()) for p in catalog.products]
            self._bm25.index(corpus, show_progress=False)
        finally:
            bm25s_log.setLevel(level)
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._cache_size = cache_size

    def search(self, query: str, top_k: int = MAX_RESULTS) -> tuple[int, ...]:
        """Positions in the catalog of the ``top_k`` best products for ``query`` (may be fewer)."""
        key = " ".join(tokenize(query))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._rank(key.split(), MAX_RESULTS) if key else ()
            self._cache[key] = hit
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit[:top_k]

    def _rank(self, tokens: list[str], top_k: int) -> tuple[int, ...]:
        scores = self._bm25.get_scores(tokens)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return tuple(int(i) for i in order if scores[i] > 0)


@lru_cache(maxsize=4)
def load_search_engine(catalog_seed: int = 0, num_products: int = 2500) -> SearchEngine:
    """The engine over ``load_catalog(catalog_seed, num_products)``, built once per process."""
    return SearchEngine(load_catalog(catalog_seed, num_products))

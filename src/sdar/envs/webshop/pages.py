"""The shop's pages and what clicking does, as in WebShop's text mode.

Four kinds of page, each with its clickables (matched case-insensitively):

* **search**: a search bar only; ``search[query]`` opens page 1 of the results.
* **results**: 10 products per page out of at most 50 (item id, title, price each); clickables
  ``back to search``, ``< prev`` (from page 2 on), ``next >`` (while more results follow) and the
  item ids of the page.
* **item**: the product's option groups (click a value to select it; one value per group), title,
  price and rating; clickables ``back to search``, ``< prev`` (back to the results page it was
  opened from), the option values, ``description``, ``features``, ``reviews`` and ``buy now``.
* **item tab**: the description, features or reviews text; clickables ``back to search`` and
  ``< prev`` (back to the item page, selections kept).

A page is a frozen ``Page`` value, so the same page state always renders the same text (GiGPO
groups steps by that text). ``Site.act`` returns the next page, or the unchanged page with
``valid=False`` for anything the page does not offer (WebShop leaves the page as it is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sdar.envs.webshop.catalog import Catalog, Product
from sdar.envs.webshop.search import SearchEngine

SEARCH, RESULTS, ITEM, ITEM_TAB = "search", "results", "item", "item_tab"
RESULTS_PER_PAGE = 10
BACK_TO_SEARCH, PREV, NEXT, BUY_NOW = "back to search", "< prev", "next >", "buy now"
TABS = ("description", "features", "reviews")
SEP = " [SEP] "

_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Page:
    """Where the shopper is. Fields not used by a kind keep their defaults.

    Attributes:
        kind: ``search``, ``results``, ``item`` or ``item_tab``.
        query: the search that led here (results, item, item tab).
        page_number: the results page (1-based) that led here.
        item_id: the open product (item, item tab).
        selected: ``((group, value), ...)`` chosen on the item page, in the product's group order.
        tab: ``description``, ``features`` or ``reviews`` (item tab).
    """

    kind: str = SEARCH
    query: str = ""
    page_number: int = 1
    item_id: str = ""
    selected: tuple[tuple[str, str], ...] = ()
    tab: str = ""


@dataclass(frozen=True)
class View:
    """A page as the agent sees it: its text, its clickables (lower case) and whether it has a
    search bar."""

    text: str
    clickables: tuple[str, ...]
    has_search_bar: bool


@dataclass(frozen=True)
class Outcome:
    """The result of one action: the new page, whether the action was valid, whether it bought."""

    page: Page
    valid: bool
    bought: bool = False


def normalize(text: str) -> str:
    """Lower case with runs of white space collapsed: how clicks are compared with clickables."""
    return " ".join(text.lower().split())


def parse_command(action: str) -> tuple[str, str] | None:
    """``("search", query)`` or ``("click", target)`` from ``search[...]`` / ``click[...]``, or
    ``None`` when the text is neither."""
    m = _ACTION.match(action or "")
    if m is None:
        return None
    return m.group(1).lower(), normalize(m.group(2))


def _price(value: float) -> str:
    return f"${value:.2f}"


class Site:
    """The shop over one catalog and search engine: renders pages and applies actions."""

    def __init__(self, catalog: Catalog, engine: SearchEngine):
        self.catalog = catalog
        self.engine = engine

    # ----- reading pages --------------------------------------------------------------------
    def results(self, page: Page) -> tuple[list[Product], int]:
        """The products shown on results page ``page`` and the total number of results."""
        hits = self.engine.search(page.query)
        start = (page.page_number - 1) * RESULTS_PER_PAGE
        return [self.catalog.products[i] for i in hits[start : start + RESULTS_PER_PAGE]], len(hits)

    def view(self, page: Page) -> View:
        """Render ``page`` (deterministic in ``page``)."""
        if page.kind == SEARCH:
            return View("WebShop" + SEP + "Search", (), True)
        if page.kind == RESULTS:
            return self._results_view(page)
        product = self.catalog.get(page.item_id)
        if page.kind == ITEM:
            return self._item_view(page, product)
        if page.kind == ITEM_TAB:
            body = {
                "description": [product.description],
                "features": list(product.features),
                "reviews": list(product.reviews),
            }[page.tab]
            return View(
                SEP.join(["Back to Search", "< Prev", *body]), (BACK_TO_SEARCH, PREV), False
            )
        raise ValueError(f"unknown page kind {page.kind!r}")

    def _results_view(self, page: Page) -> View:
        products, total = self.results(page)
        parts = ["Back to Search", f"Page {page.page_number} (Total results: {total})"]
        clickables = [BACK_TO_SEARCH]
        if page.page_number > 1:
            parts.append("< Prev")
            clickables.append(PREV)
        if page.page_number * RESULTS_PER_PAGE < total:
            parts.append("Next >")
            clickables.append(NEXT)
        for p in products:
            parts += [p.item_id, p.title, _price(p.price)]
            clickables.append(p.item_id.lower())
        return View(SEP.join(parts), tuple(clickables), False)

    def _item_view(self, page: Page, product: Product) -> View:
        parts = ["Back to Search", "< Prev"]
        clickables = [BACK_TO_SEARCH, PREV]
        for group, values in product.options:
            parts += [group, *values]
            clickables += values
        if page.selected:
            parts.append("Selected: " + ", ".join(f"{g} {v}" for g, v in page.selected))
        rating = "N.A." if product.rating is None else f"{product.rating:.1f}"
        parts += [
            product.title,
            f"Price: {_price(product.price)}",
            f"Rating: {rating}",
            "Description",
            "Features",
            "Reviews",
            "Buy Now",
        ]
        clickables += [*TABS, BUY_NOW]
        return View(SEP.join(parts), tuple(clickables), False)

    # ----- acting -----------------------------------------------------------------------------
    def act(self, page: Page, action: str) -> Outcome:
        """Apply ``search[...]`` or ``click[...]`` on ``page``; anything unavailable is invalid and
        leaves the page unchanged."""
        command = parse_command(action)
        if command is None:
            return Outcome(page, valid=False)
        verb, arg = command
        if verb == "search":
            if page.kind != SEARCH or not arg:
                return Outcome(page, valid=False)
            return Outcome(Page(kind=RESULTS, query=arg, page_number=1), valid=True)
        if arg not in self.view(page).clickables:
            return Outcome(page, valid=False)
        if arg == BACK_TO_SEARCH:
            return Outcome(Page(), valid=True)
        if page.kind == RESULTS:
            if arg == NEXT:
                return Outcome(replace(page, page_number=page.page_number + 1), valid=True)
            if arg == PREV:
                return Outcome(replace(page, page_number=page.page_number - 1), valid=True)
            return Outcome(
                replace(page, kind=ITEM, item_id=self.catalog.get(arg).item_id), valid=True
            )
        if page.kind == ITEM_TAB:  # only "< prev" is left
            return Outcome(replace(page, kind=ITEM, tab=""), valid=True)
        # item page
        if arg == PREV:
            return Outcome(
                Page(kind=RESULTS, query=page.query, page_number=page.page_number), valid=True
            )
        if arg in TABS:
            return Outcome(replace(page, kind=ITEM_TAB, tab=arg), valid=True)
        if arg == BUY_NOW:
            return Outcome(page, valid=True, bought=True)
        return Outcome(replace(page, selected=self._select(page, arg)), valid=True)

    def _select(self, page: Page, value: str) -> tuple[tuple[str, str], ...]:
        product = self.catalog.get(page.item_id)
        chosen = dict(page.selected)
        for group, values in product.options:
            if value in values:
                chosen[group] = value
                break
        return tuple((g, chosen[g]) for g, _ in product.options if g in chosen)

"""The generated catalog, its goals and the BM25 search engine."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from sdar.envs.webshop.catalog import (
    CATEGORIES,
    PRODUCT_TYPES,
    TYPES_BY_NAME,
    generate_catalog,
    load_catalog,
)
from sdar.envs.webshop.goals import generate_goals, load_goals, split_goal_indices
from sdar.envs.webshop.pages import BACK_TO_SEARCH, BUY_NOW, NEXT, PREV, TABS
from sdar.envs.webshop.search import SearchEngine, load_search_engine, tokenize


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def goals():
    return load_goals()


def test_generation_is_deterministic_per_seed():
    a, b, c = generate_catalog(3, 200), generate_catalog(3, 200), generate_catalog(4, 200)
    assert a.products == b.products
    assert a.products != c.products
    assert generate_goals(a) == generate_goals(b)


def test_default_catalog_covers_all_seven_categories(catalog):
    assert len(catalog) == 2500
    per_category = Counter(p.category for p in catalog.products)
    assert set(per_category) == set(CATEGORIES)
    assert min(per_category.values()) >= 250
    assert all(sum(t.category == c for t in PRODUCT_TYPES) >= 10 for c in CATEGORIES)
    assert len({p.title for p in catalog.products}) > 0.95 * len(catalog)


def test_products_are_well_formed(catalog):
    ids = [p.item_id for p in catalog.products]
    assert len(set(ids)) == len(ids)
    fixed = {BACK_TO_SEARCH, PREV, NEXT, BUY_NOW, *TABS}
    for p in catalog.products:
        assert re.fullmatch(r"B0[A-Z0-9]{8}", p.item_id)
        ptype = TYPES_BY_NAME[p.product_type]
        assert p.category == ptype.category and p.category_path == ptype.category_path
        assert ptype.price_range[0] <= p.price <= ptype.price_range[1] + 1
        assert p.rating is None or 3.0 <= p.rating <= 5.0
        assert set(p.attributes) <= set(ptype.attributes) and len(p.attributes) >= 2
        values = [v for _, vs in p.options for v in vs]
        # one click must name one option value: unique within the product, never a page button
        assert len(values) == len(set(values)) and not set(values) & fixed
        assert [g for g, _ in p.options] == [g for g, _ in ptype.options]
        assert all(len(vs) >= 2 for _, vs in p.options)
        assert p.description and p.features and len(p.reviews) >= 2
        assert ptype.name.lower() in p.title.lower()


def test_product_text_states_exactly_its_own_attributes(catalog):
    """The scoring matches attributes against the list, so the text must not claim others."""
    for p in catalog.products:
        text = " ".join((p.title, p.description, *p.features, *p.reviews)).lower()
        for own in sorted(p.attributes, key=len, reverse=True):
            assert own in text
            text = text.replace(own, " ")
        for other in TYPES_BY_NAME[p.product_type].attributes:
            if other not in p.attributes:
                assert not re.search(rf"(?<![\w-]){re.escape(other)}(?![\w-])", text), (
                    p.item_id,
                    other,
                )


def test_goals_are_well_formed_and_split_like_webshop(catalog, goals):
    assert len(goals) == 2 * len(catalog)
    assert [g.index for g in goals] == list(range(len(goals)))
    assert split_goal_indices(len(goals), "test") == range(500)
    assert split_goal_indices(len(goals), "train") == range(500, len(goals))
    assert Counter(g.item_id for g in goals).most_common(1)[0][1] == 2  # every product twice
    for g in goals:
        product = catalog.get(g.item_id)
        text = g.instruction
        assert text == text.lower() and g.product_type in text
        assert f"price lower than {g.price_upper:.2f} dollars" in text
        assert product.price < g.price_upper
        assert 1 <= len(g.attributes) <= 3 and set(g.attributes) <= set(product.attributes)
        assert all(a in text for a in g.attributes)
        assert all(v in dict(product.options)[grp] and v in text for grp, v in g.options)
        assert [grp for grp, _ in g.options] == [grp for grp, _ in product.options]


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="split"):
        split_goal_indices(1000, "valid")
    with pytest.raises(ValueError, match="num_test_goals"):
        split_goal_indices(400, "train", 500)
    with pytest.raises(ValueError, match="num_products"):
        generate_catalog(0, 10)


def test_tokenize_lowercases_drops_stopwords_and_plural_s():
    assert tokenize("Running Shoes, size 9.5 for the Boss") == [
        "running",
        "shoe",
        "size",
        "9.5",
        "boss",
    ]


def test_bm25_ranks_matching_products_first(catalog):
    engine = load_search_engine()
    hits = engine.search("waterproof hiking boots")
    assert len(hits) == 50
    top = [catalog.products[i] for i in hits[:10]]
    assert all(p.product_type == "hiking boots" and "waterproof" in p.attributes for p in top)
    assert engine.search("waterproof hiking boots") == hits  # cached and deterministic
    assert engine.search("zzzz qqqq") == ()
    assert engine.search("the and of") == ()


def test_search_engine_on_a_small_catalog_finds_each_title():
    small = generate_catalog(1, 120)
    engine = SearchEngine(small)
    for i, p in enumerate(small.products):
        assert i in engine.search(p.title)[:10]


def test_catalog_and_index_build_in_process():
    # Built in memory, no disk cache (about 0.5 s on an idle CPU; speed belongs in benchmarks,
    # not in a timed unit test, so only the result is checked here).
    catalog = generate_catalog(11, 2500)
    engine = SearchEngine(catalog)
    assert len(catalog) == 2500
    product = catalog.products[0]
    assert 0 in engine.search(product.title)  # a product is found by its own title

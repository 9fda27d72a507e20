"""The purchase score on hand-made cases: WebShop's ``get_reward`` rule (a parity table derived by
hand from princeton-nlp/WebShop's ``web_agent_site/engine/goal.py``) and the former exact rule
(formulas in sdar.envs.webshop.scoring)."""

from __future__ import annotations

import dataclasses

import pytest

from sdar.envs.webshop.catalog import Product
from sdar.envs.webshop.goals import Goal
from sdar.envs.webshop.scoring import (
    fuzzy_match,
    normalize_color,
    reward_for_score,
    score_goal_purchase,
    score_purchase,
    title_nouns,
    token_set_ratio,
    type_factor,
    type_reward,
)

RUNNING = ("footwear", "athletic", "running shoes")
GOAL = {
    "goal_type": "running shoes",
    "goal_path": RUNNING,
    "goal_attributes": ["lightweight", "non-slip"],
    "goal_options": [("size", "9"), ("color", "black")],
    "price_upper": 50.0,
}


def buy(
    product_type="running shoes",
    path=RUNNING,
    attributes=("lightweight", "non-slip", "arch support"),
    price=45.0,
    selected=None,
    **goal_overrides,
):
    goal = {**GOAL, **goal_overrides}
    selected = {"size": "9", "color": "black"} if selected is None else selected
    return score_purchase(
        **goal,
        product_type=product_type,
        product_path=path,
        product_attributes=attributes,
        product_price=price,
        selected_options=selected,
    )


def test_everything_matched_scores_exactly_one_and_earns_ten():
    s = buy()
    assert s.score == 1.0
    assert (s.attributes_matched, s.options_matched, s.price_ok, s.type_factor) == (2, 2, True, 1.0)
    assert reward_for_score(s.score) == 10.0


def test_partial_match_counts_over_total_plus_one():
    # 1 of 2 attributes, 1 of 2 options (wrong color), price over the ceiling:
    # (1 + 1 + 0) / (2 + 2 + 1)
    s = buy(attributes=("lightweight",), price=60.0, selected={"size": "9", "color": "red"})
    assert s.score == pytest.approx(2 / 5)
    assert (s.attributes_matched, s.options_matched, s.price_ok) == (1, 1, False)
    assert reward_for_score(s.score) == 0.0


def test_unselected_options_are_misses_and_price_at_ceiling_is_ok():
    s = buy(price=50.0, selected={})
    assert s.score == pytest.approx((2 + 0 + 1) / 5)
    assert s.price_ok


def test_goal_without_options_divides_by_attributes_plus_one():
    s = buy(attributes=("non-slip",), goal_options=[], selected={})
    assert s.score == pytest.approx((1 + 1) / 3)


def test_matching_ignores_case():
    s = buy(attributes=("Lightweight", "NON-SLIP"), selected={"Size": "9", "color": "Black"})
    assert s.score == 1.0


def test_wrong_product_type_scales_the_score():
    # Sibling type (same subcategory): factor 0.5 on an otherwise perfect purchase.
    s = buy(product_type="trail shoes", path=("footwear", "athletic", "trail shoes"))
    assert (s.type_factor, s.score) == (0.5, 0.5)
    # Same category, other subcategory, no shared type word: 0.1.
    s = buy(product_type="loafers", path=("footwear", "casual", "loafers"))
    assert s.score == pytest.approx(0.1)
    # Unrelated: 0 whatever else matches.
    s = buy(product_type="lipstick", path=("beauty and health", "makeup", "lipstick"))
    assert (s.type_factor, s.score) == (0.0, 0.0)
    # Wrong type and a partial match multiply: 0.1 * (1 + 0 + 1) / 5.
    s = buy(
        product_type="sneakers",
        path=("footwear", "casual", "sneakers"),
        attributes=("non-slip",),
        selected={"size": "8"},
    )
    assert s.score == pytest.approx(0.1 * 2 / 5)


@pytest.mark.parametrize(
    "goal, product, expected",
    [
        (
            ("work boots", ("footwear", "boots", "work boots")),
            ("hiking boots", ("footwear", "boots", "hiking boots")),
            0.5,
        ),
        (
            ("leather wallet", ("accessories", "wallets", "leather wallet")),
            ("leather belt", ("accessories", "belts", "leather belt")),
            0.5,
        ),  # half the words, same category
        (
            ("winter jacket", ("apparel", "outerwear", "winter jacket")),
            ("winter scarf", ("accessories", "scarves", "winter scarf")),
            0.1,
        ),  # a shared word only
        (("running shoes", RUNNING), ("sneakers", ("footwear", "casual", "sneakers")), 0.1),
        (
            ("hdmi cable", ("electronics", "cables", "hdmi cable")),
            ("yoga mat", ("other", "fitness", "yoga mat")),
            0.0,
        ),
        (
            ("flip flops", ("footwear", "sandals", "flip flops")),
            ("Flip Flops", ("footwear", "sandals", "flip flops")),
            1.0,
        ),
    ],
)
def test_type_factor_tiers(goal, product, expected):
    assert type_factor(goal[0], goal[1], product[0], product[1]) == expected


def test_plural_s_does_not_break_word_overlap():
    # "boots" and "boot" are the same word; across categories that is a shared word (0.1).
    assert (
        type_factor(
            "rain boots",
            ("footwear", "boots", "rain boots"),
            "boot tray",
            ("home decor", "storage", "boot tray"),
        )
        == 0.1
    )


# ----- WebShop's rule: a parity table ------------------------------------------------------------
# Every expected value is WebShop's get_reward worked out by hand:
#   r_type * (attributes matched + options matched + [price <= ceiling]) / (attrs + options + 1)
# with r_type from the query, two shared category levels and the title nouns (title_score =
# shared goal-title nouns / goal-title nouns). The target's title has 5 nouns:
# trailblaze, men, lightweight, running, shoes. "exact" is the former rule's value on the same case.

TARGET = Product(
    item_id="B0TARGET01", title="Trailblaze Men's Lightweight Running Shoes", brand="Trailblaze",
    product_type="running shoes", category="footwear", category_path=RUNNING, price=45.0,
    rating=None, attributes=("lightweight", "non-slip"), options=(), description="A daily trainer.",
    features=("breathable mesh upper",), reviews=(),
)
WS_GOAL = Goal(
    index=0, item_id="B0TARGET01", product_type="running shoes", category="footwear",
    category_path=RUNNING, attributes=("lightweight", "non-slip"),
    options=(("size", "9"), ("color", "black")), price_upper=50.0, instruction="",
)
NINE_BLACK = {"size": "9", "color": "black"}
LONG_TITLE = "Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliet Shoes"  # 11 nouns

PARITY = [
    # (case, goal changes, target changes, product changes, selected, webshop, exact)
    ("the target, everything chosen", {}, {}, {}, NINE_BLACK, 1.0, 1.0),
    ("price over the ceiling: 4/5", {}, {}, {"price": 60.0}, NINE_BLACK, 0.8, 0.8),
    ("price at the ceiling counts", {}, {}, {"price": 50.0}, NINE_BLACK, 1.0, 1.0),
    ("no option chosen: 3/5", {}, {}, {}, {}, 0.6, 0.6),
    ("'jet black' for 'black': both normalise to black", {}, {}, {},
     {"size": "9", "color": "jet black"}, 1.0, 0.8),
    ("'large' for 'x-large' (token sets share 'large'), red for navy, no cotton: (0+1+1)/4",
     {"attributes": ("cotton",), "options": (("size", "x-large"), ("color", "navy"))}, {}, {},
     {"size": "large", "color": "red"}, 0.5, 0.25),
    ("same query, no shared title noun: title_score 0 -> r_type 0", {}, {},
     {"title": "Zephyr Trainer"}, NINE_BLACK, 0.0, 1.0),
    ("other type, one shared noun (men, 1/5 = 0.2, not > 0.2), no query/category match: r_type 0.5",
     {}, {}, {"title": "Men's Cotton Crew Socks", "product_type": "crew socks",
              "category_path": ("apparel", "socks", "crew socks")}, NINE_BLACK, 0.5, 0.0),
    ("same query, 1 of 11 goal-title nouns (< 0.1): r_type 0.1", {}, {"title": LONG_TITLE},
     {"title": "Shoes"}, NINE_BLACK, 0.1, 1.0),
    ("other type, 3 of 5 nouns (> 0.2): r_type 1", {}, {},
     {"title": "Trailblaze Lightweight Walking Shoes", "product_type": "walking shoes",
      "category_path": ("footwear", "casual", "walking shoes")}, NINE_BLACK, 1.0, 0.5),
    ("other type, two shared category levels, title 0.2: r_type 1", {}, {},
     {"title": "Men's Trail Runner", "product_type": "trail shoes",
      "category_path": ("footwear", "athletic", "trail shoes")}, NINE_BLACK, 1.0, 0.5),
    ("other type, one shared category level, title 0.2: r_type 0.5", {}, {},
     {"title": "Men's Trail Runner", "product_type": "trail shoes",
      "category_path": ("footwear", "hiking", "trail shoes")}, NINE_BLACK, 0.5, 0.5),
    ("attributes in title and description only", {}, {},
     {"attributes": (), "description": "Non-slip sole."}, NINE_BLACK, 1.0, 0.6),
    ("attribute in the features only", {}, {},
     {"attributes": ("lightweight",), "features": ("breathable mesh", "non-slip outsole")},
     NINE_BLACK, 1.0, 0.8),
    ("'non slip' listed for 'non-slip': same tokens", {}, {},
     {"attributes": ("lightweight", "non slip")}, NINE_BLACK, 1.0, 0.8),
    ("'water resistant finish' listed for 'water resistant': token superset",
     {"attributes": ("water resistant",), "options": ()}, {},
     {"attributes": ("water resistant finish",)}, {}, 1.0, 0.5),
    ("'cotton' listed for 'leather': no match", {"attributes": ("leather",), "options": ()}, {},
     {"attributes": ("cotton",)}, {}, 0.5, 0.5),
    ("attribute as a substring of the description ('without wool')",
     {"attributes": ("wool",)}, {}, {"description": "Made without wool."}, NINE_BLACK, 1.0, 0.75),
    ("'30 count' for '60 count': ratio('count 30', 'count 60') = 88 > 85",
     {"attributes": ("lightweight",), "options": (("size", "60 count"),)}, {}, {},
     {"size": "30 count"}, 1.0, 2 / 3),
    ("'9' for '9.5': tokens {9} within {9, 5}", {"attributes": ("lightweight",),
                                              "options": (("size", "9.5"),)}, {}, {},
     {"size": "9"}, 1.0, 2 / 3),
    ("'10' for '9': no match, black matches: (2+1+1)/5", {}, {}, {},
     {"size": "10", "color": "black"}, 0.8, 0.8),
    ("'light blue' for 'dark blue': both normalise to blue",
     {"attributes": ("lightweight",), "options": (("color", "dark blue"),)}, {}, {},
     {"color": "light blue"}, 1.0, 2 / 3),
    ("'yellow' for 'mustard yellow': the goal normalises to mustard",
     {"attributes": ("lightweight",), "options": (("color", "mustard yellow"),)}, {}, {},
     {"color": "yellow"}, 2 / 3, 2 / 3),
    ("goal title without nouns: title_score 0.2, no query/category match: r_type 0.5", {},
     {"title": "For The 2"}, {"title": "Zephyr Trainer", "product_type": "trail shoes",
                              "category_path": ("footwear", "hiking", "trail shoes")},
     NINE_BLACK, 0.5, 0.5),
    ("a selected value counts for any group: '9' chosen as colour", {}, {}, {},
     {"size": "black", "color": "9"}, 1.0, 0.6),
]


@pytest.mark.parametrize("case, goal_changes, target_changes, product_changes, selected, webshop, exact",
                         PARITY, ids=[row[0] for row in PARITY])
def test_parity_table_with_webshop_get_reward(case, goal_changes, target_changes, product_changes,
                                               selected, webshop, exact):
    goal = dataclasses.replace(WS_GOAL, **goal_changes)
    target = dataclasses.replace(TARGET, **target_changes)
    product = dataclasses.replace(target, **product_changes)
    assert score_goal_purchase(goal, product, selected, target).score == pytest.approx(webshop)
    assert score_goal_purchase(goal, product, selected, target, rule="exact").score == pytest.approx(exact)


def test_parity_table_is_large_enough_and_shows_the_issue_cases():
    assert len(PARITY) >= 20
    by_case = {row[0]: row for row in PARITY}
    no_noun = by_case["same query, no shared title noun: title_score 0 -> r_type 0"]
    assert (no_noun[-2], no_noun[-1]) == (0.0, 1.0)
    x_large = next(row for row in PARITY if row[0].startswith("'large' for 'x-large'"))
    assert (x_large[-2], x_large[-1]) == (0.5, 0.25)


@pytest.mark.parametrize("a, b, expected", [
    ("large", "x-large", 100),  # "x large": its token set contains "large"
    ("Non-Slip", "non slip", 100),  # case and punctuation are dropped first
    ("count 30", "count 60", 88),  # shared "count " and "0": 2 * 7 / 16 = 87.5 -> 88
    ("9", "10", 0),  # no shared token; difflib finds no common character
    ("", "anything", 0),
    ("red", "navy", 0),
])
def test_token_set_ratio_by_hand(a, b, expected):
    assert token_set_ratio(a, b) == expected


def test_fuzzy_match_needs_more_than_85():
    # "abcdefg" vs "abcdefx": 6 of 7 characters shared, 2 * 6 / 14 = 85.7 -> 86 > 85
    assert token_set_ratio("abcdefg", "abcdefx") == 86 and fuzzy_match("abcdefg", "abcdefx")
    # "abcdef" vs "abcdex": 2 * 5 / 12 = 83.3 -> 83
    assert token_set_ratio("abcdef", "abcdex") == 83 and not fuzzy_match("abcdef", "abcdex")


def test_normalize_color_takes_the_first_colour_word_in_webshop_order():
    assert normalize_color("navy blue") == "blue"  # blue precedes navy in WebShop's list
    assert normalize_color("mustard yellow") == "mustard"
    assert normalize_color("standard") == "tan"  # a substring, as in WebShop
    assert normalize_color("x-large") == "x-large"


def test_title_nouns_drop_function_words_and_numbers():
    assert title_nouns("Trailblaze Men's Lightweight Running Shoes, 2 Pack for Women") == [
        "trailblaze", "men", "lightweight", "running", "shoes", "pack", "women"]
    assert title_nouns("For The 2") == []


def test_type_reward_accepts_other_noun_taggers():
    # With a tagger that finds only "shoes" in titles, one shared noun of one: title_score 1.
    def only_shoes(title):
        return [w for w in title.lower().split() if w == "shoes"]

    assert type_reward("a", ("x",), "Red Shoes", "b", ("y",), "Blue Shoes", nouns=only_shoes) == (1.0, 1.0)


def test_webshop_rule_needs_the_target_and_unknown_rules_raise():
    with pytest.raises(ValueError, match="target product"):
        score_goal_purchase(WS_GOAL, TARGET, NINE_BLACK)
    with pytest.raises(ValueError, match="unknown WebShop scoring rule"):
        score_goal_purchase(WS_GOAL, TARGET, NINE_BLACK, TARGET, rule="fuzzy")

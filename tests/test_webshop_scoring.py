"""WebShop's purchase score on hand-made cases (formula in sdar.envs.webshop.scoring)."""

from __future__ import annotations

import pytest

from sdar.envs.webshop.scoring import reward_for_score, score_purchase, type_factor

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

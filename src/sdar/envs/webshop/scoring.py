"""The score of a purchase, as WebShop defines it (Yao et al. 2022), with this project's exact
matching rules.

    score = type_factor * (attributes matched + options matched + [price <= ceiling])
                        / (goal attributes + goal options + 1)

* **attributes**: a goal attribute is matched when it is in the bought product's attribute list
  (exact phrase, case-insensitive). WebShop fuzzy-matches the list and then looks for the phrase
  in the title, features and description, because scraped attribute lists are incomplete; the
  generated catalog's lists are complete by construction (its text states exactly the listed
  attributes), so exact matching against the list is the same test.
* **options**: a goal option ``(group, value)`` is matched when the buyer selected ``value`` in
  ``group`` before clicking ``buy now`` (WebShop matches each selected value against all goal
  option values, exactly for sizes and fuzzily otherwise; groups here are explicit, so the match
  is per group and exact).
* **price**: 1 when the price is at most the ceiling.
* **type factor** (WebShop compares query, category path and title nouns; this is our own tiered
  version over product types and the three-level category path ``category > subcategory > type``):

  ====  =================================================================================
  1.0   same product type
  0.5   same subcategory (a sibling type: ``hiking boots`` for ``work boots``), or the same
        category with at least half of the goal type's words shared (``leather belt`` for
        ``leather wallet``)
  0.1   same category (``sneakers`` for ``running shoes``), or any goal type word shared
        across categories (``winter scarf`` for ``winter jacket``)
  0.0   otherwise (unrelated)
  ====  =================================================================================

  Words are lower-case with a plural ``s`` removed (``boots`` = ``boot``).

The training reward is 10 when the score is exactly 1 (``reward_for_score``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SUCCESS_REWARD = 10.0


@dataclass(frozen=True)
class PurchaseScore:
    """A purchase's score and its parts.

    Attributes:
        score: in [0, 1], see the module docstring.
        type_factor: 1, 0.5, 0.1 or 0.
        attributes_matched / num_attributes: goal attributes the product has / goal attributes.
        options_matched / num_options: goal options selected / goal options.
        price_ok: the price is at most the ceiling.
    """

    score: float
    type_factor: float
    attributes_matched: int
    num_attributes: int
    options_matched: int
    num_options: int
    price_ok: bool


def _type_words(product_type: str) -> set[str]:
    words = product_type.lower().replace("-", " ").split()
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def type_factor(
    goal_type: str, goal_path: Sequence[str], product_type: str, product_path: Sequence[str]
) -> float:
    """How well a bought product's type answers the goal's type (table in the module docstring).

    ``goal_path`` / ``product_path`` are category paths ``(category, subcategory, type)``.
    """
    if goal_type.lower() == product_type.lower():
        return 1.0
    goal_words = _type_words(goal_type)
    shared = len(goal_words & _type_words(product_type))
    same_category = goal_path[0] == product_path[0]
    same_subcategory = same_category and tuple(goal_path[:2]) == tuple(product_path[:2])
    if same_subcategory or (same_category and 2 * shared >= len(goal_words)):
        return 0.5
    if same_category or shared:
        return 0.1
    return 0.0


def score_purchase(
    goal_type: str,
    goal_path: Sequence[str],
    goal_attributes: Sequence[str],
    goal_options: Sequence[tuple[str, str]],
    price_upper: float,
    product_type: str,
    product_path: Sequence[str],
    product_attributes: Sequence[str],
    product_price: float,
    selected_options: Mapping[str, str],
) -> PurchaseScore:
    """Score buying a product (its type, path, attributes, price) with ``selected_options``
    (group -> value) for a goal (its type, path, attributes, options, price ceiling)."""
    have = {a.lower() for a in product_attributes}
    attributes_matched = sum(a.lower() in have for a in goal_attributes)
    chosen = {g.lower(): v.lower() for g, v in selected_options.items()}
    options_matched = sum(chosen.get(g.lower()) == v.lower() for g, v in goal_options)
    price_ok = product_price <= price_upper
    factor = type_factor(goal_type, goal_path, product_type, product_path)
    total = len(goal_attributes) + len(goal_options) + 1
    score = factor * (attributes_matched + options_matched + int(price_ok)) / total
    return PurchaseScore(
        score=score,
        type_factor=factor,
        attributes_matched=attributes_matched,
        num_attributes=len(goal_attributes),
        options_matched=options_matched,
        num_options=len(goal_options),
        price_ok=price_ok,
    )


def score_goal_purchase(goal, product, selected_options: Mapping[str, str]) -> PurchaseScore:
    """``score_purchase`` for a ``goals.Goal`` and a ``catalog.Product``."""
    return score_purchase(
        goal.product_type,
        goal.category_path,
        goal.attributes,
        goal.options,
        goal.price_upper,
        product.product_type,
        product.category_path,
        product.attributes,
        product.price,
        selected_options,
    )


def reward_for_score(score: float) -> float:
    """The training reward of a purchase: 10 when the score is exactly 1, else 0."""
    return SUCCESS_REWARD if score >= 1.0 else 0.0

"""The score of a purchase: WebShop's ``get_reward`` (Yao et al. 2022), and this project's former
exact rule as an option.

Described in docs/environments/webshop.md, "Scoring". Both rules share the formula

    score = type_factor * (attributes matched + options matched + [price <= ceiling])
                        / (goal attributes + goal options + 1)

and differ in how each part matches.

``rule="webshop"`` (the default): WebShop's rules, as in ``web_agent_site/engine/goal.py`` with
the packages WebShop pins (``thefuzz==0.19.0`` without python-Levenshtein, so ``difflib``).

* **attributes**: a goal attribute matches when a product attribute fuzzy-matches it
  (``token_set_ratio > 85``), or else when the goal attribute, as written, is a substring of the
  lower-cased title, features (joined by spaces) or description.
* **options**: every goal option value and every selected value is first reduced to the first
  colour word of WebShop's colour list it contains (``normalize_color``: "mustard yellow" ->
  "mustard", "light blue" -> "blue"); a goal value matches when any selected value fuzzy-matches
  it. Groups play no part ("large" selected for "x-large" matches: the token sets share "large").
* **type factor** from the query (here the product type), the category path and the title nouns
  (``type_reward``): ``title_score`` = goal-title nouns shared with the bought title / goal-title
  nouns (0.2 when the goal title has none); the factor is 1.0 when the query or two category
  levels or ``title_score > 0.2`` agree, else 0.5; then 0.1 when ``title_score < 0.1`` and 0.0
  when ``title_score == 0``, whatever the query says.

One departure: WebShop finds title nouns with spaCy (``en_core_web_sm`` tags); this project has no
spaCy (it and its model are several hundred MB for one word list) and takes every word of the
title that is not a function word or a number (``title_nouns``). The two have not been compared
on real titles (spaCy is not installed here). Capitalised title words are often tagged proper
nouns, which both count; where spaCy would call a title word an adjective or a verb, this rule
still counts it, so ``title_score`` can be higher than WebShop's (and the type factor more
lenient). Pass ``nouns=`` to ``type_reward`` to use spaCy's tags instead.

``rule="exact"`` (the learning results committed before WebShop's rules were adopted used it):
attributes match exactly against the attribute list, options exactly per group, and the type
factor is tiered over product types and the category path ``category > subcategory > type``
(1.0 same type; 0.5 same subcategory, or same category with half the goal type's words; 0.1 same
category or any shared type word; 0.0 otherwise). Stricter than WebShop's for near misses.

The training reward is 10 when the score is exactly 1 (``reward_for_score``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SUCCESS_REWARD = 10.0
SCORING_RULES = ("webshop", "exact")
FUZZY_THRESHOLD = 85  # WebShop: a fuzzy match needs token_set_ratio > 85

# WebShop's colour words (web_agent_site/engine/normalize.py), in its order: the first one found
# as a substring of an option value stands for the value.
_COLORS = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown "
    "burgundy camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee "
    "cognac copper coral cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold "
    "granite grape graphite grass gray green grey heather indigo ivory ivy khaki lavender lemon "
    "leopard light lilac lime magenta maroon mauve merlot midnight mint mocha multicolor mushroom "
    "mustard natural navy nude olive orange peach pewter pink plum purple rainbow red rose royal "
    "rust sand sapphire seashell silver skull slate steel stone stonewash sunflower tan taupe teal "
    "tiger turquoise violet walnut wheat white wine yellow"
)
COLOR_WORDS = tuple(_COLORS.split())

# Words of a title that are never nouns (determiners, pronouns, prepositions, conjunctions,
# auxiliaries, the possessive 's): the stand-in for spaCy's tags, see the module docstring.
_FUNCTION_WORDS = (
    "a an the this that these those my your our his her its their i you he she it we they me us "
    "them and or nor but so for with without of in on at to by from as per into onto over under "
    "up down out off about above below between through within plus via than then is are was were "
    "be been being am do does did has have had will would can could should may might must not no "
    "all any each every both either neither some more most very too only just also s"
)
_NOT_NOUNS = frozenset(_FUNCTION_WORDS.split())


@dataclass(frozen=True)
class PurchaseScore:
    """A purchase's score and its parts.

    Attributes:
        score: in [0, 1], see the module docstring.
        type_factor: WebShop's ``r_type`` (1, 0.5, 0.1 or 0; the exact rule's tiers are the same
            values).
        attributes_matched / num_attributes: goal attributes matched / goal attributes.
        options_matched / num_options: goal options matched / goal options.
        price_ok: the price is at most the ceiling.
        title_score: shared goal-title nouns / goal-title nouns (WebShop rule; ``None`` for exact).
    """

    score: float
    type_factor: float
    attributes_matched: int
    num_attributes: int
    options_matched: int
    num_options: int
    price_ok: bool
    title_score: float | None = None


# ----- WebShop's fuzzy matching ------------------------------------------------------------------
def _full_process(text: str) -> str:
    """thefuzz 0.19's ``full_process(force_ascii=True)``: drop characters 128-255, every other
    non-word character becomes a space, lower case, strip."""
    text = "".join(c for c in text if not 128 <= ord(c) < 256)
    return re.sub(r"(?ui)\W", " ", text).lower().strip()


def _ratio(a: str, b: str) -> int:
    """thefuzz 0.19's ``ratio``: 100 for equal strings, 0 when one is empty, else difflib's
    similarity x 100 rounded."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio())


def token_set_ratio(a: str, b: str) -> int:
    """thefuzz 0.19's ``token_set_ratio`` (0-100): compare the sorted shared tokens with each
    side's sorted shared-plus-own tokens, and the two latter with each other; the best wins. A
    string whose tokens contain the other's scores 100."""
    pa, pb = _full_process(a), _full_process(b)
    if not pa or not pb:
        return 0
    ta, tb = set(pa.split()), set(pb.split())
    shared = " ".join(sorted(ta & tb))
    with_a = (shared + " " + " ".join(sorted(ta - tb))).strip()
    with_b = (shared + " " + " ".join(sorted(tb - ta))).strip()
    return max(_ratio(shared, with_a), _ratio(shared, with_b), _ratio(with_a, with_b))


def fuzzy_match(a: str, b: str) -> bool:
    """WebShop's match test: ``token_set_ratio(a, b) > 85``."""
    return token_set_ratio(a, b) > FUZZY_THRESHOLD


def normalize_color(value: str) -> str:
    """The first word of ``COLOR_WORDS`` (in list order) found as a substring of ``value``, else
    ``value`` unchanged (WebShop's ``normalize_color``; "tan" is found in "standard" there too)."""
    return next((c for c in COLOR_WORDS if c in value), value)


# ----- the parts of WebShop's reward --------------------------------------------------------------
def title_nouns(title: str) -> list[str]:
    """The nouns of a title, in order with repeats: its lower-case words (runs of letters and
    digits) that contain a letter and are not in the function-word list (spaCy's tags stand-in)."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    return [w for w in words if w not in _NOT_NOUNS and not w.isdigit()]


def type_reward(
    goal_query: str,
    goal_path: Sequence[str],
    goal_title: str,
    product_query: str,
    product_path: Sequence[str],
    product_title: str,
    nouns: Callable[[str], list[str]] = title_nouns,
) -> tuple[float, float]:
    """WebShop's ``get_type_reward``: ``(r_type, title_score)`` of buying a product (query, category
    path, title) for a goal whose target is ``(goal_query, goal_path, goal_title)``."""
    query_match = product_query == goal_query
    category_match = len(set(product_path) & set(goal_path)) >= 2
    wanted = nouns(goal_title)
    bought = nouns(product_title)
    title_score = 0.2 if not wanted else len(set(bought) & set(wanted)) / len(wanted)
    factor = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        factor = 0.1
    if title_score == 0.0:
        factor = 0.0
    return factor, title_score


def attribute_matches(
    goal_attributes: Sequence[str],
    product_attributes: Sequence[str],
    title: str,
    features: Sequence[str],
    description: str,
) -> int:
    """WebShop's ``get_attribute_reward`` count: goal attributes fuzzy-matching a product attribute,
    or else found (as written) in the lower-cased title, features or description."""
    texts = (title.lower(), " ".join(features).lower(), description.lower())
    return sum(
        any(fuzzy_match(p, g) for p in product_attributes) or any(g in t for t in texts)
        for g in goal_attributes
    )


def option_matches(goal_values: Sequence[str], selected_values: Sequence[str]) -> int:
    """WebShop's ``get_option_reward`` count: goal option values that some selected value
    fuzzy-matches, both reduced by ``normalize_color`` first."""
    chosen = [normalize_color(v) for v in selected_values]
    return sum(any(fuzzy_match(c, normalize_color(g)) for c in chosen) for g in goal_values)


def webshop_score(goal, target, product, selected_options: Mapping[str, str],
                  nouns: Callable[[str], list[str]] = title_nouns) -> PurchaseScore:
    """WebShop's ``get_reward`` for buying ``product`` with ``selected_options`` (group -> value)
    for ``goal`` (``goals.Goal``), whose ``target`` product gives the goal's query (its type),
    category path and title."""
    factor, title_score = type_reward(
        target.product_type, target.category_path, target.title,
        product.product_type, product.category_path, product.title, nouns,
    )
    attributes = attribute_matches(goal.attributes, product.attributes, product.title,
                                   product.features, product.description)
    options = option_matches([v for _, v in goal.options], list(selected_options.values()))
    price_ok = product.price <= goal.price_upper
    total = len(goal.attributes) + len(goal.options) + 1
    return PurchaseScore(
        score=factor * (attributes + options + int(price_ok)) / total,
        type_factor=factor,
        attributes_matched=attributes,
        num_attributes=len(goal.attributes),
        options_matched=options,
        num_options=len(goal.options),
        price_ok=price_ok,
        title_score=title_score,
    )


# ----- the exact rule (before WebShop's rules were adopted) ---------------------------------------
def _type_words(product_type: str) -> set[str]:
    words = product_type.lower().replace("-", " ").split()
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def type_factor(
    goal_type: str, goal_path: Sequence[str], product_type: str, product_path: Sequence[str]
) -> float:
    """The exact rule's tiered type factor (module docstring); words lower-case, a plural ``s``
    removed. ``goal_path`` / ``product_path`` are ``(category, subcategory, type)``."""
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
    """The exact rule: attributes exactly in the attribute list, options exactly per group
    (case-insensitive), the tiered ``type_factor``."""
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


def score_goal_purchase(goal, product, selected_options: Mapping[str, str], target=None,
                        rule: str = "webshop") -> PurchaseScore:
    """Score buying ``product`` (``catalog.Product``) with ``selected_options`` for ``goal``
    (``goals.Goal``) under ``rule`` (``SCORING_RULES``); the WebShop rule needs the goal's
    ``target`` product (``catalog.get(goal.item_id)``)."""
    if rule == "webshop":
        if target is None:
            raise ValueError("WebShop scoring needs the goal's target product (its title)")
        return webshop_score(goal, target, product, selected_options)
    if rule == "exact":
        return score_purchase(
            goal.product_type, goal.category_path, goal.attributes, goal.options, goal.price_upper,
            product.product_type, product.category_path, product.attributes, product.price,
            selected_options,
        )
    raise ValueError(f"unknown WebShop scoring rule {rule!r}; use one of {', '.join(SCORING_RULES)}")


def reward_for_score(score: float) -> float:
    """The training reward of a purchase: 10 when the score is exactly 1, else 0."""
    return SUCCESS_REWARD if score >= 1.0 else 0.0

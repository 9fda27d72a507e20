"""Shopping goals: instructions in WebShop's style and the fixed test / training split.

A goal is made from one product of the catalog (the *target*): its product type, one to three of
its attributes, one value of each of its option groups and a price ceiling above its price. The
instruction says all of that in lower case the way WebShop's crowd-written ones do ("i need a
machine washable t-shirt in size large and in navy blue color, and price lower than 30.00
dollars"). Any product that satisfies the goal scores 1, not only the target (``scoring.py``).

Splits follow WebShop: the first ``num_test_goals`` goal indices (500) are the fixed evaluation set
(``split="test"``), all later ones the training set (``split="train"``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

from sdar.envs.webshop.catalog import Catalog, Product, load_catalog

SPLITS = ("train", "test")
NUM_TEST_GOALS = 500


@dataclass(frozen=True)
class Goal:
    """One shopping goal.

    Attributes:
        index: goal index (the split is decided by it, see ``split_goal_indices``).
        item_id: the product the goal was made from (one product that scores 1).
        product_type, category, category_path: of that product; the goal asks for this type.
        attributes: attribute phrases the purchase must have.
        options: ``((group, value), ...)`` the purchase must be bought with.
        price_upper: the price ceiling in dollars (the purchase must cost at most this).
        instruction: the text shown to the agent.
    """

    index: int
    item_id: str
    product_type: str
    category: str
    category_path: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    price_upper: float
    instruction: str

    def search_phrase(self) -> str:
        """What a shopper would type: the required attributes and the product type."""
        return " ".join((*self.attributes, self.product_type))


# Templates are this project's own; WebShop's instructions were written by crowd workers.
_TEMPLATES = (
    "i need {attrs} {type}{opts}, and price lower than {price} dollars",
    "i am looking for {type} that is {attrs}{opts}, and price lower than {price} dollars",
    "find me {attrs} {type}{opts}, with price lower than {price} dollars",
    "i want to buy {type} which is {attrs}{opts}, and price lower than {price} dollars",
    "looking for {attrs} {type}{opts}, and price lower than {price} dollars",
    "i'd like {attrs} {type}{opts}, and price lower than {price} dollars",
)
_OPTION_PHRASES = {
    "size": ("in size {v}", "size {v}"),
    "color": ("in {v} color", "in the color {v}"),
    "length": ("{v} long", "in {v} length"),
    "height": ("{v} tall", "in {v} height"),
    "pack": ("in a {v}", "{v}"),
    "scent": ("in {v} scent", "with {v} scent"),
    "flavor": ("in {v} flavor", "with {v} flavor"),
    "count": ("{v}", "in a {v} size"),
    "capacity": ("with {v} capacity", "{v}"),
    "wattage": ("{v}", "with {v} power"),
    "switch": ("with {v}es", "with {v}"),
    "pieces": ("with {v}", "{v} set"),
}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _price_ceiling(rng: random.Random, price: float) -> float:
    """A round ceiling above ``price``: the next multiple of 5 (under $50) or of 10 above
    ``price * U(1.05, 1.4)``."""
    step = 5 if price < 50 else 10
    return float(math.ceil(price * rng.uniform(1.05, 1.4) / step) * step)


def make_goal(index: int, product: Product, rng: random.Random) -> Goal:
    """One goal whose target is ``product`` (drawn with ``rng``)."""
    n_attr = rng.randint(1, min(3, len(product.attributes)))
    attributes = tuple(sorted(rng.sample(product.attributes, n_attr), key=product.attributes.index))
    options = tuple((group, rng.choice(values)) for group, values in product.options)
    price_upper = _price_ceiling(rng, product.price)
    opts = (
        _join([rng.choice(_OPTION_PHRASES[g]).format(v=v) for g, v in options]) if options else ""
    )
    instruction = rng.choice(_TEMPLATES).format(
        attrs=_join(list(attributes)),
        type=product.product_type,
        opts=(" " + opts) if opts else "",
        price=f"{price_upper:.2f}",
    )
    return Goal(
        index=index,
        item_id=product.item_id,
        product_type=product.product_type,
        category=product.category,
        category_path=product.category_path,
        attributes=attributes,
        options=options,
        price_upper=price_upper,
        instruction=instruction,
    )


def generate_goals(
    catalog: Catalog, num_goals: int | None = None, seed: int = 0
) -> tuple[Goal, ...]:
    """``num_goals`` goals (default: two per product) over ``catalog``, deterministic per seed.

    Targets cycle through the catalog in a shuffled order, so every product is a target before any
    is used twice.
    """
    n = len(catalog)
    num_goals = 2 * n if num_goals is None else num_goals
    if num_goals < 1:
        raise ValueError(f"num_goals must be >= 1, got {num_goals}")
    rng = random.Random(f"webshop-goals-{catalog.seed}-{seed}")
    goals = []
    order: list[int] = []
    for i in range(num_goals):
        if not order:
            order = list(range(n))
            rng.shuffle(order)
        goals.append(make_goal(i, catalog.products[order.pop()], rng))
    return tuple(goals)


@lru_cache(maxsize=4)
def load_goals(
    catalog_seed: int = 0,
    num_products: int = 2500,
    num_goals: int | None = None,
    goal_seed: int = 0,
) -> tuple[Goal, ...]:
    """``generate_goals`` over ``load_catalog(catalog_seed, num_products)``, cached per process."""
    return generate_goals(load_catalog(catalog_seed, num_products), num_goals, goal_seed)


def split_goal_indices(num_goals: int, split: str, num_test_goals: int = NUM_TEST_GOALS) -> range:
    """Goal indices of ``split``: ``test`` = the first ``num_test_goals``, ``train`` = the rest."""
    if split not in SPLITS:
        raise ValueError(f"unknown WebShop split {split!r}; use one of {SPLITS}")
    if not 0 < num_test_goals < num_goals:
        raise ValueError(
            f"num_test_goals must be between 1 and num_goals - 1 = {num_goals - 1}, "
            f"got {num_test_goals}"
        )
    return range(num_test_goals) if split == "test" else range(num_test_goals, num_goals)

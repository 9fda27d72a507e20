"""Convert the official WebShop data (princeton-nlp/WebShop) into a shop folder.

Users who have WebShop's files (``items_shuffle_1000.json`` or ``items_shuffle.json``,
``items_ins_v2_1000.json`` or ``items_ins_v2.json``, ``items_human_ins.json`` and optionally
``reviews.json``, downloaded by WebShop's setup script) can play its products and human
instructions in this environment:

    sdar webshop import-official --items items_shuffle_1000.json \\
        --attributes items_ins_v2_1000.json --human-goals items_human_ins.json --out data/webshop-1k
    sdar env play --env webshop --policy oracle --option data_dir=data/webshop-1k --split test

What carries over as WebShop does it: products are read in file order, skipping ids that are
``nan``, longer than 10 characters or repeated; option names and values are lower-cased with
``/`` written as `` | ``; a product's attributes come from the attributes file; goals are the
human instructions with at least one attribute, in product order, shuffled with
``random.Random(233)`` (the seed WebShop's server uses, so with the same files the goal order is
WebShop's), the first 500 being the test split; a goal's price ceiling is the larger of two of the
next four multiples of 10 above the product's price.

What differs, and why:

* **Prices**: a price range ("$10.99 - $15.99") becomes its lower end; WebShop draws a price in
  the range at random on every start.
* **Price ceilings** are drawn from a seeded generator; WebShop's are drawn unseeded, so no two
  WebShop servers agree on them either.
* **Product type** is WebShop's ``query`` field (the search that found the product) and the
  category path is ``product_category``; the category key (for per-type metrics) maps WebShop's
  five categories: beauty -> beauty_health, electronics -> electronics, fashion -> apparel,
  food -> other, furniture -> home_decor.
* **Goal attributes** the target product does not list (WebShop would still match them fuzzily or
  in the product text) are added to the target's attribute list (counted in the summary), so the
  target stays a score-1 purchase under either scoring rule.
* **Goal options** are the instruction's option values, each assigned to the product's option
  group that offers it; a value no group offers is dropped from the goal (counted in the summary),
  so every goal stays solvable.
* **Scoring** is WebShop's (``scoring.py``), except that title nouns are this project's
  function-word rule rather than spaCy's tags.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

from sdar.envs.webshop.catalog import Catalog, Product
from sdar.envs.webshop.datafiles import write_shop
from sdar.envs.webshop.goals import NUM_TEST_GOALS, Goal

CATEGORY_SEPARATOR = "\u203a"  # WebShop joins category levels with a single right angle quote
GOAL_SHUFFLE_SEED = 233  # WebShop's SimServer seeds its goal shuffle with 233
CATEGORY_KEYS = {
    "beauty": "beauty_health",
    "electronics": "electronics",
    "fashion": "apparel",
    "food": "other",
    "furniture": "home_decor",
}


def _load_json(path: str | Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WebShop {what} file not found: {path}")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _option_value(value: str) -> str:
    return value.strip().replace("/", " | ").lower()


def _price(pricing) -> float:
    """The lower end of WebShop's ``pricing`` text ("$12.99" or "$10.99 - $15.99"); 100 if none,
    as WebShop."""
    if not pricing:
        return 100.0
    if isinstance(pricing, (int, float)):
        return float(pricing)
    values = [re.sub(r"[^\d.]", "", part) for part in str(pricing).split("$")[1:]]
    values = [float(v) for v in values if v.replace(".", "", 1).isdigit()]
    return values[0] if values else 100.0


def _ceiling(rng: random.Random, price: float) -> float | None:
    above = [10.0 * i for i in range(1, 100) if 10.0 * i > price][:4]
    if len(above) < 2:
        return None
    return max(rng.sample(above, 2))


def _review_lines(entry: dict) -> tuple[str, ...]:
    lines = []
    for r in entry.get("reviews") or []:
        score = r.get("score", r.get("stars", ""))
        body = " ".join(str(r.get(k, "")).strip() for k in ("title", "body", "review") if r.get(k))
        lines.append(f"{score} out of 5 stars. {body}".strip())
    return tuple(lines)


def convert_official(
    items: str | Path,
    attributes: str | Path,
    human_goals: str | Path,
    out_dir: str | Path,
    reviews: str | Path | None = None,
    num_test_goals: int = NUM_TEST_GOALS,
    price_seed: int = 0,
) -> dict:
    """Write a shop folder from WebShop's files; returns a summary of what was converted."""
    raw_products = _load_json(items, "products")
    attribute_rows = _load_json(attributes, "attributes")
    human_rows = _load_json(human_goals, "human instructions")
    review_rows = {r["asin"]: r for r in _load_json(reviews, "reviews")} if reviews else {}
    if not isinstance(raw_products, list):
        raise ValueError(
            f"{items}: expected a JSON list of products (WebShop's items_shuffle*.json)"
        )

    products: list[Product] = []
    seen: set[str] = set()
    for p in raw_products:
        asin = str(p.get("asin", ""))
        if asin == "nan" or len(asin) > 10 or not asin or asin in seen:
            continue
        seen.add(asin)
        options = []
        for name, contents in (p.get("customization_options") or {}).items():
            if contents:
                options.append((name.lower(), tuple(_option_value(c["value"]) for c in contents)))
        features = p.get("small_description") or []
        review = review_rows.get(asin, {})
        rating = review.get("average_rating")
        levels = (p.get("product_category") or "").split(CATEGORY_SEPARATOR)
        path = tuple(x.strip().lower() for x in levels if x.strip())
        category = str(p.get("category", "")).lower()
        products.append(
            Product(
                item_id=asin.upper(),
                title=p.get("name", ""),
                brand=str(p.get("brand") or ""),
                product_type=str(p.get("query", "")).lower().strip(),
                category=CATEGORY_KEYS.get(category, "other"),
                category_path=path or (category,),
                price=_price(p.get("pricing")),
                rating=float(rating) if isinstance(rating, (int, float)) else None,
                attributes=tuple((attribute_rows.get(asin) or {}).get("attributes") or ()),
                options=tuple(options),
                description=p.get("full_description") or "",
                features=tuple(features if isinstance(features, list) else [features]),
                reviews=_review_lines(review),
            )
        )

    # Goals in WebShop's order: products in file order, then each product's human instructions.
    raw_goals = []
    for product in products:
        for row in human_rows.get(product.item_id, human_rows.get(product.item_id.lower(), [])):
            if row.get("instruction_attributes"):
                raw_goals.append((product, row))
    random.Random(GOAL_SHUFFLE_SEED).shuffle(raw_goals)
    if len(raw_goals) <= num_test_goals:
        raise ValueError(
            f"only {len(raw_goals)} goals with attributes; a test split of "
            f"{num_test_goals} needs more (pass a smaller num_test_goals)"
        )

    rng = random.Random(price_seed)
    position = {p.item_id: i for i, p in enumerate(products)}
    goals, dropped_options, added_attributes = [], 0, 0
    for index, (product, row) in enumerate(raw_goals):
        product = products[position[product.item_id]]  # may have gained attributes meanwhile
        have = {a.lower() for a in product.attributes}
        missing = [a for a in row["instruction_attributes"] if a.lower() not in have]
        if missing:
            added_attributes += len(missing)
            product = dataclasses.replace(product, attributes=product.attributes + tuple(missing))
            products[position[product.item_id]] = product
        offered = product.options
        options = []
        for value in row.get("instruction_options") or []:
            value = _option_value(str(value))
            group = next((g for g, values in offered if value in values), None)
            if group is None or any(g == group for g, _ in options):
                dropped_options += 1
                continue
            options.append((group, value))
        ceiling = _ceiling(rng, product.price)
        text = row["instruction"].strip().strip(".")
        if ceiling is not None:
            text += f", and price lower than {ceiling:.2f} dollars"
        goals.append(
            Goal(
                index=index,
                item_id=product.item_id,
                product_type=product.product_type,
                category=product.category,
                category_path=product.category_path,
                attributes=tuple(row["instruction_attributes"]),
                options=tuple(options),
                price_upper=1e6 if ceiling is None else ceiling,
                instruction=text,
            )
        )
    write_shop(out_dir, Catalog(seed=-1, products=tuple(products)), tuple(goals), num_test_goals)
    return {
        "out": str(out_dir),
        "products": len(products),
        "goals": len(goals),
        "test_goals": num_test_goals,
        "dropped_goal_options": dropped_options,
        "attributes_added_to_targets": added_attributes,
    }

"""A shop on disk: ``catalog.jsonl`` + ``goals.jsonl`` in one folder.

``sdar webshop export --out DIR`` writes the generated catalog and goals this way, and
``make_env("webshop", data_dir=DIR)`` plays them back. Uses: freeze an evaluation set so it stays
the same whatever later versions of the generator do, inspect or edit products and goals, or bring
a catalog of your own in the same format.

Format (one JSON object per line):

* ``catalog.jsonl``: the fields of ``catalog.Product`` (``item_id``, ``title``, ``brand``,
  ``product_type``, ``category``, ``category_path``, ``price``, ``rating`` (or null),
  ``attributes``, ``options`` as ``[[group, [value, ...]], ...]``, ``description``, ``features``,
  ``reviews``).
* ``goals.jsonl``: the fields of ``goals.Goal`` (``index`` = line number from 0, ``item_id`` of a
  catalog product, ``product_type``, ``category``, ``category_path``, ``attributes``, ``options``
  as ``[[group, value], ...]``, ``price_upper``, ``instruction``), optionally ``split``
  (``test`` rows must come first; their number becomes the default test-split size) and any
  other keys, which are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

from sdar.envs.webshop.catalog import Catalog, Product
from sdar.envs.webshop.goals import Goal
from sdar.envs.webshop.routing import route_instruction
from sdar.envs.webshop.search import SearchEngine

CATALOG_FILE, GOALS_FILE = "catalog.jsonl", "goals.jsonl"
_PRODUCT_FIELDS = tuple(f.name for f in dataclasses.fields(Product))
_GOAL_FIELDS = tuple(f.name for f in dataclasses.fields(Goal))


@dataclasses.dataclass(frozen=True)
class ShopData:
    """A catalog, its goals, its search engine, and the test-split size the goal file gives
    (``None`` when its rows carry no ``split``)."""

    catalog: Catalog
    goals: tuple[Goal, ...]
    engine: SearchEngine
    num_test_goals: int | None


def write_shop(
    out_dir: str | Path, catalog: Catalog, goals: tuple[Goal, ...], num_test_goals: int
) -> Path:
    """Write ``catalog.jsonl`` and ``goals.jsonl`` (with ``split`` and ``skill_keys`` per goal)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / CATALOG_FILE).open("w", encoding="utf-8") as f:
        for product in catalog.products:
            f.write(json.dumps(dataclasses.asdict(product)) + "\n")
    with (out / GOALS_FILE).open("w", encoding="utf-8") as f:
        for goal in goals:
            row = dataclasses.asdict(goal)
            row["split"] = "test" if goal.index < num_test_goals else "train"
            row["skill_keys"] = list(route_instruction(goal.instruction))
            f.write(json.dumps(row) + "\n")
    return out


def _rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(
            f"WebShop data: {path} is missing; write a shop folder with "
            f"'sdar webshop export --out {path.parent}'"
        )
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err})") from err
        missing = [k for k in fields if k not in row]
        if missing:
            raise ValueError(
                f"{path}:{n}: missing field(s) {missing}; each row needs {list(fields)}"
            )
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def _product(row: dict) -> Product:
    return Product(
        item_id=str(row["item_id"]).upper(),
        title=row["title"],
        brand=row["brand"],
        product_type=row["product_type"],
        category=row["category"],
        category_path=tuple(row["category_path"]),
        price=float(row["price"]),
        rating=None if row["rating"] is None else float(row["rating"]),
        attributes=tuple(row["attributes"]),
        options=tuple((g, tuple(values)) for g, values in row["options"]),
        description=row["description"],
        features=tuple(row["features"]),
        reviews=tuple(row["reviews"]),
    )


def _goal(row: dict) -> Goal:
    return Goal(
        index=int(row["index"]),
        item_id=str(row["item_id"]).upper(),
        product_type=row["product_type"],
        category=row["category"],
        category_path=tuple(row["category_path"]),
        attributes=tuple(row["attributes"]),
        options=tuple((g, v) for g, v in row["options"]),
        price_upper=float(row["price_upper"]),
        instruction=row["instruction"],
    )


def read_shop(data_dir: str | Path) -> ShopData:
    """Read and check a shop folder (see the module docstring); errors name the file and line."""
    folder = Path(data_dir)
    product_rows = _rows(folder / CATALOG_FILE, _PRODUCT_FIELDS)
    goal_rows = _rows(folder / GOALS_FILE, _GOAL_FIELDS)
    products = tuple(_product(r) for r in product_rows)
    ids = [p.item_id for p in products]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{folder / CATALOG_FILE}: item id {dup} appears more than once")
    known = set(ids)
    goals = []
    for n, row in enumerate(goal_rows):
        goal = _goal(row)
        if goal.index != n:
            raise ValueError(
                f"{folder / GOALS_FILE}: row {n + 1} has index {goal.index}; goal "
                f"indices must be 0, 1, 2, ... in file order"
            )
        if goal.item_id not in known:
            raise ValueError(
                f"{folder / GOALS_FILE}: goal {n} names item {goal.item_id}, which "
                f"is not in {CATALOG_FILE}"
            )
        goals.append(goal)
    splits = [row.get("split") for row in goal_rows]
    num_test = None
    if any(s is not None for s in splits):
        num_test = sum(s == "test" for s in splits)
        if splits[:num_test] != ["test"] * num_test or any(s != "train" for s in splits[num_test:]):
            raise ValueError(
                f"{folder / GOALS_FILE}: 'split' must be 'test' for the first rows "
                f"and 'train' for all later ones"
            )
    catalog = Catalog(seed=-1, products=products)
    return ShopData(catalog, tuple(goals), SearchEngine(catalog), num_test)


@lru_cache(maxsize=4)
def _load_shop(folder: str, stamp: tuple[float, float]) -> ShopData:
    return read_shop(folder)


def load_shop(data_dir: str | Path) -> ShopData:
    """``read_shop`` cached per process (reloaded when either file changes)."""
    folder = Path(data_dir).resolve()
    stamp = tuple(
        (folder / name).stat().st_mtime if (folder / name).exists() else 0.0
        for name in (CATALOG_FILE, GOALS_FILE)
    )
    return _load_shop(str(folder), stamp)

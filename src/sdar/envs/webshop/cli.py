"""``sdar webshop export`` (write the generated catalog and goals as JSON lines) and
``sdar webshop goal`` (print one goal with its target product and the page the oracle buys from)."""

from __future__ import annotations

import argparse
import dataclasses
import json


def register(subparsers) -> None:
    shop = subparsers.add_parser("webshop", help="WebShop: inspect the generated catalog and goals")
    sub = shop.add_subparsers(dest="webshop_command", metavar="WEBSHOP_COMMAND", required=True)
    export = sub.add_parser("export", help="write catalog.jsonl and goals.jsonl (with each split)")
    export.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created if missing)"
    )
    _catalog_args(export)
    export.set_defaults(func=run_export)
    official = sub.add_parser(
        "import-official",
        help="convert the official WebShop files into a shop folder (play it with data_dir=DIR)",
    )
    official.add_argument(
        "--items", required=True, help="items_shuffle_1000.json or items_shuffle.json"
    )
    official.add_argument(
        "--attributes", required=True, help="items_ins_v2_1000.json or items_ins_v2.json"
    )
    official.add_argument("--human-goals", required=True, help="items_human_ins.json")
    official.add_argument("--reviews", default=None, help="reviews.json (optional)")
    official.add_argument("--out", required=True, metavar="DIR", help="output folder")
    official.add_argument("--num-test-goals", type=int, default=500, help="test split size (500)")
    official.set_defaults(func=run_import_official)
    goal = sub.add_parser("goal", help="print one goal, its split, routing and target product")
    goal.add_argument("index", type=int, help="goal index (0..499 are the test split)")
    _catalog_args(goal)
    goal.set_defaults(func=run_goal)


def _catalog_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-products", type=int, default=2500, help="catalog size (default 2500)"
    )
    parser.add_argument(
        "--catalog-seed", type=int, default=0, help="catalog and goal seed (default 0)"
    )
    parser.add_argument(
        "--num-test-goals",
        type=int,
        default=500,
        help="goal indices below this form the test split (default 500)",
    )


def _load(args: argparse.Namespace):
    from sdar.envs.webshop.catalog import load_catalog
    from sdar.envs.webshop.goals import load_goals

    return load_catalog(args.catalog_seed, args.num_products), load_goals(
        args.catalog_seed, args.num_products
    )


def run_export(args: argparse.Namespace) -> int:
    from sdar.envs.webshop.datafiles import write_shop

    catalog, goals = _load(args)
    out = write_shop(args.out, catalog, goals, args.num_test_goals)
    summary = {
        "out": str(out),
        "products": len(catalog),
        "goals": len(goals),
        "test_goals": min(args.num_test_goals, len(goals)),
    }
    print(json.dumps(summary, indent=2))
    return 0


def run_import_official(args: argparse.Namespace) -> int:
    from sdar.envs.webshop.official import convert_official

    summary = convert_official(
        args.items,
        args.attributes,
        args.human_goals,
        args.out,
        reviews=args.reviews,
        num_test_goals=args.num_test_goals,
    )
    print(json.dumps(summary, indent=2))
    return 0


def run_goal(args: argparse.Namespace) -> int:
    from sdar.envs.webshop.routing import route_instruction

    catalog, goals = _load(args)
    if not 0 <= args.index < len(goals):
        raise SystemExit(f"goal index must be in 0..{len(goals) - 1}, got {args.index}")
    goal = goals[args.index]
    row = dataclasses.asdict(goal)
    row["split"] = "test" if goal.index < args.num_test_goals else "train"
    row["skill_keys"] = list(route_instruction(goal.instruction))
    row["target"] = dataclasses.asdict(catalog.get(goal.item_id))
    print(json.dumps(row, indent=2))
    return 0

"""``sdar alfworld generate``: write offline ALFWorld games in the official folder layout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from sdar.envs.alfworld.data import SPLITS


def register(subparsers) -> None:
    parser = subparsers.add_parser("alfworld", help="ALFWorld tools (offline game generator)")
    sub = parser.add_subparsers(dest="alfworld_command", metavar="ALFWORLD_COMMAND", required=True)
    gen = sub.add_parser(
        "generate",
        help="generate games checked solvable by ALFWorld's planner expert",
        description="Write N games of one split into OUT/json_2.1.1/SPLIT/ (the official layout; "
        "point ALFWORLD_DATA or the env's data_dir at OUT). Deterministic per seed. "
        "A preset sets the difficulty knobs; any knob flag overrides its preset value.",
    )
    gen.add_argument("--out", required=True, help="output folder (json_2.1.1 is created inside)")
    gen.add_argument(
        "--split",
        default="train",
        choices=SPLITS,
        help="train / valid_seen use the seen floorplans, valid_unseen the held-out ones",
    )
    gen.add_argument("--n", type=int, default=100, help="number of games")
    gen.add_argument("--seed", type=int, default=0, help="generator seed (the games are a function of it)")
    gen.add_argument("--preset", default="standard", help="easy / medium / standard")
    gen.add_argument(
        "--task-types",
        default=None,
        help="comma-separated task types (full names or pick,look,clean,heat,cool,pick_two)",
    )
    gen.add_argument(
        "--max-receptacles",
        type=int,
        default=None,
        help="receptacles per room (default: the preset's)",
    )
    gen.add_argument("--distractors", type=int, default=None, help="distractor objects per room")
    gen.add_argument(
        "--no-openable",
        action="store_true",
        help="leave closed receptacles out unless the task needs them",
    )
    gen.add_argument("--min-plan-length", type=int, default=None,
                     help="keep only games whose expert plan has at least this many steps")
    gen.add_argument("--max-plan-length", type=int, default=None,
                     help="keep only games whose expert plan has at most this many steps")
    gen.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from sdar.envs.alfworld.generator import config_from_preset, generate_games

    try:
        config = config_from_preset(
            args.preset,
            task_types=args.task_types,
            max_receptacles=args.max_receptacles,
            distractors=args.distractors,
            openable_receptacles=False if args.no_openable else None,
            min_plan_length=args.min_plan_length,
            max_plan_length=args.max_plan_length,
        )
    except ValueError as err:
        raise SystemExit(f"sdar alfworld generate: {err}") from err

    def progress(i: int, game) -> None:
        print(
            f"[{i + 1}/{args.n}] {game.task_type} FloorPlan{game.floorplan} "
            f"expert plan {game.expert_plan_length} steps",
            file=sys.stderr,
        )

    start = time.perf_counter()
    games = generate_games(
        args.out, args.split, args.n, seed=args.seed, config=config, progress=progress
    )
    elapsed = time.perf_counter() - start
    lengths = [g.expert_plan_length for g in games]
    print(
        json.dumps(
            {
                "out": args.out,
                "split": args.split,
                "games": len(games),
                "seed": args.seed,
                "per_task_type": dict(sorted(Counter(g.task_type for g in games).items())),
                "expert_plan_length": {
                    "min": min(lengths),
                    "mean": sum(lengths) / len(lengths),
                    "max": max(lengths),
                },
                "seconds_per_game": elapsed / len(games),
            },
            indent=2,
        )
    )
    return 0

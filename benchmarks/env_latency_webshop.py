"""Latency of the offline WebShop: cold build, ``reset`` and ``step`` by action kind, and oracle
episodes end to end.

What is timed (wall clock, ``time.perf_counter``, median over repeats where it says so):

* **build**: generating the catalog, its goals and the BM25 index from nothing (what the first
  ``make_env("webshop")`` of a process pays; later ones reuse the per-process cache).
* **reset**: ``env.reset`` for a training batch of ``--tasks`` x ``--group`` episodes.
* **step by action kind**, for one batch of ``--tasks`` x ``--group`` episodes all taking the same
  kind of action: a search never seen before (BM25 scoring), a repeated search (query cache), an
  item click, an option click, a tab click and ``buy now`` (scoring). Reported per batch and per
  episode.
* **oracle episodes**: ``sdar.envs.play.play_episodes`` with the oracle over ``--episodes`` test
  goals, episodes and steps per second.

Usage::

    python benchmarks/env_latency_webshop.py                 # about 10 s on 2 CPU cores
    python benchmarks/env_latency_webshop.py --smoke         # a few seconds

Results (settings and machine included) go to ``benchmarks/results/env_latency_webshop.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from sdar.envs import make_env
from sdar.envs.play import play_episodes
from sdar.envs.webshop.catalog import generate_catalog
from sdar.envs.webshop.goals import generate_goals
from sdar.envs.webshop.search import SearchEngine


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Median wall time in milliseconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def bench_build(num_products: int, repeats: int) -> dict:
    catalog_ms, catalog = timed(lambda: generate_catalog(1234, num_products), repeats)
    goals_ms, _ = timed(lambda: generate_goals(catalog), repeats)
    index_ms, _ = timed(lambda: SearchEngine(catalog), repeats)
    return {
        "catalog_ms": catalog_ms,
        "goals_ms": goals_ms,
        "bm25_index_ms": index_ms,
        "total_ms": catalog_ms + goals_ms + index_ms,
    }


def bench_steps(env, tasks: int, group: int, repeats: int) -> dict:
    n = tasks * group
    seeds = list(range(tasks))
    reset_ms, _ = timed(lambda: env.reset(seeds, group_size=group), repeats)
    results: dict = {"episodes": n, "reset_ms": reset_ms}
    per_kind: dict[str, list[float]] = {}
    for r in range(repeats):
        states = env.reset(seeds, group_size=group)
        goals = [env.goal_for_seed(s) for s in seeds for _ in range(group)]
        targets = [env.catalog.get(g.item_id) for g in goals]
        # a query no earlier repeat used, so BM25 really scores it; then the same query again
        fresh = [f"search[{t.title.lower()} {r}]" for t in targets]
        plan = [
            ("search_new_query", fresh),
            ("back_to_search", ["click[back to search]"] * n),
            ("search_cached_query", fresh),
        ]
        for kind, actions in plan:
            ms, states = timed(lambda a=actions: env.step(a))
            per_kind.setdefault(kind, []).append(ms)
        item_clicks = []
        for s, t in zip(states, targets):
            shown = f"click[{t.item_id.lower()}]"
            item_clicks.append(shown if shown in s.admissible_actions else "click[back to search]")
        for kind, actions in [
            ("click_item", item_clicks),
            (
                "click_option",
                [f"click[{g.options[0][1]}]" if g.options else "click[features]" for g in goals],
            ),
            ("click_tab", ["click[features]"] * n),
            ("click_prev", ["click[< prev]"] * n),
            ("buy_now", ["click[buy now]"] * n),
        ]:
            ms, states = timed(lambda a=actions: env.step(a))
            per_kind.setdefault(kind, []).append(ms)
    for kind, values in per_kind.items():
        ms = statistics.median(values)
        results[kind] = {"batch_ms": ms, "per_episode_ms": ms / n}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-products", type=int, default=2500)
    parser.add_argument("--tasks", type=int, default=16, help="tasks per batch (paper: 16)")
    parser.add_argument("--group", type=int, default=8, help="group size (paper: 8)")
    parser.add_argument("--episodes", type=int, default=500, help="oracle episodes (test goals)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny settings, a few seconds")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "env_latency_webshop.json")
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_products, args.tasks, args.group, args.episodes, args.repeats = 300, 4, 2, 50, 2

    build = bench_build(args.num_products, args.repeats)
    env = make_env(
        "webshop",
        split="test",
        num_products=args.num_products,
        num_test_goals=min(500, args.num_products),
    )
    steps = bench_steps(env, args.tasks, args.group, args.repeats)
    start = time.perf_counter()
    summary = play_episodes(env, "oracle", args.episodes, seed=0)
    seconds = time.perf_counter() - start
    oracle = {
        "episodes": args.episodes,
        "success": summary["success"],
        "mean_steps": summary["mean_steps"],
        "seconds": seconds,
        "episodes_per_s": args.episodes / seconds,
        "steps_per_s": args.episodes * summary["mean_steps"] / seconds,
    }
    result = {
        "benchmark": "env_latency_webshop",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
        },
        "build": build,
        "steps": steps,
        "oracle": oracle,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

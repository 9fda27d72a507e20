"""Latency of ALFWorld on the real engine: game generation, ``reset`` and ``step``, expert play.

What is timed (wall clock, ``time.perf_counter``):

* **generation**: seconds per offline game for each preset (sample, write, plan, replay the plan).
* **engine alone**: one game loaded in this process (``engine.build_engine``), ``reset`` and
  ``step`` with ALFWorld's wrappers, without the planner (what the environment does per step) and
  with it (what scripted expert play adds). The engine by itself steps in about 20 ms on small
  games.
* **environment**: ``AlfworldEnv`` with its worker process, for a batch of ``--tasks`` x
  ``--group`` episodes: first reset (loads each game once), a second reset of the same games
  (engines reused), and batched steps of admissible random actions, per batch and per episode.
* **expert episodes**: ``sdar.envs.play.play_episodes`` with the planner expert.

Usage::

    python benchmarks/env_latency_alfworld.py            # a few minutes on 2 CPU cores
    python benchmarks/env_latency_alfworld.py --smoke    # well under a minute

Results (settings and machine included) go to ``benchmarks/results/env_latency_alfworld.json``.
Other processes on the machine slow every number here; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from sdar.envs.alfworld import make_alfworld_env
from sdar.envs.alfworld.engine import build_engine, set_planning
from sdar.envs.alfworld.generator import PRESETS, generate_games
from sdar.envs.play import play_episodes


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def bench_generation(root: Path, preset: str, n: int) -> tuple[Path, dict]:
    out = root / preset
    start = time.perf_counter()
    games = generate_games(out, "train", n, seed=0, config=PRESETS[preset])
    elapsed = time.perf_counter() - start
    lengths = [g.expert_plan_length for g in games]
    return out, {
        "games": n,
        "seconds_per_game": round(elapsed / n, 3),
        "mean_expert_plan_length": sum(lengths) / n,
        "mean_attempts": sum(g.attempts for g in games) / n,
    }


def bench_engine(game_files: list[Path], steps: int) -> dict:
    rows = []
    for path in game_files:
        start = time.perf_counter()
        engine = build_engine(str(path))
        load = time.perf_counter() - start
        row = {"game": path.parent.parent.name, "load_ms": ms(load)}
        for planning in (False, True):
            set_planning(engine, planning)
            start = time.perf_counter()
            state = engine.reset()
            reset = time.perf_counter() - start
            rng = random.Random(0)
            times = []
            for _ in range(steps):
                command = rng.choice(state["admissible_commands"])
                start = time.perf_counter()
                state, _, _ = engine.step(command)
                times.append(time.perf_counter() - start)
            key = "with_planner" if planning else "without_planner"
            row[key] = {
                "reset_ms": ms(reset),
                "step_ms_median": ms(statistics.median(times)),
                "step_ms_max": ms(max(times)),
            }
        rows.append(row)
    return {
        "per_game": rows,
        "step_ms_median_without_planner": statistics.median(
            r["without_planner"]["step_ms_median"] for r in rows
        ),
        "step_ms_median_with_planner": statistics.median(
            r["with_planner"]["step_ms_median"] for r in rows
        ),
    }


def bench_env(data_dir: Path, tasks: int, group: int, steps: int) -> dict:
    with make_alfworld_env(data_dir=data_dir) as env:
        seeds = list(range(tasks))
        start = time.perf_counter()
        states = env.reset(seeds, group_size=group)
        first_reset = time.perf_counter() - start
        start = time.perf_counter()
        states = env.reset(seeds, group_size=group)
        second_reset = time.perf_counter() - start
        rng = random.Random(0)
        times = []
        for _ in range(steps):
            actions = [None if s.done else rng.choice(s.admissible_actions) for s in states]
            if all(a is None for a in actions):
                break
            start = time.perf_counter()
            states = env.step(actions)
            times.append(time.perf_counter() - start)
        n = tasks * group
        batch = statistics.median(times)
        return {
            "episodes": n,
            "first_reset_ms": ms(first_reset),
            "reset_again_ms": ms(second_reset),
            "step_batch_ms_median": ms(batch),
            "step_per_episode_ms": ms(batch / n),
            "batches_timed": len(times),
        }


def bench_expert(data_dir: Path, episodes: int) -> dict:
    with make_alfworld_env(data_dir=data_dir) as env:
        start = time.perf_counter()
        summary = play_episodes(env, "expert", episodes)
        elapsed = time.perf_counter() - start
    steps = summary["mean_steps"] * episodes
    return {
        "episodes": episodes,
        "success": summary["success"],
        "seconds": round(elapsed, 2),
        "steps_per_second": round(steps / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny settings")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "env_latency_alfworld.json")
    )
    args = parser.parse_args()
    n = 3 if args.smoke else 12
    tasks, group = (2, 2) if args.smoke else (4, 4)
    steps = 5 if args.smoke else 20

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results: dict = {
            "settings": {
                "smoke": args.smoke,
                "games_per_preset": n,
                "tasks": tasks,
                "group": group,
                "steps": steps,
            }
        }
        data = {}
        results["generation"] = {}
        for preset in ("easy", "medium", "standard"):
            data[preset], results["generation"][preset] = bench_generation(root, preset, n)
        results["engine"] = {}
        results["env"] = {}
        results["expert"] = {}
        for preset in ("easy", "standard"):
            files = sorted(data[preset].glob("json_2.1.1/train/*/*/game.tw-pddl"))[:3]
            results["engine"][preset] = bench_engine(files, steps)
            results["env"][preset] = bench_env(data[preset], tasks, group, steps)
            results["expert"][preset] = bench_expert(data[preset], min(n, 6))
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

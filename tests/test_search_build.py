"""The offline Search-QA set built from the Wikipedia leads on PyPI: first-use build into the cache,
the build's invariants (answers in their passages, entity-disjoint splits, >= 1,000 test questions,
recorded BM25 recall), the CLI commands, and the oracle winning through ``sdar env play``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from sdar.cli import main as sdar_main
from sdar.envs.search import make_search_env
from sdar.envs.search.build import (
    DATA_SOURCES,
    build_questions,
    default_data_dir,
    ensure_offline_dataset,
    read_leads,
)
from sdar.envs.search.dataset import load_corpus, load_qa, write_corpus
from sdar.envs.search.metrics import answer_in_text
from sdar.envs.search.retrievers import Document

pytestmark = pytest.mark.slow  # a full build takes about 10 s on one core


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private SDAR_CACHE in which the environment builds its offline set on first use."""
    folder = tmp_path_factory.mktemp("sdar-cache")
    old = os.environ.get("SDAR_CACHE")
    os.environ["SDAR_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SDAR_CACHE", None)
    else:
        os.environ["SDAR_CACHE"] = old


@pytest.fixture(scope="module")
def built(cache):
    """The offline set as a user gets it: make_search_env() with no options builds it."""
    assert not default_data_dir(0).exists()
    with make_search_env(split="test") as env:
        num_test = env.num_tasks()
    folder = default_data_dir(0)
    assert folder.parent.parent == cache
    return {"dir": folder, "num_test": num_test}


def test_first_use_builds_into_the_cache_with_all_files(built):
    folder = built["dir"]
    for name in ("corpus.jsonl", "train.jsonl", "test.jsonl", "stats.json", "NOTICE.txt"):
        assert (folder / name).is_file(), name
    assert "CC BY-SA 4.0" in (folder / "NOTICE.txt").read_text()
    assert built["num_test"] >= 1000
    assert not list(folder.parent.glob(".building-*"))  # the temporary folder was renamed away


def test_second_use_reuses_the_cache(built, caplog):
    stamp = (built["dir"] / "stats.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="sdar.envs.search.build"):
        assert ensure_offline_dataset(0) == built["dir"]
    assert "building" not in caplog.text
    assert (built["dir"] / "stats.json").stat().st_mtime_ns == stamp


def test_stats_record_counts_and_bm25_recall_per_type(built):
    stats = json.loads((built["dir"] / "stats.json").read_text())
    test_counts = stats["questions"]["test"]
    assert set(test_counts) == set(DATA_SOURCES)
    assert sum(test_counts.values()) == built["num_test"]
    assert "fanoutqa" not in stats["questions"]["train"]  # test-only, like Bamboogle
    assert stats["documents"] == 10033
    for split in ("train", "test"):
        recall = stats["bm25_top3_recall"][split]
        assert set(recall) == set(stats["questions"][split])
        for source, row in recall.items():
            assert row["count"] == stats["questions"][split][source]
            assert 0.0 <= row["all_support"] <= row["any_support"] <= 1.0
    # single-passage types name their entity, so BM25 finds it almost always; two-hop questions
    # cannot have both passages in the top 3 of the raw question most of the time
    test_recall = stats["bm25_top3_recall"]["test"]
    assert test_recall["wiki_attribute"]["any_support"] > 0.9
    assert test_recall["wiki_two_hop"]["all_support"] < test_recall["wiki_two_hop"]["any_support"]


def test_every_golden_answer_is_in_a_supporting_passage(built):
    corpus = {d.id: d.contents for d in load_corpus(built["dir"] / "corpus.jsonl")}
    for split in ("train", "test"):
        for ex in load_qa(built["dir"] / f"{split}.jsonl"):
            passages = [corpus[i] for i in ex.supporting_ids]
            assert passages, ex.id
            for answer in ex.golden_answers:
                assert any(answer_in_text(answer, p) for p in passages), (ex.question, answer)


def test_splits_are_disjoint_by_entity_and_types_are_mixed(built):
    train = load_qa(built["dir"] / "train.jsonl")
    test = load_qa(built["dir"] / "test.jsonl")
    train_entities = {ex.supporting_ids[0] for ex in train}
    assert not any(
        ex.supporting_ids[0] in train_entities for ex in test if ex.data_source != "fanoutqa"
    )
    assert not {ex.question for ex in train} & {ex.question for ex in test}
    # consecutive task seeds draw different question types
    assert len({ex.data_source for ex in test[:20]}) >= 3


def test_build_is_deterministic_per_seed():
    leads = read_leads()
    a_train, a_test, _ = build_questions(leads, seed=0)
    b_train, b_test, _ = build_questions(leads, seed=0)
    _, c_test, _ = build_questions(leads, seed=1)
    assert (a_train, a_test) == (b_train, b_test)
    assert [e.id for e in a_test] != [e.id for e in c_test]
    assert (
        Counter(e.data_source for e in a_test)["fanoutqa"]
        == Counter(e.data_source for e in c_test)["fanoutqa"]
    )


def test_oracle_wins_every_type_and_random_loses_via_cli(built, capsys):
    assert (
        sdar_main(
            [
                "env",
                "play",
                "--env",
                "search",
                "--policy",
                "oracle",
                "--episodes",
                "300",
                "--split",
                "test",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["success"] == 1.0 and summary["mean_return"] == 1.0
    assert set(summary["per_task_type"]) == set(DATA_SOURCES)
    assert (
        sdar_main(
            [
                "env",
                "play",
                "--env",
                "search",
                "--policy",
                "random",
                "--episodes",
                "100",
                "--split",
                "test",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["success"] < 0.1


def test_search_build_cli_writes_a_set(tmp_path, capsys):
    out = tmp_path / "offline"
    assert (
        sdar_main(["search", "build", "--out", str(out), "--seed", "1", "--test-fraction", "0.4"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["seed"] == 1 and stats["test_fraction"] == 0.4
    assert report["questions"] == stats["questions"]
    assert len(load_qa(out / "test.jsonl")) == sum(stats["questions"]["test"].values()) >= 1000
    with make_search_env(data_dir=str(out), split="train") as env:
        assert env.num_tasks() == sum(stats["questions"]["train"].values())


def test_serve_retriever_cli_serves_a_corpus(tmp_path):
    corpus = [
        Document("0", '"Paris"\nCapital of France.'),
        Document("1", '"Oslo"\nCapital of Norway.'),
    ]
    write_corpus(tmp_path / "c.jsonl", corpus)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdar.cli",
            "serve-retriever",
            "--corpus",
            str(tmp_path / "c.jsonl"),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = json.loads(line)["url"]
        body = json.dumps(
            {"queries": ["Norway capital"], "topk": 1, "return_scores": True}
        ).encode()
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            result = json.loads(resp.read())["result"]
        assert result[0][0]["document"] == {"id": "1", "contents": '"Oslo"\nCapital of Norway.'}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_missing_data_package_gives_install_hint(monkeypatch):
    import importlib.util

    from sdar.envs.search import build

    real = importlib.util.find_spec
    monkeypatch.setattr(
        build.importlib.util, "find_spec", lambda name: None if name == "fanoutqa" else real(name)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps 'fanoutqa==1.1.1'"):
        build.fanout_dev_path()
    assert Path(build.wiki_leads_path()).name == "summaries_en-us.json"


def test_one_training_iteration_on_the_offline_set(built, tmp_path):
    """The trainer end to end on Search-QA with a tiny random model: skills routed by data_source
    are logged, and EM / F1 / per-type success reach the metrics."""
    import yaml

    config = {
        "method": "sdar",
        "model": {"name": "tiny-random"},
        "env": {
            "name": "search",
            "prompt_mode": "action_only",
            "train_split": "train",
            "val_split": "test",
            "invalid_action_penalty": 0.01,
        },
        "rollout": {
            "tasks_per_iteration": 2,
            "group_size": 2,
            "max_prompt_tokens": 2048,
            "generation": {"max_new_tokens": 8},
        },
        "teacher": {"max_prompt_tokens": 4096},
        "optim": {"lr": 1.0e-3, "mini_batch_size": 4, "micro_batch_size": 2},
        "eval": {"every": 1, "num_tasks": 4, "before_training": False},
        "iterations": 1,
        "save_every": 1,
        "tensorboard": False,
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert (
        sdar_main(
            [
                "train",
                "--config",
                str(tmp_path / "search.yaml"),
                "--output-dir",
                str(run),
                "--no-report",
            ]
        )
        == 0
    )
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    for key in ("val/em", "val/f1", "val/success"):
        assert 0.0 <= last[key] <= 1.0, key
    per_type = {k.split("/", 2)[2] for k in last if k.startswith("val/success/")}
    assert per_type and per_type <= set(DATA_SOURCES)
    skills = [json.loads(line) for line in (run / "skills_used.jsonl").read_text().splitlines()]
    files = set(skills[0]["files"])
    assert "search/general.md" in files and files <= {
        "search/general.md",
        "search/lookup.md",
        "search/attribute.md",
        "search/two_hop.md",
        "search/comparison.md",
    }
    assert len(files) >= 2  # the general file and at least one routed type file

"""Conventions of ``benchmarks/`` that a reader relies on, checked without running anything.

* Every benchmark script names its result file with ``--out`` (no script spells it ``--output``),
  so one command pattern works for all of them.
* No file in ``benchmarks/`` or ``configs/`` points at an issue number of the tracker: what a file
  says must stand on its own (the history of a result lives in its JSON ``notes``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
ISSUE = re.compile(r"\bissues?\s*#?\d+|\(#\d+\)", re.IGNORECASE)


def _text_files(folder: Path) -> list[Path]:
    suffixes = {".py", ".md", ".yaml", ".yml", ".json"}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_takes_its_result_path_as_out(script):
    text = script.read_text(encoding="utf-8")
    assert re.search(r"add_argument\(\s*\"--out\"", text), f"{script.name} has no --out option"
    assert not re.search(r"add_argument\(\s*\"--output\"", text), f"{script.name} spells it --output"


def test_no_issue_numbers_in_benchmarks_or_configs():
    hits = []
    for path in _text_files(ROOT / "benchmarks") + _text_files(ROOT / "configs"):
        if "runs" in path.relative_to(ROOT).parts:  # copied run records (config and metrics)
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "issue references:\n" + "\n".join(hits)


def test_the_issue_pattern_matches_what_it_must():
    assert ISSUE.search("same budget (issue 7, part 2)")
    assert ISSUE.search("see issues 13, 57") and ISSUE.search("fixed in (#12)")
    assert not ISSUE.search("an issue of memory") and not ISSUE.search("7 issues")


def test_results_record_the_code_commit(tmp_path, monkeypatch):
    import json
    import subprocess

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _results import code_commit, write_result

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
    commit = code_commit()
    if not head:
        assert commit == "unknown"
    else:
        assert commit.split("+")[0] == head and commit in (head, head + "+uncommitted")
    written = json.loads(write_result({"x": 1}, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert written == {"x": 1, "commit": commit}
    # a result that names its own commit (the code a long run started with) keeps it
    kept = json.loads(write_result({"commit": "abc1234"}, tmp_path / "s.json").read_text(encoding="utf-8"))
    assert kept["commit"] == "abc1234"


def test_code_commit_marks_changed_source_but_not_results(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _results import code_commit

    repo = tmp_path / "repo"
    monkeypatch.delenv("SDAR_COMMIT", raising=False)
    assert code_commit(tmp_path) == "unknown"  # not a git checkout
    monkeypatch.setenv("SDAR_COMMIT", "abc1234")  # a copied tree names the commit it was made from
    assert code_commit(tmp_path) == "abc1234+copied"

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    for path in ("src/pkg/a.py", "benchmarks/bench.py", "benchmarks/results/r.json", "configs/c.yaml", "README.md"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("x\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short", "HEAD")
    assert code_commit(repo) == head  # in git, $SDAR_COMMIT plays no part
    (repo / "benchmarks/results/r.json").write_text("y\n")  # results and docs are not code
    (repo / "README.md").write_text("y\n")
    (repo / "benchmarks/results/new.json").write_text("y\n")
    assert code_commit(repo) == head
    for path in ("src/pkg/a.py", "benchmarks/bench.py", "configs/new.yaml"):  # changed, or new, code
        target = repo / path
        before = target.read_text() if target.is_file() else None
        target.write_text("changed\n")
        assert code_commit(repo) == head + "+uncommitted", path
        if before is None:
            target.unlink()
        else:
            target.write_text(before)
    assert code_commit(repo) == head


def test_results_record_the_cpu_and_whether_it_computes_bfloat16(monkeypatch):
    """A CPU timing or a bfloat16 run means little without the CPU: AVX2-only CPUs emulate bfloat16."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from _results import machine_info

    info = machine_info()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(encoding="utf-8").splitlines()
                 if line.startswith("model name")]
        assert info["cpu"] == names[0]
        flags = next(line for line in cpuinfo.read_text(encoding="utf-8").splitlines() if line.startswith("flags"))
        native = {"avx512_bf16", "amx_bf16"} & set(flags.split(":", 1)[1].split())
        assert info["cpu_native_bf16"] is bool(native)
    assert info["cpu"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_grid_lanes_take_their_threads_from_omp_num_threads(monkeypatch):
    """A grid's runs inherit OMP_NUM_THREADS, and the parent's torch (whose machine records the
    grid writes) uses the same count: one thread by default, the user's value where set."""
    import os

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from _results import lane_threads, machine_info

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert lane_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert machine_info()["torch_threads"] == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert lane_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

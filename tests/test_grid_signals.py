"""A grid stopped by SIGINT / SIGTERM (``benchmarks/_results.py``: ``run_logged``, ``run_lanes``):
real signals sent to a real grid process whose lanes wait for real child processes.

Each child stands for ``sdar train``: it records every signal it receives and, once it has the
number it waits for, exits the way the trainer does after saving its checkpoint (status 128 + the
first signal). The grid runs 3 of them in 2 lanes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = """\
import signal, sys, time
from pathlib import Path

marker, expected = Path(sys.argv[1]), int(sys.argv[2])  # the stop signals to wait for before exiting
received = []

def record(signum, frame):
    with marker.open("a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    received.append(signum)

signal.signal(signal.SIGTERM, record)
signal.signal(signal.SIGINT, record)
marker.with_suffix(".ready").write_text(str(__import__("os").getpid()))
deadline = time.time() + 60
while len(received) < expected and time.time() < deadline:
    time.sleep(0.02)
time.sleep(0.3)  # the checkpoint; a signal arriving now is recorded too
sys.exit(128 + received[0] if received else 0)
"""

GRID = """\
import sys, time
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from _results import run_lanes, run_logged

tmp, expected = Path(sys.argv[1]), sys.argv[3]

def one(i):
    run_logged([sys.executable, str(tmp / "child.py"), str(tmp / f"run{i}.signals"), expected], tmp / "grid.log", tmp)
    return i

if expected == "0":  # runs that end by themselves, then the grid's own work (its tables, say)
    print("results", run_lanes(one, [0, 1], 2), flush=True)
    (tmp / "tables.started").write_text("")
    time.sleep(60)
    print("tables written", flush=True)
else:
    print("results", run_lanes(one, [0, 1, 2], 2), flush=True)
"""


def _start_grid(tmp_path: Path, signals_per_run: int = 1) -> subprocess.Popen:
    (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
    (tmp_path / "grid.py").write_text(GRID, encoding="utf-8")
    # its own session, so that signalling its process group reaches nothing of pytest's
    return subprocess.Popen([sys.executable, str(tmp_path / "grid.py"), str(tmp_path), str(ROOT / "benchmarks"),
                             str(signals_per_run)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(paths: list[Path], grid: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not all(p.exists() for p in paths):
        assert grid.poll() is None, grid.communicate()[0]
        assert time.time() < deadline, "the grid's runs did not start"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum, to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM to the grid", "SIGINT to its process group (a terminal's Ctrl-C)"])
def test_a_stop_signal_reaches_each_running_run_once_and_starts_nothing_new(tmp_path, signum, to_group):
    grid = _start_grid(tmp_path)
    ready = [tmp_path / "run0.ready", tmp_path / "run1.ready"]
    _wait_for(ready, grid)
    if to_group:
        os.killpg(grid.pid, signum)
    else:
        grid.send_signal(signum)
    out, _ = grid.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert grid.returncode == 128 + signum, out
    # both running runs got the signal exactly once (the runs live in their own sessions: a group
    # signal reaches them only through the grid) and ended before the grid did
    for i in (0, 1):
        assert (tmp_path / f"run{i}.signals").read_text() == name + "\n"
        assert not _alive(int((tmp_path / f"run{i}.ready").read_text()))
    # the third run never started, and nothing after the lanes ran
    assert not (tmp_path / "run2.ready").exists()
    assert "results" not in out
    assert f"{name}: 2 running run(s) stop after their current step" in out
    assert "rerun the same command to continue" in out


def test_a_second_signal_is_passed_on_too_so_the_runs_abort(tmp_path):
    grid = _start_grid(tmp_path, signals_per_run=2)
    _wait_for([tmp_path / "run0.ready", tmp_path / "run1.ready"], grid)
    grid.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    grid.send_signal(signal.SIGTERM)
    out, _ = grid.communicate(timeout=60)
    assert grid.returncode == 128 + signal.SIGTERM, out
    for i in (0, 1):
        assert (tmp_path / f"run{i}.signals").read_text() == "SIGTERM\nSIGTERM\n"
    assert "SIGTERM again" in out


def test_a_signal_while_no_run_is_running_stops_the_grids_own_work_at_once(tmp_path):
    grid = _start_grid(tmp_path, signals_per_run=0)
    _wait_for([tmp_path / "tables.started"], grid)
    started = time.time()
    grid.send_signal(signal.SIGTERM)
    out, _ = grid.communicate(timeout=30)
    assert grid.returncode == 128 + signal.SIGTERM, out
    assert time.time() - started < 20  # not after the 60 s of work
    assert "results [0, 1]" in out and "tables written" not in out
    assert "SIGTERM: stopped; rerun the same command to continue" in out


@pytest.fixture
def pytest_signal_handlers():
    """run_lanes installs its stop handlers in this (pytest's) process: put pytest's back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_without_a_signal_every_run_runs_and_a_failure_still_names_the_log(tmp_path, pytest_signal_handlers):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _results import run_lanes, run_logged

    def one(i):
        code = "import sys; print('ran', sys.argv[1]); sys.exit(int(sys.argv[1] == '1'))"
        run_logged([sys.executable, "-c", code, str(i)], tmp_path / f"run{i}.log", tmp_path)
        return i

    assert run_lanes(lambda i: one(i) if i != 1 else i, [0, 1, 2], 2) == [0, 1, 2]
    assert [(tmp_path / f"run{i}.log").read_text().splitlines()[-1] for i in (0, 2)] == ["ran 0", "ran 2"]
    with pytest.raises(RuntimeError, match=r"(?s)command failed \(1\).*run1\.log \(end\).*ran 1"):
        one(1)


# ---- a grid leaves alone the folder of a run another process still trains -------------------------
@pytest.mark.parametrize("resumable", [True, False])
def test_a_grid_neither_appends_to_nor_deletes_a_folder_another_process_holds(tmp_path, resumable):
    from helpers import lock_held_elsewhere

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gate_study import train_one

    run_dir = tmp_path / "runs" / "grpo-seed0"
    (run_dir / "checkpoints" / "iter_000003").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("the run's config\n")
    if not resumable:  # stopped before its first checkpoint: a grid would start it again from scratch
        (run_dir / "checkpoints" / "iter_000003").rmdir()
    (run_dir / "commit.txt").write_text("abc1234\n")
    with lock_held_elsewhere(run_dir) as pid:  # an earlier grid's `sdar train`, still going
        before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
        with pytest.raises(RuntimeError, match=f"is in use: another sdar process \\(pid {pid}\\)"):
            train_one("grpo", [], 0, tmp_path / "runs", tmp_path / "warm", [], 30, tmp_path / "out")
    assert (run_dir / "commit.txt").read_text() == "abc1234\n"  # no "(resumed)" line
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # no machine.jsonl, not deleted
    assert not (tmp_path / "runs" / "logs").exists()  # no command was started


def test_a_grid_stops_before_remaking_a_warm_start_another_process_still_makes(tmp_path):
    from helpers import lock_held_elsewhere

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gate_study import SMOKE, warm_start

    with lock_held_elsewhere(tmp_path / "warm") as pid:  # the `sdar sft` of a grid killed with SIGKILL
        with pytest.raises(SystemExit, match=f"is in use: another sdar process \\(pid {pid}\\)"):
            warm_start(tmp_path, SMOKE, 2)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["warm"]  # no demonstrations written over


def test_a_grid_names_the_iteration_a_run_resumes_after_and_its_log(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gate_study import train_one

    run_dir = tmp_path / "runs" / "grpo-seed0"
    for name in ("iter_000001", "iter_000002", "iter_000010.old"):  # the latter is no checkpoint's name
        (run_dir / "checkpoints" / name).mkdir(parents=True)
        (run_dir / "checkpoints" / name / "trainer_state.pt").write_bytes(b"not a checkpoint")
    (run_dir / "checkpoints" / "iter_000003").mkdir()  # incomplete: no trainer state
    (run_dir / "config.yaml").write_text("the run's config\n")
    with pytest.raises(RuntimeError, match="failed"):  # `sdar train --resume` refuses what it reads there
        train_one("grpo", [], 0, tmp_path / "runs", tmp_path / "warm", [], 30, tmp_path / "out")
    log = tmp_path / "runs" / "logs" / "grpo-seed0.log"
    assert capsys.readouterr().out == f"grpo-seed0: resuming after iteration 2 (progress: {log})\n"
    assert "--resume" in log.read_text()

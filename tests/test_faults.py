"""Faults a cluster user meets first: signals at any moment, refused commands, killed and crashed
runs, full disks, corrupt or foreign checkpoints, malformed input.

The promise under test: nothing already logged or checkpointed is lost, a refused command changes
nothing, and a user mistake is one clear line. Signals are real signals sent to the training
process (the test process itself for the in-process tests, a real ``sdar`` subprocess otherwise);
faults are injected at a chosen moment by wrapping the real method, which still runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TOY_RUN, lock_held_elsewhere, read_jsonl, write_run_config

from sdar.trainer.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from sdar.trainer.config import ConfigError, load_config
from sdar.trainer.trainer import Trainer

# the shared tiny run, three iterations, no TensorBoard
FAST = {**TOY_RUN, "model": {"name": "tiny-random", "lora": None}, "iterations": 3, "tensorboard": False}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def write_config(tmp_path: Path, name: str = "config.yaml", **top) -> Path:
    return write_run_config(tmp_path / name, FAST, **top)


def comparable(lines: list[dict]) -> list[dict]:
    """Metric lines without what differs between two identical runs (wall-clock times)."""
    return [{k: v for k, v in line.items() if k != "time" and not k.startswith("timing/")} for line in lines]


def sdar(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdar.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (a refused command must leave this unchanged)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. no lost metrics on Ctrl-C ----------------------------------------------------------------
def _interrupt_at(trainer: Trainer, phase: str, iteration: int, signum=signal.SIGINT, times: int = 1) -> None:
    """Send ``signum`` to this process during ``phase`` (rollout, update or validation) of
    ``iteration`` by wrapping the real method, which still runs."""
    def fire():
        for _ in range(times):
            os.kill(os.getpid(), signum)

    if phase == "update":
        real_update = trainer.update

        def update(it, *args, **kwargs):
            if it == iteration:
                fire()
            return real_update(it, *args, **kwargs)
        trainer.update = update
    elif phase == "rollout":
        real_collect = trainer.collect

        def collect(it):
            if it == iteration:
                fire()
            return real_collect(it)
        trainer.collect = collect
    else:  # validation: at the first environment step of the validation after `iteration`'s update
        env = trainer.val_env
        real_step = env.step

        def step(actions):
            if trainer._completed_iteration == iteration and not trainer._stop_requested:
                fire()
            return real_step(actions)
        env.step = step


@pytest.mark.parametrize("phase", ["rollout", "update", "validation"])
def test_ctrl_c_at_any_moment_then_resume_logs_every_iteration_once(tmp_path, phase):
    config = load_config(write_config(tmp_path))
    Trainer(config, tmp_path / "full").train()
    expected = comparable(read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    assert [m["iteration"] for m in expected] == [0, 1, 2, 3]

    run = tmp_path / "cut"
    trainer = Trainer(config, run)
    _interrupt_at(trainer, phase, iteration=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.stop_signal == signal.SIGINT
    resumed = Trainer(config, run, resume=True)
    resumed.train()
    got = comparable(read_jsonl(run / "metrics.jsonl"))
    assert [m["iteration"] for m in got] == [0, 1, 2, 3]
    assert got == expected
    assert [r["iteration"] for r in read_jsonl(run / "skills_used.jsonl")] == [1, 2, 3]


def test_resumed_without_validation_the_owed_line_holds_the_training_metrics(tmp_path):
    config = load_config(write_config(tmp_path), ["iterations=2"])
    run = tmp_path / "run"
    trainer = Trainer(config, run)
    _interrupt_at(trainer, "validation", iteration=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert [m["iteration"] for m in read_jsonl(run / "metrics.jsonl")] == [0]
    Trainer(load_config(write_config(tmp_path), ["iterations=2", "eval.every=0"]), run, resume=True).train()
    lines = read_jsonl(run / "metrics.jsonl")
    assert [m["iteration"] for m in lines] == [0, 1, 2]
    assert "train/success" in lines[1] and "val/success" not in lines[1]


# ---- 3. SIGTERM like Ctrl-C ------------------------------------------------------------------------
def test_sigterm_during_the_update_checkpoints_that_iteration(tmp_path):
    config = load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false"])
    trainer = Trainer(config, tmp_path / "run")
    _interrupt_at(trainer, "update", iteration=1, signum=signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.stop_signal == signal.SIGTERM
    assert latest_checkpoint(tmp_path / "run").name == "iter_000001"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is handed back


def test_a_second_sigterm_aborts_without_a_checkpoint(tmp_path):
    config = load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false"])
    trainer = Trainer(config, tmp_path / "run")
    _interrupt_at(trainer, "update", iteration=1, signum=signal.SIGTERM, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer._aborted and latest_checkpoint(tmp_path / "run") is None


@pytest.mark.slow
def test_cli_sigterm_exits_143_resumable_and_the_resumed_run_logs_each_iteration_once(tmp_path):
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    proc = _long_run(tmp_path, run, "save_every=100",
                     until=lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM: stopping" in err and f"resume with: sdar train --resume {run}" in err
    _resume_one_more_iteration(run)


def _long_run(tmp_path: Path, run: Path, *overrides: str, until) -> subprocess.Popen:
    """``sdar train`` of 50 iterations into ``run`` in the background, returned once ``until()`` holds."""
    path = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "sdar.cli", "train", "--config", str(path), "--output-dir",
                             str(run), "iterations=50", *overrides, "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline and not until():
        time.sleep(0.1)
    assert until(), "the background run did not get there in 300 s"
    return proc


def _resume_one_more_iteration(run: Path) -> None:
    """Resume the stopped ``run`` for one more iteration; every iteration is then logged once."""
    done = int(latest_checkpoint(run).name.split("_")[1])
    resumed = sdar("train", "--resume", str(run), f"iterations={done + 1}", "--no-report")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["iteration"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(done + 2))


# ---- 2. a refused command changes nothing ----------------------------------------------------------
@pytest.mark.slow
def test_train_and_sft_into_an_existing_run_are_refused_before_writing(tmp_path):
    # a run with metrics but no checkpoint (stopped before its first one), and an sft output
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.yaml").write_text("the earlier run's config\n")
    (stopped / "metrics.jsonl").write_text('{"iteration": 0, "time": 1.0, "val/success": 0.5}\n')
    before = snapshot(stopped)
    path = write_config(tmp_path)
    done = sdar("train", "--config", str(path), "--output-dir", str(stopped))
    assert done.returncode == 2, done.stderr[-2000:]
    assert snapshot(stopped) == before

    sft_run = tmp_path / "warm"
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": "Reach 1.", "response": "<action>increment</action>", "won": True}) + "\n")
    first = sdar("sft", "--config", str(path), "--demos", str(demos), "--output-dir", str(sft_run), "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(sft_run)
    other = write_config(tmp_path, "other.yaml", seed=7)
    again = sdar("sft", "--config", str(other), "--demos", str(demos), "--output-dir", str(sft_run))
    assert again.returncode == 2 and "already holds a run (checkpoint iter_000000)" in again.stderr
    assert snapshot(sft_run) == before


# ---- 12. one trainer per run directory ---------------------------------------------------------------
def test_run_lock_names_its_holder_and_the_os_drops_it_when_the_holder_dies(tmp_path):
    from sdar.trainer.run_dir import LOCK_FILE, RunDirError, RunLock

    run = tmp_path / "run"
    first = RunLock(run)  # creates the directory
    assert first.held and (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(RunDirError, match=f"in use: another sdar process \\(pid {os.getpid()}\\)"):
        RunLock(run)  # a second lock in this same process is refused too
    assert first.held
    first.release()
    first.release()  # idempotent
    RunLock(run).release()
    # a real process holds it, is killed with SIGKILL (no clean-up of its own), and the lock is gone
    with lock_held_elsewhere(run) as pid:
        with pytest.raises(RunDirError, match=f"pid {pid}\\)"):
            RunLock(run)
    after = RunLock(run)
    assert after.held and (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    after.release()


def test_lock_holder_names_a_live_holder_only_and_writes_nothing(tmp_path):
    from sdar.trainer.run_dir import LOCK_FILE, lock_holder

    run = tmp_path / "run"
    assert lock_holder(run) is None and not run.exists()  # no folder
    run.mkdir()
    assert lock_holder(run) is None and not (run / LOCK_FILE).exists()  # no lock file: never locked
    with lock_held_elsewhere(run) as pid:
        assert lock_holder(run) == str(pid)
        assert lock_holder(run) == str(pid)  # the probe left the holder's lock and file as they were
        assert (run / LOCK_FILE).read_text() == f"{pid}\n"
    assert lock_holder(run) is None  # the holder was killed: the operating system dropped its lock


def test_a_trainer_taking_its_lock_during_a_probe_waits_for_the_probe(tmp_path):
    import fcntl
    import threading

    from sdar.trainer.run_dir import LOCK_FILE, LOCK_WAIT, RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("")
    probe = open(run / LOCK_FILE, encoding="utf-8")  # as lock_holder holds it for an instant
    fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(LOCK_WAIT / 3, probe.close).start()
    lock = RunLock(run)
    assert lock.held and probe.closed
    lock.release()


def test_sft_holds_its_folders_lock_while_it_trains_and_refuses_one_another_process_holds(tmp_path):
    from sdar.trainer.run_dir import LOCK_FILE, RunDirError, RunLock

    path = write_config(tmp_path)
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": "Reach 1.", "response": "<action>increment</action>", "won": True}) + "\n")
    warm = tmp_path / "warm"
    with lock_held_elsewhere(warm) as pid:  # say, the `sdar sft` of a grid killed with SIGKILL
        refused = sdar("sft", "--config", str(path), "--demos", str(demos), "--output-dir", str(warm))
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert f"is in use: another sdar process (pid {pid})" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in warm.iterdir()) == [LOCK_FILE]  # nothing written
    # a live sft holds the lock from its first write (here: while it is still training)
    live = subprocess.Popen([sys.executable, "-m", "sdar.cli", "sft", "--config", str(path), "--demos", str(demos),
                             "--output-dir", str(warm), "--epochs", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 120
        while not ((warm / "metrics.jsonl").is_file() and (warm / "metrics.jsonl").read_text().strip()):
            assert live.poll() is None and time.time() < deadline, "sft did not start training"
            time.sleep(0.05)
        with pytest.raises(RunDirError, match=f"pid {live.pid}\\)"):
            RunLock(warm)
    finally:
        live.kill()
        live.wait(timeout=60)
    shutil.rmtree(warm)
    from sdar.trainer.sft import run_sft

    run_sft(load_config(path, ["sft.epochs=1"]), demos, warm)  # in this process: its lock is gone when it returns
    RunLock(warm).release()  # a lock this process still held through another open file would refuse this
    assert latest_checkpoint(warm) is not None


@pytest.mark.slow
def test_a_second_trainer_on_a_live_run_is_refused_and_resumes_once_the_first_stops(tmp_path):
    run = tmp_path / "run"
    first = _long_run(tmp_path, run, "save_every=1", until=lambda: latest_checkpoint(run) is not None)
    try:
        # a resume of the live run loads its checkpoint, then finds the directory locked
        second = sdar("train", "--resume", str(run), "--no-report")
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is in use: another sdar process (pid {first.pid}) is training there" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM
    _resume_one_more_iteration(run)


# ---- 4. a run killed before its first checkpoint can be restarted -----------------------------------
@pytest.mark.slow
def test_run_killed_before_its_first_checkpoint_restarts_with_the_flag(tmp_path):
    path = write_config(tmp_path)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "sdar.cli", "train", "--config", str(path), "--output-dir",
                             str(run), "iterations=50", "save_every=100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no handler runs, as when a node dies
    proc.wait(timeout=60)
    assert latest_checkpoint(run) is None and metrics.read_text().strip()

    for refused in (sdar("train", "--resume", str(run)), sdar("train", "--config", str(path), "--output-dir", str(run))):
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1 and "--restart" in refused.stderr
        assert "resume=True" not in refused.stderr
    restarted = sdar("train", "--config", str(path), "--output-dir", str(run), "--restart", "iterations=1",
                     "--no-report")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert [m["iteration"] for m in read_jsonl(metrics)] == [0, 1]
    assert latest_checkpoint(run).name == "iter_000001"
    # a run with a checkpoint is never replaced, flag or not
    again = sdar("train", "--config", str(path), "--output-dir", str(run), "--restart")
    assert again.returncode == 2 and f"--resume {run}" in again.stderr


# ---- 6. vanilla / skill_prompt never train -------------------------------------------------------
@pytest.mark.parametrize("method,with_skills", [("vanilla", False), ("skill_prompt", True)])
def test_evaluation_only_methods_never_train_even_with_iterations_set(tmp_path, method, with_skills, caplog):
    path = write_config(tmp_path, method=method, iterations=150)  # every shipped config sets iterations
    with caplog.at_level("WARNING"):
        config = load_config(path)
    assert config.iterations == 0 and config.eval.with_skills is with_skills
    assert "iterations: 150 is ignored" in caplog.text
    assert load_config(path, ["iterations=5"]).iterations == 0


# ---- 7. everything that can be checked is checked before the model loads --------------------------
# (env.name and env.options are refused when the config is loaded: tests/test_config.py)
@pytest.mark.parametrize("overrides,message", [
    (["env.val_split=valid"], "env 'toy' on split 'valid'"),
    (["init_checkpoint=no/such/run"], "no checkpoint in no/such/run"),
])
def test_bad_settings_fail_before_the_model_loads_and_write_nothing(tmp_path, monkeypatch, overrides, message):
    import sdar.trainer.trainer as trainer_module

    def load_policy(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")
    monkeypatch.setattr(trainer_module, "load_policy", load_policy)
    config = load_config(write_config(tmp_path), overrides)
    with pytest.raises((ConfigError, CheckpointError)) as err:
        Trainer(config, tmp_path / "run")
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


def test_an_output_dir_that_cannot_be_created_is_refused_first(tmp_path):
    config = load_config(write_config(tmp_path))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FileExistsError, match="is not a directory"):
        Trainer(config, tmp_path / "a-file" / "run")


# ---- 8. one line for a user mistake ------------------------------------------------------------------
@pytest.mark.slow
def test_user_mistakes_are_one_line_and_debug_shows_the_traceback(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("env:\n  name: toy\n  max_steps: [3\niterations: 2\n")
    demos = tmp_path / "demos.jsonl"
    line = json.dumps({"prompt": "p", "response": "r"})
    demos.write_text(f"{line}\n\n{{not json\n")
    path = write_config(tmp_path)
    cases = [
        (["train", "--config", str(bad_yaml)], f"{bad_yaml}: malformed YAML: line 4"),
        (["train", "--config", str(path), "optim.lrr=1"], "unknown key(s) ['optim.lrr']"),
        (["train", "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        (["train"], "give --config FILE"),
        (["sft", "--config", str(path), "--demos", str(demos), "--output-dir", str(tmp_path / "w")],
         f"{demos}:3: not valid JSON"),
        (["eval", str(tmp_path / "no-run")], "no checkpoint in"),
    ]
    for args, message in cases:
        done = sdar(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, (args, done.stderr)
    assert not (tmp_path / "w").exists()
    debug = sdar("--debug", "train", "--config", str(bad_yaml))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# ---- 11. loading a checkpoint never runs code from it -------------------------------------------------
class _Payload:
    """Unpickling this creates a file: the proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    config = load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false", "iterations=1"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.train()
    ckpt = latest_checkpoint(tmp_path / "run")
    # the trainer state is plain data: it loads without any allow-listed class
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert state["iteration"] == 1
    marker = tmp_path / "code-ran"
    torch.save({**state, "rng": _Payload(marker)}, ckpt / "trainer_state.pt")
    with pytest.raises(UnsafeCheckpointError, match="trainer_state.pt holds a pickled Python object"):
        load_checkpoint(ckpt, trainer.model)
    with pytest.raises(UnsafeCheckpointError):
        Trainer(config, tmp_path / "run", resume=True)  # no fallback past a foreign file
    assert not marker.exists()


# ---- 5. disk faults --------------------------------------------------------------------------------
def test_a_full_disk_is_named_and_leaves_no_partial_checkpoint(tmp_path):
    from sdar.trainer.checkpoint import _save_file

    with pytest.raises(CheckpointError, match="could not write checkpoint file /dev/full: the disk is full"):
        _save_file({"w": torch.zeros(100_000)}, Path("/dev/full"))  # the kernel answers ENOSPC
    # a write that fails half-way (here: the file size limit) removes its temporary folder
    script = (
        "import resource, signal, sys, torch\n"
        "from sdar.trainer.checkpoint import write_checkpoint\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "write_checkpoint(sys.argv[1], 3, {'w': torch.zeros(100_000)}, {}, {'rng': None})\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          env=ENV, timeout=120, check=False)
    assert done.returncode != 0
    assert f"could not write checkpoint file {tmp_path / 'run' / 'checkpoints'}" in done.stderr
    assert "model.pt" in done.stderr
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_a_checkpoint_folder_that_cannot_be_created_is_named(tmp_path):
    from sdar.trainer.checkpoint import write_checkpoint

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("a file where the folder belongs")
    with pytest.raises(CheckpointError, match=f"could not write checkpoint file {tmp_path / 'run' / 'checkpoints'}"):
        write_checkpoint(tmp_path / "run", 1, {"w": torch.zeros(3)}, {}, {})
    assert (tmp_path / "run" / "checkpoints").read_text() == "a file where the folder belongs"

def test_resume_clears_leftover_temporary_folders_and_skips_a_corrupt_checkpoint(tmp_path, caplog):
    config = load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false", "iterations=2"])
    run = tmp_path / "run"
    Trainer(config, run).train()
    leftover = run / "checkpoints" / ".tmp-iter_000003-12345"  # a write killed half-way
    leftover.mkdir()
    (leftover / "model.pt").write_bytes(b"half")
    newest = run / "checkpoints" / "iter_000002" / "optimizer.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a crash or a full disk
    with caplog.at_level("WARNING"):
        resumed = Trainer(load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false",
                                                               "iterations=3"]), run, resume=True)
    assert resumed.start_iteration == 2  # fell back to iter_000001
    assert str(newest) in caplog.text and "corrupt" in caplog.text
    assert not leftover.exists()
    # only a corrupt checkpoint left: the error names its file
    for old in list_checkpoints(run)[:-1]:
        shutil.rmtree(old)
    with pytest.raises(CheckpointError, match=str(newest)):
        Trainer(config, run, resume=True)


# ---- 10. small ones --------------------------------------------------------------------------------
def test_resume_trims_skills_used_and_gate_actions_like_the_metrics(tmp_path):
    config = load_config(write_config(tmp_path), ["eval.every=0", "eval.before_training=false", "iterations=2"])
    run = tmp_path / "run"
    Trainer(config, run).train()
    shutil.rmtree(run / "checkpoints" / "iter_000002")  # as if the run died before saving iteration 2
    Trainer(config, run, resume=True).train()
    assert [r["iteration"] for r in read_jsonl(run / "skills_used.jsonl")] == [1, 2]
    assert [r["iteration"] for r in read_jsonl(run / "gate_actions.jsonl")] == [1, 2]
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_cli_resume_flags_finished_runs_and_overrides_after_options(tmp_path):
    path = write_config(tmp_path)
    run = tmp_path / "run"
    done = sdar("train", "--config", str(path), "--output-dir", str(run), "--no-report", "iterations=1")
    assert done.returncode == 0, done.stderr[-3000:]
    before = snapshot(run)
    finished = sdar("train", "--resume", str(run), "--no-report")
    assert finished.returncode == 0 and "nothing to do" in finished.stdout
    assert snapshot(run) == before
    elsewhere = sdar("train", "--resume", str(run), "--output-dir", str(tmp_path / "other"), "iterations=2")
    assert elsewhere.returncode == 2 and "drop --output-dir" in elsewhere.stderr
    assert snapshot(run) == before and not (tmp_path / "other").exists()
    # KEY=VALUE after an option, in command-line order (the last one wins)
    ev = sdar("eval", str(run), "--split", "test", "eval.num_tasks=3", "--output", str(tmp_path / "e.json"),
              "eval.num_tasks=1")
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["num_tasks"] == 1 and result["split"] == "test"
    wrong = sdar("eval", str(run), "--split", "test", "--nonsense")
    assert wrong.returncode == 2 and "unrecognized arguments: --nonsense" in wrong.stderr

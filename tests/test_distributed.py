"""Multi-process training: two real processes joined over gloo on 127.0.0.1 (CPU), or over nccl.

What a user would notice: an update split over two ranks (a GRPO group spanning both, mini-batches
in which one rank holds nothing, a rank holding no step sample at all) leaves the same weights and
loss metrics as one process on the same step samples; ``torchrun ... sdar train`` with two
processes writes one set of logs and checkpoints, and the run resumes in a single process.

``SDAR_TEST_BACKEND=nccl`` runs the same multi-process tests on two CUDA GPUs over nccl (one GPU
per rank, the single-process baseline on the first GPU; ``scripts/gpu_check.py`` does this);
without two GPUs they skip. The default, ``gloo``, hides the GPUs so that CPU processes are tested
on any machine.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port, torchrun_command, write_run_config

from sdar.rollout import PromptBuilder, collect_rollout
from sdar.trainer.checkpoint import list_checkpoints
from sdar.trainer.config import load_config
from sdar.trainer.distributed import (
    SINGLE,
    all_gather_objects,
    all_reduce_gradients,
    init_distributed,
    rank_seed,
    shard_bounds,
    shutdown,
    sum_dicts,
)
from sdar.trainer.trainer import Trainer

BACKEND = os.environ.get("SDAR_TEST_BACKEND", "gloo")
if BACKEND not in ("gloo", "nccl"):
    raise ValueError(f"SDAR_TEST_BACKEND must be gloo or nccl, got {BACKEND!r}")
# Marks every test that starts two ranks: over nccl each rank needs a GPU of its own.
two_ranks = pytest.mark.skipif(
    BACKEND == "nccl" and torch.cuda.device_count() < 2,
    reason="SDAR_TEST_BACKEND=nccl needs two CUDA GPUs",
)

CONFIG = {
    "method": "sdar",
    # nccl: model.device auto puts each rank on cuda:LOCAL_RANK, the one-process baseline on cuda:0
    "model": {"name": "tiny-random", "device": "cpu" if BACKEND == "gloo" else "auto"},
    "env": {"name": "toy", "prompt_mode": "action_only", "max_steps": 3},
    "rollout": {
        "tasks_per_iteration": 2,
        "group_size": 2,
        "max_prompt_tokens": 256,
        "generation": {"max_new_tokens": 6},
    },
    "teacher": {"max_prompt_tokens": 512},
    "loss": {"c_kl": 0.01},
    # 8 step samples in mini-batches of 2: four optimizer steps, each token-mean over 2 samples
    "optim": {"lr": 1.0e-3, "mini_batch_size": 2, "micro_batch_size": 1},
    "eval": {"every": 0, "before_training": False, "num_tasks": 3},
    "iterations": 1,
    "log_samples": 3,
    "tensorboard": False,
}

# Seeds 0 and 1 (targets 1 and 2), two copies each, as in tests/test_rollout.py.
PLANS = [
    ["<action>increment</action>", "<action>submit</action>"],
    ["oops", "<action>submit</action>"],
    ["<action>increment</action>", "<action>increment</action>", "<action>submit</action>"],
    ["<action>submit</action>"],
]
# (split, micro-batch size, advantage estimator); rank 0 holds samples[:split]. Split 7:
# trajectory 3 (group 1) alone on rank 1, its group mate on rank 0, and three of the four
# mini-batches hold nothing of rank 1. Split 0: rank 0 holds nothing. Split 3 with GiGPO: a
# trajectory, and so its step-level anchor groups, spans both ranks.
SCENARIOS = ((7, 1, "grpo"), (0, 1, "grpo"), (7, 2, "grpo"), (3, 1, "gigpo"))
# How close the two-rank weights must be to one process's. score_responses encodes once the
# prompt start that all rows of one call share, when it is long enough: the two tasks' prompts
# part after 30 tokens, too few to cache, so all 8 rows share none, nor do either rank's rows in
# splits 7 and 0 (both tasks, or one row). There, with micro-batches of 1, every row goes through
# the same forward calls in both layouts and only the order of the gradient sums differs: tight.
# Split 3 gives rank 0 three rows of one task, whose 36 shared tokens are encoded apart, and
# micro-batches of 2 pair other rows (other padding): a row's log-probs then differ by float
# rounding (~1e-6), and Adam's first steps turn rounding on near-cancelling gradients into weight
# differences on under 1% of the entries (measured up to 4.4e-6 with split 3, ~0.5% of one step
# at lr 1e-3). That absolute tolerance is 1% of a step, ten times below the movement the test
# asks of every weight tensor; a lost or misweighted sample would also show in the loss metrics,
# compared to rel 1e-5.
EXACT = {"rtol": 1e-6, "atol": 1e-7}
ROUNDED = {"rtol": 1e-6, "atol": 1e-5}


def tolerance(split: int, micro: int) -> dict[str, float]:
    return EXACT if micro == 1 and split in (0, 7) else ROUNDED


def scenario_overrides(micro: int, estimator: str) -> list[str]:
    return [f"optim.micro_batch_size={micro}", f"advantage.estimator={estimator}"]


TIMEOUT_S = 240


def write_config(path: Path, **top) -> Path:
    return write_run_config(path, CONFIG, **top)


def scripted_samples(trainer: Trainer):
    """The same 8 step samples in every process: a scripted policy on the trainer's toy env."""
    env = trainer.train_env
    counters: dict[int, int] = {}

    def generate(prompt_ids):
        out = []
        for i in [i for i, s in enumerate(env.states) if not s.done]:
            k = counters.get(i, 0)
            counters[i] = k + 1
            out.append(trainer.tokenizer(PLANS[i][k], add_special_tokens=False)["input_ids"])
        return out

    builder = PromptBuilder(env, trainer.tokenizer, None, think=False)
    rollout = collect_rollout(
        env,
        builder,
        generate,
        trainer.tokenizer,
        [0, 1],
        2,
        history_length=2,
        max_prompt_tokens=256,
        invalid_action_penalty=0.1,
        progress=False,
    )
    return rollout.samples


def trainable(model) -> dict[str, torch.Tensor]:
    """Trainable weights copied to the CPU (ranks on different GPUs are compared in one process)."""
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def launcher_env() -> dict[str, str]:
    """Environment of a ``torchrun`` child: GPUs hidden for gloo, visible for nccl."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if BACKEND == "gloo":
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes over gloo even on a GPU machine
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def spawn(fn, args: tuple, nprocs: int = 2) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` fresh processes; kill them and fail after TIMEOUT_S."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.time() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(deadline - time.time(), 0.1)):
            if time.time() > deadline:
                raise TimeoutError(f"distributed workers still running after {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def join_group(rank: int, port: int, world_size: int = 2):
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
    )
    if BACKEND == "gloo":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes over gloo even on a GPU machine
    torch.set_num_threads(1)
    context = init_distributed(timeout_s=TIMEOUT_S)
    assert context.backend == BACKEND, context  # no silent fallback to the other backend
    return context


# ---- the update: two ranks equal one process -----------------------------------------------------
def _update_worker(rank: int, port: int, config_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # as the one_thread fixture does in the parent (conftest.py)
    context = join_group(rank, port)
    try:
        for split, micro, estimator in SCENARIOS:
            trainer = Trainer(
                load_config(config_path, scenario_overrides(micro, estimator)),
                Path(out_dir) / f"run-{split}-{micro}-{estimator}",
            )
            assert trainer.dist == context
            samples = scripted_samples(trainer)
            mine = samples[:split] if rank == 0 else samples[split:]
            metrics = trainer.learn(1, mine)
            torch.save(
                {
                    "weights": trainable(trainer.model),
                    "metrics": metrics,
                    "group_ids": [s.group_id for s in mine],
                },
                Path(out_dir) / f"split{split}-{micro}-{estimator}-rank{rank}.pt",
            )
    finally:
        shutdown(context)


@pytest.mark.slow
@two_ranks
def test_two_ranks_update_equals_one_process(tmp_path, one_thread):
    config_path = write_config(tmp_path / "config.yaml")
    baseline = {}
    for micro, estimator in sorted({(m, e) for _, m, e in SCENARIOS}):
        single = Trainer(
            load_config(config_path, scenario_overrides(micro, estimator)),
            tmp_path / f"single-{micro}-{estimator}",
        )
        assert single.dist == SINGLE
        before = trainable(single.model)
        samples = scripted_samples(single)
        assert len(samples) == 8 and {s.group_id for s in samples[:7]} & {
            s.group_id for s in samples[7:]
        }
        metrics = single.learn(1, samples)
        baseline[micro, estimator] = (trainable(single.model), metrics)
        assert metrics["actor/optimizer_steps"] == 4.0
        assert all(
            (baseline[micro, estimator][0][k] - before[k]).abs().max() > 1e-4 for k in before
        ), "a weight did not move"

    spawn(_update_worker, (free_port(), str(config_path), str(tmp_path)))
    for split, micro, estimator in SCENARIOS:
        expected, expected_metrics = baseline[micro, estimator]
        ranks = [
            torch.load(
                tmp_path / f"split{split}-{micro}-{estimator}-rank{r}.pt", weights_only=False
            )
            for r in (0, 1)
        ]
        assert len(ranks[0]["group_ids"]) == split and len(ranks[1]["group_ids"]) == 8 - split
        for k in expected:
            # both ranks hold identical weights, equal to one process's up to float rounding
            assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k
            torch.testing.assert_close(
                ranks[0]["weights"][k], expected[k], **tolerance(split, micro), msg=k
            )
        got = ranks[0]["metrics"]
        untimed = [
            {k: v for k, v in r["metrics"].items() if not k.startswith("timing/")} for r in ranks
        ]
        assert untimed[0] == untimed[1]  # every rank reports the metrics of all ranks
        for key in (
            "actor/loss",
            "actor/pg_loss",
            "actor/kl",
            "sdar/loss",
            "sdar/gate_mean",
            "actor/grad_norm",
            "train/advantage_abs_mean",
            "teacher/truncated",
            "actor/optimizer_steps",
            "train/groups_with_signal",
            "teacher/gap_pos_adv",
            "teacher/gate_neg_adv",
        ):
            assert got[key] == pytest.approx(expected_metrics[key], rel=1e-5, abs=1e-6), key
        # the log-sample picks are global: rank 0 logs the same records as one process
        lines = [
            json.loads(x)
            for x in (tmp_path / f"run-{split}-{micro}-{estimator}" / "samples.jsonl")
            .read_text()
            .splitlines()
        ]
        single_lines = [
            json.loads(x)
            for x in (tmp_path / f"single-{micro}-{estimator}" / "samples.jsonl")
            .read_text()
            .splitlines()
        ]
        assert [(r["task_id"], r["step"], r["tokens"]) for r in lines] == [
            (r["task_id"], r["step"], r["tokens"]) for r in single_lines
        ]


# ---- collectives ---------------------------------------------------------------------------------
def _collectives_worker(rank: int, port: int, out_dir: str) -> None:
    context = join_group(rank, port)
    try:
        gathered = all_gather_objects(context, {"rank": rank, "ids": list(range(rank + 1))})
        device = torch.device("cuda", rank) if BACKEND == "nccl" else torch.device("cpu")
        used = torch.nn.Parameter(torch.zeros(3, device=device))
        unused = torch.nn.Parameter(torch.zeros(2, device=device))
        if rank == 1:  # rank 0 has no gradient at all (no step sample in this mini-batch)
            used.grad = torch.tensor([1.0, 2.0, 3.0], device=device)
        all_reduce_gradients(context, [used, unused])
        torch.save(
            {"gathered": gathered, "used": used.grad.cpu(), "unused": unused.grad},
            Path(out_dir) / f"collectives-rank{rank}.pt",
        )
    finally:
        shutdown(context)


@pytest.mark.slow
@two_ranks
def test_gather_and_gradient_sum_with_an_empty_rank(tmp_path):
    spawn(_collectives_worker, (free_port(), str(tmp_path)))
    for r in (0, 1):
        got = torch.load(tmp_path / f"collectives-rank{r}.pt", weights_only=False)
        assert got["gathered"] == [{"rank": 0, "ids": [0]}, {"rank": 1, "ids": [0, 1]}]
        # a sum, not DDP's mean; the rank without a gradient joined with zeros
        assert torch.equal(got["used"], torch.tensor([1.0, 2.0, 3.0]))
        assert got["unused"] is None  # no rank had one: the optimizer must still skip it


# ---- pure helpers --------------------------------------------------------------------------------
def test_shard_bounds_cover_in_order():
    for count in (0, 1, 7, 8, 9):
        for world in (1, 2, 3):
            bounds = [shard_bounds(count, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard_bounds(7, 1, 2) == (4, 7)
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(4, 2, 2)


def test_single_process_context_and_seeds(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == SINGLE and SINGLE.is_main and not SINGLE.enabled
    assert all_gather_objects(SINGLE, 5) == [5]
    assert rank_seed(42, 0) == 42  # rank 0 samples exactly like the single-process trainer
    assert len({rank_seed(42, r) for r in range(4)}) == 4 and rank_seed(42, 1) == rank_seed(42, 1)
    assert rank_seed(42, 1, "resume-3") != rank_seed(42, 1)
    assert sum_dicts([{"a": 1.0}, {"a": 2.0, "b": 1.0}]) == {"a": 3.0, "b": 1.0}


def test_launcher_environment_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2"):
        init_distributed()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer"):
        init_distributed()


# ---- the CLI under torchrun, then resumed in one process -----------------------------------------
@pytest.mark.slow
@two_ranks
def test_torchrun_refuses_dynamic_sampling_in_one_line(tmp_path):
    # rollout.filter_groups plays whole groups in one process; two ranks both stop with the same line
    config_path = write_config(tmp_path / "config.yaml", iterations=1)
    run = tmp_path / "run"
    cmd = torchrun_command(free_port(), "train", "--config", str(config_path), "rollout.filter_groups=true",
                           "--output-dir", str(run), "--no-report")
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=launcher_env(), timeout=TIMEOUT_S)
    assert done.returncode != 0
    assert "rollout.filter_groups runs in one process only (groups are played whole); this launch has 2 ranks" in (
        done.stderr)
    assert not (run / "metrics.jsonl").exists()


@pytest.mark.slow
@two_ranks
def test_torchrun_train_then_resume_in_one_process(tmp_path):
    config_path = write_config(
        tmp_path / "config.yaml",
        iterations=2,
        save_every=1,
        eval={"every": 1, "before_training": True, "num_tasks": 3},
    )
    env = launcher_env()
    run = tmp_path / "run"
    cmd = torchrun_command(
        free_port(), "train", "--config", str(config_path), "--output-dir", str(run), "--no-report"
    )
    done = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=env, timeout=TIMEOUT_S * 2
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"rank 1 of 2 joined the process group ({BACKEND})" in done.stderr
    assert done.stdout.count("validation success") == 1  # rank 0 alone prints
    assert done.stderr.count("iteration 2/2 |") == 1  # rank 0 alone logs INFO

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2]
    assert all(m["val/episodes"] == 3.0 for m in lines)  # the panel of 3 split 2 + 1, gathered
    assert lines[1]["train/episodes"] == 4.0  # 2 tasks x 2 copies over both ranks
    assert [p.name for p in list_checkpoints(run)] == ["iter_000001", "iter_000002"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]
    state = torch.load(run / "checkpoints" / "iter_000002" / "trainer_state.pt", weights_only=False)
    assert len(state["rank_rng"]) == 2 and state["iteration"] == 2
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in samples] == [1] * 3 + [2] * 3  # log_samples=3, written once

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdar.cli",
            "train",
            "--resume",
            str(run),
            "iterations=3",
            "--no-report",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "checkpoint written by 2 process(es), resumed on 1" in resumed.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2, 3]
    assert list_checkpoints(run)[-1].name == "iter_000003"


@pytest.mark.slow
@two_ranks
def test_ctrl_c_under_torchrun_saves_one_checkpoint(tmp_path):
    config_path = write_config(tmp_path / "config.yaml", iterations=50, save_every=100)
    env = launcher_env()
    run = tmp_path / "run"
    cmd = torchrun_command(free_port(), "train", "--config", str(config_path), "--output-dir", str(run))
    # a session of its own, so the signal reaches launcher and ranks as a terminal's Ctrl-C does
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0  # torchrun reports the interruption
    assert err.count("interrupted; resume with") == 1, err[-4000:]  # rank 0 alone says it
    done = [json.loads(x)["iteration"] for x in metrics.read_text().splitlines()]
    assert [p.name for p in list_checkpoints(run)] == [f"iter_{done[-1]:06d}"]
    assert done == list(range(1, done[-1] + 1)) and done[-1] < 50

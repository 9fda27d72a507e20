"""Sharded training (``distributed.strategy: fsdp``): two real processes over gloo (CPU) or nccl.

What a user would notice: an update whose weights, gradients and AdamW state are sharded over two
ranks (a rank with fewer micro-batches than the other, a rank with nothing at all) leaves the same
weights as one unsharded process on the same step samples, with full fine-tuning (the frozen KL
reference sharded too) and with LoRA; its checkpoint holds whole tensors and continues the run
the same in one process, in two ``ddp`` processes and in two ``fsdp`` processes; ``torchrun ...
sdar train distributed.strategy=fsdp`` (with gradient checkpointing) trains, validates and writes
its checkpoints. ``SDAR_TEST_BACKEND=nccl`` runs them on two GPUs (see tests/test_distributed.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import free_port, torchrun_command
from test_distributed import (
    BACKEND,
    TIMEOUT_S,
    join_group,
    launcher_env,
    scripted_samples,
    spawn,
    trainable,
    two_ranks,
    write_config,
)
from torch.distributed.tensor import DTensor

from sdar.trainer.checkpoint import list_checkpoints
from sdar.trainer.config import ConfigError, load_config
from sdar.trainer.distributed import shutdown
from sdar.trainer.sharding import whole
from sdar.trainer.trainer import Trainer

FSDP = ["distributed.strategy=fsdp"]
LORA = ["model.lora={r: 4, alpha: 8}"]
# (split, micro-batch size, LoRA, method); rank 0 holds samples[:split]. Split 7: rank 1 holds one
# step sample, so in three of the four mini-batches it runs only padding passes. Split 0: rank 0
# holds nothing at all, with opsd_jsd, whose micro-batches run a second (teacher-logits) forward
# pass that the padding passes must match. Split 5 with micro-batches of 2: other padding layouts.
SCENARIOS = ((7, 1, False, "sdar"), (0, 1, False, "opsd_jsd"), (7, 1, True, "sdar"), (5, 2, True, "sdar"))


def scenario_overrides(micro: int, lora: bool, method: str) -> list[str]:
    return [f"optim.micro_batch_size={micro}", f"method={method}"] + (LORA if lora else [])


def whole_trainable(model) -> dict[str, torch.Tensor]:
    """Every rank must call this: sharded parameters are gathered (and copied to the CPU)."""
    return {k: whole(v.detach()).cpu().clone() for k, v in model.named_parameters()
            if v.requires_grad}


# The sharded backward computes the same per-row gradients as one process but adds them up in
# another order (reduced once per pass, accumulated shard by shard) and Adam's first step magnifies
# rounding on near-zero gradients: differences of about 1e-7 on weights of order 0.01-1 (measured
# 1.3e-7 at most with micro-batches of one). Micro-batches of two: the ddp test's tolerance.
TOLERANCE = {1: {"rtol": 1e-6, "atol": 5e-7}, 2: {"rtol": 1e-6, "atol": 2e-6}}
COMPARED_METRICS = ("actor/loss", "actor/pg_loss", "actor/kl", "actor/grad_norm",
                    "train/advantage_abs_mean", "actor/optimizer_steps")


def assert_close_weights(got, expected, micro: int) -> None:
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], **TOLERANCE[micro], msg=k)


# ---- the update: two sharded ranks equal one process -----------------------------------------------
def _update_worker(rank: int, port: int, config_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # as the one_thread fixture does in the parent (conftest.py)
    context = join_group(rank, port)
    try:
        for split, micro, lora, method in SCENARIOS:
            trainer = Trainer(
                load_config(config_path, FSDP + scenario_overrides(micro, lora, method)),
                Path(out_dir) / f"run-{split}-{micro}-{lora}-{method}",
            )
            assert trainer.sharded
            sharded_params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
            assert all(isinstance(p, DTensor) for p in sharded_params)
            if trainer.reference is not None:  # the frozen KL reference is sharded as well
                assert all(isinstance(p, DTensor) for p in trainer.reference.parameters())
            samples = scripted_samples(trainer)
            mine = samples[:split] if rank == 0 else samples[split:]
            metrics = trainer.learn(1, mine)
            torch.save(
                {"weights": whole_trainable(trainer.model), "metrics": metrics},
                Path(out_dir) / f"fsdp-{split}-{micro}-{lora}-{method}-rank{rank}.pt",
            )
        # A NaN loss on one rank only: it still runs its backward (the other rank waits for it), and
        # both ranks skip that optimizer step.
        if rank == 1:
            real, calls = trainer._micro_batch_loss, []

            def poisoned(*args):
                loss, m, n_tokens = real(*args)
                calls.append(n_tokens)
                return (loss * float("nan") if len(calls) == 1 else loss), m, n_tokens

            trainer._micro_batch_loss = poisoned
        metrics = trainer.learn(2, mine)
        torch.save({"weights": whole_trainable(trainer.model), "metrics": metrics},
                   Path(out_dir) / f"nan-rank{rank}.pt")
    finally:
        shutdown(context)


@pytest.mark.slow
@two_ranks
def test_fsdp_two_ranks_update_equals_one_process(tmp_path, one_thread):
    config_path = write_config(tmp_path / "config.yaml")
    baseline = {}
    for _, micro, lora, method in SCENARIOS:
        single = Trainer(load_config(config_path, FSDP + scenario_overrides(micro, lora, method)),
                         tmp_path / f"single-{micro}-{lora}-{method}")
        assert not single.sharded  # fsdp in one process: the plain path
        before = trainable(single.model)
        metrics = single.learn(1, scripted_samples(single))
        after = trainable(single.model)
        assert metrics["actor/optimizer_steps"] == 4.0
        assert max((after[k] - before[k]).abs().max() for k in before) > 1e-4
        baseline[micro, lora, method] = (after, metrics)

    spawn(_update_worker, (free_port(), str(config_path), str(tmp_path)))
    for split, micro, lora, method in SCENARIOS:
        expected, expected_metrics = baseline[micro, lora, method]
        ranks = [torch.load(tmp_path / f"fsdp-{split}-{micro}-{lora}-{method}-rank{r}.pt", weights_only=False)
                 for r in (0, 1)]
        for k in expected:
            assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k
        assert_close_weights(ranks[0]["weights"], expected, micro)
        got = ranks[0]["metrics"]
        assert got["actor/skipped_updates"] == 0.0 and got["actor/optimizer_steps"] == 4.0
        for key in COMPARED_METRICS + (("sdar/loss",) if method == "sdar" else ("opsd/jsd",)):
            assert got[key] == pytest.approx(expected_metrics[key], rel=1e-5, abs=1e-6), key

    nan = [torch.load(tmp_path / f"nan-rank{r}.pt", weights_only=False) for r in (0, 1)]
    for r in (0, 1):
        assert nan[r]["metrics"]["actor/skipped_updates"] == 1.0
        assert nan[r]["metrics"]["actor/optimizer_steps"] == 3.0
    for k in nan[0]["weights"]:
        assert torch.equal(nan[0]["weights"][k], nan[1]["weights"][k]), k
        assert torch.isfinite(nan[0]["weights"][k]).all(), k


# ---- checkpoints: written sharded, resumed anywhere ----------------------------------------------
def _checkpoint_worker(rank: int, port: int, config_path: str, out_dir: str, mode: str) -> None:
    torch.set_num_threads(1)  # as the one_thread fixture does in the parent (conftest.py)
    """``write``: fsdp, iteration 1, save, iteration 2 (uninterrupted), then a fresh fsdp trainer
    resumes the checkpoint and redoes iteration 2. ``ddp``: a ddp trainer resumes it."""
    context = join_group(rank, port)
    out = Path(out_dir)
    try:
        if mode == "write":
            trainer = Trainer(load_config(config_path, FSDP), out / "run")
            samples = scripted_samples(trainer)
            mine = samples[:5] if rank == 0 else samples[5:]
            trainer.learn(1, mine)
            trainer.save(1)
            trainer.learn(2, mine)
            results = {"uninterrupted": whole_trainable(trainer.model)}
            trainer.close()  # driven by hand: it holds the run directory until closed
            resumed = Trainer(load_config(config_path, FSDP), out / "run", resume=True)
        else:
            resumed = Trainer(load_config(config_path, ["distributed.strategy=ddp"]), out / "run",
                              resume=True)
            results = {}
        assert resumed.start_iteration == 2
        samples = scripted_samples(resumed)
        mine = samples[:5] if rank == 0 else samples[5:]
        resumed.learn(2, mine)
        results["resumed"] = whole_trainable(resumed.model)
        torch.save(results, out / f"{mode}-rank{rank}.pt")
    finally:
        shutdown(context)


@pytest.mark.slow
@two_ranks
def test_fsdp_checkpoint_resumes_in_one_process_and_under_ddp(tmp_path, one_thread):
    config_path = write_config(tmp_path / "config.yaml", iterations=2)
    single = Trainer(load_config(config_path), tmp_path / "single")
    single.learn(1, scripted_samples(single))
    single.learn(2, scripted_samples(single))
    expected = trainable(single.model)

    spawn(_checkpoint_worker, (free_port(), str(config_path), str(tmp_path), "write"))
    ckpt = tmp_path / "run" / "checkpoints" / "iter_000001"
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["iter_000001"]
    # whole tensors, the same files an unsharded run writes
    weights = torch.load(ckpt / "model.pt", weights_only=True)
    assert all(type(v) is torch.Tensor for v in weights.values())
    assert weights.keys() == expected.keys() and all(
        weights[k].shape == expected[k].shape for k in expected)
    moments = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    assert all(type(v) is torch.Tensor for entry in moments.values() for v in entry.values())

    written = [torch.load(tmp_path / f"write-rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert_close_weights(written[0]["uninterrupted"], expected, 1)
    for k in expected:  # resumed by fsdp on the same two ranks: the same run, bit for bit
        assert torch.equal(written[0]["resumed"][k], written[0]["uninterrupted"][k]), k
        assert torch.equal(written[1]["resumed"][k], written[0]["uninterrupted"][k]), k

    # one process, unsharded, from the fsdp checkpoint
    resumed = Trainer(load_config(config_path), tmp_path / "run", resume=True)
    assert resumed.start_iteration == 2
    resumed.learn(2, scripted_samples(resumed))
    assert_close_weights(trainable(resumed.model), expected, 1)
    resumed.close()  # driven by hand: it holds the run directory until closed

    # two ddp processes from the same checkpoint (rewritten by nobody: the one-process resume
    # above wrote no checkpoint)
    spawn(_checkpoint_worker, (free_port(), str(config_path), str(tmp_path), "ddp"))
    for r in (0, 1):
        got = torch.load(tmp_path / f"ddp-rank{r}.pt", weights_only=False)["resumed"]
        assert_close_weights(got, expected, 1)


# ---- configuration -------------------------------------------------------------------------------
def test_strategy_is_validated(tmp_path):
    config_path = write_config(tmp_path / "config.yaml")
    assert load_config(config_path).distributed.strategy == "ddp"
    with pytest.raises(ConfigError, match=r"distributed.strategy must be one of \['ddp', 'fsdp'\]"):
        load_config(config_path, ["distributed.strategy=zero3"])
    with pytest.raises(ConfigError, match="fsdp does not support rollout.engine=vllm"):
        load_config(config_path, FSDP + ["rollout.engine=vllm"])


# ---- the CLI under torchrun ----------------------------------------------------------------------
@pytest.mark.slow
@two_ranks
def test_torchrun_fsdp_train_writes_checkpoints(tmp_path):
    config_path = write_config(
        tmp_path / "config.yaml",
        iterations=2,
        save_every=1,
        eval={"every": 2, "before_training": False, "num_tasks": 3},
    )
    env = launcher_env()
    run = tmp_path / "run"
    cmd = torchrun_command(
        free_port(), "train", "--config", str(config_path), "--output-dir", str(run),
        "--no-report", "distributed.strategy=fsdp", "model.gradient_checkpointing=true",
    )
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=TIMEOUT_S * 2)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"rank 1 of 2 joined the process group ({BACKEND})" in done.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2]
    assert lines[1]["val/episodes"] == 3.0 and lines[0]["train/episodes"] == 4.0
    assert all(m["actor/optimizer_steps"] >= 1.0 and m["actor/skipped_updates"] == 0.0 for m in lines)
    assert [p.name for p in list_checkpoints(run)] == ["iter_000001", "iter_000002"]
    state = torch.load(run / "checkpoints" / "iter_000002" / "trainer_state.pt", weights_only=False)
    assert state["iteration"] == 2 and len(state["rank_rng"]) == 2
    weights = torch.load(run / "checkpoints" / "iter_000002" / "model.pt", weights_only=True)
    start = trainable(Trainer(load_config(config_path), tmp_path / "fresh").model)
    assert weights.keys() == start.keys()
    assert max((weights[k] - start[k]).abs().max() for k in start) > 1e-4  # it trained

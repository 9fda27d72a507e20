"""``optim.loss_aggregation`` and ``optim.warmup``: the released actor's gradient accumulation and
verl's warm-up schedule, against hand computation (docs/algorithm.md, "Departures from the
released code")."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sdar.models.scoring import score_responses
from sdar.trainer.trainer import Trainer, micro_batch_weight, mini_batch_plan, warmup_lr


def optim(**kw):
    base = {"lr": 1e-6, "warmup_ratio": 0.1, "warmup": "project", "loss_aggregation": "exact",
            "mini_batch_size": 4, "micro_batch_size": 2}
    base.update(kw)
    return SimpleNamespace(**base)


# ----- learning-rate warm-up ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "style, iteration, expected",
    [
        # W = int(0.1 * 150) = 15. verl: LambdaLR(k / W), stepped after each iteration, k from 0
        ("released", 1, 0.0),
        ("released", 2, 1e-6 / 15),
        ("released", 15, 1e-6 * 14 / 15),
        ("released", 16, 1e-6),
        ("released", 150, 1e-6),
        ("project", 1, 1e-6 / 15),
        ("project", 14, 1e-6 * 14 / 15),
        ("project", 15, 1e-6),
        ("project", 16, 1e-6),
    ],
)
def test_warmup_schedules(style, iteration, expected):
    assert warmup_lr(optim(warmup=style), 150, iteration) == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("style", ["released", "project"])
def test_no_warmup_means_the_full_rate_from_the_first_iteration(style):
    assert warmup_lr(optim(warmup=style, warmup_ratio=0.0), 150, 1) == 1e-6
    assert warmup_lr(optim(warmup=style, warmup_ratio=0.005), 150, 1) == 1e-6  # int(0.75) = 0


# ----- aggregation: the pure rules --------------------------------------------------------------------
def test_released_plan_keeps_collection_order_and_exact_plan_shuffles():
    tokens = [5] * 10
    assert mini_batch_plan(optim(loss_aggregation="released"), tokens, None) == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    drawn = mini_batch_plan(optim(), tokens, torch.Generator().manual_seed(3))
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert drawn == [expected[:4], expected[4:8], expected[8:]]


def test_micro_batch_weights_by_hand():
    # mini-batch of 4 samples with 1, 3 | 2, 2 response tokens; per-token losses
    # micro 1: [1] and [2, 2, 2] -> token-mean 7/4; micro 2: [4, 4] and [0, 8] -> token-mean 4
    micro_means, micro_tokens, mini_tokens = [7 / 4, 4.0], [4, 4], 8
    released = sum(m * micro_batch_weight(optim(loss_aggregation="released"), n, mini_tokens)
                   for m, n in zip(micro_means, micro_tokens))
    exact = sum(m * micro_batch_weight(optim(), n, mini_tokens) for m, n in zip(micro_means, micro_tokens))
    assert released == pytest.approx((7 / 4 + 4) / 2)  # the mean of the micro-batch token-means
    assert exact == pytest.approx((1 + 6 + 8 + 8) / 8)  # the token-mean of the mini-batch
    # unequal token counts: the two rules differ. micro 1: 1 token of loss 3; micro 2: 3 tokens of 1
    assert micro_batch_weight(optim(loss_aggregation="released"), 1, 4) * 3 + \
        micro_batch_weight(optim(loss_aggregation="released"), 3, 4) * 1 == pytest.approx(2.0)
    assert micro_batch_weight(optim(), 1, 4) * 3 + micro_batch_weight(optim(), 3, 4) * 1 == pytest.approx(1.5)
    # the divisor is mini // micro, also for a short last mini-batch (as released)
    assert micro_batch_weight(optim(loss_aggregation="released", mini_batch_size=256, micro_batch_size=32), 7, 9) == 1 / 8


# ----- aggregation: the trainer's first optimizer step ---------------------------------------------------
def first_step_gradient(tmp_path, aggregation: str):
    """The gradient the trainer hands the optimizer at its first step, with the trainer, the
    step samples and their advantages."""
    from test_distributed import scripted_samples
    from test_trainer import make_config

    overrides = ["method=grpo", "loss.c_kl=0", "loss.c_ent=0", "optim.mini_batch_size=4",
                 "optim.micro_batch_size=2", "optim.grad_clip=1e9", "optim.lr=1e-9",
                 f"optim.loss_aggregation={aggregation}"]
    config, _ = make_config(tmp_path, overrides)
    trainer = Trainer(config, tmp_path / aggregation)
    samples = scripted_samples(trainer)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    captured: list[list[torch.Tensor]] = []
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        captured.append([p.grad.detach().clone() for p in params])
        return real_step(*args, **kwargs)

    advantages = trainer.compute_advantages(samples)
    trainer.optimizer.step = step
    stream = torch.Generator()
    stream.set_state(trainer.generator.get_state())  # what the exact rule draws its order from
    trainer.learn(1, samples)
    assert len(captured) == 2  # 8 step samples, mini-batches of 4
    trainer.model.train()  # the hand gradient below: the weights moved by ~1e-9 only (lr 1e-9)
    return trainer, samples, advantages, params, captured[0], stream


def hand_gradient(trainer, samples, advantages, params, micro_batches, divisor):
    """sum over micro-batches of grad(-sum_i A_i sum_t log p_it / tokens of the micro-batch) / divisor,
    at the weights before the first step (the ratio to the old policy is 1 there, inside the clip)."""
    total = 0.0
    for micro in micro_batches:
        rows = [samples[i] for i in micro]
        scored = score_responses(trainer.model, [s.prompt_ids for s in rows], [s.response_ids for s in rows],
                                 pad_id=trainer.pad_id)
        mask = scored.response_mask
        weighted = (scored.log_probs * mask).sum(1) * advantages[micro].to(scored.log_probs.dtype)
        total = total + (-weighted.sum() / mask.sum()) / divisor
    return torch.autograd.grad(total, params, allow_unused=True)


def test_released_aggregation_equals_the_released_formula(tmp_path):
    trainer, samples, advantages, params, got, _ = first_step_gradient(tmp_path, "released")
    # first mini-batch: samples 0..3 in collection order, micro-batches [0, 1] and [2, 3], divisor 4 // 2
    want = hand_gradient(trainer, samples, advantages, params, [[0, 1], [2, 3]], divisor=2)
    assert any(g.abs().sum() > 0 for g in got)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=2e-3, atol=1e-7)


def test_exact_aggregation_is_the_token_mean_of_a_shuffled_mini_batch(tmp_path):
    trainer, samples, advantages, params, got, stream = first_step_gradient(tmp_path, "exact")
    order = torch.randperm(len(samples), generator=stream).tolist()
    assert sorted(order[:4]) != [0, 1, 2, 3]
    # the token-mean over the whole (shuffled) mini-batch: one "micro-batch" of all four
    want = hand_gradient(trainer, samples, advantages, params, [order[:4]], divisor=1)
    released = hand_gradient(trainer, samples, advantages, params, [[0, 1], [2, 3]], divisor=2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=2e-3, atol=1e-7)
    differs = max(float((g - r).abs().max()) for g, r in zip(got, released) if r is not None)
    assert differs > 1e-4 * max(float(g.abs().max()) for g in got)


# ----- aggregation over two ranks -----------------------------------------------------------------
RELEASED = ["optim.loss_aggregation=released", "optim.mini_batch_size=4", "optim.micro_batch_size=2"]


def _released_worker(rank: int, port: int, config_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # as the one_thread fixture does in the parent (conftest.py)
    from test_distributed import join_group, scripted_samples, trainable

    from sdar.trainer.config import load_config
    from sdar.trainer.distributed import shutdown

    context = join_group(rank, port)
    try:
        for split in (2, 3):
            trainer = Trainer(load_config(config_path, RELEASED), Path(out_dir) / f"run-{split}")
            samples = scripted_samples(trainer)
            trainer.learn(1, samples[:split] if rank == 0 else samples[split:])
            torch.save(trainable(trainer.model), Path(out_dir) / f"split{split}-rank{rank}.pt")
    finally:
        shutdown(context)


@pytest.mark.slow
def test_released_aggregation_over_two_ranks(tmp_path, one_thread):
    """Micro-batches never span ranks. Split 2: the ranks' micro-batches are one process's
    ([0, 1] | [2, 3], then [4, 5], [6, 7]), so the weights are one process's. Split 3: rank 0
    cuts [0, 1], [2] and rank 1 [3]: other micro-batches, another gradient (not world-size
    invariant, as the released code on its GPUs)."""
    from helpers import free_port
    from test_distributed import ROUNDED, scripted_samples, spawn, trainable, write_config

    from sdar.trainer.config import load_config

    config_path = write_config(tmp_path / "config.yaml")
    single = Trainer(load_config(config_path, RELEASED), tmp_path / "single")
    single.learn(1, scripted_samples(single))
    expected = trainable(single.model)
    spawn(_released_worker, (free_port(), str(config_path), str(tmp_path)))
    for split in (2, 3):
        ranks = [torch.load(tmp_path / f"split{split}-rank{r}.pt", weights_only=False) for r in (0, 1)]
        for k in expected:
            assert torch.equal(ranks[0][k], ranks[1][k]), k
        if split == 2:
            for k in expected:
                torch.testing.assert_close(ranks[0][k], expected[k], **ROUNDED, msg=k)
        else:
            assert max(float((ranks[0][k] - expected[k]).abs().max()) for k in expected) > 1e-4

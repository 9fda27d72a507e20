"""Chunked log-probs / entropies and the chunked generalised JSD from logits: exactness, gradients,
errors, memory benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from sdar.models.logprobs import generalized_jsd_from_logits, log_probs_from_logits

REPO = Path(__file__).resolve().parents[1]


def reference(logits: torch.Tensor, token_ids: torch.Tensor):
    log_softmax = torch.log_softmax(logits.float(), dim=-1)
    log_probs = log_softmax.gather(-1, token_ids[..., None]).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return log_probs, entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 100])
def test_matches_log_softmax_gather_exactly(dtype, chunk_size):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 501, generator=gen) * 4).to(dtype)
    token_ids = torch.randint(0, 501, (3, 7), generator=gen)
    log_probs, entropy = log_probs_from_logits(logits, token_ids, with_entropy=True,
                                               chunk_size=chunk_size)
    want_lp, want_entropy = reference(logits, token_ids)
    assert log_probs.dtype == torch.float32 and log_probs.shape == (3, 7)
    assert torch.equal(log_probs, want_lp)
    torch.testing.assert_close(entropy, want_entropy, rtol=1e-5, atol=1e-5)
    only_lp, none = log_probs_from_logits(logits, token_ids, chunk_size=chunk_size)
    assert none is None and torch.equal(only_lp, want_lp)


def test_entropy_by_hand_and_banned_tokens():
    # Uniform over 4 tokens: log-prob log(1/4), entropy log 4. A -inf logit is a banned token.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -math.inf, math.log(2.0)]]])
    log_probs, entropy = log_probs_from_logits(logits, torch.tensor([[1, 3]]), with_entropy=True)
    assert log_probs[0, 0].item() == pytest.approx(math.log(0.25))
    assert entropy[0, 0].item() == pytest.approx(math.log(4.0))
    # p = (1/4, 1/4, 0, 1/2)
    assert log_probs[0, 1].item() == pytest.approx(math.log(0.5))
    assert entropy[0, 1].item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5)))


def test_gradients_match_autograd_reference():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(2, 5, 33, generator=gen) * 2
    base[0, 0, 4] = -math.inf  # a banned token must not produce NaN gradients
    token_ids = torch.randint(0, 33, (2, 5), generator=gen)
    token_ids[0, 0] = 0
    w_lp, w_h = torch.randn(2, 5, generator=gen), torch.randn(2, 5, generator=gen)

    logits = base.clone().requires_grad_()
    log_probs, entropy = log_probs_from_logits(logits, token_ids, with_entropy=True, chunk_size=3)
    ((log_probs * w_lp).sum() + (entropy * w_h).sum()).backward()

    # The reference bans the token with a huge finite negative logit instead (p is still exactly
    # 0), because autograd through 0 * log 0 gives NaN.
    ref_logits = base.nan_to_num(neginf=-1e4).requires_grad_()
    log_softmax = torch.log_softmax(ref_logits, -1)
    ref_lp = log_softmax.gather(-1, token_ids[..., None]).squeeze(-1)
    ref_h = -(log_softmax.exp() * log_softmax).sum(-1)
    ((ref_lp * w_lp).sum() + (ref_h * w_h).sum()).backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-6)


def test_sliced_model_output_and_other_layouts():
    # The usual call scores a slice of the model output (response positions only): not
    # contiguous, read in place, and the gradient must land in the right rows of the full tensor.
    gen = torch.Generator().manual_seed(3)
    full = torch.randn(3, 9, 40, generator=gen, requires_grad=True)
    token_ids = torch.randint(0, 40, (3, 5), generator=gen)
    sliced = full[:, 3:8]
    assert not sliced.is_contiguous()
    log_probs, entropy = log_probs_from_logits(sliced, token_ids, with_entropy=True, chunk_size=2)
    want_lp, want_h = reference(sliced, token_ids)
    assert torch.equal(log_probs, want_lp)
    torch.testing.assert_close(entropy, want_h)
    (log_probs.sum() + entropy.sum()).backward()
    grad = full.grad.clone()
    full.grad = None
    (want_lp.sum() + want_h.sum()).backward()
    torch.testing.assert_close(grad, full.grad, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(grad[:, :3]) == 0 and torch.count_nonzero(grad[:, 8:]) == 0
    # [N, V] rows and a transposed (column-major) layout.
    flat = torch.randn(40, 6, generator=gen).t()
    ids = torch.randint(0, 40, (6,), generator=gen)
    assert torch.equal(log_probs_from_logits(flat, ids, chunk_size=4)[0], reference(flat, ids)[0])


def test_gradcheck_float64_both_outputs():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    token_ids = torch.randint(0, 6, (2, 3), generator=gen)
    assert torch.autograd.gradcheck(
        lambda x: log_probs_from_logits(x, token_ids, with_entropy=True, chunk_size=4), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda x: log_probs_from_logits(x, token_ids, chunk_size=5)[0], (logits,)
    )


def test_half_precision_logits_get_half_precision_gradient():
    logits = torch.randn(2, 3, 10).to(torch.bfloat16).requires_grad_()
    log_probs, _ = log_probs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long))
    log_probs.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    # Row gradient of log p_0 is onehot(0) - p, which sums to 0.
    assert logits.grad.float().sum(-1).abs().max().item() < 1e-2


def test_no_grad_scoring_builds_no_graph():
    logits = torch.randn(2, 3, 10, requires_grad=True)
    with torch.no_grad():
        log_probs, entropy = log_probs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long),
                                                   with_entropy=True)
    assert not log_probs.requires_grad and not entropy.requires_grad


def test_bad_input_errors():
    logits = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match=r"token_ids has shape \(2, 4\)"):
        log_probs_from_logits(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 10\).*\[10, 10\]"):
        log_probs_from_logits(logits, torch.full((2, 3), 10))
    with pytest.raises(TypeError, match="integer"):
        log_probs_from_logits(logits, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        log_probs_from_logits(logits.long(), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        log_probs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long), chunk_size=0)


def test_chunked_jsd_matches_the_unchunked_formula_per_position():
    # The JSD kernel cuts rows as the log-prob kernel does; every chunking gives the per-position
    # values and gradients of the plain formula, 0 (value and gradient) outside the mask.
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)
    base[0, 2] = float("nan")  # padding may hold anything
    beta = 0.3
    s = torch.log_softmax(base.nan_to_num(), -1)
    t = torch.log_softmax(teacher, -1)
    m = torch.log(beta * t.exp() + (1 - beta) * s.exp())
    plain = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
    weights = torch.rand(2, 5, generator=gen, dtype=torch.float64)
    for chunk_size in (1, 2, 4, None):
        logits = base.clone().requires_grad_()
        values = generalized_jsd_from_logits(logits, teacher, mask, beta, chunk_size=chunk_size)
        torch.testing.assert_close(values, torch.where(mask, plain, 0.0))
        (values * weights).sum().backward()
        assert torch.equal(logits.grad[~mask], torch.zeros_like(logits.grad[~mask]))
    clean = base.nan_to_num().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: generalized_jsd_from_logits(x, teacher, mask, beta, top_k=4, chunk_size=3),
        (clean,),
    )
    with pytest.raises(ValueError, match="generalized_jsd_from_logits: chunk_size"):
        generalized_jsd_from_logits(clean, teacher, mask, beta, chunk_size=0)


def test_nan_logits_in_padding_are_harmless_and_on_response_tokens_are_caught():
    from sdar.losses import token_mean

    logits = torch.randn(2, 3, 10)
    logits[1, 2] = float("nan")  # e.g. a fully masked attention row at a padding position
    logits.requires_grad_()
    token_ids = torch.zeros(2, 3, dtype=torch.long)
    log_probs, entropy = log_probs_from_logits(logits, token_ids, with_entropy=True, chunk_size=2)
    assert math.isnan(log_probs[1, 2].item()) and torch.isfinite(log_probs[:, :2]).all()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    (token_mean(log_probs, mask) + token_mean(entropy, mask)).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.count_nonzero(logits.grad[1, 2]) == 0
    with pytest.raises(ValueError, match="values has 1 NaN/inf value"):
        token_mean(log_probs.detach(), torch.ones(2, 3))


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "logprob_memory", REPO / "benchmarks" / "logprob_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_memory_benchmark_writes_results_and_chunking_saves_memory(tmp_path, monkeypatch):
    output = tmp_path / "logprob_memory.json"
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the script imports benchmarks/_results
    benchmark = load_benchmark()
    assert benchmark.main(["--vocab", "32768", "--rows", "256", "--chunk-size", "16",
                           "--out", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["settings"]["vocabs"] == [32768] and report["settings"]["rows"] == 256
    assert len(report["results"]) == 4  # {no_grad, backward} x {without, with entropy}
    for row in report["results"]:
        # 256 x 32768 float32 is 32 MiB per full copy; the chunks are 2 MiB.
        assert row["reference_peak_bytes"] > 32 * 2**20, row
        assert row["ratio_excluding_logits_grad"] < 0.5, row

"""Response scoring and teacher scoring with the skill-prefix KV cache."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from sdar.models.loading import ModelConfig, load_policy
from sdar.models.scoring import score_responses, score_with_prefix

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return load_policy(ModelConfig(name="tiny-random"))


def rows(tokenizer):
    """Prompts of different lengths and responses of different lengths (one of length 1)."""
    texts = ["go to the fridge 1", "open it", "you are in the middle of a room. look around."]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    generator = torch.Generator().manual_seed(0)
    responses = [
        torch.randint(0, len(tokenizer), (n,), generator=generator).tolist() for n in (5, 1, 9)
    ]
    return prompts, responses


def naive_scores(model, prompt, response, temperature=1.0):
    """One unpadded row through the model; log-probs and entropies by hand."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double() / temperature
    predicting = logits[len(prompt) - 1 : len(prompt) + len(response) - 1]
    log_softmax = torch.log_softmax(predicting, -1)
    log_probs = log_softmax[torch.arange(len(response)), torch.tensor(response)]
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return log_probs.float(), entropy.float()


def test_score_responses_equals_per_row_loop(tiny):
    model, tokenizer = tiny
    prompts, responses = rows(tokenizer)
    with torch.no_grad():
        scored = score_responses(
            model, prompts, responses, with_entropy=True, pad_id=tokenizer.pad_token_id
        )
    assert scored.log_probs.shape == (3, 9) and scored.log_probs.dtype == torch.float32
    assert scored.response_mask.tolist() == [[k < n for k in range(9)] for n in (5, 1, 9)]
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        log_probs, entropy = naive_scores(model, prompt, response)
        n = len(response)
        torch.testing.assert_close(scored.log_probs[i, :n], log_probs, atol=2e-5, rtol=0)
        torch.testing.assert_close(scored.entropy[i, :n], entropy, atol=2e-5, rtol=0)
        assert torch.all(scored.log_probs[i, n:] == 0) and torch.all(scored.entropy[i, n:] == 0)


def test_left_padding_and_micro_batches_do_not_change_scores(tiny, monkeypatch):
    from sdar.models import scoring

    model, tokenizer = tiny
    prompts, responses = rows(tokenizer)
    pad = tokenizer.pad_token_id
    chunks = []
    real = scoring._score_micro_batch

    def spy(model, prompts, *args, **kwargs):
        chunks.append([len(p) for p in prompts])
        return real(model, prompts, *args, **kwargs)

    with torch.no_grad():
        batch = score_responses(model, prompts, responses, pad_id=pad)
        monkeypatch.setattr(scoring, "_score_micro_batch", spy)
        micro = score_responses(model, prompts, responses, pad_id=pad, micro_batch_size=2)
        alone = score_responses(model, prompts[1:2], responses[1:2], pad_id=pad)
    # Micro-batches take rows shortest prompt first; the scores come back in input order.
    lengths = sorted(len(p) for p in prompts)
    assert chunks[:2] == [lengths[:2], lengths[2:]] and [len(p) for p in prompts] != lengths
    torch.testing.assert_close(micro.log_probs, batch.log_probs, atol=1e-5, rtol=0)
    # Row 1 has the shortest prompt (most left padding) and the shortest response.
    torch.testing.assert_close(alone.log_probs[0], batch.log_probs[1, :1], atol=1e-5, rtol=0)


def test_temperature_and_returned_logits(tiny):
    model, tokenizer = tiny
    prompts, responses = rows(tokenizer)
    with torch.no_grad():
        scored = score_responses(
            model,
            prompts,
            responses,
            pad_id=tokenizer.pad_token_id,
            return_logits=True,
            temperature=0.5,
        )
    assert scored.logits.shape == (3, 9, len(tokenizer))
    log_probs, _ = naive_scores(model, prompts[2], responses[2], temperature=0.5)
    torch.testing.assert_close(scored.log_probs[2], log_probs, atol=2e-5, rtol=0)
    from_logits = torch.log_softmax(scored.logits[0, :5], -1)[
        torch.arange(5), torch.tensor(responses[0])
    ]
    torch.testing.assert_close(scored.log_probs[0, :5], from_logits, atol=1e-5, rtol=0)
    assert torch.all(scored.logits[1, 1:] == 0)


def test_gradient_flows_only_under_grad(tiny):
    model, tokenizer = tiny
    prompts, responses = rows(tokenizer)
    scored = score_responses(model, prompts, responses, pad_id=tokenizer.pad_token_id)
    assert scored.log_probs.requires_grad
    model.zero_grad()
    (scored.log_probs.sum() / scored.response_mask.sum()).backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()
    with torch.no_grad():
        assert not score_responses(model, prompts, responses, pad_id=0).log_probs.requires_grad


def test_prefix_cache_equals_no_cache(tiny):
    model, tokenizer = tiny
    prompts, responses = rows(tokenizer)
    prefix = tokenizer(
        "[Privileged Skill Information]\n- heat things in the microwave 1\n\n",
        add_special_tokens=False,
    )["input_ids"]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        cached = score_with_prefix(
            model, prefix, prompts, responses, pad_id=pad, with_entropy=True, micro_batch_size=2
        )
        plain = score_with_prefix(
            model, prefix, prompts, responses, pad_id=pad, with_entropy=True, use_cache=False
        )
        joined = score_responses(model, [prefix + p for p in prompts], responses, pad_id=pad)
    torch.testing.assert_close(cached.log_probs, plain.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.entropy, plain.entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.log_probs, joined.log_probs, atol=1e-5, rtol=0)
    assert torch.equal(cached.response_mask, joined.response_mask)
    # The prefix really is seen: scores differ from the prompt-only ones.
    without = score_responses(model, prompts, responses, pad_id=pad)
    assert (without.log_probs - cached.log_probs).abs().max() > 1e-4


def shared_start_rows(tokenizer):
    """Prompts that start with the same 40+ tokens (like agent prompts' chat header), then differ."""
    header = tokenizer(
        "system: you are an agent in a household. you move between receptacles and act on "
        "objects by typing text commands, one admissible action per turn, inside action tags. "
        "task: put a clean mug in the coffee machine.",
        add_special_tokens=False,
    )["input_ids"]
    assert len(header) >= 40
    prompts, responses = rows(tokenizer)
    return [header + p for p in prompts], responses, len(header)


def test_shared_prompt_start_is_encoded_once(tiny, monkeypatch):
    from sdar.models import scoring

    model, tokenizer = tiny
    prompts, responses, shared = shared_start_rows(tokenizer)
    pad = tokenizer.pad_token_id
    cached = []
    real = scoring.compute_prefix_cache

    def spy(model, prefix_ids):
        cached.append(len(prefix_ids))
        return real(model, prefix_ids)

    monkeypatch.setattr(scoring, "compute_prefix_cache", spy)
    with torch.no_grad():
        scored = score_responses(
            model, prompts, responses, pad_id=pad, with_entropy=True, micro_batch_size=2
        )
    assert cached == [shared]  # once for all micro-batches, the whole common start
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        log_probs, entropy = naive_scores(model, prompt, response)
        n = len(response)
        torch.testing.assert_close(scored.log_probs[i, :n], log_probs, atol=2e-5, rtol=0)
        torch.testing.assert_close(scored.entropy[i, :n], entropy, atol=2e-5, rtol=0)
    # Under grad (the update) the gradient flows through the cache into the common start: the
    # same gradient as encoding every row whole.
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in params]

    graded = score_responses(model, prompts, responses, pad_id=pad, micro_batch_size=2)
    assert cached == [shared] * 2 and graded.log_probs.requires_grad
    torch.testing.assert_close(graded.log_probs.detach(), scored.log_probs, atol=2e-5, rtol=0)
    via_cache = gradient(graded.log_probs.sum())
    whole = gradient(sum(
        score_responses(model, [prompt], [response], pad_id=pad).log_probs.sum()
        for prompt, response in zip(prompts, responses)
    ))
    assert cached == [shared] * 2  # one row per call: nothing shared
    assert any(g.abs().sum() > 0 for g in whole)
    for a, b in zip(via_cache, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    model.zero_grad()
    # The teacher caches the skill prefix and the prompts' common start together.
    prefix = tokenizer("[Privileged Skill Information]\n- rinse it in the sink\n\n",
                       add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        teacher = score_with_prefix(model, prefix, prompts, responses, pad_id=pad, micro_batch_size=2)
        plain = score_with_prefix(model, prefix, prompts, responses, pad_id=pad, use_cache=False)
    assert cached == [shared] * 2 + [len(prefix) + shared]
    torch.testing.assert_close(teacher.log_probs, plain.log_probs, atol=2e-5, rtol=0)


def test_bad_input_is_rejected_with_a_reason(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses(model, [[1], [2]], [[3]], pad_id=0)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        score_responses(model, [[]], [[3]], pad_id=0)
    with pytest.raises(ValueError, match="micro_batch_size"):
        score_responses(model, [[1]], [[3]], pad_id=0, micro_batch_size=0)


@pytest.mark.slow
def test_prefix_cache_equals_no_cache_on_smollm2():
    model, tokenizer = load_policy(ModelConfig(name="smollm2-135m"))
    skills = (REPO / "src/sdar/skills").glob("*/general.md")
    skill_text = "\n".join(p.read_text() for p in sorted(skills))[:2000] or "Open before you take."
    prefix = tokenizer(
        "[Privileged Skill Information]\n" + skill_text + "\n\n", add_special_tokens=False
    )["input_ids"]
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for c in ["You are in a kitchen. Your task is to: heat some egg.", "Find a mug."]
    ]
    responses = [
        tokenizer(
            "<think>go to microwave</think><action>go to microwave 1</action>",
            add_special_tokens=False,
        )["input_ids"],
        [tokenizer.eos_token_id],
    ]
    with torch.no_grad():
        cached = score_with_prefix(
            model, prefix, prompts, responses, pad_id=tokenizer.pad_token_id, with_entropy=True
        )
        plain = score_with_prefix(
            model,
            prefix,
            prompts,
            responses,
            pad_id=tokenizer.pad_token_id,
            with_entropy=True,
            use_cache=False,
        )
    torch.testing.assert_close(cached.log_probs, plain.log_probs, atol=1e-4, rtol=0)
    torch.testing.assert_close(cached.entropy, plain.entropy, atol=1e-4, rtol=0)


def test_prefix_cache_benchmark_smoke(tmp_path):
    script = runpy.run_path(str(REPO / "benchmarks/prefix_cache.py"), run_name="benchmark")
    output = tmp_path / "prefix_cache.json"
    assert script["main"](["--smoke", "--out", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["max_abs_diff"] < 1e-4
    assert result["with_cache_s"] > 0 and result["without_cache_s"] > 0
    assert result["speedup"] == pytest.approx(result["without_cache_s"] / result["with_cache_s"])


def test_prefix_is_not_lost_under_gradient_checkpointing():
    model, tokenizer = load_policy(ModelConfig(name="tiny-random", gradient_checkpointing=True))
    prompts, responses = rows(tokenizer)
    prefix = tokenizer("[Privileged Skill Information]\nlook first\n\n", add_special_tokens=False)[
        "input_ids"
    ]
    with torch.no_grad():
        expected = score_with_prefix(model, prefix, prompts, responses, pad_id=0)
    model.train()  # checkpointed layers now drop any KV cache passed to them under grad
    with_grad = score_with_prefix(model, prefix, prompts, responses, pad_id=0)
    assert with_grad.log_probs.requires_grad
    torch.testing.assert_close(with_grad.log_probs.detach(), expected.log_probs, atol=1e-5, rtol=0)

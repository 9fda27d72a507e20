"""Batched sampling: reproducibility, stop tokens, the sampled distribution, and its contract."""

from __future__ import annotations

import math

import pytest
import torch

from sdar.models.generation import (
    MIN_SHARED_PREFIX,
    GenerationConfig,
    cached_start_length,
    default_stop_token_ids,
    generate,
    sample_next_tokens,
    shared_prefix_length,
)
from sdar.models.loading import ModelConfig, load_policy
from sdar.models.scoring import score_responses


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_policy(ModelConfig(name="tiny-random"))
    return model, tokenizer


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


PROMPTS = [
    "go to the fridge",
    "you see a cabinet 1, a drawer 2 and a sinkbasin 1. what next?",
    "hi",
]


def test_same_seed_same_responses_other_seed_differs(tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=12)
    first = generate(model, tokenizer, prompts, config, generator=torch.Generator().manual_seed(7))
    again = generate(model, tokenizer, prompts, config, generator=torch.Generator().manual_seed(7))
    other = generate(model, tokenizer, prompts, config, generator=torch.Generator().manual_seed(8))
    assert first == again
    assert first != other
    assert [len(r) for r in first] == [12, 12, 12]  # the random tiny model never says EOS
    assert all(isinstance(t, int) for r in first for t in r)


def test_stop_token_ends_only_its_row_and_is_kept(tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    free = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=10, greedy=True))
    # Make the 4th token greedy decoding produces for row 0 a stop token: row 0 must end there.
    stop = free[0][3]
    stopped = generate(
        model,
        tokenizer,
        prompts,
        GenerationConfig(max_new_tokens=10, greedy=True, stop_token_ids=(stop,)),
    )
    for free_row, row in zip(free, stopped):
        if stop in free_row:
            cut = free_row.index(stop) + 1
            assert row == free_row[:cut]  # stop token kept as the last token, nothing after it
        else:
            assert row == free_row  # rows that never hit the stop are unaffected by the pruning
    assert stopped[0] == free[0][: free[0].index(stop) + 1]
    assert len(stopped[0]) <= 4


def test_default_stop_tokens_are_tokenizer_and_model_eos(tiny):
    model, tokenizer = tiny
    assert default_stop_token_ids(model, tokenizer) == (tokenizer.eos_token_id,)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [7, tokenizer.eos_token_id]
    try:
        assert default_stop_token_ids(model, tokenizer) == tuple(
            sorted({7, tokenizer.eos_token_id})
        )
    finally:
        model.generation_config.eos_token_id = saved


@pytest.mark.slow
def test_smollm2_answers_and_ends_with_eos():
    model, tokenizer = load_policy(ModelConfig(name="smollm2-135m"))
    prompts = [
        chat_ids(tokenizer, "What is the capital of France? Answer in one word."),
        chat_ids(tokenizer, "Say hello."),
    ]
    responses = generate(
        model, tokenizer, prompts, GenerationConfig(max_new_tokens=40, greedy=True)
    )
    eos = tokenizer.eos_token_id
    for response in responses:
        assert response[-1] == eos and eos not in response[:-1]  # EOS kept, once, at the end
    assert "Paris" in tokenizer.decode(responses[0])


def test_greedy_picks_the_scored_argmax(tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    responses = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=6, greedy=True))
    with torch.no_grad():
        scored = score_responses(
            model, prompts, responses, pad_id=tokenizer.pad_token_id, return_logits=True
        )
    best = torch.log_softmax(scored.logits, -1).max(-1).values
    torch.testing.assert_close(scored.log_probs, best, rtol=0, atol=1e-5)


def test_batch_size_progress_and_mode_restored(tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS] * 2
    seen: list[int] = []
    model.train()
    try:
        out = generate(
            model,
            tokenizer,
            prompts,
            GenerationConfig(max_new_tokens=3, greedy=True),
            batch_size=4,
            progress=seen.append,
        )
        assert model.training
    finally:
        model.eval()
    assert seen == [4, 2]
    assert out[:3] == out[3:]  # same prompt, greedy: same answer whichever batch it sat in


def test_sampling_follows_temperature_top_k_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(40000, 1)
    draws = sample_next_tokens(
        logits, GenerationConfig(temperature=2.0), torch.Generator().manual_seed(0)
    )
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = torch.softmax(torch.tensor([1.0, 0.5, 0.0, -0.5]), -1)  # logits / 2
    assert torch.allclose(freq, expected, atol=0.01)

    draws = sample_next_tokens(logits, GenerationConfig(top_k=2), torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[2] == 0 and freq[3] == 0
    assert abs(freq[0] - 1 / (1 + math.exp(-1))) < 0.01  # e^2 / (e^2 + e^1)

    # softmax([2,1,0,-1]) = [0.644, 0.237, 0.087, 0.032]: top_p 0.8 keeps the first two tokens.
    draws = sample_next_tokens(
        logits, GenerationConfig(top_p=0.8), torch.Generator().manual_seed(2)
    )
    assert set(draws.tolist()) == {0, 1}
    draws = sample_next_tokens(
        logits, GenerationConfig(top_p=0.5), torch.Generator().manual_seed(3)
    )
    assert set(draws.tolist()) == {0}

    greedy = sample_next_tokens(torch.tensor([[0.0, 3.0, 1.0]]), GenerationConfig(greedy=True))
    assert greedy.tolist() == [1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "greedy=True"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"stop_token_ids": ()}, "stop_token_ids"),
    ],
)
def test_generation_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**kwargs)


def test_empty_prompt_is_rejected(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, tokenizer, [[1, 2], []], GenerationConfig(max_new_tokens=2))
    assert generate(model, tokenizer, [], GenerationConfig(max_new_tokens=2)) == []


@pytest.mark.parametrize("prefill", ["batch", "rows"])
def test_identical_prompts_are_encoded_once_and_sampled_independently(tiny, prefill):
    model, tokenizer = tiny
    a, b = (chat_ids(tokenizer, p) for p in PROMPTS[:2])
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    try:
        greedy = GenerationConfig(max_new_tokens=8, greedy=True)
        grouped = generate(model, tokenizer, [a, a, b, a], greedy, prefill=prefill)
        prefill_calls = shapes[: 1 if prefill == "batch" else 2]
        shapes.clear()
        distinct = generate(model, tokenizer, [a, b], greedy, prefill=prefill)
        sampled = generate(model, tokenizer, [a] * 4, GenerationConfig(max_new_tokens=8),
                           generator=torch.Generator().manual_seed(0), prefill=prefill)
    finally:
        hook.remove()
    # two distinct prompts: two prefill rows, not four (one padded call, or one call per prompt)
    if prefill == "batch":
        assert prefill_calls == [(2, max(len(a), len(b)))]
    else:
        assert prefill_calls == [(1, len(a)), (1, len(b))]
    # every copy continues from its prompt's cache row: greedy copies agree with the distinct run
    assert grouped == [distinct[0], distinct[0], distinct[1], distinct[0]]
    assert len({tuple(r) for r in sampled}) > 1, "the copies sample independently"


@pytest.mark.parametrize("prefill", ["batch", "rows"])
def test_shared_prompt_prefix_is_encoded_once_with_the_same_responses(tiny, prefill):
    model, tokenizer = tiny
    instructions = chat_ids(tokenizer, "You are in a house. " * 12)  # > MIN_SHARED_PREFIX tokens
    tails = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in
             ("go to the fridge", "open drawer 2 and look", "hi")]
    prompts = [instructions + tail for tail in tails]
    assert shared_prefix_length(prompts) == len(instructions) >= MIN_SHARED_PREFIX
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    greedy = GenerationConfig(max_new_tokens=8, greedy=True)
    try:
        batched = generate(model, tokenizer, prompts, greedy, prefill=prefill)
    finally:
        hook.remove()
    # the prefix once (one row), then the three prompts' own tokens: left-padded in one call, or
    # one call per prompt
    assert shapes[0] == (1, len(instructions))
    if prefill == "batch":
        assert shapes[1] == (3, max(len(t) for t in tails))
    else:
        assert shapes[1:4] == [(1, len(t)) for t in tails]
    alone = [generate(model, tokenizer, [p], greedy)[0] for p in prompts]
    assert batched == alone
    # with a GRPO group's copies too: distinct prompts share the prefix, copies share a row
    grouped = generate(model, tokenizer, [prompts[0], prompts[0], prompts[1], prompts[2]], greedy,
                       prefill=prefill)
    assert grouped == [alone[0], alone[0], alone[1], alone[2]]
    # and the sampled tokens are scored as the model's argmax of the whole prompt
    with torch.no_grad():
        scored = score_responses(
            model, prompts, batched, pad_id=tokenizer.pad_token_id, return_logits=True
        )
    best = torch.log_softmax(scored.logits, -1).max(-1).values
    torch.testing.assert_close(scored.log_probs, best, rtol=0, atol=1e-5)


def test_row_prefill_builds_the_batch_prefill_cache_and_samples_the_same(tiny, monkeypatch):
    """Encoding prompts one by one and merging their caches gives the padded batch's cache (the
    padding slots aside), hence the same responses, sampled or greedy, with or without a shared
    prefix; a model whose cache cannot be merged falls back to the padded batch."""
    import sdar.models.generation as generation

    model, tokenizer = tiny
    instructions = chat_ids(tokenizer, "You are in a house. " * 12)
    tails = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in
             ("go to the fridge and open it", "look", "take the apple from the table 2")]
    for prompts in ([instructions + t for t in tails], [chat_ids(tokenizer, p) for p in PROMPTS]):
        shared = generation.cached_start_length(prompts)
        rest = [p[shared:] for p in prompts]
        width = max(len(r) for r in rest)
        with torch.inference_mode():
            prefix = None
            if shared:
                out = model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True)
                prefix = generation.returned_cache(out)
            cache, logits = generation._prefill_rows(model, prompts, shared, width, prefix)
            ids, mask = generation._left_padded(rest, width, tokenizer.pad_token_id)
            mask = torch.cat([mask.new_ones((len(prompts), shared)), mask], dim=1)
            kwargs = {}
            if shared:
                prefix.batch_repeat_interleave(len(prompts))  # the batched prefill's layout
                kwargs[generation.cache_argument(model)] = prefix
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1,
                        position_ids=(mask[:, shared:].cumsum(-1) - 1).clamp(min=0) + shared,
                        **kwargs)
        torch.testing.assert_close(logits, out.logits[:, -1, :], atol=1e-5, rtol=1e-4)
        real = mask.bool()
        for (k_rows, v_rows), (k_batch, v_batch) in zip(
            generation.cache_layers(cache), generation.cache_layers(generation.returned_cache(out))
        ):
            assert k_rows.shape == k_batch.shape
            for row in range(len(prompts)):
                torch.testing.assert_close(k_rows[row][:, real[row]], k_batch[row][:, real[row]],
                                           atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(v_rows[row][:, real[row]], v_batch[row][:, real[row]],
                                           atol=1e-5, rtol=1e-4)
            assert not k_rows.transpose(1, 2)[~real].any(), "padding slots hold zeros"
        for config in (GenerationConfig(max_new_tokens=10, greedy=True),
                       GenerationConfig(max_new_tokens=10, temperature=1.0)):
            rows = generate(model, tokenizer, prompts, config, prefill="rows",
                            generator=torch.Generator().manual_seed(3))
            batch = generate(model, tokenizer, prompts, config, prefill="batch",
                             generator=torch.Generator().manual_seed(3))
            assert rows == batch

    def unmergeable(cache):
        raise TypeError("the cache holds sliding-window attention layers")

    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    expected = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=6, greedy=True),
                        prefill="batch")
    monkeypatch.setattr(generation, "cache_layers", unmergeable)
    assert generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=6, greedy=True),
                    prefill="rows") == expected


def test_prefill_mode_is_checked(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="prefill must be one of"):
        generate(model, tokenizer, [[1, 2]], GenerationConfig(max_new_tokens=2), prefill="padded")


def test_shared_prefix_length_leaves_every_prompt_a_token():
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 5]]) == 1
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([[1, 2], [3, 4]]) == 0
    # worth an extra forward call only from MIN_SHARED_PREFIX tokens on, and for several prompts
    start = list(range(MIN_SHARED_PREFIX))
    assert cached_start_length([start + [1], start + [2]]) == MIN_SHARED_PREFIX
    assert cached_start_length([start[:-1] + [1], start[:-1] + [2]]) == 0
    assert cached_start_length([start + [1]]) == 0

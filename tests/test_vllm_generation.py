"""The vLLM rollout engine: its sampling settings and weight export (CPU), and, where a CUDA GPU
and vllm are present, its outputs against the transformers generation path."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from sdar.models.generation import GenerationConfig, generate
from sdar.models.loading import ModelConfig, load_policy
from sdar.models.scoring import score_responses
from sdar.models.vllm_generation import VllmGenerator, sampling_kwargs, trained_weights

HAS_VLLM_GPU = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
requires_vllm_gpu = pytest.mark.skipif(
    not HAS_VLLM_GPU,
    reason="needs a CUDA GPU and vllm (`pip install 'sdar[vllm]'`); the vLLM engine is GPU-only",
)


# ---- CPU: settings and weights ---------------------------------------------------------------------
def test_sampling_kwargs_reproduce_the_generation_config():
    sampled = sampling_kwargs(GenerationConfig(max_new_tokens=7, temperature=0.7, top_p=0.9,
                                               top_k=20), stop_token_ids=(2, 5), seed=11)
    assert sampled == {"n": 1, "max_tokens": 7, "stop_token_ids": [2, 5], "ignore_eos": True,
                       "skip_special_tokens": False, "detokenize": False, "seed": 11,
                       "temperature": 0.7, "top_p": 0.9, "top_k": 20}
    greedy = sampling_kwargs(GenerationConfig(greedy=True, top_k=5), stop_token_ids=[3], seed=None)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)
    assert sampling_kwargs(GenerationConfig(), [3], 0)["top_k"] == -1  # 0 = off in both


@pytest.fixture(scope="module")
def tiny():
    return load_policy(ModelConfig(name="tiny-random"))


def test_full_weights_are_the_state_dict(tiny):
    model, _ = tiny
    exported = dict(trained_weights(model))
    state = model.state_dict()
    assert exported.keys() == state.keys()
    assert all(torch.equal(exported[k], state[k]) for k in state)
    assert not any(t.requires_grad for t in exported.values())


def test_lora_weights_equal_the_merged_model_and_leave_the_policy_untouched(tiny):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny[0]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exported = dict(trained_weights(model))
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert exported.keys() == merged.keys()
    for key in merged:
        torch.testing.assert_close(exported[key], merged[key], msg=key)
    q = "model.layers.0.self_attn.q_proj.weight"
    base_q = before[f"base_model.model.{q}".replace(".weight", ".base_layer.weight")]
    assert not torch.equal(exported[q], base_q)  # the adapter's delta is in it
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_engine_refuses_to_start_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="rollout.engine=transformers"):
        VllmGenerator("unused")


# ---- GPU: against the transformers path ------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny):
    if not HAS_VLLM_GPU:
        pytest.skip("needs a CUDA GPU and vllm (`pip install 'sdar[vllm]'`)")
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("vllm") / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return VllmGenerator(str(folder), dtype="float32", gpu_memory_utilization=0.2,
                         max_model_len=512, enforce_eager=True)


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


PROMPTS = ["go to the fridge", "you see a cabinet 1 and a drawer 2. what next?", "hi"]


@requires_vllm_gpu
@pytest.mark.slow
def test_greedy_outputs_equal_the_transformers_path(engine, tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=12, greedy=True)
    assert engine.generate(model, tokenizer, prompts, config) == generate(
        model, tokenizer, prompts, config)


@requires_vllm_gpu
@pytest.mark.slow
def test_sampled_responses_are_seeded_and_scored_finite_by_the_training_model(engine, tiny):
    model, tokenizer = tiny
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS] * 2
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=50)
    first = engine.generate(model, tokenizer, prompts, config, torch.Generator().manual_seed(3))
    again = engine.generate(model, tokenizer, prompts, config, torch.Generator().manual_seed(3),
                            batch_size=2)
    assert first == again
    assert [len(r) for r in first] == [10] * len(prompts)
    scored = score_responses(model, prompts, first, pad_id=tokenizer.pad_token_id)
    for row, response in enumerate(first):
        values = scored.log_probs[row, : len(response)]
        assert torch.isfinite(values).all() and (values <= 0).all()


@requires_vllm_gpu
@pytest.mark.slow
def test_sync_weights_makes_the_engine_follow_the_updated_model(engine, tiny):
    model, tokenizer = tiny
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in updated.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1))
                           * 0.05)
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=12, greedy=True)
    assert engine.sync_weights(updated) == len(updated.state_dict())
    assert engine.generate(updated, tokenizer, prompts, config) == generate(
        updated, tokenizer, prompts, config)
    engine.sync_weights(model)
    assert engine.generate(model, tokenizer, prompts, config) == generate(
        model, tokenizer, prompts, config)

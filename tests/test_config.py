"""Config loading: YAML + overrides + method presets, and errors that name the bad key."""

import typing
from pathlib import Path

import pytest

from sdar.cli import build_parser, parse_arguments
from sdar.envs import ENVIRONMENTS
from sdar.methods import GATES, METHODS, LossConfig
from sdar.trainer.cli import load_sft_config
from sdar.trainer.config import ConfigError, SFTConfig, TrainConfig, load_config, save_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "env:\n  name: toy\nrollout:\n  group_size: 4\noptim:\n  lr: 1.0e-5\n")
    cfg = load_config(path, ["rollout.group_size=2", "env.options={max_steps: 3}", "model.lora=null",
                             "optim.weight_decay=1e-3"])
    assert cfg.optim.weight_decay == 1e-3  # YAML reads 1e-3 as a string; float fields accept it
    assert cfg.env.name == "toy"
    assert cfg.rollout.group_size == 2
    assert cfg.optim.lr == 1e-5
    assert cfg.env.options == {"max_steps": 3}
    assert cfg.model.lora is None


def test_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, "method: grpo\niterations: 3\n"))
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_method_preset_applies_switches(tmp_path):
    grpo = load_config(write(tmp_path, "method: grpo\n"))
    assert grpo.loss.method == "grpo"
    naive = load_config(write(tmp_path, "method: grpo_opsd\n"))
    assert naive.loss.beta == 0.0  # released naive GRPO+OPSD is SDAR with beta = 0
    sdar = load_config(write(tmp_path, "method: sdar\nloss:\n  beta: 2.0\n"))
    assert sdar.loss.beta == 2.0  # the file's own loss entries win over the preset


@pytest.mark.parametrize("text, needle", [
    ("optim:\n  learning_rate: 1.0\n", "optim.learning_rate"),
    ("env:\n  prompt_mode: chatty\n", "['think', 'action_only']"),
    ("rollout:\n  group_size: two\n", "rollout.group_size must be an integer"),
    ("rollout:\n  group_size: 0\n", "rollout.group_size must be >= 1"),
    ("method: ppo_magic\n", "sdar"),
    ("teacher:\n  layout: middle\n", "teacher.layout"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_values_fail_with_the_key_named(tmp_path, text, needle):
    with pytest.raises((ConfigError, ValueError)) as err:
        load_config(write(tmp_path, text))
    assert needle in str(err.value)


@pytest.fixture
def no_loading(monkeypatch):
    """Building any torch module (so loading any model) fails the test: a bad config must be
    refused by ``load_config`` before a model could be loaded."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the config was checked")
    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)


def test_the_no_loading_guard_catches_a_model_load(no_loading):
    from sdar.models.loading import ModelConfig, load_policy

    with pytest.raises(AssertionError, match="before the config was checked"):
        load_policy(ModelConfig(name="tiny-random"))


def listed(names) -> str:
    return "[" + ", ".join(repr(name) for name in names) + "]"


# one case per kind of bad input: (overrides, the whole one-line error)
BAD_INPUTS = {
    "unknown key": (["sft.epoch=3"], ("unknown key(s) ['sft.epoch']; allowed in sft: "
                                      "['batch_size', 'epochs', 'lr', 'max_demos']")),
    "wrong type": (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
    "literal": (["teacher.routing=random"],
                "teacher.routing must be one of ['task_type', 'released'], got 'random'"),
    "method": (["method=ppo"],
               f"method must be one of {listed([*METHODS, 'vanilla', 'skill_prompt'])}, got 'ppo'"),
    "loss.method": (["loss.method=ppo"], f"loss.method must be one of {listed(METHODS)}, got 'ppo'"),
    "gate": (["loss.gate=max"], f"loss.gate must be one of {listed(GATES)}, got 'max'"),
    "env name": (["env.name=toys"], f"env.name must be one of {sorted(ENVIRONMENTS)}, got 'toys'"),
    "env option": (["env.name=toy", "env.options={max_receptacles: 3}"],
                   ("env.options: unknown key(s) ['max_receptacles'] for env.name=toy; "
                    "allowed: ['max_steps', 'split']")),
    "count": (["rollout.group_size=0"], "rollout.group_size must be >= 1, got 0"),
    "open bound": (["optim.lr=0"], "optim.lr must be > 0, got 0.0"),
    "interval": (["optim.warmup_ratio=1"], "optim.warmup_ratio must be in [0, 1), got 1.0"),
    "loss range": (["loss.clip_low=1.5"], "loss.clip_low must be in [0, 1), got 1.5"),
    "model range": (["model.lora={dropout: 1.0}"], "model.lora.dropout must be in [0, 1), got 1.0"),
    "generation range": (["rollout.generation.top_p=0"],
                         "rollout.generation: top_p must be in (0, 1], got 0.0; 1 = off"),
    "sft range": (["sft.lr=-1e-4"], "sft.lr must be > 0, got -0.0001"),
    "not finite": (["sft.lr=.inf"], "sft.lr must be finite, got inf"),
    "method preset": (["method=grpo_opsd", "loss.beta=5"], "loss.method: 'grpo_opsd' fixes beta=0"),
    "combination": (["distributed.strategy=fsdp", "rollout.engine=vllm"],
                    "distributed.strategy=fsdp does not support rollout.engine=vllm"),
    "filter groups of one": (["rollout.filter_groups=true", "rollout.group_size=1"],
                             ("rollout.filter_groups drops groups whose episode returns are all equal, which a "
                              "group of rollout.group_size=1 always is; use group_size >= 2")),
    "rollout batches": (["rollout.max_rollout_batches=0"], "rollout.max_rollout_batches must be >= 1, got 0"),
    "greedy rollouts scored at temperature": (["rollout.score_at_temperature=true", "rollout.generation.greedy=true"],
                                              ("rollout.score_at_temperature scores at the rollout's sampling "
                                               "temperature, which greedy rollouts")),
}


@pytest.mark.parametrize("overrides, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_each_bad_input_is_one_line_at_load_time(no_loading, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text  # the whole message, or its start for the long ones


def test_the_method_and_gate_types_are_the_registries():
    hints = typing.get_type_hints(LossConfig)
    assert typing.get_args(hints["method"]) == tuple(METHODS)
    assert typing.get_args(hints["gate"]) == GATES


def test_env_options_are_checked_against_the_factory_of_a_registered_env(no_loading, monkeypatch):
    # a name registered after import is known to the loader, with its factory's parameters
    monkeypatch.setitem(ENVIRONMENTS, "toy_copy", ENVIRONMENTS["toy"])
    config = load_config(None, ["env.name=toy_copy", "env.options={max_steps: 3}"])
    assert config.env.options == {"max_steps": 3}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['steps'\] for env.name=toy_copy"):
        load_config(None, ["env.name=toy_copy", "env.options={steps: 3}"])
    # a registered target that does not import is a one-line config error, not a traceback
    monkeypatch.setitem(ENVIRONMENTS, "broken", "sdar_no_such_module:make")
    with pytest.raises(ConfigError, match="env.name=broken: its factory cannot be imported: No module"):
        load_config(None, ["env.name=broken"])
    monkeypatch.setitem(ENVIRONMENTS, "typo", "sdar.envs.toy:no_such_factory")
    with pytest.raises(ConfigError, match="env.name=typo: its factory cannot be imported"):
        load_config(None, ["env.name=typo"])


def test_unknown_key_lists_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "itterations: 5\n"))
    assert "itterations" in str(err.value) and "iterations" in str(err.value)


def test_bad_override_form():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["optim.lr"])


def test_defaults_are_the_released_alfworld_settings():
    cfg = TrainConfig()
    assert (cfg.rollout.tasks_per_iteration, cfg.rollout.group_size) == (16, 8)
    assert cfg.optim.lr == 1e-6 and cfg.optim.mini_batch_size == 256
    assert cfg.eval.temperature == 0.4 and cfg.env.invalid_action_penalty == 0.1


def test_evaluation_only_presets(tmp_path):
    vanilla = load_config(write(tmp_path, "method: vanilla\n"))
    assert vanilla.iterations == 0 and not vanilla.eval.with_skills
    skill_prompt = load_config(write(tmp_path, "method: skill_prompt\n"))
    assert skill_prompt.iterations == 0 and skill_prompt.eval.with_skills


PAPER = Path(__file__).resolve().parent.parent / "configs" / "paper"


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.name)
def test_paper_configs_load_and_use_every_released_switch(path):
    config = load_config(path)
    assert config.env.action_rule == "released"
    assert config.optim.loss_aggregation == "released" and config.optim.warmup == "released"
    assert config.rollout.score_at_temperature
    assert (config.teacher.routing, config.teacher.student_layout, config.teacher.on_overflow) == (
        "released", "user", "truncate_left")
    assert config.teacher.max_prompt_tokens == config.rollout.max_prompt_tokens
    # the released runs' per-GPU micro-batch: part of the loss under released aggregation
    released_micro = {"alfworld": 32, "webshop": 8, "search": 16}[config.env.name]
    assert config.optim.micro_batch_size == released_micro
    qwen3 = path.stem.endswith("_qwen3")
    assert (config.model.name == "Qwen/Qwen3-1.7B") == qwen3
    assert config.model.chat_template_kwargs == ({"enable_thinking": False} if qwen3 else {})


def test_qwen3_paper_configs_exist_for_alfworld_and_webshop():
    assert {p.name for p in PAPER.glob("*_qwen3.yaml")} >= {"alfworld_qwen3.yaml", "webshop_qwen3.yaml"}


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path, no_loading):
    load_config(path)


# ---- sdar sft: its settings are the sft section; the command's flags override it ---------------
def test_sft_section_defaults_and_overrides(tmp_path):
    assert TrainConfig().sft == SFTConfig(epochs=2, lr=1e-4, batch_size=8, max_demos=None)
    path = write(tmp_path, "sft:\n  epochs: 5\n  lr: 3.0e-4\n")
    config = load_config(path, ["sft.batch_size=4"])
    assert config.sft == SFTConfig(epochs=5, lr=3e-4, batch_size=4, max_demos=None)


def sft_args(*argv: str):
    return parse_arguments(build_parser(), ["sft", "--demos", "d.jsonl", "--output-dir", "out", *argv])


def test_sft_flags_override_the_file_and_the_overrides(tmp_path):
    path = str(write(tmp_path, "sft:\n  epochs: 5\n  lr: 3.0e-4\n  batch_size: 4\n"))
    # no flag: the config file's values (and the documented defaults for what it leaves out)
    assert load_sft_config(sft_args("--config", path)).sft == SFTConfig(5, 3e-4, 4, None)
    assert load_sft_config(sft_args("--config", str(write(tmp_path, "{}")))).sft == SFTConfig()
    flags = ("--epochs", "3", "--lr", "1e-3", "--batch-size", "7", "--max-demos", "20")
    config = load_sft_config(sft_args("--config", path, "sft.epochs=9", "sft.max_demos=1", *flags))
    assert config.sft == SFTConfig(epochs=3, lr=1e-3, batch_size=7, max_demos=20)
    assert load_sft_config(sft_args("--config", path, "sft.epochs=9")).sft.epochs == 9


def test_a_bad_sft_flag_is_refused_at_load_time(tmp_path, no_loading):
    path = str(write(tmp_path, "{}"))
    with pytest.raises(ConfigError, match=r"^sft.epochs must be >= 1, got 0$"):
        load_sft_config(sft_args("--config", path, "--epochs", "0"))
    with pytest.raises(ConfigError, match=r"^sft.max_demos must be >= 1, got 0$"):
        load_sft_config(sft_args("--config", path, "--max-demos", "0"))


def documented_table_rows():
    """The rows of docs/training.md's key table: (backticked names of the key cell, whole row)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    rows = []
    for line in text.splitlines():
        if line.startswith("| `") or line.startswith("| **"):
            key_cell = line.split("|")[1]
            rows.append((set(re.findall(r"`([^`]+)`", key_cell)), line))
    return rows


def config_keys(cls=TrainConfig, prefix=""):
    """Every settable key of the config tree as a dotted name; nested config sections recurse,
    except sub-configs documented as one row (``model.lora``) or one row of sub-keys
    (``rollout.generation.*``, returned as ``rollout.generation.<field>``)."""
    import dataclasses

    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and name != "rollout.generation":
            keys += config_keys(kind, name + ".")
        elif name == "rollout.generation":
            keys += [f"{name}.{g.name}" for g in dataclasses.fields(kind)]
        else:
            keys.append(name)
    return keys


def test_every_config_key_is_in_the_training_docs_table():
    rows = documented_table_rows()
    missing = []
    for key in config_keys():
        section, _, last = key.rpartition(".")
        if section == "rollout.generation":
            found = any("rollout.generation.*" in names and last in row for names, row in rows)
        else:
            # A row may name a key in full (`optim.lr`) or, after the first, by its last part
            # (`optim.lr`, `weight_decay`, `grad_clip`).
            found = any(key in names or (last in names and any(n.startswith(section + ".")
                                                               for n in names))
                        for names, row in rows)
        if not found:
            missing.append(key)
    assert missing == [], f"keys missing from docs/training.md's table: {missing}"
    assert "loss.sdar_lambda" in config_keys() and "rollout.generation.greedy" in config_keys()

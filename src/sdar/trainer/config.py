"""Training configuration: one validated dataclass tree, loaded from YAML, overridable by ``key=value``.

Every field carries its default and, where it comes from the paper's released settings, a pointer
to ``docs/algorithm.md``. ``load_config(path, overrides)`` is the only way the CLI builds a config:
an unknown key or a bad value fails at load time, before any model or environment is loaded, with
a one-line message naming the key, the bad value and what is allowed.

Validation happens in two layers, both at load time. The loader checks each value against its
field's type: a ``Literal`` (method and gate names are ``Literal`` types built from the
``METHODS`` and ``GATES`` registries) lists the allowed values. Then the sections that are
building blocks of their own (``ModelConfig``, ``LossConfig``, ``GenerationConfig``) check
themselves in ``__post_init__``, and ``validate(config)`` checks everything else: every number's
range, ``env.name`` against the environment registry, ``env.options`` against the environment
factory's parameters, and the combinations of keys that cannot work. Every range check goes
through ``sdar._checks.check_number``.

A config file may set ``method: <name>`` at top level; that is shorthand for ``loss.method`` and
also applies the method's preset switches (``LossConfig.for_method``) before the file's own
``loss:`` entries and the command-line overrides. ``method: vanilla`` and ``method: skill_prompt``
are the evaluation-only rows: no training (``iterations`` is 0 whatever the file or an override
says, with a warning when that discards a value), validation without / with skills.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sdar._checks import check_number
from sdar.envs import ENVIRONMENTS, env_factory
from sdar.errors import UserError
from sdar.methods import METHODS, LossConfig
from sdar.models.generation import GenerationConfig
from sdar.models.loading import ModelConfig

logger = logging.getLogger(__name__)


class ConfigError(UserError, ValueError):
    """A config key or value is invalid; the message names it and what is allowed."""


@dataclass
class EnvConfig:
    """Which environment to train on and how the agent talks to it (docs/algorithm.md,
    "Rollout")."""

    name: str = "alfworld"
    """Environment registry name (``sdar.envs.ENVIRONMENTS``): alfworld, webshop, search, toy or
    toy_panels. Checked against the registry when the config is validated, not by a ``Literal``:
    ``register_env`` may add names after import."""
    train_split: str | None = None
    """Split the training tasks come from (None: the environment's default training split)."""
    val_split: str | None = None
    """Split of the validation panel (None: the environment's default, e.g. ALFWorld valid_seen)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options passed to the environment factory (data_dir, curriculum knobs, ...);
    a key the factory does not take is refused at load time, listing those it takes."""
    max_steps: int | None = None
    """Episode step limit (None: the environment's default: ALFWorld 50, WebShop 15, Search-QA 4)."""
    history_length: int | None = None
    """H, past (observation, action) pairs in each prompt (None: env default: 2, 2, 4)."""
    invalid_action_penalty: float = 0.1
    """Subtracted from a step sample's score when its action was invalid (0.01 for Search-QA)."""
    prompt_mode: Literal["think", "action_only"] = "think"
    """``think``: reasoning in <think> then the action tag (paper). ``action_only``: the action tag
    alone, for small models that cannot afford long reasoning."""
    action_rule: Literal["project", "released"] = "project"
    """Which reply counts as a valid action (``sdar.envs.action_rules``; docs/algorithm.md,
    "Action format and validity"). ``project``: the last tag, no ``<think>`` needed, and
    an action the environment refuses (not admissible) is invalid. ``released``: the SDAR code's
    projections: the first tag, ``<think>`` and ``</think>`` required and no CJK (ALFWorld,
    WebShop), Search tags counted anywhere and an empty tag accepted; the environment's refusal is
    not penalised. The paper configs use ``released``."""


@dataclass
class RolloutConfig:
    """Step-wise rollout collection (docs/algorithm.md, "Rollout")."""

    tasks_per_iteration: int = 16
    """B, distinct tasks per iteration (paper: 16 ALFWorld/WebShop, 128 Search-QA)."""
    group_size: int = 8
    """G, rollouts per task sharing the initial state (a GRPO group)."""
    max_prompt_tokens: int = 2048
    """Student prompt budget; history is dropped first, then the prompt is left-truncated (counted)."""
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=512))
    """Sampling settings of training rollouts (temperature 1.0 by default)."""
    generation_batch_size: int | None = None
    """Rows per generation forward pass (None: all live episodes in one batch)."""
    engine: Literal["transformers", "vllm"] = "transformers"
    """Who samples the rollouts: the training model itself (``transformers``, CPU or GPU) or a
    vLLM engine on the same GPU (``vllm``, ``pip install 'sdar[vllm]'``) whose weights are synced
    after every update. Old, reference and teacher log-probs always come from the training model."""
    vllm_gpu_memory_utilization: float = 0.35
    """Share of GPU memory the vLLM engine may take (``engine: vllm`` only)."""
    filter_groups: bool = False
    """Dynamic sampling (DAPO, arXiv 2503.14476; the released code's ``algorithm.filter_groups``,
    off there by default too): groups whose episode returns are all equal (no GRPO signal) are
    dropped and batches of B new tasks x G are played until at least B x G episodes are kept; the
    last allowed batch (``max_rollout_batches``) is kept whole. Only kept groups are trained on;
    ``train/*`` rollout metrics cover every episode played. One process only."""
    max_rollout_batches: int = 10
    """With ``filter_groups``: the most batches of B x G episodes played per iteration (released:
    ``max_num_gen_batches`` 10)."""
    score_at_temperature: bool = False
    """Score the old, reference, teacher and current log-probs (and entropies, and the logits a
    JSD loss reads) from ``logits / generation.temperature``, as the released code (verl) does.
    False: from the model's own logits (temperature 1), the distribution the paper's losses name.
    The two agree when the rollout temperature is 1 (the default and the released scripts')."""


@dataclass
class TeacherConfig:
    """The skill-conditioned teacher branch (docs/algorithm.md, "Teacher prompt")."""

    layout: Literal["prefix", "system", "user"] = "prefix"
    """``prefix``: "[Privileged Skill Information]\\n" + context + "\\n\\n" + chat-rendered student
    prompt, as released. ``system``: the context as a system message inside the chat template.
    ``user``: the same header and context opening the user message, before the task (what small
    models read best; run ``sdar teacher-check`` to see which layout your model uses)."""
    context: Literal["skills", "hint", "sibling"] = "skills"
    """The teacher's privileged context: ``skills`` (the routed skill files, the paper), ``hint``
    (the environment's per-state hint, e.g. ``toy_panels``), or ``sibling`` (the actions of a
    successful trajectory of the same group, as SDPO's self-teacher; none when no copy won).
    Validation with skills and Skill-GRPO students always use the skills."""
    no_winner: Literal["self", "skip"] = "self"
    """With ``context: sibling``, the step samples of a group that no copy won (no context to
    read): ``self`` scores them on the student's own prompt (gap about 0, so the gate is about 0.5
    and the term is noise with no expected direction; docs/algorithm.md, "When the teacher adds
    nothing"); ``skip`` sets their gate to 0, so the distillation term leaves them out (as SDPO
    masks its self-distillation loss where a group has no solution). Methods with the gated term
    only (sdar, grpo_opsd, opsd)."""
    student_layout: Literal["prefix", "system", "user"] | None = None
    """Where a student that sees skills (Skill-GRPO, Skill-Prompt, ``eval.with_skills``) reads them,
    as ``layout`` (None: the same as ``layout``). The released code opens the user message with
    them: ``user``."""
    routing: Literal["task_type", "released"] = "task_type"
    """Which skill files a prompt carries. ``task_type`` (ours): the task's own routing keys, fixed
    per task (``TaskInfo.skill_keys``). ``released``: the released code's rules, per step:
    skill-seeing students by keyword substrings of the user message (Search: general skills only),
    the teacher by ALFWorld task type (pick_two -> the pick file), Search data source (hotpotqa ->
    two_hop) and WebShop keyword substrings of the whole prompt (``sdar.skills.released``)."""
    max_prompt_tokens: int = 4096
    """Teacher prompt budget (skills + student prompt)."""
    on_overflow: Literal["drop_history", "error", "truncate_left"] = "drop_history"
    """Over-long teacher prompt: drop history pairs (oldest first, counted in teacher/truncated),
    raise (``error``), or cut it from the left to the budget, skills first (``truncate_left``, the
    released code; counted in teacher/truncated). Skills are never cut except by
    ``truncate_left``."""
    prefix_cache: bool = True
    """Compute the skill prefix's key/value cache once per distinct skill text and reuse it."""
    skills_dir: str | None = None
    """Folder with one sub-folder of skill files per environment (None: the shipped skills)."""


@dataclass
class AdvantageConfig:
    """Advantage estimation (docs/algorithm.md, "Advantages")."""

    estimator: Literal["grpo", "gigpo"] = "grpo"
    cross_steps: bool = True
    """Group statistics over all step samples of a group (True, released default) or one value per
    trajectory (False)."""
    norm_by_std: bool = True
    """Divide by the group standard deviation (GRPO); False gives Dr.GRPO-style mean-centring."""
    gigpo_omega: float = 1.0
    """GiGPO weight of the step-level advantage."""
    gigpo_gamma: float = 0.95
    """GiGPO discount of step returns."""


@dataclass
class OptimConfig:
    """AdamW and PPO mini-batching (docs/algorithm.md, "Released hyperparameters")."""

    lr: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_ratio: float = 0.0
    """Share of iterations with linear learning-rate warm-up (Search-QA: 0.1)."""
    warmup: Literal["project", "released"] = "project"
    """Warm-up schedule over ``W = int(warmup_ratio * iterations)`` iterations: ``project`` runs
    iteration k at ``lr * k / W``; ``released`` (verl's schedule, stepped after each iteration)
    at ``lr * (k - 1) / W``, so the first iteration runs at lr 0 (docs/algorithm.md, "Departures
    from the released code")."""
    loss_aggregation: Literal["exact", "released"] = "exact"
    """``exact``: the token-mean over each whole mini-batch (micro-batches weighted by their
    tokens), mini-batches cut from a shuffled order. ``released``: the released actor's gradient
    accumulation: each micro-batch's token-mean divided by ``mini_batch_size //
    micro_batch_size``, samples in collection order (no shuffling); the micro-batch size then
    changes the loss, so set it as the released per-GPU value."""
    mini_batch_size: int = 256
    """Step samples per optimizer step; the iteration's samples are split into mini-batches."""
    micro_batch_size: int = 8
    """Step samples per forward/backward pass (gradient accumulation inside a mini-batch)."""
    ppo_epochs: int = 1


@dataclass
class EvalConfig:
    """The fixed validation panel (docs/algorithm.md, "Validation panel")."""

    every: int = 5
    """Validate every N iterations (0: never during training)."""
    num_tasks: int = 128
    """Panel size; the panel is tasks ``seed .. seed + num_tasks - 1`` of the validation split."""
    seed: int = 100_000
    """First task seed of the panel (the same panel every time)."""
    temperature: float = 0.4
    greedy: bool = False
    """Greedy decoding instead of sampling at ``temperature`` (Search-QA validates greedily)."""
    with_skills: bool = False
    """Show the skills to the student at validation (Skill-Prompt evaluation)."""
    before_training: bool = True
    """Validate the untrained model first (logged as iteration 0)."""
    max_new_tokens: int | None = None
    """Response budget at validation (None: same as training)."""


@dataclass
class DistributedConfig:
    """How several processes (``torchrun``) share the model (docs/distributed.md)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """``ddp``: every rank holds the whole model and its optimizer state; gradients are summed once
    per optimizer step. ``fsdp``: parameters, gradients and AdamW state are sharded over the ranks
    (PyTorch FSDP2, one unit per decoder layer plus the root) and gathered whole only for
    rollouts, scoring and validation. One process trains unsharded either way."""


@dataclass
class SFTConfig:
    """The supervised warm start (``sdar sft``, ``sdar.trainer.sft``); ``sdar train`` ignores it.
    The command's flags override these keys (``--epochs N`` is ``sft.epochs=N``). The warm start
    takes ``optim.weight_decay``, ``optim.grad_clip`` and ``optim.micro_batch_size`` from ``optim``."""

    epochs: int = 2
    """Passes over the demonstrations (``--epochs``)."""
    lr: float = 1e-4
    """AdamW learning rate of the warm start (``--lr``); higher than RL's ``optim.lr``."""
    batch_size: int = 8
    """Demonstrations per optimizer step (``--batch-size``)."""
    max_demos: int | None = None
    """Use at most this many demonstrations, the first ones of the file (``--max-demos``; None:
    all)."""


@dataclass
class TrainConfig:
    """Everything one training run needs. See ``configs/`` for the paper's and the CPU settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    iterations: int = 150
    """Training iterations (docs/algorithm.md, "Released hyperparameters"). 0 evaluates the
    untrained model only (the Vanilla and Skill-Prompt rows)."""
    seed: int = 0
    """Seeds Python, NumPy and torch, the sampling generator and the training task order."""
    output_dir: str = "runs/sdar"
    init_checkpoint: str | None = None
    """Start from these trainable weights (a run directory or checkpoint folder, e.g. the output
    of ``sdar sft``). The KL reference is this warm-started model. LoRA: the warm-start adapter is
    merged into the base weights and a fresh adapter trains on top, so the run's checkpoints hold
    only the new adapter and need this warm start to be loaded (resume and ``sdar eval`` do it)."""
    save_every: int = 10
    """Checkpoint every N iterations (the last iteration is always saved)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep (older ones are deleted)."""
    log_samples: int = 4
    """Step samples per iteration written token by token to samples.jsonl (for the report)."""
    tensorboard: bool = True

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------------
# Validation: every check of the whole tree, run when a TrainConfig is built (so at load time)
# ---------------------------------------------------------------------------------------------
def validate(config: TrainConfig) -> None:
    """Raise ``ConfigError`` with a one-line message naming the key, the bad value and what is
    allowed, unless ``config`` can run.

    Checks what the field types and the sections' own ``__post_init__`` (model, loss,
    rollout.generation) cannot: the range of every other bounded number (seeds are any integer), ``env.name`` and ``env.options``
    (``check_env``) and the combinations of keys that cannot work together. Runs in
    ``TrainConfig.__post_init__``, so ``load_config`` calls it before anything is loaded. It
    imports the configured environment's module (to read its factory's parameters) but builds
    no environment and loads no data.
    """

    def number(key: str, low: float | None = None, high: float | None = None, **bounds: Any) -> None:
        value = _get(config, key)
        if value is None and key in _NULLABLE_NUMBERS:
            return
        try:
            check_number("", key, value, low, high, **bounds)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None

    for key in ("rollout.tasks_per_iteration", "rollout.group_size", "rollout.max_prompt_tokens",
                "rollout.generation_batch_size", "teacher.max_prompt_tokens", "optim.mini_batch_size",
                "optim.micro_batch_size", "optim.ppo_epochs", "eval.num_tasks", "eval.max_new_tokens",
                "env.max_steps", "save_every", "keep_checkpoints", "sft.epochs", "sft.batch_size",
                "sft.max_demos", "rollout.max_rollout_batches"):
        number(key, 1, integer=True)
    number("iterations", 0, integer=True, hint="0 only evaluates the untrained model")
    for key in ("eval.every", "env.history_length", "seed", "log_samples"):
        number(key, 0, integer=True)
    number("env.invalid_action_penalty", 0.0)
    number("optim.lr", 0.0, low_open=True)
    number("optim.weight_decay", 0.0)
    number("optim.grad_clip", 0.0, low_open=True)
    number("optim.warmup_ratio", 0.0, 1.0, high_open=True)
    number("advantage.gigpo_omega", 0.0)
    number("advantage.gigpo_gamma", 0.0, 1.0)
    number("rollout.vllm_gpu_memory_utilization", 0.0, 1.0, low_open=True)
    if not config.eval.greedy:
        number("eval.temperature", 0.0, low_open=True, hint="for greedy validation set eval.greedy=true")
    number("sft.lr", 0.0, low_open=True)
    if config.rollout.score_at_temperature and config.rollout.generation.greedy:
        raise ConfigError("rollout.score_at_temperature scores at the rollout's sampling temperature, which greedy "
                          "rollouts (rollout.generation.greedy=true) do not have; set one of them false")
    if config.rollout.filter_groups and config.rollout.group_size < 2:
        raise ConfigError("rollout.filter_groups drops groups whose episode returns are all equal, which a group "
                          f"of rollout.group_size={config.rollout.group_size} always is; use group_size >= 2")
    check_env(config.env)
    if config.teacher.no_winner == "skip":
        if config.teacher.context != "sibling":
            raise ConfigError(f"teacher.no_winner=skip applies to teacher.context=sibling (every step sample has "
                              f"a {config.teacher.context} context); remove it or use context=sibling")
        if config.loss.spec.distillation != "sdar":
            raise ConfigError(f"teacher.no_winner=skip sets the gate of the SDAR term to 0, which method "
                              f"{config.loss.method!r} does not have; use sdar, grpo_opsd or opsd, or no_winner=self")
    if (config.env.action_rule == "released" and config.env.prompt_mode == "action_only"
            and config.env.name in ("alfworld", "webshop")):
        raise ConfigError(
            f"env.action_rule=released needs <think> in every {config.env.name} reply, but "
            "env.prompt_mode=action_only asks for the action tag alone; use prompt_mode=think "
            "or action_rule=project")
    if config.distributed.strategy == "fsdp" and config.rollout.engine == "vllm":
        raise ConfigError(
            "distributed.strategy=fsdp does not support rollout.engine=vllm (the engine's weight "
            "sync reads whole weights, which FSDP shards over the ranks); use rollout.engine="
            "transformers with fsdp, or distributed.strategy=ddp with vllm")


_NULLABLE_NUMBERS = {"rollout.generation_batch_size", "eval.max_new_tokens", "env.max_steps",
                    "env.history_length", "sft.max_demos"}
"""Numeric keys whose null means "the default" (the environment's, training's, all)."""


def check_env(env: EnvConfig) -> None:
    """Raise ``ConfigError`` unless ``env.name`` is a registered environment and every key of
    ``env.options`` is a parameter of its factory (any key when the factory takes ``**kwargs``).
    Values are not checked here: the environment refuses a bad one when it is built."""
    if env.name not in ENVIRONMENTS:
        raise ConfigError(f"env.name must be one of {sorted(ENVIRONMENTS)}, got {env.name!r}")
    try:
        factory = env_factory(env.name)
    except (ImportError, AttributeError) as err:  # a registered target that does not import
        raise ConfigError(f"env.name={env.name}: its factory cannot be imported: {err}") from err
    parameters = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(env.options) - set(parameters))
    if unknown:
        raise ConfigError(f"env.options: unknown key(s) {unknown} for env.name={env.name}; "
                          f"allowed: {sorted(parameters)}")


def _get(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


# ---------------------------------------------------------------------------------------------
# Loading: YAML -> dataclass tree with validation
# ---------------------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults), apply ``key.sub=value`` overrides, validate.

    Override values are parsed as YAML (``optim.lr=1e-5``, ``model.lora=null``,
    ``env.options={max_receptacles: 3}``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML: {_yaml_problem(err)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        data = loaded or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is malformed YAML: {_yaml_problem(err)}") from None
        _set_path(data, key.strip().split("."), value)
    return config_from_dict(data)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's problem and its 1-based line, in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


# Evaluation-only rows of the paper's tables: the untrained model without / with skills.
EVAL_ONLY_METHODS = {"vanilla": False, "skill_prompt": True}


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """The validated config of plain data (what ``load_config`` read), ``method:`` resolved."""
    data = dict(data)
    method = data.pop("method", None)
    allowed = [*METHODS, *EVAL_ONLY_METHODS]
    if method is not None and method not in allowed:
        raise ConfigError(f"method must be one of {allowed}, got {method!r}")
    if method in EVAL_ONLY_METHODS:
        # evaluation only, also when the file (every shipped one) or an override sets iterations:
        # training here would silently train GRPO under the method's name
        if data.get("iterations", 0) != 0:
            logger.warning("method: %s evaluates the untrained model only; iterations: %s is ignored (0)",
                           method, data["iterations"])
        data["iterations"] = 0
        eval_data = dict(data.get("eval") or {})
        eval_data.setdefault("with_skills", EVAL_ONLY_METHODS[method])
        data["eval"] = eval_data
        method = "grpo"
    loss_data = dict(data.get("loss") or {})
    if method is not None:
        if "method" in loss_data and loss_data["method"] != method:
            raise ConfigError(f"method: {method!r} contradicts loss.method: {loss_data['method']!r}")
        base = LossConfig.for_method(method)
        preset = {f.name: getattr(base, f.name) for f in dataclasses.fields(LossConfig)}
        preset.update(loss_data)
        data["loss"] = preset
    return _build(TrainConfig, data, "")


def config_to_dict(config: Any) -> Any:
    """The config as plain YAML-able data (the resolved config written to the run directory)."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def _set_path(data: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        node = data.get(key)
        if node is None:
            node = data[key] = {}
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
        data = node
    data[keys[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {[_join(where, k) for k in unknown]}; allowed in "
                          f"{where or 'the top level'}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        message = str(err)
        if where and not message.startswith((f"{where}.", f"{where}:")):
            message = f"{where}: {message}"  # the section's own message names only the field
        raise ConfigError(message) from err


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where} may not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {args}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (dict,) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return type(value)(value) if origin is None else (list(value) if origin is list else tuple(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key

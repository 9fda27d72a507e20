"""The SDAR training loop (docs/algorithm.md), on one device or data-parallel over many.

One iteration:

1. **Rollout**: B tasks x G copies play to the end, step-wise (``sdar.rollout``); every agent turn
   becomes a step sample with score ``S = R(episode) - penalty * [invalid]``.
2. **Log-probs without gradient**, all with the rollout-time weights: ``old`` (student prompt),
   ``ref`` (frozen initial model, for the KL term; the LoRA adapter disabled, or a frozen copy), and
   ``teacher`` (skills + student prompt, same response ids), each only when the method needs it.
3. **Advantages**: GRPO (or GiGPO) over the scores, one value per step sample, broadcast on its
   response tokens.
4. **Update**: one PPO epoch over shuffled mini-batches of step samples; inside a mini-batch,
   micro-batches accumulate gradients weighted by their share of the mini-batch's tokens, so the
   token-mean is exact over the mini-batch. AdamW, gradient clipping, warm-up.
5. **Metrics, samples, validation, checkpoint.**

Every method of docs/algorithm.md, "The methods" is the same loop with different switches
(``sdar.methods.LossConfig``); the loop never branches on a method name.

Deliberate simplifications, stated so nobody has to discover them:

* ``opsd_jsd`` needs full teacher logits at update time; storing them for a whole iteration would
  cost B*T*V floats, so they are recomputed per micro-batch with the current weights, no gradient.
  All other teacher quantities use the rollout-time weights, as the released code does.
* The learning-rate schedule is linear warm-up then constant, a function of the iteration.
* A non-finite loss or gradient norm skips that optimizer step (counted in ``actor/skipped_updates``)
  instead of corrupting the weights.

Multi-process (``torchrun --nproc_per_node N -m sdar.cli train ...``; ``sdar.trainer.distributed``,
docs/distributed.md): the episodes of an iteration and the validation panel are split over the
ranks; advantages use the scores of all ranks (a group may span ranks); the global mini-batch is
the unit of an optimizer step (one permutation shared by all ranks, gradients summed over ranks
with each micro-batch weighted by its tokens / the mini-batch's tokens on all ranks), so the update
equals the single-process update on the same step samples. Rank 0 alone logs and checkpoints.
With ``distributed.strategy: fsdp`` the weights, gradients and AdamW state are sharded over the
ranks (``sdar.trainer.sharding``): rollouts, scoring and validation run on weights gathered once
per phase, and in the update every rank runs as many forward/backward passes as the busiest one
(zero-weighted padding passes), because each pass of a sharded model is a collective.

Features: CPU/GPU, one or many processes, full fine-tuning or LoRA, seeded and exactly resumable
(model, optimizer, RNG states and the sampling generator are checkpointed; the task order is a
function of seed and iteration), atomic checkpoints, Ctrl-C or SIGTERM saves a resumable checkpoint
(and an iteration whose validation was cut short is finished on resume, so metrics.jsonl holds every
iteration once), progress bars, metrics.jsonl + TensorBoard + token-level samples for the report.
Everything that can be checked without the model (run directory, environments, warm start,
checkpoint to resume) is checked before the model is loaded and before anything is written.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import signal
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdar.advantages import gigpo_advantages, grpo_advantages
from sdar.envs import make_env
from sdar.envs.base import AgentEnv
from sdar.methods import METHODS, LossInputs, actor_loss, distillation_gate, required_inputs
from sdar.models.generation import GenerationConfig, generate
from sdar.models.loading import (
    autocast_context,
    cast_frozen_weights,
    load_policy,
    load_reference,
    reference_log_probs_context,
)
from sdar.models.scoring import score_responses
from sdar.reporting import RunLogger, format_summary
from sdar.rollout import (
    PromptBuilder,
    Rollout,
    StepSample,
    collect_rollout,
    rollout_metrics,
    split_groups_by_spread,
)
from sdar.skills import SkillLibrary
from sdar.trainer.checkpoint import (
    apply_checkpoint,
    apply_warm_start,
    latest_checkpoint,
    list_checkpoints,
    load_trainable_state_dict,
    optimizer_state_dict,
    read_latest_checkpoint,
    remove_partial_checkpoints,
    resolve_checkpoint,
    rng_state,
    set_rng_state,
    trainable_state_dict,
    warm_start_for,
    warm_start_record,
    write_checkpoint,
)
from sdar.trainer.config import ConfigError, TrainConfig, check_env, save_config
from sdar.trainer.distributed import (
    all_gather_objects,
    all_reduce_gradients,
    any_rank,
    broadcast_object,
    broadcast_parameters,
    gather_rollout,
    init_distributed,
    rank_seed,
    shard_bounds,
    sum_dicts,
)
from sdar.trainer.evaluation import run_panel
from sdar.trainer.run_dir import RunDirError, RunLock, check_new_run, check_writable, clear_unresumable_run
from sdar.trainer.sharding import full_weights, shard_model, whole
from sdar.trainer.teacher import TeacherScores, teacher_log_probs, teacher_prompts

logger = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that stop a run cleanly: Ctrl-C, and what schedulers, Kubernetes and docker send."""

# |teacher - student| log-prob gap (nats) from which a response token counts as one the two disagree on,
# for the signal metrics (Trainer.signal_metrics); the gap gate at beta 5 is below 0.007 or above 0.993 there
DISAGREEMENT_NATS = 1.0
# actions kept at each end of an iteration's gate_actions.jsonl record (gate_actions_record)
GATE_ACTIONS_KEPT = 10


def gate_action_sums(samples, gates: list[torch.Tensor], teacher_log_probs, old_log_probs,
                     distilled: list[bool] | None = None) -> dict[str, list]:
    """Per action of these step samples: ``[step samples, tokens, gate sum, gap sum]`` over their
    response tokens (``gates``: :meth:`Trainer.sample_gates`'s; the gap ``l_T - l_old``), for
    :func:`gate_actions_record`. Left out: step samples without rollout-time log-probs (as in the
    signal metrics), those with a non-finite gate or gap, and those ``distilled`` marks False (the
    term leaves them out: ``teacher.no_winner: skip``)."""
    sums: dict[str, list] = {}
    for i, s in enumerate(samples):
        if not old_log_probs[i].numel() == len(s.response_ids) > 0 or (distilled is not None and not distilled[i]):
            continue
        gate, gap = float(gates[i].sum()), float((teacher_log_probs[i] - old_log_probs[i]).sum())
        if not (math.isfinite(gate) and math.isfinite(gap)):
            continue
        acc = sums.setdefault(s.action, [0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += old_log_probs[i].numel()
        acc[2] += gate
        acc[3] += gap
    return sums


def gate_actions_record(parts: list[dict[str, list]], kept: int = GATE_ACTIONS_KEPT) -> dict | None:
    """Where the gate pushed in one iteration, from every rank's :func:`gate_action_sums`: the
    gate's token mean ``gate_mean`` over ``tokens``, and per action its step samples, tokens, mean
    gate, mean gap and ``push``, the sum over its (response) tokens of ``gate - gate_mean``. On
    the policy's own samples the term's expected gradient is ``-lambda * Cov(gate, grad log pi)``
    (docs/algorithm.md, "When the teacher adds nothing"): the term acts as an advantage of
    ``lambda * gate`` per token, and ``push`` is that advantage summed over the action's tokens,
    per unit of lambda, against the iteration's mean gate as the baseline (not against the
    alternatives of the same state): the actions with the highest push are those the term
    favours most this iteration. ``actions`` lists the ``kept`` actions of highest push and the ``kept`` of
    lowest, highest first (all of them when there are at most ``2 * kept``); ``distinct_actions``
    counts them all. None when no token was gated."""
    merged: dict[str, list] = {}
    for part in parts:
        for action, values in part.items():
            acc = merged.setdefault(action, [0, 0, 0.0, 0.0])
            for k, v in enumerate(values):
                acc[k] += v
    tokens = sum(v[1] for v in merged.values())
    if not tokens:
        return None
    mean = sum(v[2] for v in merged.values()) / tokens
    rows = sorted(({"action": a, "step_samples": n, "tokens": t, "gate": g / t, "gap": gap / t, "push": g - mean * t}
                   for a, (n, t, g, gap) in merged.items()), key=lambda r: (-r["push"], r["action"]))
    return {"gate_mean": mean, "tokens": tokens, "distinct_actions": len(rows),
            "actions": rows if len(rows) <= 2 * kept else rows[:kept] + rows[-kept:]}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_seeds(seed: int, iteration: int, count: int, num_tasks: int | None, batch: int = 0) -> list[int]:
    """The training tasks of one iteration: a pure function of (seed, iteration, batch), so resume
    is exact. ``batch``: the how-many-th batch of this iteration (``rollout.filter_groups`` plays
    more than one); batch 0 is the iteration's only batch without it."""
    rng = random.Random(f"sdar-tasks-{seed}-{iteration}" + (f"-{batch}" if batch else ""))
    if num_tasks is None:
        return [rng.randrange(2**31) for _ in range(count)]
    if num_tasks >= count:
        return rng.sample(range(num_tasks), count)
    return [rng.randrange(num_tasks) for _ in range(count)]


def reuses_update_log_probs(optim, total_samples: int) -> bool:
    """True when an iteration makes exactly one optimizer step over all its step samples
    (``ppo_epochs == 1`` and ``mini_batch_size >= total_samples``). The policy that is differentiated
    is then still the rollout-time policy, so the old log-probs are the update's own forward pass,
    detached: the separate scoring pass would compute the same numbers (up to float rounding of a
    different batch layout) and is skipped. With several optimizer steps they are scored first."""
    return optim.ppo_epochs == 1 and optim.mini_batch_size >= total_samples


def warmup_lr(optim, iterations: int, iteration: int) -> float:
    """The learning rate of ``iteration`` (1-based) under linear warm-up over
    ``W = int(optim.warmup_ratio * iterations)`` iterations (docs/algorithm.md, "Departures from
    the released code").

    ``optim.warmup: project``: ``lr * iteration / W`` for ``iteration <= W`` (the first iteration
    already moves the weights). ``released``: verl's ``get_constant_schedule_with_warmup``, stepped
    once after every iteration: ``lr * (iteration - 1) / W`` for ``iteration <= W``, so the first
    iteration runs at lr 0 and the full rate is reached at iteration ``W + 1``. ``W = 0``: ``lr``
    throughout, either way.
    """
    warmup = int(optim.warmup_ratio * iterations)
    if warmup > 0 and iteration <= warmup:
        done = iteration - 1 if optim.warmup == "released" else iteration
        return optim.lr * done / warmup
    return optim.lr


def mini_batch_plan(optim, tokens: list[int], generator: torch.Generator | None) -> list[list[int]]:
    """The global sample indices of each mini-batch of one PPO epoch.

    ``optim.loss_aggregation: exact`` cuts a random permutation (drawn from ``generator``);
    ``released`` cuts the samples in their collection order, as the released actor does (no
    shuffling). ``tokens`` holds the response tokens per global index (only its length is used).
    """
    order = (list(range(len(tokens))) if optim.loss_aggregation == "released"
             else torch.randperm(len(tokens), generator=generator).tolist())
    size = optim.mini_batch_size
    return [order[k : k + size] for k in range(0, len(order), size)]


def micro_batch_weight(optim, n_tokens: int, mini_tokens: int) -> float:
    """What one micro-batch's token-mean loss is multiplied by before its backward pass.

    ``exact``: its share of the mini-batch's response tokens, so the summed gradient is the
    gradient of the token-mean over the whole mini-batch. ``released``: ``1 / (mini_batch_size //
    micro_batch_size)``, verl's gradient accumulation (the same divisor for a short last
    mini-batch, as released).
    """
    if optim.loss_aggregation == "released":
        return 1.0 / max(1, optim.mini_batch_size // optim.micro_batch_size)
    return n_tokens / mini_tokens


def pad_rows(rows: list[torch.Tensor], width: int, value: float = 0.0) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


def make_run_env(env_config, split: str | None) -> AgentEnv:
    """The configured environment on ``split`` (None: the environment's default split), with the
    config's step limit, action-validity rule and extra options.

    Raises :class:`ConfigError` naming the key for an unknown ``env.name``, an ``env.options`` key
    the environment's factory does not take (``check_env``, also run when the config is loaded),
    and any value the environment refuses (a bad split, a missing data folder)."""
    check_env(env_config)
    options = dict(env_config.options)
    options["action_rule"] = env_config.action_rule
    if split is not None:
        options["split"] = split
    if env_config.max_steps is not None:
        options["max_steps"] = env_config.max_steps
    try:
        return make_env(env_config.name, **options)
    except (ValueError, TypeError) as err:
        where = f"split {split!r}" if split is not None else "its default split"
        raise ConfigError(f"env {env_config.name!r} on {where}: {err}") from None


def _finite_on(values: torch.Tensor, mask: torch.Tensor) -> bool:
    return bool(torch.isfinite(values.detach()[mask.bool()]).all())


def _row_or_nan(row: torch.Tensor, n: int) -> torch.Tensor:
    """``row`` as a ``[1, n]`` batch, or NaN where it was never filled in (a skipped step)."""
    return (row if row.numel() == n else torch.full((n,), float("nan")))[None]


@dataclass
class RolloutLogProbs:
    """Step 2 of an iteration: what the rollout-time weights say about this rank's step samples,
    one response-aligned 1-D CPU tensor per step sample (same order as the step samples)."""

    old_log_probs: list[torch.Tensor]
    """The policy's log-probs of the response tokens. Empty rows when the update reuses its own
    forward pass (:func:`reuses_update_log_probs`): it fills each row in place."""
    old_entropy: list[torch.Tensor] | None
    """The policy's next-token entropies, for a gate that reads them (``loss.gate: entropy`` or
    ``soft_or``), filled in like ``old_log_probs``; ``None`` otherwise."""
    ref_log_probs: list[torch.Tensor] | None
    """The frozen reference model's log-probs, when the KL term is on."""
    teacher: TeacherScores | None
    """The teacher pass (skills in the prompt), when the method reads teacher log-probs."""


@dataclass
class _UpdateBatch:
    """What one update reads: this rank's step samples with their advantages and rollout-time
    log-probs, and where the step samples of all ranks sit in the global index space."""

    samples: list[StepSample]
    advantages: torch.Tensor
    rollout_lp: RolloutLogProbs
    tokens: list[int]
    """Response tokens per global index (the step samples of all ranks, in rank order)."""
    starts: list[int]
    """The first global index of each rank, then the total."""
    rank: int

    def local(self, indices: list[int]) -> list[int]:
        """The members of ``indices`` (global) that this rank holds, as local indices."""
        offset = self.starts[self.rank]
        return [i - offset for i in indices if offset <= i < offset + len(self.samples)]


@dataclass
class _UpdateTotals:
    """What an update accumulates for its metrics."""

    sums: dict[str, float] = field(default_factory=dict)
    """Each loss metric times the tokens of the micro-batch it was measured on."""
    tokens: int = 0
    skipped: int = 0
    grad_norms: list[float] = field(default_factory=list)

    def add(self, metrics: dict[str, float], n_tokens: int) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * n_tokens
        self.tokens += n_tokens


class Trainer:
    """Holds the model, environments and optimizer of one run; ``train()`` runs it.

    Args:
        config: the validated run configuration.
        run_dir: where config, metrics, samples, TensorBoard logs, checkpoints and reports go.
        resume: continue from the latest readable checkpoint in ``run_dir``.
        restart: a new run may replace what a run without any checkpoint left in ``run_dir``
            (otherwise such a directory is refused; one with a checkpoint is always refused).

    Nothing is written, and nothing is loaded into the model, before the run directory, the
    checkpoint to resume, the warm start and the environments have passed their checks: a refused
    run leaves ``run_dir`` as it was. From its first write until :meth:`close` (which ``train()``
    calls when it returns), the trainer holds ``run_dir``'s lock (:class:`RunLock`, rank 0 only): a
    second trainer there raises :class:`RunDirError` naming this process.

    Under a launcher (``WORLD_SIZE`` > 1 in the environment) every rank builds its own Trainer and
    joins the process group here; all ranks must call the same methods in the same order.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, restart: bool = False):
        self.config = config
        self.run_dir = Path(run_dir)
        self.spec = METHODS[config.loss.method]
        self.needs = required_inputs(config.loss)
        # every log-prob the loss reads is scored at this temperature (rollout.score_at_temperature)
        self.score_temperature = (config.rollout.generation.temperature
                                  if config.rollout.score_at_temperature else 1.0)
        self._stop_requested = False
        self.dist = init_distributed()
        if config.rollout.filter_groups and self.dist.enabled:  # every rank raises the same error
            raise ConfigError("rollout.filter_groups runs in one process only (groups are played whole); "
                              f"this launch has {self.dist.world_size} ranks: run `sdar train` without a "
                              "launcher, or set rollout.filter_groups=false")
        # FSDP shards over several processes; a single process trains unsharded (same checkpoints).
        self.sharded = config.distributed.strategy == "fsdp" and self.dist.enabled
        if config.distributed.strategy == "fsdp" and not self.dist.enabled:
            logger.info("distributed.strategy=fsdp in a single process: nothing to shard, "
                        "training the whole model as usual")

        # ---- checks that read only: nothing is written or loaded into the model before them ------
        checkpoint = None
        if resume:
            check_writable(self.run_dir)
            checkpoint = read_latest_checkpoint(self.run_dir)  # skips an unreadable newest one
            read_checkpoints = list_checkpoints(self.run_dir)
        else:
            check_new_run(self.run_dir, restart=restart)
        if config.init_checkpoint:
            resolve_checkpoint(config.init_checkpoint)  # names the path when there is none
        # the warm start under the weights: a resumed run's must be the one its checkpoint records
        init_checkpoint = (warm_start_for(checkpoint["trainer_state"], config.init_checkpoint, checkpoint["path"])
                           if checkpoint is not None else config.init_checkpoint)
        self.warm_start = warm_start_record(init_checkpoint)
        self.train_env = self._make_env(config.env.train_split)  # a bad name, split or option fails here
        self.val_env = self._make_env(config.env.val_split) if self._validates() else None

        seed_everything(config.seed)
        # ---- model, reference, optimizer -----------------------------------------------------
        self.model, self.tokenizer = load_policy(config.model)
        init_state = None
        if init_checkpoint:  # also when resuming: a LoRA run's adapter sits on the warm start
            self.model, init_state = apply_warm_start(self.model, config.model.lora, init_checkpoint)
            logger.info("initial weights from %s", init_checkpoint)
        self.device = next(self.model.parameters()).device
        self.pad_id = self.tokenizer.pad_token_id
        broadcast_parameters(self.dist, self.model)  # every rank starts from rank 0's weights
        self.reference = load_reference(config.model, self.model) if "ref_log_probs" in self.needs else None
        if self.reference is not None and init_state is not None:  # full fine-tuning: the warm start
            load_trainable_state_dict(self.reference, init_state)
        if not (config.distributed.strategy == "fsdp" and self.dist.enabled):  # FSDP shards one dtype
            cast_frozen_weights(self.model, config.model)  # model.autocast: frozen weights cast once
            if self.reference is not None:  # full fine-tuning: score as the policy does under autocast
                cast_frozen_weights(self.reference, config.model, linear_only=True)
        if self.sharded:  # every rank holds the same weights here; each keeps its shard
            shard_model(self.model, self.dist)
            if self.reference is not None:
                shard_model(self.reference, self.dist)
        self.engine = self._make_vllm_engine() if config.rollout.engine == "vllm" else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        # Rollout sampling differs per rank; rank 0 keeps the single-process stream.
        self.generator = torch.Generator().manual_seed(rank_seed(config.seed, self.dist.rank))

        # ---- skills, prompts ----------------------------------------------------------------------
        self.history_length = (config.env.history_length if config.env.history_length is not None
                               else self.train_env.history_length)
        uses_skills = ("teacher_log_probs" in self.needs or "teacher_logits" in self.needs
                       or self.spec.student_sees_skills or config.eval.with_skills)
        self.skills = SkillLibrary(config.env.name, config.teacher.skills_dir) if uses_skills else None
        think = config.env.prompt_mode == "think"
        layouts = {"layout": config.teacher.layout, "routing": config.teacher.routing,
                   "student_layout": config.teacher.student_layout,
                   "chat_template_kwargs": config.model.chat_template_kwargs}
        self.train_prompts = PromptBuilder(self.train_env, self.tokenizer, self.skills, think, **layouts)
        self.val_prompts = (PromptBuilder(self.val_env, self.tokenizer, self.skills, think, **layouts)
                            if self.val_env is not None else None)

        # ---- run directory ----------------------------------------------------------------------
        self.start_iteration = 1
        # Training metrics of an iteration whose validation was interrupted (see ``train``).
        self._unlogged_metrics: dict[str, float] | None = None
        if checkpoint is not None:
            state = apply_checkpoint(checkpoint, self.model, self.optimizer)
            self.start_iteration = state["iteration"] + 1
            self._completed_iteration = state["iteration"]
            self._unlogged_metrics = state.get("unlogged_metrics")
            self._restore_rng(state)
            logger.info("resumed from %s (next iteration %d)", checkpoint["path"], self.start_iteration)
        self._sync_engine()
        # Only rank 0 writes the run directory; the others keep no logger.
        self.log: RunLogger | None = None
        self._run_lock: RunLock | None = None
        if self.dist.is_main:
            # one trainer per run directory, held until ``train`` returns; the checks above ran
            # before the model loaded, so they run again under the lock (another process may have
            # started, checkpointed or finished here meanwhile)
            self._run_lock = RunLock(self.run_dir)
            try:
                if resume:
                    if list_checkpoints(self.run_dir) != read_checkpoints:
                        raise RunDirError(f"{self.run_dir} changed while this process loaded its checkpoint "
                                          f"(another process wrote there); run the same command again")
                else:
                    check_new_run(self.run_dir, restart=restart)
                    removed = clear_unresumable_run(self.run_dir) if restart else []
                    if removed:
                        logger.warning("--restart: removed %s of the earlier run in %s", ", ".join(removed),
                                       self.run_dir)
                remove_partial_checkpoints(self.run_dir)
                save_config(config, self.run_dir / "config.yaml")
                self.log = RunLogger(self.run_dir, tensorboard=config.tensorboard, resume=resume)
                if resume:
                    self.log.truncate_after(self.start_iteration - 1)
            except BaseException:
                self._run_lock.release()
                raise

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Same world size as the checkpoint: every rank's own RNG states (bit-exact resume).
        Another world size: rank 0 takes the saved rank-0 states, the others start fresh streams."""
        per_rank = state.get("rank_rng") or [state["rng"]]
        if len(per_rank) == self.dist.world_size:
            set_rng_state(per_rank[self.dist.rank], self.generator)
        elif self.dist.is_main:
            set_rng_state(state["rng"], self.generator)
            logger.warning("checkpoint written by %d process(es), resumed on %d: weights, "
                           "optimizer and rank 0's sampling stream are restored; other ranks "
                           "sample from fresh streams", len(per_rank), self.dist.world_size)
        else:
            salt = f"resume-{state['iteration']}"
            self.generator.manual_seed(rank_seed(self.config.seed, self.dist.rank, salt))

    def _make_env(self, split: str | None) -> AgentEnv:
        return make_run_env(self.config.env, split)

    def _validates_at(self, iteration: int) -> bool:
        """Whether training iteration ``iteration`` ends with a validation."""
        every = self.config.eval.every
        return (self.val_env is not None and every > 0
                and (iteration % every == 0 or iteration == self.config.iterations))

    def _validates(self) -> bool:
        return self.config.eval.every > 0 or self.config.eval.before_training or self.config.iterations == 0

    # ---- generation and scoring -------------------------------------------------------------------
    def _autocast(self):
        """Forward passes run under this context (``model.autocast``; a no-op by default)."""
        return autocast_context(self.config.model, self.device)

    def _make_vllm_engine(self):
        from sdar.models.loading import PACKAGED_NAMES, TINY_RANDOM
        from sdar.models.packaged import packaged_checkpoint
        from sdar.models.vllm_generation import VllmGenerator

        cfg = self.config
        if not torch.cuda.is_available():
            raise RuntimeError("rollout.engine=vllm needs a CUDA GPU; on CPU use rollout.engine=transformers")
        name = cfg.model.name
        if name == TINY_RANDOM:
            raise ValueError("rollout.engine=vllm needs a checkpoint folder or hub model, not tiny-random")
        path = packaged_checkpoint(name, cfg.model.cache_dir) if name in PACKAGED_NAMES else name
        max_len = max(cfg.rollout.max_prompt_tokens, cfg.teacher.max_prompt_tokens) + cfg.rollout.generation.max_new_tokens
        return VllmGenerator(str(path), dtype=cfg.model.dtype, max_model_len=max_len, seed=cfg.seed,
                             gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization)

    def _sync_engine(self) -> None:
        """Push the current weights into the vLLM engine (a no-op on the transformers path)."""
        if self.engine is not None:
            self.engine.sync_weights(self.model)

    def _generate_fn(self, gen_config: GenerationConfig, generator: torch.Generator):
        sample = self.engine.generate if self.engine is not None else generate

        def run(prompt_ids: list[list[int]]) -> list[list[int]]:
            self.model.eval()
            return sample(self.model, self.tokenizer, prompt_ids, gen_config, generator=generator,
                          batch_size=self.config.rollout.generation_batch_size)
        return run

    @torch.no_grad()
    def _score(self, model, samples: list[StepSample], with_entropy: bool = False):
        if not samples:  # a rank may hold no step sample
            return [], ([] if with_entropy else None)
        scored = score_responses(
            model, [s.prompt_ids for s in samples], [s.response_ids for s in samples], with_entropy=with_entropy,
            micro_batch_size=self.config.optim.micro_batch_size, pad_id=self.pad_id,
            temperature=self.score_temperature,
        )
        lps = [scored.log_probs[i, : len(s.response_ids)].float().cpu() for i, s in enumerate(samples)]
        ents = ([scored.entropy[i, : len(s.response_ids)].float().cpu() for i, s in enumerate(samples)]
                if with_entropy else None)
        return lps, ents

    # ---- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Run from ``start_iteration`` to ``config.iterations``; returns the last validation metrics.

        SIGINT (Ctrl-C) and SIGTERM stop the run at the next environment step or after the running
        update and write a resumable checkpoint (a second signal aborts at once); ``train`` then
        raises ``KeyboardInterrupt`` and :attr:`stop_signal` says which signal it was. When the stop
        cuts short the validation of an iteration, the checkpoint of that iteration carries its
        training metrics and the RNG states from before the validation; the resumed run plays the
        validation first and logs the iteration's one line, as an uninterrupted run would have.
        """
        cfg = self.config
        previous_handlers = {}
        for signum in STOP_SIGNALS:
            try:
                previous_handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not in the main thread (e.g. a notebook worker): no signal handling
                break
        last_val: dict[str, float] = {}
        iteration = self.start_iteration - 1
        # (training metrics, RNG states) of an iteration between its update and its metrics line
        pending: tuple[dict[str, float], dict[str, Any]] | None = None
        try:
            if self._unlogged_metrics is not None:
                last_val = self._finish_interrupted_iteration(iteration)
            elif self.start_iteration == 1 and self.val_env is not None and (cfg.eval.before_training or cfg.iterations == 0):
                last_val = self.validate()
                if self.log is not None:
                    self.log.log_metrics(0, last_val)
                logger.info("iteration 0 | %s", format_summary(last_val))
            for iteration in range(self.start_iteration, cfg.iterations + 1):
                metrics = self.run_iteration(iteration)
                if self._validates_at(iteration):
                    pending = (dict(metrics), rng_state(self.generator))
                    # a stop requested during the update: the validation waits for the resumed run
                    if any_rank(self.dist, self._stop_requested):
                        raise KeyboardInterrupt
                    last_val = self.validate()
                    pending = None
                    metrics.update(last_val)
                if self.log is not None:
                    self.log.log_metrics(iteration, metrics)
                logger.info("iteration %d/%d | %s", iteration, cfg.iterations, format_summary(metrics))
                # a Ctrl-C seen by any rank stops all of them at this same point
                self._stop_requested = any_rank(self.dist, self._stop_requested)
                if iteration % cfg.save_every == 0 or iteration == cfg.iterations or self._stop_requested:
                    self.save(iteration)
                if self._stop_requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # The weights are those after the last completed iteration: an interrupted rollout or
            # validation changed nothing, and an update is never interrupted half-way.
            completed = iteration if self._completed_iteration == iteration else iteration - 1
            if self._aborted:
                logger.warning("aborted by a second signal: no checkpoint written for this iteration")
            elif pending is not None:  # updated, not yet validated nor logged: the resumed run does both
                self.save(iteration, rng=pending[1], unlogged_metrics=pending[0])
            elif completed >= 1 and broadcast_object(
                    self.dist, latest_checkpoint(self.run_dir) != self._checkpoint_path(completed)):
                self.save(completed)
            if self.dist.is_main:
                if latest_checkpoint(self.run_dir) is not None:
                    logger.warning("interrupted; resume with: sdar train --resume %s", self.run_dir)
                else:
                    logger.warning("interrupted before the first checkpoint; start again with the same "
                                   "command plus --restart (replaces this run's logs)")
            raise
        finally:
            for signum, handler in previous_handlers.items():
                if handler is not None:  # None: a handler not set from Python, which cannot be put back
                    signal.signal(signum, handler)
            self.close()
        return last_val

    def close(self) -> None:
        """Close the run's logs and release the run directory's lock; :meth:`train` does this when
        it returns. A trainer driven by hand (:meth:`learn`, :meth:`validate`) holds its run
        directory until this is called or the trainer is freed. Safe to call twice."""
        if self.log is not None:
            self.log.close()
        if self._run_lock is not None:
            self._run_lock.release()

    def _finish_interrupted_iteration(self, iteration: int) -> dict[str, float]:
        """Validate the resumed checkpoint's iteration, whose validation a stop cut short, log its
        one metrics line, and rewrite its checkpoint without the pending metrics (its RNG states
        now those after the validation, as in an uninterrupted run). Returns the validation."""
        metrics = dict(self._unlogged_metrics or {})
        last_val: dict[str, float] = {}
        if self._validates_at(iteration):  # as the resumed config says (eval.every may have changed)
            logger.info("iteration %d: playing the validation the interrupted run did not finish", iteration)
            last_val = self.validate()
            metrics.update(last_val)
        if self.log is not None:
            self.log.log_metrics(iteration, metrics)
        logger.info("iteration %d/%d | %s", iteration, self.config.iterations, format_summary(metrics))
        self._unlogged_metrics = None
        self.save(iteration)
        return last_val

    _completed_iteration = 0

    _aborted = False

    stop_signal: int | None = None
    """The signal (``signal.SIGINT`` or ``signal.SIGTERM``) that stopped :meth:`train`, if any."""

    def _on_signal(self, signum, frame) -> None:
        # Several processes: the launcher forwards the terminal's Ctrl-C, so one keypress arrives
        # twice; never abort there (ranks would leave the collectives unevenly). The launcher
        # kills ranks that outlive its --shutdown-timeout.
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self._stop_requested and not self.dist.enabled:
            self._aborted = True
            raise KeyboardInterrupt
        if self.stop_signal is None:
            self.stop_signal = signum
        if self.dist.enabled:
            if not self._stop_requested and self.dist.is_main:
                logger.warning("%s: all ranks stop after this iteration and save a checkpoint", name)
        else:
            logger.warning("%s: stopping after the current step and saving a checkpoint (a second "
                           "Ctrl-C or SIGTERM aborts)", name)
        self._stop_requested = True

    def _checkpoint_path(self, iteration: int) -> Path:
        return self.run_dir / "checkpoints" / f"iter_{iteration:06d}"

    def save(self, iteration: int, rng: dict[str, Any] | None = None,
             unlogged_metrics: dict[str, float] | None = None) -> Path | None:
        """Rank 0 writes the checkpoint (the weights are the same on every rank; sharded ones are
        gathered whole first, with every rank's help) with every rank's RNG states; every rank must
        call this. Returns the folder (``None`` off rank 0).

        ``rng``: this rank's RNG states to store instead of the current ones; ``unlogged_metrics``:
        the iteration's training metrics when its metrics line is not written yet (its validation
        was interrupted; the resumed run validates and logs it)."""
        states = all_gather_objects(self.dist, rng if rng is not None else rng_state(self.generator))
        if not (self.dist.is_main or self.sharded):
            return None
        model_state = trainable_state_dict(self.model, keep=self.dist.is_main)
        optimizer_state = optimizer_state_dict(self.optimizer, keep=self.dist.is_main)
        if not self.dist.is_main:
            return None
        trainer_state: dict[str, Any] = {"rng": states[0], "warm_start": self.warm_start}
        if self.dist.enabled:
            trainer_state["rank_rng"] = states
        if unlogged_metrics is not None:
            trainer_state["unlogged_metrics"] = {k: float(v) for k, v in unlogged_metrics.items()}
        return write_checkpoint(self.run_dir, iteration, model_state, optimizer_state, trainer_state,
                                keep=self.config.keep_checkpoints)

    def run_iteration(self, iteration: int) -> dict[str, float]:
        # 1. rollout ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        with full_weights(self.model), self._autocast():  # ranks generate for different numbers of steps
            rollout = self.collect(iteration)
        rollout_s = time.perf_counter() - t0
        metrics = rollout_metrics(gather_rollout(self.dist, rollout), "train")
        metrics["train/reward_mean"] = metrics.get("train/episode_return", 0.0)
        if self.config.rollout.filter_groups:
            metrics["train/rollout_batches"] = float(rollout.batches)
            metrics["train/episodes_kept"] = float(len(rollout.episodes))
        # 2-5. log-probs, advantages, update ------------------------------------------------------
        metrics.update(self.learn(iteration, [s for s in rollout.samples if s.response_ids]))
        metrics["timing/rollout_s"] = rollout_s
        return metrics

    def collect(self, iteration: int) -> Rollout:
        """Play this iteration's B x G episodes; with several ranks, this rank's contiguous share;
        with ``rollout.filter_groups``, batches of them until B x G episodes of groups with a
        return spread are kept (:meth:`_collect_filtered`).

        Step samples and episodes carry global group and trajectory ids (as if one process had
        played them all), so advantages can group across ranks and rank order is global order.
        """
        cfg = self.config
        if cfg.rollout.filter_groups:
            return self._collect_filtered(iteration)
        seeds = task_seeds(cfg.seed, iteration, cfg.rollout.tasks_per_iteration, self.train_env.num_tasks())
        if not self.dist.enabled:
            return self._play(seeds, f"rollout {iteration}")
        # Several ranks: episodes (not whole groups) are shared out, each played as a group of one;
        # a rollout is never interrupted half-way (ranks must reach the next collective together).
        group_size = cfg.rollout.group_size
        start, stop = shard_bounds(len(seeds) * group_size, self.dist.rank, self.dist.world_size)
        if start == stop:
            return Rollout([], [])
        rollout = self._play([seeds[e // group_size] for e in range(start, stop)], f"rollout {iteration}",
                             group_size=1, one_rank_of_several=True)
        for item in [*rollout.samples, *rollout.episodes]:
            item.traj_id += start
            item.group_id = item.traj_id // group_size
        return rollout

    def _play(self, seeds: list[int], desc: str, group_size: int | None = None,
              one_rank_of_several: bool = False) -> Rollout:
        """``group_size`` copies (default ``rollout.group_size``) of each task in ``seeds``, played to
        their ends; a Ctrl-C abandons the rollout, except on ``one_rank_of_several`` (which shows
        progress on rank 0 only)."""
        cfg = self.config
        return collect_rollout(
            self.train_env, self.train_prompts, self._generate_fn(cfg.rollout.generation, self.generator),
            self.tokenizer, seeds, group_size or cfg.rollout.group_size, self.history_length,
            cfg.rollout.max_prompt_tokens, cfg.env.invalid_action_penalty, with_skills=self.spec.student_sees_skills,
            should_stop=None if one_rank_of_several else lambda: self._stop_requested,
            progress=self.dist.is_main if one_rank_of_several else True, desc=desc,
        )

    def _collect_filtered(self, iteration: int) -> Rollout:
        """Dynamic sampling (``rollout.filter_groups``, one process), as the released rollout loop
        does it: play B new tasks x G at a time, drop the groups whose episode returns are all
        equal, stop once at least B x G episodes are kept (a batch is kept whole, so more may be);
        the ``rollout.max_rollout_batches``-th batch is kept whole, spread or not. Group and
        trajectory ids run on across batches; the dropped episodes count in the metrics only."""
        cfg = self.config
        tasks, group_size = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        kept = Rollout([], [], batches=0)
        while len(kept.episodes) < tasks * group_size and kept.batches < cfg.rollout.max_rollout_batches:
            batch = kept.batches
            seeds = task_seeds(cfg.seed, iteration, tasks, self.train_env.num_tasks(), batch)
            played = self._play(seeds, f"rollout {iteration}" + (f" (batch {batch + 1})" if batch else ""))
            for item in [*played.samples, *played.episodes]:
                item.group_id += batch * tasks
                item.traj_id += batch * tasks * group_size
            kept.batches += 1
            last = kept.batches == cfg.rollout.max_rollout_batches
            part, dropped = (played, []) if last else split_groups_by_spread(played)
            kept.samples += part.samples
            kept.episodes += part.episodes
            kept.dropped_episodes += dropped
        return kept

    def learn(self, iteration: int, samples: list[StepSample]) -> dict[str, float]:
        """Steps 2-5 on this rank's step samples (all of them in a single process): log-probs with
        the rollout-time weights, advantages over the step samples of all ranks, one update, then
        where the learning signal was and the token-level samples. Every rank calls it, also with
        no step sample; returns metrics over all ranks."""
        # the trajectories ``teacher.context: sibling`` takes winners from (all ranks' samples)
        self._sibling_pool = ((self._group_samples(samples) or samples)
                              if self.config.teacher.context == "sibling" else None)
        counts = all_gather_objects(self.dist, len(samples))
        offset, total = sum(counts[: self.dist.rank]), sum(counts)
        metrics: dict[str, float] = {}

        # 2. log-probs with the rollout-time weights ----------------------------------------------
        rollout_lp = self._rollout_log_probs(iteration, samples, total, metrics)

        # 3. advantages -----------------------------------------------------------------------------
        advantages = self.compute_advantages(samples)
        abs_sums = all_gather_objects(self.dist, float(advantages.abs().sum()))
        metrics["train/advantage_abs_mean"] = (
            float(advantages.abs().mean()) if samples and not self.dist.enabled
            else sum(abs_sums) / max(total, 1))

        # 4. update ---------------------------------------------------------------------------------
        t0 = time.perf_counter()
        if total:
            metrics.update(self.update(iteration, samples, advantages, rollout_lp))
        self._sync_engine()  # the next rollout samples from the updated weights
        metrics["timing/update_s"] = time.perf_counter() - t0

        # 5. where the learning signal is, token-level samples (the old log-probs are all in now) --
        gates = self.sample_gates(samples, rollout_lp)
        metrics.update(self.signal_metrics(samples, advantages, rollout_lp, gates))
        if gates is not None:  # where the gate pushed, per action (gate_actions.jsonl)
            distilled = rollout_lp.teacher.has_context if self.config.teacher.no_winner == "skip" else None
            parts = all_gather_objects(self.dist, gate_action_sums(
                samples, gates, rollout_lp.teacher.log_probs, rollout_lp.old_log_probs, distilled))
            record = gate_actions_record(parts)
            if self.log is not None and record is not None:
                self.log.log_gate_actions(iteration, record)
        self._completed_iteration = iteration
        self._log_samples(iteration, self.sample_records(
            iteration, samples, advantages, rollout_lp, gates, offset=offset, total=total))
        return metrics

    def _rollout_log_probs(self, iteration: int, samples: list[StepSample], total: int,
                           metrics: dict[str, float]) -> RolloutLogProbs:
        """Step 2: the old, reference and teacher log-probs the loss reads, each only when it does,
        all with the rollout-time weights; adds the timings and the teacher's metrics to
        ``metrics``. ``total``: the step samples of all ranks."""
        t0 = time.perf_counter()
        # Ranks score different numbers of step samples: whole weights for the phase (FSDP).
        with full_weights(self.model), self._autocast():
            old_lp, old_entropy = self._old_log_probs(samples, total)
            ref_lp = None
            if "ref_log_probs" in self.needs and self.reference is None:  # LoRA: the adapter switched off
                with reference_log_probs_context(self.model):
                    ref_lp, _ = self._score(self.model, samples)
            old_ref_s = time.perf_counter() - t0
            teacher = (self._teacher_pass(iteration, samples, metrics)
                       if "teacher_log_probs" in self.needs else None)
        if "ref_log_probs" in self.needs and self.reference is not None:  # full fine-tuning: the frozen copy
            t0 = time.perf_counter()
            with full_weights(self.reference), self._autocast():  # gathered once the policy's are released (FSDP)
                ref_lp, _ = self._score(self.reference, samples)
            old_ref_s += time.perf_counter() - t0
        metrics["timing/old_ref_log_probs_s"] = old_ref_s
        return RolloutLogProbs(old_lp, old_entropy, ref_lp, teacher)

    def _old_log_probs(self, samples: list[StepSample], total: int):
        """The policy's log-probs of the responses, and its entropies when the gate reads them
        (``None`` otherwise). One optimizer step on all step samples: the policy at that step is
        still the rollout-time policy, so the old log-probs are the update's own (detached; empty
        rows here, filled by the update row by row); no separate scoring pass."""
        with_entropy = "teacher_entropy" in self.needs  # only an entropy-reading gate needs both
        if reuses_update_log_probs(self.config.optim, total):
            empty = [torch.zeros(0)] * len(samples)
            return empty, (list(empty) if with_entropy else None)
        return self._score(self.model, samples, with_entropy=with_entropy)

    def _teacher_pass(self, iteration: int, samples: list[StepSample], metrics: dict[str, float]) -> TeacherScores:
        """The teacher's log-probs (skills in the prompt, rollout-time weights) of the responses; adds
        its time and its prompt statistics over all ranks to ``metrics``; rank 0 logs the skill
        files it saw to ``skills_used.jsonl``."""
        cfg = self.config
        t0 = time.perf_counter()
        teacher = teacher_log_probs(
            self.model, self.train_prompts, samples, cfg.teacher.max_prompt_tokens, cfg.teacher.on_overflow,
            self.pad_id, use_cache=cfg.teacher.prefix_cache, with_entropy="teacher_entropy" in self.needs,
            micro_batch_size=cfg.optim.micro_batch_size, context=cfg.teacher.context,
            group_samples=self._sibling_pool, temperature=self.score_temperature,
        )
        metrics["timing/teacher_s"] = time.perf_counter() - t0
        parts = all_gather_objects(self.dist, (teacher.truncated, teacher.history_dropped, teacher.skill_files,
                                               teacher.has_context))
        skill_files = [files for _, _, part, _ in parts for files in part]
        has_context = [flag for *_, part in parts for flag in part]
        metrics["teacher/truncated"] = float(sum(p[0] for p in parts))
        metrics["teacher/history_dropped"] = float(sum(p[1] for p in parts))
        metrics["teacher/context_share"] = sum(has_context) / max(len(has_context), 1)
        # across ranks the skill text is told apart by its files (one text per file combination)
        metrics["teacher/distinct_skill_texts"] = float(
            teacher.distinct_skill_texts if not self.dist.enabled else len(set(skill_files)))
        if self.dist.is_main:
            self._log_skill_files(iteration, skill_files)
        return teacher

    def sample_gates(self, samples: list[StepSample],
                     rollout_lp: RolloutLogProbs) -> list[torch.Tensor] | None:
        """The gate ``L_SDAR`` applies to each step sample's tokens under the rollout-time weights
        (at the first optimizer step of the iteration the policy still has them), from
        :func:`sdar.methods.distillation_gate` with the configured ``loss.gate`` (0 on a step
        sample without a context under ``teacher.no_winner: skip``); ``None`` for a method without
        a gate, on every rank alike (also one without step samples). A step sample whose old
        log-probs are missing (its optimizer step was skipped) gets NaN."""
        if rollout_lp.teacher is None or self.config.loss.spec.distillation != "sdar":
            return None
        teacher, old_entropy = rollout_lp.teacher, rollout_lp.old_entropy
        skip = self.config.teacher.no_winner == "skip"
        gates = []
        for i, sample in enumerate(samples):
            n = len(sample.response_ids)
            gate = distillation_gate(
                self.config.loss, _row_or_nan(rollout_lp.old_log_probs[i], n), teacher.log_probs[i][None],
                _row_or_nan(old_entropy[i], n) if old_entropy is not None else None,
                teacher.entropy[i][None] if teacher.entropy is not None else None,
                keep=torch.tensor([[teacher.has_context[i]]]) if skip else None,
            )
            gates.append(gate[0])
        return gates

    def signal_metrics(self, samples, advantages, rollout_lp: RolloutLogProbs,
                       gates: list[torch.Tensor] | None) -> dict[str, float]:
        """Where the learning signal is: ``train/groups_with_signal``, the share of groups whose
        advantages are not all 0 (GRPO learns nothing from the others), and, with a teacher, the
        gap ``l_T - l_old`` and (methods with a gate) the gate ``gates`` of :meth:`sample_gates` on
        the tokens of step samples with positive and with negative advantage, token means
        (``teacher/gap_pos_adv``, ``teacher/gate_neg_adv``, ...). Most response tokens are format
        that teacher and student agree on (gap about 0, gate about 0.5), which pulls those means
        toward 0.5; so the same split is also logged on the *disagreement tokens* alone, those
        with ``|gap| >= DISAGREEMENT_NATS``: their share of the sign's tokens
        (``teacher/disagree_pos_adv``, ...) and the gate's mean on them
        (``teacher/gate_disagree_pos_adv``, ...; with the gap gate at beta 5 about the share of
        them the teacher endorses). Over the step samples of all ranks (every rank returns the
        same values)."""
        teacher, old_lp = rollout_lp.teacher, rollout_lp.old_log_probs
        flags = [(s.group_id, a != 0.0) for s, a in zip(samples, advantages.tolist())]
        # sign -> [gap sum, gate sum (None without a gate), tokens, gate sum on disagreement tokens
        # (None without a gate), disagreement tokens]
        sums: dict[str, list] = {}
        if teacher is not None:
            for i, a in enumerate(advantages.tolist()):
                sign = "pos" if a > 0 else "neg" if a < 0 else None
                if sign is None or not old_lp[i].numel() == len(samples[i].response_ids) > 0:
                    continue
                gap = teacher.log_probs[i] - old_lp[i]
                disagree = gap.abs() >= DISAGREEMENT_NATS
                acc = sums.setdefault(sign, [0.0, None, 0, None, 0] if gates is None else [0.0, 0.0, 0, 0.0, 0])
                acc[0] += float(gap.sum())
                if gates is not None:
                    acc[1] += float(gates[i].sum())
                    acc[3] += float(gates[i][disagree].sum())
                acc[2] += gap.numel()
                acc[4] += int(disagree.sum())
        parts = all_gather_objects(self.dist, (flags, sums))
        groups: dict[int, bool] = {}
        for part_flags, _ in parts:
            for group, flag in part_flags:
                groups[group] = groups.get(group, False) or flag
        out: dict[str, float] = {}
        if groups:
            out["train/groups_with_signal"] = sum(groups.values()) / len(groups)
        for sign in ("pos", "neg"):
            rows = [part_sums[sign] for _, part_sums in parts if sign in part_sums]
            tokens = sum(r[2] for r in rows)
            if tokens:
                gated = all(r[1] is not None for r in rows)
                out[f"teacher/gap_{sign}_adv"] = sum(r[0] for r in rows) / tokens
                if gated:
                    out[f"teacher/gate_{sign}_adv"] = sum(r[1] for r in rows) / tokens
                disagree = sum(r[4] for r in rows)
                out[f"teacher/disagree_{sign}_adv"] = disagree / tokens
                if gated and disagree:
                    out[f"teacher/gate_disagree_{sign}_adv"] = sum(r[3] for r in rows) / disagree
        return out

    def compute_advantages(self, samples: list[StepSample]) -> torch.Tensor:
        """Advantages of this rank's step samples; the group statistics are over the step samples of
        all ranks (their scores and ids are gathered), so a group may span ranks."""
        cfg = self.config.advantage
        penalty = self.config.env.invalid_action_penalty
        gigpo = cfg.estimator == "gigpo"
        mine = [(s.score, s.group_id, s.traj_id, s.reward - (0.0 if s.valid_action else penalty),
                 s.step, s.state.raw_observation if gigpo else None) for s in samples]
        parts = all_gather_objects(self.dist, mine)
        union = [row for part in parts for row in part]
        offset = sum(len(part) for part in parts[: self.dist.rank])
        if not union:
            return torch.zeros(0)
        scores, group_ids, traj_ids, step_rewards, steps, anchors = zip(*union)
        group_ids = torch.tensor(group_ids)
        traj_ids = torch.tensor(traj_ids)
        if not gigpo:
            advantages = grpo_advantages(
                torch.tensor(scores, dtype=torch.float32), group_ids, traj_ids,
                cross_steps=cfg.cross_steps, norm_by_std=cfg.norm_by_std,
            )
        else:
            advantages = gigpo_advantages(
                torch.tensor(step_rewards, dtype=torch.float32), group_ids, traj_ids,
                anchor_observations=list(anchors), step_indices=torch.tensor(steps),
                gamma=cfg.gigpo_gamma, omega=cfg.gigpo_omega, norm_by_std=cfg.norm_by_std,
            )
        return advantages[offset : offset + len(samples)]

    def _lr(self, iteration: int) -> float:
        return warmup_lr(self.config.optim, self.config.iterations, iteration)

    def update(self, iteration: int, samples: list[StepSample], advantages: torch.Tensor,
               rollout_lp: RolloutLogProbs) -> dict[str, float]:
        """One PPO pass over the step samples; returns token-weighted mean loss metrics.

        With several ranks, ``samples`` (and the per-sample inputs) are this rank's share, in rank
        order of the global index space. The mini-batches cut one shared permutation of the global
        indices; each rank backpropagates the members it holds, weighted by their tokens over the
        whole mini-batch's tokens, and the gradients are summed over ranks before the step, so the
        token-mean is over the global mini-batch. Every rank steps the same number of times.

        ``optim.loss_aggregation: released`` instead cuts the samples in collection order and
        weighs each micro-batch's token-mean by ``1 / (mini_batch_size // micro_batch_size)``
        (:func:`mini_batch_plan`, :func:`micro_batch_weight`); micro-batches are then cut in
        order, not sorted by length, since their membership changes the loss.

        ``rollout_lp.old_log_probs`` holds empty rows when :func:`reuses_update_log_probs` holds: each
        row (and its ``old_entropy`` row) is then replaced in place by the detached values of its
        forward pass here (ratio exactly 1).

        Sharded (FSDP): every forward/backward pass is a collective, so in each mini-batch every rank
        runs as many passes as the rank holding the most micro-batches; the others' extra passes are
        :meth:`_padding_pass` (no gradient contribution). FSDP's backward already sums the gradients.
        """
        lr = self._lr(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        batch = self._update_batch(samples, advantages, rollout_lp)
        totals = _UpdateTotals()
        for _ in range(self.config.optim.ppo_epochs):
            for mini in self._mini_batches(batch.tokens):
                self.optimizer.zero_grad(set_to_none=True)
                finite = self._accumulate_gradients(iteration, batch, mini, totals)
                self._optimizer_step(iteration, finite, totals)
        self.optimizer.zero_grad(set_to_none=True)
        return self._update_metrics(totals, lr)

    # ---- the update's bookkeeping: global indices, micro-batches, optimizer step, metrics -------
    def _update_batch(self, samples, advantages, rollout_lp: RolloutLogProbs) -> _UpdateBatch:
        """The update's inputs, with the response tokens of every rank's step samples (gathered)."""
        lengths = all_gather_objects(self.dist, [len(s.response_ids) for s in samples])
        tokens = [n for part in lengths for n in part]  # response tokens per global index
        starts = [sum(len(part) for part in lengths[:r]) for r in range(len(lengths) + 1)]  # of each rank
        return _UpdateBatch(samples, advantages, rollout_lp, tokens, starts, self.dist.rank)

    def _mini_batches(self, tokens: list[int]) -> list[list[int]]:
        """The global indices of each mini-batch of one PPO epoch, the same on every rank: rank 0
        draws the permutation (from the single-process stream) and shares it."""
        optim = self.config.optim
        if optim.loss_aggregation == "released":  # collection order, nothing drawn
            return mini_batch_plan(optim, tokens, self.generator)
        plan = mini_batch_plan(optim, tokens, self.generator) if self.dist.is_main else None
        return broadcast_object(self.dist, plan)

    def _micro_batches(self, batch: _UpdateBatch, mini: list[int]) -> tuple[list[list[int]], int]:
        """This rank's members of the global mini-batch ``mini`` cut into micro-batches (local
        indices), and the number of forward/backward passes this rank runs: one per micro-batch,
        or, sharded, as many as the rank holding the most micro-batches."""
        optim = self.config.optim
        mine = batch.local(mini)
        if optim.loss_aggregation != "released":  # micro-batches of similar lengths pad less; same summed gradient
            mine.sort(key=lambda i: (len(batch.samples[i].prompt_ids), len(batch.samples[i].response_ids)))
        size = optim.micro_batch_size
        micro_batches = [mine[k : k + size] for k in range(0, len(mine), size)]
        if not self.sharded:
            return micro_batches, len(micro_batches)
        # the busiest rank's number of micro-batches, known to every rank
        return micro_batches, max(math.ceil(sum(lo <= i < hi for i in mini) / size)
                                  for lo, hi in itertools.pairwise(batch.starts))

    def _accumulate_gradients(self, iteration: int, batch: _UpdateBatch, mini: list[int],
                              totals: _UpdateTotals) -> bool:
        """Forward and backward passes over this rank's members of the global mini-batch ``mini``.
        Returns whether every loss was finite on every rank (one rank's NaN skips the step on all)."""
        micro_batches, passes = self._micro_batches(batch, mini)
        mini_tokens = sum(batch.tokens[i] for i in mini)
        finite = True
        for pass_index in range(passes):
            if pass_index >= len(micro_batches) or not finite:  # only when sharded
                self._padding_pass()
                continue
            finite = self._micro_batch_backward(iteration, batch, micro_batches[pass_index], mini_tokens, totals)
            if not finite and not self.sharded:
                break
        return not any_rank(self.dist, not finite)

    def _micro_batch_backward(self, iteration: int, batch: _UpdateBatch, micro: list[int], mini_tokens: int,
                              totals: _UpdateTotals) -> bool:
        """One micro-batch's forward and backward pass, its token-mean loss weighted by
        :func:`micro_batch_weight`; its metrics go to ``totals``. A non-finite loss adds no
        gradient and returns False (sharded, its backward still runs: the other ranks wait for it)."""
        with self._autocast():  # the forward pass only; backward runs outside autocast
            loss, metrics, n_tokens = self._micro_batch_loss(iteration, batch, micro)
        if not torch.isfinite(loss):
            if self.sharded:
                loss.backward()
            return False
        (loss * micro_batch_weight(self.config.optim, n_tokens, mini_tokens)).backward()
        totals.add(metrics, n_tokens)
        return True

    def _optimizer_step(self, iteration: int, finite: bool, totals: _UpdateTotals) -> None:
        """Sum the gradients over ranks (FSDP's backward already has), clip them and step; a
        non-finite loss or gradient norm skips the step instead (counted in ``totals``)."""
        # the optimizer's own parameters: the sharded ones under FSDP, which receive the gradients
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if finite and not self.sharded:
            all_reduce_gradients(self.dist, params)
        grad_norm = (whole(torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)) if finite
                     else torch.tensor(float("nan")))
        if not finite or not torch.isfinite(grad_norm):
            totals.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            logger.warning("iteration %d: non-finite loss or gradient; this optimizer step is skipped", iteration)
            return
        self.optimizer.step()
        totals.grad_norms.append(float(grad_norm))

    def _update_metrics(self, totals: _UpdateTotals, lr: float) -> dict[str, float]:
        """Token-weighted means of the loss metrics over all ranks, and the optimizer's numbers."""
        parts = all_gather_objects(self.dist, (totals.sums, totals.tokens))
        sums, tokens = sum_dicts(p[0] for p in parts), sum(p[1] for p in parts)
        out = {k: v / max(tokens, 1) for k, v in sums.items()}
        grad_norms = totals.grad_norms
        out["actor/grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
        out["actor/lr"] = lr
        out["actor/skipped_updates"] = float(totals.skipped)
        out["actor/optimizer_steps"] = float(len(grad_norms))
        return out

    def _micro_batch_loss(self, iteration: int, batch: _UpdateBatch, micro: list[int]):
        """``(loss, metrics, response tokens)`` of the micro-batch ``micro`` (local indices)."""
        rows = [batch.samples[i] for i in micro]
        width = max(len(s.response_ids) for s in rows)
        want_logits = "logits" in self.needs
        # The policy's entropy is always computed, so that actor/entropy is logged for every loss; it
        # enters the loss (with its gradient) only through the entropy bonus or an entropy-reading
        # gate. Its cost is small next to the forward pass: it reads the logits the log-probs read.
        with_entropy = "entropy" in self.needs or self.config.loss.c_ent != 0
        scored = score_responses(self.model, [s.prompt_ids for s in rows], [s.response_ids for s in rows],
                                 with_entropy=True, pad_id=self.pad_id, return_logits=want_logits,
                                 temperature=self.score_temperature)
        teacher_logits = self._teacher_logits(rows) if want_logits else None
        mask = scored.response_mask.to(self.device)
        if not _finite_on(scored.log_probs, mask) or (with_entropy and not _finite_on(scored.entropy, mask)):
            # The model itself produced NaN/inf: a NaN loss skips this optimizer step. It keeps the
            # graph, so a sharded model can still run the backward pass the other ranks join.
            return scored.log_probs.sum() * float("nan"), {}, 0
        rollout_lp = batch.rollout_lp
        old_lp, ref_lp, teacher = rollout_lp.old_log_probs, rollout_lp.ref_log_probs, rollout_lp.teacher
        for row, i in enumerate(micro):  # the old log-probs this update reuses (empty rows)
            n = len(rows[row].response_ids)
            if old_lp[i].numel() == 0 and n > 0:
                old_lp[i] = scored.log_probs[row, :n].detach().float().cpu()
                if rollout_lp.old_entropy is not None:
                    rollout_lp.old_entropy[i] = scored.entropy[row, :n].detach().float().cpu()
        dev = lambda t: t.to(self.device)
        inputs: dict[str, Any] = dict(
            log_probs=scored.log_probs,
            old_log_probs=dev(pad_rows([old_lp[i] for i in micro], width)),
            advantages=dev(batch.advantages[micro].unsqueeze(1).expand(-1, width).contiguous()) * mask,
            response_mask=mask,
            iteration=iteration,
        )
        inputs["entropy"] = scored.entropy if with_entropy else scored.entropy.detach()
        if ref_lp is not None:
            inputs["ref_log_probs"] = dev(pad_rows([ref_lp[i] for i in micro], width))
        if teacher is not None:
            inputs["teacher_log_probs"] = dev(pad_rows([teacher.log_probs[i] for i in micro], width))
            if self.config.teacher.no_winner == "skip":
                inputs["distill_mask"] = dev(torch.tensor([[teacher.has_context[i]] for i in micro]))
            if teacher.entropy is not None:
                inputs["teacher_entropy"] = dev(pad_rows([teacher.entropy[i] for i in micro], width))
        if want_logits:
            inputs["logits"] = scored.logits
            inputs["teacher_logits"] = teacher_logits
        loss, metrics = actor_loss(self.config.loss, LossInputs(**inputs))
        return loss, metrics, int(mask.sum().item())

    def _padding_pass(self) -> None:
        """A pass that adds nothing to any gradient (its loss is multiplied by 0) but runs the
        collectives of a real micro-batch of a sharded model: a forward pass with gradient, the
        teacher-logits pass when the loss needs one, and a backward pass."""
        ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)  # any valid token
        with self._autocast():
            logits = self.model(input_ids=ids, use_cache=False).logits
            if "logits" in self.needs:
                with torch.no_grad():
                    self.model(input_ids=ids, use_cache=False)
        (logits.float().sum() * 0.0).backward()

    def _group_samples(self, samples: list[StepSample]):
        """What ``teacher.context: sibling`` reads: every rank's step samples (only the fields
        that name a trajectory's actions and outcome); ``None`` for the other contexts."""
        if self.config.teacher.context != "sibling" or not self.dist.enabled:
            return None
        mine = [(s.group_id, s.traj_id, s.step, s.action, s.won) for s in samples]
        keys = ("group_id", "traj_id", "step", "action", "won")
        return [types.SimpleNamespace(**dict(zip(keys, row)))
                for part in all_gather_objects(self.dist, mine) for row in part]

    @torch.no_grad()
    def _teacher_logits(self, rows: list[StepSample]) -> torch.Tensor:
        cfg = self.config.teacher
        # ``sibling`` takes winners from the iteration's pool, not from this micro-batch alone
        prompts = teacher_prompts(self.train_prompts, rows, cfg.context, cfg.max_prompt_tokens, cfg.on_overflow,
                                  self._sibling_pool)
        scored = score_responses(self.model, [p.ids for p in prompts], [s.response_ids for s in rows],
                                 pad_id=self.pad_id, return_logits=True, temperature=self.score_temperature)
        return scored.logits.detach()

    # ---- validation and logging helpers -------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Play the fixed validation panel (group size 1, no skills unless configured), split over
        the ranks."""
        panel = dict(model=self.model, tokenizer=self.tokenizer, env=self.val_env, builder=self.val_prompts,
                     config=self.config, history_length=self.history_length, context=self.dist,
                     engine=self.engine, should_stop=None if self.dist.enabled else lambda: self._stop_requested)
        with full_weights(self.model):  # ranks play different numbers of steps
            metrics = run_panel(**panel, with_skills=self.config.eval.with_skills, prefix="val")
            if self.spec.student_sees_skills and not self.config.eval.with_skills:
                metrics.update(run_panel(**panel, with_skills=True, prefix="val_skills"))
        return metrics

    def _log_skill_files(self, iteration: int, skill_files: list[tuple[str, ...]]) -> None:
        used = sorted({f for files in skill_files for f in files})
        logger.info("iteration %d: teacher skill files used: %s", iteration, ", ".join(used))
        with (self.run_dir / "skills_used.jsonl").open("a", encoding="utf-8") as f:
            counts: dict[str, int] = {}
            for files in skill_files:
                key = "+".join(files)
                counts[key] = counts.get(key, 0) + 1
            f.write(json.dumps({"iteration": iteration, "files": used, "combinations": counts}) + "\n")

    def _log_samples(self, iteration: int, records: list[dict]) -> None:
        """Every rank's token-level records to ``samples.jsonl`` (rank 0 writes)."""
        parts = all_gather_objects(self.dist, records)
        if self.log is not None:
            self.log.log_samples(iteration, [r for part in parts for r in part])

    def sample_records(self, iteration, samples, advantages, rollout_lp: RolloutLogProbs,
                       gates: list[torch.Tensor] | None, offset: int = 0, total: int | None = None) -> list[dict]:
        """Token-level records of ``log_samples`` step samples spread evenly over the iteration's
        ``total`` step samples (global indices); this rank returns those it holds (its first
        step sample has global index ``offset``). A record carries ``gate`` (from ``gates``, see
        :meth:`sample_gates`) only for a method with a gate."""
        total = len(samples) if total is None else total
        n = min(self.config.log_samples, total)
        if n == 0:
            return []
        picks = sorted({round(k * (total - 1) / max(n - 1, 1)) for k in range(n)})
        teacher = rollout_lp.teacher
        records = []
        for i in [p - offset for p in picks if offset <= p < offset + len(samples)]:
            s = samples[i]
            old_lp = rollout_lp.old_log_probs[i]
            student = old_lp if old_lp.numel() == len(s.response_ids) else None  # None: step skipped
            record = {
                "iteration": iteration, "task_id": s.task.task_id, "task_type": s.task.task_type, "step": s.step,
                "won": s.won, "action": s.action, "valid_action": s.valid_action, "advantage": float(advantages[i]),
                "skill_files": list(teacher.skill_files[i]) if teacher is not None else list(s.skill_files),
                "prompt": self.tokenizer.decode(s.prompt_ids, skip_special_tokens=False),
                "tokens": [self.tokenizer.decode([t]) for t in s.response_ids],
                "log_probs": student.tolist() if student is not None else [float("nan")] * len(s.response_ids),
                "teacher_log_probs": teacher.log_probs[i].tolist() if teacher is not None else None,
            }
            if gates is not None:
                record["gate"] = gates[i].tolist()
            records.append(record)
        return records

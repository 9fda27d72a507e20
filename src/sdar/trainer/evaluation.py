"""Validation on a fixed panel of tasks (docs/algorithm.md, "Validation panel") and ``sdar eval``.

The panel is tasks ``eval.seed .. eval.seed + eval.num_tasks - 1`` of the validation split, one
episode each (group size 1), the same every time. Sampling uses its own generator seeded from
``eval.seed``, so two evaluations of the same weights give the same numbers. Skills are not shown
unless ``with_skills`` (Skill-Prompt / Skill-GRPO's "with skills" evaluation).

With several processes the panel is split into contiguous shares, one per rank, each sampled with
its own generator (rank 0 keeps ``eval.seed``), and the metrics are computed on all ranks' episodes.
One process gives the same numbers as before; N processes give numbers that are reproducible for N.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdar.envs.base import AgentEnv
from sdar.models.generation import GenerationConfig, generate
from sdar.models.loading import autocast_context
from sdar.rollout import PromptBuilder, Rollout, collect_rollout, rollout_metrics
from sdar.trainer.distributed import (
    SINGLE,
    DistributedContext,
    gather_rollout,
    rank_seed,
    shard_bounds,
)


def eval_generation_config(config) -> GenerationConfig:
    """The training sampling settings with the validation temperature / greedy / budget applied."""
    gen = dataclasses.replace(config.rollout.generation, temperature=config.eval.temperature,
                              greedy=config.eval.greedy)
    if config.eval.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=config.eval.max_new_tokens)
    return gen


def load_eval_policy(config, checkpoint: str | Path | None = None) -> tuple[Any, Any, str | None]:
    """The policy ``sdar eval`` plays: the config's model, the warm start under it, then the run's
    ``checkpoint`` (a checkpoint folder or run directory; ``None``: the untrained or warm-started
    model), frozen weights cast as ``model.autocast`` says. Returns ``(model, tokenizer,
    init_checkpoint)``, the last the warm start applied: the checkpoint's recorded one when the
    config names none, refused when the config names other weights
    (:func:`~sdar.trainer.checkpoint.warm_start_for`)."""
    from sdar.models.loading import cast_frozen_weights, load_policy
    from sdar.trainer.checkpoint import (
        apply_checkpoint,
        apply_warm_start,
        read_checkpoint,
        warm_start_for,
    )

    init_checkpoint = str(config.init_checkpoint) if config.init_checkpoint else None
    loaded = None
    if checkpoint is not None:  # read before the model loads; its warm start is the one it records
        loaded = read_checkpoint(checkpoint, with_optimizer=False)
        init_checkpoint = warm_start_for(loaded["trainer_state"], init_checkpoint, loaded["path"])
    model, tokenizer = load_policy(config.model)
    if init_checkpoint:  # a run's checkpoints continue from its warm start
        model, _ = apply_warm_start(model, config.model.lora, init_checkpoint)
    if loaded is not None:
        apply_checkpoint(loaded, model)
    cast_frozen_weights(model, config.model)  # model.autocast: frozen weights cast once
    return model, tokenizer, init_checkpoint


def run_panel(model, tokenizer, env: AgentEnv, builder: PromptBuilder, config, history_length: int,
              with_skills: bool = False, prefix: str = "val", progress: bool = True,
              should_stop: Callable[[], bool] | None = None,
              context: DistributedContext = SINGLE, engine=None, sample_seed: int | None = None
              ) -> dict[str, float]:
    """Play the validation panel once; returns ``{prefix}/success``, per task type, env metrics
    (:func:`play_panel`'s episodes through ``rollout_metrics``; the arguments are the same)."""
    return rollout_metrics(play_panel(model, tokenizer, env, builder, config, history_length, with_skills, prefix,
                                      progress, should_stop, context, engine, sample_seed), prefix)


def play_panel(model, tokenizer, env: AgentEnv, builder: PromptBuilder, config, history_length: int,
               with_skills: bool = False, prefix: str = "val", progress: bool = True,
               should_stop: Callable[[], bool] | None = None,
               context: DistributedContext = SINGLE, engine=None, sample_seed: int | None = None
               ) -> Rollout:
    """Play the validation panel once; returns its episodes and step samples (all ranks', in rank
    order; ``prefix`` labels the progress bar).

    ``sample_seed`` seeds the sampling generator instead of ``eval.seed`` (the panel's tasks stay
    ``eval.seed ..``): another pass over the same panel (``sdar eval --passes``).

    With ``context`` of several ranks every rank must call this; each plays its share of the panel
    and every rank returns the whole panel (step samples without their environment state:
    :func:`~sdar.trainer.distributed.gather_rollout`). ``engine``: a ``VllmGenerator`` to sample
    with instead of the transformers path (its weights must be in sync with ``model``).
    """
    seed = config.eval.seed if sample_seed is None else sample_seed
    generator = torch.Generator().manual_seed(rank_seed(seed, context.rank))
    gen = eval_generation_config(config)

    def run(prompt_ids):
        model.eval()
        sample = engine.generate if engine is not None else generate
        return sample(model, tokenizer, prompt_ids, gen, generator=generator,
                      batch_size=config.rollout.generation_batch_size)

    seeds = list(range(config.eval.seed, config.eval.seed + config.eval.num_tasks))
    start, stop = shard_bounds(len(seeds), context.rank, context.world_size)
    rollout = Rollout([], [])
    if start < stop:
        with autocast_context(config.model, next(model.parameters()).device):
            rollout = collect_rollout(
                env, builder, run, tokenizer, seeds[start:stop], 1, history_length,
                config.rollout.max_prompt_tokens, config.env.invalid_action_penalty,
                with_skills=with_skills, should_stop=should_stop,
                progress=progress and context.is_main, desc=prefix,
            )
    return gather_rollout(context, rollout)


def episode_rows(rollout: Rollout, panel_pass: int = 1) -> list[dict[str, Any]]:
    """One JSON-ready row per step of the panel's episodes (``sdar eval --episodes``), in panel
    then step order: the pass, the task, the episode's index in the panel, the step, what the agent
    saw (observation and admissible actions; ``None`` after a gather of several ranks, whose step
    samples travel without their state, and where the environment has no list), its response, the
    parsed action, whether the environment accepted it, the step's reward, and whether the episode
    was won."""
    rows, episode = [], -1
    for s in rollout.samples:  # each episode's steps in order, episodes in panel order (ranks in turn)
        episode += s.step == 0
        rows.append({
            "pass": panel_pass, "task_id": s.task.task_id, "task_type": s.task.task_type, "episode": episode,
            "step": s.step,
            "observation": s.state.observation if s.state is not None else None,
            "admissible_actions": (list(s.state.admissible_actions) if s.state is not None
                                   and s.state.admissible_actions is not None else None),
            "response": s.response_text, "action": s.action, "valid_action": s.valid_action,
            "reward": s.reward, "won": s.won,
        })
    return rows

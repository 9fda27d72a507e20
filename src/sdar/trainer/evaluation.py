"""Validation on a fixed panel of tasks (algorithm.md section 5) and ``sdar eval``.

The panel is tasks ``eval.seed .. eval.seed + eval.num_tasks - 1`` of the validation split, one
episode each (group size 1), the same every time. Sampling uses its own generator seeded from
``eval.seed``, so two evaluations of the same weights give the same numbers. Skills are not shown
unless ``with_skills`` (Skill-Prompt / Skill-GRPO's "with skills" evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from sdar.envs.base import AgentEnv
from sdar.models.generation import GenerationConfig, generate
from sdar.rollout import PromptBuilder, collect_rollout, rollout_metrics


def eval_generation_config(config) -> GenerationConfig:
    """The training sampling settings with the validation temperature / greedy / budget applied."""
    gen = dataclasses.replace(config.rollout.generation, temperature=config.eval.temperature,
                              greedy=config.eval.greedy)
    if config.eval.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=config.eval.max_new_tokens)
    return gen


def run_panel(model, tokenizer, env: AgentEnv, builder: PromptBuilder, config, history_length: int,
              with_skills: bool = False, prefix: str = "val", progress: bool = True,
              should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Play the validation panel once; returns ``{prefix}/success``, per task type, env metrics."""
    generator = torch.Generator().manual_seed(config.eval.seed)
    gen = eval_generation_config(config)

    def run(prompt_ids):
        model.eval()
        return generate(model, tokenizer, prompt_ids, gen, generator=generator,
                        batch_size=config.rollout.generation_batch_size)

    seeds = list(range(config.eval.seed, config.eval.seed + config.eval.num_tasks))
    rollout = collect_rollout(env, builder, run, tokenizer, seeds, 1, history_length,
                              config.rollout.max_prompt_tokens, config.env.invalid_action_penalty,
                              with_skills=with_skills, should_stop=should_stop, progress=progress, desc=prefix)
    return rollout_metrics(rollout, prefix)

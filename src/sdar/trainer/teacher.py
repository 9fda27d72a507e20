"""The teacher branch: skill-conditioned re-scoring of the sampled tokens.

Described in docs/algorithm.md, "Teacher prompt".

The teacher is the policy itself with the rollout-time weights, reading the task's skills in front
of the student's prompt. It scores the very response ids the student sampled, without gradient,
once per iteration before the update. Step samples are grouped by their skill text so that the
skill prefix's key/value cache is computed once per distinct text (``teacher.prefix_cache``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from sdar.models.scoring import score_with_prefix
from sdar.rollout.collector import StepSample
from sdar.rollout.prompts import PromptBuilder


@dataclass
class TeacherScores:
    """Per step sample (same order as the input): response-aligned 1-D tensors."""

    log_probs: list[torch.Tensor]
    entropy: list[torch.Tensor] | None
    skill_files: list[tuple[str, ...]]
    truncated: int
    """Step samples whose teacher prompt lost history to fit the budget."""
    history_dropped: int
    """History pairs dropped in total."""
    distinct_skill_texts: int


@torch.no_grad()
def teacher_log_probs(model, builder: PromptBuilder, samples: list[StepSample], max_prompt_tokens: int,
                      on_overflow: str, pad_id: int, use_cache: bool = True, with_entropy: bool = False,
                      micro_batch_size: int | None = None) -> TeacherScores:
    """Score every step sample's response under the skill-conditioned teacher prompt."""
    prompts = [builder.build(s.state, s.history, max_prompt_tokens, with_skills=True, on_overflow=on_overflow)
               for s in samples]
    by_prefix: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_prefix[tuple(p.prefix_ids)].append(i)
    log_probs: list[torch.Tensor | None] = [None] * len(samples)
    entropy: list[torch.Tensor | None] = [None] * len(samples)
    for prefix, rows in by_prefix.items():
        scored = score_with_prefix(
            model, list(prefix), [prompts[i].rest_ids for i in rows], [samples[i].response_ids for i in rows],
            use_cache=use_cache, with_entropy=with_entropy, pad_id=pad_id, micro_batch_size=micro_batch_size,
        )
        for j, i in enumerate(rows):
            n = len(samples[i].response_ids)
            log_probs[i] = scored.log_probs[j, :n].float().cpu()
            if with_entropy:
                entropy[i] = scored.entropy[j, :n].float().cpu()
    return TeacherScores(
        log_probs=log_probs,  # type: ignore[arg-type]
        entropy=entropy if with_entropy else None,  # type: ignore[arg-type]
        skill_files=[p.skill_files for p in prompts],
        truncated=sum(p.history_dropped > 0 for p in prompts),
        history_dropped=sum(p.history_dropped for p in prompts),
        distinct_skill_texts=len(by_prefix),
    )

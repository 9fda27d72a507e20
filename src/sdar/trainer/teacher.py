"""The teacher branch: context-conditioned re-scoring of the sampled tokens.

Described in docs/algorithm.md, "Teacher prompt".

The teacher is the policy itself with the rollout-time weights, reading privileged context in
front of the student's prompt. It scores the very response ids the student sampled, without
gradient, once per iteration before the update. Step samples are grouped by their context text so
that its key/value cache is computed once per distinct text (``teacher.prefix_cache``).

The privileged context (``teacher.context``):

* ``skills`` (the paper): the task's routed skill files.
* ``hint``: the environment's per-state hint (``EnvState.hint``), e.g. the key fact of the answer
  in the controlled ``toy_panels`` environment. An environment without hints is refused.
* ``sibling``: the actions of a successful trajectory of the same group (the self-teacher of SDPO,
  arXiv 2601.20802): another winner of the group when there is one, else the sample's own
  trajectory when it won. A step sample whose group has no winner gets no context: its teacher
  prompt is the student prompt, so its gap is about 0 (gate 0.5), unless ``teacher.no_winner:
  skip`` leaves it out of the distillation term (:attr:`TeacherScores.has_context`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from sdar.models.scoring import score_with_prefix
from sdar.rollout.collector import StepSample
from sdar.rollout.prompts import PromptBuilder, PromptIds
from sdar.skills import SkillSelection


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
    has_context: list[bool]
    """Per step sample: whether a context was chosen for its teacher prompt (False: a ``sibling``
    step sample of a group without a winner, scored on the student's own prompt). With
    ``teacher.on_overflow: truncate_left`` the chosen context may still be cut from the prompt."""


CONTEXTS = ("skills", "hint", "sibling")


def sibling_actions(samples: list[StepSample]) -> dict[int, list[tuple[int, list[str]]]]:
    """Per group id, its won trajectories as ``(traj_id, actions in step order)``, by trajectory id.

    ``samples`` must hold every step sample of the groups (all ranks' when groups span ranks)."""
    steps: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    won: dict[tuple[int, int], bool] = {}
    for s in samples:
        key = (s.group_id, s.traj_id)
        steps[key].append((s.step, s.action))
        won[key] = won.get(key, False) or s.won
    out: dict[int, list[tuple[int, list[str]]]] = defaultdict(list)
    for (group, traj), pairs in sorted(steps.items()):
        if won[(group, traj)]:
            out[group].append((traj, [a for _, a in sorted(pairs)]))
    return dict(out)


def sibling_context(sample: StepSample, winners: dict[int, list[tuple[int, list[str]]]]) -> SkillSelection:
    """The context text of ``sample`` under ``teacher.context: sibling`` (empty: no winner)."""
    group = winners.get(sample.group_id, [])
    others = [w for w in group if w[0] != sample.traj_id]
    chosen = others[0] if others else (group[0] if group else None)
    if chosen is None:
        return SkillSelection(files=(), text="")
    return SkillSelection(files=(f"sibling:{chosen[0]}",), text=sibling_text(chosen[1]))


def sibling_text(actions: list[str]) -> str:
    """The ``sibling`` context naming a successful trajectory's ``actions`` in step order."""
    lines = [f"{k}. {a}" for k, a in enumerate(actions, start=1)]
    return "A successful attempt at this task took these actions:\n" + "\n".join(lines)


def teacher_contexts(kind: str, builder: PromptBuilder, samples: list[StepSample],
                     group_samples: list[StepSample] | None = None) -> list[SkillSelection]:
    """The privileged context of every step sample under ``teacher.context`` = ``kind``.

    ``group_samples``: the step samples whose won trajectories serve ``sibling`` (default
    ``samples``; with several ranks, all ranks' step samples)."""
    if kind == "skills":
        return [builder.select_skills(s.state, s.history) for s in samples]
    if kind == "hint":
        missing = [s for s in samples if s.state.hint is None]
        if missing:
            raise ValueError(f"teacher.context=hint: environment {builder.env.name!r} gives no hints "
                             "(EnvState.hint); use teacher.context=skills or sibling, or an environment "
                             "with hints such as toy_panels")
        return [SkillSelection(files=("hint",), text=s.state.hint) for s in samples]
    if kind == "sibling":
        winners = sibling_actions(group_samples if group_samples is not None else samples)
        return [sibling_context(s, winners) for s in samples]
    raise ValueError(f"teacher.context must be one of {', '.join(CONTEXTS)}, got {kind!r}")


def teacher_prompts(builder: PromptBuilder, samples: list[StepSample], context: str, max_prompt_tokens: int,
                    on_overflow: str, group_samples: list[StepSample] | None = None) -> list[PromptIds]:
    """The teacher's prompt of every step sample: its state and history with the privileged
    ``context`` (:func:`teacher_contexts`) in ``builder``'s teacher layout, within
    ``max_prompt_tokens`` (``on_overflow`` as ``teacher.on_overflow``)."""
    return _build(builder, samples, teacher_contexts(context, builder, samples, group_samples), max_prompt_tokens,
                  on_overflow)


def _build(builder: PromptBuilder, samples: list[StepSample], contexts: list[SkillSelection], max_prompt_tokens: int,
           on_overflow: str) -> list[PromptIds]:
    return [builder.build(s.state, s.history, max_prompt_tokens, with_skills=True, on_overflow=on_overflow,
                          context=c) for s, c in zip(samples, contexts)]


@torch.no_grad()
def teacher_log_probs(model, builder: PromptBuilder, samples: list[StepSample], max_prompt_tokens: int,
                      on_overflow: str, pad_id: int, use_cache: bool = True, with_entropy: bool = False,
                      micro_batch_size: int | None = None, context: str = "skills",
                      group_samples: list[StepSample] | None = None, temperature: float = 1.0) -> TeacherScores:
    """Score every step sample's response under the context-conditioned teacher prompt
    (``context``: one of :data:`CONTEXTS`; ``group_samples`` as in :func:`teacher_contexts`), from
    ``log_softmax(logits / temperature)`` (1: the model's own distribution)."""
    contexts = teacher_contexts(context, builder, samples, group_samples)
    prompts = _build(builder, samples, contexts, max_prompt_tokens, on_overflow)
    by_prefix: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_prefix[tuple(p.prefix_ids)].append(i)
    log_probs: list[torch.Tensor | None] = [None] * len(samples)
    entropy: list[torch.Tensor | None] = [None] * len(samples)
    for prefix, rows in by_prefix.items():
        scored = score_with_prefix(
            model, list(prefix), [prompts[i].rest_ids for i in rows], [samples[i].response_ids for i in rows],
            use_cache=use_cache, with_entropy=with_entropy, pad_id=pad_id, micro_batch_size=micro_batch_size,
            temperature=temperature,
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
        truncated=sum(p.history_dropped > 0 or p.truncated for p in prompts),
        history_dropped=sum(p.history_dropped for p in prompts),
        distinct_skill_texts=len(by_prefix),
        has_context=[bool(c.text) for c in contexts],
    )

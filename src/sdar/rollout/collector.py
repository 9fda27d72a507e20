"""Step-wise multi-turn rollout collection (docs/algorithm.md, "Rollout").

One call plays ``len(seeds) * group_size`` episodes to the end. At every environment step all live
episodes generate in one batch; finished episodes are masked out. Every (trajectory, step) becomes
one ``StepSample``: its own prompt (rebuilt from the template with the last H pairs, so the prompt
length stays flat however long the episode runs), the sampled response ids, and the bookkeeping
that advantages need (group id, trajectory id, step index, validity, episode return).

Deliberate choices:
* The response ids are kept exactly as sampled (EOS included when produced); the text is decoded
  only to parse the action. Scoring later uses these ids, never a re-tokenisation.
* An invalid action (missing/malformed tag, or, under ``env.action_rule: project``, refused by
  the environment; ``AgentEnv.action_valid``) is still applied, the environment answers as it
  would, and the step's score loses ``invalid_action_penalty``.
* The score of a step sample is ``S = R(episode) - penalty * [invalid]``; it is what GRPO
  normalises within the group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from sdar.envs.base import AgentEnv, EnvState, TaskInfo
from sdar.rollout.prompts import PromptBuilder

logger = logging.getLogger(__name__)

# generate(prompt_ids) -> response ids per prompt. The trainer binds model, tokenizer and sampling.
GenerateFn = Callable[[list[list[int]]], list[list[int]]]


@dataclass
class StepSample:
    """One agent turn: the unit of training (docs/algorithm.md, "Notation and tensor contracts")."""

    group_id: int
    """Index of the task in this rollout; the G copies of a task share it (the GRPO group)."""
    traj_id: int
    """Index of the episode in this rollout (unique per trajectory)."""
    step: int
    """Step index inside the episode, from 0."""
    task: TaskInfo
    state: EnvState
    """The state the action was taken in (kept to re-render the teacher prompt)."""
    history: list[tuple[str, str]]
    """The (observation, action) pairs shown in the student's prompt, oldest first: the last H,
    less those dropped to fit ``rollout.max_prompt_tokens``. The teacher's prompt is built from
    the same pairs."""
    prompt_ids: list[int]
    response_ids: list[int]
    response_text: str
    action: str
    valid_action: bool
    reward: float
    """Reward of this transition."""
    skill_files: tuple[str, ...] = ()
    """Skill files in the student's own prompt (Skill-GRPO / Skill-Prompt only)."""
    prompt_truncated: bool = False
    """The student's prompt was left-truncated after dropping all history (over budget without it)."""
    history_dropped: int = 0
    """History pairs of the last H left out of the student's prompt to fit ``rollout.max_prompt_tokens``."""
    episode_return: float = 0.0
    won: bool = False
    score: float = 0.0


@dataclass
class Episode:
    """The outcome of one trajectory."""

    group_id: int
    traj_id: int
    task: TaskInfo
    steps: int
    episode_return: float
    won: bool
    invalid_actions: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Rollout:
    samples: list[StepSample]
    episodes: list[Episode]
    dropped_episodes: list[Episode] = field(default_factory=list)
    """Episodes played but not trained on (``rollout.filter_groups``: their group had no return
    spread); they count in the rollout metrics, their step samples are gone."""
    batches: int = 1
    """Batches of B x G episodes played for this rollout (more than one with ``filter_groups``)."""


def split_groups_by_spread(rollout: Rollout) -> tuple[Rollout, list[Episode]]:
    """DAPO's group filter: the groups whose episode returns are not all equal (``Rollout`` of their
    step samples and episodes) and the episodes of the other groups (GRPO gives them advantage 0)."""
    returns: dict[int, set[float]] = {}
    for e in rollout.episodes:
        returns.setdefault(e.group_id, set()).add(e.episode_return)
    spread = {g for g, values in returns.items() if len(values) > 1}
    kept = Rollout([s for s in rollout.samples if s.group_id in spread],
                   [e for e in rollout.episodes if e.group_id in spread])
    return kept, [e for e in rollout.episodes if e.group_id not in spread]


def collect_rollout(
    env: AgentEnv,
    builder: PromptBuilder,
    generate: GenerateFn,
    tokenizer,
    seeds: Sequence[int],
    group_size: int,
    history_length: int,
    max_prompt_tokens: int,
    invalid_action_penalty: float,
    with_skills: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    desc: str = "rollout",
) -> Rollout:
    """Play every episode to its end and return its step samples and episode outcomes.

    Args:
        seeds: one seed per task; copies ``0..group_size-1`` of ``seeds[j]`` form group ``j``.
        history_length: H, the number of past (observation, action) pairs in each prompt.
        with_skills: the student itself sees the skills (Skill-GRPO training, Skill-Prompt eval).
        should_stop: polled once per step; when it returns True the rollout is abandoned and
            ``KeyboardInterrupt`` raised (used for a clean Ctrl-C).
    """
    states = env.reset(list(seeds), group_size=group_size)
    n = len(states)
    histories: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    per_episode: list[list[StepSample]] = [[] for _ in range(n)]
    bar = tqdm(total=n, desc=desc, unit="ep", disable=not progress, leave=False)
    while True:
        live = [i for i, s in enumerate(states) if not s.done]
        if not live:
            break
        if should_stop is not None and should_stop():
            bar.close()
            raise KeyboardInterrupt("rollout interrupted")
        prompts, windows = [], []
        for i in live:
            windows.append(histories[i][-history_length:] if history_length > 0 else [])
            prompts.append(builder.build(states[i], windows[-1], max_prompt_tokens, with_skills=with_skills,
                                         role="student"))
        responses = generate([p.ids for p in prompts])
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        parsed = [env.parse_action(t) for t in texts]
        actions: list[str | None] = [None] * n
        for j, i in enumerate(live):
            actions[i] = parsed[j].action
        new_states = env.step(actions)
        for j, i in enumerate(live):
            new = new_states[i]
            per_episode[i].append(StepSample(
                group_id=i // group_size, traj_id=i, step=states[i].step, task=states[i].task,
                # the pairs the student's prompt kept (the oldest are dropped to fit its budget)
                state=states[i], history=windows[j][len(windows[j]) - prompts[j].history_used:],
                prompt_ids=prompts[j].ids, response_ids=list(responses[j]), response_text=texts[j],
                action=parsed[j].action, valid_action=env.action_valid(parsed[j], new),
                reward=float(new.reward), skill_files=prompts[j].skill_files,
                prompt_truncated=prompts[j].truncated, history_dropped=prompts[j].history_dropped,
            ))
            histories[i].append((states[i].observation, parsed[j].action))
            if new.done:
                bar.update(1)
        bar.set_postfix(live=sum(not s.done for s in new_states))
        states = new_states
    bar.close()

    samples: list[StepSample] = []
    episodes: list[Episode] = []
    for i, steps in enumerate(per_episode):
        episode_return = sum(s.reward for s in steps)
        won = states[i].won
        for s in steps:
            s.episode_return = episode_return
            s.won = won
            s.score = episode_return - (0.0 if s.valid_action else invalid_action_penalty)
        samples.extend(steps)
        episodes.append(Episode(
            group_id=i // group_size, traj_id=i, task=states[i].task, steps=len(steps),
            episode_return=episode_return, won=won,
            invalid_actions=sum(not s.valid_action for s in steps), metrics=dict(states[i].metrics),
        ))
    return Rollout(samples, episodes)


def rollout_metrics(rollout: Rollout, prefix: str) -> dict[str, float]:
    """Success overall and per task type, returns, lengths, invalid-action rate, env metrics over
    every episode played (dropped ones included); response and prompt lengths, the student's
    truncated prompts and dropped history pairs, and the step-sample count over the step samples
    kept."""
    eps = rollout.episodes + rollout.dropped_episodes
    out: dict[str, float] = {}
    if not eps:
        return out
    out[f"{prefix}/success"] = sum(e.won for e in eps) / len(eps)
    out[f"{prefix}/episode_return"] = sum(e.episode_return for e in eps) / len(eps)
    out[f"{prefix}/episode_length"] = sum(e.steps for e in eps) / len(eps)
    out[f"{prefix}/episodes"] = float(len(eps))
    n_steps = sum(e.steps for e in eps)
    out[f"{prefix}/invalid_action_rate"] = sum(e.invalid_actions for e in eps) / max(n_steps, 1)
    by_type: dict[str, list] = {}
    for e in eps:
        by_type.setdefault(e.task.task_type, []).append(e)
    for task_type, group in sorted(by_type.items()):
        out[f"{prefix}/success/{task_type}"] = sum(e.won for e in group) / len(group)
    metric_names = sorted({k for e in eps for k, v in e.metrics.items() if isinstance(v, (int, float))})
    for name in metric_names:
        values = [float(e.metrics[name]) for e in eps if isinstance(e.metrics.get(name), (int, float))]
        if values:
            out[f"{prefix}/{name}"] = sum(values) / len(values)
    if rollout.samples:
        out[f"{prefix}/response_length"] = sum(len(s.response_ids) for s in rollout.samples) / len(rollout.samples)
        out[f"{prefix}/prompt_length"] = sum(len(s.prompt_ids) for s in rollout.samples) / len(rollout.samples)
        out[f"{prefix}/prompt_truncated"] = float(sum(s.prompt_truncated for s in rollout.samples))
        out[f"{prefix}/history_dropped"] = float(sum(s.history_dropped for s in rollout.samples))
        out[f"{prefix}/step_samples"] = float(len(rollout.samples))
    return out


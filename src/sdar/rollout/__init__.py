"""Step-wise multi-turn rollouts: prompt building (student and teacher) and the batched collector."""

from sdar.rollout.collector import (
    Episode,
    Rollout,
    StepSample,
    collect_rollout,
    rollout_metrics,
    split_groups_by_spread,
)
from sdar.rollout.prompts import PromptBuilder, PromptIds, PromptTooLongError

__all__ = [
    "Episode",
    "PromptBuilder",
    "PromptIds",
    "PromptTooLongError",
    "Rollout",
    "StepSample",
    "collect_rollout",
    "rollout_metrics",
    "split_groups_by_spread",
]

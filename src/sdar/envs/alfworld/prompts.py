"""What the ALFWorld agent reads and writes: the step prompt and the action tag.

The prompt follows the step-wise, bounded-history template of docs/algorithm.md, "Rollout" (as in
verl-agent's ALFWorld prompt, re-worded for this project): the task, the last H (observation,
action) pairs, the current observation, the admissible actions, and the answer format. Commands
are quoted exactly as ALFWorld 0.4.2's grammar produces them (``move X to Y``, not ``put X in Y``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sdar.envs.base import ParsedAction, extract_tag

WELCOME_BANNER = "-= Welcome to TextWorld, ALFRED! =-"
_TASK_LINE = re.compile(r"Your task is to:\s*(.+?)\s*$", re.MULTILINE)

# An action the engine can never match: it answers "Nothing happens." and the step counts.
NO_ACTION = ""

# The action the answer format shows as its example (whatever the room holds), unless the
# environment's ``answer_example`` option is off.
EXAMPLE_ACTION = "go to countertop 1"
_THINK_ASK = (
    "First reason step by step about what to do next inside <think> </think> tags. Then give "
    "exactly one admissible action inside <action> </action> tags"
)
_ACTION_ONLY_ASK = (
    "Answer with exactly one admissible action inside <action> </action> tags and nothing else"
)


def answer_format(think: bool = True, example: bool = True) -> str:
    """The prompt's last line: how to answer.

    Args:
        think: ask for ``<think>`` reasoning before the action tag; ``False``: the tag alone.
        example: end with an example answer naming :data:`EXAMPLE_ACTION` (this project's prompt);
            ``False`` names no action, as the released template (verl-agent, SDAR) asks.
    """
    ask = _THINK_ASK if think else _ACTION_ONLY_ASK
    return f"{ask}, for example <action>{EXAMPLE_ACTION}</action>." if example else f"{ask}."


def clean_observation(feedback: str) -> str:
    """The engine's text without TextWorld's welcome banner and surrounding blank lines."""
    return feedback.replace(WELCOME_BANNER, "").strip()


def task_instruction(first_feedback: str) -> str:
    """The task sentence of an ALFWorld intro ("put a hot apple in fridge"), without the period."""
    match = _TASK_LINE.search(first_feedback)
    if not match:
        raise ValueError(f"ALFWorld intro has no 'Your task is to:' line: {first_feedback[:200]!r}")
    return match.group(1).rstrip(".").strip()


def render_prompt(
    instruction: str,
    observation: str,
    admissible: Sequence[str] | None,
    history: Sequence[tuple[str, str]],
    step: int,
    think: bool = True,
    example: bool = True,
) -> str:
    """The user message for one ALFWorld step.

    Args:
        instruction: the task sentence.
        observation: the current observation (already cleaned).
        admissible: the actions the engine accepts now.
        history: the last H ``(observation, action)`` pairs, oldest first (the caller cuts to H).
        step: actions taken so far in the episode (the prompt numbers steps from it).
        think: ask for ``<think>`` reasoning before the action; ``False`` asks for the action only.
        example: the answer format names an example action (:func:`answer_format`).
    """
    lines = [
        (
            "You are an agent in a household simulated by ALFWorld. You move between receptacles "
            "and act on objects by typing text commands."
        ),
        f"Your task is to: {instruction}.",
    ]
    if history:
        first = step - len(history) + 1
        lines.append(
            f"You have taken {step} action(s) so far. Your last {len(history)} observation(s) "
            "and the action you took after each:"
        )
        for k, (past_obs, past_action) in enumerate(history):
            lines.append(f"[Step {first + k}] Observation: {past_obs}\nAction: {past_action}")
    else:
        lines.append("You have not taken any action yet.")
    lines.append(f"[Now, step {step + 1}] Observation: {observation}")
    if admissible:
        lines.append("Admissible actions: " + ", ".join(f"'{a}'" for a in admissible))
    lines.append(answer_format(think, example))
    return "\n".join(lines)


def normalize_command(text: str) -> str:
    """Lower-case and collapse white space, as the engine's commands are written."""
    return " ".join(text.lower().split())


def parse_action(response: str) -> ParsedAction:
    """The command in the last ``<action>...</action>`` of ``response``.

    A response without the tag gives ``ParsedAction(NO_ACTION, format_ok=False)``: the engine still
    takes the step and answers "Nothing happens.", and the collector applies the invalid-action
    penalty, as in the paper's setting. An empty tag is a format error too.
    """
    inner = extract_tag(response, "action")
    if inner is None or not inner.strip():
        return ParsedAction(action=NO_ACTION, format_ok=False)
    return ParsedAction(action=normalize_command(inner), format_ok=True)


def expert_response(instruction: str, command: str, think: bool = True) -> str:
    """A model-style response carrying ``command`` (used for expert demonstrations)."""
    if not think:
        return f"<action>{command}</action>"
    return (
        f"<think>My task is to {instruction}. The next step of my plan is to {command}."
        f"</think>\n<action>{command}</action>"
    )

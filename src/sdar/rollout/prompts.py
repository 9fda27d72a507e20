"""Prompt building for the student and the skill-conditioned teacher.

Described in docs/algorithm.md, "Rollout" and "Teacher prompt".

The student prompt of one step is the environment's user message (task, last H (observation,
action) pairs, current observation, admissible actions) rendered by the model's chat template.
The teacher prompt puts the task's skills in front of that:

* ``layout="prefix"`` (released code): ``"[Privileged Skill Information]\\n" + skills + "\\n\\n"``
  followed by the chat-rendered student prompt, unchanged.
* ``layout="system"``: the skills go in a system message of the chat template.
* ``layout="user"``: the skills (with the same header) open the user message, before the task.
  Small models read context there best: measured with SmolLM2-135M, skills in front of the chat
  template lowered the expert action's probability, while a decisive hint inside the user turn
  was used (``sdar teacher-check``, benchmarks/results/teacher_check/).

The privileged text need not be the skill files: ``build(..., context=...)`` takes any
:class:`~sdar.skills.SkillSelection` (``teacher.context``: a per-state hint, a successful sibling
trajectory; ``sdar.trainer.teacher``), laid out the same way.

Either way the teacher prompt is built as ``skill_prefix_ids + rest_ids``, where ``skill_prefix_ids``
depends on the skill text alone. Tokenising the two parts separately makes the boundary exact, so
the prefix's key/value cache can be computed once per distinct skill text and shared by every step
sample that carries it. The response tokens scored after either prompt are the sampled ids
themselves, never re-tokenised, so teacher and student score exactly the same tokens.

Budgets: an over-long prompt first loses history pairs (oldest first). Skills are never cut: a
teacher prompt that still does not fit raises (or, for the student, is left-truncated and counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdar.envs.base import AgentEnv, EnvState
from sdar.skills import SkillLibrary, SkillSelection

SKILL_HEADER = "[Privileged Skill Information]\n"
LAYOUTS = ("prefix", "system", "user")
_USER_SENTINEL = "\u0000SDAR-USER-MESSAGE\u0000"


class PromptTooLongError(ValueError):
    """A teacher prompt does not fit its budget even without history; skills are never cut."""


@dataclass
class PromptIds:
    """Token ids of one prompt, split into a shareable skill prefix and the rest.

    ``prefix_ids`` is empty for a prompt without skills. ``ids`` is their concatenation.
    ``history_used`` is the number of history pairs kept; ``history_dropped`` how many were dropped
    to fit the budget; ``truncated`` whether tokens had to be cut from the left (student only).
    """

    prefix_ids: list[int]
    rest_ids: list[int]
    history_used: int
    history_dropped: int = 0
    truncated: bool = False
    skill_files: tuple[str, ...] = ()

    @property
    def ids(self) -> list[int]:
        return self.prefix_ids + self.rest_ids


class PromptBuilder:
    """Builds student and teacher prompt ids for one environment and tokenizer.

    Args:
        env: the environment (its ``render_prompt`` gives the user message).
        tokenizer: a Hugging Face tokenizer with a chat template.
        skills: the environment's skill library (needed for the teacher and skill-seeing students).
        think: ``True`` for the <think>+<action> format, ``False`` for the action-only mode.
        layout: teacher layout, ``"prefix"``, ``"system"`` or ``"user"``.
    """

    def __init__(self, env: AgentEnv, tokenizer, skills: SkillLibrary | None, think: bool = True,
                 layout: str = "prefix"):
        if layout not in LAYOUTS:
            raise ValueError(f"teacher layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.env = env
        self.tokenizer = tokenizer
        self.skills = skills
        self.think = think
        self.layout = layout
        self._prefix_cache: dict[str, list[int]] = {}
        self._system_split: tuple[str, str] | None = None

    # ---- pieces --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(self, user_message: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=False
        )

    def select_skills(self, state: EnvState) -> SkillSelection:
        if self.skills is None:
            raise ValueError("this run has no skill library, but a teacher or skill prompt was requested")
        return self.skills.select(state.task)

    def skill_prefix_ids(self, skill_text: str) -> list[int]:
        """Token ids of the shared skill prefix (cached per distinct skill text)."""
        if skill_text not in self._prefix_cache:
            if self.layout == "prefix":
                text = SKILL_HEADER + skill_text + "\n\n"
            elif self.layout == "user":
                before, _ = self._user_parts()
                text = before + SKILL_HEADER + skill_text + "\n\n"
            else:
                before, _ = self._system_parts(skill_text)
                text = before
            self._prefix_cache[skill_text] = self.encode(text)
        return self._prefix_cache[skill_text]

    def _system_parts(self, skill_text: str) -> tuple[str, str]:
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": SKILL_HEADER + skill_text},
             {"role": "user", "content": _USER_SENTINEL}],
            add_generation_prompt=True, tokenize=False,
        )
        before, sep, after = rendered.partition(_USER_SENTINEL)
        if not sep:
            raise ValueError("the chat template dropped the user message; use teacher.layout=prefix")
        return before, after

    def _user_parts(self) -> tuple[str, str]:
        """The chat-rendered text before and after the user message's content."""
        before, sep, after = self.chat(_USER_SENTINEL).partition(_USER_SENTINEL)
        if not sep:
            raise ValueError("the chat template dropped the user message; use teacher.layout=prefix")
        return before, after

    def _rest_ids(self, user_message: str, with_skills: bool, skill_text: str | None) -> list[int]:
        if with_skills and self.layout == "system":
            _, after = self._system_parts(skill_text or "")
            return self.encode(user_message + after)
        if with_skills and self.layout == "user":
            _, after = self._user_parts()
            return self.encode(user_message + after)
        return self.encode(self.chat(user_message))

    # ---- prompts ---------------------------------------------------------------------------------
    def build(self, state: EnvState, history: Sequence[tuple[str, str]], budget: int,
              with_skills: bool = False, on_overflow: str = "truncate",
              context: SkillSelection | None = None) -> PromptIds:
        """Prompt ids for ``state`` with at most ``history`` (already cut to H, oldest first).

        ``on_overflow``: ``"truncate"`` (student: drop history, then left-truncate and flag it),
        ``"drop_history"`` (teacher: drop history, then raise) or ``"error"`` (raise at once).
        ``context``: the privileged text to lay out instead of the routed skills (only with
        ``with_skills``); an empty text gives the plain student prompt.
        """
        prefix: list[int] = []
        files: tuple[str, ...] = ()
        skill_text = None
        if with_skills and context is not None and not context.text:
            with_skills = False
        if with_skills:
            selection = context if context is not None else self.select_skills(state)
            skill_text, files = selection.text, selection.files
            prefix = self.skill_prefix_ids(skill_text)
        history = list(history)
        for dropped in range(len(history) + 1):
            kept = history[dropped:]
            message = self.env.render_prompt(state, kept, think=self.think)
            rest = self._rest_ids(message, with_skills, skill_text)
            if len(prefix) + len(rest) <= budget:
                return PromptIds(prefix, rest, len(kept), dropped, False, files)
            if on_overflow == "error":
                break
        total = len(prefix) + len(rest)
        if on_overflow == "truncate" and len(prefix) < budget:
            keep = budget - len(prefix)
            return PromptIds(prefix, rest[-keep:], 0, len(history), True, files)
        raise PromptTooLongError(
            f"prompt of {total} tokens (skills {len(prefix)}) exceeds the budget of {budget} tokens "
            f"even without history; raise teacher.max_prompt_tokens / rollout.max_prompt_tokens or "
            f"shorten the skill files ({', '.join(files) or 'none'}); skills are never cut"
        )

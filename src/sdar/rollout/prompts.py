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

Students that see skills (Skill-GRPO, Skill-Prompt) lay them out by ``student_layout`` (default:
the teacher's ``layout``; the released code puts them at the start of the user message, ``"user"``).
Which skill files a prompt carries is decided per prompt by ``routing``: ``"task_type"`` (the
task's ``skill_keys``) or ``"released"`` (the released code's keyword rules, ``sdar.skills.released``:
over the user message for students, by task type / data source / the whole prompt for the teacher).

Every chat-template rendering here (student, teacher in all three layouts) receives the same extra
template arguments, ``chat_template_kwargs`` (``model.chat_template_kwargs``; e.g. Qwen3's
``{"enable_thinking": False}``, as the released Qwen3 runs pass), so student and teacher read the
same rendering of the conversation.

Budgets: an over-long prompt first loses history pairs (oldest first). Skills are never cut: a
teacher prompt that still does not fit raises (or, for the student, is left-truncated and counted).
The exception is ``on_overflow="truncate_left"``, the released teacher's rule: keep the history and
cut the prompt from the left, skills first, to the budget (counted as truncated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdar.envs.base import AgentEnv, EnvState
from sdar.skills import SkillLibrary, SkillSelection
from sdar.skills.released import ROUTINGS, check_released_env, route_observation, route_teacher

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
        routing: ``"task_type"`` or ``"released"`` (module docstring).
        student_layout: layout of a skill-seeing student's prompt (``None``: ``layout``).
        chat_template_kwargs: extra variables for the chat template (``{"enable_thinking": False}``
            for Qwen3), passed to every rendering, student and teacher alike.
    """

    def __init__(self, env: AgentEnv, tokenizer, skills: SkillLibrary | None, think: bool = True,
                 layout: str = "prefix", routing: str = "task_type", student_layout: str | None = None,
                 chat_template_kwargs: dict | None = None):
        student_layout = layout if student_layout is None else student_layout
        for what, value in (("teacher layout", layout), ("student layout", student_layout)):
            if value not in LAYOUTS:
                raise ValueError(f"{what} must be one of {', '.join(LAYOUTS)}, got {value!r}")
        if routing not in ROUTINGS:
            raise ValueError(f"skill routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if routing == "released":
            check_released_env(env.name)
        self.template_kwargs = dict(chat_template_kwargs or {})
        self.env = env
        self.tokenizer = tokenizer
        self.skills = skills
        self.think = think
        self.layout = layout
        self.student_layout = student_layout
        self.routing = routing
        self._prefix_cache: dict[tuple[str, str], list[int]] = {}
        self._system_split: tuple[str, str] | None = None

    # ---- pieces --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(self, user_message: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=False,
            **self.template_kwargs,
        )

    def select_skills(self, state: EnvState, history: Sequence[tuple[str, str]] = (),
                      role: str = "teacher") -> SkillSelection:
        """The skills of ``state`` (shown with ``history``) for the ``"teacher"`` or a skill-seeing
        ``"student"``, by this builder's ``routing``."""
        if self.skills is None:
            raise ValueError("this run has no skill library, but a teacher or skill prompt was requested")
        if self.routing == "task_type":
            return self.skills.select(state.task)
        message = self.env.render_prompt(state, list(history), think=self.think)
        if role == "student":
            keys = route_observation(self.env.name, message)
        else:
            keys = route_teacher(self.env.name, state.task, self.chat(message))
        return self.skills.select_keys(keys, repeats=True)

    def skill_prefix_ids(self, skill_text: str, layout: str | None = None) -> list[int]:
        """Token ids of the shared skill prefix in ``layout`` (default: the teacher's), cached per
        distinct skill text and layout."""
        layout = layout or self.layout
        if (layout, skill_text) not in self._prefix_cache:
            if layout == "prefix":
                text = SKILL_HEADER + skill_text + "\n\n"
            elif layout == "user":
                before, _ = self._user_parts()
                text = before + SKILL_HEADER + skill_text + "\n\n"
            else:
                before, _ = self._system_parts(skill_text)
                text = before
            self._prefix_cache[(layout, skill_text)] = self.encode(text)
        return self._prefix_cache[(layout, skill_text)]

    def _system_parts(self, skill_text: str) -> tuple[str, str]:
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": SKILL_HEADER + skill_text},
             {"role": "user", "content": _USER_SENTINEL}],
            add_generation_prompt=True, tokenize=False, **self.template_kwargs,
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

    def _rest_ids(self, user_message: str, with_skills: bool, skill_text: str | None, layout: str) -> list[int]:
        if with_skills and layout == "system":
            _, after = self._system_parts(skill_text or "")
            return self.encode(user_message + after)
        if with_skills and layout == "user":
            _, after = self._user_parts()
            return self.encode(user_message + after)
        return self.encode(self.chat(user_message))

    # ---- prompts ---------------------------------------------------------------------------------
    def build(self, state: EnvState, history: Sequence[tuple[str, str]], budget: int,
              with_skills: bool = False, on_overflow: str = "truncate",
              context: SkillSelection | None = None, role: str = "teacher") -> PromptIds:
        """Prompt ids for ``state`` with at most ``history`` (already cut to H, oldest first).

        ``on_overflow``: ``"truncate"`` (student: drop history, then left-truncate and flag it),
        ``"drop_history"`` (teacher: drop history, then raise), ``"truncate_left"`` (released
        teacher: keep the history, cut from the left, skills first, and flag it) or ``"error"``
        (raise at once).
        ``context``: the privileged text to lay out instead of the routed skills (only with
        ``with_skills``); an empty text gives the plain student prompt.
        ``role``: whose prompt carries the skills, ``"teacher"`` or ``"student"`` (Skill-GRPO,
        Skill-Prompt): it picks the layout and, with released routing, the routing rule.
        """
        prefix: list[int] = []
        files: tuple[str, ...] = ()
        skill_text = None
        layout = self.student_layout if role == "student" else self.layout
        if with_skills and context is not None and not context.text:
            with_skills = False
        if with_skills:
            selection = context if context is not None else self.select_skills(state, history, role)
            skill_text, files = selection.text, selection.files
            prefix = self.skill_prefix_ids(skill_text, layout)
        history = list(history)
        if on_overflow == "truncate_left":
            message = self.env.render_prompt(state, history, think=self.think)
            rest = self._rest_ids(message, with_skills, skill_text, layout)
            cut = max(0, len(prefix) + len(rest) - budget)
            if cut > len(prefix):
                return PromptIds([], rest[cut - len(prefix):], len(history), 0, True, files)
            return PromptIds(prefix[cut:], rest, len(history), 0, cut > 0, files)
        for dropped in range(len(history) + 1):
            kept = history[dropped:]
            message = self.env.render_prompt(state, kept, think=self.think)
            rest = self._rest_ids(message, with_skills, skill_text, layout)
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

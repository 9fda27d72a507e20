"""The one interface every agent environment implements (ALFWorld, WebShop, Search-QA, test envs).

An environment here is a *batch* of independent episodes of one kind, stepped together, because the
step-wise rollout collector (docs/algorithm.md, "Rollout") generates for all live episodes in one
batch.

Contract, in the order the collector uses it::

    env = make_env("alfworld", split="train", ...)      # see sdar.envs.make_env
    states = env.reset(seeds=[11, 12], group_size=4)     # 8 episodes: copies 0..3 of task 11, then of task 12
    while not all(s.done for s in states):
        responses = [model output or None for done episodes]
        for i, s in enumerate(states):
            prompt = env.render_prompt(s, history_of_i, think=True)
        parsed = [env.parse_action(r) for r in responses]          # (action text, format_ok)
        states = env.step([p.action if p else None for p in parsed])  # None for finished episodes
    env.close()

Rules every implementation keeps:

* ``reset(seeds, group_size)`` returns ``len(seeds) * group_size`` states; state ``j * group_size + k``
  is copy ``k`` of the task chosen by ``seeds[j]``. All copies of one seed start from the identical
  initial state (they form a GRPO group). The same seed always gives the same task for a split.
* ``step(actions)`` takes one entry per episode; entries for episodes already ``done`` must be
  ``None`` and those episodes are left untouched (their state is returned unchanged).
* An action the environment does not accept (not admissible, unavailable click, malformed tag) is
  still applied the way the real environment would (ALFWorld sends it to the engine; WebShop
  leaves the page unchanged) and is reported with ``valid_action=False`` so the collector can apply
  the invalid-action penalty.
* Which step counts as invalid follows ``action_rule`` (``sdar.envs.action_rules``): under
  ``project`` a step is valid when the reply's format is right *and* the environment accepted the
  action; under ``released`` (the SDAR authors' projections) the reply's format alone decides
  (``action_valid``). ``make_env(..., action_rule=...)`` sets it; an environment lists the rules it
  implements in ``action_rules``.
* ``reward`` is the reward of that one transition in the environment's own units (ALFWorld 10 on the
  winning step, WebShop 10 when the purchase scores 1, Search-QA exact match on the answer step).
  The episode return is the sum over the episode.
* An episode ends (``done=True``) when the task is finished or ``max_steps`` is reached.
* Nothing here knows about models or training.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskInfo:
    """What identifies one task (one game, one shopping goal, one question).

    Attributes:
        task_id: stable identifier (game path, goal index, question id); equal for a whole group.
        instruction: the task text shown to the agent ("put a hot apple in fridge", ...).
        task_type: the task's type for per-type metrics (ALFWorld task type, WebShop category,
            Search-QA ``data_source``).
        skill_keys: the skill files this task routes to, besides the environment's general file
            (``("heat",)``, ``("apparel", "footwear")``, ``()`` for general only). See
            ``sdar.skills.SkillLibrary``, which refuses keys it has no file for.
    """

    task_id: str
    instruction: str
    task_type: str
    skill_keys: tuple[str, ...] = ()


@dataclass
class EnvState:
    """The state of one episode after a reset or a step.

    Attributes:
        task: the episode's task.
        observation: the text observation the agent sees now (already formatted for the prompt).
        raw_observation: the environment's own observation text, used as the anchor-state key of
            GiGPO step groups (identical states must give identical strings).
        admissible_actions: the actions the environment accepts now, or ``None`` where it has no
            such list (Search-QA).
        reward: reward of the transition that produced this state (0.0 after reset).
        done: the episode has ended (won, lost, or out of steps); no more actions are taken.
        won: the task was completed successfully (ALFWorld goal reached, WebShop score 1,
            Search-QA exact match).
        valid_action: whether the last action was accepted (True after reset).
        step: number of actions taken so far in this episode.
        metrics: environment-specific numbers for logging (``score``, ``em``, ``f1``, ...), final
            once ``done``.
        hint: privileged text about this state that only the teacher may read
            (``teacher.context: hint``), e.g. the key fact of the answer in a controlled
            environment; ``None`` where the environment has none. Never shown to the student.
    """

    task: TaskInfo
    observation: str
    raw_observation: str
    admissible_actions: list[str] | None = None
    reward: float = 0.0
    done: bool = False
    won: bool = False
    valid_action: bool = True
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    hint: str | None = None


@dataclass(frozen=True)
class ParsedAction:
    """The action extracted from a model response.

    Attributes:
        action: the text to send to the environment (may be the raw response or "" when no tag
            was found; the environment then answers as the real one would to a bad command).
        format_ok: the response followed the expected tag format. ``False`` counts as an invalid
            action for the penalty.
    """

    action: str
    format_ok: bool


class AgentEnv(abc.ABC):
    """A batch of episodes of one environment kind. See the module docstring for the contract.

    Class attributes an implementation sets:
        name: registry name (``"alfworld"``, ``"webshop"``, ``"search"``).
        history_length: default H, the number of past (observation, action) pairs in the prompt.
        max_steps: default step limit of an episode.
        policies: names of the scripted policies ``scripted_action`` supports
            (``"expert"``/``"oracle"`` and ``"random"``).
    """

    name: str = "base"
    history_length: int = 2
    max_steps: int = 50
    policies: tuple[str, ...] = ("random",)
    action_rules: tuple[str, ...] = ("project",)
    """The ``env.action_rule`` values this environment implements."""
    action_rule: str = "project"
    """The rule in force (``set_action_rule``); ``parse_action`` and ``step`` follow it."""

    # ----- episodes -------------------------------------------------------------------------
    @abc.abstractmethod
    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        """Start ``len(seeds) * group_size`` episodes (see the module docstring for the order)."""

    @abc.abstractmethod
    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        """Apply one action per episode (``None`` for finished ones) and return the new states."""

    def close(self) -> None:
        """Release engines, processes and files. Safe to call twice."""

    def num_tasks(self) -> int | None:
        """How many distinct tasks the current split holds, or ``None`` if unbounded."""
        return None

    # ----- what the agent sees and says -------------------------------------------------------
    @abc.abstractmethod
    def render_prompt(self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True) -> str:
        """The user-message text for one step: task, the last pairs of ``history`` (already cut to
        H by the caller, oldest first, each ``(observation, action)``), the current observation,
        the admissible actions where there are any, and the answer-format instruction. With
        ``think=False`` the instruction asks for the action tag alone (small models)."""

    @abc.abstractmethod
    def parse_action(self, response: str) -> ParsedAction:
        """Extract the action from a model response (``<action>...</action>``, or ``<search>`` /
        ``<answer>`` for Search-QA)."""

    def set_action_rule(self, rule: str) -> None:
        """Use validity rule ``rule`` (``project`` or ``released``, see ``sdar.envs.action_rules``);
        a rule this environment does not implement is a one-line ``ValueError``."""
        if rule not in self.action_rules:
            raise ValueError(f"environment {self.name!r} has no action rule {rule!r}; "
                             f"it implements {list(self.action_rules)}")
        self.action_rule = rule

    def action_valid(self, parsed: ParsedAction, new_state: EnvState) -> bool:
        """Whether the step that parsed ``parsed`` and led to ``new_state`` counts as valid (no
        invalid-action penalty): the format and the environment's verdict under ``project``, the
        format alone under ``released``."""
        if self.action_rule == "released":
            return parsed.format_ok
        return parsed.format_ok and new_state.valid_action

    # ----- scripted play ------------------------------------------------------------------------
    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        """A full model-style response (tags included) for episode ``index`` under a scripted
        policy named in ``policies``; used by ``sdar env play`` and for demonstrations."""
        raise ValueError(f"environment {self.name!r} has no scripted policy {policy!r}; known: {self.policies}")

    # ----- argument checks every implementation makes ---------------------------------------
    @staticmethod
    def check_limits(max_steps: int, history_length: int | None = None) -> None:
        """For the constructor: a step limit of at least one, ``H >= 0``."""
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if history_length is not None and history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {history_length}")

    @staticmethod
    def check_reset_args(seeds: Sequence[int], group_size: int) -> None:
        """For ``reset``: at least one seed, ``group_size >= 1``."""
        if len(seeds) == 0:
            raise ValueError("reset() needs at least one seed")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")

    @staticmethod
    def check_step_actions(states: Sequence[EnvState], actions: Sequence[str | None]) -> None:
        """For ``step``: one action per episode of ``states``, ``None`` exactly for done ones."""
        if len(actions) != len(states):
            raise ValueError(f"step() got {len(actions)} actions for {len(states)} episodes")
        for i, (s, a) in enumerate(zip(states, actions)):
            if s.done and a is not None:
                raise ValueError(f"episode {i} is already done; pass None as its action")
            if not s.done and a is None:
                raise ValueError(f"episode {i} is still running; pass an action string (\"\" is allowed)")

    def __enter__(self) -> AgentEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def extract_tag(response: str, tag: str) -> str | None:
    """The stripped text inside the last complete ``<tag>...</tag>`` of ``response``, or ``None``.

    The last occurrence wins because models often quote the format in their reasoning first.
    """
    open_t, close_t = f"<{tag}>", f"</{tag}>"
    end = response.rfind(close_t)
    if end < 0:
        return None
    start = response.rfind(open_t, 0, end)
    if start < 0:
        return None
    return response[start + len(open_t) : end].strip()

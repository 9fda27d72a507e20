"""Toy environments: a counting task for smoke tests, and a panel-choice task with decisive hints.

``toy`` (:class:`CounterEnv`) is for smoke tests and debugging the trainer; not a benchmark.
``toy_panels`` (:class:`PanelsEnv`) is the controlled setting of the gate study
(benchmarks/gate_study.py): the privileged hint of every state names the right answer, so the
teacher's context is known to help (or, with ``hint_corruption``, known to mislead).

Counter. The agent starts at 0 and must reach the task's target (1-4) with
``increment`` / ``decrement`` and then ``submit``. Winning gives reward 10. It exercises everything
the trainer needs (groups, admissible actions, invalid actions, step limits, skills routing by task
type, raw observations that repeat across trajectories for GiGPO) in microseconds per step, so the
trainer's tests spend their time in the model, not the environment.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sdar.envs.base import AgentEnv, EnvState, ParsedAction, TaskInfo, extract_tag

ACTIONS = ("increment", "decrement", "submit")


class _ToyEnv(AgentEnv):
    """What both toy environments share: the prompt layout and the ``<action>`` tag."""

    answer_unit = "action"
    """What one answer is called in the prompt ("action", "word")."""
    lists_actions = True
    """Whether the prompt lists the admissible actions."""

    def render_prompt(self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True) -> str:
        lines = [f"Task: {state.task.instruction}"]
        for obs, act in history:
            lines.append(f"Observation: {obs}\nAction: {act}")
        lines.append(f"Now: {state.observation}")
        if self.lists_actions:
            lines.append("Allowed actions: " + ", ".join(state.admissible_actions or []))
        unit = self.answer_unit
        if think:
            lines.append(f"Think in <think>...</think>, then give one {unit} in <action>...</action>.")
        else:
            lines.append(f"Answer with one {unit} in <action>...</action>.")
        return "\n".join(lines)

    def parse_action(self, response: str) -> ParsedAction:
        action = extract_tag(response, "action")
        return ParsedAction(action or "", action is not None)

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        self.check_step_actions(self.states, actions)
        self.states = [s if a is None else self._apply(i, s, a.strip().lower())
                       for i, (s, a) in enumerate(zip(self.states, actions))]
        return list(self.states)

    def _apply(self, i: int, state: EnvState, action: str) -> EnvState:
        """The state of episode ``i`` after ``action`` (stripped, lower-cased) in ``state``."""
        raise NotImplementedError


class CounterEnv(_ToyEnv):
    """Reach the target number, then submit. Task type ``low`` (target 1-2) or ``high`` (3-4)."""

    name = "toy"
    history_length = 2
    policies = ("expert", "random")

    def __init__(self, split: str = "train", max_steps: int = 8):
        if split not in ("train", "test"):
            raise ValueError(f"toy env split must be 'train' or 'test', got {split!r}")
        self.check_limits(max_steps)
        self.split = split
        self.max_steps = max_steps
        self._values: list[int] = []
        self._targets: list[int] = []
        self.states: list[EnvState] = []

    def num_tasks(self) -> int:
        return 4

    def _task(self, seed: int) -> TaskInfo:
        target = seed % 4 + 1
        task_type = "low" if target <= 2 else "high"
        return TaskInfo(task_id=f"{self.split}-{target}", instruction=f"Reach the number {target}, then submit.",
                        task_type=task_type, skill_keys=(task_type,))

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        tasks = [self._task(s) for s in seeds for _ in range(group_size)]
        self._targets = [s % 4 + 1 for s in seeds for _ in range(group_size)]
        self._values = [0] * len(tasks)
        self.states = [EnvState(task=t, observation="The counter shows 0.", raw_observation="value=0",
                                admissible_actions=list(ACTIONS)) for t in tasks]
        return list(self.states)

    def _apply(self, i: int, s: EnvState, a: str) -> EnvState:
        valid = a in ACTIONS
        won = False
        if a == "increment":
            self._values[i] += 1
        elif a == "decrement":
            self._values[i] -= 1
        elif a == "submit":
            won = self._values[i] == self._targets[i]
        step = s.step + 1
        done = won or a == "submit" or step >= self.max_steps
        v = self._values[i]
        obs = f"The counter shows {v}." if valid else f"Unknown action. The counter shows {v}."
        return EnvState(task=s.task, observation=obs, raw_observation=f"value={v}",
                        admissible_actions=list(ACTIONS), reward=10.0 if won else 0.0, done=done, won=won,
                        valid_action=valid, step=step, metrics={"final_value": float(v)})


    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        if policy == "random":
            return f"<action>{rng.choice(ACTIONS)}</action>"
        if policy == "expert":
            v, t = self._values[index], self._targets[index]
            action = "increment" if v < t else "decrement" if v > t else "submit"
            return f"<think>The counter is {v} and the target is {t}.</think><action>{action}</action>"
        return super().scripted_action(index, policy, rng)


def make_toy_env(split: str = "train", max_steps: int = 8) -> CounterEnv:
    """Factory for ``make_env("toy", ...)``."""
    return CounterEnv(split=split, max_steps=max_steps)


# ---------------------------------------------------------------------------------------------
# Panels: several right choices in a row, sparse reward, a decisive privileged hint
# ---------------------------------------------------------------------------------------------
FRUITS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum")
OTHERS = ("hammer", "wrench", "shovel", "ladder", "bucket", "horse", "tiger", "rabbit", "eagle", "shark",
          "chair", "table", "sofa", "lamp", "mirror", "river", "cloud", "stone", "candle", "boat")


def panel_hint(word: str) -> str:
    """The privileged hint of a ``toy_panels`` state that names ``word`` as the right one."""
    return f"The right word on this panel is {word}. Answer: <action>{word}</action>"


class PanelsEnv(_ToyEnv):
    """Pick the fruit on each of ``panels`` panels of ``options`` words; a wrong pick ends the episode.

    The rule (the right word is always the fruit) holds for every task, so a policy can learn it;
    the reward is sparse: 10 only when every panel is answered right, so a uniform guesser wins
    ``options ** -panels`` of its episodes (1.6% with the defaults). Each state carries a
    privileged ``hint`` for the teacher: "The right word on this panel is <fruit>." With
    ``hint_corruption`` p, a share p of the tasks (chosen by task seed, the same in every run) get
    hints that name a wrong word of the panel instead, so the teacher's context misleads on them.

    Task type ``panels`` routes to ``skills/toy_panels/general.md`` (the rule, as a static skill).
    """

    name = "toy_panels"
    history_length = 2
    policies = ("expert", "random")
    answer_unit = "word"
    lists_actions = False  # the panel's words are in the observation

    def __init__(self, split: str = "train", panels: int = 3, options: int = 4, hint_corruption: float = 0.0,
                 max_steps: int | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"toy_panels split must be 'train' or 'test', got {split!r}")
        if panels < 1 or not 2 <= options <= len(OTHERS):
            raise ValueError(f"toy_panels needs panels >= 1 and 2 <= options <= {len(OTHERS)}, "
                             f"got panels={panels}, options={options}")
        if not 0.0 <= hint_corruption <= 1.0:
            raise ValueError(f"hint_corruption must be in [0, 1], got {hint_corruption}")
        self.split = split
        self.panels = panels
        self.options = options
        self.hint_corruption = hint_corruption
        self.max_steps = panels if max_steps is None else max_steps
        self._layouts: list[list[list[str]]] = []
        self._answers: list[list[str]] = []
        self._misled: list[bool] = []
        self._index: list[int] = []
        self.states: list[EnvState] = []

    def num_tasks(self) -> int | None:
        return None  # every seed is a task

    def _layout(self, seed: int) -> tuple[list[list[str]], list[str], bool]:
        rng = random.Random(f"panels-{self.split}-{seed}")
        layout, answers = [], []
        for _ in range(self.panels):
            fruit = rng.choice(FRUITS)
            words = [fruit, *rng.sample(OTHERS, self.options - 1)]
            rng.shuffle(words)
            layout.append(words)
            answers.append(fruit)
        # corruption is drawn from its own stream so that layouts do not depend on it
        misled = random.Random(f"panels-hint-{self.split}-{seed}").random() < self.hint_corruption
        return layout, answers, misled

    def _state(self, i: int, task: TaskInfo, prefix: str = "", **kw) -> EnvState:
        k = self._index[i]
        words = self._layouts[i][min(k, self.panels - 1)]
        right = self._answers[i][min(k, self.panels - 1)]
        hinted = right if not self._misled[i] else next(w for w in words if w != right)
        obs = f"{prefix}Panel {k + 1} of {self.panels}. Words: {', '.join(words)}."
        return EnvState(task=task, observation=obs, raw_observation=f"panel={k};words={','.join(words)}",
                        admissible_actions=list(words), hint=panel_hint(hinted), **kw)

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        self._layouts, self._answers, self._misled, self._index, self.states = [], [], [], [], []
        for seed in seeds:
            layout, answers, misled = self._layout(seed)
            task = TaskInfo(task_id=f"{self.split}-{seed}", task_type="panels", skill_keys=(),
                            instruction=f"Open the lock: on each of the {self.panels} panels, choose the "
                                        f"right word. A wrong word locks you out.")
            for _ in range(group_size):
                self._layouts.append(layout)
                self._answers.append(answers)
                self._misled.append(misled)
                self._index.append(0)
                self.states.append(self._state(len(self.states), task))
        return list(self.states)

    def _apply(self, i: int, s: EnvState, a: str) -> EnvState:
        words = self._layouts[i][self._index[i]]
        valid = a in words
        right = a == self._answers[i][self._index[i]]
        step = s.step + 1
        if right:
            self._index[i] += 1
        won = self._index[i] == self.panels
        done = won or not right or step >= self.max_steps
        feedback = "Right." if right else ("Wrong word: locked out." if valid else "Unknown word: locked out.")
        return self._state(i, s.task, prefix=f"{feedback} ", reward=10.0 if won else 0.0, done=done, won=won,
                           valid_action=valid, step=step, metrics={"panels_right": float(self._index[i])})


    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        words = self._layouts[index][self._index[index]]
        if policy == "random":
            return f"<action>{rng.choice(words)}</action>"
        if policy == "expert":
            return f"<action>{self._answers[index][self._index[index]]}</action>"
        return super().scripted_action(index, policy, rng)


def make_toy_panels_env(split: str = "train", panels: int = 3, options: int = 4, hint_corruption: float = 0.0,
                        max_steps: int | None = None) -> PanelsEnv:
    """Factory for ``make_env("toy_panels", ...)``."""
    return PanelsEnv(split=split, panels=panels, options=options, hint_corruption=hint_corruption,
                     max_steps=max_steps)

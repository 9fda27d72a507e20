"""``AlfworldEnv``: a batch of ALFWorld episodes behind ``sdar.envs.base.AgentEnv``.

Each episode is one real ALFWorld engine (see ``engine.py``). What this class adds is the agent
side of the paper's setting: the step limit (50), the reward (10 on the winning step), validity of
actions (an action is valid when it is one of the engine's admissible commands; an invalid one is
still sent to the engine, which answers "Nothing happens."), the prompt, and scripted policies.
Under ``env.action_rule: released`` validity is the released projection's instead (first
``<action>`` tag, ``<think>`` required, no CJK; admissibility plays no part:
``sdar.envs.action_rules``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from sdar.envs.action_rules import ACTION_RULES, ALFWORLD_TAIL_CHARS, released_tag_action
from sdar.envs.alfworld import prompts
from sdar.envs.alfworld.data import GameRecord, order_for_seeds
from sdar.envs.alfworld.engine import EnginePool, EngineState
from sdar.envs.base import AgentEnv, EnvState, ParsedAction, TaskInfo

log = logging.getLogger(__name__)

WIN_REWARD = 10.0
ENGINE_FAILURE_OBSERVATION = (
    "The environment failed on this game and was restarted; this episode ends as failed."
)


class AlfworldEnv(AgentEnv):
    """ALFWorld episodes over a fixed list of games (one split).

    Args:
        games: the games of the split (``data.find_games`` or the generator's output).
        split: split name, for messages.
        max_steps: step limit per episode (50 in the paper).
        history_length: H, the past (observation, action) pairs in the prompt (2 in the paper).
        num_workers: engine processes (episodes are spread over them; see ``engine.EnginePool``).
        reset_timeout_s / step_timeout_s: how long an engine may take before it counts as hung.
        answer_example: the prompt's answer format names an example action (``go to countertop 1``,
            this project's prompt); ``False``: none, as the released template.
    """

    name = "alfworld"
    history_length = 2
    max_steps = 50
    policies = ("expert", "random")
    action_rules = ACTION_RULES

    def __init__(
        self,
        games: Sequence[GameRecord],
        split: str = "train",
        max_steps: int = 50,
        history_length: int = 2,
        num_workers: int = 1,
        reset_timeout_s: float = 120.0,
        step_timeout_s: float = 30.0,
        answer_example: bool = True,
    ):
        if not games:
            raise ValueError("AlfworldEnv needs at least one game")
        if not isinstance(answer_example, bool):
            raise ValueError(f"answer_example must be true or false, got {answer_example!r}")
        self.check_limits(max_steps, history_length)
        self.split = split
        self.games = order_for_seeds(list(games))
        self.max_steps = max_steps
        self.history_length = history_length
        self.answer_example = answer_example
        self._pool = EnginePool(
            num_workers=num_workers, reset_timeout_s=reset_timeout_s, step_timeout_s=step_timeout_s
        )
        self._states: list[EnvState] = []
        self._expert_plans: list[list[str] | None] = []  # None: not planned for this state yet
        self._games_of_episodes: list[GameRecord] = []

    # ----- episodes ------------------------------------------------------------------------
    def game_for_seed(self, seed: int) -> GameRecord:
        """The game that ``seed`` selects in this split (``seed % num_tasks`` in a fixed order)."""
        return self.games[seed % len(self.games)]

    def num_tasks(self) -> int:
        return len(self.games)

    @property
    def engine_failures(self) -> int:
        """How many times an engine crashed, raised or hung since this env was created."""
        return self._pool.failures

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        episodes = [self.game_for_seed(s) for s in seeds for _ in range(group_size)]
        # Free every engine first so that games loaded for the last batch are reused by this one.
        self._pool.release(range(len(self._states)))
        replies = self._pool.run({i: ("reset", str(g.path)) for i, g in enumerate(episodes)})
        self._games_of_episodes = episodes
        self._states, self._expert_plans = [], []
        for i, game in enumerate(episodes):
            reply = replies[i]
            instruction = self._instruction(game, reply)
            task = TaskInfo(
                task_id=game.task_id,
                instruction=instruction,
                task_type=game.task_type,
                skill_keys=(game.skill_key,),
            )
            metrics = {"expert_plan_length": float(game.expert_plan_length or 0)}
            if reply is None:
                state = self._failed_state(EnvState(task, "", ""), metrics)
            else:
                state = EnvState(
                    task=task,
                    observation=prompts.clean_observation(reply.feedback),
                    raw_observation=reply.feedback,
                    admissible_actions=reply.admissible_commands,
                    metrics=metrics,
                )
            self._states.append(state)
            self._expert_plans.append(None if reply else [])
        self._drop_lost()
        return list(self._states)

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        self.check_step_actions(self._states, actions)
        requests = {i: ("step", a) for i, a in enumerate(actions) if a is not None}
        replies = self._pool.run(requests)
        for i, (_, action) in requests.items():
            old = self._states[i]
            reply = replies[i]
            if reply is None:
                self._states[i] = self._failed_state(old, dict(old.metrics), step=old.step + 1)
                self._expert_plans[i] = []
                continue
            step = old.step + 1
            won = reply.won
            done = won or step >= self.max_steps
            metrics = dict(old.metrics)
            if done:
                metrics.update(won=float(won), engine_failure=0.0)
            self._states[i] = EnvState(
                task=old.task,
                observation=prompts.clean_observation(reply.feedback),
                raw_observation=reply.feedback,
                admissible_actions=reply.admissible_commands,
                reward=WIN_REWARD if won else 0.0,
                done=done,
                won=won,
                valid_action=action in (old.admissible_actions or ()),
                step=step,
                metrics=metrics,
            )
            self._expert_plans[i] = None
        self._drop_lost()
        return list(self._states)

    def _drop_lost(self) -> None:
        """End the episodes whose engine was lost while another one was being restarted."""
        for i in self._pool.take_lost():
            if i < len(self._states) and not self._states[i].done:
                self._states[i] = self._failed_state(self._states[i], dict(self._states[i].metrics))

    def _failed_state(self, old: EnvState, metrics: dict, step: int | None = None) -> EnvState:
        metrics.update(won=0.0, engine_failure=1.0)
        return EnvState(
            task=old.task,
            observation=ENGINE_FAILURE_OBSERVATION,
            raw_observation=ENGINE_FAILURE_OBSERVATION,
            admissible_actions=[],
            reward=0.0,
            done=True,
            won=False,
            valid_action=True,
            step=old.step if step is None else step,
            metrics=metrics,
        )

    @staticmethod
    def _instruction(game: GameRecord, reply: EngineState | None) -> str:
        if reply is not None:
            return prompts.task_instruction(reply.feedback)
        return game.task_type.replace("_", " ")  # the engine never answered; keep the episode typed

    def close(self) -> None:
        self._pool.close()

    # ----- what the agent sees and says ---------------------------------------------------
    def render_prompt(
        self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True
    ) -> str:
        return prompts.render_prompt(
            state.task.instruction,
            state.observation,
            state.admissible_actions,
            history,
            state.step,
            think=think,
            example=self.answer_example,
        )

    def parse_action(self, response: str) -> ParsedAction:
        if self.action_rule == "released":
            parsed = released_tag_action(response, ALFWORLD_TAIL_CHARS)
            # white space collapsed as the engine's commands are written (TextWorld's parser
            # splits on it, so the released engine reads the same command)
            return ParsedAction(prompts.normalize_command(parsed.action), parsed.format_ok)
        return prompts.parse_action(response)

    # ----- scripted play ------------------------------------------------------------------
    def expert_plan(self, index: int) -> list[str]:
        """The planner expert's plan for episode ``index`` from its current state (planned on
        first request per state: the planner can take seconds in large rooms)."""
        if self._states[index].done:
            return []
        if self._expert_plans[index] is None:
            self._expert_plans[index] = self._pool.plan(index) or []
        return list(self._expert_plans[index])

    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        """A response in the agent format: ``expert`` follows ALFWorld's planner expert from the
        episode's current state, ``random`` picks uniformly among the admissible actions."""
        if policy not in self.policies:
            return super().scripted_action(index, policy, rng)
        if not 0 <= index < len(self._states):
            raise IndexError(f"episode index {index} out of range; {len(self._states)} episodes")
        state = self._states[index]
        if policy == "expert":
            plan = self.expert_plan(index)
            command = plan[0] if plan else "look"
            return prompts.expert_response(state.task.instruction, command)
        command = rng.choice(state.admissible_actions or ["look"])  # policy "random"
        return (
            f"<think>I will try one of the admissible actions.</think>\n<action>{command}</action>"
        )

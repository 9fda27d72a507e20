"""WebShop as an ``AgentEnv``: a batch of shopping episodes over the generated catalog.

One episode: the agent gets an instruction, starts on the search page, and acts with
``search[query]`` / ``click[clickable]`` (written as ``<action>...</action>``) until it clicks
``buy now`` or reaches the step limit (15). Buying ends the episode with the purchase's score
(``scoring.py``); the reward is 10 when the score is 1, else 0. Running out of steps scores 0.
Invalid actions (unavailable clicks, search off the search page, malformed text) leave the page
unchanged, count as a step and are reported with ``valid_action=False``. Under
``env.action_rule: released`` validity is the released projection's instead (first ``<action>``
tag, ``<think>`` required, no CJK; an unavailable click is answered, not penalised:
``sdar.envs.action_rules``).

Seeds map to goals of the split deterministically: seed ``s`` plays goal ``split[s % len(split)]``.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from sdar.envs.action_rules import ACTION_RULES, WEBSHOP_TAIL_CHARS, released_tag_action
from sdar.envs.base import AgentEnv, EnvState, ParsedAction, TaskInfo, extract_tag
from sdar.envs.webshop.catalog import DEFAULT_NUM_PRODUCTS, Product, load_catalog
from sdar.envs.webshop.datafiles import load_shop
from sdar.envs.webshop.goals import NUM_TEST_GOALS, SPLITS, Goal, load_goals, split_goal_indices
from sdar.envs.webshop.pages import (
    BACK_TO_SEARCH,
    BUY_NOW,
    ITEM_TAB,
    NEXT,
    PREV,
    RESULTS,
    SEARCH,
    Page,
    Site,
    parse_command,
)
from sdar.envs.webshop.routing import route_instruction
from sdar.envs.webshop.scoring import (
    SCORING_RULES,
    PurchaseScore,
    reward_for_score,
    score_goal_purchase,
)
from sdar.envs.webshop.search import load_search_engine

SEARCH_PLACEHOLDER = "search[<your query>]"


@dataclass
class _Episode:
    goal: Goal
    page: Page = field(default_factory=Page)
    queries: list[str] = field(default_factory=list)
    opened_tabs: set[tuple[str, str]] = field(default_factory=set)
    state: EnvState | None = None


class WebShopEnv(AgentEnv):
    """Offline WebShop over a generated catalog (see ``docs/environments/webshop.md``).

    Args:
        split: ``"train"`` or ``"test"`` (the first ``num_test_goals`` goals, WebShop's fixed
            evaluation set).
        num_products: size of the generated catalog (default 2,500; keep >= 2,000 for real runs,
            smaller for quick tests).
        catalog_seed: seed of the generated catalog and its goals.
        num_goals: number of generated goals (default two per product).
        num_test_goals: size of the test split (default 500, as WebShop; with ``data_dir``, the
            number of rows the goal file marks ``test``).
        data_dir: a shop folder (``catalog.jsonl`` + ``goals.jsonl``, see ``datafiles.py``) to
            play instead of the generated catalog; then ``num_products`` and ``num_goals`` must be
            left unset.
        max_steps: step limit of an episode (15, as in the paper's WebShop runs).
        history_length: H, past (observation, action) pairs in the prompt (2).
        scoring: ``"webshop"`` (WebShop's ``get_reward``: fuzzy attribute and option matching, text
            search, title-noun type factor) or ``"exact"`` (this project's former exact rule, which
            the committed learning results used); see ``scoring.py``.
    """

    name = "webshop"
    history_length = 2
    max_steps = 15
    policies = ("oracle", "rule", "random")
    action_rules = ACTION_RULES

    def __init__(
        self,
        split: str = "train",
        num_products: int | None = None,
        catalog_seed: int = 0,
        num_goals: int | None = None,
        num_test_goals: int | None = None,
        max_steps: int = 15,
        history_length: int = 2,
        data_dir: str | None = None,
        scoring: str = "webshop",
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown WebShop split {split!r}; use one of {SPLITS}")
        if scoring not in SCORING_RULES:
            raise ValueError(f"unknown WebShop scoring {scoring!r}; use one of {SCORING_RULES}")
        self.check_limits(max_steps, history_length)
        self.split = split
        self.scoring = scoring
        self.max_steps = int(max_steps)
        self.history_length = int(history_length)
        if data_dir is not None:
            if num_products is not None or num_goals is not None:
                raise ValueError("num_products / num_goals size the generated catalog; a data_dir "
                                 "brings its own catalog and goals, so leave them unset")
            shop = load_shop(data_dir)
            self.catalog, self.goals, engine = shop.catalog, shop.goals, shop.engine
            if num_test_goals is None:
                num_test_goals = shop.num_test_goals
        else:
            num_products = DEFAULT_NUM_PRODUCTS if num_products is None else num_products
            self.catalog = load_catalog(catalog_seed, num_products)
            self.goals = load_goals(catalog_seed, num_products, num_goals)
            engine = load_search_engine(catalog_seed, num_products)
        self.split_indices = split_goal_indices(
            len(self.goals), split, NUM_TEST_GOALS if num_test_goals is None else num_test_goals
        )
        self.site = Site(self.catalog, engine)
        self._episodes: list[_Episode] = []

    # ----- episodes ---------------------------------------------------------------------------
    def num_tasks(self) -> int:
        return len(self.split_indices)

    def goal_for_seed(self, seed: int) -> Goal:
        """The goal seed ``seed`` plays in this split."""
        if seed < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
        return self.goals[self.split_indices[seed % len(self.split_indices)]]

    def task_info(self, goal: Goal) -> TaskInfo:
        return TaskInfo(
            task_id=f"webshop-goal-{goal.index}",
            instruction=goal.instruction,
            task_type=goal.category,
            skill_keys=route_instruction(goal.instruction),
        )

    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        self._episodes = []
        for seed in seeds:
            goal = self.goal_for_seed(seed)
            task = self.task_info(goal)
            for _ in range(group_size):
                ep = _Episode(goal=goal)
                ep.state = self._state(ep, task, step=0, metrics={"score": 0.0})
                self._episodes.append(ep)
        return [ep.state for ep in self._episodes]

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        self.check_step_actions([ep.state for ep in self._episodes], actions)
        for ep, action in zip(self._episodes, actions):
            if action is None:
                continue
            self._step_one(ep, action)
        return [ep.state for ep in self._episodes]

    def _step_one(self, ep: _Episode, action: str) -> None:
        prev = ep.state
        outcome = self.site.act(ep.page, action)
        step = prev.step + 1
        if outcome.valid and ep.page.kind == SEARCH and outcome.page.kind == RESULTS:
            ep.queries.append(outcome.page.query)
        if outcome.page.kind == ITEM_TAB:
            ep.opened_tabs.add((outcome.page.item_id, outcome.page.tab))
        ep.page = outcome.page
        if outcome.bought:
            product = self.catalog.get(ep.page.item_id)
            result = self.score(ep.goal, product, dict(ep.page.selected))
            ep.state = self._state(
                ep,
                prev.task,
                step=step,
                valid=True,
                done=True,
                reward=reward_for_score(result.score),
                metrics=_purchase_metrics(result),
            )
            return
        out_of_steps = step >= self.max_steps
        metrics = {"score": 0.0, "purchased": 0.0} if out_of_steps else {"score": 0.0}
        ep.state = self._state(
            ep, prev.task, step=step, valid=outcome.valid, done=out_of_steps, metrics=metrics
        )

    def _state(
        self,
        ep: _Episode,
        task: TaskInfo,
        step: int,
        valid: bool = True,
        done: bool = False,
        reward: float = 0.0,
        metrics: dict[str, float] | None = None,
    ) -> EnvState:
        view = self.site.view(ep.page)
        admissible = [f"click[{c}]" for c in view.clickables]
        if view.has_search_bar:
            admissible.insert(0, SEARCH_PLACEHOLDER)
        return EnvState(
            task=task,
            observation=view.text,
            raw_observation=view.text,
            admissible_actions=admissible,
            reward=reward,
            done=done,
            won=done and reward > 0,
            valid_action=valid,
            step=step,
            metrics=dict(metrics or {}),
        )

    # ----- what the agent sees and says -----------------------------------------------------
    def render_prompt(
        self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True
    ) -> str:
        lines = [
            "You are shopping for a customer in WebShop, an online store.",
            f"Your task: {state.task.instruction}.",
        ]
        if history:
            first = state.step - len(history) + 1
            lines.append(
                f"You have taken {state.step} step(s) so far. Your last {len(history)} "
                "observation(s) and action(s):"
            )
            for t, (observation, action) in enumerate(history, start=first):
                lines.append(f"[Observation {t}] {observation}")
                lines.append(f"[Action {t}] {action}")
        lines.append(f"Now at step {state.step + 1}, the current page is: {state.observation}")
        lines.append("Admissible actions:")
        lines.extend(f"  {a}" for a in state.admissible_actions or [])
        if think:
            lines.append(
                "First think step by step about which admissible action brings the customer "
                "closest to the right product, inside <think> </think>. Then give exactly one "
                "admissible action inside <action> </action>, for example "
                "<action>click[buy now]</action> or <action>search[red running shoes]</action>."
            )
        else:
            lines.append(
                "Reply with exactly one admissible action inside <action> </action> and "
                "nothing else, for example <action>click[buy now]</action>."
            )
        return "\n".join(lines)

    def parse_action(self, response: str) -> ParsedAction:
        if self.action_rule == "released":
            return released_tag_action(response or "", WEBSHOP_TAIL_CHARS)
        action = extract_tag(response or "", "action")
        if action is None:
            return ParsedAction(action="", format_ok=False)
        return ParsedAction(action=action, format_ok=parse_command(action) is not None)

    # ----- scripted play ----------------------------------------------------------------------
    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        if policy not in self.policies:
            return super().scripted_action(index, policy, rng)
        if not 0 <= index < len(self._episodes):
            raise IndexError(f"episode index {index} out of range; {len(self._episodes)} episodes")
        ep = self._episodes[index]
        if policy == "oracle":
            thought, action = self._oracle(ep)
        elif policy == "rule":
            thought, action = self._rule(ep)
        else:
            thought, action = self._random(ep, rng)
        return f"<think>{thought}</think>\n<action>{action}</action>"

    def satisfies(self, goal: Goal, product: Product) -> bool:
        """Whether buying ``product`` with the goal's options would score 1."""
        offered = product.option_values()
        if any(v not in offered.get(g, ()) for g, v in goal.options):
            return False
        return self.score(goal, product, dict(goal.options)).score >= 1.0

    def score(self, goal: Goal, product: Product, selected: dict[str, str]) -> PurchaseScore:
        """The score of buying ``product`` with ``selected`` options for ``goal``, under this
        environment's scoring rule."""
        target = self.catalog.get(goal.item_id)
        return score_goal_purchase(goal, product, selected, target, rule=self.scoring)

    def _oracle(self, ep: _Episode) -> tuple[str, str]:
        """Search like a shopper (attributes + type), take a product that satisfies the goal from
        the first two results pages, else search the target's exact title; then pick the goal's
        options and buy."""
        goal, page = ep.goal, ep.page
        target = self.catalog.get(goal.item_id)
        if page.kind == SEARCH:
            if not ep.queries:
                q = goal.search_phrase()
                return (
                    f"I will search for the {goal.product_type} with the required attributes.",
                    f"search[{q}]",
                )
            return (
                "I will search for a product I know fits, by its title.",
                f"search[{target.title.lower()}]",
            )
        if page.kind == ITEM_TAB:
            product = self.catalog.get(page.item_id)
            listed = [a for a in goal.attributes if a in product.attributes]
            return (f"The features list {', '.join(listed)}; back to the item page.",
                    f"click[{PREV}]")
        if page.kind == RESULTS:
            products, _ = self.site.results(page)
            fits = [p for p in products if self.satisfies(goal, p)]
            if fits:
                p = fits[0]
                why = (
                    f"{p.item_id} is a {p.product_type} at ${p.price:.2f}, "
                    f"under ${goal.price_upper:.2f}"
                )
                return (
                    f"{why}; I will open it to check it and choose options.",
                    f"click[{p.item_id.lower()}]",
                )
            by_title = len(ep.queries) > 1
            view = self.site.view(page)
            if NEXT in view.clickables and (by_title or page.page_number < 2):
                return (
                    "Nothing here fits every requirement; I will look at the next page.",
                    f"click[{NEXT}]",
                )
            return "No result fits; I will search again.", f"click[{BACK_TO_SEARCH}]"
        # item page
        product = self.catalog.get(page.item_id)
        if not self.satisfies(goal, product):
            return "This product does not fit; back to the results.", f"click[{PREV}]"
        unseen = [a for a in goal.attributes if a not in product.title.lower()]
        steps_left = self.max_steps - ep.state.step
        needed = 1 + sum(dict(page.selected).get(g) != v for g, v in goal.options)
        if unseen and (page.item_id, "features") not in ep.opened_tabs and steps_left > needed + 2:
            return (f"The title does not show {', '.join(unseen)}; I will check the features.",
                    "click[features]")
        selected = dict(page.selected)
        for group, value in goal.options:
            if selected.get(group) != value:
                return f"The customer wants {group} {value}; I will select it.", f"click[{value}]"
        return "Type, attributes, options and price all fit; I will buy it.", f"click[{BUY_NOW}]"

    def _rule(self, ep: _Episode) -> tuple[str, str]:
        """WebShop's rule baseline (search the instruction, open the first result, buy), plus
        selecting the requested option values the item offers."""
        page = ep.page
        if page.kind == SEARCH:
            return "I will search with the instruction.", f"search[{ep.goal.instruction}]"
        if page.kind == RESULTS:
            products, _ = self.site.results(page)
            if not products:
                return "No results.", f"click[{BACK_TO_SEARCH}]"
            return "I will open the first result.", f"click[{products[0].item_id.lower()}]"
        if page.kind == ITEM_TAB:
            return "Back to the item page.", f"click[{PREV}]"
        offered = self.catalog.get(page.item_id).option_values()
        selected = dict(page.selected)
        for group, value in ep.goal.options:
            if value in offered.get(group, ()) and selected.get(group) != value:
                return f"I will select {value}.", f"click[{value}]"
        return "I will buy it.", f"click[{BUY_NOW}]"

    def _random(self, ep: _Episode, rng: random.Random) -> tuple[str, str]:
        """Uniform over the admissible actions; a search uses a few words of the instruction."""
        admissible = ep.state.admissible_actions or []
        action = rng.choice(admissible)
        if action == SEARCH_PLACEHOLDER:
            words = [w for w in ep.goal.instruction.split() if w.isalpha()]
            action = (
                "search[" + " ".join(rng.sample(words, min(len(words), rng.randint(2, 4)))) + "]"
            )
        return "I will try an admissible action at random.", action


def _purchase_metrics(result: PurchaseScore) -> dict[str, float]:
    return {
        "score": result.score,
        "purchased": 1.0,
        "type_factor": result.type_factor,
        "attribute_match": result.attributes_matched / max(1, result.num_attributes),
        "option_match": result.options_matched / max(1, result.num_options)
        if result.num_options
        else 1.0,
        "price_ok": float(result.price_ok),
    }


def make_webshop_env(**options) -> WebShopEnv:
    """Registry factory: ``make_env("webshop", split="test", num_products=2500, ...)``.

    Options are ``WebShopEnv``'s keyword arguments; unknown ones raise with the list of known ones.
    """
    known = list(inspect.signature(WebShopEnv.__init__).parameters)[1:]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown WebShop option(s) {unknown}; known: {list(known)}")
    return WebShopEnv(**options)

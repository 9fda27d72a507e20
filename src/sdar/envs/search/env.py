"""The Search-QA environment: answer a question by searching a corpus (the Search-R1 protocol).

Each turn the agent writes either ``<search>query</search>``, answered with the top-``topk``
passages as ``<information>Doc 1(Title: ...) ...</information>``, or ``<answer>text</answer>``,
which ends the episode with reward = normalised exact match against the golden answers (F1 is
reported too). A response with neither tag, both, or an empty one is an invalid action: the episode
goes on with a short correction as the observation, and the turn counts. At most ``max_steps``
turns (4); an episode that never answers ends with reward 0.

Under ``env.action_rule: released`` (the SDAR authors' projection, ``sdar.envs.action_rules``) the
action is the first tag of the reply cut after its first ``</search>`` (else ``</answer>``), tags
count anywhere (inside ``<think>`` too), an empty tag is accepted (an empty query is sent to the
retriever, an empty answer ends the episode with exact match 0), the environment acts on the
extracted tag even when the reply is invalid (both tags, a tag opened twice), and a reply without
a tag gets an empty observation, as the released environment answers it.

Internal action encoding (what ``parse_action`` returns and ``step`` takes):
``"search:<query>"``, ``"answer:<text>"``; anything else (``""`` for a response without a valid
tag) is an invalid action.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import replace

from sdar.envs.action_rules import ACTION_RULES, released_search_action
from sdar.envs.base import AgentEnv, EnvState, ParsedAction, TaskInfo, extract_tag
from sdar.envs.search.dataset import QAExample
from sdar.envs.search.metrics import answer_in_text, exact_match, f1_score
from sdar.envs.search.retrievers import Document, Retriever, format_information

log = logging.getLogger(__name__)

SEARCH_PREFIX, ANSWER_PREFIX = "search:", "answer:"

INVALID_ACTION_FEEDBACK = (
    "Your last reply contained no usable action. Reply with exactly one of "
    "<search>your query</search> (to look something up) or <answer>your answer</answer> "
    "(to finish), outside the <think> block."
)

# ----- skill routing ---------------------------------------------------------------------------
# data_source -> skill key; Search-R1's seven sets and this project's offline types.
SKILL_KEY_BY_SOURCE: dict[str, str] = {
    "nq": "lookup",
    "triviaqa": "lookup",
    "wiki_lookup": "lookup",
    "fanoutqa": "lookup",
    "popqa": "attribute",
    "wiki_attribute": "attribute",
    "hotpotqa": "two_hop",
    "2wikimultihopqa": "two_hop",
    "musique": "two_hop",
    "bamboogle": "two_hop",
    "wiki_two_hop": "two_hop",
    "wiki_comparison": "comparison",
}
# Sets whose questions may be comparisons; for these the question's form decides.
_MAY_COMPARE = {
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
    "bamboogle",
    "wiki_two_hop",
    "wiki_comparison",
}
_COMPARATIVE = re.compile(
    r"\b(first|earlier|later|older|younger|higher|lower|larger|smaller|bigger|longer|shorter|more|"
    r"fewer|less|taller|before|after|closer|farther|further)\b[^?]*\bor\b",
    re.IGNORECASE,
)
_SAME_OR_BOTH = re.compile(
    r"^(are|were|is|was|do|did|does|have|has)\b.*\b(both|same)\b", re.IGNORECASE
)
_warned_sources: set[str] = set()


def is_comparison_question(question: str) -> bool:
    """ "Who was born first, A or B?", "Were A and B of the same nationality?" and the like."""
    q = question.strip()
    return bool(_COMPARATIVE.search(q) or _SAME_OR_BOTH.search(q))


def route_skills(data_source: str, question: str) -> tuple[str, ...]:
    """The skill keys (besides ``general``) for a question: by ``data_source``, and by question
    form for comparisons. An unknown ``data_source`` routes to the general skills only, with a
    warning once per source (add it to ``SKILL_KEY_BY_SOURCE`` to route it)."""
    source = data_source.lower()
    if source in _MAY_COMPARE and is_comparison_question(question):
        return ("comparison",)
    key = SKILL_KEY_BY_SOURCE.get(source)
    if key is None:
        if source not in _warned_sources:
            _warned_sources.add(source)
            log.warning(
                "Search-QA: data_source %r has no skill routing; its tasks get general skills "
                "only (known: %s)",
                data_source,
                sorted(SKILL_KEY_BY_SOURCE),
            )
        return ()
    return (key,)


# ----- the environment ---------------------------------------------------------------------------
class SearchEnv(AgentEnv):
    """A batch of Search-QA episodes over a fixed question list and one retriever.

    Args:
        questions: the split's questions; seed ``s`` picks ``questions[s % len(questions)]``.
        retriever: any ``Retriever`` (BM25 in process, dense, or the HTTP client).
        topk: passages per search (Search-R1: 3).
        max_steps: turns per episode (Search-R1 / SDAR: 4).
        history_length: H, past turns the prompt shows (SDAR: 4).
        titles: corpus id -> title, used by the oracle to search for supporting passages by name.
    """

    name = "search"
    history_length = 4
    max_steps = 4
    policies = ("oracle", "random")
    action_rules = ACTION_RULES

    def __init__(
        self,
        questions: Sequence[QAExample],
        retriever: Retriever,
        topk: int = 3,
        max_steps: int = 4,
        history_length: int = 4,
        titles: dict[str, str] | None = None,
    ):
        if len(questions) == 0:
            raise ValueError("SearchEnv needs at least one question")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.check_limits(max_steps, history_length)
        self.questions = list(questions)
        self.retriever = retriever
        self.topk = topk
        self.max_steps = max_steps
        self.history_length = history_length
        self.titles = titles or {}
        self._states: list[EnvState] = []
        self._examples: list[QAExample] = []
        self._searches: list[int] = []
        self._seen: list[list[Document]] = []  # passages each episode was shown (for the oracle)
        self._closed = False

    def num_tasks(self) -> int:
        return len(self.questions)

    def task_for_seed(self, seed: int) -> QAExample:
        return self.questions[seed % len(self.questions)]

    # ----- episodes ------------------------------------------------------------------------------
    def reset(self, seeds: Sequence[int], group_size: int = 1) -> list[EnvState]:
        self.check_reset_args(seeds, group_size)
        self._examples, self._states = [], []
        for seed in seeds:
            example = self.task_for_seed(seed)
            task = TaskInfo(
                example.id,
                example.question,
                example.data_source,
                route_skills(example.data_source, example.question),
            )
            for _ in range(group_size):
                self._examples.append(example)
                self._states.append(
                    EnvState(
                        task=task,
                        observation="",
                        raw_observation=example.question,
                        metrics=_metrics(0.0, 0.0, 0, 0, answered=False),
                    )
                )
        self._searches = [0] * len(self._states)
        self._seen = [[] for _ in self._states]
        return list(self._states)

    def step(self, actions: Sequence[str | None]) -> list[EnvState]:
        self.check_step_actions(self._states, actions)
        released = self.action_rule == "released"  # sends an empty query too, as released
        queries = {
            i: a[len(SEARCH_PREFIX) :].strip()
            for i, a in enumerate(actions)
            if a is not None and a.startswith(SEARCH_PREFIX) and (released or a[len(SEARCH_PREFIX) :].strip())
        }
        # one retrieval call per step for the whole batch; copies in a group often repeat a query
        unique = list(dict.fromkeys(queries.values()))
        results = dict(zip(unique, self.retriever.retrieve(unique, self.topk))) if unique else {}
        passages = {i: results[q] for i, q in queries.items()}
        new_states = []
        for i, (state, action) in enumerate(zip(self._states, actions)):
            if action is None:
                new_states.append(state)
                continue
            new_states.append(self._advance(i, state, action, passages.get(i)))
        self._states = new_states
        return list(new_states)

    def _advance(self, i: int, state: EnvState, action: str, passages) -> EnvState:
        example = self._examples[i]
        step = state.step + 1
        invalid = int(state.metrics.get("invalid_actions", 0))
        released = self.action_rule == "released"
        if action.startswith(ANSWER_PREFIX) and (released or action[len(ANSWER_PREFIX) :].strip()):
            answer = action[len(ANSWER_PREFIX) :].strip()
            em = exact_match(answer, example.golden_answers)
            f1 = f1_score(answer, example.golden_answers)
            return replace(
                state,
                observation="",
                raw_observation=f"answered: {answer}",
                reward=em,
                done=True,
                won=em == 1.0,
                valid_action=True,
                step=step,
                metrics=_metrics(em, f1, self._searches[i], invalid, answered=True),
            )
        if passages is not None:
            self._searches[i] += 1
            self._seen[i].extend(p.document for p in passages)
            observation, valid = format_information(passages), True
        else:
            # the released environment answers a reply without a tag with nothing at all
            observation, valid = ("" if released else INVALID_ACTION_FEEDBACK), False
            invalid += 1
        done = step >= self.max_steps
        return replace(
            state,
            observation=observation,
            raw_observation=observation,
            reward=0.0,
            done=done,
            won=False,
            valid_action=valid,
            step=step,
            metrics=_metrics(0.0, 0.0, self._searches[i], invalid, answered=False),
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.retriever.close()

    # ----- what the agent sees and says -----------------------------------------------------------
    def render_prompt(
        self, state: EnvState, history: Sequence[tuple[str, str]], think: bool = True
    ) -> str:
        lines = [
            (
                "Answer the question below. You can query a Wikipedia search engine: write "
                f"<search>your query</search> and it returns the top {self.topk} passages between "
                "<information> and </information>. When you know the answer, write "
                "<answer>your answer</answer> with only the answer itself (a name, a year, a few "
                "words), for example <answer>Paris</answer>."
            ),
            "",
            f"Question: {state.task.instruction}",
        ]
        first = state.step - len(history) + 1
        if history or state.observation:
            lines += ["", "What you did so far (the most recent turns):"]
        for k, (observation, action) in enumerate(history):
            if observation:
                lines.append(observation)
            lines.append(f"Turn {first + k}: {_render_action(action)}")
        if state.observation:
            lines.append(state.observation)
        left = self.max_steps - state.step
        lines.append("")
        if left <= 1:
            lines.append("This is your last turn: give your answer now.")
        else:
            lines.append(f"You have {left} turns left (each search or answer takes one).")
        if think:
            lines.append(
                "First think step by step inside <think> </think>, then write exactly one "
                "<search>...</search> or <answer>...</answer>."
            )
        else:
            lines.append(
                "Reply with exactly one <search>...</search> or <answer>...</answer> and nothing "
                "else."
            )
        return "\n".join(lines)

    def parse_action(self, response: str) -> ParsedAction:
        """``<search>q</search>`` -> ``"search:q"``, ``<answer>a</answer>`` -> ``"answer:a"``.

        Text inside ``<think>...</think>`` is ignored (models quote the format while reasoning).
        Neither tag, both tags, or an empty one give ``ParsedAction("", False)``. Under
        ``action_rule == "released"``: ``sdar.envs.action_rules.released_search_action`` (the
        extracted tag is returned even when the reply is invalid, and the environment acts on it).
        """
        if self.action_rule == "released":
            kind, text, valid = released_search_action(response)
            prefix = {"search": SEARCH_PREFIX, "answer": ANSWER_PREFIX}.get(kind)
            return ParsedAction(prefix + text if prefix else "", valid)
        visible = re.sub(r"<think>.*?</think>", " ", response, flags=re.DOTALL)
        query, answer = extract_tag(visible, "search"), extract_tag(visible, "answer")
        if query and answer is None:
            return ParsedAction(SEARCH_PREFIX + query, True)
        if answer and query is None:
            return ParsedAction(ANSWER_PREFIX + answer, True)
        return ParsedAction("", False)

    # ----- scripted play ------------------------------------------------------------------------
    def scripted_action(self, index: int, policy: str, rng: random.Random) -> str:
        """``oracle``: search each supporting passage by its title (or the question, when the set
        names none), then answer the first golden answer, quoting the sentence of a retrieved
        passage that holds it. ``random``: a random search, answer or
        malformed reply."""
        example = self._examples[index]
        state = self._states[index]
        if policy == "oracle":
            targets = [self.titles[d] for d in example.supporting_ids if d in self.titles] or [
                example.question
            ]
            done_searches = self._searches[index]
            turns_left = self.max_steps - state.step
            if done_searches < len(targets) and turns_left > 1:
                target = targets[done_searches]
                return (
                    f"<think>I need the passage about {target}.</think>\n<search>{target}</search>"
                )
            answer = example.golden_answers[0]
            evidence = _evidence(self._seen[index], example.supporting_ids, example.golden_answers)
            reason = (
                f"{evidence} So the answer is {answer}." if evidence else f"The answer is {answer}."
            )
            return f"<think>{reason}</think>\n<answer>{answer}</answer>"
        if policy == "random":
            words = re.findall(r"\w+", example.question) or ["wikipedia"]
            choice = rng.random()
            if choice < 0.5:
                return f"<search>{' '.join(rng.sample(words, min(3, len(words))))}</search>"
            if choice < 0.8:
                return f"<answer>{rng.choice(words)}</answer>"
            return "I am not sure what to do."
        return super().scripted_action(index, policy, rng)


def _evidence(
    seen: Sequence[Document], supporting_ids: Sequence[str], golden: Sequence[str]
) -> str:
    """The oracle's reasoning. Several supporting passages (bridge, comparison): the first sentence
    of each, the short description that names the bridge entity or the compared year. One passage,
    or none known: the first seen sentence that holds a golden answer."""
    by_id = {doc.id: doc for doc in seen}
    docs = [by_id[d] for d in supporting_ids if d in by_id]
    if len(docs) > 1:
        return " ".join(f'{doc.title}: "{_sentences(doc.text)[0]}"' for doc in docs)
    for doc in docs or seen:
        for sentence in _sentences(doc.text):
            if any(answer_in_text(g, sentence) for g in golden):
                return f'{doc.title}: "{sentence}"'
    return ""


def _sentences(text: str) -> list[str]:
    return [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()] or [text.strip()]


def _render_action(action: str) -> str:
    if action.startswith(SEARCH_PREFIX):
        return f"<search>{action[len(SEARCH_PREFIX) :]}</search>"
    if action.startswith(ANSWER_PREFIX):
        return f"<answer>{action[len(ANSWER_PREFIX) :]}</answer>"
    return "(a reply without a valid <search> or <answer>)"


def _metrics(em: float, f1: float, searches: int, invalid: int, answered: bool) -> dict[str, float]:
    return {
        "em": em,
        "f1": f1,
        "searches": float(searches),
        "invalid_actions": float(invalid),
        "answered": float(answered),
    }


__all__ = [
    "ANSWER_PREFIX",
    "INVALID_ACTION_FEEDBACK",
    "SEARCH_PREFIX",
    "SKILL_KEY_BY_SOURCE",
    "SearchEnv",
    "is_comparison_question",
    "route_skills",
]

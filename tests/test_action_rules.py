"""Action validity, ``env.action_rule``: the released SDAR projections pinned response by response.

Each table row was worked out by hand from the released code
(``agent_system/environments/env_package/{alfworld,webshop,search}/projection.py`` of the SDAR
repository): what the environment is sent and whether the step is valid. The environments are
then played under both rules to show where the penalty falls (docs/algorithm.md, "Departures from
the released code").
"""

from __future__ import annotations

import pytest

from sdar.envs import make_env
from sdar.envs.action_rules import (
    ALFWORLD_TAIL_CHARS,
    WEBSHOP_TAIL_CHARS,
    check_action_rule,
    cut_search_reply,
    released_search_action,
    released_tag_action,
)
from sdar.envs.search import make_search_env
from sdar.envs.search.dataset import QAExample, write_corpus, write_qa
from sdar.envs.search.env import INVALID_ACTION_FEEDBACK
from sdar.envs.search.retrievers import Document
from sdar.rollout import PromptBuilder, collect_rollout

T = "<think>ok</think>"

# (response, action sent to ALFWorld, valid). ALFWorld keeps the last 30 characters of a reply
# without both action tags.
ALFWORLD_TABLE = [
    (f"{T}<action>go to desk 1</action>", "go to desk 1", True),
    ("<action>go to desk 1</action>", "go to desk 1", False),  # no <think>
    (f"{T}<action>Go To Desk 1</action>", "go to desk 1", True),  # lower-cased
    (f"{T}<action>open drawer 1</action><action>go to desk 1</action>", "open drawer 1", True),  # first
    ("<think>say <action>look</action></think><action>go to desk 1</action>", "look", True),  # in think
    (f"{T}<action></action>", "", True),  # empty tag: valid, the engine answers "Nothing happens."
    (f"{T}<action>   </action>", "", True),
    (f"{T}go to desk 1", "<think>ok</think>go to desk 1", False),  # no tag: the (short) reply itself
    (f"{T}<action>go to desk 1", "ok</think><action>go to desk 1", False),  # unclosed: last 30
    ("<think>我想去</think><action>go to desk 1</action>", "go to desk 1", False),  # CJK
    (f"{T}<action>去桌子</action>", "去桌子", False),
    ("<think>いこう</think><action>look</action>", "look", True),  # kana is not in U+4E00..U+9FFF
    ("<think>가자</think><action>look</action>", "look", True),  # nor is Hangul
    ("<THINK>ok</THINK><action>look</action>", "look", False),  # the think check is case-sensitive
    (f"{T}<ACTION>Look</ACTION>", "look", True),  # the action tags are not
    (f"</action>{T}<action>look</action>", "", True),  # first </action> before first <action>
    ("<think>no end <action>look</action>", "look", False),  # </think> missing
    ("</think><action>look</action><think>", "look", True),  # both think tags present, any order
    ("I would now like to Go To Desk 1 and Open Drawer 1", "go to desk 1 and open drawer 1", False),
    ("", "", False),
    (f"{T}<action>go to\n  desk 1</action>", "go to desk 1", True),  # white space collapsed (engine)
]

# (response, action sent to WebShop, valid). WebShop keeps the last 20 characters.
WEBSHOP_TABLE = [
    (f"{T}<action>search[red shoes]</action>", "search[red shoes]", True),
    (f"{T}<action>click[Buy Now]</action>", "click[buy now]", True),
    ("<action>click[buy now]</action>", "click[buy now]", False),  # no <think>
    (f"{T}<action>click[b0]</action><action>click[buy now]</action>", "click[b0]", True),
    ("<think>I will <action>click[back to search]</action></think><action>click[b1]</action>",
     "click[back to search]", True),
    (f"{T}<action></action>", "", True),
    (f"{T}<action>not a command</action>", "not a command", True),  # the site answers it
    (f"{T}click[buy now]", "think>click[buy now]", False),  # no tag: last 20 characters
    (f"{T}<action>click[buy now]", "ction>click[buy now]", False),
    ("<think>买鞋</think><action>search[shoes]</action>", "search[shoes]", False),
    ("<think>くつ</think><action>search[shoes]</action>", "search[shoes]", True),
    ("<Think>ok</Think><action>search[shoes]</action>", "search[shoes]", False),
    (f"{T}<Action>Search[Red Shoes]</Action>", "search[red shoes]", True),
    (f"</action>{T}<action>click[b0]</action>", "", True),
    ("<think>unclosed<action>click[b0]</action>", "click[b0]", False),
    ("", "", False),
    (f"{T} <action>  search[ a b ]  </action>", "search[ a b ]", True),
]

# (response, action in the environment's encoding, valid). No <think> or CJK rule for Search.
SEARCH_TABLE = [
    ("<search>Chuck Berry</search>", "search:Chuck Berry", True),
    ("<answer>1926</answer>", "answer:1926", True),
    ("<search></search>", "search:", True),  # empty tag accepted
    ("<answer>  </answer>", "answer:", True),
    ("<search>a</search> <answer>b</answer>", "search:a", False),  # both tags: acted on, invalid
    ("<answer>b</answer> <search>a</search>", "search:a", False),  # a <search> block is looked for first
    ("<think>I could <search>a</search></think><answer>Paris</answer>", "search:a", False),  # think counts
    ("<think>maybe <answer>x</answer> later</think>\n<search> q </search>", "search:q", False),
    ("<search>first</search> then <search>second</search>", "search:first", False),  # opened twice
    ("<answer>one</answer><answer>two</answer>", "answer:one", False),
    ("plain text", "", False),
    ("<answer>1926", "", False),  # unclosed
    ("<SEARCH>Chuck Berry</SEARCH>", "search:Chuck Berry", True),  # tags case-insensitive
    ("<think>let me see</think>\n<search>Moby-Dick author</search>", "search:Moby-Dick author", True),
    ("<search>q</search><information>made up</information><answer>x</answer>", "search:q", False),
    ("<search>two\nlines</search>", "search:two\nlines", True),
    ("I will search. </search> <search>q</search>", "", False),  # cut before the only block
    ("</answer><answer>x</answer>", "", False),
    ("<think>我想</think><answer>巴黎</answer>", "answer:巴黎", True),
    ("<search>q</search> trailing words", "search:q", True),
]


@pytest.mark.parametrize("response, action, valid", ALFWORLD_TABLE)
def test_alfworld_released_rule(alfworld_env, response, action, valid):
    parsed = alfworld_env.parse_action(response)
    assert (parsed.action, parsed.format_ok) == (action, valid)


@pytest.mark.parametrize("response, action, valid", WEBSHOP_TABLE)
def test_webshop_released_rule(webshop_env, response, action, valid):
    parsed = webshop_env.parse_action(response)
    assert (parsed.action, parsed.format_ok) == (action, valid)


@pytest.mark.parametrize("response, action, valid", SEARCH_TABLE)
def test_search_released_rule(search_env, response, action, valid):
    parsed = search_env.parse_action(response)
    assert (parsed.action, parsed.format_ok) == (action, valid)


def test_tables_are_large_enough():
    assert min(len(ALFWORLD_TABLE), len(WEBSHOP_TABLE), len(SEARCH_TABLE)) >= 15


def test_tail_lengths_and_the_raw_projection():
    assert (ALFWORLD_TAIL_CHARS, WEBSHOP_TAIL_CHARS) == (30, 20)
    # the raw projection keeps white space inside the tag; only ALFWorld collapses it afterwards
    assert released_tag_action(f"{T}<action>go to\n desk 1</action>", 30).action == "go to\n desk 1"
    assert released_search_action("<search> </search>") == ("search", "", True)
    assert released_search_action("no tag") == (None, "", False)


@pytest.mark.parametrize(
    "reply, cut",
    [
        ("<search>a</search> more <answer>b</answer>", "<search>a</search>"),
        ("<answer>b</answer> more", "<answer>b</answer>"),
        ("<answer>b</answer><search>a</search>", "<answer>b</answer><search>a</search>"),
        ("<SEARCH>a</SEARCH> more", "<SEARCH>a</SEARCH> more"),  # the cut is case-sensitive
        ("nothing", "nothing"),
    ],
)
def test_cut_search_reply(reply, cut):
    assert cut_search_reply(reply) == cut


def test_project_rule_is_the_default_and_unknown_rules_fail():
    with make_env("webshop", split="test") as env:
        assert env.action_rule == "project"
        assert env.parse_action("<think>x</think><action>a</action><action>click[b0]</action>").action == "click[b0]"
    with pytest.raises(ValueError, match="has no action rule 'released'"):
        make_env("toy", action_rule="released")
    with pytest.raises(ValueError, match="unknown action rule 'paper'"):
        check_action_rule("paper")


# ----- environments ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alfworld_env(tmp_path_factory):
    from sdar.envs.alfworld.generator import PRESETS, generate_games

    out = tmp_path_factory.mktemp("rules-alfworld")
    generate_games(out, "train", 1, seed=3, config=PRESETS["medium"])
    with make_env("alfworld", action_rule="released", data_dir=str(out)) as env:
        yield env


@pytest.fixture(scope="module")
def webshop_env():
    with make_env("webshop", action_rule="released", split="test") as env:
        yield env


CORPUS = [
    Document("0", '"Chuck Berry"\nAmerican musician (1926-2017). Charles Berry was a guitarist.'),
    Document("1", '"Paris"\nCapital of France.'),
]
QUESTIONS = [QAExample("q0", "In what year was Chuck Berry born?", ("1926",), "wiki_attribute", ("0",))]


@pytest.fixture(scope="module")
def search_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules-search")
    write_corpus(folder / "corpus.jsonl", CORPUS)
    write_qa(folder / "train.jsonl", QUESTIONS)
    write_qa(folder / "test.jsonl", QUESTIONS)
    return folder


@pytest.fixture
def search_env(search_data):
    with make_env("search", action_rule="released", data_dir=str(search_data)) as env:
        yield env


def test_alfworld_not_admissible_is_answered_and_not_penalised(alfworld_env):
    state = alfworld_env.reset([0])[0]
    command = "fly to the moon"
    assert command not in state.admissible_actions
    parsed = alfworld_env.parse_action(f"{T}<action>{command}</action>")
    new = alfworld_env.step([parsed.action])[0]
    assert new.observation == "Nothing happens." and not new.valid_action  # the env's own verdict
    assert alfworld_env.action_valid(parsed, new)  # ... which the released rule does not consult
    alfworld_env.set_action_rule("project")
    try:
        assert not alfworld_env.action_valid(alfworld_env.parse_action(f"<action>{command}</action>"), new)
    finally:
        alfworld_env.set_action_rule("released")


def test_search_released_env_acts_on_empty_and_ambiguous_tags(search_env):
    search_env.reset([0])
    s = search_env.step([search_env.parse_action("<search></search>").action])[0]
    assert s.observation.startswith("<information>Doc 1(") and not s.done  # the empty query is sent
    s = search_env.step([search_env.parse_action("<search>Chuck Berry</search><answer>x</answer>").action])[0]
    assert "Chuck Berry" in s.observation and not s.done  # invalid, yet searched as released
    s = search_env.step([search_env.parse_action("no tag at all").action])[0]
    assert s.observation == "" and not s.done  # the released environment answers with nothing
    s = search_env.step([search_env.parse_action("<answer></answer>").action])[0]
    assert s.done and s.reward == 0.0 and s.metrics["answered"] == 1.0


def test_search_project_rule_refuses_the_same_replies(search_data):
    with make_search_env(data_dir=str(search_data)) as env:
        env.reset([0])
        for reply in ("<search></search>", "<search>Chuck Berry</search><answer>x</answer>"):
            parsed = env.parse_action(reply)
            s = env.step([parsed.action])[0]
            assert parsed.action == "" and s.observation == INVALID_ACTION_FEEDBACK


@pytest.mark.parametrize("rule, scores", [("project", [-0.1, -0.1]), ("released", [0.0, -0.1])])
def test_collector_penalty_follows_the_rule(tokenizer, rule, scores):
    """WebShop, one episode of two steps: an unavailable click with <think>, then a reply without
    <think>. Project: both penalised (refused click; the second is refused too: no such button).
    Released: only the second (no <think>); the refused click is answered, not penalised."""
    replies = [f"{T}<action>click[no such button]</action>", "<action>click[nothing]</action>"]
    with make_env("webshop", action_rule=rule, split="test", max_steps=2) as env:
        builder = PromptBuilder(env, tokenizer, None, think=True)
        calls = iter(replies)

        def generate(prompt_ids):
            return [tokenizer(next(calls), add_special_tokens=False)["input_ids"] for _ in prompt_ids]

        rollout = collect_rollout(env, builder, generate, tokenizer, [0], 1, history_length=2,
                                  max_prompt_tokens=2048, invalid_action_penalty=0.1, progress=False)
    assert [s.score for s in rollout.samples] == pytest.approx(scores)
    assert [s.response_text for s in rollout.samples] == replies  # trained ids are the sampled ones


def test_config_key_reaches_the_environment_and_refuses_action_only():
    from sdar.trainer.config import ConfigError, load_config
    from sdar.trainer.trainer import make_run_env

    config = load_config(None, ["env.name=webshop", "env.action_rule=released"])
    with make_run_env(config.env, "test") as env:
        assert env.action_rule == "released"
    assert load_config(None, []).env.action_rule == "project"
    with pytest.raises(ConfigError, match="needs <think> in every webshop reply"):
        load_config(None, ["env.name=webshop", "env.action_rule=released", "env.prompt_mode=action_only"])
    with pytest.raises(ConfigError, match=r"env.action_rule must be one of \['project', 'released'\]"):
        load_config(None, ["env.action_rule=paper"])

"""The WebShop AgentEnv played through its real pages, search engine and scoring."""

from __future__ import annotations

import json
import random

import pytest

from sdar.cli import main as sdar_main
from sdar.envs import make_env
from sdar.envs.play import play_episodes
from sdar.envs.webshop import WebShopEnv
from sdar.envs.webshop.scoring import (
    fuzzy_match,
    normalize_color,
    score_goal_purchase,
    title_nouns,
)


@pytest.fixture(scope="module")
def env():
    e = make_env("webshop", split="test")
    yield e
    e.close()


def act(env, action):
    """Step the single running episode with ``action``."""
    (state,) = env.step([action])
    return state


def play_oracle(env, index=0, rng=None):
    rng = rng or random.Random(0)
    states = env._episodes
    total = 0.0
    while not states[index].state.done:
        response = env.scripted_action(index, "oracle", rng)
        state = act(env, env.parse_action(response).action)
        total += state.reward
    return states[index].state, total


def test_registry_builds_webshop_with_the_published_settings(env):
    assert isinstance(env, WebShopEnv)
    assert (env.max_steps, env.history_length) == (15, 2)
    assert len(env.catalog) >= 2000
    assert env.num_tasks() == 500
    assert make_env("webshop", split="train").num_tasks() == len(env.goals) - 500


def test_oracle_buys_the_goal_with_score_one(env):
    (state,) = env.reset([7])
    goal = env.goal_for_seed(7)
    assert state.task.instruction == goal.instruction
    assert state.task.task_type == goal.category
    assert state.observation == "WebShop [SEP] Search"
    assert state.admissible_actions == ["search[<your query>]"]
    final, total = play_oracle(env)
    assert final.done and final.won
    assert final.metrics["score"] == 1.0 and final.metrics["purchased"] == 1.0
    assert final.reward == 10.0 and total == 10.0
    assert final.step <= env.max_steps


def test_oracle_scores_one_on_five_hundred_test_goals(env):
    summary = play_episodes(env, "oracle", 500, seed=0)
    assert summary["success"] == 1.0
    assert summary["mean_return"] == 10.0
    assert len(summary["per_task_type"]) == 7


@pytest.mark.slow
def test_oracle_scores_one_on_every_training_goal():
    train = make_env("webshop", split="train")
    summary = play_episodes(train, "oracle", train.num_tasks(), seed=0)
    assert summary["episodes"] == train.num_tasks()
    assert summary["success"] == 1.0


def test_buying_with_a_wrong_option_gives_the_partial_score_by_hand(env):
    seed, wrong = next((s, w) for s in range(500) if (w := _unmatched_alternative(env, s)))
    goal = env.goal_for_seed(seed)
    product = env.catalog.get(goal.item_id)
    env.reset([seed])
    act(env, f"search[{product.title}]")
    state = act(env, f"click[{product.item_id.lower()}]")
    assert (
        product.title in state.observation and f"Price: ${product.price:.2f}" in state.observation
    )
    group, rest = goal.options[0][0], goal.options[1:]
    act(env, f"click[{wrong}]")
    for _, value in rest:
        state = act(env, f"click[{value}]")
    assert f"{group} {wrong}" in state.observation  # the page shows what is selected
    final = act(env, "click[buy now]")
    n_attr, n_opt = len(goal.attributes), len(goal.options)
    expected = (n_attr + (n_opt - 1) + 1) / (n_attr + n_opt + 1)
    assert final.done and not final.won
    assert final.metrics["score"] == pytest.approx(expected)
    assert final.reward == 0.0


def test_buying_another_product_type_scores_by_the_type_factor(env):
    env.reset([3])
    goal = env.goal_for_seed(3)
    target = env.catalog.get(goal.item_id)
    # another type sharing no title noun with the target: WebShop's type factor is 0
    other = next(
        p
        for p in env.catalog.products
        if p.category != goal.category
        and not set(title_nouns(p.title)) & set(title_nouns(target.title))
    )
    act(env, f"search[{other.title}]")
    act(env, f"click[{other.item_id.lower()}]")
    final = act(env, "click[buy now]")
    assert final.done and final.metrics["score"] == 0.0 and final.metrics["type_factor"] == 0.0
    assert final.reward == 0.0 and not final.won


def _unmatched_alternative(env, seed):
    """Another value of the goal's first option group that WebShop's fuzzy test does not take
    for the wanted value, nor do the goal's other values ("30 count" for "60 count" would match)."""
    goal = env.goal_for_seed(seed)
    if not goal.options:
        return None
    product = env.catalog.get(goal.item_id)
    (group, wanted), rest = goal.options[0], goal.options[1:]
    if any(fuzzy_match(normalize_color(v), normalize_color(wanted)) for _, v in rest):
        return None
    return next((v for v in dict(product.options)[group]
                 if not fuzzy_match(normalize_color(v), normalize_color(wanted))), None)


def test_results_pages_hold_ten_items_and_page_forward_and_back(env):
    env.reset([0])
    page1 = act(env, "search[boots]")
    assert page1.valid_action
    assert "Page 1 (Total results: 50)" in page1.observation
    assert (
        "click[next >]" in page1.admissible_actions
        and "click[< prev]" not in page1.admissible_actions
    )
    ids1 = [a for a in page1.admissible_actions if a.startswith("click[b0")]
    assert len(ids1) == 10
    page2 = act(env, "click[next >]")
    ids2 = [a for a in page2.admissible_actions if a.startswith("click[b0")]
    assert "Page 2 (Total results: 50)" in page2.observation and len(ids2) == 10
    assert not set(ids1) & set(ids2)
    assert "click[< prev]" in page2.admissible_actions
    for _ in range(3):
        last = act(env, "click[next >]")
    assert "Page 5 (Total results: 50)" in last.observation
    assert "click[next >]" not in last.admissible_actions
    stuck = act(env, "click[next >]")
    assert not stuck.valid_action and stuck.raw_observation == last.raw_observation
    back = act(env, "click[< prev]")
    assert "Page 4 (Total results: 50)" in back.observation
    for _ in range(3):
        back = act(env, "click[< prev]")
    assert back.raw_observation == page1.raw_observation


def test_back_navigation_keeps_selections_and_returns_to_the_same_results(env):
    env.reset([0])
    act(env, "search[waterproof hiking boots]")
    results = act(env, "click[next >]")
    item_id = next(a for a in results.admissible_actions if a.startswith("click[b0"))[6:-1]
    item = act(env, f"click[{item_id}]")
    product = env.catalog.get(item_id)
    assert item.admissible_actions[:2] == ["click[back to search]", "click[< prev]"]
    for tab in ("description", "features", "reviews", "buy now"):
        assert f"click[{tab}]" in item.admissible_actions
    size = product.options[0][1][-1]
    selected = act(env, f"click[{size}]")
    assert f"Selected: size {size}" in selected.observation
    features = act(env, "click[features]")
    assert features.admissible_actions == ["click[back to search]", "click[< prev]"]
    for attribute in product.attributes:
        assert attribute in features.observation
    again = act(env, "click[< prev]")
    assert again.raw_observation == selected.raw_observation
    to_results = act(env, "click[< prev]")
    assert to_results.raw_observation == results.raw_observation
    home = act(env, "click[back to search]")
    assert home.observation == "WebShop [SEP] Search" and home.valid_action
    assert home.step == 8 and not home.done


def test_invalid_actions_leave_the_page_unchanged_and_count_a_step(env):
    (start,) = env.reset([1])
    for bad in ("click[buy now]", "", "buy the shoes", "search[]", "click[]"):
        state = act(env, bad)
        assert not state.valid_action, bad
        assert state.raw_observation == start.raw_observation
    assert state.step == 5
    results = act(env, "search[scented candles]")
    for bad in ("search[lamp]", "click[b000000000]", "click[description]", "click[buy now]"):
        state = act(env, bad)
        assert not state.valid_action and state.raw_observation == results.raw_observation, bad
    ok = act(env, "CLICK[ Next > ]")  # clicks compare case- and space-insensitively, as WebShop's
    assert ok.valid_action and "Page 2" in ok.observation


def test_step_limit_ends_the_episode_with_score_zero(env):
    env.reset([2])
    for i in range(14):
        state = act(env, "click[nothing]")
        assert not state.done and state.step == i + 1
    final = act(env, "search[lipstick]")
    assert final.done and final.step == 15 and not final.won
    assert final.reward == 0.0 and final.metrics == {"score": 0.0, "purchased": 0.0}
    with pytest.raises(ValueError, match="already done"):
        env.step(["click[next >]"])
    assert env.step([None])[0] is not None


def test_reset_groups_copies_and_maps_seeds_to_goals(env):
    states = env.reset([4, 5], group_size=3)
    assert len(states) == 6
    assert len({s.task.task_id for s in states[:3]}) == 1 and states[0].task != states[3].task
    assert env.goal_for_seed(4).index == 4 and env.goal_for_seed(504).index == 4
    train = make_env("webshop", split="train")
    assert train.goal_for_seed(0).index == 500
    assert train.reset([9])[0].task == make_env("webshop", split="train").reset([9])[0].task
    # Copies acting alike see identical raw observations; a different selection differs.
    env.reset([4], group_size=2)
    env.step(["search[leather wallet]", "search[leather wallet]"])
    states = env.step(["click[next >]", "click[next >]"])
    assert states[0].raw_observation == states[1].raw_observation


def test_prompt_shows_instruction_history_page_and_actions(env):
    (state,) = env.reset([0])
    s1 = act(env, "search[t-shirt]")
    s2 = act(env, "click[next >]")
    prompt = env.render_prompt(
        s2, [(state.observation, "search[t-shirt]"), (s1.observation, "click[next >]")]
    )
    assert s2.task.instruction in prompt
    assert (
        "[Observation 1] WebShop [SEP] Search" in prompt and "[Action 1] search[t-shirt]" in prompt
    )
    assert "[Action 2] click[next >]" in prompt
    assert "step 3" in prompt and s2.observation in prompt
    for action in s2.admissible_actions:
        assert action in prompt
    assert "<think>" in prompt and "<action>" in prompt
    short = env.render_prompt(s2, [], think=False)
    assert "<think>" not in short and "[Observation" not in short and "<action>" in short


def test_parse_action_reads_the_last_action_tag(env):
    parsed = env.parse_action(
        "<think>maybe <action>x</action></think><action>click[buy now]</action>"
    )
    assert (parsed.action, parsed.format_ok) == ("click[buy now]", True)
    assert env.parse_action("click[buy now]").format_ok is False
    assert env.parse_action("<action>buy it</action>").format_ok is False


def test_bad_options_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known"):
        make_env("webshop", splitt="test")
    with pytest.raises(ValueError, match="train"):
        make_env("webshop", split="dev")
    with pytest.raises(ValueError, match="num_test_goals"):
        make_env("webshop", num_products=100, num_goals=200, num_test_goals=500)


def test_small_catalog_for_quick_experiments_still_solvable():
    small = make_env("webshop", split="test", num_products=300, num_goals=400, num_test_goals=100)
    assert small.num_tasks() == 100 and len(small.catalog) == 300
    assert play_episodes(small, "oracle", 100)["success"] == 1.0


def test_random_policy_plays_valid_episodes(env):
    summary = play_episodes(env, "random", 40, seed=3, rng=random.Random(3))
    assert summary["episodes"] == 40 and summary["success"] < 0.5
    assert 1 <= summary["mean_steps"] <= 15


def test_goal_target_satisfies_its_goal(env):
    for seed in range(0, 500, 7):
        goal = env.goal_for_seed(seed)
        product = env.catalog.get(goal.item_id)
        assert env.satisfies(goal, product)
        assert score_goal_purchase(goal, product, dict(goal.options), product).score == 1.0


def test_cli_env_play_oracle_and_random(capsys, tmp_path):
    demos = tmp_path / "demos.jsonl"
    assert (
        sdar_main(
            [
                "env",
                "play",
                "--env",
                "webshop",
                "--policy",
                "oracle",
                "--episodes",
                "6",
                "--split",
                "test",
                "--write-demos",
                str(demos),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["success"] == 1.0 and summary["episodes"] == 6
    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    assert rows and all(r["won"] for r in rows)
    assert rows[0]["response"].startswith("<think>") and "<action>search[" in rows[0]["response"]
    assert (
        sdar_main(["env", "play", "--env", "webshop", "--policy", "random", "--episodes", "3"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["policy"] == "random"


def test_rule_policy_buys_the_first_result_with_the_offered_options(env):
    rng = random.Random(0)
    for seed in (0, 1, 2, 3):
        env.reset([seed])
        goal = env.goal_for_seed(seed)
        while not env._episodes[0].state.done:
            state = act(env, env.parse_action(env.scripted_action(0, "rule", rng)).action)
        first = env.catalog.products[env.site.engine.search(goal.instruction)[0]]
        offered = first.option_values()
        chosen = {g: v for g, v in goal.options if v in offered[g]}
        assert state.step == 3 + len(chosen)
        target = env.catalog.get(goal.item_id)
        assert state.metrics["score"] == score_goal_purchase(goal, first, chosen, target).score
    summary = play_episodes(env, "rule", 100, seed=0)
    assert 0.0 < summary["success"] < 1.0

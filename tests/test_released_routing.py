"""Skill routing, layout and teacher truncation as the authors' released code does them
(``teacher.routing: released``, ``teacher.student_layout``, ``teacher.on_overflow: truncate_left``).

Expected keys are worked out by hand from the released ``SkillProvider`` (ZJU-REAL/SDAR,
``verl/trainer/ppo/rlsd_utils.py``) and ``skills/<env>/skill_mapping.json``; expected prompts from
``main_skill_grpo.py`` (skills opening the observation text, inside the chat template) and
``rlsd_ray_trainer.build_teacher_batch`` (skills before the chat-rendered prompt, then
``ids[-max_prompt_length:]``).
"""

from __future__ import annotations

import pytest

from sdar.envs import make_env
from sdar.envs.base import TaskInfo
from sdar.rollout import PromptBuilder, collect_rollout
from sdar.rollout.prompts import SKILL_HEADER
from sdar.skills import SkillLibrary
from sdar.skills.released import check_released_env, route_observation, route_teacher


@pytest.fixture(scope="module")
def shop():
    env = make_env("webshop", split="test", max_steps=2, num_products=300, num_goals=200, num_test_goals=100)
    yield env
    env.close()


# ----- the student rule: keyword substrings of the observation --------------------------------------
@pytest.mark.parametrize("text, keys", [
    ("Your task is to: put a clean apple in fridge.", ("clean", "pick")),
    ("Your task is to: put two cellphone in sofa.", ("pick", "pick")),  # both task types, one file
    ("Your task is to: look at bowl under the desklamp.", ("look",)),
    ("Your task is to: examine the alarmclock with the desklamp.", ()),  # a look task the rule misses
    ("Your task is to: heat some egg and put it in countertop.", ("heat", "pick")),
    # admissible actions count too; case is ignored
    ("Your task is to: COOL some lettuce and PUT it. Admissible: heat lettuce 1 with microwave 1",
     ("heat", "cool", "pick")),
    ("You see a lightswitch 1.", ("look",)),  # "light" as a substring
])
def test_alfworld_observation_keywords(text, keys):
    assert route_observation("alfworld", text) == keys


@pytest.mark.parametrize("text, keys", [
    ("i need a red t-shirt", ("apparel",)),
    ("a usb cable, and a charger", ("electronics",)),  # one entry per category
    ("find me the one that fits", ("accessories",)),  # "hat" in "that"
    ("a steering wheel cover", ("footwear",)),  # "heel" in "wheel"
    ("running shoes and a leather wallet", ("footwear", "accessories")),  # mapping order
    ("green teabags", ("accessories",)),  # "bag" in "teabags"; "other" has no keywords
    ("mixed nuts", ()),
])
def test_webshop_observation_keywords(text, keys):
    assert route_observation("webshop", text) == keys


def test_search_students_get_general_skills_only():
    assert route_observation("search", "Which city is older, Rome or Paris? put heat on the shirt") == ()


# ----- the teacher rule -------------------------------------------------------------------------------
def task(task_type, instruction="x"):
    return TaskInfo("t", instruction, task_type)


@pytest.mark.parametrize("task_type, key", [
    ("pick_two_obj_and_place", ("pick",)),  # the released mapping: pick_two reads the pick file
    ("pick_and_place_simple", ("pick",)),
    ("look_at_obj_in_light", ("look",)),
    ("pick_heat_then_place_in_recep", ("heat",)),
    ("pick_cool_then_place_in_recep", ("cool",)),
    ("pick_clean_then_place_in_recep", ("clean",)),
])
def test_alfworld_teacher_by_task_type(task_type, key):
    # the prompt text plays no part for ALFWorld (the released code routes by the game file)
    assert route_teacher("alfworld", task(task_type), "put two, heat, clean") == key


@pytest.mark.parametrize("source, prompt, key", [
    ("popqa", "which or", ("attribute",)),
    ("nq", "", ("lookup",)),
    ("triviaqa", "", ("lookup",)),
    ("hotpotqa", "Which is older, A or B?", ("two_hop",)),  # hotpotqa is always multi-hop
    ("2wikimultihopqa", "Which is older, A or B?", ("comparison",)),
    ("2wikimultihopqa", "Which is older, A or B? Answer format: ...", ("two_hop",)),  # "for" in "format"
    ("musique", "", ("two_hop",)),
    ("bamboogle", "search returns <information>", ("two_hop",)),
    ("wiki_lookup", "", ()),  # this project's offline sets: general only
])
def test_search_teacher_by_data_source(source, prompt, key):
    assert route_teacher("search", task(source), prompt) == key


def test_webshop_teacher_reads_the_whole_prompt_and_its_comparison_branch():
    assert route_teacher("webshop", task("other"), "a shirt for the beach; results: red boots") == (
        "apparel", "footwear")
    # "which" and "or" without "for": the released comparison branch, no WebShop file: general only
    assert route_teacher("webshop", task("apparel"), "which shirt or dress") == ()


def test_released_routing_is_defined_for_three_environments(tokenizer):
    with pytest.raises(ValueError, match="teacher.routing=released is defined for alfworld, webshop, search"):
        check_released_env("toy")
    with pytest.raises(ValueError, match="not 'toy'"):
        PromptBuilder(make_env("toy"), tokenizer, SkillLibrary("toy"), routing="released")
    with pytest.raises(ValueError, match="skill routing must be one of"):
        PromptBuilder(make_env("toy"), tokenizer, SkillLibrary("toy"), routing="keywords")


def test_repeated_keys_repeat_the_file_only_when_asked():
    library = SkillLibrary("alfworld")
    once = library.select_keys(("pick", "pick"))
    twice = library.select_keys(("pick", "pick"), repeats=True)
    assert once.files == ("alfworld/general.md", "alfworld/pick.md")
    assert twice.files == ("alfworld/general.md", "alfworld/pick.md", "alfworld/pick.md")
    pick = (library.folder / "pick.md").read_text().strip()
    assert twice.text.count(pick) == 2 and twice.text == once.text + "\n\n" + pick


# ----- prompts as released ----------------------------------------------------------------------------
def released_builder(shop, tokenizer):
    return PromptBuilder(shop, tokenizer, SkillLibrary("webshop"), think=True, layout="prefix",
                         routing="released", student_layout="user")


def test_skill_grpo_student_prompt_equals_the_released_text(shop, tokenizer):
    builder = released_builder(shop, tokenizer)
    state = shop.reset([1])[0]
    history = [("WebShop [SEP] Search", "search[red shirt]")]
    p = builder.build(state, history, 4096, with_skills=True, role="student")
    message = shop.render_prompt(state, history, think=True)
    keys = route_observation("webshop", message)
    assert "apparel" in keys  # from the history's search, not from the instruction
    skills = SkillLibrary("webshop").select_keys(keys, repeats=True)
    assert p.skill_files == skills.files
    # released: obs = "[Privileged Skill Information]\n" + skills + "\n\n" + obs, then the chat template
    released = tokenizer.apply_chat_template(
        [{"role": "user", "content": SKILL_HEADER + skills.text + "\n\n" + message}],
        add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(p.ids) == released


def test_released_teacher_prompt_routes_over_the_chat_rendered_prompt(shop, tokenizer):
    builder = released_builder(shop, tokenizer)
    state = shop.reset([1])[0]
    student = builder.build(state, [], 4096)
    teacher = builder.build(state, [], 4096, with_skills=True, on_overflow="truncate_left")
    chat = tokenizer.decode(student.ids)
    skills = SkillLibrary("webshop").select_keys(route_teacher("webshop", state.task, chat), repeats=True)
    assert teacher.skill_files == skills.files and "webshop/electronics.md" in skills.files
    assert tokenizer.decode(teacher.prefix_ids) == SKILL_HEADER + skills.text + "\n\n"
    assert teacher.rest_ids == student.ids and not teacher.truncated


def test_truncate_left_cuts_skills_first_then_the_prompt(shop, tokenizer):
    builder = released_builder(shop, tokenizer)
    state = shop.reset([1])[0]
    history = [("WebShop [SEP] Search", "search[keyboard]")]
    full = builder.build(state, history, 100_000, with_skills=True, on_overflow="truncate_left")
    assert not full.truncated and full.history_used == 1
    for budget in (len(full.ids) - 7, len(full.rest_ids), len(full.rest_ids) - 5):
        cut = builder.build(state, history, budget, with_skills=True, on_overflow="truncate_left")
        assert cut.ids == full.ids[-budget:]  # released: teacher_prompt_ids[-max_prompt_length:]
        assert cut.truncated and cut.history_used == 1 and cut.history_dropped == 0
    assert builder.build(state, history, len(full.ids) - 7, with_skills=True,
                         on_overflow="truncate_left").rest_ids == full.rest_ids  # only skills lost
    # the default never cuts skills: it drops the history pair instead
    kept = builder.build(state, history, len(full.ids) - 7, with_skills=True, on_overflow="drop_history")
    assert kept.prefix_ids == full.prefix_ids and kept.history_dropped == 1


def test_collector_routes_a_skill_seeing_student_per_step(shop, tokenizer):
    builder = released_builder(shop, tokenizer)
    plans = ["<action>search[red shirt]</action>", "<action>click[back to search]</action>"]
    calls = []

    def generate(prompt_ids):
        calls.append(prompt_ids)
        return [tokenizer(plans[len(calls) - 1], add_special_tokens=False)["input_ids"]]

    rollout = collect_rollout(shop, builder, generate, tokenizer, [0], 1, history_length=2,
                              max_prompt_tokens=4096, invalid_action_penalty=0.1, with_skills=True,
                              progress=False)
    first, second = rollout.samples
    # the template's example search ("red running shoes") always routes footwear; the goal
    # ("mixed nuts") routes nothing; after searching "red shirt" apparel joins
    assert first.skill_files == ("webshop/general.md", "webshop/footwear.md")
    assert second.skill_files == ("webshop/general.md", "webshop/apparel.md", "webshop/footwear.md")
    assert tokenizer.decode(second.prompt_ids).count(SKILL_HEADER) == 1


@pytest.mark.slow
def test_trainer_with_the_released_switches_truncates_and_routes_per_step(tmp_path):
    """SDAR on WebShop with the paper configs' switches: the teacher prompt is cut to a budget
    smaller than skills + prompt (counted), and validation with skills routes each step."""
    import json

    from sdar.trainer.config import load_config
    from sdar.trainer.trainer import Trainer

    config = load_config(None, [
        "method=sdar", "model.name=tiny-random", "env.name=webshop", "env.prompt_mode=think",
        "env.max_steps=2", "env.options={num_products: 300, num_goals: 200, num_test_goals: 100}",
        "rollout.tasks_per_iteration=2", "rollout.group_size=2", "rollout.max_prompt_tokens=2048",
        "rollout.generation.max_new_tokens=4", "teacher.routing=released", "teacher.student_layout=user",
        "teacher.on_overflow=truncate_left", "teacher.max_prompt_tokens=600", "optim.mini_batch_size=8",
        "optim.micro_batch_size=4", "eval.every=1", "eval.num_tasks=2", "eval.with_skills=true",
        "iterations=1", "tensorboard=false",
    ])
    run = tmp_path / "run"
    Trainer(config, run).train()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = next(m for m in lines if "teacher/truncated" in m)
    assert train["teacher/truncated"] > 0 and "val/success" in lines[-1]
    used = [json.loads(line) for line in (run / "skills_used.jsonl").read_text().splitlines()]
    assert all("webshop/footwear.md" in row["files"] for row in used)  # the think format's "shoes"

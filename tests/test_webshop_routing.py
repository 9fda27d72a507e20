"""Skill routing of WebShop instructions by category keywords, and the shipped skill files."""

from __future__ import annotations

import pytest

from sdar.envs import make_env
from sdar.envs.webshop.catalog import CATEGORIES, PRODUCT_TYPES
from sdar.envs.webshop.goals import load_goals
from sdar.envs.webshop.routing import CATEGORY_KEYWORDS, route_instruction
from sdar.skills import SkillLibrary


@pytest.mark.parametrize(
    "instruction, expected",
    [
        (
            "i need a machine washable t-shirt in size large, and price lower than 30.00 dollars",
            "apparel",
        ),
        ("looking for high waist leggings in black color", "apparel"),
        ("find me non-slip running shoes size 9, and price lower than 80.00 dollars", "footwear"),
        ("i want waterproof hiking boots in size 10.5", "footwear"),
        ("i need blackout curtains 84 inch long in sage green color", "home_decor"),
        ("i'd like a non-shedding area rug 5 x 7 ft", "home_decor"),
        ("i am looking for noise cancelling wireless earbuds in white", "electronics"),
        ("find me a braided charging cable 6 ft long", "electronics"),
        ("i need a leather wallet with rfid blocking in brown", "accessories"),
        ("looking for polarized sunglasses, and price lower than 40.00 dollars", "accessories"),
        ("i need a sulfate free shampoo size 8 fl oz", "beauty_health"),
        ("i want a long-lasting lipstick in ruby red color", "beauty_health"),
        ("i'd like organic ground coffee in hazelnut flavor", "other"),
        ("i need grain free dog treats for large breed dogs", "other"),
    ],
)
def test_each_category_routes_by_its_keywords(instruction, expected):
    assert route_instruction(instruction) == (expected,)


def test_several_categories_can_match_in_catalog_order():
    text = "i need a water resistant backpack with usb charging port for my running shoes"
    assert route_instruction(text) == ("footwear", "electronics", "accessories")


def test_no_keyword_means_general_skills_only():
    assert route_instruction("i need something nice, and price lower than 20.00 dollars") == ()
    task = make_env("webshop", split="test").task_info(load_goals()[0])
    library = SkillLibrary("webshop")
    assert library.select_keys(()).files == ("webshop/general.md",)
    assert library.select(task).files[0] == "webshop/general.md"


def test_keywords_match_whole_words_only():
    # "capacity" holds "cap", "bootcut" holds "boot", "t-shirt" holds "shirt": only real words count
    assert route_instruction("a tote bag with large capacity") == ("accessories",)
    assert route_instruction("bootcut") == ()
    assert route_instruction("socks for the cats") == ("apparel", "other")


def test_every_goal_routes_to_its_own_category():
    for goal in load_goals():
        assert goal.category in route_instruction(goal.instruction), goal.instruction


def test_every_product_type_name_routes_to_its_category():
    for ptype in PRODUCT_TYPES:
        assert ptype.category in route_instruction(f"i need {ptype.name}"), ptype.name


def test_every_category_has_a_skill_file_and_selection_joins_them():
    library = SkillLibrary("webshop")
    assert library.keys() == sorted(CATEGORIES) == sorted(CATEGORY_KEYWORDS)
    for key in CATEGORIES:
        selection = library.select_keys((key,))
        assert selection.files == ("webshop/general.md", f"webshop/{key}.md")
        assert selection.text.startswith("# WebShop: general shopping skills")
        assert "Apply when:" in selection.text.split("# WebShop:")[-1]


def test_env_tasks_carry_the_routed_keys():
    env = make_env("webshop", split="test")
    states = env.reset(list(range(50)))
    library = SkillLibrary("webshop")
    for s in states:
        assert s.task.skill_keys == route_instruction(s.task.instruction)
        assert s.task.task_type in s.task.skill_keys
        assert len(library.select(s.task).files) == 1 + len(s.task.skill_keys)

"""A shop folder (catalog.jsonl + goals.jsonl) written, read back and played."""

from __future__ import annotations

import json

import pytest

from sdar.envs import make_env
from sdar.envs.play import play_episodes
from sdar.envs.webshop.catalog import load_catalog
from sdar.envs.webshop.datafiles import CATALOG_FILE, GOALS_FILE, read_shop, write_shop
from sdar.envs.webshop.goals import load_goals

SMALL = {"num_products": 300, "num_goals": 400}


@pytest.fixture()
def shop_dir(tmp_path):
    write_shop(tmp_path, load_catalog(0, 300), load_goals(0, 300, 400), num_test_goals=100)
    return tmp_path


def test_written_shop_reads_back_identical(shop_dir):
    shop = read_shop(shop_dir)
    assert shop.catalog.products == load_catalog(0, 300).products
    assert shop.goals == load_goals(0, 300, 400)
    assert shop.num_test_goals == 100


def test_env_on_a_shop_folder_plays_like_the_generated_one(shop_dir):
    from_files = make_env("webshop", split="test", data_dir=str(shop_dir))
    generated = make_env("webshop", split="test", num_test_goals=100, **SMALL)
    assert from_files.num_tasks() == generated.num_tasks() == 100
    a, b = from_files.reset([5]), generated.reset([5])
    assert a[0].task == b[0].task
    for action in ("search[machine washable t-shirt]", "click[next >]", "click[< prev]"):
        (a,), (b,) = from_files.step([action]), generated.step([action])
        assert a.raw_observation == b.raw_observation
        assert a.admissible_actions == b.admissible_actions
    assert play_episodes(from_files, "oracle", 100)["success"] == 1.0


def test_edited_goal_file_changes_the_task(shop_dir):
    rows = [json.loads(line) for line in (shop_dir / GOALS_FILE).read_text().splitlines()]
    rows[0]["instruction"] = "i need anything at all, and price lower than 1000.00 dollars"
    (shop_dir / GOALS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = make_env("webshop", split="test", data_dir=str(shop_dir))
    (state,) = env.reset([0])
    assert state.task.instruction.startswith("i need anything at all")
    assert state.task.skill_keys == ()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c, g: c.unlink(), "catalog.jsonl is missing"),
        (lambda c, g: c.write_text(c.read_text() + "{not json\n"), "not valid JSON"),
        (lambda c, g: g.write_text('{"index": 0}\n'), "missing field"),
        (lambda c, g: c.write_text(c.read_text().splitlines()[0] + "\n" + c.read_text()),
         "appears more than once"),
        (lambda c, g: g.write_text(g.read_text().replace('"item_id": "B0', '"item_id": "XX', 1)),
         "not in catalog.jsonl"),
        (lambda c, g: g.write_text("\n".join(g.read_text().splitlines()[1:]) + "\n"),
         "indices must be 0, 1, 2"),
        (lambda c, g: g.write_text(g.read_text().replace('"split": "test"', '"split": "train"', 1)),
         "'split' must be 'test' for the first rows"),
    ],
)
def test_damaged_shop_folders_fail_with_the_file_and_the_fix(shop_dir, damage, message):
    damage(shop_dir / CATALOG_FILE, shop_dir / GOALS_FILE)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_shop(shop_dir)


def test_data_dir_refuses_generation_options(shop_dir):
    with pytest.raises(ValueError, match="leave them unset"):
        make_env("webshop", data_dir=str(shop_dir), num_products=300)

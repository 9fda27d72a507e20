"""``sdar webshop export`` and ``sdar webshop goal`` through the real command line entry."""

from __future__ import annotations

import json

import pytest

from sdar.cli import main as sdar_main
from sdar.envs.webshop.catalog import load_catalog
from sdar.envs.webshop.goals import load_goals


def test_export_writes_catalog_and_goals_that_read_back(tmp_path, capsys):
    assert sdar_main(["webshop", "export", "--out", str(tmp_path), "--num-products", "300"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["products"], summary["goals"], summary["test_goals"]) == (300, 600, 500)
    products = [json.loads(line) for line in (tmp_path / "catalog.jsonl").read_text().splitlines()]
    goals = [json.loads(line) for line in (tmp_path / "goals.jsonl").read_text().splitlines()]
    catalog = load_catalog(0, 300)
    assert [p["item_id"] for p in products] == [p.item_id for p in catalog.products]
    assert products[0]["title"] == catalog.products[0].title
    assert [g["split"] for g in goals].count("test") == 500
    first = load_goals(0, 300)[0]
    assert goals[0]["instruction"] == first.instruction
    assert goals[0]["category"] in goals[0]["skill_keys"]


def test_goal_prints_the_goal_and_its_target(capsys):
    assert sdar_main(["webshop", "goal", "501"]) == 0
    row = json.loads(capsys.readouterr().out)
    goal = load_goals()[501]
    assert row["instruction"] == goal.instruction and row["split"] == "train"
    assert row["target"]["item_id"] == goal.item_id
    with pytest.raises(SystemExit, match="goal index"):
        sdar_main(["webshop", "goal", "99999"])

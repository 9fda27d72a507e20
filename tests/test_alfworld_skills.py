"""ALFWorld skill routing: every task type of generated and official-layout games routes to its own
file plus the general one, the trainer's prompt builder records those files, and ``sdar skills
show`` prints what the teacher sees. Also the ``sdar env play`` / ``alfworld generate`` commands."""

from __future__ import annotations

import json

import pytest

from sdar.cli import main
from sdar.envs.alfworld import make_alfworld_env, route_task_type
from sdar.envs.alfworld.data import TASK_TYPES
from sdar.envs.alfworld.generator import PRESETS, generate_games
from sdar.skills import SkillLibrary

EXPECTED_KEYS = {
    "pick_and_place_simple": "pick",
    "look_at_obj_in_light": "look",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_two_obj_and_place": "pick_two",
}


@pytest.fixture(scope="module")
def games_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("alfworld-skill-games")
    generate_games(out, "valid_seen", 6, seed=5, config=PRESETS["medium"])
    return out


def test_routing_table_is_one_file_per_task_type():
    assert TASK_TYPES == EXPECTED_KEYS
    library = SkillLibrary("alfworld")
    assert sorted(library.keys()) == sorted(EXPECTED_KEYS.values())
    for full, key in EXPECTED_KEYS.items():
        assert route_task_type(full) == route_task_type(key) == (key,)


@pytest.mark.slow
def test_every_generated_task_type_routes_to_its_file_and_the_trainer_records_it(games_dir):
    from sdar.models.loading import ModelConfig, load_policy
    from sdar.rollout import PromptBuilder

    _, tokenizer = load_policy(ModelConfig(name="tiny-random"))
    library = SkillLibrary("alfworld")
    with make_alfworld_env(split="valid_seen", data_dir=games_dir) as env:
        states = env.reset(list(range(env.num_tasks())))
        assert {s.task.task_type for s in states} == set(EXPECTED_KEYS)
        builder = PromptBuilder(env, tokenizer, library, think=True)
        for state in states:
            key = EXPECTED_KEYS[state.task.task_type]
            selection = library.select(state.task)
            assert selection.files == ("alfworld/general.md", f"alfworld/{key}.md")
            own = (library.folder / f"{key}.md").read_text().strip()
            assert own in selection.text
            others = [k for k in EXPECTED_KEYS.values() if k != key]
            assert not any(
                (library.folder / f"{k}.md").read_text().strip() in selection.text for k in others
            )
            teacher = builder.build(
                state, [], budget=100_000, with_skills=True, on_overflow="error"
            )
            assert teacher.skill_files == selection.files


def test_official_layout_game_routes_by_its_folder_name(tmp_path, monkeypatch):
    from test_alfworld_env import OFFICIAL_TASK, write_official_game

    write_official_game(tmp_path, "valid_unseen", OFFICIAL_TASK)
    with make_alfworld_env(split="valid_unseen", data_dir=tmp_path) as env:
        task = env.reset([0])[0].task
    assert SkillLibrary("alfworld").select(task).files == (
        "alfworld/general.md",
        "alfworld/heat.md",
    )


def test_skills_show_for_alfworld_heat(capsys):
    assert main(["skills", "show", "--env", "alfworld", "--task-type", "heat"]) == 0
    out, err = capsys.readouterr()
    assert out == SkillLibrary("alfworld").select_keys(["heat"]).text + "\n"
    assert "heat <object> with microwave <n>" in out and "alfworld/heat.md" in err
    assert (
        main(["skills", "show", "--env", "alfworld", "--task-type", "pick_two_obj_and_place"]) == 0
    )
    assert "Two separate trips" in capsys.readouterr().out


def test_skill_commands_use_the_installed_grammar_wording():
    text = SkillLibrary("alfworld").select_keys(list(EXPECTED_KEYS.values())).text
    assert "`move apple 1 to fridge 1`" in text
    assert "put <object> in" not in text and "`put " not in text


def test_env_play_prints_success_and_writes_expert_demonstrations(games_dir, tmp_path, capsys):
    demos = tmp_path / "demos.jsonl"
    argv = [
        "env",
        "play",
        "--env",
        "alfworld",
        "--policy",
        "expert",
        "--episodes",
        "3",
        "--split",
        "valid_seen",
        "--option",
        f"data_dir={games_dir}",
        "--write-demos",
        str(demos),
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["success"] == 1.0 and summary["episodes"] == 3 and summary["mean_return"] == 10.0
    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    assert len(rows) == round(summary["mean_steps"] * 3)
    first = rows[0]
    assert first["prompt"].startswith("You are an agent in a household") and first["step"] == 0
    assert "<think>" in first["response"] and "<action>" in first["response"] and first["won"]
    assert first["task_type"] in EXPECTED_KEYS


def test_alfworld_generate_command(tmp_path, capsys):
    argv = [
        "alfworld",
        "generate",
        "--out",
        str(tmp_path),
        "--split",
        "train",
        "--n",
        "2",
        "--preset",
        "easy",
        "--distractors",
        "0",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["games"] == 2 and summary["per_task_type"] == {"pick_and_place_simple": 2}
    assert summary["expert_plan_length"]["max"] <= 4
    assert len(list(tmp_path.glob("json_2.1.1/train/*/*/game.tw-pddl"))) == 2
    with pytest.raises(SystemExit, match="unknown ALFWorld task type"):
        main(["alfworld", "generate", "--out", str(tmp_path), "--task-types", "bake"])

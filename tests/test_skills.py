"""The generic skill library: routing to files, refusing unknown keys, and ``sdar skills show``."""

from __future__ import annotations

import pytest

from sdar.cli import main
from sdar.envs.base import TaskInfo
from sdar.skills import SKILLS_ROOT, SkillLibrary, SkillRoutingError


@pytest.fixture()
def library_root(tmp_path):
    folder = tmp_path / "kitchen"
    folder.mkdir()
    (folder / "general.md").write_text("# General\nWash hands.\n")
    (folder / "bake.md").write_text("# Bake\nPreheat the oven.\n")
    (folder / "boil.md").write_text("\n# Boil\nSalt the water.\n\n")
    return tmp_path


def test_select_gives_general_first_then_routed_files(library_root):
    library = SkillLibrary("kitchen", library_root)
    assert library.keys() == ["bake", "boil"]
    task = TaskInfo("t1", "make bread", "bread", skill_keys=("bake", "boil", "bake", "general"))
    selection = library.select(task)
    assert selection.files == ("kitchen/general.md", "kitchen/bake.md", "kitchen/boil.md")
    assert (
        selection.text
        == "# General\nWash hands.\n\n# Bake\nPreheat the oven.\n\n# Boil\nSalt the water."
    )
    assert library.select_keys(()).files == ("kitchen/general.md",)


def test_unknown_key_and_missing_library_raise_with_the_known_keys(library_root):
    library = SkillLibrary("kitchen", library_root)
    with pytest.raises(SkillRoutingError, match=r"\['fry'\].*known keys: \['bake', 'boil'\]"):
        library.select_keys(["fry"])
    with pytest.raises(FileNotFoundError, match="no skill library for environment 'garden'"):
        SkillLibrary("garden", library_root)


@pytest.mark.parametrize(
    "env", sorted(p.name for p in SKILLS_ROOT.iterdir() if (p / "general.md").is_file())
)
def test_every_shipped_skill_file_is_a_list_of_principles(env):
    library = SkillLibrary(env)
    for key in ["general"] + library.keys():
        text = (library.folder / f"{key}.md").read_text()
        assert text.startswith("#"), f"{env}/{key}.md does not start with a heading"
        assert "Principle:" in text and "Apply when:" in text, (
            f"{env}/{key}.md lacks the item format"
        )


def test_skills_show_prints_exactly_the_selected_text(library_root, capsys):
    assert (
        main(
            [
                "skills",
                "show",
                "--env",
                "kitchen",
                "--skills-dir",
                str(library_root),
                "--keys",
                "boil",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out == SkillLibrary("kitchen", library_root).select_keys(["boil"]).text + "\n"
    assert "kitchen/general.md, kitchen/boil.md" in err
    assert (
        main(
            [
                "skills",
                "show",
                "--env",
                "kitchen",
                "--skills-dir",
                str(library_root),
                "--task-type",
                "bake",
            ]
        )
        == 0
    )
    assert "Preheat" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no skill file for task type 'fry'"):
        main(
            [
                "skills",
                "show",
                "--env",
                "kitchen",
                "--skills-dir",
                str(library_root),
                "--task-type",
                "fry",
            ]
        )
    assert (
        main(["skills", "show", "--env", "kitchen", "--skills-dir", str(library_root), "--list"])
        == 0
    )
    assert capsys.readouterr().out.split() == ["bake", "boil"]

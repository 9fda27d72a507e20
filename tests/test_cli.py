"""The ``sdar`` command line's table of contents (``sdar.cli``).

What a user would notice: every area's sub-commands are there; a command module that needs an
optional extra which is not installed is left out, but a command module that is broken (it
imports something that does not exist, or is itself missing) stops ``sdar`` with the import error
instead of making its sub-commands vanish.
"""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from sdar import cli


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


def test_every_area_registers_its_commands():
    assert command_names(cli.build_parser()) == [
        "alfworld", "env", "eval", "report", "search", "serve-retriever", "sft", "skills",
        "teacher-check", "train", "webshop",
    ]


@pytest.fixture()
def command_modules(tmp_path, monkeypatch):
    """Three command modules on ``sys.path``: one that works, one that imports a missing optional
    extra, one that imports a module that does not exist. Returns the missing extra's name."""
    missing = [name for name in sorted(cli.OPTIONAL_PACKAGES) if importlib.util.find_spec(name) is None]
    if not missing:
        pytest.skip("every optional extra is installed here")
    (tmp_path / "cli_test_fine.py").write_text(
        "def register(subparsers):\n    subparsers.add_parser('hello')\n"
    )
    (tmp_path / "cli_test_optional.py").write_text(
        f"import {missing[0]}\n\ndef register(subparsers):\n    subparsers.add_parser('extra')\n"
    )
    (tmp_path / "cli_test_broken.py").write_text(
        "import cli_test_no_such_module\n\ndef register(subparsers):\n    subparsers.add_parser('broken')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return missing[0]


def test_a_missing_optional_extra_leaves_its_commands_out(command_modules, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("cli_test_fine", "cli_test_optional"))
    assert command_names(cli.build_parser()) == ["hello"]


def test_a_broken_command_module_raises_instead_of_vanishing(command_modules, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("cli_test_fine", "cli_test_broken"))
    with pytest.raises(ModuleNotFoundError, match="cli_test_no_such_module"):
        cli.build_parser()
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("cli_test_fine", "cli_test_absent"))
    with pytest.raises(ModuleNotFoundError, match="cli_test_absent"):
        cli.main(["hello"])


def cli_reference_script():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_holds_every_command_and_option_of_the_parser():
    reference = cli_reference_script()
    generated = reference.reference_markdown()
    # Every command the parser has is documented exactly as the parser says (a command of an
    # optional extra that is not installed here may be documented without being generated).
    stale = reference.stale_commands(reference.OUT.read_text(encoding="utf-8"), generated)
    assert stale == [], f"docs/cli.md is stale for {stale}: run python scripts/cli_reference.py"
    assert "`--max-states`" in reference.sections(generated)["sdar teacher-check"]
    # a section that differs (an option missing) is named
    edited = generated.replace("| `--max-states`", "| `--max-state`")
    assert reference.stale_commands(edited, generated) == ["sdar teacher-check"]
    assert reference.main(["--check"]) == 0


def test_cli_reference_layout_by_hand():
    reference = cli_reference_script()
    parser = argparse.ArgumentParser(prog="sdar", description="Top.")
    sub = parser.add_subparsers(dest="command")
    play = sub.add_parser("play", help="play | games")
    play.add_argument("--episodes", type=int, default=10, help="episodes (default %(default)s)")
    play.add_argument("--fast", action="store_true", help="go fast")
    play.add_argument("--mode", choices=("a", "b"), required=True, help="the mode")
    play.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides")
    text = reference.reference_markdown(parser)
    assert reference.sections(text)["sdar play"] == (
        "sdar play`\n\nplay \\| games\n\n"
        "| argument | default | meaning |\n| --- | --- | --- |\n"
        "| `--episodes` `EPISODES` | `10` | episodes (default 10) |\n"
        "| `--fast` | off | go fast |\n"
        "| `--mode` `MODE` | required | the mode; one of `a`, `b` |\n"
        "| `KEY=VALUE` ... | - | overrides |\n"
    )

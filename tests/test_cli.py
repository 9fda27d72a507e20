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

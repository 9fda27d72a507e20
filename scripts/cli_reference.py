#!/usr/bin/env python3
"""Write docs/cli.md, the reference of every ``sdar`` command and option, from the parser itself.

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 when docs/cli.md differs from the parser

``tests/test_cli.py`` runs the check, so a new option without its line in docs/cli.md fails the
test suite. The check compares command by command: a command of an optional extra that is not
installed here may stay documented. Help texts live next to the options (each ``cli`` module's ``register``); this script
only lays them out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli.md"

HEADER = """# The `sdar` command line

Every command and option, generated from the parser (`python scripts/cli_reference.py`; a test
fails when this page and the code differ). `KEY=VALUE` arguments are config overrides
([training.md](training.md) lists every key); they may also follow a command's options. Commands
of an optional extra (vLLM, verl, the dense retrievers) appear only where the extra is installed.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("*", "+") else "")
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    return f"{names} `{metavar}`"


def _default(action: argparse.Action) -> str:
    if not action.option_strings:
        return "-" if action.nargs in ("*", "?") else "required"
    if action.required:
        return "required"
    if action.nargs == 0:
        return "off"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "-"
    if isinstance(action.default, (list, tuple)) and not action.default:
        return "-"
    return f"`{action.default}`"


def _meaning(action: argparse.Action) -> str:
    text = (action.help or "") % {**vars(action), "default": action.default}
    if action.choices and not isinstance(action.choices, dict):
        text = (text + "; " if text else "") + "one of " + ", ".join(f"`{c}`" for c in action.choices)
    return _cell(text)


def _commands(parser: argparse.ArgumentParser, path: list[str]):
    """(command path, its parser, its one-line help) for every leaf and inner command, in order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + [name], sub, helps.get(name, "")
                yield from _commands(sub, path + [name])


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [action for action in parser._actions
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]
    if not rows:
        return []
    lines = ["| argument | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {_argument(a)} | {_default(a)} | {_meaning(a)} |" for a in rows]
    return lines


def reference_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/cli.md's text for ``parser`` (default: the installed ``sdar`` parser)."""
    if parser is None:
        from sdar.cli import build_parser

        parser = build_parser()
    lines = [HEADER, "## `sdar`", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    lines += _options_table(parser) + [""]
    for path, sub, summary in _commands(parser, ["sdar"]):
        lines += [f"## `{' '.join(path)}`", ""]
        text = sub.description or summary
        if text:
            lines += [_cell(text), ""]
        table = _options_table(sub)
        if table:
            lines += table + [""]
    return "\n".join(lines).rstrip() + "\n"


def sections(text: str) -> dict[str, str]:
    """A reference page's sections by their command (``sdar eval``), each from its heading on, and
    the text before the first under ``"(header)"``."""
    header, *parts = text.split("\n## `")
    return {"(header)": header, **{part.split("`", 1)[0]: part for part in parts}}


def stale_commands(documented: str, generated: str) -> list[str]:
    """The commands of ``generated`` whose section ``documented`` lacks or words otherwise."""
    have = sections(documented)
    return sorted(name for name, text in sections(generated).items() if have.get(name) != text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        stale = stale_commands(OUT.read_text(encoding="utf-8") if OUT.exists() else "", text)
        if stale:
            print(f"{OUT.relative_to(ROOT)} differs from the parser for {', '.join(stale)}: "
                  "run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} matches the parser")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"written: {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

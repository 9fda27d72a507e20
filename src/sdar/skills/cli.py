"""``sdar skills show``: print the skill text a task's teacher sees, and list routing keys.

The text printed on stdout is exactly ``SkillLibrary.select_keys(keys).text``, the block the
teacher prompt carries after its ``[Privileged Skill Information]`` header; the files it came from
are listed on stderr so that the output can be piped or diffed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sdar.skills import SkillLibrary, SkillRoutingError


def register(subparsers) -> None:
    parser = subparsers.add_parser("skills", help="inspect the skill libraries")
    sub = parser.add_subparsers(dest="skills_command", metavar="SKILLS_COMMAND", required=True)
    show = sub.add_parser(
        "show",
        help="print the skills the teacher sees for a task type or routing keys",
        description="Print the general skills of ENV plus the files a task type (or explicit "
        "routing keys) routes to, exactly as the teacher sees them.",
    )
    show.add_argument(
        "--env", required=True, help="environment name (alfworld, webshop, search, ...)"
    )
    which = show.add_mutually_exclusive_group()
    which.add_argument(
        "--task-type",
        default=None,
        help="a task type or routing key (e.g. heat or pick_heat_then_place_in_recep)",
    )
    which.add_argument("--keys", default=None, help="comma-separated routing keys")
    show.add_argument(
        "--skills-dir",
        default=None,
        help="folder with one sub-folder per environment (default: shipped skills)",
    )
    show.add_argument("--list", action="store_true", help="list the routing keys and exit")
    show.set_defaults(func=run_show)


def keys_for_task_type(env: str, task_type: str, library: SkillLibrary) -> tuple[str, ...]:
    """Routing keys of ``task_type``: the key itself when the library has a file of that name,
    else the environment's own ``route_task_type`` (ALFWorld maps its full task-type names)."""
    known = library.keys()
    if task_type in known or task_type == "general":
        return (task_type,)
    try:
        module = importlib.import_module(f"sdar.envs.{env}")
    except ModuleNotFoundError:
        module = None
    route = getattr(module, "route_task_type", None)
    if route is not None:
        try:
            return tuple(route(task_type))
        except ValueError as err:
            raise SkillRoutingError(str(err)) from err
    raise SkillRoutingError(
        f"{env}: no skill file for task type {task_type!r}; known keys: {known}"
    )


def run_show(args: argparse.Namespace) -> int:
    try:
        library = SkillLibrary(args.env, args.skills_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"sdar skills show: {err}") from err
    if args.list:
        print("\n".join(library.keys()))
        return 0
    try:
        if args.task_type is not None:
            keys = keys_for_task_type(args.env, args.task_type, library)
        elif args.keys is not None:
            keys = tuple(k.strip() for k in args.keys.split(",") if k.strip())
        else:
            keys = ()
        selection = library.select_keys(keys)
    except SkillRoutingError as err:
        raise SystemExit(f"sdar skills show: {err}") from err
    print("skill files: " + ", ".join(selection.files), file=sys.stderr)
    print(selection.text)
    return 0

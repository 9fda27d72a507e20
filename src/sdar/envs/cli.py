"""``sdar env play``: play episodes of any environment with a scripted policy and print JSON."""

from __future__ import annotations

import argparse
import json
import random

from sdar.envs import ENVIRONMENTS, make_env


def register(subparsers) -> None:
    env_parser = subparsers.add_parser("env", help="play environments with scripted policies")
    env_sub = env_parser.add_subparsers(dest="env_command", metavar="ENV_COMMAND", required=True)
    play = env_sub.add_parser("play", help="play episodes with a scripted policy and print success as JSON")
    play.add_argument("--env", required=True, choices=sorted(ENVIRONMENTS))
    play.add_argument("--policy", required=True, help="expert / oracle / random (what the env offers)")
    play.add_argument("--episodes", type=int, default=10, help="episodes to play")
    play.add_argument("--split", default=None, help="task split (default: the environment's training split)")
    play.add_argument("--seed", type=int, default=0, help="first task seed; episode i uses seed + i")
    play.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="environment option, repeatable (e.g. --option data_dir=/path/to/games)",
    )
    play.add_argument("--write-demos", default=None, metavar="FILE.jsonl",
                      help="also write every step as a prompt/response pair in the agent's format")
    play.add_argument("--prompt-mode", choices=["think", "action_only"], default="think",
                      help="prompt/response format of the demonstrations (match the training config)")
    play.set_defaults(func=run_play)


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run_play(args: argparse.Namespace) -> int:
    from sdar.envs.play import play_episodes

    options = parse_options(args.option)
    if args.split is not None:
        options["split"] = args.split
    with make_env(args.env, **options) as env:
        if args.policy not in env.policies:
            raise SystemExit(f"environment {args.env!r} has no policy {args.policy!r}; known: {list(env.policies)}")
        summary = play_episodes(env, args.policy, args.episodes, args.seed, demos_path=args.write_demos,
                                rng=random.Random(args.seed), think=args.prompt_mode == "think")
    print(json.dumps(summary, indent=2))
    return 0

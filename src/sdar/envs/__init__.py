"""Agent environments behind one interface (``sdar.envs.base.AgentEnv``).

``make_env(name, **options)`` builds one by registry name; each environment package is imported
only when asked for, so a user of one environment never pays for the others' imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sdar.envs.base import AgentEnv, EnvState, ParsedAction, TaskInfo

# registry name -> "module:factory". The factory takes keyword options and returns an AgentEnv.
ENVIRONMENTS: dict[str, str] = {
    "alfworld": "sdar.envs.alfworld:make_alfworld_env",
    "webshop": "sdar.envs.webshop:make_webshop_env",
    "search": "sdar.envs.search:make_search_env",
    "toy": "sdar.envs.toy:make_toy_env",  # a seconds-fast counting task for smoke tests, not a benchmark
    "toy_panels": "sdar.envs.toy:make_toy_panels_env",  # decisive teacher hints: the gate study's setting
}


def register_env(name: str, target: str) -> None:
    """Make ``make_env(name)`` (and ``env.name: name`` in a config) build the environment that the
    factory ``target``, given as ``"module:function"``, returns; the module is imported on first
    use. Registration lasts for this process (docs/environments/README.md, "Adding an
    environment")."""
    ENVIRONMENTS[name] = target


def env_factory(name: str) -> Callable[..., AgentEnv]:
    """The factory of environment ``name`` (its parameters are the environment's options)."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(ENVIRONMENTS)}")
    module_name, factory_name = ENVIRONMENTS[name].split(":")
    return getattr(importlib.import_module(module_name), factory_name)


def make_env(name: str, action_rule: str = "project", **options: Any) -> AgentEnv:
    """Build environment ``name`` with its keyword ``options`` (see each environment's docs) and
    the action-validity rule ``action_rule`` (``project`` or ``released``,
    ``sdar.envs.action_rules``)."""
    env = env_factory(name)(**options)
    try:
        env.set_action_rule(action_rule)
    except ValueError:
        env.close()
        raise
    return env


__all__ = ["ENVIRONMENTS", "AgentEnv", "EnvState", "ParsedAction", "TaskInfo", "env_factory", "make_env",
           "register_env"]

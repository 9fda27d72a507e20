"""Offline WebShop: WebShop's pages, actions, instructions and scoring over a generated catalog.

See ``docs/environments/webshop.md``. Modules: ``catalog`` (product generator), ``goals``
(instructions and splits), ``search`` (BM25), ``pages`` (the site), ``scoring`` (WebShop's score),
``routing`` (skill keys from instruction keywords), ``env`` (the ``AgentEnv``).
"""

from __future__ import annotations

from sdar.envs.webshop.catalog import CATEGORIES, Catalog, Product, generate_catalog, load_catalog
from sdar.envs.webshop.env import WebShopEnv, make_webshop_env
from sdar.envs.webshop.goals import Goal, generate_goals, load_goals
from sdar.envs.webshop.routing import route_instruction
from sdar.envs.webshop.scoring import (
    PurchaseScore,
    score_goal_purchase,
    score_purchase,
    type_factor,
    webshop_score,
)

__all__ = [
    "CATEGORIES",
    "Catalog",
    "Goal",
    "Product",
    "PurchaseScore",
    "WebShopEnv",
    "generate_catalog",
    "generate_goals",
    "load_catalog",
    "load_goals",
    "make_webshop_env",
    "route_instruction",
    "score_goal_purchase",
    "score_purchase",
    "type_factor",
    "webshop_score",
]

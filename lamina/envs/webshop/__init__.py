"""WebShop shopping as a text environment: ``engine`` (the env), ``pages``, ``catalogue``,
``goals``, ``search``, ``reward`` and a ``procedural`` catalogue. See ``engine.WebShopEnv``."""

from lamina.envs.webshop.catalogue import load_catalog, load_webshop_files, shared_webshop_dir
from lamina.envs.webshop.engine import WebShopEnv, parse_action, search_queries
from lamina.envs.webshop.goals import Goal, GoalTemplate
from lamina.envs.webshop.products import Catalog, Product
from lamina.envs.webshop.reward import webshop_reward

__all__ = [
    "Catalog",
    "Goal",
    "GoalTemplate",
    "Product",
    "WebShopEnv",
    "load_catalog",
    "load_webshop_files",
    "parse_action",
    "search_queries",
    "shared_webshop_dir",
    "webshop_reward",
]

"""Gymnasium text environments. Importing this package registers the built-in ones.

To add one: write one module with a ``TextEnv`` subclass and add one ``register`` line below
(or, from another package, one entry point in the ``lamina.envs`` group).
"""

from lamina.envs.base import TextEnv, TextSpace, make_info
from lamina.envs.registry import ENTRY_POINT_GROUP, make, register, registered_envs, resolve_env_id

register("TextWorld-v0", "lamina.envs.textworld:TextWorldEnv", short_name="textworld")
register("ALFWorld-v0", "lamina.envs.alfworld:ALFWorldEnv", short_name="alfworld", max_episode_steps=50)
register("WebShop-v0", "lamina.envs.webshop:WebShopEnv", short_name="webshop", max_episode_steps=15)
register("Sokoban-v0", "lamina.envs.sokoban:SokobanEnv", short_name="sokoban", max_episode_steps=20)
register(
    "FrozenLake-v0", "lamina.envs.frozenlake:FrozenLakeEnv", short_name="frozenlake", max_episode_steps=20
)
# Single-turn tasks end by themselves after one answer.
register("Countdown-v0", "lamina.envs.reasoning:CountdownEnv", short_name="countdown")
register("Arithmetic-v0", "lamina.envs.reasoning:ArithmeticEnv", short_name="arithmetic")
register("QA-v0", "lamina.envs.reasoning:QAEnv", short_name="qa")
register("ReasoningGym-v0", "lamina.envs.reasoning_gym:ReasoningGymEnv", short_name="rg")
register("OpenEnv-v0", "lamina.envs.openenv:OpenEnvEnv", short_name="openenv", max_episode_steps=50)
register(
    "ScienceWorld-v0",
    "lamina.envs.scienceworld:ScienceWorldEnv",
    short_name="scienceworld",
    max_episode_steps=50,
)
register("TextArena-v0", "lamina.envs.textarena:TextArenaEnv", short_name="textarena", max_episode_steps=100)

__all__ = [
    "ENTRY_POINT_GROUP",
    "TextEnv",
    "TextSpace",
    "make",
    "make_info",
    "register",
    "registered_envs",
    "resolve_env_id",
]

"""lamina's verl plugin: verl imports this in every process (driver and Ray workers alike).

verl's ``__init__`` loads every entry point of the group ``verl.plugins`` (lamina declares
``lamina = "lamina.integrations.verl.plugin"`` in ``pyproject.toml``); ``VERL_USE_EXTERNAL_PLUGINS``
controls it: ``auto`` (default) loads all, ``none`` none, ``lamina,other`` only the named ones.
verl swallows a plugin's import error (logged at debug level), so this module does as little as
possible and never raises:

- registers GiGPO in verl's advantage-estimator registry (``algorithm.adv_estimator=gigpo``);
- where a lamina run asked for layer selection (``LAMINA_VERL_LAYERS`` in the environment, which
  lamina's launcher puts in every Ray worker's runtime environment), registers the layer-selecting
  FSDP engine (``lamina.integrations.verl.freezing``). Other verl runs are left untouched.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def register() -> list[str]:
    """Registers what this process needs; returns the names registered (for logs and tests)."""
    done = []
    try:
        import lamina.integrations.verl.estimators  # noqa: F401  (registers "gigpo")

        done.append("adv_estimator:gigpo")
    except Exception as error:  # a broken plugin must not break verl
        log.warning("lamina verl plugin: GiGPO not registered: %s", error)
    if os.environ.get("LAMINA_VERL_LAYERS"):
        try:
            import lamina.integrations.verl.freezing  # noqa: F401  (registers the engine)

            done.append("engine:lamina")
        except Exception as error:
            log.warning("lamina verl plugin: layer-selecting engine not registered: %s", error)
    return done


REGISTERED = register()

"""Config composition, once for every command: Hydra's compose over ``configs/``, the group-option
check, and the one-line explanation of a bad override.

    cfg = compose("train", ["env=alfworld", "trainer.iterations=2"], RunConfig)

A leaf: it imports Hydra and OmegaConf only (the schema class is passed in), so a typo is refused
before torch or transformers are imported.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from lamina.errors import ConfigError

T = TypeVar("T")

# Config groups whose option an override names (``env=alfworld``): checked against configs/<group>/.
GROUPS = ("env", "algorithm", "model", "study")


def config_dir() -> Path:
    """The installed Hydra config tree (the repository's ``configs/``, packaged as ``lamina.configs``)."""
    import lamina.configs

    return Path(lamina.configs.__file__).parent


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files in ``configs/<group>/``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def check_group_options(overrides: Sequence[str]) -> None:
    """``group=option`` overrides name an existing option; raises ``ConfigError`` listing the valid ones."""
    for override in overrides:
        group, _, value = override.partition("=")
        if group in GROUPS and value and value not in group_options(group):
            raise ConfigError(f"unknown {group} {value!r}; valid: {', '.join(group_options(group))}")


def compose_raw(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """``configs/<config_name>.yaml`` with Hydra overrides, as an untyped ``DictConfig``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # A caller that initialised Hydra itself (a notebook, verl's own entry point) would make the
    # context manager below refuse to start.
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def compose(config_name: str, overrides: Sequence[str], schema: type[T]) -> T:
    """Composes ``configs/<config_name>.yaml`` with overrides into a typed ``schema`` instance.

    Raises:
        ConfigError: an unknown group option, an unknown key (with the closest known key) or a
            value of the wrong type, in one line.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_group_options(overrides)
    try:
        raw = compose_raw(config_name, overrides)
        # A structured config's to_object() is an instance of its schema class.
        return cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw)))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(explain_override_error(err, overrides, config_name)) from None


def known_keys(config_name: str = "train") -> list[str]:
    """Every dotted key of the composed default config (for "did you mean")."""
    from omegaconf import DictConfig

    keys: list[str] = []

    def visit(node: Any, prefix: str) -> None:
        for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else []:
            dotted = f"{prefix}{key!s}"
            keys.append(dotted)
            if isinstance(value, DictConfig):
                visit(value, dotted + ".")

    visit(compose_raw(config_name), "")
    return keys


def explain_override_error(err: Exception, overrides: Sequence[str], config_name: str = "train") -> str:
    """One line naming the bad key and value, with what is valid (or the closest known key)."""
    text = str(err).strip()
    values = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o)
    full_key = getattr(err, "full_key", None)
    if full_key:
        expected = re.search(r"converted to (\w+)", text)
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            expected.group(1) if expected else "", "a value of the right type"
        )
        return f"{full_key}={values.get(full_key, '?')!s}: not {kind}; valid: {kind}"
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        close = difflib.get_close_matches(key, known_keys(config_name), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"see `lamina {config_name} --help` for the keys"
        return f"unknown key {key!r} ({key}={values.get(key, '?')}); {hint}"
    return f"bad override: {text.splitlines()[0]}"

"""Turning model text into an environment action.

The action is the text of the last ``<action>...</action>`` block. Missing tags, an empty action,
or one outside the admissible list (where there is one) make the step invalid.

Open commands: where the environment accepts a ``search[...]`` command, any
``search[<non-empty query>]`` is admissible: listed queries are suggestions for agents that choose
among actions, not the only searches allowed. An environment says where through
``info["open_commands"]`` (WebShop: ``("search",)`` on every page, as its text env searches from
any page); without that key, where its admissible list offers a ``search[...]``.
``OPEN_COMMANDS`` names the commands that can be open.

Model text of any content and length never raises here; only the action text (at most
``MAX_ACTION_CHARS`` characters) reaches an environment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

OPEN_COMMANDS = ("search",)
MAX_ACTION_CHARS = 1000  # longer "actions" are rambling, not commands; never sent in full
_ACTION_RE = re.compile(r"<action>(.*?)</action>", re.S | re.I)
_SPACES_RE = re.compile(r"\s+")
_COMMAND_RE = re.compile(r"\s*([a-z_]+)\s*\[(.*)\]\s*", re.S | re.I)


@dataclass(frozen=True)
class ParsedAction:
    """``action`` is what the environment receives ("" when nothing could be parsed)."""

    action: str
    valid: bool
    reason: str = ""


def _normalise(text: str) -> str:
    return _SPACES_RE.sub(" ", text).strip().lower()


def _open_command(action: str, admissible: Sequence[str], open_commands: Sequence[str] | None) -> str | None:
    """``search[q]`` with a non-empty ``q`` where ``open_commands`` holds ``search`` (when given) or
    the admissible list offers a ``search[...]`` (when not)."""
    match = _COMMAND_RE.fullmatch(action)
    if match is None or match.group(1).lower() not in OPEN_COMMANDS or not match.group(2).strip():
        return None
    verb = match.group(1).lower()
    if open_commands is not None:
        if verb not in open_commands:
            return None
    elif not any(a.lower().startswith(verb + "[") for a in admissible):
        return None
    return f"{match.group(1).lower()}[{_SPACES_RE.sub(' ', match.group(2)).strip()}]"


def parse_action(
    text: str, admissible: Sequence[str] | None = None, open_commands: Sequence[str] | None = None
) -> ParsedAction:
    """Parses the last ``<action>`` block and checks it against ``admissible``.

    An action matching an admissible one up to case and whitespace is mapped to its admissible
    spelling, so the environment receives exactly a command it knows; an open command (see the
    module docstring; ``open_commands`` is the environment's ``info["open_commands"]``) is passed
    on with its whitespace collapsed.
    """
    if not isinstance(text, str):
        return ParsedAction("", False, f"model output is {type(text).__name__}, not text")
    blocks = _ACTION_RE.findall(text)
    if not blocks:
        return ParsedAction("", False, "missing <action>...</action> tags")
    action = blocks[-1].strip()
    if not action:
        return ParsedAction("", False, "empty action")
    if len(action) > MAX_ACTION_CHARS:
        return ParsedAction(
            "", False, f"action is {len(action)} characters long; the limit is {MAX_ACTION_CHARS}"
        )
    if admissible is None:
        return ParsedAction(action, True)
    by_key = {_normalise(a): a for a in admissible}
    match = by_key.get(_normalise(action))
    if match is not None:
        return ParsedAction(match, True)
    command = _open_command(action, admissible, open_commands)
    if command is not None:
        return ParsedAction(command, True)
    return ParsedAction(action, False, "action is not admissible")


def parse_step_action(text: str, info: dict) -> ParsedAction:
    """``parse_action`` against what an environment's ``info`` allows at this step."""
    return parse_action(text, info["admissible_actions"], info.get("open_commands"))

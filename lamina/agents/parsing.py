"""Turning model text into an environment action.

The action is the text of the last ``<action>...</action>`` block. Missing tags, an empty action,
or one outside the admissible list (where there is one) make the step invalid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ACTION_RE = re.compile(r"<action>(.*?)</action>", re.S | re.I)
_SPACES_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class ParsedAction:
    """``action`` is what the environment receives ("" when nothing could be parsed)."""

    action: str
    valid: bool
    reason: str = ""


def _normalise(text: str) -> str:
    return _SPACES_RE.sub(" ", text).strip().lower()


def parse_action(text: str, admissible: Sequence[str] | None = None) -> ParsedAction:
    """Parses the last ``<action>`` block and checks it against ``admissible``.

    An action matching an admissible one up to case and whitespace is mapped to its admissible
    spelling, so the environment receives exactly a command it knows.
    """
    blocks = _ACTION_RE.findall(text)
    if not blocks:
        return ParsedAction("", False, "missing <action>...</action> tags")
    action = blocks[-1].strip()
    if not action:
        return ParsedAction("", False, "empty action")
    if admissible is None:
        return ParsedAction(action, True)
    by_key = {_normalise(a): a for a in admissible}
    match = by_key.get(_normalise(action))
    if match is None:
        return ParsedAction(action, False, "action is not admissible")
    return ParsedAction(match, True)

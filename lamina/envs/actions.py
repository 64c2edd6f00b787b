"""Small helpers the text environments share to read an agent's action and describe bad ones."""

from __future__ import annotations

from collections.abc import Sequence


def describe_action(action: object, limit: int = 40) -> str:
    """A short printable rendering of any action (long strings cut at ``limit`` characters)."""
    text = action if isinstance(action, str) else f"<{type(action).__name__}>"
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_choice(action: object, choices: Sequence[str]) -> str | None:
    """``"  Up "`` -> ``"up"`` if ``"up"`` is a choice; None for anything else (never raises)."""
    if not isinstance(action, str) or len(action) > 4 * max(len(c) for c in choices) + 16:
        return None
    choice = action.strip().lower()
    return choice if choice in choices else None

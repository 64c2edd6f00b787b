"""Per-step prompts: rebuilt at every step from the task, the last H steps and the observation.

Rebuilding (instead of growing one chat) keeps prompts bounded on 50-step episodes. The model
is asked to reason inside ``<think>...</think>`` (unless ``think=False``, for small models) and to
answer inside ``<action>...</action>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SYSTEM_PROMPT = (
    "You are an agent acting in a text-based environment. "
    "Reach the goal of the task in as few steps as possible."
)
THINK_FORMAT = (
    "First reason briefly inside <think> </think>, then give exactly one admissible action "
    "inside <action> </action>."
)
NO_THINK_FORMAT = "Answer with exactly one admissible action inside <action> </action> and nothing else."


@dataclass
class PromptConfig:
    """``agent`` config group.

    Args:
        history: how many past (observation, action) pairs the prompt shows.
        think: ask for ``<think>`` reasoning before the action.
        system_prompt: the system instruction.
        max_observation_chars: longer observations are cut (from the start) to this many characters.
        mode: ``generate`` (free text with tags) or ``choose`` (the model's likelihood over the
            admissible actions picks one; every action is valid).
        choose_score: a candidate's score in choose mode: ``sum`` or ``mean`` of its token log-probs.
        list_actions: list the admissible actions in the prompt. Choose mode scores every one of
            them anyway, so leaving the list out shortens the prompt (how much this changes the
            policy is measured by ``bench/bench_alfworld_choose.py``).
    """

    history: int = 2
    think: bool = False
    system_prompt: str = SYSTEM_PROMPT
    max_observation_chars: int = 2000
    mode: str = "generate"
    choose_score: str = "mean"
    list_actions: bool = True


@dataclass
class EpisodeMemory:
    """What one episode has seen so far: the task and its (observation, action) pairs."""

    task: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def build_messages(
    cfg: PromptConfig,
    memory: EpisodeMemory,
    observation: str,
    admissible: Sequence[str] | None,
    step: int,
    max_steps: int,
) -> list[dict[str, str]]:
    """The chat messages for one step (system + one user turn)."""
    lines = [f"Your task: {memory.task}"]
    recent = memory.steps[-cfg.history :] if cfg.history > 0 else []
    if recent:
        first = len(memory.steps) - len(recent) + 1
        lines.append(f"\nYour last {len(recent)} step(s):")
        for i, (obs, act) in enumerate(recent, start=first):
            lines.append(f"[Step {i}] Observation: {_cut(obs, cfg.max_observation_chars)}")
            lines.append(f"[Step {i}] Action: {act}")
    lines.append(f"\nStep {step + 1} of at most {max_steps}. Current observation:")
    lines.append(_cut(observation, cfg.max_observation_chars))
    if admissible is not None and cfg.list_actions:
        lines.append("\nAdmissible actions: " + ", ".join(f"'{a}'" for a in admissible))
    lines.append("\n" + (THINK_FORMAT if cfg.think else NO_THINK_FORMAT))
    return [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": "\n".join(lines)}]

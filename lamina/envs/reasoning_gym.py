"""reasoning-gym's procedural tasks as single-turn environments, scored by each task's own verifier.

Any task of ``reasoning_gym`` (``pip install reasoning-gym==0.1.25``: about a hundred generators,
``chain_sum``, ``countdown``, ``knights_knaves``, ``maze``, ``zebra_puzzles``, ...) by name:

    env = lamina.envs.make("rg", task="chain_sum", config={"min_terms": 3})
    obs, info = env.reset(seed=0)                 # the question
    obs, reward, terminated, truncated, info = env.step("42")   # reward: the verifier's score

    lamina train env=rg env.kwargs.task=chain_sum agent.mode=generate

``reset(seed=s)`` poses the task's item ``s``: seeds are cut into chunks of ``CHUNK_SIZE``; chunk
``c`` is ``create_dataset(task, seed=c * CHUNK_SIZE, size=CHUNK_SIZE, **config)`` and seed ``s`` is
its item ``s % CHUNK_SIZE``. Most generators draw item ``i`` of a dataset seeded ``d`` from
``Random(d + i)``, so seed ``s`` gets ``Random(s)``: distinct seeds give distinct draws, and the
held-out seeds (``env.eval_seed_offset`` on) never replay a training seed's draw.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from lamina.envs.base import make_info
from lamina.envs.reasoning import Grade, SingleTurnEnv

# Seeds per generated dataset chunk (reasoning-gym's word_ladder refuses datasets over 20,000 items).
CHUNK_SIZE = 1000
# Chunks kept per environment; a chunk is rebuilt when a reset needs it again after eviction.
CACHED_CHUNKS = 4
# The dataset's own draw of its items; lamina sets both from the seed.
RESERVED_CONFIG_KEYS = ("seed", "size")
# Tasks whose verifier cannot tell a right answer from a wrong one: refused, with the reason.
BROKEN_VERIFIERS = {
    "game_of_life_halting": (
        "its verifier (reasoning-gym 0.1.25) scores 1.0 whenever bool(answer) == bool(reference), and "
        "every reference is a non-empty string, so any non-empty answer scores 1.0"
    ),
}
_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
_DIGIT = re.compile(r"\d")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences a generator's or verifier's prints and warnings (``bf`` prints progress dots; some
    verifiers warn on text they cannot parse)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def task_names() -> list[str]:
    """Every task reasoning-gym registers (``composite`` included), sorted."""
    return sorted(_reasoning_gym().factory.DATASETS)


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as error:
        raise ImportError("env=rg needs reasoning-gym: pip install reasoning-gym==0.1.25") from error
    return reasoning_gym


def _dataset_config(rg: Any, task: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` checked against the task's config dataclass; ``composite``'s dataset specs built.

    Raises:
        ValueError: naming the reserved or unknown keys and the valid ones.
    """
    _, config_cls = rg.factory.DATASETS[task]
    valid = [f.name for f in fields(config_cls) if f.name not in RESERVED_CONFIG_KEYS]
    reserved = sorted(set(config) & set(RESERVED_CONFIG_KEYS))
    if reserved:
        raise ValueError(
            f"env.kwargs.config sets {reserved}: lamina draws reasoning-gym's seed and size from the "
            "reset seed; leave them out"
        )
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(f"unknown config keys {unknown} for reasoning-gym task {task!r}; valid: {valid}")
    config = dict(config)
    if task == "composite":
        specs = config.get("datasets") or []
        config["datasets"] = [
            spec if is_dataclass(spec) else rg.composite.DatasetSpec(**dict(spec)) for spec in specs
        ]
    return config


class ReasoningGymEnv(SingleTurnEnv):
    """One reasoning-gym task item per episode, answered once, scored by the task's verifier.

    ## Observation
    The item's question (reasoning-gym's text, answer format included). After the step, feedback:
    correct, incorrect with the score, or why the answer could not be read.

    ## Action
    The answer as text. If it holds ``<answer>...</answer>`` tags (reasoning-gym's own format) the
    last one's content is the answer, else the whole text; surrounding whitespace is dropped. It
    goes to the task's ``score_answer`` unchanged. It is unreadable (``info["action_valid"]``
    False, reward 0) when it is empty, over 10,000 characters, when the verifier raises on it
    (``prime_factorization`` does on text without numbers), or when the reference answer holds a
    digit and the answer none (``"ħ€ł"`` to an arithmetic question) and the verifier gives it no
    credit. Any answer the verifier credits is valid.

    ## Rewards
    The verifier's score in [0, 1]: 1 for a right answer; some tasks give partial credit (e.g.
    ``countdown`` 0.01 for a wrong expression, ``prime_factorization`` 0.5 for the right product
    of wrong factors). ``info["score"]`` repeats it (0.0 before the answer).

    ## Episode End
    After one answer (single-turn): valid or not, right or wrong. ``info["won"]`` is True when the
    score is 1, reasoning-gym's criterion for a solved item.

    ## Info
    Besides the contract's keys: ``score``, ``task_type`` (the item's ``source_dataset``: the task,
    or for ``composite`` the sub-task it drew) and ``rg_index`` (the seed's index in its chunk).

    ## Arguments
    - ``task``: a reasoning-gym task name (``task_names()``); required.
    - ``config``: the task's config fields (e.g. ``{"min_terms": 3, "max_terms": 5}`` for
      ``chain_sum``), except ``seed`` and ``size``, which come from the reset seed. For
      ``composite``: ``{"datasets": [{"name": "chain_sum", "weight": 1, "config": {}}, ...]}``.
    - ``render_mode``: None or ``"ansi"``.

    ``reset(seed=s)`` poses item ``s`` (see the module docstring); without a seed the item is drawn
    with ``self.np_random``. ``expert_action()`` is the item's reference answer, or None for the
    tasks that have none (their verifier checks the answer itself: ``boxnet``, ``graph_color``,
    ``propositional_logic``, ``rubiks_cube``, ``rush_hour``).
    """

    def __init__(
        self, task: str | None = None, config: Mapping[str, Any] | None = None, render_mode: str | None = None
    ):
        super().__init__(render_mode=render_mode)
        rg = _reasoning_gym()
        names = sorted(rg.factory.DATASETS)
        if task is None or task not in names:
            problem = "needs env.kwargs.task=<name>" if task is None else f"has no task {task!r}"
            raise ValueError(f"reasoning-gym {problem}; valid: {', '.join(names)}")
        if task in BROKEN_VERIFIERS:
            raise ValueError(f"reasoning-gym task {task!r} is refused: {BROKEN_VERIFIERS[task]}")
        self._rg = rg
        self.task_name = task
        self.config = _dataset_config(rg, task, dict(config or {}))
        self._chunks: OrderedDict[int, Any] = OrderedDict()
        self._entry: dict[str, Any] = {}
        self._entry_dataset: Any = None  # the chunk that drew the entry (its verifier scores it)
        self._score = 0.0
        self.index = 0
        self._chunk(0)  # a bad config fails here, not at the first reset

    def _chunk(self, number: int) -> Any:
        """The dataset of seeds ``number * CHUNK_SIZE ..`` (built on first use, a few kept)."""
        if number in self._chunks:
            self._chunks.move_to_end(number)
            return self._chunks[number]
        try:
            with _quiet():
                dataset = self._rg.create_dataset(
                    self.task_name, seed=number * CHUNK_SIZE, size=CHUNK_SIZE, **self.config
                )
        except (AssertionError, TypeError, ValueError) as error:  # the config's validate() asserts
            raise ValueError(
                f"reasoning-gym task {self.task_name!r} refused config {self.config}: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._chunks[number] = dataset
        if len(self._chunks) > CACHED_CHUNKS:
            self._chunks.popitem(last=False)
        return dataset

    def _new_task(self, seed: int | None) -> tuple[str, str]:
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        chunk, self.index = divmod(int(seed), CHUNK_SIZE)
        self._entry_dataset = self._chunk(chunk)
        with _quiet():
            self._entry = self._entry_dataset[self.index]
        self._score = 0.0
        answer = self._entry.get("answer")
        return str(self._entry["question"]), "" if answer is None else str(answer)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        done_before = self._done
        observation, reward, terminated, truncated, info = super().step(action)
        if done_before:
            return observation, reward, terminated, truncated, info
        return observation, self._score, terminated, truncated, {**info, "score": self._score}

    def expert_action(self) -> str | None:
        """The item's reference answer; None once answered or for a task without one."""
        return None if self._done or self._entry.get("answer") is None else self._reference

    def _grade(self, answer: str) -> Grade:
        matches = _ANSWER_TAG.findall(answer)
        text = (matches[-1] if matches else answer).strip()
        self._score = 0.0
        if not text:
            return Grade(False, False, "Invalid answer: it is empty.")
        try:
            with _quiet():
                score = float(self._entry_dataset.score_answer(text, self._entry))
        except Exception as error:
            return Grade(
                False, False, f"Invalid answer: the verifier could not read it ({type(error).__name__})."
            )
        if score <= 0.0 and _DIGIT.search(self._reference) and not _DIGIT.search(text):
            return Grade(False, False, "Invalid answer: the answer holds no number.")
        self._score = min(max(score, 0.0), 1.0)
        if self._score >= 1.0:
            return Grade(True, True, "Correct.")
        return Grade(True, False, f"Incorrect (score {self._score:.2f}).")

    def _info(self, action_valid: bool) -> dict[str, Any]:
        metadata = self._entry.get("metadata") or {}
        return make_info(
            task=self._question,
            admissible_actions=None,
            anchor=self._question,
            won=self._won,
            action_valid=action_valid,
            score=self._score,
            task_type=str(metadata.get("source_dataset", self.task_name)),
            rg_index=self.index,
        )

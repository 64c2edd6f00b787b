"""TextArena's single-player games (``pip install textarena==0.7.4``) as lamina text environments.

    env = lamina.envs.make("textarena", game="TowerOfHanoi-v0")
    obs, info = env.reset(seed=0)                   # the board; info["task"]: the game's rules
    obs, reward, terminated, truncated, info = env.step("[A C]")

    lamina train env=textarena env.kwargs.game=TowerOfHanoi-v0 agent.mode=generate

The game is TextArena's own environment without its observation wrappers (``<game>-raw``): lamina
rebuilds each prompt from the task and the last few steps, so each step's observation is only what
the game said since the last one. What runs offline here, and what does not, is in
``OFFLINE_GAMES`` / ``NEEDS_NLTK_DATA`` / ``NEEDS_LLM_API`` / ``BROKEN_ON_PY311`` (checked by
``tests/envs/test_textarena.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info

# Single-player games that run offline (no NLTK data, no LLM), with all their registered variants
# (``2048-v0-3x3``, ``Sudoku-v0-hard``, ...); measured with the network off.
OFFLINE_GAMES = (
    "2048",
    "Bandit",
    "Blackjack",
    "Countdown",
    "Crosswords",
    "Cryptarithm",
    "FifteenPuzzle",
    "FrozenLake",
    "GuessTheNumber",
    "LightsOut",
    "LogicPuzzle",
    "Mastermind",
    "Minesweeper",
    "PegJump",
    "RushHour",
    "Secretary",
    "Set",
    "Slitherlink",
    "Sokoban",
    "Sudoku",
    "ThreeCardMonte",
    "TowerOfHanoi",
)
# They download NLTK corpora on import (``words``; Wordle also ``averaged_perceptron_tagger_eng``),
# which fails without network: ``python -m nltk.downloader words averaged_perceptron_tagger_eng``.
NEEDS_NLTK_DATA = ("Hangman", "WordLadder", "Wordle", "WordSearch")
# They ask an LLM through OpenRouter (OPENROUTER_API_KEY and network).
NEEDS_LLM_API = ("GuessWho", "TwentyQuestions")
# Their modules use Python 3.12 syntax (SyntaxError on 3.11).
BROKEN_ON_PY311 = ("Klondike",)
MAX_ACTION_LENGTH = 1_000
_ACTION_MESSAGE = "PLAYER_ACTION"  # the game's echo of the action: the agent knows it already
_PROMPT_MESSAGE = "PROMPT"
# TextArena ends a game, lost, after a second invalid move in a row; lamina keeps invalid actions
# from changing anything, so the allowance is lifted (the agent's invalid-action penalty applies).
_NO_ERROR_LIMIT = 10**9


def _textarena() -> Any:
    try:
        import textarena
    except ImportError as error:
        raise ImportError("env=textarena needs TextArena: pip install textarena==0.7.4") from error
    return textarena


def game_family(game: str) -> str:
    """``"2048-v0-3x3"`` -> ``"2048"``: the game's name without version and variant."""
    return game.split("-v", 1)[0]


def _canonical(value: Any, depth: int = 0) -> Any:
    """A JSON-able, address-free rendering of a game state (dicts sorted, sets sorted, arrays
    listed, objects by their attributes)."""
    if depth > 50:
        return "..."
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return [[_canonical(k, depth + 1), _canonical(v, depth + 1)] for k, v in items]
    if isinstance(value, list | tuple):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v, depth + 1) for v in value), key=repr)
    if isinstance(value, np.ndarray | np.generic):
        return _canonical(value.tolist(), depth + 1)
    if hasattr(value, "__dict__"):
        return [type(value).__name__, _canonical(vars(value), depth + 1)]
    return type(value).__name__


def hanoi_move(towers: dict[str, list[int]], target: str = "C") -> tuple[str, str] | None:
    """The first move of the standard recursive plan that stacks every disk on ``target`` from any
    legal position (``towers``: peg -> disks bottom to top, as TextArena's Tower of Hanoi keeps
    them); None when they are all there."""
    peg_of = {disk: peg for peg, disks in towers.items() for disk in disks}

    def first_move(disk: int, to: str) -> tuple[str, str] | None:
        """The first move that brings disks 1..``disk`` onto peg ``to``."""
        if disk == 0:
            return None
        if peg_of[disk] == to:
            return first_move(disk - 1, to)
        spare = next(p for p in towers if p not in (peg_of[disk], to))
        return first_move(disk - 1, spare) or (peg_of[disk], to)

    return first_move(len(peg_of), target)


def _hanoi_expert(game_state: dict[str, Any]) -> str | None:
    move = hanoi_move(game_state["towers"])
    return None if move is None else f"[{move[0]} {move[1]}]"


# Games with a reference solver for ``expert_action()``, by family.
EXPERTS = {"TowerOfHanoi": _hanoi_expert}


# Legal moves, for the games whose moves can be listed from their state: TextArena itself lists none,
# and without a list choose mode cannot play them. Each function takes the game (TextArena's env
# object, unwrapped) and returns its moves in the game's own format, every one of them valid.
def _guess_moves(game: Any) -> list[str]:
    return [f"[{n}]" for n in range(game.min_number, game.max_number + 1) if n not in game.guessed_numbers]


def _lake_moves(game: Any) -> list[str]:
    row, col = game.state.game_state["player_pos"]
    steps = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}  # off the grid is invalid
    return [
        f"[{name}]"
        for name, (dr, dc) in steps.items()
        if 0 <= row + dr < game.size and 0 <= col + dc < game.size
    ]


def _hanoi_moves(game: Any) -> list[str]:
    towers = game.state.game_state["towers"]
    return [
        f"[{a} {b}]"
        for a in towers
        for b in towers
        if a != b and towers[a] and (not towers[b] or towers[b][-1] > towers[a][-1])
    ]


LEGAL_MOVES = {
    "GuessTheNumber": _guess_moves,  # the numbers in range not guessed yet (a repeat is invalid)
    "FrozenLake": _lake_moves,
    "TowerOfHanoi": _hanoi_moves,
    "ThreeCardMonte": lambda game: [f"[{cup}]" for cup in range(game.num_cups)],
    "Bandit": lambda game: [f"[{button}]" for button in game.buttons],
    "Blackjack": lambda game: ["[hit]", "[stand]"],
}


class TextArenaEnv(TextEnv):
    """One TextArena single-player game per episode, seeded by the reset seed.

    ## Observation
    What the game said since the last step (the board, hints, why a move was invalid), its
    messages joined by newlines; the echo of the agent's own action is left out. After reset: the
    game's opening messages besides its rules (the rules are ``info["task"]``), or the rules when
    there is nothing else.

    ## Action
    A move in the game's own format, usually in square brackets (``[A C]``, ``[up]``, ``[3 4 5]``);
    text without brackets gets them around it, as TextArena's ``ActionFormattingWrapper`` does
    (``format_actions``). A move the game rejects is invalid (``info["action_valid"]`` False): the
    game's state and turn stay as they were and the observation gives its reason. TextArena would
    end the game, lost, after a second invalid move in a row; that limit is lifted here, so invalid
    moves never end an episode. Text over 1,000 characters and moves after the end are refused.

    ## Rewards
    TextArena's outcome, on the step that ends the game: 1 when solved, otherwise the game's
    partial score (share of the puzzle done, hands won, ...); 0 on every other step.

    ## Episode End
    Terminated when the game ends (solved, lost, or its own turn limit). Truncation: the
    registration's ``max_episode_steps`` (100) or ``env.max_steps``.

    ## Info
    ``task`` (the game's rules and move format), ``admissible_actions``: the legal moves for the
    games in ``LEGAL_MOVES`` (Guess the Number, Frozen Lake, Tower of Hanoi, Three-Card Monte,
    Bandit, Blackjack), so choose mode can play them; None for the others (TextArena itself lists
    no legal moves) and once the game is over. ``anchor`` (a SHA-1 of the game's ``game_state``,
    secrets included: the board, the code to crack), ``won`` (the game ended with reward 1),
    ``action_valid``, ``task_type`` (the game id), ``reason`` (TextArena's words on the outcome, once over).
    ``expert_action()``: the Tower of Hanoi games only (``EXPERTS``).

    ## Arguments
    - ``game``: a TextArena single-player game id, e.g. ``TowerOfHanoi-v0``, ``Sudoku-v0-easy``,
      ``Mastermind-v0``, ``2048-v0-mega-easy`` (``OFFLINE_GAMES`` lists the families that run
      offline).
    - ``format_actions``: put brackets around a move that has none.
    - ``render_mode``: None or ``"ansi"``.

    Seeds: TextArena seeds Python's global ``random`` at reset and its games draw from it (a few
    from NumPy's global generator too). Each environment here keeps its own copy of both
    generators, swapped in only while its game runs, and NumPy's is seeded from the reset seed as
    well: the same seed replays the same game however environments interleave.
    """

    def __init__(self, game: str | None = None, format_actions: bool = True, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        ta = _textarena()
        registry = ta.envs.registration.ENV_REGISTRY
        game = None if game is None else game.removesuffix("-train").removesuffix("-raw")
        if game is None or game not in registry:
            offline = ", ".join(
                sorted(
                    g
                    for g in registry
                    if game_family(g) in OFFLINE_GAMES and not g.endswith(("-raw", "-train"))
                )
            )
            problem = "needs env.kwargs.game=<id>" if game is None else f"has no game {game!r}"
            raise ValueError(f"TextArena {problem}; single-player games that run offline: {offline}")
        family = game_family(game)
        for names, why in (
            (NEEDS_NLTK_DATA, "needs NLTK data it downloads at import (no network here?)"),
            (NEEDS_LLM_API, "asks an LLM through OpenRouter (OPENROUTER_API_KEY and network)"),
            (BROKEN_ON_PY311, "does not import on Python 3.11 (its module uses 3.12 syntax)"),
        ):
            if family in names:
                raise ValueError(f"TextArena game {game!r} {why}; offline games: {', '.join(OFFLINE_GAMES)}")
        self.game = game
        self.format_actions = bool(format_actions)
        self._ta = ta
        raw = f"{game}-raw" if f"{game}-raw" in registry else game  # the game without its wrappers
        self._env = ta.make(raw)
        self._python_random = random.Random()
        self._numpy_random = np.random.RandomState()
        self._task = ""
        self._done = False
        self._won = False
        self._reason = ""
        self._anchor = ""
        self._started = False
        self._start_game(0)  # a probe: the game must be single-player

    @contextlib.contextmanager
    def _own_random(self) -> Iterator[None]:
        """Python's and NumPy's global generators, swapped for this environment's while it runs
        (and the game's prints silenced: some report their puzzle generation on stdout)."""
        outer_python, outer_numpy = random.getstate(), np.random.get_state()
        random.setstate(self._python_random.getstate())
        np.random.set_state(self._numpy_random.get_state())
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            self._python_random.setstate(random.getstate())
            self._numpy_random.set_state(np.random.get_state())
            random.setstate(outer_python)
            np.random.set_state(outer_numpy)

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        self._start_game(seed)
        messages = self._messages()
        prompts = [text for text, kind in messages if kind == _PROMPT_MESSAGE]
        others = [text for text, kind in messages if kind not in (_PROMPT_MESSAGE, _ACTION_MESSAGE)]
        self._task = "\n".join(prompts).strip() or f"Play TextArena's {self.game}."
        self._done, self._won, self._reason = False, False, ""
        self._started = True
        self._observe_state()
        self._last_observation = "\n".join(others).strip() or self._task
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._done:
            return self._refuse("The game is over. Call reset() to play again.", terminated=True)
        if not isinstance(action, str) or len(action) > MAX_ACTION_LENGTH:
            return self._refuse(
                f"Invalid action {describe_action(action)}: expected a move of at most "
                f"{MAX_ACTION_LENGTH} characters."
            )
        move = action.strip()
        if self.format_actions and "[" not in move and "]" not in move:
            move = f"[{move}]"
        state = self._env.state
        errors_before = state.error_count
        with self._own_random():
            done, _ = self._env.step(move)
        valid = state.error_count <= errors_before  # set_invalid_move counts an error, a valid move resets
        reward = 0.0
        if done:
            self._done = True
            rewards = state.rewards or {}
            reward = float(rewards.get(0, 0.0))
            self._won = reward >= 1.0
            self._reason = str(state.game_info.get(0, {}).get("reason") or "")
        self._observe_state()
        messages = [text for text, kind in self._messages() if kind != _ACTION_MESSAGE]
        if self._reason:
            messages.append(self._reason)
        self._last_observation = "\n".join(messages).strip() or "Nothing happened."
        return self._last_observation, reward, self._done, False, self._info(action_valid=valid)

    def expert_action(self) -> str | None:
        """The next move of a reference solver, for the games in ``EXPERTS`` (Tower of Hanoi: the
        recursive plan from the current position); None for the others and once the game is over."""
        expert = EXPERTS.get(game_family(self.game))
        if expert is None or not self._started or self._done:
            return None
        return expert(self._env.state.game_state)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._env.close()

    # -- helpers --------------------------------------------------------------------------------
    def _start_game(self, seed: int) -> None:
        self._numpy_random.seed(seed % 2**32)
        try:
            with self._own_random():
                self._env.reset(num_players=1, seed=seed)  # TextArena: random.seed(seed)
        except AssertionError as error:  # TextArena's states assert their number of players
            raise ValueError(f"TextArena game {self.game!r} is not a single-player game: {error}") from None
        state = self._env.state
        if not isinstance(state, self._ta.SinglePlayerState):
            raise ValueError(f"TextArena game {self.game!r} is not a single-player game")
        state.error_allowance = _NO_ERROR_LIMIT

    def _messages(self) -> list[tuple[str, str]]:
        """What the game said to the player since last asked: ``(text, message type name)``."""
        _, messages = self._env.get_observation()
        return [(str(text), getattr(kind, "name", str(kind))) for _, text, kind in messages]

    def _observe_state(self) -> None:
        game_state = getattr(self._env.state, "game_state", None)
        text = json.dumps(_canonical(game_state), sort_keys=True, default=str)
        self._anchor = hashlib.sha1(text.encode()).hexdigest()

    def _refuse(self, feedback: str, terminated: bool = False) -> tuple[str, float, bool, bool, dict]:
        self._last_observation = feedback
        return feedback, 0.0, terminated, False, self._info(action_valid=False)

    def _legal_moves(self) -> list[str] | None:
        moves = LEGAL_MOVES.get(game_family(self.game))
        if moves is None or self._done:
            return None
        return moves(self._env.unwrapped if hasattr(self._env, "unwrapped") else self._env)

    def _info(self, action_valid: bool) -> dict[str, Any]:
        return make_info(
            task=self._task,
            admissible_actions=self._legal_moves(),
            anchor=self._anchor,
            won=self._won,
            action_valid=action_valid,
            task_type=self.game,
            reason=self._reason,
        )

"""FrozenLake in text: walk from the start to the goal across a frozen lake without falling in a hole.

Each seed gives a random map (Gymnasium's ``generate_random_map``, which redraws until a path from
start to goal exists). The walk is deterministic unless ``is_slippery=True``.

RAGEN's FrozenLake (RAGEN-AI/RAGEN ``ragen/env/frozen_lake``) is
``FrozenLakeEnv(is_slippery=True, random_start_goal=True, symbols="ragen")``: its map generator
(start and goal anywhere, seeded by the reset seed), Gymnasium's slippery dynamics and random draws,
and RAGEN's symbols (``configs/env/frozenlake_ragen.yaml``).

    import gymnasium as gym, lamina.envs
    env = gym.make("lamina/FrozenLake-v0")
    obs, info = env.reset(seed=0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import generate_random_map
from gymnasium.utils import seeding

from lamina.envs.actions import describe_action, parse_choice
from lamina.envs.base import TextEnv, make_info

FROZEN, HOLE, GOAL, PLAYER = "_", "H", "G", "P"
ACTIONS = ("up", "down", "left", "right")
# Gymnasium's map letters (S start, F frozen, H hole, G goal) -> the symbols shown to the agent.
_SYMBOLS = {"S": FROZEN, "F": FROZEN, "H": HOLE, "G": GOAL}
_DELTAS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
# With is_slippery, the move goes in the intended direction or one of its two perpendiculars (1/3 each),
# drawn as Gymnasium draws it: among [(a - 1) % 4, a, (a + 1) % 4] in its action order.
_GYM_ORDER = ("left", "down", "right", "up")
SYMBOL_SETS = ("lamina", "ragen")
# RAGEN's grid_lookup: player, frozen, hole, goal, player in a hole, player on the goal.
RAGEN_SYMBOLS = {
    "player": "P",
    "frozen": "_",
    "hole": "O",
    "goal": "G",
    "player_in_hole": "X",
    "player_on_goal": "√",
}


class FrozenLakeEnv(TextEnv):
    """Reach the goal without stepping into a hole.

    ## Observation
    The lake as a text grid, one row per line, after a line of feedback on the last action (the
    reset observation is the grid alone). Symbols: ``_`` frozen ice (the start is frozen ice too),
    ``H`` hole, ``G`` goal, ``P`` the player (drawn over the cell it stands on). With
    ``symbols="ragen"``, RAGEN's: ``_`` frozen, ``O`` hole, ``G`` goal, ``P`` player, ``X`` player in
    a hole, ``√`` player on the goal.

    ## Action
    One of ``up``, ``down``, ``left``, ``right`` (case-insensitive, surrounding whitespace
    ignored); these four are ``info["admissible_actions"]``. Moving off the edge of the map is a
    valid action with no effect. Any other text is invalid: the state is unchanged,
    ``info["action_valid"]`` is False and the observation says why.

    ## Rewards
    1 on reaching the goal, 0 otherwise (invalid actions included).

    ## Episode End
    Terminates on reaching the goal (``info["won"]``) or falling into a hole. Invalid actions do
    not end the episode. Truncation comes from the registration's ``max_episode_steps``
    (``TimeLimit``); the class used directly has no time limit.

    ## Arguments
    - ``size``: side of the square map; the start is the top-left cell, the goal the bottom-right.
    - ``hole_probability``: probability that a cell is a hole when the map is drawn.
    - ``is_slippery``: if True, a move goes in the intended direction or in one of the two
      perpendicular directions, each with probability 1/3 (Gymnasium's FrozenLake and its draws).
    - ``random_start_goal``: draw start and goal anywhere, as RAGEN's ``generate_random_map`` (the
      map is seeded by the reset seed itself, so a seed gives RAGEN's map).
    - ``symbols``: ``"lamina"`` (default) or ``"ragen"``.
    - ``render_mode``: None or ``"ansi"`` (returns the last observation).

    ``reset(options={"map": ["SFF", "FHF", "FFG"]})`` plays a hand-built map in Gymnasium's letters
    (``S`` start at the top-left, ``F`` frozen, ``H`` hole, ``G`` goal) instead of a random one.
    ``info["anchor"]`` is ``(row, column, map)``; ``expert_action()`` follows a shortest safe path
    (breadth-first search; on a slippery lake it is the intended move, not an optimal policy).
    """

    def __init__(
        self,
        size: int = 4,
        hole_probability: float = 0.2,
        is_slippery: bool = False,
        random_start_goal: bool = False,
        symbols: str = "lamina",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if size < 2:
            raise ValueError(f"size={size!r} must be at least 2")
        if not 0.0 <= hole_probability < 1.0:
            raise ValueError(f"hole_probability={hole_probability!r} must be in [0, 1)")
        if symbols not in SYMBOL_SETS:
            raise ValueError(f"symbols={symbols!r} is not known; valid: {', '.join(SYMBOL_SETS)}")
        self.size = int(size)
        self.hole_probability = float(hole_probability)
        self.is_slippery = bool(is_slippery)
        self.random_start_goal = bool(random_start_goal)
        self.symbols = symbols
        self._map: list[str] = []
        self._position = (0, 0)
        self._plan: dict[tuple[int, int], str] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if options and options.get("map") is not None:
            letters = _check_map(options["map"])
        elif self.random_start_goal:
            map_seed = seed if seed is not None else int(self.np_random.integers(2**31))
            letters = ragen_random_map(self.size, 1.0 - self.hole_probability, map_seed)
        else:
            map_seed = int(self.np_random.integers(2**31))
            letters = generate_random_map(size=self.size, p=1.0 - self.hole_probability, seed=map_seed)
        self._map = ["".join(_SYMBOLS[c] for c in line) for line in letters]
        start = next(i for i, c in enumerate("".join(letters)) if c == "S")
        self._position = divmod(start, len(letters[0]))
        self.np_random.random()  # Gymnasium's reset draws the start state: keep its random stream
        self._plan = {}
        self._last_observation = self._grid()
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        move = parse_choice(action, ACTIONS)
        if move is None:
            feedback = (
                f"Invalid action {describe_action(action)}: answer with exactly one of {', '.join(ACTIONS)}."
            )
            return self._finish_step(feedback, 0.0, action_valid=False)
        if self._cell() in (HOLE, GOAL):
            return self._finish_step("The episode is over.", 0.0, action_valid=True)

        direction = move
        if self.is_slippery:  # Gymnasium's categorical_sample over three equally likely moves
            a = _GYM_ORDER.index(move)
            choices = [_GYM_ORDER[(a - 1) % 4], move, _GYM_ORDER[(a + 1) % 4]]
            draw = self.np_random.random()
            direction = choices[int(np.argmax(np.cumsum([1 / 3, 1 / 3, 1 / 3]) > draw))]
        row, col = self._position
        d_row, d_col = _DELTAS[direction]
        new_row, new_col = row + d_row, col + d_col
        slipped = f" You slipped and went {direction}." if direction != move else ""
        if not (0 <= new_row < len(self._map) and 0 <= new_col < len(self._map[0])):
            return self._finish_step(f"You tried to move {move}.{slipped} You are at the edge.", 0.0, True)
        self._position = (new_row, new_col)
        if self._cell() == HOLE:
            return self._finish_step(f"You moved {move}.{slipped} You fell into a hole.", 0.0, True)
        if self._cell() == GOAL:
            return self._finish_step(f"You moved {move}.{slipped} You reached the goal!", 1.0, True)
        return self._finish_step(f"You moved {move}.{slipped}", 0.0, True)

    def expert_action(self) -> str | None:
        """First move of a shortest path from the player to the goal avoiding holes; None if over."""
        if self._cell() in (HOLE, GOAL):
            return None
        if self._position not in self._plan:
            self._plan = self._shortest_path()
        return self._plan.get(self._position)

    # ------------------------------------------------------------------ helpers

    @property
    def task(self) -> str:
        if self.symbols == "ragen":
            r = RAGEN_SYMBOLS
            return (
                f"Walk from your position {r['player']} to the goal {r['goal']} without falling into a hole "
                f"{r['hole']}. Symbols: {r['frozen']} frozen ice, {r['hole']} hole, {r['goal']} goal, "
                f"{r['player']} you, {r['player_in_hole']} you in a hole, "
                f"{r['player_on_goal']} you on the goal. "
                f"Actions: {', '.join(ACTIONS)}."
            )
        start = "the top-left corner" if not self.random_start_goal else "your position"
        return (
            f"Walk from {start} to the goal {GOAL} without falling into a hole {HOLE}. "
            f"Symbols: {FROZEN} frozen ice, {HOLE} hole, {GOAL} goal, {PLAYER} you. "
            f"Actions: {', '.join(ACTIONS)}."
        )

    def _cell(self) -> str:
        row, col = self._position
        return self._map[row][col]

    def _won(self) -> bool:
        return self._cell() == GOAL

    def _finish_step(
        self, feedback: str, reward: float, action_valid: bool
    ) -> tuple[str, float, bool, bool, dict]:
        self._last_observation = f"{feedback}\n{self._grid()}"
        terminated = self._cell() in (HOLE, GOAL)
        return self._last_observation, reward, terminated, False, self._info(action_valid)

    def _info(self, action_valid: bool) -> dict[str, Any]:
        anchor = (*self._position, "\n".join(self._map))
        return make_info(
            task=self.task,
            admissible_actions=ACTIONS,
            anchor=anchor,
            won=self._won(),
            action_valid=action_valid,
        )

    def _grid(self) -> str:
        row, col = self._position
        if self.symbols == "ragen":
            r = RAGEN_SYMBOLS
            names = {FROZEN: r["frozen"], HOLE: r["hole"], GOAL: r["goal"]}
            rows = [[names[c] for c in line] for line in self._map]
            here = self._map[row][col]
            rows[row][col] = {HOLE: r["player_in_hole"], GOAL: r["player_on_goal"]}.get(here, r["player"])
        else:
            rows = [list(line) for line in self._map]
            rows[row][col] = PLAYER
        return "\n".join("".join(r) for r in rows)

    def _shortest_path(self) -> dict[tuple[int, int], str]:
        """BFS from the player to the goal over non-hole cells: maps each cell on the path to its move."""
        parents: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {self._position: None}
        queue = deque([self._position])
        while queue:
            cell = queue.popleft()
            if self._map[cell[0]][cell[1]] == GOAL:
                plan: dict[tuple[int, int], str] = {}
                while (step := parents[cell]) is not None:
                    previous, move = step
                    plan[previous] = move
                    cell = previous
                return plan
            for move, (d_row, d_col) in _DELTAS.items():
                nxt = (cell[0] + d_row, cell[1] + d_col)
                inside = 0 <= nxt[0] < len(self._map) and 0 <= nxt[1] < len(self._map[0])
                if inside and nxt not in parents:
                    if self._map[nxt[0]][nxt[1]] != HOLE:
                        parents[nxt] = (cell, move)
                        queue.append(nxt)
        return {}


def _check_map(rows: object) -> list[str]:
    """Validates a hand-built map in Gymnasium's letters.

    Raises:
        ValueError: if it is not a rectangle of S/F/H/G with exactly one S.
    """
    # Anything not iterable raises TypeError in list(), as before.
    lines = [rows] if isinstance(rows, str) else list(cast(Iterable[object], rows))
    lines = [line for text in lines for line in str(text).split()]
    ok = bool(lines) and all(len(line) == len(lines[0]) and set(line) <= set(_SYMBOLS) for line in lines)
    if not ok or "".join(lines).count("S") != 1:
        raise ValueError(f"a map is a rectangle of S/F/H/G rows with exactly one start S, got {rows!r}")
    return lines


def _has_path(board: np.ndarray) -> bool:
    """Whether the goal is reachable from the start over non-hole cells (4-neighbour moves)."""
    size = board.shape[0]
    start = tuple(int(v) for v in np.argwhere(board == "S")[0])
    frontier, seen = [start], set()
    while frontier:
        r, c = frontier.pop()
        if (r, c) in seen:
            continue
        seen.add((r, c))
        for dr, dc in ((1, 0), (0, 1), (-1, 0), (0, -1)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size:
                if board[nr][nc] == "G":
                    return True
                if board[nr][nc] != "H":
                    frontier.append((nr, nc))
    return False


def ragen_random_map(size: int, p: float, seed: int) -> list[str]:
    """RAGEN's ``generate_random_map``: F with probability ``p`` else H; start and goal drawn anywhere
    (distinct); redrawn until the goal is reachable. Same generator and draws, so same maps."""
    rng, _ = seeding.np_random(seed)
    while True:
        board = rng.choice(["F", "H"], (size, size), p=[p, 1 - p])
        start_r, start_c = rng.integers(size, size=2)
        goal_r, goal_c = rng.integers(size, size=2)
        if (start_r, start_c) != (goal_r, goal_c):
            board[start_r][start_c], board[goal_r][goal_c] = "S", "G"
            if _has_path(board):
                return ["".join(row) for row in board]

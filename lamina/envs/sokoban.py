"""Sokoban in text: push every box onto a target in a procedurally generated room.

Rooms are generated from the seed and are solvable by construction: a room topology is carved by
a random walk (as in gym-sokoban), boxes start on their targets, and the start state is drawn
among the states reachable from a solved state by playing *backwards* (player moves and box
pulls), so reversing that play is a solution. The backwards search is breadth-first, so each
candidate's optimal solution length is known and the start state is only drawn among states that
can be solved within ``max_steps`` moves.

    import gymnasium as gym, lamina.envs
    env = gym.make("lamina/Sokoban-v0")
    obs, info = env.reset(seed=0)

``generator="gym_sokoban"`` generates rooms as gym-sokoban does and RAGEN (RAGEN-AI/RAGEN
``ragen/env/sokoban``) runs it: the same random walk, player and boxes on random floor cells with
the targets under the boxes, then a depth-first search of reverse play (player moves pulling boxes,
``search_depth`` deep) keeps the state with the best score, box swaps x box displacement, and
RAGEN's last touch moves the player up to three random steps. With ``symbols="ragen"`` the grid is
printed as RAGEN prints it (each cell `` # ``, box on target `` √ ``). ``configs/env/sokoban_ragen.yaml``
sets both. The draws come from the env's own seeded generator, not the global ``random`` and
``numpy.random`` RAGEN uses, so the same seed gives another room than RAGEN's.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from lamina.envs.actions import describe_action, parse_choice
from lamina.envs.base import TextEnv, make_info

WALL, FLOOR, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET = "#", "_", "O", "X", "*", "P", "S"
ACTIONS = ("up", "down", "left", "right")

STEP_REWARD = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_REWARD = -1.0
SOLVED_REWARD = 10.0

# gym-sokoban's 3x3 carving masks for the room topology random walk.
_MASKS = np.array(
    [
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[0, 0, 0], [1, 1, 0], [0, 1, 0]],
        [[0, 0, 0], [1, 1, 0], [1, 1, 0]],
        [[0, 0, 0], [0, 1, 1], [0, 1, 0]],
    ],
    dtype=bool,
)
_MAX_GENERATION_ATTEMPTS = 1000
_MAX_SEARCH_STATES = 200_000
GENERATORS = ("lamina", "gym_sokoban")
SYMBOL_SETS = ("lamina", "ragen")
# RAGEN's grid_lookup, by lamina symbol.
RAGEN_SYMBOLS = {
    WALL: " # ", FLOOR: " _ ", TARGET: " O ", BOX_ON_TARGET: " √ ",
    BOX: " X ", PLAYER: " P ", PLAYER_ON_TARGET: " S ",
}  # fmt: skip
DEFAULT_MAX_STEPS = 20

# A state is (player cell, sorted box cells); cells are flat indices into the room.
State = tuple[int, tuple[int, ...]]
# A room is (shape, wall mask over flat cells, target cells, start state).
Room = tuple[tuple[int, int], np.ndarray, frozenset[int], State]


def _deltas(cols: int) -> dict[str, int]:
    return {"up": -cols, "down": cols, "left": -1, "right": 1}


def parse_room(grid: str) -> Room:
    """Reads a room drawn with the observation's symbols (e.g. a hand-built test case).

    Raises:
        ValueError: if the grid is not rectangular, not closed by walls, uses unknown symbols,
            has not exactly one player, or has no boxes or a different number of boxes and targets.
    """
    lines = [line.strip() for line in grid.strip().splitlines()]
    rows, cols = len(lines), len(lines[0]) if lines else 0
    symbols = {WALL, FLOOR, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET}
    if rows < 3 or any(len(line) != cols for line in lines) or not set("".join(lines)) <= symbols:
        raise ValueError(f"a room is a rectangle of the symbols {sorted(symbols)}, got {grid!r}")
    cells = "".join(lines)
    border = lines[0] + lines[-1] + "".join(line[0] + line[-1] for line in lines)
    if set(border) != {WALL}:
        raise ValueError(f"the room must be closed by walls ({WALL!r}), got {grid!r}")
    players = [i for i, c in enumerate(cells) if c in (PLAYER, PLAYER_ON_TARGET)]
    boxes = tuple(i for i, c in enumerate(cells) if c in (BOX, BOX_ON_TARGET))
    targets = frozenset(i for i, c in enumerate(cells) if c in (TARGET, BOX_ON_TARGET, PLAYER_ON_TARGET))
    if len(players) != 1 or not boxes or len(boxes) != len(targets):
        raise ValueError(f"a room needs one player and as many boxes as targets (at least one), got {grid!r}")
    walls = np.array([c == WALL for c in cells], dtype=bool)
    return (rows, cols), walls, targets, (players[0], boxes)


class SokobanEnv(TextEnv):
    """Push every box onto a target.

    ## Observation
    The room as a text grid, one row per line, after a line of feedback on the last action
    (the reset observation is the grid alone). Symbols: ``#`` wall, ``_`` floor, ``O`` target,
    ``X`` box, ``*`` box on a target, ``P`` player, ``S`` player on a target (``symbols="ragen"``:
    RAGEN's, each cell three characters wide, `` √ `` for a box on a target).

    ## Action
    One of ``up``, ``down``, ``left``, ``right`` (case-insensitive, surrounding whitespace
    ignored); these four are ``info["admissible_actions"]``. Moving into a wall, or pushing a box
    into a wall or another box, is a valid action with no effect. Any other text is invalid:
    the state is unchanged, ``info["action_valid"]`` is False and the observation says why.

    ## Rewards
    As in gym-sokoban: -0.1 per step (invalid actions included), +1 per box pushed onto a target,
    -1 per box pushed off a target, +10 when the last box reaches its target.

    ## Episode End
    Terminates when every box is on a target (``info["won"]``). Invalid actions do not end the
    episode. Truncation comes from the registration's ``max_episode_steps`` (``TimeLimit``); the
    class used directly has no time limit.

    ## Arguments
    - ``dim_room``: (rows, columns) of the room, walls included; at least (5, 5).
    - ``num_boxes``: number of boxes (and targets).
    - ``max_steps``: every generated room is solvable in at most this many moves; default: the
      episode's step limit (``env.max_steps`` through ``lamina.envs.make``), else 20. A step limit
      below ``min_solution_length`` lowers it to the limit.
    - ``min_solution_length``: and needs at least this many moves (rooms too small to allow it are
      redrawn); the start state is drawn uniformly among the states in that range, preferring
      states where no box is on a target yet. (Both for ``generator="lamina"`` only.)
    - ``generator``: ``"lamina"`` (default) or ``"gym_sokoban"`` (see the module docstring);
      ``search_depth``: its reverse-play depth (RAGEN: 100-300).
    - ``symbols``: ``"lamina"`` (default) or ``"ragen"``.
    - ``render_mode``: None or ``"ansi"`` (returns the last observation).

    ``reset(options={"room": grid})`` plays a hand-built room drawn with the observation's symbols
    instead of a generated one. ``info["anchor"]`` is the grid string (player and boxes),
    ``expert_action()`` the next move of an optimal breadth-first solver.
    """

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        max_steps: int | None = None,
        min_solution_length: int = 4,
        generator: str = "lamina",
        search_depth: int = 300,
        symbols: str = "lamina",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        rows, cols = (int(d) for d in dim_room)
        if rows < 5 or cols < 5:
            raise ValueError(f"dim_room={tuple(dim_room)!r} is too small; both sides must be at least 5")
        if num_boxes < 1:
            raise ValueError(f"num_boxes={num_boxes!r} must be at least 1")
        if generator not in GENERATORS:
            raise ValueError(f"generator={generator!r} is not known; valid: {', '.join(GENERATORS)}")
        if symbols not in SYMBOL_SETS:
            raise ValueError(f"symbols={symbols!r} is not known; valid: {', '.join(SYMBOL_SETS)}")
        if search_depth < 2:
            raise ValueError(f"search_depth={search_depth!r} must be at least 2")
        _check_lengths(min_solution_length, max_steps if max_steps is not None else min_solution_length)
        self.dim_room = (rows, cols)
        self.num_boxes = int(num_boxes)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.min_solution_length = int(min_solution_length)
        self.generator = generator
        self.search_depth = int(search_depth)
        self.symbols = symbols
        self._walls = np.ones(rows * cols, dtype=bool)
        self._targets: frozenset[int] = frozenset()
        self._player = 0
        self._boxes: tuple[int, ...] = ()
        self._plan: dict[State, str] = {}
        self._shape = self.dim_room  # of the current room; differs from dim_room for a hand-built room
        self._deltas = _deltas(cols)

    # ------------------------------------------------------------------ Gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if options and options.get("room") is not None:
            room = parse_room(str(options["room"]))
        elif self.generator == "gym_sokoban":
            room = self._generate_gym_sokoban_room()
        else:
            room = self._generate_room()
        self._shape, self._walls, self._targets, (self._player, self._boxes) = room
        self._deltas = _deltas(self._shape[1])
        self._plan = {}
        self._last_observation = self._grid()
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        move = parse_choice(action, ACTIONS)
        if move is None:
            feedback = (
                f"Invalid action {describe_action(action)}: answer with exactly one of {', '.join(ACTIONS)}."
            )
            return self._finish_step(feedback, STEP_REWARD, action_valid=False)
        if self._solved():
            return self._finish_step("The puzzle is already solved.", 0.0, action_valid=True)

        delta = self._deltas[move]
        ahead = self._player + delta
        reward = STEP_REWARD
        if self._walls[ahead]:
            feedback = f"You cannot move {move}: a wall is in the way."
        elif ahead in self._boxes:
            beyond = ahead + delta
            if self._walls[beyond] or beyond in self._boxes:
                feedback = f"You cannot push the box {move}: it is blocked."
            else:
                self._boxes = tuple(sorted((set(self._boxes) - {ahead}) | {beyond}))
                self._player = ahead
                feedback = f"You pushed a box {move}."
                if beyond in self._targets and ahead not in self._targets:
                    reward += BOX_ON_TARGET_REWARD
                    feedback = f"You pushed a box {move} onto a target."
                elif ahead in self._targets and beyond not in self._targets:
                    reward += BOX_OFF_TARGET_REWARD
                    feedback = f"You pushed a box {move} off a target."
                if self._solved():
                    reward += SOLVED_REWARD
                    feedback += " Every box is on a target: solved!"
        else:
            self._player = ahead
            feedback = f"You moved {move}."
        return self._finish_step(feedback, reward, action_valid=True)

    def expert_action(self) -> str | None:
        """Next move of an optimal plan from the current state (BFS); None once solved."""
        if self._solved():
            return None
        state = (self._player, self._boxes)
        if state not in self._plan:
            self._plan = _solve(self._walls, self._targets, state, self._deltas) or {}
        return self._plan.get(state)

    # ------------------------------------------------------------------ helpers

    @property
    def task(self) -> str:
        return (
            f"Push every box onto a target. Symbols: {WALL} wall, {FLOOR} floor, {TARGET} target, "
            f"{BOX} box, {BOX_ON_TARGET} box on target, {PLAYER} you, {PLAYER_ON_TARGET} you on a target. "
            f"Boxes can be pushed, not pulled. Actions: {', '.join(ACTIONS)}."
        )

    def _solved(self) -> bool:
        return all(box in self._targets for box in self._boxes)

    def _finish_step(
        self, feedback: str, reward: float, action_valid: bool
    ) -> tuple[str, float, bool, bool, dict]:
        self._last_observation = f"{feedback}\n{self._grid()}"
        return self._last_observation, reward, self._solved(), False, self._info(action_valid)

    @property
    def solution_limit(self) -> int:
        """Generated rooms are solvable within this many moves (``max_steps`` or the step limit)."""
        if self.max_steps is not None:
            return self.max_steps
        return self.step_limit if self.step_limit else DEFAULT_MAX_STEPS

    def _info(self, action_valid: bool) -> dict[str, Any]:
        return make_info(
            task=self.task,
            admissible_actions=ACTIONS,
            anchor=self._grid(),
            won=self._solved(),
            action_valid=action_valid,
        )

    def _grid(self) -> str:
        rows, cols = self._shape
        cells = []
        for cell in range(rows * cols):
            if self._walls[cell]:
                symbol = WALL
            elif cell == self._player:
                symbol = PLAYER_ON_TARGET if cell in self._targets else PLAYER
            elif cell in self._boxes:
                symbol = BOX_ON_TARGET if cell in self._targets else BOX
            else:
                symbol = TARGET if cell in self._targets else FLOOR
            cells.append(RAGEN_SYMBOLS[symbol] if self.symbols == "ragen" else symbol)
        return "\n".join("".join(cells[r * cols : (r + 1) * cols]) for r in range(rows))

    def _generate_room(self) -> Room:
        """Walls, targets and a start state whose optimal solution takes 1..max_steps moves."""
        limit = self.solution_limit
        # Following a step limit below min_solution_length: the shortest rooms that fit it.
        shortest = (
            self.min_solution_length if self.max_steps is not None else min(self.min_solution_length, limit)
        )
        _check_lengths(shortest, limit)
        for _ in range(_MAX_GENERATION_ATTEMPTS):
            walls = ~_room_topology(self.np_random, self.dim_room).reshape(-1)
            floor = np.flatnonzero(~walls)
            if len(floor) < self.num_boxes + 2:
                continue
            targets = frozenset(int(c) for c in self.np_random.choice(floor, self.num_boxes, replace=False))
            distances = _reverse_distances(walls, targets, _deltas(self.dim_room[1]), limit)
            unsolved = [s for s, d in distances.items() if d >= shortest]
            # Prefer states with no box already on a target; fall back to any unsolved state.
            candidates = [s for s in unsolved if not targets.intersection(s[1])] or unsolved
            if candidates:
                start = candidates[int(self.np_random.integers(len(candidates)))]
                return self.dim_room, walls, targets, start
        raise RuntimeError(
            f"could not generate a Sokoban room with dim_room={self.dim_room}, num_boxes={self.num_boxes}, "
            f"max_steps={limit}; try a larger room or fewer boxes"
        )

    def _generate_gym_sokoban_room(self) -> Room:
        """gym-sokoban's generator as RAGEN runs it (module docstring); redrawn until a box moved."""
        cols = self.dim_room[1]
        deltas = _deltas(cols)
        for _ in range(_MAX_GENERATION_ATTEMPTS):
            for _try in range(4):  # gym-sokoban's `tries`
                floor = _gym_sokoban_topology(self.np_random, self.dim_room).reshape(-1)
                cells = [int(c) for c in np.flatnonzero(floor)]
                if len(cells) <= self.num_boxes + 1:
                    break  # gym-sokoban raises here; RAGEN then draws a new room
                player = cells.pop(int(self.np_random.integers(len(cells))))
                boxes = [cells.pop(int(self.np_random.integers(len(cells)))) for _ in range(self.num_boxes)]
                walls = ~floor
                best = _reverse_play(walls, tuple(boxes), player, deltas, self.search_depth)
                if best is not None:
                    start_player, start_boxes, displacement = best
                    start_player = _random_player_walk(
                        self.np_random,
                        walls,
                        start_boxes,
                        start_player,
                        deltas,
                        0.8 if displacement == 1 else 0.5,
                    )
                    return self.dim_room, walls, frozenset(boxes), (start_player, tuple(sorted(start_boxes)))
        raise RuntimeError(
            f"could not generate a gym-sokoban room with dim_room={self.dim_room}, num_boxes={self.num_boxes}"
        )


def _check_lengths(min_solution_length: int, max_steps: int) -> None:
    if not 1 <= min_solution_length <= max_steps:
        raise ValueError(
            f"need 1 <= min_solution_length <= max_steps, got {min_solution_length=} and {max_steps=}"
        )


def _gym_sokoban_topology(rng: np.random.Generator, dim_room: tuple[int, int]) -> np.ndarray:
    """gym-sokoban's ``room_topology_generation``: a 1.7 x (rows + cols) step walk of 3x3 masks."""
    rows, cols = dim_room
    directions = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    direction = np.array(directions[int(rng.integers(4))])
    position = np.array([int(rng.integers(1, rows)), int(rng.integers(1, cols))])  # randint(1, dim - 1)
    level = np.zeros((rows, cols), dtype=bool)
    for _ in range(int(1.7 * (rows + cols))):
        if rng.random() < 0.35:
            direction = np.array(directions[int(rng.integers(4))])
        position = np.clip(position + direction, [1, 1], [rows - 2, cols - 2])
        r, c = position
        level[r - 1 : r + 2, c - 1 : c + 2] |= _MASKS[int(rng.integers(len(_MASKS)))]
    level[[0, -1], :] = False
    level[:, [0, -1]] = False
    return level


def _reverse_play(
    walls: np.ndarray, targets: tuple[int, ...], player: int, deltas: dict[str, int], search_depth: int
) -> tuple[int, tuple[int, ...], int] | None:
    """gym-sokoban's ``reverse_playing`` (with RAGEN's pull-only moves): depth-first reverse play
    from the solved room, ``search_depth`` deep; the best state by box swaps x box displacement,
    where states with a box or the player on a target score 0. Returns (player, boxes by target,
    displacement), or None when no box could be moved away."""
    target_set = set(targets)
    moves = list(deltas.values())
    explored: set[tuple[int, tuple[int, ...]]] = set()
    best: list[Any] = [-1, None]

    def displacement(boxes: tuple[int, ...]) -> int:
        cols = deltas["down"]
        return sum(
            abs(b // cols - t // cols) + abs(b % cols - t % cols) for b, t in zip(boxes, targets, strict=True)
        )

    def search(player: int, boxes: tuple[int, ...], swaps: int, last_pull: int, ttl: int) -> None:
        ttl -= 1
        if ttl <= 0 or len(explored) >= 300_000:
            return
        key = (player, tuple(sorted(boxes)))
        if key in explored:
            return
        covered = player in target_set or any(b in target_set for b in boxes)
        score = 0 if covered else swaps * displacement(boxes)
        if score > best[0]:
            best[0], best[1] = score, (player, boxes)
        explored.add(key)
        for delta in moves:
            ahead = player + delta
            if walls[ahead] or ahead in boxes:
                continue
            behind = player - delta
            pull = boxes.index(behind) if behind in boxes else -1
            next_boxes = boxes if pull < 0 else boxes[:pull] + (player,) + boxes[pull + 1 :]
            next_last = last_pull if pull < 0 else pull
            search(ahead, next_boxes, swaps + (next_last != last_pull), next_last, ttl)

    search(player, targets, 0, -1, search_depth)
    if best[1] is None or displacement(best[1][1]) == 0:
        return None
    return best[1][0], best[1][1], displacement(best[1][1])


def _random_player_walk(
    rng: np.random.Generator,
    walls: np.ndarray,
    boxes: tuple[int, ...],
    player: int,
    deltas: dict[str, int],
    p_move: float,
) -> int:
    """RAGEN's ``add_random_player_movement``: with probability ``p_move``, up to three steps to free
    cells not visited before, going on after each with probability 0.5."""
    if rng.random() > p_move:
        return player
    visited = [player]
    for step in range(3):
        options = [player + d for d in deltas.values() if not walls[player + d] and player + d not in boxes]
        options = [cell for cell in options if cell not in visited]
        if not options:
            break
        player = options[int(rng.integers(len(options)))]
        visited.append(player)
        if step == 2 or rng.random() > 0.5:
            break
    return player


def _room_topology(rng: np.random.Generator, dim_room: tuple[int, int]) -> np.ndarray:
    """Floor mask carved by gym-sokoban's random walk of 3x3 masks; the border is always wall."""
    rows, cols = dim_room
    directions = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])
    floor = np.zeros((rows, cols), dtype=bool)
    position = np.array([rng.integers(1, rows - 1), rng.integers(1, cols - 1)])
    direction = directions[rng.integers(4)]
    for _ in range(int(1.7 * (rows + cols))):
        if rng.random() < 0.35:
            direction = directions[rng.integers(4)]
        position = np.clip(position + direction, [1, 1], [rows - 2, cols - 2])
        r, c = position
        floor[r - 1 : r + 2, c - 1 : c + 2] |= _MASKS[rng.integers(len(_MASKS))]
    floor[[0, -1], :] = False
    floor[:, [0, -1]] = False
    return floor


def _reverse_distances(
    walls: np.ndarray, targets: frozenset[int], deltas: dict[str, int], max_depth: int
) -> dict[State, int]:
    """Optimal solution length of every state within ``max_depth`` moves of a solved state.

    Breadth-first search backwards from every solved state (boxes on targets, player on any free
    floor cell): a backward step moves the player one cell back and optionally pulls the box in
    front of it. Insertion order is deterministic, so drawing from it by index is reproducible.
    """
    boxes = tuple(sorted(targets))
    floor = [int(c) for c in np.flatnonzero(~walls)]
    distances: dict[State, int] = {(p, boxes): 0 for p in floor if p not in targets}
    queue = deque(distances)
    while queue and len(distances) < _MAX_SEARCH_STATES:
        state = queue.popleft()
        depth = distances[state]
        if depth >= max_depth:
            continue
        player, box_cells = state
        for delta in deltas.values():
            behind = player - delta
            if walls[behind] or behind in box_cells:
                continue
            successors = [(behind, box_cells)]
            if player + delta in box_cells:  # pull the box in front along
                pulled = tuple(sorted((set(box_cells) - {player + delta}) | {player}))
                successors.append((behind, pulled))
            for successor in successors:
                if successor not in distances:
                    distances[successor] = depth + 1
                    queue.append(successor)
    return distances


def _solve(
    walls: np.ndarray, targets: frozenset[int], start: State, deltas: dict[str, int]
) -> dict[State, str] | None:
    """Optimal plan by forward BFS over (player, boxes): maps each state on the path to its move."""
    parents: dict[State, tuple[State, str] | None] = {start: None}
    queue = deque([start])
    while queue and len(parents) < _MAX_SEARCH_STATES:
        state = queue.popleft()
        player, boxes = state
        if all(box in targets for box in boxes):
            plan: dict[State, str] = {}
            while (step := parents[state]) is not None:
                previous, move = step
                plan[previous] = move
                state = previous
            return plan
        for move, delta in deltas.items():
            ahead = player + delta
            if walls[ahead]:
                continue
            if ahead in boxes:
                beyond = ahead + delta
                if walls[beyond] or beyond in boxes:
                    continue
                successor = (ahead, tuple(sorted((set(boxes) - {ahead}) | {beyond})))
            else:
                successor = (ahead, boxes)
            if successor not in parents:
                parents[successor] = (state, move)
                queue.append(successor)
    return None

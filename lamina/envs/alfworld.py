"""ALFWorld household tasks on the official ``alfworld`` TextWorld (PDDL) engine.

    env = lamina.envs.make("alfworld", split="eval_in_distribution")
    obs, info = env.reset(seed=0)          # game 0 of the split's sorted game list
    obs, reward, terminated, truncated, info = env.step(info["admissible_actions"][0])

Data: the official layouts, ``json_2.1.1`` or ``json_2.1.3`` (``alfworld-download`` writes them to
``~/.cache/alfworld``). Each game is a folder ``json_2.1.x/<split>/<task>/<trial>/`` with
``game.tw-pddl`` (PDDL domain, problem and the text grammar) and ``traj_data.json``. The two differ
in the grammar each game file carries: ``json_2.1.1`` says ``put X in/on Y`` where ``json_2.1.3``
(the grammar of the ``alfworld`` package's own ``alfred.twl2``) says ``move X to Y``. The engine
reads the commands from the game file, so both play the same way; ``env.data_version`` tells which,
from the grammar of the games themselves (not from the folder's name).
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lamina.envs.base import TextEnv, make_info
from lamina.paths import shared_dir

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
# Split name -> folders of json_2.1.1 to use, first one holding games wins. The official release
# has `train`; some mirrors ship only `valid_train` (a subset of train), which then stands in.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "valid_train"),
    "eval_in_distribution": ("valid_seen",),
    "eval_out_of_distribution": ("valid_unseen",),
}
DATA_VERSION = "json_2.1.1"
# Layouts looked for under a data folder, in this order when ``data_version`` is not given.
DATA_VERSIONS = ("json_2.1.1", "json_2.1.3", "json_2.1.2")
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
_BANNER = "-= Welcome to TextWorld, ALFRED! =-"
_TASK_MARKER = "Your task is to:"
_SOLVABLE_RE = re.compile(rb'"solvable"\s*:\s*(true|false)')
_MAX_ECHO = 60
_WRITE_ONLY_PREDICATES = frozenset({"checked"})


def default_data_path() -> tuple[Path, str]:
    """``ALFWORLD_DATA``, else the shared data folder's ``alfworld/`` (``LAMINA_SHARED``, else
    ``../shared`` beside the repository), else ``~/.cache/alfworld`` (alfworld's own default);
    and where it came from."""
    env = os.environ.get("ALFWORLD_DATA")
    if env:
        return Path(env).expanduser(), "env var ALFWORLD_DATA"
    shared = shared_dir()
    if shared is not None and (shared / "alfworld").is_dir():
        return shared / "alfworld", f"shared data folder {shared}"
    return Path("~/.cache/alfworld").expanduser(), "default ~/.cache/alfworld"


# The command each layout's grammar gives to placing an object, and the layout it marks.
GRAMMARS = {'template :: "put {o} in/on {r}"': "json_2.1.1", 'template :: "move {o} to {r}"': "json_2.1.3"}


def grammar_version(game_file: Path) -> str | None:
    """The layout whose grammar ``game_file`` carries (``put X in/on Y``: ``json_2.1.1``; ``move X
    to Y``: ``json_2.1.3``), whatever its folder is called; None when it has neither."""
    grammar = json.loads(Path(game_file).read_text()).get("grammar", "")
    found = [version for template, version in GRAMMARS.items() if template in grammar]
    return found[0] if len(found) == 1 else None


def _json_root(data_path: Path, data_version: str | None = None) -> Path:
    """The folder holding the split folders: ``data_path`` itself when it is a ``json_2.1.x`` folder
    or holds split folders directly, else ``data_path/<data_version>``, or without one the first of
    ``DATA_VERSIONS`` present (``json_2.1.1`` when none is there yet)."""
    folders = {folder for split_folders in SPLITS.values() for folder in split_folders}
    if data_path.name.startswith("json_2.1.") or any((data_path / folder).is_dir() for folder in folders):
        return data_path
    versions = (data_version,) if data_version else DATA_VERSIONS
    return next((data_path / v for v in versions if (data_path / v).is_dir()), data_path / versions[0])


def _is_solvable(game_file: Path) -> bool:
    """The game's ``solvable`` flag (alfworld skips games without it or with False).

    The key is written last, so the file's tail is read first; the whole JSON only as a fallback.
    """
    with open(game_file, "rb") as f:
        f.seek(max(0, game_file.stat().st_size - 256))
        match = _SOLVABLE_RE.search(f.read())
    if match:
        return match.group(1) == b"true"
    with open(game_file) as f:
        return bool(json.load(f).get("solvable", False))


def _task_type(game_dir: Path) -> str:
    """The ALFRED task type: the task folder's name starts with it, else ``traj_data.json`` says."""
    prefix = game_dir.parent.name.split("-", 1)[0]
    if prefix in TASK_TYPES:
        return prefix
    with open(game_dir / TRAJ_FILE) as f:
        return str(json.load(f).get("task_type", ""))


_GAMES_CACHE: dict[tuple[str, tuple[str, ...]], tuple[tuple[Path, str], ...]] = {}


def find_games(split_dir: str | Path, task_types: Sequence[str] = TASK_TYPES) -> tuple[tuple[Path, str], ...]:
    """Solvable games under ``split_dir`` as sorted ``(game folder, task type)`` pairs.

    Follows alfworld's ``AlfredTWEnv.collect_game_files``: a game is a folder holding both
    ``traj_data.json`` and ``game.tw-pddl``; ``movable``/``Sliced`` games and games not flagged
    ``solvable`` are skipped. Found games are cached per process (the data are read-only); an empty
    result is not, so data downloaded after a failed attempt are seen.
    """
    key = (str(split_dir), tuple(task_types))
    if key in _GAMES_CACHE:
        return _GAMES_CACHE[key]
    games = []
    for root, _dirs, files in os.walk(split_dir, followlinks=True):
        relative = os.path.relpath(root, split_dir)
        if TRAJ_FILE not in files or GAME_FILE not in files or "movable" in relative or "Sliced" in relative:
            continue
        game_dir = Path(root)
        task_type = _task_type(game_dir)
        if task_type in task_types and _is_solvable(game_dir / GAME_FILE):
            games.append((game_dir, task_type))
    found = tuple(sorted(games))
    if found:
        _GAMES_CACHE[key] = found
    return found


def available_splits(json_root: Path) -> dict[str, Path]:
    """Split name -> folder, for the splits that hold at least one game under ``json_root``."""
    found = {}
    for split, folders in SPLITS.items():
        for folder in folders:
            if find_games(json_root / folder):
                found[split] = json_root / folder
                break
    return found


def _missing_data_message(data_path: Path, source: str, data_version: str | None = None) -> str:
    json_root = _json_root(data_path, data_version)
    tried = [str(json_root / folder) for folders in SPLITS.values() for folder in folders]
    return (
        f"No ALFWorld games found under {data_path} ({source}). Looked for folders with "
        f"{GAME_FILE} + {TRAJ_FILE} in: {', '.join(tried)}. Get the data with `alfworld-download` "
        f"(it writes {DATA_VERSION}/ to ~/.cache/alfworld, or to $ALFWORLD_DATA), or set ALFWORLD_DATA "
        f"(or env.kwargs.data_path=) to the folder that holds {' or '.join(DATA_VERSIONS[:2])}/."
    )


def _echo(action: object) -> str:
    """The action as shown back to the agent: whitespace collapsed, at most 60 characters."""
    text = " ".join(action.split()) if isinstance(action, str) else type(action).__name__
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


def _is_state_fact(fact: Any) -> bool:
    """Whether a fact of the engine's list belongs in the anchor (the state the agent acts in).

    Left out: the ``not_*`` atoms the engine adds for every fact an action deleted (a record of the
    path taken; no ALFRED predicate starts with ``not_``) and ``checked(x)``, which look, inventory,
    examine and open set and no precondition, goal or text ever reads. So ``look`` or
    ``inventory`` leave the anchor as it was, and going back to a place gives the anchor it had.
    """
    return not fact.is_negation and fact.name not in _WRITE_ONLY_PREDICATES


def _alfworld_wrappers() -> tuple[Any, Any]:
    """alfworld's ``AlfredDemangler`` and ``AlfredInfos``, imported without leaving ``ALFWORLD_DATA``
    set: importing alfworld sets it to its default when unset, which would hide where a later
    env's data path came from."""
    unset = "ALFWORLD_DATA" not in os.environ
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    if unset:
        os.environ.pop("ALFWORLD_DATA", None)
    return AlfredDemangler, AlfredInfos


@contextlib.contextmanager
def _keep_argv() -> Iterator[None]:
    """Restores ``sys.argv``: fast-downward's PDDL translation (run on every load and reset) sets it
    to ``["translate.py", "domain", "task"]`` and never puts it back."""
    argv = list(sys.argv)
    try:
        yield
    finally:
        sys.argv = argv


class ALFWorldEnv(TextEnv):
    """An ALFWorld game (TextWorld engine) chosen by seed from one split.

    ## Observation
    The engine's feedback text. After reset: the room description and the task (the
    ``-= Welcome to TextWorld, ALFRED! =-`` banner removed).

    ## Action
    One of ``info["admissible_actions"]`` (the engine's admissible commands, ``help`` dropped),
    e.g. ``"go to countertop 1"``; surrounding whitespace is ignored. Anything else (empty, unknown,
    not a string) is invalid: it never reaches the engine, the state stays unchanged,
    ``action_valid`` is False and the observation says ``Nothing happens. '<action>' is not an
    admissible action.``

    ## Rewards
    ``won_reward`` (default 10) on the step that completes the task, 0 otherwise: the per-step change
    of the engine's cumulative score (1 once the goal holds) times ``won_reward``.

    ## Episode End
    Terminated when the task is done (``info["won"]``). Truncation comes from the registration's
    ``max_episode_steps`` (50). Steps after termination change nothing and give reward 0.

    ## Info
    ``task`` (the goal sentence after "Your task is to:", e.g. ``"put a clean mug in
    coffeemachine."``), ``admissible_actions``, ``anchor`` (sorted tuple of the PDDL state's facts as
    strings, e.g. ``"atlocation(agent1 : agent, loc 3: location)"``, without the engine's ``not_*``
    and ``checked`` bookkeeping: equal states give equal anchors), ``won``, ``action_valid``, plus
    ``game`` (the game folder) and ``task_type``.

    ## Arguments
    - ``data_path``: folder holding ``json_2.1.1/`` or ``json_2.1.3/`` (or that folder itself);
      default ``$ALFWORLD_DATA``, else ``~/.cache/alfworld``.
    - ``data_version``: ``"json_2.1.1"`` (``put X in/on Y``) or ``"json_2.1.3"`` (``move X to Y``)
      when ``data_path`` holds both; default: the first of ``DATA_VERSIONS`` present.
    - ``split``: ``train`` (``json_2.1.1/train``, or ``valid_train`` when only that exists),
      ``eval_in_distribution`` (``valid_seen``) or ``eval_out_of_distribution`` (``valid_unseen``).
    - ``task_types``: keep only these of the six ALFRED task types (default: all).
    - ``won_reward``: reward for completing the task.

    ``reset(seed=s)`` plays game ``s % len(env.games)`` of the split's games sorted by path, from the
    game's own start state; without a seed the game is drawn with ``self.np_random``.
    ``options={"game": i}`` (an index) or ``{"game": path}`` (a game folder or its ``game.tw-pddl``)
    pins one game. ``expert_action()`` follows the PDDL planner's plan (see there).
    """

    def __init__(
        self,
        data_path: str | os.PathLike[str] | None = None,
        split: str = "train",
        data_version: str | None = None,
        task_types: Sequence[str] | None = None,
        won_reward: float = 10.0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if split not in SPLITS:
            raise ValueError(f"unknown ALFWorld split {split!r}; valid: {', '.join(SPLITS)}")
        task_types = tuple(TASK_TYPES if task_types is None else task_types)
        unknown = [t for t in task_types if t not in TASK_TYPES]
        if unknown or not task_types:
            raise ValueError(f"unknown ALFWorld task types {unknown}; valid: {', '.join(TASK_TYPES)}")

        if data_version is not None and not str(data_version).startswith("json_2.1."):
            raise ValueError(f"data_version={data_version!r} is not known; valid: {', '.join(DATA_VERSIONS)}")
        if data_path is not None:
            root, source = Path(data_path).expanduser(), "data_path argument"
        else:
            root, source = default_data_path()
        json_root = _json_root(root, data_version)
        splits = available_splits(json_root)
        if not splits:
            raise FileNotFoundError(_missing_data_message(root, source, data_version))
        if split not in splits:
            raise FileNotFoundError(
                f"ALFWorld split {split!r} ({' or '.join(SPLITS[split])}) has no games under "
                f"{json_root}; splits present there: {', '.join(splits)}"
            )
        pairs = find_games(splits[split], [t for t in TASK_TYPES if t in task_types])
        if not pairs:
            raise ValueError(f"no {split} games of task types {list(task_types)} in {splits[split]}")

        self.data_path = root
        # The grammar decides, not the folder's name: a download may put move-grammar games in a
        # folder called json_2.1.1.
        folder = json_root.name if json_root.name.startswith("json_2.1.") else "unknown"
        self.data_version = grammar_version(pairs[0][0] / GAME_FILE) or folder
        self.split = split
        self.split_dir = splits[split]
        self.task_types = task_types
        self.won_reward = float(won_reward)
        self.games: list[Path] = [game for game, _ in pairs]
        self._task_types = dict(pairs)
        self._engine: Any = None
        self._engine_game: Path | None = None
        self._state: Any = None
        self._game: Path | None = None
        self._task = ""
        self._admissible: list[str] = []
        self._anchor: tuple[str, ...] = ()
        self._won = False
        self._score = 0.0
        self._history: list[str] = []
        self._plan: list[str] | None = None
        self._plan_start = 0

    # -- engine ---------------------------------------------------------------------------------
    def _load(self, game: Path) -> None:
        """Loads ``game`` into this env's engine (created on first use, reused for later games)."""
        if self._engine is not None and self._engine_game == game:
            return
        import textworld

        AlfredDemangler, AlfredInfos = _alfworld_wrappers()
        path = str(game / GAME_FILE)
        self._engine_game = None
        if self._engine is None:
            # As alfworld's AlfredTWEnv.init_env, plus the facts (anchor). No policy_commands: the
            # planner would run after every step (3x slower steps); expert_action() plans on demand.
            infos = textworld.EnvInfos(
                won=True, lost=True, admissible_commands=True, facts=True, extras=["gamefile"]
            )
            wrappers = [AlfredDemangler(shuffle=False), AlfredInfos]
            with _keep_argv():
                self._engine = textworld.start(path, request_infos=infos, wrappers=wrappers)
        else:
            with _keep_argv():
                self._engine.load(path)
        self._engine_game = game

    def _observe(self, state: Any) -> None:
        """Caches what ``info`` needs from an engine state (once per state, not per info)."""
        self._state = state
        self._admissible = [c for c in state["admissible_commands"] if c != "help"]
        self._anchor = tuple(sorted(str(fact) for fact in state["facts"] if _is_state_fact(fact)))
        self._won = bool(state["won"])

    def _info(self, action_valid: bool = True) -> dict[str, Any]:
        return make_info(
            task=self._task,
            admissible_actions=self._admissible,
            anchor=self._anchor,
            won=self._won,
            action_valid=action_valid,
            game=str(self._game),
            task_type=None if self._game is None else self._task_types.get(self._game),
        )

    def _choose_game(self, seed: int | None, options: dict[str, Any] | None) -> Path:
        pinned = (options or {}).get("game")
        if pinned is None:
            if seed is not None:
                return self.games[seed % len(self.games)]
            return self.games[int(self.np_random.integers(len(self.games)))]
        if isinstance(pinned, numbers.Integral):
            if not 0 <= int(pinned) < len(self.games):
                raise ValueError(f"options['game']={pinned} is out of range 0..{len(self.games) - 1}")
            return self.games[int(pinned)]
        game = Path(pinned).expanduser()
        game = game.parent if game.name == GAME_FILE else game
        if not (game / GAME_FILE).is_file():
            raise ValueError(f"options['game']={str(pinned)!r} is not a game folder (no {GAME_FILE})")
        return game

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        game = self._choose_game(seed, options)
        self._load(game)
        self._game = game
        if game not in self._task_types:  # a pinned game from outside the split
            self._task_types[game] = _task_type(game)
        with _keep_argv():
            state = self._engine.reset()
        self._observe(state)
        intro = state.feedback.replace(_BANNER, "").strip()
        self._task = intro.split(_TASK_MARKER, 1)[1].strip() if _TASK_MARKER in intro else ""
        self._score = 0.0
        self._history = []
        self._plan = None
        self._last_observation = intro
        return intro, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._won:
            observation = "The task is already done. Call reset() to play again."
            self._last_observation = observation
            return observation, 0.0, True, False, self._info(action_valid=False)
        command = action.strip() if isinstance(action, str) else ""
        if command not in self._admissible:
            observation = f"Nothing happens. '{_echo(action)}' is not an admissible action."
            self._last_observation = observation
            return observation, 0.0, False, False, self._info(action_valid=False)

        previous_score = self._score
        state, score, done = self._engine.step(command)  # score: cumulative, 1 once the goal holds
        self._observe(state)
        self._history.append(command)
        self._score = float(score)
        reward = self.won_reward * (self._score - previous_score)
        terminated = bool(done or self._won or state["lost"])
        observation = state.feedback.strip()
        self._last_observation = observation
        return observation, reward, terminated, False, self._info()

    def expert_action(self) -> str | None:
        """The next command of the PDDL planner's plan (fast-downward, as TextWorld's walkthrough).

        The plan is computed once, on the first call of an episode, from the current state: at the
        start of an episode that is the game's walkthrough (TextWorld's ``extra.walkthrough``).
        Later calls step through it while the agent's valid actions match it; once the agent has
        diverged, the planner is run once more from the current state and that plan is followed.
        None when the task is done or no plan exists. One plan took 0.03 s (median of 122 games
        here), 1.9 s at the 90th percentile and up to minutes in a few big kitchens (248 s once), so
        planning on demand keeps resets fast for runs that never ask for the expert.
        """
        if self._state is None or self._won:
            return None
        done = self._history[self._plan_start :]
        on_plan = self._plan is not None and done == self._plan[: len(done)]
        if self._plan is None or not on_plan or (done and len(done) >= len(self._plan)):
            pddl = self._engine.unwrapped  # the call PddlEnv makes for policy_commands / walkthrough
            self._plan = list(pddl._pddl_state.replan(pddl._entity_infos))
            self._plan_start = len(self._history)
            done = []
        return self._plan[len(done)] if len(done) < len(self._plan) else None

    def close(self) -> None:
        """Drops the engine.

        Its private copy of fast-downward's library (~3 MB) stays loaded: textworld never unloads it,
        and ``dlclose`` on it crashes the interpreter at exit. Reuse one env across games rather than
        making many.
        """
        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self._engine_game = None
        self._state = None

"""TextWorld games, generated offline with TextWorld's own challenge generators and cached by seed.

env = lamina.envs.make("textworld", challenge="tw-treasure_hunter", settings={"level": 1})
obs, info = env.reset(seed=0)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lamina.cache import build_once
from lamina.envs.base import TextEnv, make_info
from lamina.paths import cache_dir

# Settings each challenge needs when the config gives none (same keys as `tw-make`'s flags).
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "tw-simple": {"rewards": "dense", "goal": "detailed", "test": False},
    "tw-coin_collector": {"level": 1},
    "tw-treasure_hunter": {"level": 1},
    "tw-cooking": {
        "recipe": 1,
        "take": 1,
        "go": 1,
        "open": False,
        "cook": False,
        "cut": False,
        "drop": False,
        "recipe_seed": 0,
        "split": "train",
    },
}
CHALLENGES = tuple(DEFAULT_SETTINGS)
# The z-machine prompt and status bar ("> ... -= Room =-0/1") end every feedback text.
_PROMPT_RE = re.compile(r"(^|\n)>.*\Z", re.S)
_RESTART_RE = re.compile(r"Would you like to RESTART.*", re.S)
_BLANKS_RE = re.compile(r"\n\s*\n+")


def game_path(challenge: str, settings: dict[str, Any], game_seed: int, root: Path | None = None) -> Path:
    """Generates (once) and returns the compiled game for ``(challenge, settings, game_seed)``.

    Parallel workers and processes asking for the same game compile it once (``lamina.cache``): the
    others wait and use that game, and none reads a half-written file.
    """
    key = hashlib.sha1(json.dumps([challenge, settings], sort_keys=True).encode()).hexdigest()[:10]
    folder = (root or cache_dir() / "textworld") / f"{challenge}-{key}"
    target = folder / f"game_{game_seed}.z8"

    def build(staging: Path) -> None:
        import textworld
        import textworld.challenges

        _, make_game, _ = textworld.challenges.CHALLENGES[challenge]
        staging.mkdir()
        options = textworld.GameOptions()
        options.seeds = game_seed
        options.path = str(staging / target.name)
        options.file_ext = ".z8"
        with quiet_jericho():  # the generator replays the walkthrough through jericho
            game = make_game(dict(settings), options)
            textworld.generator.compile_game(game, options)

    def publish(staging: Path) -> None:
        # The engine finds the game's .json beside the .z8: move it first, the .z8 marks completion.
        os.replace(staging / target.with_suffix(".json").name, target.with_suffix(".json"))
        os.replace(staging / target.name, target)

    # Every reset asks for its game: skip the folder scan for leftovers when the game is there.
    return build_once(target, build, publish=publish, clean_when_ready=False)


@contextmanager
def quiet_jericho():
    """jericho warns that TextWorld's own z8 games lack its per-game hints; lamina reads score and
    state from TextWorld, not from jericho's change detection."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported")
        yield


def request_infos():
    """What the environment asks TextWorld for: admissible commands and facts on every step, the
    walkthrough once (no per-step ``policy_commands``, which replans after every step)."""
    import textworld

    return textworld.EnvInfos(
        admissible_commands=True,
        facts=True,
        objective=True,
        won=True,
        lost=True,
        score=True,
        max_score=True,
        extras=["walkthrough"],
    )


def _clean(text: str, objective: str | None = None) -> str:
    """Strips TextWorld's ASCII-art banner and the trailing ``>`` prompt."""
    if objective and objective in text:
        text = text[text.index(objective) :]
    text = _RESTART_RE.sub("", _PROMPT_RE.sub("", text))
    return _BLANKS_RE.sub("\n\n", text).strip()


class TextWorldEnv(TextEnv):
    """A TextWorld challenge game chosen by seed.

    ## Observation
    The game's feedback text (the intro banner removed).

    ## Action
    One of ``info["admissible_actions"]`` (TextWorld's admissible commands). Anything else is
    invalid: it never reaches the engine, the state stays unchanged, ``action_valid`` is False.

    ## Rewards
    The change of the game score on each step (TextWorld scores are cumulative).

    ## Episode End
    Terminated when the game is won or lost; truncation comes from ``max_episode_steps``.

    ## Arguments
    - ``challenge``: one of ``tw-simple``, ``tw-coin_collector``, ``tw-treasure_hunter``, ``tw-cooking``.
    - ``settings``: the challenge's settings (``{"level": 1}``...), merged over the defaults.
    - ``num_games``: size of the game pool; ``reset(seed=s)`` plays game ``s % num_games``.
      ``None`` (default) makes every seed its own game.
    - ``game_dir``: where compiled games are cached (default ``$LAMINA_CACHE/textworld``).
    """

    def __init__(
        self,
        challenge: str = "tw-treasure_hunter",
        settings: dict[str, Any] | None = None,
        num_games: int | None = None,
        game_dir: str | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if challenge not in DEFAULT_SETTINGS:
            raise ValueError(f"unknown TextWorld challenge {challenge!r}; valid: {', '.join(CHALLENGES)}")
        if num_games is not None and num_games < 1:
            raise ValueError(f"num_games={num_games} must be >= 1 (or None for one game per seed)")
        self.challenge = challenge
        self.settings = {**DEFAULT_SETTINGS[challenge], **dict(settings or {})}
        self.num_games = num_games
        self.game_dir = Path(game_dir) if game_dir else None
        self._engine: Any = None  # textworld's Environment, started on the first reset
        self._engine_path: Path | None = None
        self._state: Any = None  # textworld.GameState once reset (the engine's own untyped mapping)
        self._walkthrough: list[str] = []
        self._history: list[str] = []

    # -- engine ---------------------------------------------------------------------------------
    def _start(self, path: Path) -> None:
        import textworld

        if self._engine_path == path:
            return
        if self._engine is not None:
            self._engine.close()
        infos = request_infos()
        with quiet_jericho():
            self._engine = textworld.start(str(path), request_infos=infos)
        self._engine_path = path

    def _info(self, action_valid: bool = True) -> dict[str, Any]:
        state = self._state
        admissible = sorted(c for c in state["admissible_commands"] if c != "help")
        anchor = tuple(sorted(str(fact) for fact in state["facts"]))
        return make_info(
            task=state["objective"].strip(),
            admissible_actions=admissible,
            anchor=anchor,
            won=bool(state["won"]),
            action_valid=action_valid,
            score=state["score"],
            max_score=state["max_score"],
        )

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "game_seed" in options:
            game_seed = int(options["game_seed"])
        elif seed is not None:
            game_seed = seed if self.num_games is None else seed % self.num_games
        else:
            game_seed = int(self.np_random.integers(0, 2**31 - 1))
        self._start(game_path(self.challenge, self.settings, game_seed, self.game_dir))
        self._state = self._engine.reset()
        self._walkthrough = list(self._state["extra.walkthrough"] or [])
        self._history = []
        observation = _clean(self._state.feedback, self._state["objective"])
        self._last_observation = observation
        return observation, self._info()

    def step(self, action: str):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        command = action.strip() if isinstance(action, str) else ""
        if command == "help" or command not in self._state["admissible_commands"]:
            shown = command if len(command) <= 60 else command[:57] + "..."
            observation = f"'{shown}' is not a valid action here. Choose one of the admissible actions."
            self._last_observation = observation
            return observation, 0.0, False, False, self._info(action_valid=False)
        previous_score = self._state["score"]
        self._state, _, done = self._engine.step(command)
        self._history.append(command)
        reward = float(self._state["score"] - previous_score)
        terminated = bool(done or self._state["won"] or self._state["lost"])
        observation = _clean(self._state.feedback)
        self._last_observation = observation
        return observation, reward, terminated, False, self._info()

    def expert_action(self) -> str | None:
        """The game's walkthrough, while the episode has followed it; None once it has diverged."""
        n = len(self._history)
        if self._history != self._walkthrough[:n] or n >= len(self._walkthrough):
            return None
        return self._walkthrough[n]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self._engine_path = None


def clear_cache(root: Path | None = None) -> None:
    """Deletes every cached TextWorld game."""
    shutil.rmtree(root or cache_dir() / "textworld", ignore_errors=True)

"""ScienceWorld (Wang et al. 2022) on its official engine: 30 elementary-science tasks in text.

    env = lamina.envs.make("scienceworld", tasks=["boil"], split="train")
    obs, info = env.reset(seed=0)          # a training variation of "boil"
    obs, reward, terminated, truncated, info = env.step("open door to kitchen")

    lamina train env=scienceworld env.kwargs.tasks=[find-animal] agent.mode=generate

The engine (``pip install scienceworld==1.2.3``) is a Scala simulator whose jar ships inside the
wheel (nothing is downloaded); each environment runs it in its own Java process through py4j, so
Java (a JRE 11+, ``apt-get install default-jre-headless``) must be installed. A JVM starts in about
2 s and holds about 400 MB at the default ``java_heap="1g"`` (1.6 GB with Java's own default heap).

Every task has numbered variations split by the engine into train, dev and test. ``reset(seed=s)``
plays task ``tasks[s % T]`` (T tasks) and, of that task's variations in ``split``, number
``(s // T) % n``: seeds cycle through the tasks first, so any run of T seeds covers every task once.
Train on ``split=train``, evaluate on ``dev`` or ``test`` through ``env.eval_kwargs`` (ALFWorld's way).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import shutil
import threading
from collections.abc import Sequence
from typing import Any

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info

SPLITS = ("train", "dev", "test")
MAX_ACTION_LENGTH = 1_000
# The engine's answer to text its parser cannot read (nothing changes, no time passes).
NOT_UNDERSTOOD = "No known action matches that input."
# Its answer to anything but an option number while it asks which object was meant.
NOT_AN_OPTION = "Unknown action."
AMBIGUOUS = "Ambiguous request:"
# Listed by the engine, refused here: it wipes the episode's progress; reset() starts episodes.
REFUSED_ACTIONS = ("reset task",)
_OPTION = re.compile(r"^(\d+):\t", re.MULTILINE)
_TASK_PREFIX = "Task Description:"
# py4j's launch_gateway is swapped for one with JVM options while an engine starts.
_LAUNCH_LOCK = threading.Lock()
# (task, split) -> the engine's variation numbers; the same in every process (they are the engine's).
_VARIATIONS: dict[tuple[str, str], list[int]] = {}


class JavaNotFoundError(RuntimeError):
    """ScienceWorld's engine needs Java and none is on PATH."""


def _scienceworld() -> Any:
    if shutil.which("java") is None:
        raise JavaNotFoundError(
            "ScienceWorld needs Java on PATH (a JRE 11+): apt-get install -y default-jre-headless"
        )
    try:
        import scienceworld.scienceworld as engine_module
    except ImportError as error:
        raise ImportError("env=scienceworld needs the engine: pip install scienceworld==1.2.3") from error
    return engine_module


def _start_engine(java_heap: str) -> Any:
    """A ``ScienceWorldEnv`` (its own JVM) whose heap is capped at ``java_heap`` (e.g. ``"1g"``)."""
    engine_module = _scienceworld()
    with _LAUNCH_LOCK:
        launch = engine_module.launch_gateway
        engine_module.launch_gateway = functools.partial(
            launch, javaopts=[f"-Xmx{java_heap}", "-XX:+UseSerialGC"]
        )
        try:
            # The engine's own step limit is never reached: lamina's TimeLimit ends episodes.
            return engine_module.ScienceWorldEnv("", envStepLimit=10**9)
        finally:
            engine_module.launch_gateway = launch


def _rounded_temperatures(node: Any) -> Any:
    """The object tree with temperatures in whole degrees Celsius (as a thermometer shows them):
    every tick moves them by fractions of a degree, which would keep equal states apart."""
    if isinstance(node, dict):
        return {
            key: round(value)
            if key == "temperatureC" and isinstance(value, float)
            else _rounded_temperatures(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rounded_temperatures(value) for value in node]
    return node


class ScienceWorldEnv(TextEnv):
    """A ScienceWorld task variation, chosen by seed from one split of the engine's variations.

    ## Observation
    The engine's text. After reset: the task description, then what ``look around`` shows.

    ## Action
    An engine command (``open door to kitchen``, ``focus on substance in metal pot``, ``wait1``).
    The engine's parser decides: text it cannot read (``No known action matches that input.``) is
    invalid and changes nothing. A command naming an object ambiguously makes the engine ask which
    one it meant (``Ambiguous request: ...`` with numbered options; valid, no time passes); the
    next action answers with an option number (``info["admissible_actions"]`` lists them). Anything
    else then is invalid, and by the engine's rule it also cancels the question and counts as one
    tick of simulated time: the one invalid action that changes the state. Refused before the
    engine (invalid, nothing changes): non-strings, text over 1,000 characters, ``reset task`` (it
    would wipe the episode's progress), any action once the episode is over.

    ## Rewards
    The change of the engine's score (0-100, -100 after a fatal mistake such as focusing on the
    wrong object) divided by 100, per step, as the ALFWorld wrapper turns its score into rewards:
    an episode's return is its final score / 100.

    ## Episode End
    Terminated when the task is completed (``info["won"]``) or failed (score below 0). Truncation:
    the registration's ``max_episode_steps`` (50) or ``env.max_steps``.

    ## Info
    ``task`` (the task description), ``admissible_actions`` (the engine's valid action-object
    combinations without ``reset task``: 5 to about 9,000 strings, typically 400-3,000 (measured on
    every task's gold path, ``docs/environments.md``); while the engine asks which object was meant,
    the option numbers; None with ``admissible=False``, which also makes steps faster),
    ``anchor`` (a SHA-1 of the engine's object tree with temperatures rounded to whole degrees,
    plus the pending question, if any), ``won``, ``action_valid``, and ``task_type`` (the task
    name, for per-task evaluation), ``variation``, ``score`` (0-100).
    The admissible list is the engine's own (the action space of its DRRN baseline); its object
    names are unique referents, so a command the parser accepts may be missing from it (the gold
    paths use such commands).

    ## Arguments
    - ``tasks``: task names (``boil``, ``find-animal``, ...; the engine's 30, ``task_names()``) or
      one name; None: all 30.
    - ``split``: ``train``, ``dev`` or ``test`` variations.
    - ``simplifications``: the engine's, e.g. ``"easy"`` or ``"teleportAction,openDoors"``.
    - ``admissible``: report the valid action-object combinations (default True).
    - ``java_heap``: the engine JVM's maximum heap (``-Xmx``).

    ``options={"task": name, "variation": n}`` pins a variation. ``expert_action()`` follows the
    engine's gold action sequence, generated on first use (0.1-20 s, the mendelian-genetics tasks
    longest) by reloading the variation and replaying the episode so far; None once the agent has
    left the gold path (the engine has no planner to replan from elsewhere) or after its end.
    """

    def __init__(
        self,
        tasks: str | Sequence[str] | None = None,
        split: str = "train",
        simplifications: str = "",
        admissible: bool = True,
        java_heap: str = "1g",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if split not in SPLITS:
            raise ValueError(f"unknown ScienceWorld split {split!r}; valid: {', '.join(SPLITS)}")
        if not re.fullmatch(r"\d+[kmgKMG]?", str(java_heap)):
            raise ValueError(f"java_heap={java_heap!r} is not a JVM heap size like 512m or 1g")
        self._engine = _start_engine(str(java_heap))
        try:
            self.task_names = self._check_tasks(tasks)
            self._check_simplifications(simplifications)
        except BaseException:
            self.close()
            raise
        self.split = split
        self.simplifications = simplifications
        self.admissible = bool(admissible)
        self._loaded: tuple[str, int] | None = None
        self._gold: list[str] | None = None  # the loaded variation's gold path, once generated
        self._gold_loaded = False
        self._task_name = ""
        self._variation = 0
        self._task = ""
        self._score = 0.0
        self._won = False
        self._done = False
        self._question = ""  # the engine's pending "which one did you mean?", if any
        self._admissible: list[str] | None = None
        self._anchor: tuple[str, str] = ("", "")
        # The commands the engine received this episode, each with whether it was understood (a
        # command its parser could not read changed nothing).
        self._history: list[tuple[str, bool]] = []
        self._start_look = ""

    # -- construction ---------------------------------------------------------------------------
    def _check_tasks(self, tasks: str | Sequence[str] | None) -> list[str]:
        from scienceworld.utils import infer_task

        known = list(self._engine.get_task_names())
        if tasks is None:
            return known
        names = [infer_task(t) for t in ([tasks] if isinstance(tasks, str) else list(tasks))]
        unknown = [t for t in names if t not in known]
        if unknown or not names:
            raise ValueError(f"unknown ScienceWorld tasks {unknown}; valid: {', '.join(known)}")
        return names

    def _check_simplifications(self, simplifications: str) -> None:
        valid = ["easy", *self._engine.get_possible_simplifications()]
        unknown = [s for s in simplifications.split(",") if s and s not in valid]
        if unknown:
            raise ValueError(f"unknown ScienceWorld simplifications {unknown}; valid: {', '.join(valid)}")

    def variations(self, task: str) -> list[int]:
        """The engine's variation numbers of ``task`` in this env's split (cached per process)."""
        key = (task, self.split)
        if key not in _VARIATIONS:
            self._engine.load(task, 0, "", generateGoldPath=False)
            self._loaded = None
            getter = {
                "train": self._engine.get_variations_train,
                "dev": self._engine.get_variations_dev,
                "test": self._engine.get_variations_test,
            }[self.split]
            _VARIATIONS[key] = [int(v) for v in getter()]
        return _VARIATIONS[key]

    def _choose(self, seed: int, options: dict[str, Any] | None) -> tuple[str, int]:
        pinned = options or {}
        if "task" in pinned or "variation" in pinned:
            task = self._check_tasks([pinned.get("task", self.task_names[0])])[0]
            return task, int(pinned.get("variation", self.variations(task)[0]))
        task = self.task_names[seed % len(self.task_names)]
        variations = self.variations(task)
        return task, variations[(seed // len(self.task_names)) % len(variations)]

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        task, variation = self._choose(int(seed), options)
        self._start(task, variation, gold=False)
        self._task_name, self._variation = task, variation
        description = str(self._engine.server.freeActionTaskDesc()).strip()
        self._task = description.removeprefix(_TASK_PREFIX).strip()
        self._score, self._won, self._done, self._question = 0.0, False, False, ""
        self._history = []
        self._observe()
        self._last_observation = f"{description}\n\n{self._start_look}"
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if not self._task:
            raise RuntimeError("call reset() before step()")
        if self._done:
            return self._invalid("The task is over. Call reset() to play again.", terminated=True)
        if not isinstance(action, str) or len(action) > MAX_ACTION_LENGTH:
            return self._invalid(
                f"Invalid action {describe_action(action)}: expected a command of at most "
                f"{MAX_ACTION_LENGTH} characters."
            )
        command = " ".join(action.split())
        if command.lower() in REFUSED_ACTIONS:
            return self._invalid(f"'{command}' is not allowed here: an episode restarts with reset().")
        feedback = str(self._engine.server.step(command)).rstrip()
        self._history.append((command, not feedback.startswith(NOT_UNDERSTOOD)))
        if feedback.startswith(NOT_UNDERSTOOD):
            return self._invalid(f"{feedback} ({describe_action(command)})")
        previous = self._score
        self._question = feedback if feedback.startswith(AMBIGUOUS) else ""
        self._observe()
        self._last_observation = feedback
        reward = self._score - previous
        valid = not feedback.startswith(NOT_AN_OPTION)
        return feedback, reward, self._done, False, self._info(action_valid=valid)

    def expert_action(self) -> str | None:
        """The next command of the engine's gold action sequence, while the episode follows it.

        Commands the engine could not read are skipped when matching (they changed nothing), unless
        the gold path has them too (a few mendelian-genetics paths do).
        """
        if not self._task or self._done:
            return None
        if not self._gold_loaded:
            self._generate_gold()
        gold, next_index = self._gold or [], 0
        for command, understood in self._history:
            if next_index < len(gold) and command == gold[next_index]:
                next_index += 1
            elif understood:
                return None  # the episode left the gold path
        return gold[next_index] if next_index < len(gold) else None

    def close(self) -> None:
        """Stops the engine's JVM."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()  # asks the JVM to exit (a newline on its stdin)
            with contextlib.suppress(Exception):
                java = engine._gateway.java_process
                java.wait(timeout=5)
                java.stdin.close()
            with contextlib.suppress(Exception):
                engine._obj_tree_tempdir.cleanup()

    # -- engine ---------------------------------------------------------------------------------
    def _start(self, task: str, variation: int, gold: bool) -> None:
        """Puts the engine at the start of ``(task, variation)``: a reload only for another one."""
        if self._loaded != (task, variation) or (gold and not self._gold_loaded):
            self._engine.load(task, variation, self.simplifications, generateGoldPath=gold)
            self._loaded, self._gold_loaded, self._gold = (task, variation), gold, None
        self._engine.server.reset()
        # As the engine's own reset: a first (free) look, which also refreshes score and completion
        # (they read as the gold path left them until the next step).
        self._start_look = str(self._engine.server.step("look around")).rstrip()
        if self._gold_loaded and self._gold is None:
            self._gold = list(self._engine.get_gold_action_sequence())

    def _generate_gold(self) -> None:
        """Reloads the variation with its gold path and replays this episode's commands (the
        engine is deterministic, so the state is the same again)."""
        anchor = self._anchor
        self._start(self._task_name, self._variation, gold=True)
        for command, understood in self._history:
            if understood:
                self._engine.server.step(command)
        self._observe()
        if self._anchor != anchor:
            raise RuntimeError(
                f"ScienceWorld {self._task_name} variation {self._variation}: replaying the episode to "
                "generate the gold path did not reach the same state"
            )

    def _observe(self) -> None:
        """Reads score, completion, admissible actions and the anchor from the engine."""
        server = self._engine.server
        self._score = float(server.getScore())
        completed = bool(server.getCompleted())
        self._won = completed and self._score >= 1.0
        self._done = completed or self._score < 0
        if self._question:
            self._admissible = _OPTION.findall(self._question)
        elif self.admissible:
            refused = set(REFUSED_ACTIONS)
            self._admissible = [str(a) for a in server.getValidActionObjectCombinations() if a not in refused]
        else:
            self._admissible = None
        tree = json.dumps(_rounded_temperatures(self._engine.getObjectTree()), sort_keys=True)
        self._anchor = (hashlib.sha1(tree.encode()).hexdigest(), self._question)

    def _invalid(self, feedback: str, terminated: bool = False) -> tuple[str, float, bool, bool, dict]:
        self._last_observation = feedback
        return feedback, 0.0, terminated, False, self._info(action_valid=False)

    def _info(self, action_valid: bool) -> dict[str, Any]:
        return make_info(
            task=self._task,
            admissible_actions=self._admissible,
            anchor=self._anchor,
            won=self._won,
            action_valid=action_valid,
            task_type=self._task_name,
            variation=self._variation,
            score=int(round(100 * self._score)),
        )


def task_names() -> list[str]:
    """The engine's 30 task names (from the package's task list; no JVM is started)."""
    from scienceworld.constants import ID2TASK
    from scienceworld.utils import infer_task

    return [infer_task(name) for name in ID2TASK.values()]

"""Any OpenEnv environment server as a lamina text environment, over OpenEnv's WebSocket protocol.

OpenEnv (``openenv-core``) serves an environment over HTTP: ``POST /reset`` and ``POST /step``
build a fresh environment per request (one-shot), so multi-step episodes use its persistent session
endpoint ``/ws``, as OpenEnv's own ``EnvClient`` does. One lamina environment holds one WebSocket
session (one environment instance on the server). Messages (openenv-core 0.3.0):

    -> {"type": "reset", "data": {"seed": 3, ...reset arguments}}
    -> {"type": "step", "data": {"<action field>": "<text>"}}
    -> {"type": "state"}            -> {"type": "close"}
    <- {"type": "observation", "data": {"observation": {...fields}, "reward": float | null, "done": bool}}
    <- {"type": "state", "data": {"episode_id": ..., "step_count": ..., ...}}
    <- {"type": "error", "data": {"message": str, "code": "EXECUTION_ERROR" | "VALIDATION_ERROR" | ...}}

The action's text field is found in ``GET /schema`` unless named. Only ``websockets`` is needed on
the client side; no OpenEnv code runs here.

    lamina train env=openenv env.kwargs.url=http://127.0.0.1:8000 env.kwargs.admissible_field=legal_actions

Every request has a time limit (``request_timeout_s``): a server that dies or stalls makes
``reset``/``step`` raise (``ConnectionError``/``TimeoutError``) within it, never hang, and the
runner then cuts the episode and replaces the environment (``info["env_restarted"]``, counted in
``env_worker_restarts``); the replacement opens a new session at its next reset.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Hashable, Mapping
from typing import Any

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info

MAX_ACTION_LENGTH = 10_000
# Error codes of a step reply that mean the action, not the session, was at fault.
ACTION_ERRORS = ("EXECUTION_ERROR", "VALIDATION_ERROR")
ANCHOR_SOURCES = ("observation", "state")
# Fields of the server's state that count episodes or steps, not the state itself.
STATE_BOOKKEEPING = ("episode_id", "step_count")
_MAX_ECHO = 200


class OpenEnvError(RuntimeError):
    """The server refused a request (capacity reached, session error) or answered out of protocol."""


def websocket_url(url: str) -> str:
    """``http://host:8000[/prefix]`` (or ``ws://``) -> ``ws://host:8000[/prefix]/ws``.

    Raises:
        ValueError: for any other scheme or a URL without a host.
    """
    parts = urllib.parse.urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"OpenEnv url={url!r} must look like http://host:port (or https, ws, wss)")
    path = parts.path.rstrip("/")
    path = path if path.endswith("/ws") else f"{path}/ws"
    return urllib.parse.urlunsplit((schemes[parts.scheme], parts.netloc, path, "", ""))


def http_url(url: str, endpoint: str) -> str:
    """The server's plain HTTP endpoint (``/schema``, ``/health``) beside its WebSocket one."""
    parts = urllib.parse.urlsplit(websocket_url(url))
    scheme = "https" if parts.scheme == "wss" else "http"
    base = parts.path.removesuffix("/ws")
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"{base}/{endpoint.lstrip('/')}", "", ""))


def text_field(schema: Mapping[str, Any]) -> str:
    """The one string field of an action's JSON schema (``metadata`` aside).

    Raises:
        ValueError: when there is none or several, naming them (then set ``action_field``).
    """
    properties = {k: v for k, v in (schema.get("properties") or {}).items() if k != "metadata"}
    strings = [
        name for name, spec in properties.items() if isinstance(spec, dict) and spec.get("type") == "string"
    ]
    if len(strings) != 1:
        raise ValueError(
            f"cannot tell which action field takes the text: string fields {strings} among "
            f"{sorted(properties)}; set env.kwargs.action_field"
        )
    return strings[0]


def _field(payload: Mapping[str, Any], path: str) -> Any:
    """``payload["a"]["b"]`` for ``path="a.b"``; None where missing."""
    value: Any = payload
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class OpenEnvEnv(TextEnv):
    """An environment served by an OpenEnv server, played over one WebSocket session.

    ## Observation
    The observation's text: ``observation_field`` when set, else its only string field, else
    every field as ``name: value`` lines (JSON values), in the server's order. After an invalid
    action: why, with the server's message.

    ## Action
    Text, sent as the action's ``action_field`` (default: the one string field of the action
    schema at ``GET /schema``). Invalid (``info["action_valid"]`` False, the episode goes on, nothing
    changes here): text over 10,000 characters (never sent), a step the server answers with an
    ``EXECUTION_ERROR`` or ``VALIDATION_ERROR`` (its ``step`` raised, or the action failed its
    schema), or an observation whose ``valid_field`` is false.

    ## Rewards
    The server's reward (None counts as 0).

    ## Episode End
    Terminated when the server says ``done``. Truncation: the registration's ``max_episode_steps``
    (50) or ``env.max_steps``. Steps after the end are invalid and change nothing.

    ## Info
    ``task``: ``task`` when given, else the ``task_field`` of the reset observation, else the reset
    observation's text. ``admissible_actions``: the observation's ``admissible_field`` (as strings)
    or None (open). ``anchor``: the observation (canonical JSON; ``anchor="observation"``) or the
    server's ``state`` without ``episode_id``/``step_count`` (``anchor="state"``: one more request per
    step). ``won``: the observation's ``won_field`` when set, else whether the episode ended with a
    reward of at least ``won_reward``. ``reward_raw``: the server's reward as sent (None allowed).

    ## Arguments
    - ``url``: the server, ``http://host:port`` (``https``, ``ws``, ``wss`` too); required.
    - ``action_field``, ``observation_field``, ``task``, ``task_field``, ``admissible_field``,
      ``won_field``, ``valid_field``: as above; a field may be a dotted path (``info.won``).
    - ``won_reward``: the final reward that counts as a win without ``won_field`` (default 1.0).
    - ``anchor``: ``"observation"`` or ``"state"``.
    - ``reset_kwargs``: extra arguments of the server's ``reset`` (e.g. a difficulty); a reset's
      ``options`` are sent as such too.
    - ``connect_timeout_s``: how long a reset keeps trying to open the session (a server restarting).
    - ``request_timeout_s``: the most any reply may take.

    ``reset(seed=s)`` sends ``seed=s`` (the server's environment decides what it does with it:
    OpenEnv passes it on only when its ``reset`` takes a ``seed``); without one, a seed drawn from
    ``self.np_random``. The server must allow as many concurrent sessions
    (``max_concurrent_envs``) as lamina runs environments (``rollout.batch_size x group_size``).
    There is no expert.
    """

    def __init__(
        self,
        url: str | None = None,
        action_field: str | None = None,
        observation_field: str | None = None,
        task: str | None = None,
        task_field: str | None = None,
        admissible_field: str | None = None,
        won_field: str | None = None,
        won_reward: float = 1.0,
        valid_field: str | None = None,
        anchor: str = "observation",
        reset_kwargs: Mapping[str, Any] | None = None,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if url is None:
            raise ValueError("OpenEnv needs env.kwargs.url=<the server, e.g. http://127.0.0.1:8000>")
        if anchor not in ANCHOR_SOURCES:
            raise ValueError(f"anchor={anchor!r} is not known; valid: {', '.join(ANCHOR_SOURCES)}")
        if connect_timeout_s <= 0 or request_timeout_s <= 0:
            raise ValueError(f"timeouts must be > 0, got {connect_timeout_s=}, {request_timeout_s=}")
        self.url = url
        self.ws_url = websocket_url(url)  # checks the URL; no connection before the first reset
        self.action_field = action_field
        self.observation_field = observation_field
        self.task_text = task
        self.task_field = task_field
        self.admissible_field = admissible_field
        self.won_field = won_field
        self.won_reward = float(won_reward)
        self.valid_field = valid_field
        self.anchor_source = anchor
        self.reset_kwargs = dict(reset_kwargs or {})
        self.connect_timeout_s = float(connect_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self._connection: Any = None
        self._exit_stack = contextlib.ExitStack()
        self._task = ""
        self._observation: dict[str, Any] = {}
        self._admissible: list[str] | None = None
        self._anchor: Hashable = ""
        self._won = False
        self._done = False
        self._reset_done = False
        self._reward_raw: float | None = None

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        if self.action_field is None:
            self.action_field = text_field(self._get_json("schema")["action"])
        self._ensure_connected()
        data = self._request(
            {"type": "reset", "data": {**self.reset_kwargs, **(options or {}), "seed": seed}}
        )
        if data.get("type") == "error":  # e.g. CAPACITY_REACHED: more sessions than the server allows
            self._disconnect()
            raise OpenEnvError(f"OpenEnv server {self.url} refused the reset: {self._error_text(data)}")
        self._take(data)
        text = self._text(self._observation)
        field_task = _field(self._observation, self.task_field) if self.task_field else None
        self._task = self.task_text or (str(field_task) if field_task else "") or text
        self._task = self._task or f"Play the OpenEnv environment at {self.url}."
        self._reset_done = True
        self._last_observation = text
        return text, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if not self._reset_done:
            raise RuntimeError("call reset() before step()")
        if self._done:
            return self._invalid("The episode is over; call reset() to play again.", terminated=True)
        if not isinstance(action, str) or len(action) > MAX_ACTION_LENGTH:
            return self._invalid(
                f"Invalid action {describe_action(action)}: expected text of at most "
                f"{MAX_ACTION_LENGTH} characters."
            )
        assert self.action_field is not None
        data = self._request({"type": "step", "data": {self.action_field: action}})
        if data.get("type") == "error":
            code = str((data.get("data") or {}).get("code", ""))
            if code not in ACTION_ERRORS:
                self._disconnect()
                raise OpenEnvError(f"OpenEnv server {self.url} failed the step: {self._error_text(data)}")
            return self._invalid(f"Invalid action {describe_action(action)}: {self._error_text(data)}")
        payload = data.get("data") or {}
        observation = payload.get("observation") or {}
        if self.valid_field and _field(observation, self.valid_field) is False:
            return self._invalid(f"Invalid action {describe_action(action)}: {self._text(observation)}")
        reward = self._take(data)
        self._last_observation = self._text(self._observation)
        return self._last_observation, reward, self._done, False, self._info(action_valid=True)

    def close(self) -> None:
        """Ends the session (a ``close`` message, best effort) and the connection."""
        self._disconnect(polite=True)

    # -- protocol -------------------------------------------------------------------------------
    def _ensure_connected(self) -> None:
        """Opens the session, retrying refused connections until ``connect_timeout_s`` has passed."""
        if self._connection is not None:
            return
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                self._connection = self._exit_stack.enter_context(
                    connect(
                        self.ws_url,
                        open_timeout=self.connect_timeout_s,
                        close_timeout=1.0,
                        max_size=None,
                    )
                )
                return
            except (OSError, WebSocketException) as error:  # refused, timed out, no /ws route there
                if time.monotonic() >= deadline or not isinstance(error, ConnectionRefusedError):
                    raise ConnectionError(
                        f"cannot reach the OpenEnv server at {self.ws_url}: {type(error).__name__}: {error}"
                    ) from error
                time.sleep(0.2)

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends one message and returns its reply within ``request_timeout_s``.

        Raises:
            TimeoutError, ConnectionError: the server stalled or went away; the connection is dropped
                (a late reply must never be read as the answer to a later request).
        """
        from websockets.exceptions import ConnectionClosed

        try:
            self._connection.send(json.dumps(message))
            raw = self._connection.recv(timeout=self.request_timeout_s)
        except TimeoutError:
            self._disconnect()
            raise TimeoutError(
                f"OpenEnv server {self.url} did not answer a {message['type']} "
                f"within {self.request_timeout_s:g} s"
            ) from None
        except (ConnectionClosed, OSError) as error:
            self._disconnect()
            raise ConnectionError(
                f"OpenEnv server {self.url} closed the session during a {message['type']}: {error}"
            ) from error
        try:
            reply = json.loads(raw)
        except (TypeError, ValueError):
            reply = None
        if not isinstance(reply, dict):
            self._disconnect()
            raise OpenEnvError(
                f"OpenEnv server {self.url} answered {describe_action(str(raw))}, not a JSON object"
            )
        return reply

    def _disconnect(self, polite: bool = False) -> None:
        if self._connection is not None and polite:
            with contextlib.suppress(Exception):
                self._connection.send(json.dumps({"type": "close"}))
        with contextlib.suppress(Exception):
            self._exit_stack.close()
        self._exit_stack = contextlib.ExitStack()
        self._connection = None
        self._reset_done = False  # a new session needs a reset before any step

    def _get_json(self, endpoint: str) -> dict[str, Any]:
        """``GET`` a JSON endpoint, retrying refused connections until ``connect_timeout_s`` has passed."""
        url = http_url(self.url, endpoint)
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                with urllib.request.urlopen(url, timeout=self.request_timeout_s) as response:
                    return json.loads(response.read())
            except (OSError, ValueError) as error:
                refused = isinstance(getattr(error, "reason", error), ConnectionRefusedError)
                if time.monotonic() >= deadline or not refused:
                    raise ConnectionError(
                        f"cannot reach the OpenEnv server at {url}: {type(error).__name__}: {error}"
                    ) from error
                time.sleep(0.2)

    @staticmethod
    def _error_text(reply: Mapping[str, Any]) -> str:
        data = reply.get("data") or {}
        message = " ".join(str(data.get("message", "")).split())
        details = data.get("errors")
        if details:  # pydantic's errors for a VALIDATION_ERROR
            located = [e for e in details if isinstance(e, Mapping)]
            message += ": " + "; ".join(
                f"{'.'.join(str(part) for part in e.get('loc') or ())}: {e.get('msg', '')}" for e in located
            )
        message = message if len(message) <= _MAX_ECHO else message[: _MAX_ECHO - 3] + "..."
        return f"{message} ({data.get('code', 'no code')})"

    # -- helpers --------------------------------------------------------------------------------
    def _take(self, reply: Mapping[str, Any]) -> float:
        """Adopts an observation reply; returns its reward."""
        payload = reply.get("data") or {}
        if reply.get("type") != "observation" or not isinstance(payload.get("observation"), Mapping):
            self._disconnect()
            raise OpenEnvError(
                f"OpenEnv server {self.url} answered out of protocol: {describe_action(str(reply))}"
            )
        self._observation = dict(payload["observation"])
        raw_reward = payload.get("reward")
        self._reward_raw = raw_reward
        reward = float(raw_reward) if isinstance(raw_reward, int | float) else 0.0
        self._done = bool(payload.get("done", False))
        if self.won_field:
            self._won = bool(_field(self._observation, self.won_field))
        else:
            self._won = self._done and reward >= self.won_reward
        if self.admissible_field:
            listed = _field(self._observation, self.admissible_field)
            self._admissible = [str(a) for a in listed] if isinstance(listed, list) else []
        else:
            self._admissible = None
        self._anchor = (
            self._state_anchor() if self.anchor_source == "state" else _canonical(self._observation)
        )
        return reward

    def _state_anchor(self) -> str:
        reply = self._request({"type": "state"})
        if reply.get("type") != "state":
            self._disconnect()
            raise OpenEnvError(
                f"OpenEnv server {self.url} did not send its state: {describe_action(str(reply))}"
            )
        state = {k: v for k, v in (reply.get("data") or {}).items() if k not in STATE_BOOKKEEPING}
        return _canonical(state)

    def _text(self, observation: Mapping[str, Any]) -> str:
        if self.observation_field:
            value = _field(observation, self.observation_field)
            return value if isinstance(value, str) else _canonical(value)
        strings = [v for v in observation.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
        return "\n".join(f"{k}: {v if isinstance(v, str) else _canonical(v)}" for k, v in observation.items())

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
            reward_raw=self._reward_raw,
        )

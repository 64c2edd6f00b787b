"""Model output of any content and length reaches every registered environment only through the
parser (``lamina.agents.parsing.parse_action``), and nothing raises.

The rollout sends ``parse_action(text, info["admissible_actions"]).action`` to the environment
whatever the model wrote; this property test does the same with hostile text (empty, 100 kB,
control characters, right-to-left marks, nested and unclosed tags, admissible actions wrapped in
noise) over every environment the conformance suite covers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_conformance import ENV_IDS, EnvCache, assert_contract_info, is_single_turn

from lamina.agents.parsing import MAX_ACTION_CHARS, parse_action

CONTROL = "".join(chr(c) for c in range(32)) + "\x7f\x85"
BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
FIXED = [
    "",
    "x" * 100_000,
    "<action>" + "y" * 100_000 + "</action>",
    "<action>\u202eup\u202c</action>",
    "<action>\x00\x1b[31mgo north\x07</action>",
    "<action><action>look</action></action><think>",
    "<think><action>up</action></think><action>",
    "<ACTION>click[buy now]</ACTION><action></action>",
    "<action>search[" + "\u05d0" * 500 + "]</action>",
    "<action>search[\n\t]</action>",
    "\ufeff<action>\u200bdown\u200b</action>",
]


def _wrapped(admissible: list[str] | None) -> st.SearchStrategy[str]:
    """An admissible action (or junk) inside tags, with hostile noise around and inside it."""
    noise = st.text(alphabet=st.sampled_from(CONTROL + BIDI + "<>/[]ﾟ😀"), max_size=8)
    core = st.sampled_from(admissible) if admissible else st.text(max_size=20)
    return st.builds(lambda a, b, c, d: f"{a}<action>{b}{c}{d}</action>{a}", noise, noise, core, noise)


def model_text(admissible: list[str] | None) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(FIXED),
        st.text(max_size=200),
        st.text(alphabet=st.sampled_from(CONTROL + BIDI + "<action></action>think"), max_size=200),
        _wrapped(admissible),
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvCache]:
    envs = EnvCache(tmp_path_factory.mktemp("model_output"))
    yield envs
    envs.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_any_model_output_goes_through_the_parser_and_never_raises(cache: EnvCache, env_id: str) -> None:
    env, seed = cache.get(env_id)
    raw = env.unwrapped
    state = {"info": raw.reset(seed=seed)[1]}

    def feed(text: str) -> None:
        info = state["info"]
        parsed = parse_action(text, info["admissible_actions"])
        assert isinstance(parsed.action, str) and len(parsed.action) <= MAX_ACTION_CHARS
        if parsed.valid and info["admissible_actions"] is not None:
            lowered = {a.lower() for a in info["admissible_actions"]}
            assert parsed.action.lower() in lowered or parsed.action.startswith("search[")
        obs, reward, terminated, truncated, info = raw.step(parsed.action)
        assert isinstance(obs, str)
        assert isinstance(reward, numbers.Real) and not isinstance(reward, bool) and math.isfinite(reward)
        assert_contract_info(info)
        if not parsed.valid and not is_single_turn(raw):
            assert info["action_valid"] is False or parsed.action != ""
        if terminated or truncated or is_single_turn(raw):
            info = raw.reset(seed=seed)[1]
        state["info"] = info

    for text in FIXED:  # every hostile text, not only those the random draw happens to pick
        feed(text)

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        feed(data.draw(model_text(state["info"]["admissible_actions"])))

    check()

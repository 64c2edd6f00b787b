import json
import threading
from fractions import Fraction

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.envs.reasoning import (
    ArithmeticEnv,
    CountdownEnv,
    InvalidExpression,
    QAEnv,
    evaluate_expression,
)
from lamina.envs.registry import register

COUNTDOWN_ID = register("Countdown-v0", "lamina.envs.reasoning:CountdownEnv", short_name="countdown")
ARITHMETIC_ID = register("Arithmetic-v0", "lamina.envs.reasoning:ArithmeticEnv", short_name="arithmetic")
QA_ID = register("QA-v0", "lamina.envs.reasoning:QAEnv", short_name="qa")
NESTED = "(" * 5000 + "1" + ")" * 5000
JUNK = ["", "   ", "<action><think>", "x" * 100_000, "ħ€ł☃", NESTED, "\x00", "import os"]
QA_RECORDS = [
    {"question": "What is 1/2 as a decimal?", "answer": "0.5"},
    {"question": "What is half of one?", "answer": "\\frac{1}{2}"},
    {"question": "Capital of France?", "answer": "Paris"},
    {"question": "2 + 2?", "answer": 4},
    {"question": "Expand (x+1)^2.", "answer": "x^2 + 2x + 1"},
]


@pytest.fixture
def qa_path(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in QA_RECORDS) + "\n\n", encoding="utf-8")
    return path


def answer(env, seed: int, action: str) -> tuple[str, float, dict]:
    env.reset(seed=seed)
    obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated  # single-turn: one attempt, whatever it is
    return obs, reward, info


# ------------------------------------------------------------------ shared contract


@pytest.fixture(params=["countdown", "arithmetic", "qa"])
def env(request, qa_path):
    return {"countdown": CountdownEnv, "arithmetic": ArithmeticEnv, "qa": lambda: QAEnv(path=qa_path)}[
        request.param
    ]()


def test_check_env(env):
    check_env(env)


def test_reset_is_deterministic_and_expert_is_rewarded(env):
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert (obs, info) == env.reset(seed=seed)
        assert info["admissible_actions"] is None and info["anchor"] == info["task"] == obs
        obs, reward, terminated, _, info = env.step(env.expert_action())
        assert reward == 1.0 and terminated and info["won"] and info["action_valid"], obs
        assert env.expert_action() is None


@pytest.mark.parametrize("junk", JUNK)
def test_junk_answers_are_invalid(env, junk):
    obs, reward, info = answer(env, 0, junk)
    assert reward == 0.0 and not info["action_valid"] and not info["won"]
    assert "Invalid answer" in obs and len(obs) < 500


def test_step_after_the_answer_ends_again_without_reward(env):
    env.reset(seed=0)
    env.step(env.expert_action())
    obs, reward, terminated, _, info = env.step("42")
    assert terminated and reward == 0.0 and not info["action_valid"] and "reset" in obs


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    for env in (CountdownEnv(), ArithmeticEnv()):
        obs, reward, _ = answer(env, 1, text)
        assert isinstance(obs, str) and reward in (0.0, 1.0)


def test_registered_ids_make_one_step_episodes(qa_path):
    for env_id, kwargs in [(COUNTDOWN_ID, {}), (ARITHMETIC_ID, {}), (QA_ID, {"path": str(qa_path)})]:
        env = gym.make(env_id, **kwargs)
        env.reset(seed=0)
        assert env.step("1")[2]


# ------------------------------------------------------------------ Countdown


def test_safe_evaluator():
    assert evaluate_expression("(3 + 5) * 3 - 6 / 4") == (Fraction(45, 2), {3: 2, 5: 1, 6: 1, 4: 1})
    assert evaluate_expression("-(2 - 7) × 2")[0] == 10
    for bad in ["2 ** 10", "__import__('os')", "1.5 + 1", "True + 1", "1 / (2 - 2)", "x", "", "1 +"]:
        with pytest.raises(InvalidExpression):
            evaluate_expression(bad)


def test_countdown_tasks_are_solvable_and_graded():
    env = CountdownEnv(num_numbers=4)
    for seed in range(30):
        env.reset(seed=seed)
        value, literals = evaluate_expression(env.expert_action())
        assert value == env.target and 1 <= env.target <= 100
        assert sorted(literals.elements()) == sorted(env.numbers) and len(env.numbers) == 4


def test_countdown_rewards_a_known_expression():
    env = CountdownEnv()
    env.reset(seed=0)
    a, b, c, d = env.numbers
    env.target = a + b * c - d  # a hand-made target with a known expression
    _, reward, _, _, info = env.step(f"{a} + {b} * {c} - {d} = {env.target}")
    assert reward == 1.0 and info["won"]


def test_countdown_wrong_or_reused_numbers_are_valid_but_unrewarded():
    env = CountdownEnv()
    env.reset(seed=0)
    a, b = env.numbers[:2]
    obs, reward, _, _, info = env.step(f"{a} + {a} + {a} + {a} + {a}")
    assert info["action_valid"] and reward == 0.0 and "more often" in obs
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(f"{a} + {b}")
    assert info["action_valid"] and (reward == 1.0) == (a + b == env.target)


def test_countdown_division_by_zero_is_invalid():
    env = CountdownEnv()
    env.reset(seed=0)
    a, b = env.numbers[:2]
    obs, _, _, _, info = env.step(f"{a} / ({b} - {b})")
    assert not info["action_valid"] and "zero" in obs


def test_countdown_difficulty_option():
    env = CountdownEnv(num_numbers=6)
    obs, _ = env.reset(seed=3)
    assert len(env.numbers) == 6 and str(env.target) in obs


# ------------------------------------------------------------------ Arithmetic


def test_arithmetic_answers():
    env = ArithmeticEnv(num_operands=4, max_value=20)
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert env.expression in obs and len(env.expression.split()) == 7
        assert evaluate_expression(env.expression)[0] == env.value
    env.reset(seed=0)
    value = env.value
    assert answer(env, 0, f" {value}. ")[1] == 1.0
    _, reward, info = answer(env, 0, str(value + 1))
    assert reward == 0.0 and info["action_valid"]
    assert not answer(env, 0, f"{value} apples")[2]["action_valid"]
    assert not answer(env, 0, "1" * 5000)[2]["action_valid"]


def test_arithmetic_thousands_separator():
    env = ArithmeticEnv(num_operands=2, max_value=1000)
    for seed in range(50):
        env.reset(seed=seed)
        if abs(env.value) >= 1000:
            assert answer(env, seed, f"{env.value:,}")[1] == 1.0
            return
    pytest.fail("no value >= 1000 in 50 seeds")


# ------------------------------------------------------------------ QA


def test_qa_picks_line_seed_mod_n(qa_path):
    env = QAEnv(path=qa_path)
    assert env.reset(seed=2)[0] == "Capital of France?"
    assert env.reset(seed=2 + len(QA_RECORDS))[0] == "Capital of France?"
    assert {env.reset()[0] for _ in range(30)} <= {r["question"] for r in QA_RECORDS}


@pytest.mark.parametrize(
    ("seed", "text", "reward"),
    [
        (0, "\\frac{1}{2}", 1.0),
        (0, "$\\frac{1}{2}$", 1.0),
        (1, "0.5", 1.0),
        (1, "The answer is \\boxed{\\frac{2}{4}}", 1.0),
        (1, "0.25", 0.0),
        (2, "  paris. ", 1.0),
        (2, "London", 0.0),
        (3, "4", 1.0),
        (3, "4.0", 1.0),
        (3, "5", 0.0),
        (4, "(x+1)^2", 1.0),
        (4, "x^2 + 1", 0.0),
    ],
)
def test_qa_math_verify(qa_path, seed, text, reward):
    obs, got, info = answer(QAEnv(path=qa_path), seed, text)
    assert got == reward and info["action_valid"] and info["won"] == (reward == 1.0), obs


def test_qa_unreadable_answer_is_invalid(qa_path):
    obs, reward, info = answer(QAEnv(path=qa_path), 3, "four")
    assert reward == 0.0 and not info["action_valid"] and "no mathematical answer" in obs


def test_qa_works_off_the_main_thread(qa_path):
    results = []
    thread = threading.Thread(target=lambda: results.append(answer(QAEnv(path=qa_path), 1, "0.5")[1]))
    thread.start()
    thread.join()
    assert results == [1.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "no records"),
        ('{"question": "q"}\n', "qa.jsonl:1"),
        ('{"question": "q", "answer": "1"}\nnot json\n', "qa.jsonl:2: not valid JSON"),
        ('["q", "a"]\n', "expected one JSON object"),
    ],
)
def test_qa_bad_files_raise_value_error_naming_the_path(tmp_path, content, message):
    path = tmp_path / "qa.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        QAEnv(path=path)
    assert str(path) in str(error.value)


def test_qa_needs_a_path():
    with pytest.raises(ValueError, match="path="):
        QAEnv()

"""Single-turn reasoning tasks: Countdown, integer arithmetic, and a user's question/answer file.

Each episode is one question and one answer: ``reset`` poses the task, the first ``step`` grades
the answer and ends the episode, whether the answer was right, wrong or unreadable (single-turn
episodes end after one attempt). ``expert_action()`` returns a reference answer.

    import gymnasium as gym, lamina.envs
    env = gym.make("lamina/Countdown-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("(3 + 5) * 3")
"""

from __future__ import annotations

import ast
import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info

MAX_ANSWER_LENGTH = 10_000
MAX_EXPRESSION_LENGTH = 1_000
_MAX_GENERATION_ATTEMPTS = 10_000
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_SYMBOL_ALIASES = {"×": "*", "÷": "/", "−": "-", "\\times": "*", "\\cdot": "*", "\\div": "/"}


@dataclass(frozen=True)
class Grade:
    """The verdict on one answer: ``valid`` False means it could not be read at all."""

    valid: bool
    correct: bool
    feedback: str


class InvalidExpression(ValueError):
    """An arithmetic expression that cannot be parsed or evaluated; the message says why."""


def evaluate_expression(text: str) -> tuple[Fraction, Counter[int]]:
    """Exactly evaluates integers with ``+ - * /``, unary minus and parentheses, without ``eval``.

    Returns:
        The value as a Fraction and how many times each integer literal appears.

    Raises:
        InvalidExpression: anything else (names, calls, powers, floats, division by zero, ...).
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise InvalidExpression(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    for alias, symbol in _SYMBOL_ALIASES.items():
        text = text.replace(alias, symbol)
    if not text.strip():
        raise InvalidExpression("the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise InvalidExpression(f"it is not an arithmetic expression ({type(error).__name__})") from None
    literals: Counter[int] = Counter()

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals[node.value] += 1
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise InvalidExpression("it divides by zero")
            return left / right
        raise InvalidExpression("only integers, + - * /, and parentheses are allowed")

    try:
        return walk(tree.body), literals
    except RecursionError:
        raise InvalidExpression("the expression is nested too deeply") from None


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class SingleTurnEnv(TextEnv):
    """One question, one answer. Subclasses implement ``_new_task`` and ``_grade``."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self._question = ""
        self._reference = ""
        self._done = False
        self._won = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self._question, self._reference = self._new_task(seed)
        self._done = False
        self._won = False
        self._last_observation = self._question
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._done:
            grade = Grade(False, False, "The episode is over (one answer per task); call reset().")
            reward = 0.0
        else:
            grade = self._safe_grade(action)
            self._done = True
            self._won = grade.correct
            reward = 1.0 if grade.correct else 0.0
        self._last_observation = grade.feedback
        return self._last_observation, reward, True, False, self._info(action_valid=grade.valid)

    def expert_action(self) -> str | None:
        """A reference answer to the current task (None once the episode is over)."""
        return None if self._done else self._reference

    def _safe_grade(self, action: object) -> Grade:
        if not isinstance(action, str):
            return Grade(False, False, f"Invalid answer {describe_action(action)}: expected a string.")
        if len(action) > MAX_ANSWER_LENGTH:
            return Grade(False, False, f"Invalid answer: longer than {MAX_ANSWER_LENGTH} characters.")
        return self._grade(action)

    def _info(self, action_valid: bool) -> dict[str, Any]:
        return make_info(
            task=self._question,
            admissible_actions=None,
            anchor=self._question,
            won=self._won,
            action_valid=action_valid,
        )

    def _new_task(self, seed: int | None) -> tuple[str, str]:
        """(question shown to the agent, reference answer), drawn with ``self.np_random``."""
        raise NotImplementedError

    def _grade(self, answer: str) -> Grade:
        raise NotImplementedError


class CountdownEnv(SingleTurnEnv):
    """Combine the given numbers with + - * / to reach the target.

    ## Observation
    The task: the numbers and the target. After the step, feedback on the answer.

    ## Action
    An arithmetic expression over integers with ``+ - * /`` and parentheses (``×``, ``÷``, ``−``,
    ``\\times``, ``\\cdot``, ``\\div`` are read as the ASCII operators); anything after a first ``=``
    is ignored, so ``(3 + 5) * 3 = 24`` is read as ``(3 + 5) * 3``. It is evaluated exactly with
    ``ast`` (no ``eval``). Each given number may be used at most once; not all must be used.
    Text that is not such an expression, or that divides by zero, is invalid
    (``info["action_valid"]`` False).

    ## Rewards
    1 if the expression uses only the given numbers (each at most as often as given) and equals
    the target, else 0.

    ## Episode End
    After one answer (single-turn): valid or not, right or wrong.

    ## Arguments
    - ``num_numbers``: how many numbers are given.
    - ``max_number``: numbers are drawn from 1..max_number.
    - ``max_target``: the target is in 1..max_target; it is built by combining all the numbers,
      so a solution always exists (``expert_action()`` returns it).
    - ``render_mode``: None or ``"ansi"``.
    """

    def __init__(
        self,
        num_numbers: int = 4,
        max_number: int = 99,
        max_target: int = 100,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if num_numbers < 2:
            raise ValueError(f"num_numbers={num_numbers!r} must be at least 2")
        if max_number < 2 or max_target < 1:
            raise ValueError(f"need max_number >= 2 and max_target >= 1, got {max_number=}, {max_target=}")
        self.num_numbers = int(num_numbers)
        self.max_number = int(max_number)
        self.max_target = int(max_target)
        self.numbers: list[int] = []
        self.target = 0

    def _new_task(self, seed: int | None) -> tuple[str, str]:
        rng = self.np_random
        for _ in range(_MAX_GENERATION_ATTEMPTS):
            numbers = [int(n) for n in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
            # Combine two random terms with a random operator that keeps values positive integers.
            terms = [(Fraction(n), str(n)) for n in numbers]
            while len(terms) > 1:
                i, j = (int(k) for k in rng.choice(len(terms), size=2, replace=False))
                (a, a_text), (b, b_text) = terms[i], terms[j]
                options = [(a + b, "+"), (a * b, "*")]
                if a > b:
                    options.append((a - b, "-"))
                if b > 1 and a % b == 0:
                    options.append((a / b, "/"))
                value, symbol = options[int(rng.integers(len(options)))]
                terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [
                    (value, f"({a_text} {symbol} {b_text})")
                ]
            target, solution = terms[0]
            if 1 <= target <= self.max_target:
                break
        else:
            raise RuntimeError(f"no Countdown target in 1..{self.max_target} found; raise max_target")
        self.numbers, self.target = numbers, int(target)
        question = (
            f"Using the numbers {numbers}, write an arithmetic expression that equals {self.target}. "
            f"You may use + - * / and parentheses, and each number at most once."
        )
        return question, solution[1:-1]

    def _grade(self, answer: str) -> Grade:
        expression = answer.split("=", 1)[0]
        try:
            value, literals = evaluate_expression(expression)
        except InvalidExpression as error:
            return Grade(False, False, f"Invalid answer {describe_action(answer)}: {error}.")
        overused = sorted((literals - Counter(self.numbers)).elements())
        if overused:
            return Grade(
                True,
                False,
                f"Incorrect: {sorted(set(overused))} used more often than given (numbers: {self.numbers}).",
            )
        if value != self.target:
            return Grade(
                True, False, f"Incorrect: the expression equals {format_number(value)}, not {self.target}."
            )
        return Grade(True, True, f"Correct: the expression equals {self.target}.")


class ArithmeticEnv(SingleTurnEnv):
    """Compute the value of an integer expression with + - *.

    ## Observation
    The task: an expression of ``num_operands`` integers (usual precedence: ``*`` before ``+ -``).
    After the step, feedback on the answer.

    ## Action
    A single integer, e.g. ``-42`` or ``1,234`` (surrounding whitespace, thousands commas and a
    final period are ignored). Anything else is invalid (``info["action_valid"]`` False).

    ## Rewards
    1 if the integer equals the expression's value, else 0.

    ## Episode End
    After one answer (single-turn): valid or not, right or wrong.

    ## Arguments
    - ``num_operands``: integers in the expression (at least 2).
    - ``max_value``: operands are drawn from 1..max_value.
    - ``render_mode``: None or ``"ansi"``.
    """

    def __init__(self, num_operands: int = 3, max_value: int = 100, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        if num_operands < 2 or max_value < 1:
            raise ValueError(f"need num_operands >= 2 and max_value >= 1, got {num_operands=}, {max_value=}")
        self.num_operands = int(num_operands)
        self.max_value = int(max_value)
        self.expression = ""
        self.value = 0

    def _new_task(self, seed: int | None) -> tuple[str, str]:
        operands = self.np_random.integers(1, self.max_value + 1, size=self.num_operands)
        operators = self.np_random.choice(["+", "-", "*"], size=self.num_operands - 1)
        parts = [str(int(operands[0]))]
        for operator, operand in zip(operators, operands[1:], strict=True):
            parts += [str(operator), str(int(operand))]
        self.expression = " ".join(parts)
        self.value = int(evaluate_expression(self.expression)[0])
        return f"Compute {self.expression}. Answer with a single integer.", str(self.value)

    def _grade(self, answer: str) -> Grade:
        text = answer.strip().removesuffix(".").replace(",", "")
        if not re.fullmatch(r"[+-]?\d{1,100}", text):
            return Grade(
                False, False, f"Invalid answer {describe_action(answer)}: expected a single integer."
            )
        if int(text) != self.value:
            return Grade(True, False, f"Incorrect: {self.expression} is not {int(text)}.")
        return Grade(True, True, f"Correct: {self.expression} = {self.value}.")


_PLAIN_TEXT_ANSWER = re.compile(r"[A-Za-z][A-Za-z\s'.-]*")
_LOOKS_MATHEMATICAL = re.compile(r"[\d\\^]")


def _normalize_text(text: str) -> str:
    return " ".join(text.casefold().split()).removesuffix(".")


def _math_timeout() -> int | None:
    """math-verify times out with SIGALRM, which only works in the main thread; elsewhere, none."""
    return 5 if threading.current_thread() is threading.main_thread() else None


class QAEnv(SingleTurnEnv):
    """Answer questions from a JSONL file; answers are checked with ``math-verify``.

    ## Observation
    The question. After the step, whether the answer was right.

    ## Action
    The answer, as text: a number, a LaTeX expression (``\\frac{1}{2}``, ``$x^2+1$``,
    ``\\boxed{7}``) or a sentence ending in one ("The answer is 7"). Text from which no
    mathematical answer can be read is invalid (``info["action_valid"]`` False) unless the
    reference answer is plain words (e.g. ``Paris``), which are compared as text.

    ## Rewards
    1 if the answer matches the reference, else 0: equal after case and whitespace normalisation,
    or (for mathematical answers) equivalent according to ``math_verify.verify`` (``0.5`` matches
    ``\\frac{1}{2}``).

    ## Episode End
    After one answer (single-turn): valid or not, right or wrong.

    ## Arguments
    - ``path``: a JSONL file, one ``{"question": str, "answer": str | number}`` object per line
      (blank lines are skipped; other keys are ignored).
    - ``render_mode``: None or ``"ansi"``.

    ``reset(seed=s)`` poses line ``s % n`` (0-based, blank lines not counted), so seeds 0..n-1 go
    through the file in order; ``reset()`` without a seed draws a line from ``self.np_random``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        if path is None:
            raise ValueError(
                'QAEnv needs path=<a JSONL file with one {"question": ..., "answer": ...} object per line>'
            )
        try:
            import math_verify
        except ImportError as error:
            raise ImportError("QAEnv checks answers with math-verify: pip install math-verify") from error
        self._math_verify = math_verify
        self.path = Path(path)
        self.records = load_qa_records(self.path)
        self.index = 0

    def _new_task(self, seed: int | None) -> tuple[str, str]:
        n = len(self.records)
        self.index = seed % n if seed is not None else int(self.np_random.integers(n))
        return self.records[self.index]

    def _grade(self, answer: str) -> Grade:
        reference = self._reference
        if _normalize_text(answer) == _normalize_text(reference) and answer.strip():
            return Grade(True, True, "Correct.")
        if _PLAIN_TEXT_ANSWER.fullmatch(reference.strip()):
            if not answer.strip():
                return Grade(False, False, "Invalid answer: it is empty.")
            return Grade(True, False, "Incorrect.")
        predicted = self._parse(answer)
        if not predicted:
            return Grade(
                False,
                False,
                f"Invalid answer {describe_action(answer)}: no mathematical answer could be read.",
            )
        gold = self._parse(reference)
        verify = self._math_verify.verify
        if gold and verify(gold, predicted, timeout_seconds=_math_timeout()):
            return Grade(True, True, "Correct.")
        return Grade(True, False, "Incorrect.")

    def _parse(self, text: str) -> list:
        """math-verify's parse, trying the text both as is and inside ``$...$``.

        Bare LaTeX (no ``$``, no words besides LaTeX commands, e.g. ``x^2 + 2x + 1``) is read inside
        ``$...$`` first, since math-verify alone would take its last number; text with words is
        read as is first. Text without a digit, ``\\`` or ``^`` is never wrapped, so plain words
        ("five") are not read as products of variables.
        """
        stripped = text.strip()
        candidates = [text]
        if "$" not in text and len(stripped) <= 200 and _LOOKS_MATHEMATICAL.search(text):
            wrapped = f"${stripped}$"
            bare = not re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", "", stripped))
            candidates = [wrapped, text] if bare else [text, wrapped]
        for candidate in candidates:
            parsed = self._math_verify.parse(candidate, parsing_timeout=_math_timeout())
            if parsed:
                return parsed
        return []


def load_qa_records(path: Path) -> list[tuple[str, str]]:
    """Reads ``(question, answer)`` pairs from a JSONL file.

    Raises:
        ValueError: naming the path (and line) when the file is missing, empty or malformed.
    """
    expected = 'one JSON object {"question": str, "answer": str | number} per line'
    if not path.is_file():
        raise ValueError(f"QA file {str(path)!r} does not exist or is not a file; expected {expected}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: not valid JSON ({error.msg}); expected {expected}"
                ) from None
            question = record.get("question") if isinstance(record, dict) else None
            answer = record.get("answer") if isinstance(record, dict) else None
            if (
                not isinstance(question, str)
                or not isinstance(answer, str | int | float)
                or isinstance(answer, bool)
            ):
                raise ValueError(f"{path}:{number}: got {line.strip()[:80]!r}; expected {expected}")
            records.append((question, str(answer)))
    if not records:
        raise ValueError(f"QA file {str(path)!r} has no records; expected {expected}")
    return records

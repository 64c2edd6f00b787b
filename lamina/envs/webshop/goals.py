"""WebShop's goals and splits: one goal per option combination, shuffled with seed 233.

As ``web_agent_site/engine/goal.py`` builds them:

- synthetic goals (``get_synthetic_goals``): for every product with an instruction, one goal per
  combination of its option values (``itertools.product`` over the option names in sorted order),
  the text ``"<instruction> with <name>: <value>, and ..., and price lower than X dollars"``;
- human goals (``get_human_goals``): one goal per human instruction with attributes, the text
  ``"<instruction without final dots>, and price lower than X dollars"``;
- the price bound: the larger of two distinct draws among the four grid points (10, 20, ... 990)
  just above the product's price, drawn once per product for synthetic goals and once per goal for
  human ones; none (1e6, no text) when fewer than two grid points lie above the price;
- the list is shuffled with ``random.seed(233); random.shuffle(goals)`` (``SimServer``), and
  verl-agent evaluates on goals 0..499 of that order and trains on the rest.

WebShop draws prices and bounds from the unseeded global ``random``; here they come from a seeded
generator (``price_seed``), so the same arguments give the same goals. Goals are materialised on
demand, so a catalogue with a million option combinations costs one list of integers.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.envs.webshop.products import Product

PRICE_RANGE = [10.0 * i for i in range(1, 100)]  # WebShop's grid of price bounds
NO_PRICE_BOUND = 1_000_000.0
SHUFFLE_SEED = 233
VERL_AGENT_TEST_GOALS = 500
SPLITS = ("train", "test", "all")

# A goal option as WebShop's matcher receives it: a text, or a synthetic goal's (name, value) pair.
OptionTerm = str | tuple[str, str]


@dataclass(frozen=True)
class GoalTemplate:
    """What an instruction file says about one goal product.

    ``options`` is None for a synthetic goal (one goal per option combination is built) and the
    human goal's option texts otherwise.
    """

    asin: str
    instruction: str
    attributes: tuple[str, ...]
    options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Goal:
    """A shopping goal: WebShop's goal dict with typed fields.

    ``options`` maps an option name of the goal product to the wanted value (for a human goal whose
    option text matches no product value the key is ``"option <i>"``); ``option_terms`` are the goal
    options exactly as WebShop's reward sees them (``(name, value)`` pairs for synthetic goals, the
    raw texts for human goals). ``base_instruction`` is the instruction without options and price.
    """

    asin: str
    instruction_text: str
    base_instruction: str
    attributes: tuple[str, ...]
    options: dict[str, str]
    option_terms: tuple[OptionTerm, ...]
    price_upper: float
    name: str
    query: str
    category: str
    product_category: str


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """WebShop's price goal: ``_, upper = sorted(random.sample(four grid points above price, 2))``."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) < 2:
        return NO_PRICE_BOUND, ""
    _, upper = sorted(rng.sample(candidates, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def name_human_options(product: Product, option_texts: Iterable[str]) -> dict[str, str]:
    """Keys a human goal's option texts by the product option whose values contain them."""
    named: dict[str, str] = {}
    for i, text in enumerate(option_texts):
        text = text.strip().lower()
        if not text:
            continue
        owner = next((k for k, values in product.options.items() if text in values and k not in named), None)
        named[owner or f"option {i}"] = text
    return named


class GoalSet(Sequence[Goal]):
    """Every goal of a catalogue in WebShop's order *before* the shuffle; built on demand.

    Args:
        products: the catalogue's products by ASIN.
        templates: goal templates in product order (templates of unknown products are dropped).
        price_seed: seeds the price-bound draws (one per synthetic product, one per human goal).
    """

    def __init__(
        self, products: Mapping[str, Product], templates: Sequence[GoalTemplate], price_seed: int = 0
    ):
        rng = random.Random(price_seed)
        self._products = products
        self._templates: list[GoalTemplate] = []
        self._bounds: list[tuple[float, str]] = []
        self._option_names: list[list[str]] = []
        starts = [0]
        for template in templates:
            product = products.get(template.asin)
            if product is None or not template.attributes:
                continue
            names = sorted(product.options) if template.options is None else []
            count = math.prod(len(product.options[n]) for n in names) if template.options is None else 1
            self._templates.append(template)
            self._bounds.append(price_bound(product.price, rng))
            self._option_names.append(names)
            starts.append(starts[-1] + count)
        self._starts = starts

    def __len__(self) -> int:
        return self._starts[-1]

    def __iter__(self) -> Iterator[Goal]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Goal:  # type: ignore[override]  # int indices only, no slices
        if not -len(self) <= index < len(self):
            raise IndexError(f"goal {index} out of range; the catalogue has {len(self)} goals")
        index %= len(self)
        t = bisect.bisect_right(self._starts, index) - 1
        template, product = self._templates[t], self._products[self._templates[t].asin]
        upper, price_text = self._bounds[t]
        if template.options is None:
            names = self._option_names[t]
            combination = _combination(index - self._starts[t], [len(product.options[n]) for n in names])
            options = {name: product.options[name][k] for name, k in zip(names, combination, strict=True)}
            option_text = ", and ".join(f"{k}: {v}" for k, v in options.items())
            text = template.instruction + (f" with {option_text}" if option_text else "") + price_text
            terms: tuple[OptionTerm, ...] = tuple(options.items())
        else:
            options = name_human_options(product, template.options)
            text = template.instruction.strip(".") + price_text
            terms = tuple(template.options)
        return Goal(
            asin=product.asin,
            instruction_text=text,
            base_instruction=template.instruction.strip().rstrip("."),
            attributes=template.attributes,
            options=options,
            option_terms=terms,
            price_upper=upper,
            name=product.title,
            query=product.query,
            category=product.category,
            product_category=product.product_category,
        )

    def products_with_goals(self) -> int:
        return len(self._templates)


def _combination(index: int, sizes: Sequence[int]) -> list[int]:
    """The ``index``-th tuple of ``itertools.product(range(s) for s in sizes)`` (last varies fastest)."""
    picks = []
    for size in reversed(sizes):
        index, k = divmod(index, size)
        picks.append(k)
    return picks[::-1]


def shuffled_order(count: int, seed: int = SHUFFLE_SEED) -> list[int]:
    """WebShop's ``random.seed(233); random.shuffle(goals)`` as a permutation of goal indices."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def default_test_goals(count: int) -> int:
    """500 (verl-agent's test split) when at least 1,000 goals exist, else a fifth (at least 1)."""
    return VERL_AGENT_TEST_GOALS if count >= 2 * VERL_AGENT_TEST_GOALS else max(1, count // 5)


def split_order(count: int, split: str, test_goals: int | None = None) -> list[int]:
    """Goal indices of ``split`` in shuffled order: ``test`` the first ``test_goals``, ``train`` the rest.

    Raises:
        ValueError: unknown split, or a test split that leaves no training goal.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; valid: {', '.join(SPLITS)}")
    order = shuffled_order(count)
    if split == "all":
        return order
    n_test = default_test_goals(count) if test_goals is None else int(test_goals)
    if not 1 <= n_test < count:
        raise ValueError(
            f"test_goals={test_goals!r} must be in 1..{count - 1} (the catalogue has {count} goals)"
        )
    return order[:n_test] if split == "test" else order[n_test:]


def combinations_of(options: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every option combination of a product in WebShop's order (for tests and tools)."""
    names = sorted(options)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(options[n] for n in names))]

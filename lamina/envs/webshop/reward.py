"""WebShop's purchase reward (princeton-nlp/WebShop ``web_agent_site/engine/goal.py``), without spaCy.

    score = r_type * (attribute matches + option matches + [price <= bound])
                   / (goal attributes + goal options + 1)

- attribute match: a goal attribute whose ``token_set_ratio`` with one of the product's attributes
  is above 85, or that occurs verbatim in the title, bullet points or description;
- option match: per *purchased* option, an exact match for ``size``, a ``token_set_ratio`` above
  85 otherwise (values normalised to their first colour word first), or the value occurring in
  the title, bullet points or description. Unlike WebShop the count is capped at the number of
  goal options, so the score never exceeds 1;
- ``r_type`` (product type): 1 if the query or >= 2 category levels match or the title score is
  above 0.2, else 0.5; then 0.1 if the title score is below 0.1 and 0 if it is 0. The title score
  is the share of the goal title's words found in the bought title. WebShop keeps only spaCy
  nouns (``en_core_web_lg``); the stand-in here keeps every lower-case word of two or more
  characters that is neither a number nor an English stopword (adjectives count too, so two
  different titles score a little lower than with nouns only; an identical title still gives 1).

Fuzzy matching is ``rapidfuzz.fuzz.token_set_ratio`` with ``thefuzz``'s preprocessing
(lower case, non-alphanumerics to spaces), as WebShop's ``thefuzz`` call does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from lamina.envs.webshop_catalog import Goal, Product

EXACT_MATCH_OPTIONS = ("size",)
FUZZY_THRESHOLD = 85
# Colour words, tried in this order; a value holding one is reduced to it ("light blue" -> "blue").
COLOR_WORDS = (
    "alabaster",
    "apricot",
    "aqua",
    "ash",
    "azure",
    "beige",
    "black",
    "blue",
    "blush",
    "bronze",
    "brown",
    "burgundy",
    "camel",
    "camo",
    "caramel",
    "champagne",
    "charcoal",
    "chocolate",
    "coffee",
    "copper",
    "coral",
    "cream",
    "denim",
    "espresso",
    "fuchsia",
    "gold",
    "gray",
    "green",
    "grey",
    "indigo",
    "ivory",
    "khaki",
    "lavender",
    "lilac",
    "lime",
    "magenta",
    "maroon",
    "mauve",
    "mint",
    "mocha",
    "multicolor",
    "mustard",
    "navy",
    "nude",
    "olive",
    "orange",
    "peach",
    "pink",
    "plum",
    "purple",
    "red",
    "rose",
    "rust",
    "sand",
    "silver",
    "tan",
    "taupe",
    "teal",
    "turquoise",
    "violet",
    "walnut",
    "white",
    "wine",
    "yellow",
)
STOPWORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has have "
    "having he her here hers herself him himself his how i if in into is it its itself just me more most "
    "my myself no nor not now of off on once only or other our ours ourselves out over own same she "
    "should so some such than that the their theirs them themselves then there these they this those "
    "through to too under until up very was we were what when where which while who whom why will with "
    "you your yours yourself yourselves".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


@dataclass(frozen=True)
class RewardBreakdown:
    """The score and its parts, as WebShop's ``get_reward(..., verbose=True)`` reports them."""

    score: float
    r_type: float
    r_att: float
    r_option: float | None
    r_price: bool | None
    num_attr_matches: int
    num_option_matches: int
    query_match: bool
    category_match: bool
    title_score: float


def normalize_color(value: str) -> str:
    """The first colour word inside ``value`` (substring test, as WebShop), else ``value``."""
    for color in COLOR_WORDS:
        if color in value:
            return color
    return value


def title_words(title: str) -> list[str]:
    """The stand-in for spaCy's nouns of a title: content words, in order, repeats kept."""
    return [w for w in _WORD.findall(title.lower()) if len(w) > 1 and not w.isdigit() and w not in STOPWORDS]


def _fuzzy_match(a: str, b: str) -> bool:
    return fuzz.token_set_ratio(a, b, processor=default_process) > FUZZY_THRESHOLD


def _product_text(product: Product) -> tuple[str, str, str]:
    return product.title.lower(), " ".join(product.bullet_points).lower(), product.description.lower()


def type_reward(product: Product, goal: Goal) -> tuple[float, bool, bool, float]:
    """(r_type, query_match, category_match, title_score) of WebShop's ``get_type_reward``."""
    query_match = product.query == goal.query
    bought_levels = {x.strip() for x in product.product_category.split("›")}
    goal_levels = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(bought_levels & goal_levels) >= 2
    desired = title_words(goal.name)
    bought = set(title_words(product.title))
    title_score = 0.2 if not desired else len(bought & set(desired)) / len(desired)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, query_match, category_match, title_score


def attribute_matches(product: Product, goal_attributes: Sequence[str]) -> int:
    """How many goal attributes the product has (fuzzy over its attributes, else verbatim in text)."""
    texts = _product_text(product)
    count = 0
    for wanted in goal_attributes:
        if any(_fuzzy_match(have, wanted) for have in product.attributes) or any(wanted in t for t in texts):
            count += 1
    return count


def option_matches(product: Product, goal_options: Sequence[str], purchased: Mapping[str, str]) -> int:
    """How many purchased options match a goal option (WebShop's ``get_option_reward`` count)."""
    wanted = [normalize_color(o) for o in goal_options]
    texts = _product_text(product)
    count = 0
    for name, value in purchased.items():
        value = normalize_color(value)
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in wanted
        else:
            matched = any(_fuzzy_match(g, value) for g in wanted)
        if matched or any(value in t for t in texts):
            count += 1
    return min(count, len(wanted))


def webshop_reward(
    product: Product, goal: Goal, price: float, purchased_options: Mapping[str, str]
) -> RewardBreakdown:
    """WebShop's ``get_reward`` for buying ``product`` at ``price`` with ``purchased_options``.

    Returns:
        The score in [0, 1] and its parts; ``r_option`` is None when the goal has no options.
    """
    r_type, query_match, category_match, title_score = type_reward(product, goal)
    r_price = price <= goal.price_upper if goal.price_upper > 0 else None
    n_attr = attribute_matches(product, goal.attributes)
    goal_values = list(goal.options.values())
    n_option = option_matches(product, goal_values, purchased_options)
    total = len(goal.attributes) + len(goal_values) + 1
    score = (n_attr + n_option + bool(r_price)) / total * r_type
    return RewardBreakdown(
        score=score,
        r_type=r_type,
        r_att=n_attr / len(goal.attributes) if goal.attributes else 0.0,
        r_option=n_option / len(goal_values) if goal_values else None,
        r_price=r_price,
        num_attr_matches=n_attr,
        num_option_matches=n_option,
        query_match=query_match,
        category_match=category_match,
        title_score=title_score,
    )

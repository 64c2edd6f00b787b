"""WebShop's purchase reward (princeton-nlp/WebShop ``web_agent_site/engine/goal.py``), without spaCy.

    score = r_type * (attribute matches + option matches + [price <= bound])
                   / (goal attributes + goal options + 1)

- attribute match: a goal attribute whose fuzzy score with one of the product's attributes is above
  85, or that occurs verbatim in the title, bullet points or description (``get_attribute_reward``);
- option match (``get_option_reward``): for each *goal* option, whether any bought option value
  scores above 85 against it, both sides colour-normalised with WebShop's full colour list first.
  Nothing else counts: no text elsewhere on the page, no exact rule for sizes. As in WebShop, a
  synthetic goal's options reach the matcher as ``(name, value)`` pairs (``goal_options.items()``):
  colour normalisation of a pair only fires when a colour word *equals* the name or the value, and
  otherwise the fuzzy matcher sees the pair's text, ``"('size', 'x-large')"``, so the option name's
  words count as goal tokens. Human goals' options are plain texts.
- ``r_type`` (product type): 1 if the query or >= 2 category levels match or the title score is
  above 0.2, else 0.5; then 0.1 if the title score is below 0.1 and 0 if it is 0. The title score
  is the share of the goal title's words found in the bought title. WebShop keeps only spaCy
  nouns (``en_core_web_sm``); the stand-in here keeps every lower-case word of two or more
  characters that is neither a number nor an English stopword (adjectives count too, so two
  different titles score a little lower than with nouns only; an identical title still gives 1).

Fuzzy scores are ``thefuzz.fuzz.token_set_ratio`` exactly (WebShop pins ``thefuzz``): the inputs go
through ``str()``, lose the characters U+0080..U+00FF, then rapidfuzz's ``default_process`` (lower
case, non-alphanumerics to spaces, trimmed), and the score is rounded to an integer before the
``> 85`` test. The test suite checks this module against a literal transcription of
``get_reward`` run with ``thefuzz`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from lamina.envs.webshop.goals import Goal, OptionTerm
from lamina.envs.webshop.products import Product

FUZZY_THRESHOLD = 85
# WebShop's COLOR_SET (web_agent_site/engine/normalize.py), in its order: the first one found wins.
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure",
    "banana", "beige", "black", "blue", "blush", "bordeaux", "bronze",
    "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee",
    "cognac", "copper", "coral", "cranberry", "cream", "crystal", "dark",
    "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite",
    "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac",
    "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha",
    "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red",
    "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull",
    "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal",
    "tiger", "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)  # fmt: skip
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
_LATIN1 = {i: None for i in range(128, 256)}


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


def normalize_color(value: Any) -> Any:
    """WebShop's ``normalize_color``: the first colour of ``COLOR_SET`` that is ``in`` the value.

    For a string that is a substring test (``"light blue"`` -> ``"blue"``); for a ``(name, value)``
    pair it is tuple membership, so only an exact colour name or value is replaced. Anything else
    comes back unchanged.
    """
    for color in COLOR_SET:
        if color in value:
            return color
    return value


def fuzzy_score(a: Any, b: Any) -> int:
    """``thefuzz.fuzz.token_set_ratio(a, b)``: str(), U+0080..U+00FF dropped, processed, rounded."""
    processed_a = default_process(str(a).translate(_LATIN1))
    processed_b = default_process(str(b).translate(_LATIN1))
    return int(round(fuzz.token_set_ratio(processed_a, processed_b)))


def title_words(title: str) -> list[str]:
    """The stand-in for spaCy's nouns of a title: content words, in order, repeats kept."""
    return [w for w in _WORD.findall(title.lower()) if len(w) > 1 and not w.isdigit() and w not in STOPWORDS]


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
    texts = (product.title.lower(), " ".join(product.bullet_points).lower(), product.description.lower())
    count = 0
    for wanted in goal_attributes:
        if any(fuzzy_score(have, wanted) > FUZZY_THRESHOLD for have in product.attributes) or any(
            wanted in t for t in texts
        ):
            count += 1
    return count


def option_matches(purchased_values: Sequence[str], goal_terms: Sequence[OptionTerm]) -> int:
    """How many goal options some purchased value matches (WebShop's ``get_option_reward`` count)."""
    purchased = [normalize_color(value) for value in purchased_values]
    count = 0
    for wanted in (normalize_color(term) for term in goal_terms):
        if any(fuzzy_score(have, wanted) > FUZZY_THRESHOLD for have in purchased):
            count += 1
    return count


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
    terms = goal.option_terms
    n_option = option_matches(list(purchased_options.values()), terms)
    total = len(goal.attributes) + len(terms) + 1
    score = (n_attr + n_option + bool(r_price)) / total * r_type
    return RewardBreakdown(
        score=score,
        r_type=r_type,
        r_att=n_attr / len(goal.attributes) if goal.attributes else 0.0,
        r_option=n_option / len(terms) if terms else None,
        r_price=r_price,
        num_attr_matches=n_attr,
        num_option_matches=n_option,
        query_match=query_match,
        category_match=category_match,
        title_score=title_score,
    )

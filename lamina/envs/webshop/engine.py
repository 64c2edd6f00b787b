"""WebShop-style shopping: find the product an instruction describes, pick its options, buy it.

An in-process re-implementation of WebShop's text mode (princeton-nlp/WebShop,
``web_agent_site/envs/web_agent_text_env.py``): same pages, buttons, ``search[...]`` /
``click[...]`` actions, `` [SEP] ``-joined observations and reward, with BM25 search (``bm25s``)
instead of a Lucene server and no web server at all. Catalogues and goals live in
``lamina.envs.webshop_catalog``, the reward in ``lamina.envs.webshop_reward``.

    import gymnasium as gym, lamina.envs
    env = gym.make("lamina/WebShop-v0")                       # shared 100 products if present
    env = gym.make("lamina/WebShop-v0", catalog="procedural", num_products=2000)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("search[red running shoes]")
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info
from lamina.envs.webshop_catalog import PRODUCT_WINDOW, Catalog, Goal, Product, load_catalog
from lamina.envs.webshop_reward import webshop_reward

SEP = " [SEP] "
SEARCH_ACTION_TEMPLATE = "search[<your query>]"  # what admissible_actions lists for the search bar
MAX_ACTION_CHARS = 1000
BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE, BUY_NOW = "back to search", "next >", "< prev", "buy now"
SUB_PAGES = ("description", "features", "reviews")
_ACTION = re.compile(r"\s*(search|click)\s*\[(.*)\]\s*", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class PageState:
    """Where the shopper is: the page type and what the page shows (``anchor`` is its hashable form).

    ``page`` is one of ``search``, ``results``, ``item``, ``description``, ``features``,
    ``reviews``, ``done``; ``options`` are the chosen (name, value) pairs, sorted by name.
    """

    page: str = "search"
    query: str = ""
    page_number: int = 0
    asin: str = ""
    options: tuple[tuple[str, str], ...] = ()
    results: tuple[str, ...] = field(default=(), compare=False)

    @property
    def anchor(self) -> tuple[str, str, int, str, tuple[tuple[str, str], ...]]:
        return (self.page, self.query, self.page_number, self.asin, self.options)


def parse_action(action: object) -> tuple[str, str] | str:
    """``"click[Buy Now]"`` -> ``("click", "buy now")``; an error message (str) if it is no command.

    The argument is lower-cased with whitespace runs collapsed (WebShop lower-cases it too); it
    runs from the first ``[`` to the last ``]``, so values holding brackets survive.
    """
    if not isinstance(action, str):
        return f"an action is a string, got {describe_action(action)}"
    if len(action) > MAX_ACTION_CHARS:
        return f"action is {len(action)} characters long; the limit is {MAX_ACTION_CHARS}"
    match = _ACTION.fullmatch(action)
    if match is None:
        return f"{describe_action(action)} is not search[<query>] or click[<button>]"
    return match.group(1).lower(), " ".join(match.group(2).lower().split())


class WebShopEnv(TextEnv):
    """Buy the product that the instruction describes, with the right options, within budget.

    ## Observation
    WebShop's ``text`` mode: the visible texts of the page joined by `` [SEP] ``.
    - search page: ``WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search``;
    - results (10 per page): ``Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 2
      (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price> ...``;
    - item: ``... Back to Search [SEP] < Prev [SEP] <option name> [SEP] <value> ... [SEP] <title>
      [SEP] Price: $.. [SEP] Rating: .. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy
      Now``, with ``You have clicked <value>.`` after the instruction for each chosen option (as
      WebShop's ``text_rich`` mode says it; ``text`` mode does not show choices);
    - description / features / reviews: ``... Back to Search [SEP] < Prev [SEP] <content>``;
    - after buying: ``Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <score>``.
    An invalid action returns ``Invalid action: <why> [SEP] `` followed by the unchanged page.

    ## Action
    ``search[<query>]`` where the page has a search bar (the search page), ``click[<button>]``
    for a clickable of the page: ``back to search``, ``next >``, ``< prev``, a product's ASIN,
    an option value, ``description``, ``features``, ``reviews``, ``buy now`` (case-insensitive).
    ``info["admissible_actions"]`` lists every ``click[...]`` of the page plus the literal
    template ``search[<your query>]`` (``SEARCH_ACTION_TEMPLATE``) where the search bar is: an
    agent replaces ``<your query>`` with its own words. ``info["available_actions"]`` is WebShop's
    ``{"has_search_bar": bool, "clickables": [...]}``. Anything else (unknown button, ``click[search]``,
    an empty query, a search away from the search page, non-command text, actions over 1000
    characters) is invalid: state unchanged, ``info["action_valid"]`` False.

    ## Rewards
    0 on every step but ``click[buy now]``, which pays WebShop's score in [0, 1] (attribute,
    option and price matches over their count, times the product-type score; see
    ``lamina.envs.webshop_reward``) times ``reward_scale``. ``info["won"]`` is True when the score
    is 1 (a perfect purchase); ``info["score"]`` and ``info["reward_breakdown"]`` give the parts.

    ## Episode End
    Terminates on ``click[buy now]``. Truncation comes from the registration's
    ``max_episode_steps`` (15, as in the GiGPO WebShop setup); the class used directly has no
    time limit. Steps after the end are invalid and change nothing.

    ## Arguments
    - ``catalog``: ``"auto"`` (official files if ``catalog_path`` is given, else the shared 100
      products if present, else procedural), ``"files"``, ``"shared"`` or ``"procedural"``.
    - ``catalog_path`` / ``instructions_path``: WebShop's product file (``items_shuffle*.json`` or
      processed JSON lines) and instruction file (``items_ins_v2*.json`` or ``items_human_ins*.json``).
    - ``num_products``: keep the first N products of a file catalogue; size of a procedural one
      (default 500).
    - ``catalog_seed``: seed of the procedural catalogue (goals are drawn by ``reset(seed=...)``).
    - ``reward_scale``: multiplies the score (1.0 keeps WebShop's [0, 1]; 10.0 is the scale some
      RL recipes use).
    - ``render_mode``: None or ``"ansi"`` (returns the last observation).

    Catalogues and their BM25 index are built once per process and argument set and shared by
    every environment copy. ``info["anchor"]`` is ``(page, query, page number, asin, options)``.
    ``expert_action()`` searches the goal product's exact title, opens it, chooses the goal options
    and buys: a perfect purchase for synthetic goals.
    """

    def __init__(
        self,
        catalog: str = "auto",
        catalog_path: str | None = None,
        instructions_path: str | None = None,
        num_products: int | None = None,
        catalog_seed: int = 0,
        reward_scale: float = 1.0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        self.catalog: Catalog = load_catalog(
            catalog, catalog_path, instructions_path, num_products, catalog_seed
        )
        self.reward_scale = float(reward_scale)
        self.goal: Goal | None = None
        self._state = PageState()
        self._page_text = ""
        # clickable text -> the option name (option values), the ASIN (product links) or "" (buttons)
        self._clickables: dict[str, str] = {}
        self._score: float | None = None

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self.goal = self.catalog.sample_goal(self.np_random)
        self._score = None
        self._go(PageState())
        return self._page_text, self._info(action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.goal is None:
            raise RuntimeError("call reset() before step()")
        if self._state.page == "done":
            return self._invalid("the episode is over (the product was bought); call reset()")
        parsed = parse_action(action)
        if isinstance(parsed, str):
            return self._invalid(parsed)
        verb, argument = parsed
        if verb == "search":
            if self._state.page != "search":
                return self._invalid(f"no search bar on this page; use click[{BACK_TO_SEARCH}] first")
            if not argument:
                return self._invalid("empty search query")
            results = self.catalog.search(argument)
            self._go(PageState("results", argument, 1, results=results))
            return self._observe(0.0)
        if argument == "search":
            return self._invalid("the search button needs a query: use search[<query>]")
        if argument not in self._clickables:
            clickable = ", ".join(self._clickables) or "nothing"
            return self._invalid(f"{describe_action(argument)} is not clickable here; clickable: {clickable}")
        if argument == BUY_NOW:
            return self._buy()
        self._go(self._click(argument))
        return self._observe(0.0)

    # ------------------------------------------------------------------ transitions

    def _click(self, button: str) -> PageState:
        state = self._state
        if button == BACK_TO_SEARCH:
            return PageState()
        if state.page == "results":
            if button == NEXT_PAGE:
                return replace(state, page_number=state.page_number + 1)
            if button == PREV_PAGE:
                return replace(state, page_number=state.page_number - 1)
            return replace(state, page="item", asin=self._clickables[button])
        if state.page == "item":
            if button == PREV_PAGE:
                return replace(state, page="results", asin="", options=())
            if button in SUB_PAGES:
                return replace(state, page=button)
            chosen = dict(state.options)
            chosen[self._clickables[button]] = button
            return replace(state, options=tuple(sorted(chosen.items())))
        return replace(state, page="item")  # "< prev" on a description / features / reviews page

    def _buy(self) -> tuple[str, float, bool, bool, dict]:
        assert self.goal is not None
        product = self.catalog.by_asin[self._state.asin]
        breakdown = webshop_reward(product, self.goal, product.price, dict(self._state.options))
        self._score = breakdown.score
        self._state = replace(self._state, page="done")
        self._clickables = {}
        self._page_text = (
            f"Thank you for shopping with us!{SEP}Your score (min 0.0, max 1.0){SEP}{breakdown.score:.4g}"
        )
        self._last_observation = self._page_text
        info = self._info(action_valid=True, score=breakdown.score, reward_breakdown=asdict(breakdown))
        return self._page_text, breakdown.score * self.reward_scale, True, False, info

    # ------------------------------------------------------------------ rendering

    def _go(self, state: PageState) -> None:
        """Moves to ``state`` and renders its text and clickables."""
        self._state = state
        if state.page == "search":
            self._clickables = {"search": ""}
            self._page_text = SEP.join(("WebShop", "Instruction:", self._instruction(), "Search"))
        elif state.page == "results":
            self._render_results(state)
        else:
            self._render_item(state, self.catalog.by_asin[state.asin])
        self._last_observation = self._page_text

    def _instruction(self) -> str:
        return self.goal.instruction_text if self.goal is not None else ""

    def _render_results(self, state: PageState) -> None:
        total = len(state.results)
        parts = [
            "Instruction:",
            self._instruction(),
            "Back to Search",
            f"Page {state.page_number} (Total results: {total})",
        ]
        buttons = [BACK_TO_SEARCH]
        if state.page_number > 1:
            parts.append("< Prev")
            buttons.append(PREV_PAGE)
        if state.page_number * PRODUCT_WINDOW < total:
            parts.append("Next >")
            buttons.append(NEXT_PAGE)
        start = (state.page_number - 1) * PRODUCT_WINDOW
        for asin in state.results[start : start + PRODUCT_WINDOW]:
            product = self.catalog.by_asin[asin]
            parts += [asin, product.title, product.price_tag]
        self._clickables = dict.fromkeys(buttons, "")
        self._clickables.update(
            (asin.lower(), asin) for asin in state.results[start : start + PRODUCT_WINDOW]
        )
        self._page_text = SEP.join(parts)

    def _render_item(self, state: PageState, product: Product) -> None:
        parts = ["Instruction:", self._instruction()]
        parts += [f"You have clicked {value}." for _, value in state.options]
        parts += ["Back to Search", "< Prev"]
        self._clickables = {BACK_TO_SEARCH: "", PREV_PAGE: ""}
        if state.page == "item":
            for name, values in product.options.items():
                parts.append(name)
                parts.extend(values)
            parts += [
                product.title,
                f"Price: {product.price_tag}",
                f"Rating: {product.rating}",
                "Description",
                "Features",
                "Reviews",
                "Buy Now",
            ]
            self._clickables.update(dict.fromkeys((*SUB_PAGES, BUY_NOW), ""))
            for name, values in product.options.items():
                for value in values:
                    self._clickables.setdefault(" ".join(value.split()), name)
        elif state.page == "description":
            parts.append(product.description)
        elif state.page == "features":
            parts.extend(product.bullet_points)
        else:
            for review in product.reviews:
                parts += [str(review.get(key, "")) for key in ("title", "score", "body")]
        self._page_text = SEP.join(parts)

    # ------------------------------------------------------------------ info, invalid actions, expert

    def available_actions(self) -> dict[str, Any]:
        """WebShop's ``get_available_actions()``: ``{"has_search_bar": bool, "clickables": [...]}``."""
        return {"has_search_bar": self._state.page == "search", "clickables": list(self._clickables)}

    def admissible_actions(self) -> list[str]:
        actions = [SEARCH_ACTION_TEMPLATE] if self._state.page == "search" else []
        return actions + [f"click[{c}]" for c in self._clickables if c != "search"]

    def _info(self, action_valid: bool, **extra: Any) -> dict[str, Any]:
        return make_info(
            task=self._instruction(),
            admissible_actions=self.admissible_actions(),
            anchor=self._state.anchor,
            won=self._score is not None and self._score >= 1.0 - 1e-9,
            action_valid=action_valid,
            available_actions=self.available_actions(),
            **extra,
        )

    def _observe(self, reward: float) -> tuple[str, float, bool, bool, dict]:
        return self._page_text, reward, False, False, self._info(action_valid=True)

    def _invalid(self, why: str) -> tuple[str, float, bool, bool, dict]:
        observation = f"Invalid action: {why}{SEP}{self._page_text}"
        self._last_observation = observation
        return observation, 0.0, self._state.page == "done", False, self._info(action_valid=False)

    def expert_action(self) -> str | None:
        """Search the goal's exact title, open the goal product, choose the goal options, buy."""
        if self.goal is None or self._state.page == "done":
            return None
        goal, state = self.goal, self._state
        title_query = " ".join(self.catalog.by_asin[goal.asin].title.lower().split())
        if state.page == "search":
            return f"search[{title_query}]"
        if state.page == "results":
            start = (state.page_number - 1) * PRODUCT_WINDOW
            if goal.asin in state.results[start : start + PRODUCT_WINDOW]:
                return f"click[{goal.asin.lower()}]"
            if goal.asin in state.results[start + PRODUCT_WINDOW :] and NEXT_PAGE in self._clickables:
                return f"click[{NEXT_PAGE}]"
            if goal.asin in state.results[:start] and PREV_PAGE in self._clickables:
                return f"click[{PREV_PAGE}]"
            return f"click[{BACK_TO_SEARCH}]"
        if state.asin != goal.asin or state.page != "item":
            return f"click[{PREV_PAGE}]"
        chosen = dict(state.options)
        for name, value in self._expert_options().items():
            if chosen.get(name) != value:
                return f"click[{value}]"
        return f"click[{BUY_NOW}]"

    def _expert_options(self) -> dict[str, str]:
        """The product values to click for the goal's options (best fuzzy match for human goals)."""
        assert self.goal is not None
        product = self.catalog.by_asin[self.goal.asin]
        picks = {}
        for name, wanted in self.goal.options.items():
            values = product.options.get(name)
            if not values:
                continue
            if wanted in values:
                picks[name] = " ".join(wanted.split())
            else:
                best = max(values, key=lambda v: fuzz.token_set_ratio(v, wanted, processor=default_process))
                picks[name] = " ".join(best.split())
        return picks

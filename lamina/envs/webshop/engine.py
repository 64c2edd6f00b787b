"""WebShop shopping: find the product an instruction describes, pick its options, buy it.

An in-process re-implementation of WebShop's text mode (princeton-nlp/WebShop,
``web_agent_site/envs/web_agent_text_env.py``): the same pages, buttons, ``search[...]`` /
``click[...]`` actions, `` [SEP] ``-joined observations, goals, splits and reward, with a stemmed
BM25 index instead of a Lucene server and no web server at all. Catalogues live in
``lamina.envs.webshop.catalogue``, goals in ``.goals``, search in ``.search``, pages in ``.pages``
and the reward in ``.reward``.

    import gymnasium as gym, lamina.envs
    env = gym.make("lamina/WebShop-v0")                       # shared 100 products if present
    env = gym.make("lamina/WebShop-v0", catalog="procedural", num_products=2000)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("search[red running shoes]")
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from typing import Any

from lamina.envs.actions import describe_action
from lamina.envs.base import TextEnv, make_info
from lamina.envs.webshop.catalogue import load_catalog
from lamina.envs.webshop.goals import Goal, split_order
from lamina.envs.webshop.pages import (
    BACK_TO_SEARCH,
    BUY_NOW,
    NEXT_PAGE,
    PREV_PAGE,
    SEARCH_BUTTON,
    SUB_PAGES,
    PageState,
    render_done,
    render_page,
    results_window,
)
from lamina.envs.webshop.products import Catalog
from lamina.envs.webshop.reward import fuzzy_score, webshop_reward

MAX_ACTION_CHARS = 1000
REWARD_MODES = ("score", "success")
_ACTION = re.compile(r"\s*(search|click)\s*\[(.*)\]\s*", re.IGNORECASE | re.DOTALL)


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


def search_queries(goal: Goal, k: int) -> list[str]:
    """Up to ``k`` candidate queries from the instruction, for agents that choose among actions.

    In order: the instruction as shown; the instruction without its options and price; its
    attribute phrases together; then each attribute phrase alone. Lower case, duplicates dropped.
    """
    candidates = [goal.instruction_text, goal.base_instruction, ", ".join(goal.attributes), *goal.attributes]
    queries: list[str] = []
    for text in candidates:
        query = " ".join(text.lower().replace("[", " ").replace("]", " ").split())
        if query and query not in queries:
            queries.append(query)
    return queries[:k]


class WebShopEnv(TextEnv):
    """Buy the product that the instruction describes, with the right options, within budget.

    ## Observation
    WebShop's ``text`` mode: the visible texts of the page joined by `` [SEP] ``.
    - search page: ``WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search``;
    - results (10 per page): ``Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 2
      (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price> ...``
      (``< Prev`` after page 1, ``Next >`` always, as WebShop's template);
    - item: ``... Back to Search [SEP] < Prev [SEP] <option name> [SEP] <value> ... [SEP] <title>
      [SEP] Price: $.. [SEP] Rating: .. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy
      Now`` (with ``show_clicked_options``, ``You have clicked <value>.`` after the instruction,
      as WebShop's ``text_rich`` mode);
    - description / features / reviews: ``... Back to Search [SEP] < Prev [SEP] <content>``;
    - after buying: ``Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <score>``.
    An invalid action returns ``Invalid action: <why> [SEP] `` followed by the unchanged page.

    ## Action
    ``search[<query>]`` from any page (as WebShop's text env), ``click[<button>]`` for a clickable
    of the page: ``search`` (a no-op, as in WebShop), ``back to search``, ``next >``, ``< prev``, a
    product's ASIN, an option value, ``description``, ``features``, ``reviews``, ``buy now``
    (case-insensitive). ``info["admissible_actions"]`` lists every ``click[...]`` of the page and,
    where the page has a search bar (the search page), ``search_candidates`` concrete queries built
    from the instruction (:func:`search_queries`), so an agent that chooses among actions can
    search; an agent that writes its own query may search anything. ``info["available_actions"]``
    is WebShop's ``{"has_search_bar": bool, "clickables": [...]}``. Anything else (an unknown
    button, an empty query, non-command text, actions over 1000 characters) is invalid: state
    unchanged, ``info["action_valid"]`` False.

    ## Rewards
    0 on every step but ``click[buy now]``. ``reward_mode="score"``: WebShop's score in [0, 1]
    (``lamina.envs.webshop.reward``) times ``reward_scale``; ``"success"``: ``success_reward`` when
    the score is 1 and 0 otherwise (verl-agent's rule; it pays 10). ``info["won"]`` is True when
    the score is 1; ``info["score"]`` and ``info["reward_breakdown"]`` give the score and its parts.

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
    - ``catalog_seed``: seeds the procedural catalogue, range prices and price bounds.
    - ``split``: ``"train"``, ``"test"`` or ``"all"`` goals. Goals are WebShop's (one per option
      combination) shuffled with seed 233; ``test`` is the first ``test_goals`` of them (default:
      500, verl-agent's split, when there are at least 1,000 goals, else a fifth), ``train`` the
      rest. ``reset(seed=s)`` plays goal ``s % len(split)`` of the split (a random one without seed).
    - ``reward_mode``, ``reward_scale``, ``success_reward``: see Rewards.
    - ``search_candidates``: how many candidate queries the search page offers (K >= 1).
    - ``show_clicked_options``: show chosen options on item pages (``text_rich``); default False.
    - ``render_mode``: None or ``"ansi"`` (returns the last observation).

    Catalogues and their search index are built once per process and argument set and shared by
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
        split: str = "train",
        test_goals: int | None = None,
        reward_mode: str = "score",
        reward_scale: float = 1.0,
        success_reward: float = 10.0,
        search_candidates: int = 3,
        show_clicked_options: bool = False,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode={reward_mode!r} is not known; valid: {', '.join(REWARD_MODES)}")
        if int(search_candidates) < 1:
            raise ValueError(f"search_candidates={search_candidates!r} must be at least 1")
        self.catalog: Catalog = load_catalog(
            catalog, catalog_path, instructions_path, num_products, catalog_seed
        )
        self.split = split
        self.goal_order = split_order(len(self.catalog.goals), split, test_goals)
        self.reward_mode = reward_mode
        self.reward_scale = float(reward_scale)
        self.success_reward = float(success_reward)
        self.search_candidates = int(search_candidates)
        self.show_clicked_options = bool(show_clicked_options)
        self.goal: Goal | None = None
        self.goal_index: int | None = None
        self._state = PageState()
        self._page_text = ""
        # clickable text -> the option name (option values), the ASIN (product links) or "" (buttons)
        self._clickables: dict[str, str] = {}
        self._queries: list[str] = []
        self._score: float | None = None

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        count = len(self.goal_order)
        position = seed % count if seed is not None else int(self.np_random.integers(count))
        self.goal_index = self.goal_order[position]
        self.goal = self.catalog.goals[self.goal_index]
        self._queries = search_queries(self.goal, self.search_candidates)
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
            if not argument:
                return self._invalid("empty search query")
            self._go(PageState("results", argument, 1, results=self.catalog.search(argument)))
            return self._observe()
        if argument not in self._clickables:
            clickable = ", ".join(self._clickables) or "nothing"
            return self._invalid(f"{describe_action(argument)} is not clickable here; clickable: {clickable}")
        if argument == SEARCH_BUTTON:  # WebShop ignores a click on the search button
            self._last_observation = self._page_text
            return self._observe()
        if argument == BUY_NOW:
            return self._buy()
        self._go(self._click(argument))
        return self._observe()

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
        self._page_text = render_done(breakdown.score)
        self._last_observation = self._page_text
        won = self._won()
        if self.reward_mode == "score":
            reward = breakdown.score * self.reward_scale
        else:
            reward = self.success_reward if won else 0.0
        info = self._info(action_valid=True, score=breakdown.score, reward_breakdown=asdict(breakdown))
        return self._page_text, reward, True, False, info

    def _go(self, state: PageState) -> None:
        """Moves to ``state`` and renders its text and clickables."""
        self._state = state
        page = render_page(state, self._instruction(), self.catalog, self.show_clicked_options)
        self._page_text, self._clickables = page.text, page.clickables
        self._last_observation = self._page_text

    # ------------------------------------------------------------------ info, invalid actions, expert

    def _instruction(self) -> str:
        return self.goal.instruction_text if self.goal is not None else ""

    def _won(self) -> bool:
        return self._score is not None and self._score >= 1.0 - 1e-9

    def available_actions(self) -> dict[str, Any]:
        """WebShop's ``get_available_actions()``: ``{"has_search_bar": bool, "clickables": [...]}``."""
        return {"has_search_bar": self._state.page == "search", "clickables": list(self._clickables)}

    def admissible_actions(self) -> list[str]:
        """Candidate searches where the search bar is, then every ``click[...]`` of the page."""
        searches = [f"search[{q}]" for q in self._queries] if self._state.page == "search" else []
        return searches + [f"click[{c}]" for c in self._clickables]

    def _info(self, action_valid: bool, **extra: Any) -> dict[str, Any]:
        return make_info(
            task=self._instruction(),
            admissible_actions=self.admissible_actions(),
            anchor=self._state.anchor,
            won=self._won(),
            action_valid=action_valid,
            available_actions=self.available_actions(),
            open_commands=("search",),  # any query, from any page (listed ones are suggestions)
            **extra,
        )

    def _observe(self) -> tuple[str, float, bool, bool, dict]:
        return self._page_text, 0.0, False, False, self._info(action_valid=True)

    def _invalid(self, why: str) -> tuple[str, float, bool, bool, dict]:
        observation = f"Invalid action: {why}{' [SEP] '}{self._page_text}"
        self._last_observation = observation
        return observation, 0.0, self._state.page == "done", False, self._info(action_valid=False)

    def expert_action(self) -> str | None:
        """Search the goal's exact title, open the goal product, choose the goal options, buy."""
        if self.goal is None or self._state.page == "done":
            return None
        goal, state = self.goal, self._state
        if state.page == "search":
            return f"search[{' '.join(self.catalog.by_asin[goal.asin].title.lower().split())}]"
        if state.page == "results":
            window = results_window(state)
            start = (state.page_number - 1) * len(window) if window else 0
            if goal.asin in window:
                return f"click[{goal.asin.lower()}]"
            if goal.asin in state.results[start + len(window) :]:
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
            best = wanted if wanted in values else max(values, key=lambda v: fuzzy_score(v, wanted))
            picks[name] = " ".join(best.split())
        return picks

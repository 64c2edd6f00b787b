"""WebShop's pages in ``text`` mode: what each page shows and which buttons it has.

The text of a page is its visible texts joined by `` [SEP] `` (WebShop's ``convert_html_to_text``
with ``simple=True`` over ``web_agent_site/templates``). Clickables are keyed as WebShop's
``get_available_actions`` keys them: button and link texts lower-cased, option values as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.envs.webshop.products import PRODUCT_WINDOW, Catalog, Product

SEP = " [SEP] "
SEARCH_BUTTON, BACK_TO_SEARCH, BUY_NOW = "search", "back to search", "buy now"
NEXT_PAGE, PREV_PAGE = "next >", "< prev"
SUB_PAGES = ("description", "features", "reviews")
PAGES = ("search", "results", "item", *SUB_PAGES, "done")


@dataclass(frozen=True)
class PageState:
    """Where the shopper is: the page type and what the page shows (``anchor`` is its hashable form).

    ``page`` is one of ``PAGES``; ``options`` are the chosen (name, value) pairs, sorted by name;
    ``results`` the ASINs the last search found.
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


@dataclass(frozen=True)
class Page:
    """A rendered page: its text and its clickables (text -> option name, ASIN, or "" for a button)."""

    text: str
    clickables: dict[str, str]


def clickable_value(value: str) -> str:
    """An option value as an action argument can spell it (whitespace runs collapsed)."""
    return " ".join(value.split())


def render_page(
    state: PageState, instruction: str, catalog: Catalog, show_clicked_options: bool = False
) -> Page:
    """The text and clickables of ``state`` (any page but ``done``).

    ``show_clicked_options`` adds ``You have clicked <value>.`` lines after the instruction of item
    pages, as WebShop's ``text_rich`` mode does; its ``text`` mode (the default) does not show them.
    """
    if state.page == "search":
        return Page(SEP.join(("WebShop", "Instruction:", instruction, "Search")), {SEARCH_BUTTON: ""})
    if state.page == "results":
        return _results_page(state, instruction, catalog)
    clicked = [f"You have clicked {value}." for _, value in state.options] if show_clicked_options else []
    return _item_page(state, instruction, catalog.by_asin[state.asin], clicked)


def render_done(score: float) -> str:
    return f"Thank you for shopping with us!{SEP}Your score (min 0.0, max 1.0){SEP}{score:.4g}"


def results_window(state: PageState) -> tuple[str, ...]:
    """The ASINs listed on the current results page."""
    start = (state.page_number - 1) * PRODUCT_WINDOW
    return state.results[start : start + PRODUCT_WINDOW]


def _results_page(state: PageState, instruction: str, catalog: Catalog) -> Page:
    # As results_page.html: "< Prev" only after page 1, "Next >" always (past the end: an empty page).
    total = f"Page {state.page_number} (Total results: {len(state.results)})"
    parts = ["Instruction:", instruction, "Back to Search", total]
    clickables = {BACK_TO_SEARCH: ""}
    if state.page_number > 1:
        parts.append("< Prev")
        clickables[PREV_PAGE] = ""
    parts.append("Next >")
    clickables[NEXT_PAGE] = ""
    for asin in results_window(state):
        product = catalog.by_asin[asin]
        parts += [asin, product.title, product.price_tag]
        clickables[asin.lower()] = asin
    return Page(SEP.join(parts), clickables)


def _item_page(state: PageState, instruction: str, product: Product, clicked: list[str]) -> Page:
    parts = ["Instruction:", instruction, *clicked, "Back to Search", "< Prev"]
    clickables = {BACK_TO_SEARCH: "", PREV_PAGE: ""}
    if state.page == "item":
        for name, values in product.options.items():
            parts.append(name)
            parts.extend(values)
        parts += [product.title, f"Price: {product.price_tag}", f"Rating: {product.rating}"]
        parts += ["Description", "Features", "Reviews", "Buy Now"]
        clickables.update(dict.fromkeys((*SUB_PAGES, BUY_NOW), ""))
        for name, values in product.options.items():
            for value in values:
                clickables.setdefault(clickable_value(value), name)
    elif state.page == "description":
        parts.append(product.description)
    elif state.page == "features":
        parts.extend(product.bullet_points)
    else:
        for review in product.reviews:
            parts += [str(review.get(key, "")) for key in ("title", "score", "body")]
    return Page(SEP.join(parts), clickables)

"""A WebShop product and a catalogue of them (products, goals, search index), whatever their source:
the official files or the shared subset (``catalogue``), or a seed (``procedural``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina.envs.webshop.goals import GoalSet, GoalTemplate
from lamina.envs.webshop.search import SearchIndex

PRODUCT_WINDOW = 10  # products per results page


@dataclass(frozen=True, eq=False)
class Product:
    """One product as WebShop's engine sees it after ``load_products``.

    ``options`` maps an option name (``"size"``) to its values, lower case as WebShop shows them;
    ``price`` is the price the reward uses (drawn inside ``pricing`` for a range); ``contents`` is
    the indexed text (empty: built as WebShop builds it, see :func:`webshop_contents`).
    """

    asin: str
    title: str
    category: str
    query: str
    product_category: str
    price_tag: str
    pricing: tuple[float, ...]
    price: float
    options: dict[str, list[str]]
    attributes: list[str]
    bullet_points: list[str]
    description: str = ""
    reviews: list[dict[str, Any]] = field(default_factory=list)
    rating: str = "N.A."
    contents: str = ""


def webshop_contents(product: Product) -> str:
    """``convert_product_file_format.py``: title, description, first bullet, options, lower case."""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())
    first_bullet = product.bullet_points[0] if product.bullet_points else ""
    return " ".join([product.title, product.description, first_bullet, option_text]).lower()


class Catalog:
    """Products, their goals (WebShop's order, before the shuffle) and a search index (built once).

    Args:
        products: the products, in file order.
        goal_templates: what the instruction file says, in product order.
        name: for messages.
        price_seed: seeds the price-bound draws of the goals.
    """

    def __init__(
        self,
        products: Sequence[Product],
        goal_templates: Sequence[GoalTemplate],
        name: str,
        price_seed: int = 0,
    ):
        if not products:
            raise ValueError(f"catalogue {name!r} has no products")
        self.name = name
        self.products = list(products)
        self.by_asin = {p.asin: p for p in self.products}
        self.goals = GoalSet(self.by_asin, goal_templates, price_seed)
        if not len(self.goals):
            raise ValueError(f"catalogue {name!r} has no goals (no product with an instruction)")
        self._index = SearchIndex([p.contents or webshop_contents(p) for p in self.products])

    def __len__(self) -> int:
        return len(self.products)

    def __repr__(self) -> str:
        return f"Catalog({self.name!r}, products={len(self)}, goals={len(self.goals)})"

    def search(self, query: str) -> tuple[str, ...]:
        """ASINs of the best matches (at most 50), best first."""
        return tuple(self.products[i].asin for i in self._index.search(query))

    def clear_search_cache(self) -> None:
        """Forgets cached search results (for benchmarks; results never change)."""
        self._index.clear_cache()

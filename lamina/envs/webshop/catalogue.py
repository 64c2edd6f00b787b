"""Product catalogues, goals and BM25 search for the WebShop environment (``lamina.envs.webshop``).

Three sources, all turned into the same :class:`Catalog`:

- the official WebShop files (princeton-nlp/WebShop ``data/``): a product file in the raw
  ``items_shuffle*.json`` format (a JSON list of scraped products) or the processed format (JSON
  lines ``{"id", "contents", "product"}``, or a JSON list of processed products), plus an
  instruction file in the ``items_ins_v2*.json`` format (synthetic goals: ``{asin: {"attributes",
  "instruction", "instruction_attributes"}}``) or the ``items_human_ins*.json`` format (human
  goals: ``{asin: [{"instruction", "instruction_attributes", "instruction_options"}, ...]}``);
- the 100 real products in the shared data folder (``<shared>/webshop/products_100.jsonl`` with
  ``items_ins_v2_1000.json``), read in place;
- :func:`procedural_catalog`: any number of products and goals from a seed, with no data at all.

Goals follow WebShop's ``get_synthetic_goals``: one value per option of the goal product, the
instruction text plus ``" with <name>: <value>, and ..."`` and ``", and price lower than X dollars"``
with the bound drawn from WebShop's price grid. Where WebShop draws a range product's price
uniformly inside the range, the catalogue uses the low end (deterministic).
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from lamina.paths import shared_dir

SEARCH_RETURN_N = 50  # WebShop's engine returns at most 50 products per query
PRODUCT_WINDOW = 10  # products per results page
PRICE_RANGE = [10.0 * i for i in range(1, 100)]  # WebShop's grid of price bounds
NO_PRICE_BOUND = 1_000_000.0
SHARED_PRODUCTS = "products_100.jsonl"
SHARED_INSTRUCTIONS = "items_ins_v2_1000.json"
_SEARCH_CACHE_SIZE = 4096
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_STOPWORDS = frozenset(STOPWORDS_EN)


@dataclass(frozen=True, eq=False)
class Product:
    """One product as WebShop's engine sees it after ``load_products``.

    ``options`` maps an option name (``"size"``) to its values, lower case as WebShop shows them;
    ``price`` is the price used by the reward (the low end of ``pricing``).
    """

    asin: str
    title: str
    category: str
    query: str
    product_category: str
    price_tag: str
    pricing: tuple[float, ...]
    options: dict[str, list[str]]
    attributes: list[str]
    bullet_points: list[str]
    description: str = ""
    reviews: list[dict[str, Any]] = field(default_factory=list)
    rating: str = "N.A."

    @property
    def price(self) -> float:
        return self.pricing[0] if self.pricing else 100.0


@dataclass(frozen=True)
class GoalTemplate:
    """What an instruction file says about one goal product; options and price are drawn at reset.

    ``options`` is None for synthetic goals (one value per product option is drawn) and the human
    goal's option texts otherwise.
    """

    asin: str
    instruction: str
    attributes: tuple[str, ...]
    options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Goal:
    """A shopping goal: WebShop's goal dict with typed fields.

    ``options`` maps an option name of the goal product to the wanted value (for human goals whose
    option text matches no product value the key is ``"option <i>"``).
    """

    asin: str
    instruction_text: str
    attributes: tuple[str, ...]
    options: dict[str, str]
    price_upper: float
    name: str
    query: str
    category: str
    product_category: str


class Catalog:
    """Products, goal templates and a BM25 index over title + bullet points (built once)."""

    def __init__(self, products: Sequence[Product], goal_templates: Sequence[GoalTemplate], name: str):
        if not products:
            raise ValueError(f"catalogue {name!r} has no products")
        self.name = name
        self.products = list(products)
        self.by_asin = {p.asin: p for p in self.products}
        self._asins = [p.asin for p in self.products]
        self.goal_templates = [g for g in goal_templates if g.asin in self.by_asin and g.attributes]
        if not self.goal_templates:
            raise ValueError(f"catalogue {name!r} has no goals (no product with an instruction)")
        corpus = [search_tokens(" ".join([p.title, *p.bullet_points])) for p in self.products]
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus, show_progress=False)
        self._search_cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.products)

    def __repr__(self) -> str:
        return f"Catalog({self.name!r}, products={len(self)}, goals={len(self.goal_templates)})"

    def search(self, query: str) -> tuple[str, ...]:
        """ASINs of the best BM25 matches (score > 0, at most 50), best first; ties by catalogue order."""
        cached = self._search_cache.get(query)
        if cached is not None:
            self._search_cache.move_to_end(query)
            return cached
        vocabulary = self._bm25.vocab_dict
        token_ids = [vocabulary[w] for w in search_tokens(query) if w in vocabulary]
        if token_ids:
            scores = self._bm25.get_scores_from_ids(token_ids)
            top = np.flatnonzero(scores > 0)  # in catalogue order
            if len(top) > SEARCH_RETURN_N:
                kth_best = np.partition(scores[top], len(top) - SEARCH_RETURN_N)[len(top) - SEARCH_RETURN_N]
                top = top[scores[top] >= kth_best]
            top = top[np.argsort(-scores[top], kind="stable")][:SEARCH_RETURN_N]
            result = tuple(self._asins[i] for i in top.tolist())
        else:
            result = ()
        self._search_cache[query] = result
        if len(self._search_cache) > _SEARCH_CACHE_SIZE:
            self._search_cache.popitem(last=False)
        return result

    def clear_search_cache(self) -> None:
        """Forgets cached search results (for benchmarks; results never change)."""
        self._search_cache.clear()

    def sample_goal(self, rng: np.random.Generator) -> Goal:
        """Draws a goal: a template, one value per option (synthetic goals) and a price bound."""
        template = self.goal_templates[int(rng.integers(len(self.goal_templates)))]
        product = self.by_asin[template.asin]
        price_upper, price_text = _price_bound(product.price, rng)
        if template.options is None:
            options = {
                name: values[int(rng.integers(len(values)))]
                for name, values in sorted(product.options.items())
                if values
            }
            option_text = ", and ".join(f"{k}: {v}" for k, v in options.items())
            text = template.instruction + (f" with {option_text}" if option_text else "") + price_text
        else:
            options = _name_human_options(product, template.options)
            text = template.instruction.strip(".") + price_text
        return Goal(
            asin=product.asin,
            instruction_text=text,
            attributes=template.attributes,
            options=options,
            price_upper=price_upper,
            name=product.title,
            query=product.query,
            category=product.category,
            product_category=product.product_category,
        )


def search_tokens(text: str) -> list[str]:
    """``bm25s.tokenize``'s default rules (lower case, words of 2+ characters, English stopwords out)."""
    return [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]


def _price_bound(price: float, rng: np.random.Generator) -> tuple[float, str]:
    """WebShop's price goal: the larger of two of the four grid points just above the price."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) < 2:
        return NO_PRICE_BOUND, ""
    picked = sorted(rng.choice(len(candidates), size=2, replace=False))
    upper = candidates[int(picked[1])]
    return upper, f", and price lower than {upper:.2f} dollars"


def _name_human_options(product: Product, option_texts: Iterable[str]) -> dict[str, str]:
    """Keys a human goal's option texts by the product option whose values contain them."""
    named: dict[str, str] = {}
    for i, text in enumerate(option_texts):
        text = text.strip().lower()
        if not text:
            continue
        owner = next((k for k, values in product.options.items() if text in values and k not in named), None)
        named[owner or f"option {i}"] = text
    return named


# --------------------------------------------------------------------------- file catalogues


def _parse_pricing(pricing: Any) -> tuple[tuple[float, ...], str]:
    """WebShop's ``load_products`` price parsing: ``"$19.99 - $27.99"`` -> ((19.99, 27.99), tag)."""
    values: list[float] = []
    if isinstance(pricing, str):
        for part in pricing.split("$")[1:]:
            digits = re.sub(r"[^\d.]", "", part)
            try:
                values.append(float(Decimal(digits)))
            except ArithmeticError:
                continue
    elif isinstance(pricing, list | tuple):
        values = [float(v) for v in pricing]
    if not values:
        return (100.0,), "$100.0"
    if len(values) == 1:
        return (values[0],), f"${values[0]}"
    return (values[0], values[1]), f"${values[0]} to ${values[1]}"


def _raw_options(customization: Any) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    if not isinstance(customization, Mapping):
        return options
    for name, contents in customization.items():
        if not contents:
            continue
        options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
    return options


def _product_from_raw(raw: Mapping[str, Any], attributes: Sequence[str]) -> Product:
    """A product of ``items_shuffle*.json`` (the scraped format) as ``load_products`` builds it."""
    pricing, tag = _parse_pricing(raw.get("pricing"))
    bullets = raw.get("small_description") or []
    return Product(
        asin=raw["asin"],
        title=raw.get("name", ""),
        category=raw.get("category", ""),
        query=str(raw.get("query", "")).lower().strip(),
        product_category=raw.get("product_category", ""),
        price_tag=tag,
        pricing=pricing,
        options=_raw_options(raw.get("customization_options")),
        attributes=list(attributes) or ["DUMMY_ATTR"],
        bullet_points=bullets if isinstance(bullets, list) else [bullets],
        description=raw.get("full_description") or "",
        reviews=list(raw.get("Reviews") or []),
        rating=str(raw.get("Rating", "N.A.")),
    )


def _product_from_processed(p: Mapping[str, Any], attributes: Sequence[str]) -> Product:
    """A product already processed by WebShop (``Title``, ``BulletPoints``, ``options``, ...)."""
    pricing, tag = _parse_pricing(p.get("pricing"))
    return Product(
        asin=p["asin"],
        title=p.get("Title") or p.get("name", ""),
        category=p.get("category", ""),
        query=str(p.get("query", "")).lower().strip(),
        product_category=p.get("product_category", ""),
        price_tag=p.get("Price") or tag,
        pricing=pricing,
        options={k.lower(): [str(v).lower() for v in vs] for k, vs in (p.get("options") or {}).items() if vs},
        attributes=list(p.get("Attributes") or attributes) or ["DUMMY_ATTR"],
        bullet_points=list(p.get("BulletPoints") or []),
        description=p.get("Description") or "",
        reviews=list(p.get("Reviews") or []),
        rating=str(p.get("Rating", "N.A.")),
    )


def _read_product_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r["product"] if "product" in r and isinstance(r["product"], dict) else r for r in records]


def _goal_templates(instructions: Mapping[str, Any]) -> list[GoalTemplate]:
    templates = []
    for asin, entry in instructions.items():
        if isinstance(entry, list):  # human goals
            for goal in entry:
                attrs = tuple(goal.get("instruction_attributes") or ())
                if attrs and goal.get("instruction"):
                    options = tuple(o for o in goal.get("instruction_options") or () if o)
                    templates.append(GoalTemplate(asin, goal["instruction"], attrs, options))
        elif entry.get("instruction") and entry.get("instruction_attributes"):
            templates.append(GoalTemplate(asin, entry["instruction"], tuple(entry["instruction_attributes"])))
    return templates


def load_webshop_files(
    catalog_path: str | Path, instructions_path: str | Path, num_products: int | None = None
) -> Catalog:
    """Loads WebShop's product and instruction files (formats in the module docstring).

    Like WebShop, the first ``num_products`` products are kept, ASINs that are ``nan``, longer than
    10 characters or repeated are skipped, and products missing from the instruction file get the
    attribute ``DUMMY_ATTR``. Reviews come only from the product records (WebShop keeps them in a
    separate file this loader does not read).
    """
    catalog_path, instructions_path = Path(catalog_path), Path(instructions_path)
    for path in (catalog_path, instructions_path):
        if not path.is_file():
            raise FileNotFoundError(f"WebShop data file not found: {path}")
    instructions = json.loads(instructions_path.read_text(encoding="utf-8"))
    records = _read_product_records(catalog_path)
    if num_products is not None:
        records = records[:num_products]
    products: list[Product] = []
    seen: set[str] = set()
    for record in records:
        asin = str(record.get("asin", ""))
        if not asin or asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        entry = instructions.get(asin)
        if isinstance(entry, list):
            attributes = entry[0].get("attributes", []) if entry else []
        else:
            attributes = (entry or {}).get("attributes", [])
        processed = "Title" in record or "BulletPoints" in record
        products.append((_product_from_processed if processed else _product_from_raw)(record, attributes))
    return Catalog(products, _goal_templates(instructions), name=str(catalog_path))


def shared_webshop_dir() -> Path | None:
    """``<shared>/webshop`` if it holds the 100-product files, else None."""
    root = shared_dir()
    if root is None:
        return None
    folder = root / "webshop"
    ok = (folder / SHARED_PRODUCTS).is_file() and (folder / SHARED_INSTRUCTIONS).is_file()
    return folder if ok else None


# --------------------------------------------------------------------------- procedural catalogue

# (query, product category path, title nouns, option name -> value pool, price range)
_ProductType = tuple[str, str, tuple[str, ...], dict[str, tuple[str, ...]], tuple[float, float]]

_COLORS = ("black", "white", "navy blue", "red", "grey", "beige", "green", "pink", "brown", "purple")
_SIZES = ("x-small", "small", "medium", "large", "x-large", "xx-large")
_SHOE_SIZES = ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11", "12")
_PACKS = ("pack of 1", "pack of 2", "pack of 3", "pack of 6", "pack of 12")

_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[_ProductType, ...]]] = {
    "fashion": (
        (
            "machine wash",
            "quick drying",
            "non slip",
            "rubber sole",
            "polyester spandex",
            "long sleeve",
            "button closure",
            "daily wear",
            "lace up",
            "relaxed fit",
            "high waist",
            "moisture wicking",
        ),
        (
            (
                "men's running shoes",
                "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running",
                ("Running Shoes", "Sneakers", "Trail Runners"),
                {"size": _SHOE_SIZES, "color": _COLORS},
                (25, 140),
            ),
            (
                "women's dresses",
                "Clothing, Shoes & Jewelry › Women › Clothing › Dresses",
                ("Midi Dress", "Maxi Dress", "Wrap Dress"),
                {"size": _SIZES, "color": _COLORS},
                (15, 80),
            ),
            (
                "men's t-shirts",
                "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
                ("T-Shirt", "Crew Neck Tee", "Henley Shirt"),
                {"size": _SIZES, "color": _COLORS},
                (8, 35),
            ),
        ),
    ),
    "beauty": (
        (
            "sulfate free",
            "paraben free",
            "cruelty free",
            "long lasting",
            "easy to use",
            "natural ingredients",
            "dry skin",
            "sensitive skin",
            "travel size",
            "fragrance free",
            "hair growth",
            "coconut oil",
        ),
        (
            (
                "shampoo & conditioner",
                "Beauty & Personal Care › Hair Care › Shampoo & Conditioner",
                ("Shampoo", "Conditioner", "Shampoo and Conditioner Set"),
                {
                    "size": ("8 fl oz", "12 fl oz", "16 fl oz", "32 fl oz"),
                    "scent": ("lavender", "coconut", "unscented", "citrus", "mint"),
                },
                (6, 45),
            ),
            (
                "face moisturizers",
                "Beauty & Personal Care › Skin Care › Face › Moisturizers",
                ("Face Cream", "Moisturizer", "Night Cream"),
                {"size": ("1 oz", "1.7 oz", "2.5 oz")},
                (9, 70),
            ),
            (
                "lipstick",
                "Beauty & Personal Care › Makeup › Lips › Lipstick",
                ("Lipstick", "Matte Lip Color", "Lip Crayon"),
                {"color": ("red", "pink", "nude", "berry", "coral", "plum")},
                (5, 30),
            ),
        ),
    ),
    "electronics": (
        (
            "fast charging",
            "noise cancelling",
            "high definition",
            "usb port",
            "wireless bluetooth",
            "easy install",
            "long battery life",
            "water resistant",
            "plug and play",
            "compact size",
            "high speed",
            "hands free",
        ),
        (
            (
                "headphones",
                "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear",
                ("Headphones", "Over-Ear Headset", "Wireless Earphones"),
                {"color": ("black", "white", "silver", "blue")},
                (20, 250),
            ),
            (
                "phone chargers",
                "Electronics › Cell Phones & Accessories › Chargers & Power Adapters",
                ("Phone Charger", "Charging Cable", "Wall Charger"),
                {"size": ("3 ft", "6 ft", "10 ft"), "color": ("black", "white")},
                (7, 40),
            ),
            (
                "bluetooth speakers",
                "Electronics › Portable Audio & Video › Portable Speakers",
                ("Bluetooth Speaker", "Portable Speaker", "Party Speaker"),
                {"color": ("black", "red", "blue", "grey")},
                (18, 180),
            ),
        ),
    ),
    "garden": (
        (
            "easy clean",
            "space saving",
            "easy assemble",
            "solid wood",
            "stainless steel",
            "living room",
            "non toxic",
            "dishwasher safe",
            "heavy duty",
            "storage space",
            "mid century",
            "metal legs",
        ),
        (
            (
                "console tables",
                "Home & Kitchen › Furniture › Living Room Furniture › Tables › Console Tables",
                ("Console Table", "Sofa Table", "Entryway Table"),
                {"color": ("walnut", "espresso", "white", "black", "natural oak")},
                (60, 600),
            ),
            (
                "cookware sets",
                "Home & Kitchen › Kitchen & Dining › Cookware › Cookware Sets",
                ("Cookware Set", "Pots and Pans Set", "Frying Pan"),
                {"size": ("3 piece", "5 piece", "10 piece", "12 piece")},
                (30, 300),
            ),
            (
                "throw pillow covers",
                "Home & Kitchen › Bedding › Decorative Pillows › Throw Pillow Covers",
                ("Throw Pillow Covers", "Cushion Case", "Pillow Case"),
                {"size": ("16 x 16 inch", "18 x 18 inch", "20 x 20 inch"), "color": _COLORS},
                (8, 40),
            ),
        ),
    ),
    "grocery": (
        (
            "gluten free",
            "non gmo",
            "low sugar",
            "sugar free",
            "high protein",
            "plant based",
            "keto friendly",
            "ready to eat",
            "natural flavors",
            "dairy free",
            "low calorie",
            "individually wrapped",
        ),
        (
            (
                "protein bars",
                "Grocery & Gourmet Food › Snacks & Sweets › Bars › Protein Bars",
                ("Protein Bars", "Snack Bars", "Energy Bars"),
                {
                    "flavor name": ("chocolate", "peanut butter", "vanilla", "cookies and cream"),
                    "size": _PACKS,
                },
                (10, 60),
            ),
            (
                "coffee",
                "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee",
                ("Ground Coffee", "Whole Bean Coffee", "Coffee Pods"),
                {"flavor name": ("dark roast", "medium roast", "hazelnut", "decaf"), "size": _PACKS},
                (8, 50),
            ),
            (
                "herbal tea",
                "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Herbal",
                ("Herbal Tea", "Tea Bags", "Loose Leaf Tea"),
                {"flavor name": ("chamomile", "peppermint", "ginger", "hibiscus"), "size": _PACKS},
                (4, 30),
            ),
        ),
    ),
}

_BRAND_PARTS = (
    ("Zen", "Nova", "Aero", "Blue", "Terra", "Lumi", "Vita", "Orbi", "Kora", "Sol", "Pine", "Max"),
    ("field", "line", "craft", "peak", "wave", "nest", "works", "home", "leaf", "core", "ly", "ora"),
)
_STYLE_WORDS = (
    "Classic",
    "Premium",
    "Essential",
    "Modern",
    "Ultra",
    "Everyday",
    "Deluxe",
    "Signature",
    "Original",
    "Pro",
    "Lightweight",
    "Compact",
    "Vintage",
    "Soft",
    "Comfort",
)
_INSTRUCTION_FORMS = (
    "i am looking for {attrs} {query}",
    "i need {attrs} {query}",
    "find me {attrs} {query}",
    "i want to buy {query} that is {attrs}",
    "i'm searching for {query} that are {attrs}",
)
_ASIN_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_REVIEW_LINES = (
    ("Great value", 5, "Works exactly as described, would buy again."),
    ("Pretty good", 4, "Good quality for the price, shipping was quick."),
    ("It's okay", 3, "Does the job but feels a bit cheap."),
    ("Disappointed", 2, "Not what I expected from the pictures."),
)


def _join_attributes(attrs: Sequence[str]) -> str:
    return attrs[0] if len(attrs) == 1 else ", ".join(attrs[:-1]) + " and " + attrs[-1]


def _procedural_product(
    rng: random.Random, index: int, category: str, kind: _ProductType, pool: Sequence[str]
) -> tuple[Product, GoalTemplate]:
    query, path, nouns, option_pools, (low, high) = kind
    brand = rng.choice(_BRAND_PARTS[0]) + rng.choice(_BRAND_PARTS[1])
    style = rng.choice(_STYLE_WORDS)
    noun = rng.choice(nouns)
    attributes = rng.sample(pool, rng.randint(2, 4))
    features = f"{attributes[0].title()}, {attributes[1].title()}"
    title = f"{brand} {style} {noun}, {features} - Model {index + 1:04d}"
    options: dict[str, list[str]] = {}
    if rng.random() < 0.85:
        for name, values in option_pools.items():
            chosen = set(rng.sample(range(len(values)), rng.randint(2, min(len(values), 6))))
            options[name] = [v for i, v in enumerate(values) if i in chosen]
    price = float(int(rng.uniform(low, high))) + 0.99
    bullets = [f"{a.capitalize()}: designed with {a} in mind for everyday use." for a in attributes]
    bullets.append(f"{noun} by {brand}; satisfaction guaranteed.")
    reviews = [
        dict(zip(("title", "score", "body"), line, strict=True))
        for line in rng.sample(_REVIEW_LINES, rng.randint(0, 2))
    ]
    rating = f"{sum(r['score'] for r in reviews) / len(reviews):.1f}" if reviews else "N.A."
    asin = "B0" + "".join(rng.choices(_ASIN_CHARS, k=7)) + str(index % 10)
    product = Product(
        asin=asin,
        title=title,
        category=category,
        query=query,
        product_category=path,
        price_tag=f"${price:.2f}",
        pricing=(price,),
        options=options,
        attributes=attributes,
        bullet_points=bullets,
        description=f"The {style.lower()} {noun.lower()} from {brand}. {bullets[0]}",
        reviews=reviews,
        rating=rating,
    )
    goal_attrs = rng.sample(attributes, rng.randint(1, min(3, len(attributes))))
    instruction = rng.choice(_INSTRUCTION_FORMS).format(attrs=_join_attributes(goal_attrs), query=query)
    return product, GoalTemplate(asin, instruction, tuple(goal_attrs))


def procedural_catalog(num_products: int = 500, seed: int = 0) -> Catalog:
    """A synthetic catalogue: 5 categories x 3 product types, every product with one goal.

    Titles are unique (they end in a model number), ASINs are unique, prices lie in a range per
    product type, and each goal asks for 1-3 of the product's attributes in one of a few phrasings.
    The same ``(num_products, seed)`` gives the same catalogue (Python's ``random.Random``).
    """
    if num_products < 1:
        raise ValueError(f"num_products={num_products!r} must be at least 1")
    rng = random.Random(seed)
    kinds = [(cat, kind, pool) for cat, (pool, types) in _CATEGORIES.items() for kind in types]
    products, templates, asins = [], [], set()
    for index in range(num_products):
        category, kind, pool = rng.choice(kinds)
        product, template = _procedural_product(rng, index, category, kind, pool)
        while product.asin in asins:  # astronomically rare; redraw with the same generator
            product, template = _procedural_product(rng, index, category, kind, pool)
        asins.add(product.asin)
        products.append(product)
        templates.append(template)
    return Catalog(products, templates, name=f"procedural(num_products={num_products}, seed={seed})")


def load_catalog(
    catalog: str = "auto",
    catalog_path: str | Path | None = None,
    instructions_path: str | Path | None = None,
    num_products: int | None = None,
    catalog_seed: int = 0,
) -> Catalog:
    """The catalogue for the environment's arguments, built once per process and resolved source.

    ``catalog``: ``"files"`` (``catalog_path`` + ``instructions_path``), ``"shared"`` (the 100 real
    products of the shared folder), ``"procedural"`` (``num_products``, default 500, from
    ``catalog_seed``) or ``"auto"``: files if ``catalog_path`` is given, else shared if present,
    else procedural.

    Raises:
        ValueError: unknown ``catalog`` value or missing paths; FileNotFoundError: missing files.
    """
    if catalog == "auto":
        catalog = "files" if catalog_path else ("shared" if shared_webshop_dir() else "procedural")
    if catalog == "files":
        if not catalog_path or not instructions_path:
            raise ValueError("catalog='files' needs both catalog_path= and instructions_path=")
        return _cached_catalog(
            str(Path(catalog_path).resolve()), str(Path(instructions_path).resolve()), num_products, 0
        )
    if catalog == "shared":
        folder = shared_webshop_dir()
        if folder is None:
            raise FileNotFoundError(
                f"catalog='shared' needs <shared>/webshop/{SHARED_PRODUCTS} and {SHARED_INSTRUCTIONS}; "
                "set LAMINA_SHARED or use catalog='procedural'"
            )
        return _cached_catalog(
            str(folder / SHARED_PRODUCTS), str(folder / SHARED_INSTRUCTIONS), num_products, 0
        )
    if catalog == "procedural":
        return _cached_catalog(
            None, None, 500 if num_products is None else int(num_products), int(catalog_seed)
        )
    raise ValueError(f"catalog={catalog!r} is not known; valid: 'auto', 'files', 'shared', 'procedural'")


@functools.lru_cache(maxsize=8)
def _cached_catalog(
    catalog_path: str | None, instructions_path: str | None, num_products: int | None, seed: int
) -> Catalog:
    if catalog_path is None or instructions_path is None:
        return procedural_catalog(num_products or 500, seed)
    return load_webshop_files(catalog_path, instructions_path, num_products)

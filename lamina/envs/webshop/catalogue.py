"""Product catalogues for the WebShop environment: products, their goals and the search index.

Three sources, all turned into the same :class:`Catalog`:

- the official WebShop files (princeton-nlp/WebShop ``data/``): a product file in the raw
  ``items_shuffle*.json`` format (a JSON list of scraped products) or the processed format (JSON
  lines ``{"id", "contents", "product"}``, or a JSON list of processed products), plus an
  instruction file in the ``items_ins_v2*.json`` format (synthetic goals: ``{asin: {"attributes",
  "instruction", "instruction_attributes"}}``) or the ``items_human_ins*.json`` format (human
  goals: ``{asin: [{"instruction", "instruction_attributes", "instruction_options"}, ...]}``);
- the 100 real products in the shared data folder (``<shared>/webshop/products_100.jsonl`` with
  ``items_ins_v2_1000.json``), read in place;
- ``lamina.envs.webshop.procedural``: any number of products and goals from a seed.

Products are read as WebShop's ``load_products`` reads them; a range price (``$19.99 - $27.99``)
is drawn uniformly inside the range once per product, as ``generate_product_prices`` does, from a
generator seeded by ``price_seed``. Goals are WebShop's (``lamina.envs.webshop.goals``); search is
``lamina.envs.webshop.search`` over each product's ``contents``.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from lamina.envs.webshop.goals import GoalTemplate
from lamina.envs.webshop.procedural import procedural_catalog
from lamina.envs.webshop.products import Catalog, Product
from lamina.paths import shared_dir

SHARED_PRODUCTS = "products_100.jsonl"
SHARED_INSTRUCTIONS = "items_ins_v2_1000.json"
CATALOG_SOURCES = ("auto", "files", "shared", "procedural")


# --------------------------------------------------------------------------- file catalogues


def parse_pricing(pricing: Any) -> tuple[tuple[float, ...], str]:
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


def draw_price(pricing: Sequence[float], rng: random.Random) -> float:
    """``generate_product_prices``: the single price, or uniform inside a range."""
    if not pricing:
        return 100.0
    if len(pricing) == 1:
        return float(pricing[0])
    return rng.uniform(*pricing[:2])


def _raw_options(customization: Any) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    if not isinstance(customization, Mapping):
        return options
    for name, contents in customization.items():
        if contents is None:
            continue
        options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
    return options


def _product_from_raw(raw: Mapping[str, Any], attributes: Sequence[str], rng: random.Random) -> Product:
    """A product of ``items_shuffle*.json`` (the scraped format) as ``load_products`` builds it."""
    pricing, tag = parse_pricing(raw.get("pricing"))
    bullets = raw.get("small_description") or []
    return Product(
        asin=raw["asin"],
        title=raw.get("name", ""),
        category=raw.get("category", ""),
        query=str(raw.get("query", "")).lower().strip(),
        product_category=raw.get("product_category", ""),
        price_tag=tag,
        pricing=pricing,
        price=draw_price(pricing, rng),
        options=_raw_options(raw.get("customization_options")),
        attributes=list(attributes) or ["DUMMY_ATTR"],
        bullet_points=bullets if isinstance(bullets, list) else [bullets],
        description=raw.get("full_description") or "",
        reviews=list(raw.get("Reviews") or []),
        rating=str(raw.get("Rating", "N.A.")),
    )


def _product_from_processed(
    p: Mapping[str, Any], attributes: Sequence[str], rng: random.Random, contents: str = ""
) -> Product:
    """A product already processed by WebShop (``Title``, ``BulletPoints``, ``options``, ...)."""
    pricing, tag = parse_pricing(p.get("pricing"))
    return Product(
        asin=p["asin"],
        title=p.get("Title") or p.get("name", ""),
        category=p.get("category", ""),
        query=str(p.get("query", "")).lower().strip(),
        product_category=p.get("product_category", ""),
        price_tag=p.get("Price") or tag,
        pricing=pricing,
        price=draw_price(pricing, rng),
        options={k.lower(): [str(v).lower() for v in vs] for k, vs in (p.get("options") or {}).items()},
        attributes=list(p.get("Attributes") or attributes) or ["DUMMY_ATTR"],
        bullet_points=list(p.get("BulletPoints") or []),
        description=p.get("Description") or "",
        reviews=list(p.get("Reviews") or []),
        rating=str(p.get("Rating", "N.A.")),
        contents=contents,
    )


def _read_product_records(path: Path) -> list[tuple[dict[str, Any], str]]:
    """(product record, indexed ``contents`` or "") per line or list entry."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = []
    for r in records:
        if "product" in r and isinstance(r["product"], dict):
            out.append((r["product"], str(r.get("contents") or "")))
        else:
            out.append((r, ""))
    return out


def _goal_templates(instructions: Mapping[str, Any], asins: Sequence[str]) -> list[GoalTemplate]:
    """Templates in product order (WebShop walks ``all_products`` to build its goals)."""
    templates = []
    for asin in asins:
        entry = instructions.get(asin)
        if isinstance(entry, list):  # human goals
            for goal in entry:
                attrs = tuple(goal.get("instruction_attributes") or ())
                if attrs and goal.get("instruction"):
                    options = tuple(goal.get("instruction_options") or ())
                    templates.append(GoalTemplate(asin, goal["instruction"], attrs, options))
        elif isinstance(entry, Mapping) and entry.get("instruction") and entry.get("instruction_attributes"):
            templates.append(GoalTemplate(asin, entry["instruction"], tuple(entry["instruction_attributes"])))
    return templates


def load_webshop_files(
    catalog_path: str | Path,
    instructions_path: str | Path,
    num_products: int | None = None,
    price_seed: int = 0,
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
    rng = random.Random(price_seed)
    products: list[Product] = []
    seen: set[str] = set()
    for record, contents in records:
        asin = str(record.get("asin", ""))
        if not asin or asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        entry = instructions.get(asin)
        if isinstance(entry, list):
            attributes = entry[0].get("attributes", []) if entry else []
        else:
            attributes = (entry or {}).get("attributes", [])
        if "Title" in record or "BulletPoints" in record:
            products.append(_product_from_processed(record, attributes, rng, contents))
        else:
            products.append(_product_from_raw(record, attributes, rng))
    templates = _goal_templates(instructions, [p.asin for p in products])
    return Catalog(products, templates, name=str(catalog_path), price_seed=price_seed)


def shared_webshop_dir() -> Path | None:
    """``<shared>/webshop`` if it holds the 100-product files, else None."""
    root = shared_dir()
    if root is None:
        return None
    folder = root / "webshop"
    ok = (folder / SHARED_PRODUCTS).is_file() and (folder / SHARED_INSTRUCTIONS).is_file()
    return folder if ok else None


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
    else procedural. ``catalog_seed`` also seeds range prices and price bounds.

    Raises:
        ValueError: unknown ``catalog`` value or missing paths; FileNotFoundError: missing files.
    """
    if catalog == "auto":
        catalog = "files" if catalog_path else ("shared" if shared_webshop_dir() else "procedural")
    seed = int(catalog_seed)
    if catalog == "files":
        if not catalog_path or not instructions_path:
            raise ValueError("catalog='files' needs both catalog_path= and instructions_path=")
        return _cached_catalog(
            str(Path(catalog_path).resolve()), str(Path(instructions_path).resolve()), num_products, seed
        )
    if catalog == "shared":
        folder = shared_webshop_dir()
        if folder is None:
            raise FileNotFoundError(
                f"catalog='shared' needs <shared>/webshop/{SHARED_PRODUCTS} and {SHARED_INSTRUCTIONS}; "
                "set LAMINA_SHARED or use catalog='procedural'"
            )
        return _cached_catalog(
            str(folder / SHARED_PRODUCTS), str(folder / SHARED_INSTRUCTIONS), num_products, seed
        )
    if catalog == "procedural":
        return _cached_catalog(None, None, 500 if num_products is None else int(num_products), seed)
    valid = ", ".join(repr(c) for c in CATALOG_SOURCES)
    raise ValueError(f"catalog={catalog!r} is not known; valid: {valid}")


@functools.lru_cache(maxsize=8)
def _cached_catalog(
    catalog_path: str | None, instructions_path: str | None, num_products: int | None, seed: int
) -> Catalog:
    if catalog_path is None or instructions_path is None:
        return procedural_catalog(num_products or 500, seed)
    return load_webshop_files(catalog_path, instructions_path, num_products, price_seed=seed)

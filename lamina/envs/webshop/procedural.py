"""A procedural WebShop catalogue: any number of products and goals from a seed, no data needed.

Five categories x three product types, each with its own attribute pool, option pools and price
range. Every product gets one goal template (1-3 of its attributes in one of a few phrasings), so
goals follow WebShop's rule: one goal per option combination.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from lamina.envs.webshop.goals import GoalTemplate
from lamina.envs.webshop.products import Catalog, Product

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
    reviews: list[dict[str, Any]] = [
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
        price=price,
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
    """A synthetic catalogue: 5 categories x 3 product types, every product with one goal template.

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
    return Catalog(
        products, templates, name=f"procedural(num_products={num_products}, seed={seed})", price_seed=seed
    )

"""The synthetic shop's catalogue: the category vocabularies, the brands and the seeded item table.

Twelve categories, each with its own nouns, adjectives, specs, uses and feature sentences; about 60 brands with
Zipf-distributed popularity, each selling in 1-3 categories (head brands in 3, every category at least 3 brands).
Titles read "<Brand> <adjective> <noun> <spec>"; prices depend on the category. Each category has two fixed
successor categories, and each item a fixed "companion" in its category's first successor, of the same maker
when that maker makes one: the product lines the shoppers' sequences follow (`ml.data.synthetic_events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ml.data.synthetic_behaviour import Behaviour


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    specs: tuple[str, ...]
    uses: tuple[str, ...]
    features: tuple[str, ...]
    base_price: float


CATEGORIES: tuple[Category, ...] = (
    Category(
        "camping",
        ("tent", "sleeping bag", "camping stove", "headlamp", "trekking poles", "camp chair"),
        ("waterproof", "ultralight", "insulated", "packable", "four-season", "rugged"),
        ("2-person", "3-person", "20L", "-5C rated", "1.2 kg"),
        ("weekend trips", "alpine camps", "backcountry hikes"),
        (
            "Packs small and sets up in minutes.",
            "Seams are taped against heavy rain.",
            "Ships with a stuff sack.",
        ),
        90.0,
    ),
    Category(
        "kitchen",
        ("chef knife", "frying pan", "cutting board", "stockpot", "mixing bowls", "spatula set"),
        ("nonstick", "stainless", "cast-iron", "dishwasher-safe", "ceramic", "heavy-gauge"),
        ("28 cm", "5-piece", "8 inch", "6 qt", "induction-ready"),
        ("everyday cooking", "family dinners", "batch cooking"),
        ("Heats evenly on every hob.", "Riveted handle stays cool.", "Easy to clean after use."),
        40.0,
    ),
    Category(
        "audio",
        ("wireless earbuds", "headphones", "bluetooth speaker", "soundbar", "turntable", "microphone"),
        ("noise-cancelling", "portable", "hi-fi", "studio", "compact", "bass-boost"),
        ("30h battery", "40 mm drivers", "USB-C", "2.1 channel", "IPX7"),
        ("commuting", "home listening", "podcast recording"),
        (
            "Pairs in seconds with any phone.",
            "Tuned for clear vocals and deep bass.",
            "Charges fully in two hours.",
        ),
        80.0,
    ),
    Category(
        "running",
        ("running shoes", "trail shoes", "running vest", "compression socks", "gps watch", "running shorts"),
        ("lightweight", "cushioned", "breathable", "reflective", "carbon-plated", "grippy"),
        ("size 42", "8 mm drop", "5 inch", "12L", "solar"),
        ("race day", "long runs", "muddy trails"),
        ("Mesh upper keeps feet cool.", "Reflective details for night runs.", "Outsole grips on wet rock."),
        70.0,
    ),
    Category(
        "coffee",
        (
            "espresso machine",
            "coffee grinder",
            "pour-over kettle",
            "french press",
            "milk frother",
            "coffee beans",
        ),
        ("burr", "gooseneck", "programmable", "single-origin", "dark-roast", "double-wall"),
        ("1 L", "15 bar", "250 g", "40 settings", "8 cup"),
        ("morning espresso", "slow pour-over", "office coffee"),
        ("Brews a rich crema.", "Grind size adjusts in fine steps.", "Keeps coffee hot for hours."),
        60.0,
    ),
    Category(
        "gardening",
        ("pruning shears", "garden hose", "raised bed", "watering can", "seed starter kit", "compost bin"),
        ("expandable", "galvanized", "ergonomic", "frost-proof", "self-watering", "organic"),
        ("30 m", "120 L", "10 L", "72-cell", "4x8 ft"),
        ("vegetable patches", "balcony gardens", "orchard care"),
        ("Built to last through the seasons.", "Rust-resistant steel.", "Easy to assemble without tools."),
        35.0,
    ),
    Category(
        "baby",
        ("baby stroller", "car seat", "baby monitor", "diaper bag", "high chair", "baby carrier"),
        ("foldable", "convertible", "hypoallergenic", "wifi", "padded", "washable"),
        ("0-36 months", "5-point harness", "1080p", "25 L", "travel system"),
        ("city walks", "long car rides", "quiet nights"),
        ("Folds with one hand.", "Covers are machine washable.", "Tested to current safety standards."),
        110.0,
    ),
    Category(
        "pets",
        ("dog bed", "cat tree", "pet fountain", "dog leash", "cat litter", "chew toy"),
        ("orthopedic", "clumping", "retractable", "durable", "odour-control", "interactive"),
        ("large", "5 m", "2 L", "10 kg", "multi-level"),
        ("senior dogs", "indoor cats", "playful puppies"),
        ("Pets love it from day one.", "Non-toxic materials.", "Easy to keep clean."),
        30.0,
    ),
    Category(
        "fitness",
        ("yoga mat", "dumbbells", "resistance bands", "kettlebell", "foam roller", "pull-up bar"),
        ("non-slip", "adjustable", "solid-iron", "high-density", "doorway", "vinyl-coated"),
        ("6 mm", "2x10 kg", "16 kg", "5-pack", "90 cm"),
        ("home workouts", "strength training", "recovery days"),
        ("Stays put on any floor.", "Grip is comfortable when sweaty.", "Stores flat under a bed."),
        45.0,
    ),
    Category(
        "home office",
        ("office chair", "standing desk", "monitor arm", "desk lamp", "mechanical keyboard", "webcam"),
        ("ergonomic", "height-adjustable", "dimmable", "wireless", "gas-spring", "4k"),
        ("140 cm", "27 inch", "tenkeyless", "USB hub", "lumbar support"),
        ("long work days", "video calls", "small desks"),
        ("Adjusts to any posture.", "Cables tuck away neatly.", "Quiet in a shared room."),
        150.0,
    ),
    Category(
        "tools",
        ("cordless drill", "impact driver", "tool set", "tape measure", "work light", "stud finder"),
        ("brushless", "magnetic", "heavy-duty", "rechargeable", "compact", "precision"),
        ("18V", "108-piece", "8 m", "2 Ah", "1/2 inch chuck"),
        ("home repairs", "woodworking", "site work"),
        ("Battery lasts a full day.", "Case keeps every bit in place.", "Balanced for one-handed use."),
        75.0,
    ),
    Category(
        "skincare",
        ("moisturizer", "sunscreen", "face serum", "cleanser", "lip balm", "eye cream"),
        ("fragrance-free", "hydrating", "mineral", "vitamin C", "gentle", "overnight"),
        ("SPF 50", "50 ml", "30 ml", "for dry skin", "2-pack"),
        ("sensitive skin", "daily routines", "sunny holidays"),
        ("Dermatologist tested.", "Absorbs without a greasy feel.", "No parabens."),
        20.0,
    ),
)

_BRAND_HEADS = ("Nor", "Alta", "Kest", "Lumi", "Vero", "Tala", "Quin", "Brio", "Sol", "Mar", "Zeph", "Oro")
_BRAND_TAILS = ("vik", "ra", "el", "on", "ix", "ana", "ture", "co")


@dataclass
class Catalog:
    items: pd.DataFrame
    category: np.ndarray  # int index into CATEGORIES
    brand: np.ndarray  # int index into brands
    noun: np.ndarray
    adjective: np.ndarray
    spec: np.ndarray
    popularity: np.ndarray
    companion: np.ndarray
    brands: list[str]
    by_category: list[np.ndarray]  # item indices per category
    successors: np.ndarray  # (n_categories, 2) successor categories


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights 1/rank^exponent, ranks in random order, normalised."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    weights = weights[rng.permutation(n)]
    return weights / weights.sum()


def make_catalog(rng: np.random.Generator, n_items: int, cfg: Behaviour) -> Catalog:
    n_cat = len(CATEGORIES)
    names = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
    brands = [names[i] for i in rng.choice(len(names), size=cfg.n_brands, replace=False)]
    brand_pop = _zipf(cfg.n_brands, cfg.brand_zipf, rng)
    # each brand sells in 1-3 categories (head brands in more); every category gets at least 3 brands
    rank = np.argsort(-brand_pop)
    brand_cats: list[set[int]] = [set() for _ in range(cfg.n_brands)]
    for r, b in enumerate(rank):
        k = 3 if r < 8 else int(rng.integers(1, 3))
        brand_cats[b].update(int(c) for c in rng.choice(n_cat, size=k, replace=False))
    for c in range(n_cat):
        sellers = [b for b in range(cfg.n_brands) if c in brand_cats[b]]
        for b in rng.choice(
            [b for b in range(cfg.n_brands) if c not in brand_cats[b]],
            size=max(0, 3 - len(sellers)),
            replace=False,
        ):
            brand_cats[int(b)].add(c)
    category = rng.choice(n_cat, size=n_items, p=rng.dirichlet(np.full(n_cat, 8.0)))
    category[:n_cat] = np.arange(n_cat)  # every category has items
    brand = np.empty(n_items, dtype=np.int64)
    for c in range(n_cat):
        idx = np.flatnonzero(category == c)
        in_category = np.array([b for b in range(cfg.n_brands) if c in brand_cats[b]])
        w = brand_pop[in_category] ** 0.6
        brand[idx] = rng.choice(in_category, size=len(idx), p=w / w.sum())
    popularity = brand_pop[brand] * rng.lognormal(0.0, 0.8, n_items)
    noun = rng.integers(0, 6, n_items)
    adjective = rng.integers(0, 6, n_items)
    spec = rng.integers(0, 5, n_items)
    titles, descriptions, prices = [], [], []
    seen: dict[str, int] = {}
    for i in range(n_items):
        cat = CATEGORIES[category[i]]
        title = f"{brands[brand[i]]} {cat.adjectives[adjective[i]]} {cat.nouns[noun[i]]} {cat.specs[spec[i]]}"
        seen[title] = seen.get(title, 0) + 1
        if seen[title] > 1:  # a second product line of the same kind
            title = f"{title} mk{seen[title]}"
        titles.append(title)
        adj = cat.adjectives[adjective[i]]
        descriptions.append(
            f"{_with_article(adj, cat.nouns[noun[i]])} by {brands[brand[i]]}, "
            f"made for {cat.uses[rng.integers(len(cat.uses))]}. {cat.features[rng.integers(len(cat.features))]}"
        )
        prices.append(round(float(cat.base_price * rng.lognormal(0.0, 0.45)), 0) - 0.01)
    by_category = [np.flatnonzero(category == c) for c in range(n_cat)]
    successors = np.array(
        [rng.choice([d for d in range(n_cat) if d != c], size=2, replace=False) for c in range(n_cat)]
    )
    companion = _companions(rng, category, brand, popularity, by_category, successors, cfg.companion_pop_power)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n_items)],
            "title": titles,
            "description": descriptions,
            "brand": [brands[b] for b in brand],
            "category": [CATEGORIES[c].name for c in category],
            "price": np.array(prices, dtype=float),
        }
    )
    return Catalog(
        items, category, brand, noun, adjective, spec, popularity, companion, brands, by_category, successors
    )


def _companions(
    rng: np.random.Generator,
    category: np.ndarray,
    brand: np.ndarray,
    popularity: np.ndarray,
    by_category: list[np.ndarray],
    successors: np.ndarray,
    power: float,
) -> np.ndarray:
    """Each item's companion: an item of its category's first successor, of the same maker when that maker makes
    one, drawn by popularity ** power. Items that share a pool draw together (one uniform each, in item order: the
    same draws as one `rng.choice(pool, p=...)` per item, so the catalogue does not depend on the grouping), which
    keeps a 200,000-item catalogue to seconds."""
    n_items = len(category)
    uniforms = rng.random(n_items)
    pools: dict[tuple[int, int], list[int]] = {}
    for i in range(n_items):
        pools.setdefault((int(successors[category[i], 0]), int(brand[i])), []).append(i)
    companion = np.empty(n_items, dtype=np.int64)
    for (successor, maker), members in pools.items():
        pool = by_category[successor]
        same_brand = pool[brand[pool] == maker]
        pool = same_brand if len(same_brand) else pool
        w = popularity[pool] ** power
        cdf = (w / w.sum()).cumsum()  # as Generator.choice builds it from p
        cdf /= cdf[-1]
        companion[members] = pool[cdf.searchsorted(uniforms[members], side="right")]
    return companion


def _with_article(adjective: str, noun: str) -> str:
    """ "An ultralight tent", "Breathable compression socks" (plural nouns take no article)."""
    if noun.endswith("s"):
        return f"{adjective[0].upper()}{adjective[1:]} {noun}"
    return f"{'An' if adjective[0] in 'aeiou' else 'A'} {adjective} {noun}"

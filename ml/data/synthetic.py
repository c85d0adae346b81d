"""The demo's synthetic shop: a seeded catalog, shoppers and event log with structure a model can learn.

What is planted, so a good model has something to find and the chain's guards have work to do:
- 12 categories, each with its own vocabulary (nouns, adjectives, specs, uses); about 60 brands whose
  popularity is Zipf-distributed (a few head brands take much of the traffic). Titles read
  "<Brand> <adjective> <noun> <spec>"; descriptions are a sentence or two; prices depend on the category.
- Shoppers with gender (f/m/x), age band and region. Each has 1-3 preferred categories and two favourite
  brands ("x" = gender not stated, 12%). Age band and gender tilt WHICH categories a shopper prefers, never
  how predictable they are.
- Sequences that text alone cannot explain: a fixed random category -> next-category matrix (two successors
  per category), a fixed "companion" per item in its category's first successor, of the same maker when that
  maker makes one (this tent -> that maker's stove: product lines), loyalty to brands already in the shopper's history, occasional repeats, and add-to-cart followed
  by purchase.
- Activity long-tailed (5..60 events a shopper) over `days`, in sessions. Searches carry a query built from
  the clicked item's vocabulary and are followed by that click.
- PII in free text: about 1% of search queries hold an e-mail address or phone number, a few item
  descriptions a phone number. Only reserved, fictional values are used (example.com/org/net addresses,
  +1 555-01xx and +44 20 7946 0xxx numbers).
- Privacy requests: about 1% of shoppers opt out (mid-period), about 0.5% ask for deletion.
- With `bad_rows=True`, about 0.2% extra rows that break the contract (unknown event type, missing user id,
  search without query, duplicate event id, unparseable timestamp; items with a negative price). They are
  added rows drawn from their own random stream, so the clean rows are the same either way.

`ts` in the events and privacy-request tables is ISO-8601 text ("2026-01-05T09:13:22Z"), as in a raw log
(one bad row's is not a date at all); `schema.validate` parses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.data.raw import RawTables, SourceRequest

log = logging.getLogger(__name__)

NAME = "synthetic"
SPLIT_SHARE = 0.85  # split_time = start + 85% of the span
GENDERS = ("f", "m", "x")
GENDER_SHARES = (0.45, 0.43, 0.12)  # x: not stated
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES = (0.18, 0.24, 0.22, 0.19, 0.17)
REGIONS = ("north", "south", "east", "west", "central")


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
_FIRST = ("jane", "john", "maria", "li", "ahmed", "sofia", "lukas", "emma", "noah", "aisha")
_LAST = ("doe", "smith", "garcia", "chen", "khan", "rossi", "muller", "okafor", "novak", "silva")


@dataclass(frozen=True)
class Behaviour:
    """The knobs of the shopper model (probabilities per step unless said otherwise)."""

    n_brands: int = 60
    age_tilt: float = 0.25  # weight of the age band's category taste in a shopper's category preferences
    gender_tilt: float = 0.10  # the same for gender; the rest is uniform
    brand_zipf: float = 1.1
    p_companion: float = 0.35  # next item = the last item's fixed companion
    companion_pop_power: float = 0.3  # companions are drawn by popularity**power: < 1 reaches the long tail
    p_transition: float = 0.35  # else: a successor category of the last one
    p_stay: float = 0.20  # else: the same category; otherwise one of the shopper's preferred categories
    p_loyal: float = 0.45  # pick a brand already in the shopper's history when the category has one
    favourite_boost: float = 4.0  # weight multiplier of a shopper's two favourite brands
    p_repeat: float = 0.04  # re-visit an item from the history
    p_search: float = 0.18  # a step starts with a search
    visit_types: tuple[tuple[str, float], ...] = (
        ("view", 0.40),
        ("click", 0.30),
        ("add_to_cart", 0.15),
        ("purchase", 0.15),
    )
    p_cart_then_buy: float = 0.35
    p_new_session: float = 0.3
    events_median: float = 11.0
    events_sigma: float = 0.75
    events_min: int = 5
    events_max: int = 60
    pii_query_share: float = 0.01
    pii_item_share: float = 0.004
    opt_out_share: float = 0.01
    delete_share: float = 0.005
    bad_row_share: float = 0.002


@dataclass
class _Catalog:
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


def generate(
    n_users: int = 2000,
    n_items: int = 1200,
    seed: int = 7,
    start: str = "2026-01-05",
    days: int = 84,
    bad_rows: bool = True,
    behaviour: Behaviour | None = None,
) -> RawTables:
    """A seeded synthetic shop (see the module docstring): same arguments, identical frames.
    `behaviour` overrides the shopper model's knobs (default `Behaviour()`)."""
    if n_users < 1 or n_items < len(CATEGORIES) or days < 1:
        raise ValueError(
            f"synthetic: need n_users >= 1, n_items >= {len(CATEGORIES)} and days >= 1; "
            f"got n_users={n_users}, n_items={n_items}, days={days}"
        )
    cfg = behaviour or Behaviour()
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    span = pd.Timedelta(days=days)
    catalog = _make_catalog(rng, n_items, cfg)
    users, prefs, favourites = _make_users(rng, n_users, cfg, catalog)
    events = _simulate(rng, catalog, prefs, favourites, cfg, t0, span)
    _plant_pii(rng, events, catalog.items, cfg)
    requests = _privacy_requests(rng, users["user_id"].to_numpy(), cfg, t0, span)
    items = catalog.items
    if bad_rows:
        bad_rng = np.random.default_rng([seed, 1])
        events = _bad_events(bad_rng, events, cfg)
        items = _bad_items(bad_rng, items, cfg)
    split_time = t0 + SPLIT_SHARE * span
    log.info(
        "synthetic: %d items, %d users, %d events, %d privacy requests (seed %d, split %s)",
        len(items),
        len(users),
        len(events),
        len(requests),
        seed,
        split_time,
    )
    return RawTables(
        name=NAME,
        items=items,
        users=users,
        events=events,
        privacy_requests=requests,
        split_time=pd.Timestamp(split_time),
    )


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights 1/rank^exponent, ranks in random order, normalised."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    weights = weights[rng.permutation(n)]
    return weights / weights.sum()


def _make_catalog(rng: np.random.Generator, n_items: int, cfg: Behaviour) -> _Catalog:
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
    companion = np.empty(n_items, dtype=np.int64)
    for i in range(n_items):  # each item's companion: an item of its category's first successor,
        pool = by_category[successors[category[i], 0]]  # of the same maker when that maker makes one
        same_brand = pool[brand[pool] == brand[i]]
        pool = same_brand if len(same_brand) else pool
        w = popularity[pool] ** cfg.companion_pop_power
        companion[i] = rng.choice(pool, p=w / w.sum())
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
    return _Catalog(
        items, category, brand, noun, adjective, spec, popularity, companion, brands, by_category, successors
    )


def _with_article(adjective: str, noun: str) -> str:
    """ "An ultralight tent", "Breathable compression socks" (plural nouns take no article)."""
    if noun.endswith("s"):
        return f"{adjective[0].upper()}{adjective[1:]} {noun}"
    return f"{'An' if adjective[0] in 'aeiou' else 'A'} {adjective} {noun}"


def _make_users(
    rng: np.random.Generator, n_users: int, cfg: Behaviour, catalog: _Catalog
) -> tuple[pd.DataFrame, list[np.ndarray], np.ndarray]:
    n_cat = len(CATEGORIES)
    gender = rng.choice(len(GENDERS), size=n_users, p=GENDER_SHARES)
    age = rng.choice(len(AGE_BANDS), size=n_users, p=AGE_SHARES)
    region = rng.integers(0, len(REGIONS), n_users)
    # groups tilt which categories are preferred (mildly), not how predictable a shopper is
    age_tilt = rng.dirichlet(np.ones(n_cat), size=len(AGE_BANDS))
    gender_tilt = rng.dirichlet(np.ones(n_cat), size=len(GENDERS))
    brand_pop = np.bincount(catalog.brand, weights=catalog.popularity, minlength=cfg.n_brands)
    brand_pop = brand_pop / brand_pop.sum()
    uniform = 1.0 - cfg.age_tilt - cfg.gender_tilt
    cat_p = (
        uniform / n_cat + cfg.age_tilt * age_tilt[age] + cfg.gender_tilt * gender_tilt[gender]
    )  # rows sum to 1
    n_pref = rng.choice([1, 2, 3], size=n_users, p=[0.3, 0.45, 0.25])
    ranked = _sample_without_replacement(rng, cat_p)
    prefs = [ranked[u, : n_pref[u]] for u in range(n_users)]
    favourites = _sample_without_replacement(rng, np.broadcast_to(brand_pop, (n_users, cfg.n_brands)))[:, :2]
    users = pd.DataFrame(
        {
            "user_id": [f"shopper-{u:05d}" for u in range(n_users)],
            "gender": [GENDERS[g] for g in gender],
            "age_band": [AGE_BANDS[a] for a in age],
            "region": [REGIONS[r] for r in region],
        }
    )
    return users, prefs, favourites


def _sample_without_replacement(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Per row, all columns in a random order drawn without replacement with probabilities p (Gumbel top-k)."""
    keys = np.log(np.maximum(p, 1e-300)) + rng.gumbel(size=p.shape)
    return np.argsort(-keys, axis=1)


def _pick_item(
    rng: np.random.Generator,
    catalog: _Catalog,
    c: int,
    favourite: np.ndarray,
    seen_brand: np.ndarray,
    cfg: Behaviour,
) -> int:
    """An item of category `c`: popularity x favourite-brand boost, often only among brands already bought."""
    pool = catalog.by_category[c]
    brands = catalog.brand[pool]
    weights = catalog.popularity[pool] * np.where(favourite[brands], cfg.favourite_boost, 1.0)
    if rng.random() < cfg.p_loyal:
        loyal = seen_brand[brands]
        if loyal.any():
            weights = np.where(loyal, weights, 0.0)
    cum = np.cumsum(weights)
    return int(pool[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(pool) - 1)])


def _next_item(
    rng: np.random.Generator,
    catalog: _Catalog,
    pref: np.ndarray,
    favourite: np.ndarray,
    seq: list[int],
    seen_brand: np.ndarray,
    cfg: Behaviour,
) -> int:
    """The shopper's next item: repeat, companion, successor category, same category or a preferred one."""
    if not seq:
        return _pick_item(rng, catalog, int(pref[rng.integers(len(pref))]), favourite, seen_brand, cfg)
    last = seq[-1]
    r = rng.random()
    if r < cfg.p_repeat:
        return seq[int(rng.integers(len(seq)))]
    r = rng.random()
    if r < cfg.p_companion:
        return int(catalog.companion[last])
    r -= cfg.p_companion
    c_last = int(catalog.category[last])
    if r < cfg.p_transition:
        c = int(catalog.successors[c_last, 0 if rng.random() < 0.6 else 1])
    elif r < cfg.p_transition + cfg.p_stay:
        c = c_last
    else:
        c = int(pref[rng.integers(len(pref))])
    return _pick_item(rng, catalog, c, favourite, seen_brand, cfg)


def _query(rng: np.random.Generator, catalog: _Catalog, item: int) -> str:
    """What a shopper types to find `item`: words of its title, lower case."""
    cat = CATEGORIES[catalog.category[item]]
    noun, adj = cat.nouns[catalog.noun[item]], cat.adjectives[catalog.adjective[item]]
    form = rng.random()
    if form < 0.45:
        query = f"{adj} {noun}"
    elif form < 0.70:
        query = noun
    elif form < 0.85:
        query = f"{catalog.brands[catalog.brand[item]]} {noun}"
    else:
        query = f"{noun} {cat.specs[catalog.spec[item]]}"
    return query.lower()


def _simulate(
    rng: np.random.Generator,
    catalog: _Catalog,
    prefs: list[np.ndarray],
    favourites: np.ndarray,
    cfg: Behaviour,
    t0: pd.Timestamp,
    span: pd.Timedelta,
) -> pd.DataFrame:
    """One event log for all shoppers, sorted by time, with ids e0000000.. in that order."""
    types, probs = zip(*cfg.visit_types, strict=True)
    type_cum = np.cumsum(probs) / sum(probs)
    span_s = int(span.total_seconds())
    users_col: list[int] = []
    items_col: list[int] = []
    type_col: list[str] = []
    query_col: list[str | None] = []
    ts_col: list[int] = []
    n_events = np.clip(
        np.round(rng.lognormal(np.log(cfg.events_median), cfg.events_sigma, len(prefs))),
        cfg.events_min,
        cfg.events_max,
    ).astype(int)
    n_brands = len(catalog.brands)
    for u, target in enumerate(n_events):
        seq: list[int] = []
        seen_brand = np.zeros(n_brands, dtype=bool)
        favourite = np.zeros(n_brands, dtype=bool)
        favourite[favourites[u]] = True
        kinds: list[tuple[int | None, str, str | None]] = []  # (item, type, query)
        while len(kinds) < target:
            item = _next_item(rng, catalog, prefs[u], favourite, seq, seen_brand, cfg)
            seq.append(item)
            seen_brand[catalog.brand[item]] = True
            if rng.random() < cfg.p_search:
                kinds.append((None, "search", _query(rng, catalog, item)))
                kinds.append((item, "click", None))
                continue
            kind = types[int(np.searchsorted(type_cum, rng.random(), side="right"))]
            kinds.append((item, kind, None))
            if kind == "add_to_cart" and rng.random() < cfg.p_cart_then_buy:
                kinds.append((item, "purchase", None))
        if kinds[target - 1][1] == "search":  # cut between a search and its click: keep the click alone
            kinds[target - 1] = kinds[target]
        kinds = kinds[:target]
        # sessions: a few events minutes apart, sessions spread over the whole period
        new = rng.random(len(kinds)) < cfg.p_new_session
        new[0] = True
        starts = np.sort(rng.integers(0, span_s - 3 * 3600, int(new.sum())))
        gaps = rng.exponential(90.0, len(kinds)).astype(int) + 5
        session = np.cumsum(new) - 1
        last = -1
        for k, (event_item, kind, query) in enumerate(kinds):
            t = int(starts[session[k]]) if new[k] else last + int(gaps[k])
            t = max(t, last + 1)
            last = t
            users_col.append(u)
            items_col.append(-1 if event_item is None else event_item)
            type_col.append(kind)
            query_col.append(query)
            ts_col.append(t)
    ts = np.array(ts_col, dtype=np.int64)
    user = np.array(users_col, dtype=np.int64)
    order = np.lexsort((np.arange(len(ts)), user, ts))
    item_ids = catalog.items["item_id"].to_numpy()
    items_arr = np.array(items_col, dtype=np.int64)[order]
    stamps = _iso(t0, ts[order])
    return pd.DataFrame(
        {
            "event_id": [f"e{k:07d}" for k in range(len(order))],
            "user_id": [f"shopper-{u:05d}" for u in user[order]],
            "item_id": np.where(items_arr >= 0, item_ids[np.maximum(items_arr, 0)], None),
            "event_type": np.array(type_col, dtype=object)[order],
            "query": np.array(query_col, dtype=object)[order],
            "ts": np.asarray(stamps, dtype=object),
        }
    )


def _iso(t0: pd.Timestamp, seconds: np.ndarray) -> np.ndarray:
    """ISO-8601 UTC text ("2026-01-05T09:13:22Z") for t0 + seconds."""
    base = np.datetime64(t0.tz_convert(None).to_datetime64(), "s")
    text = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return np.char.add(text, "Z").astype(object)


def _email(rng: np.random.Generator) -> str:
    first, last = _FIRST[rng.integers(len(_FIRST))], _LAST[rng.integers(len(_LAST))]
    return f"{first}.{last}{rng.integers(10, 99)}@example.{('com', 'org', 'net')[rng.integers(3)]}"


def _phone(rng: np.random.Generator) -> str:
    n = int(rng.integers(100, 200))  # fictional ranges: US 555-0100..0199, UK 020 7946 0xxx
    area = ("212", "415", "646", "206")[rng.integers(4)]
    return (f"+1 {area} 555 0{n}", f"({area}) 555-0{n}", f"+44 20 7946 0{n}")[rng.integers(3)]


def _plant_pii(rng: np.random.Generator, events: pd.DataFrame, items: pd.DataFrame, cfg: Behaviour) -> None:
    """In place: e-mails and phone numbers in ~1% of queries, phone numbers in a few descriptions."""
    searches = np.flatnonzero(events["event_type"].to_numpy() == "search")
    n = max(1, round(cfg.pii_query_share * len(searches))) if len(searches) else 0
    templates = ("{q} {pii}", "{q} contact {pii}", "order status {pii}", "{pii} {q}")
    for row in rng.choice(searches, size=n, replace=False) if n else []:
        pii = _email(rng) if rng.random() < 0.5 else _phone(rng)
        query = events.at[row, "query"]
        events.at[row, "query"] = templates[rng.integers(len(templates))].format(q=query, pii=pii)
    k = max(2, round(cfg.pii_item_share * len(items)))
    for row in rng.choice(len(items), size=min(k, len(items)), replace=False):
        items.at[row, "description"] += f" Questions? Call our support line at {_phone(rng)}."


def _privacy_requests(
    rng: np.random.Generator, user_ids: np.ndarray, cfg: Behaviour, t0: pd.Timestamp, span: pd.Timedelta
) -> pd.DataFrame:
    n_opt = max(1, round(cfg.opt_out_share * len(user_ids)))
    n_del = max(1, round(cfg.delete_share * len(user_ids)))
    n_opt, n_del = min(n_opt, len(user_ids)), min(n_del, max(0, len(user_ids) - n_opt))
    chosen = rng.choice(len(user_ids), size=n_opt + n_del, replace=False)
    span_s = span.total_seconds()
    when = (
        np.concatenate(
            [rng.uniform(0.4, 0.6, n_opt), rng.uniform(0.2, 0.9, n_del)]  # opt-outs mid-period
        )
        * span_s
    )
    stamps = _iso(t0, np.round(when).astype(np.int64))
    frame = pd.DataFrame(
        {
            "user_id": user_ids[chosen],
            "request": ["opt_out"] * n_opt + ["delete"] * n_del,
            "ts": stamps,
        }
    )
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def _bad_events(rng: np.random.Generator, events: pd.DataFrame, cfg: Behaviour) -> pd.DataFrame:
    """Add ~0.2% rows that break the contract, one kind after another, at random places in the log."""
    kinds = (
        "unknown event_type",
        "missing user_id",
        "search without query",
        "duplicate event_id",
        "unparseable ts",
    )
    n = max(len(kinds), round(cfg.bad_row_share * len(events)))
    picked = rng.choice(len(events), size=n, replace=True)
    source = events.iloc[picked].reset_index(drop=True)
    bad = source.copy()
    positions = rng.integers(0, len(events) + 1, n)  # a bad row goes before the clean row at this position
    next_id = len(events)
    for k in range(n):
        kind = kinds[k % len(kinds)]
        bad.at[k, "event_id"] = f"e{next_id + k:07d}"
        if kind == "unknown event_type":
            bad.at[k, "event_type"] = ("wishlist", "share", "CLICK")[rng.integers(3)]
        elif kind == "missing user_id":
            bad.at[k, "user_id"] = None if rng.random() < 0.5 else ""
        elif kind == "search without query":
            bad.at[k, "event_type"], bad.at[k, "item_id"], bad.at[k, "query"] = "search", None, None
        elif kind == "duplicate event_id":  # a replay of an earlier event, later in the log
            bad.at[k, "event_id"] = source.at[k, "event_id"]
            positions[k] = rng.integers(picked[k] + 1, len(events) + 1)
        else:
            bad.at[k, "ts"] = ("2026-02-30T25:61:00Z", "yesterday", "n/a")[rng.integers(3)]
    combined = pd.concat([events, bad], ignore_index=True)
    # spread the bad rows through the log, keep the clean rows in order
    by_position = np.argsort(positions, kind="stable")
    order = np.insert(np.arange(len(events)), positions[by_position], len(events) + by_position)
    return combined.iloc[order].reset_index(drop=True)


def _bad_items(rng: np.random.Generator, items: pd.DataFrame, cfg: Behaviour) -> pd.DataFrame:
    """Add ~0.2% (at least one) catalog rows with a negative price."""
    n = max(1, round(cfg.bad_row_share * len(items)))
    bad = items.iloc[rng.choice(len(items), size=n, replace=False)].reset_index(drop=True).copy()
    bad["item_id"] = [f"i{len(items) + k:05d}" for k in range(n)]
    bad["price"] = -bad["price"].abs()
    return pd.concat([items, bad], ignore_index=True)


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return generate(n_users=request.n_users, n_items=request.n_items, seed=request.seed)

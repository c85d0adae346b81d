"""The synthetic shop's event log: each shopper's sequence of items, searches and sessions over the period.

The next item is a repeat, the last item's companion, an item of a successor category, of the same category or
of a preferred one; brands already in the history and the two favourites are favoured. Searches carry a query
built from the clicked item's vocabulary and are followed by that click; add-to-cart is often followed by a
purchase. Activity is long-tailed (5..60 events a shopper), in sessions of events minutes apart spread over the
period. Times are ISO-8601 text ("2026-01-05T09:13:22Z"), as in a raw log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.data.synthetic_catalog import CATEGORIES

if TYPE_CHECKING:
    from ml.data.synthetic_behaviour import Behaviour
    from ml.data.synthetic_catalog import Catalog


def _pick_item(
    rng: np.random.Generator,
    catalog: Catalog,
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
    catalog: Catalog,
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


def _query(rng: np.random.Generator, catalog: Catalog, item: int) -> str:
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


def simulate(
    rng: np.random.Generator,
    catalog: Catalog,
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
    stamps = iso_utc(t0, ts[order])
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


def iso_utc(t0: pd.Timestamp, seconds: np.ndarray) -> np.ndarray:
    """ISO-8601 UTC text ("2026-01-05T09:13:22Z") for t0 + seconds."""
    base = np.datetime64(t0.tz_convert(None).to_datetime64(), "s")
    text = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return np.char.add(text, "Z").astype(object)

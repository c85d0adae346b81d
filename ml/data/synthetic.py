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

This module is the entry point (`generate`, and `read` for the source registry `ml.data.sources`); the parts
live beside it: `synthetic_catalog` (categories, brands, items), `synthetic_shoppers` (shoppers and the
`Behaviour` knobs), `synthetic_events` (the event log), `synthetic_privacy` (PII and privacy requests) and
`synthetic_faults` (the rows that break the contract).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ml.data.raw import RawTables, SourceRequest
from ml.data.synthetic_behaviour import Behaviour
from ml.data.synthetic_catalog import CATEGORIES, make_catalog
from ml.data.synthetic_events import simulate
from ml.data.synthetic_faults import bad_events, bad_items
from ml.data.synthetic_privacy import plant_pii, privacy_requests
from ml.data.synthetic_shoppers import make_users

__all__ = ["NAME", "SPLIT_SHARE", "Behaviour", "generate", "read"]

log = logging.getLogger(__name__)

NAME = "synthetic"
SPLIT_SHARE = 0.85  # split_time = start + 85% of the span


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
    catalog = make_catalog(rng, n_items, cfg)
    users, prefs, favourites = make_users(rng, n_users, cfg, catalog)
    events = simulate(rng, catalog, prefs, favourites, cfg, t0, span)
    plant_pii(rng, events, catalog.items, cfg)
    requests = privacy_requests(rng, users["user_id"].to_numpy(), cfg, t0, span)
    items = catalog.items
    if bad_rows:
        bad_rng = np.random.default_rng([seed, 1])
        events = bad_events(bad_rng, events, cfg)
        items = bad_items(bad_rng, items, cfg)
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


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return generate(n_users=request.n_users, n_items=request.n_items, seed=request.seed)

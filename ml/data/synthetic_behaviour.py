"""The knobs of the synthetic shop: `Behaviour` holds every probability of the shopper model that
`ml.data.synthetic_events` plays out, read by the catalogue, the shoppers and the events alike."""

from __future__ import annotations

from dataclasses import dataclass


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

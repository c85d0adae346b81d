"""The synthetic shop: determinism, the contract's shape, planted structure, PII, privacy requests, bad rows."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from ml.data import schema, synthetic
from ml.data.sources import RawTables, read_source
from ml.data.synthetic_catalog import CATEGORIES
from ml.data.synthetic_shoppers import AGE_BANDS, REGIONS

PII = re.compile(r"@example\.|555[ -]01\d\d|7946 0\d\d\d")


@pytest.fixture(scope="module")
def shop() -> RawTables:
    return synthetic.generate()  # the demo default: 2000 shoppers x 1200 items, seed 7


@pytest.fixture(scope="module")
def clean(shop) -> dict[str, pd.DataFrame]:
    """The accepted rows of each table (bad rows quarantined by the contract)."""
    items, _ = schema.validate("items", shop.items)
    return {
        "items": items,
        "events": schema.validate("events", shop.events, known_items=set(items["item_id"]))[0],
        "users": schema.validate("users", shop.users)[0],
    }


def item_events(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["item_id"].notna()].sort_values(["user_id", "ts", "event_id"], kind="stable")


# --- determinism and the contract ---------------------------------------------------------------------------


def test_same_seed_same_frames_other_seed_other_frames():
    a, b = synthetic.generate(300, 150, seed=3), synthetic.generate(300, 150, seed=3)
    for table in ("items", "users", "events", "privacy_requests"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
    assert a.split_time == b.split_time
    c = synthetic.generate(300, 150, seed=4)
    assert not a.events["item_id"].equals(c.events["item_id"])
    assert not a.items["title"].equals(c.items["title"])


def test_read_source_synthetic_passes_the_sizes():
    raw = read_source("synthetic", None, n_users=40, n_items=30, seed=1)
    pd.testing.assert_frame_equal(raw.events, synthetic.generate(40, 30, seed=1).events)
    assert raw.name == "synthetic" and len(raw.users) == 40


def test_shape_ids_and_period(shop):
    assert (len(shop.users), shop.users["user_id"].is_unique) == (2000, True)
    assert shop.users["user_id"].str.fullmatch(r"shopper-\d{5}").all()
    assert shop.items["item_id"].str.fullmatch(r"i\d{5}").all() and shop.items["item_id"].is_unique
    assert set(shop.users["gender"]) == {"f", "m", "x"}
    assert set(shop.users["age_band"]) == set(AGE_BANDS)
    assert shop.users["region"].isin(REGIONS).all()
    assert shop.items["category"].nunique() == 12
    assert 55 <= shop.items["brand"].nunique() <= 60
    start = pd.Timestamp("2026-01-05", tz="UTC")
    assert shop.split_time == start + 0.85 * pd.Timedelta(days=84)
    stamps = pd.to_datetime(shop.events["ts"], utc=True, errors="coerce").dropna()
    assert stamps.min() >= start and stamps.max() < start + pd.Timedelta(days=84)
    assert 0.08 < (stamps >= shop.split_time).mean() < 0.25  # a real hold-out, not a sliver


def test_clean_generation_keeps_the_contract_and_bad_rows_are_only_added():
    bad, good = synthetic.generate(500, 300, seed=5), synthetic.generate(500, 300, seed=5, bad_rows=False)
    for table in ("items", "users", "events", "privacy_requests"):
        accepted, quarantined = schema.validate(table, getattr(good, table))
        assert quarantined.empty, (table, quarantined["reason"].tolist()[:3])
    # the clean rows are the same with or without injected rows, in the same order
    kept = bad.events[bad.events["event_id"].isin(good.events["event_id"])].drop_duplicates("event_id")
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), good.events)
    pd.testing.assert_frame_equal(bad.items.iloc[: len(good.items)], good.items)


def test_bad_rows_exercise_every_quarantine_reason(shop):
    _, bad_events = schema.validate("events", shop.events)
    _, bad_items = schema.validate("items", shop.items)
    reasons = set(bad_events["reason"]) | set(bad_items["reason"])
    assert {
        "user_id is missing",
        "search event without query",
        "duplicate event_id",
        "ts is not a timestamp",
        "price is negative",
    } <= reasons
    assert any(r.startswith("event_type not in") for r in reasons)
    assert 0.001 <= len(bad_events) / len(shop.events) <= 0.004
    assert 1 <= len(bad_items) <= 5


# --- realism ---------------------------------------------------------------------------------------------


def test_catalog_text_reads_like_a_shop(clean):
    items = clean["items"]
    first = items.iloc[0]
    assert first["title"].startswith(first["brand"] + " ")
    vocab = {c.name: c for c in CATEGORIES}
    for _, item in items.head(200).iterrows():
        cat = vocab[item["category"]]
        assert any(noun in item["title"] for noun in cat.nouns)
        assert 1 <= item["description"].count(".") <= 4
    assert items["title"].is_unique
    prices = items.groupby("category")["price"].median()
    assert prices["home office"] > 2 * prices["skincare"]


def test_a_few_head_brands_hold_much_of_the_traffic(clean):
    events = clean["events"].merge(clean["items"][["item_id", "brand"]], on="item_id")
    share = events["brand"].value_counts(normalize=True)
    assert share.head(5).sum() > 0.4
    assert (share < 0.005).sum() >= 15  # and a long tail


def test_activity_is_long_tailed(clean):
    per_user = clean["events"].groupby("user_id").size()
    assert per_user.min() >= 5 and per_user.max() <= 60
    assert per_user.median() < per_user.mean() and (per_user >= 40).sum() >= 20


def test_sequences_follow_category_transitions_and_brand_loyalty(clean):
    events = item_events(clean["events"]).merge(clean["items"][["item_id", "category", "brand"]], on="item_id")
    events = events.sort_values(["user_id", "ts", "event_id"], kind="stable")
    nexts: dict[str, Counter] = defaultdict(Counter)
    repeat, chance = [], []
    brand_share = events["brand"].value_counts(normalize=True).to_dict()
    for _, g in events.groupby("user_id"):
        cats, brands = g["category"].tolist(), g["brand"].tolist()
        for a, b in zip(cats, cats[1:], strict=False):
            if a != b:
                nexts[a][b] += 1
        seen: set[str] = set()
        seen_share = 0.0  # chance of a seen brand if brands were drawn by their overall share
        for k, brand in enumerate(brands):
            if k:
                repeat.append(brand in seen)
                chance.append(seen_share)
            if brand not in seen:
                seen.add(brand)
                seen_share += brand_share[brand]
    top_share = [c.most_common(1)[0][1] / c.total() for c in nexts.values()]
    assert min(top_share) > 0.25  # vs 1/11 if the next category were uniform
    assert np.mean(repeat) > 1.3 * np.mean(chance)


def test_searches_are_followed_by_a_click_on_a_matching_item(clean):
    events = clean["events"].sort_values(["user_id", "ts", "event_id"], kind="stable").reset_index(drop=True)
    titles = clean["items"].set_index("item_id")["title"].str.lower()
    searches = events.index[(events["event_type"] == "search")]
    checked = 0
    for i in searches:
        if i + 1 >= len(events) or events.at[i + 1, "user_id"] != events.at[i, "user_id"]:
            continue
        nxt = events.loc[i + 1]
        assert nxt["event_type"] == "click"
        query = events.at[i, "query"]
        if not PII.search(query):
            assert all(word in titles[nxt["item_id"]] for word in query.split()), (
                query,
                titles[nxt["item_id"]],
            )
            checked += 1
    assert checked > 1000


def test_pii_is_planted_in_free_text(shop):
    queries = shop.events.loc[shop.events["event_type"] == "search", "query"].dropna()
    share = queries.str.contains(PII).mean()
    assert 0.005 <= share <= 0.02
    assert queries.str.contains("@example.").any() and queries.str.contains(r"555[ -]01|7946").any()
    assert 2 <= shop.items["description"].str.contains(PII).sum() <= 10


def test_privacy_requests(shop):
    req = shop.privacy_requests
    counts = req["request"].value_counts()
    assert (counts["opt_out"], counts["delete"]) == (20, 10)
    assert req["user_id"].is_unique and req["user_id"].isin(shop.users["user_id"]).all()
    start = pd.Timestamp("2026-01-05", tz="UTC")
    opt_out = pd.to_datetime(req.loc[req["request"] == "opt_out", "ts"], utc=True)
    assert opt_out.between(start + pd.Timedelta(days=84 * 0.4), start + pd.Timedelta(days=84 * 0.6)).all()


def ndcg(ranked: list[str], target: str) -> float:
    return 1 / np.log2(ranked.index(target) + 2) if target in ranked else 0.0


def holdout_scores(raw: RawTables) -> pd.DataFrame:
    """Per hold-out case (the chain's rule: each interaction event at/after split_time, history = the previous
    <= 10 item events), the NDCG@10 of item-transition counts learned before the split, and of popularity."""
    items, _ = schema.validate("items", raw.items)
    events = item_events(schema.validate("events", raw.events, known_items=set(items["item_id"]))[0])
    train = events[events["ts"] < raw.split_time]
    trans: dict[str, Counter] = defaultdict(Counter)
    for _, g in train.groupby("user_id"):
        seq = g["item_id"].tolist()
        for a in range(len(seq) - 1):
            for d in (1, 2, 3):
                if a + d < len(seq):
                    trans[seq[a]][seq[a + d]] += 0.6 ** (d - 1)
    popular = list(train.loc[train["event_type"].isin(schema.INTERACTION_TYPES), "item_id"].value_counts().index[:10])
    rows = []
    for user, g in events.groupby("user_id"):
        seq, stamps, kinds = g["item_id"].tolist(), g["ts"].tolist(), g["event_type"].tolist()
        for k in range(len(seq)):
            if stamps[k] < raw.split_time or kinds[k] not in schema.INTERACTION_TYPES:
                continue
            score: Counter = Counter()
            for j, item in enumerate(reversed(seq[max(0, k - 10) : k])):
                for nxt, c in trans[item].items():
                    score[nxt] += c * 0.7**j
            top = [i for i, _ in score.most_common(10)]
            rows.append({"user_id": user, "model": ndcg(top, seq[k]), "popular": ndcg(popular, seq[k])})
    return pd.DataFrame(rows).merge(raw.users, on="user_id")


def test_history_predicts_the_next_item_equally_well_for_every_group(shop):
    """Learnable, and fair by design: an item-transition baseline beats popularity by far on the hold-out, and
    its NDCG@10 min/max ratio across gender and age band is >= 0.8 (groups differ in taste, not predictability)."""
    cases = holdout_scores(shop)
    assert len(cases) > 2000
    assert cases["model"].mean() > 2 * cases["popular"].mean()
    for attribute in ("gender", "age_band"):
        by_group = cases.groupby(attribute)["model"].mean()
        assert by_group.min() / by_group.max() >= 0.8, by_group.to_dict()


def test_the_planted_sequence_structure_is_what_makes_history_predictive(shop):
    """Without companions, category transitions and brand loyalty, the same baseline loses much of its edge."""
    flat = synthetic.Behaviour(p_companion=0.0, p_transition=0.0, p_loyal=0.0, favourite_boost=1.0)
    planted = holdout_scores(shop)["model"].mean()
    without = holdout_scores(synthetic.generate(behaviour=flat))["model"].mean()
    assert planted > 1.2 * without, (planted, without)

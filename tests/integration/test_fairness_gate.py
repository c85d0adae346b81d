"""The gate on fairness: a candidate that shows only head brands is rejected; a balanced one passes."""

import pandas as pd

from ml.data.schema import validate
from ml.data.splits import temporal_split
from ml.data.synthetic import generate
from ml.evaluation.evaluate import audit_groups, evaluate_rankings, ndcg_ratios
from ml.evaluation.fairness import HEAD, brand_tiers, item_tiers
from ml.gate.decision import decide
from ml.gate.policy import load_policy
from tests.oracles import histories_before


def _setup():
    raw = generate(n_users=800, n_items=300, seed=4, bad_rows=False)
    items, _ = validate("items", raw.items)
    events, _ = validate("events", raw.events, known_items=set(items["item_id"]))
    users, _ = validate("users", raw.users)
    split = temporal_split(events, raw.split_time)
    cases = split.cases.copy()
    cases["history"] = histories_before(split.sequences, cases, 10)
    cases = cases[cases["history"].map(len) > 0].reset_index(drop=True)
    seq = split.sequences[split.sequences["ts"] < raw.split_time]
    popularity = seq["item_id"].value_counts().to_dict()
    item_brand = dict(zip(items["item_id"], items["brand"], strict=True))
    tiers = item_tiers(item_brand, brand_tiers(item_brand, popularity))
    return cases, users, popularity, tiers, items


def _gate_fairness(recs, cases, users, popularity, tiers, n_items):
    groups = audit_groups(cases, users)
    res = evaluate_rankings(
        recs, cases, 10, n_catalog=n_items, item_popularity=popularity, item_tier=tiers, groups=groups
    )
    metrics = {f"fairness.user_ndcg_ratio.{a}": r for a, r in ndcg_ratios(res["user_fairness"]).items()}
    metrics["fairness.provider_exposure_ratio"] = res["provider"]["ratio"]
    checks = decide(load_policy(None), metrics).checks
    return {c.name: c for c in checks if c.name.startswith("fairness")}, res


def test_head_brands_only_is_rejected_and_a_balanced_candidate_passes():
    cases, users, popularity, tiers, items = _setup()
    ranked = sorted(popularity, key=lambda i: -popularity[i])
    head_only = [i for i in ranked if tiers.get(i) == HEAD][:10]
    # a biased candidate: hits the target when it is a head item, never shows a tail brand
    biased = [
        ([t] + [i for i in head_only if i != t])[:10] if tiers.get(t) == HEAD else head_only for t in cases["item_id"]
    ]
    checks, res = _gate_fairness(biased, cases, users, popularity, tiers, len(items))
    assert res["provider"]["tail_exposure_share"] == 0
    assert checks["fairness_provider"].status == "fail"
    assert "provider_exposure_ratio" in checks["fairness_provider"].message

    # a balanced candidate: the target first for everyone, then popular items with tail brands shown in
    # the proportion in which shoppers choose them
    tail_share = sum(tiers.get(t) != HEAD for t in cases["item_id"]) / len(cases)
    heads = [i for i in ranked if tiers.get(i) == HEAD]
    tails = [i for i in ranked if tiers.get(i) != HEAD]
    balanced = []
    for t in cases["item_id"]:
        recs, h, tl = [t], iter(i for i in heads if i != t), iter(i for i in tails if i != t)
        while len(recs) < 10:
            n_tail = sum(tiers.get(i) != HEAD for i in recs)
            recs.append(next(tl) if n_tail < tail_share * (len(recs) + 1) else next(h))
        balanced.append(recs)
    checks, _ = _gate_fairness(balanced, cases, users, popularity, tiers, len(items))
    assert all(c.status == "pass" for c in checks.values()), {n: c.message for n, c in checks.items()}


def test_a_group_served_badly_fails_its_attribute():
    cases, users, popularity, tiers, items = _setup()
    ranked = sorted(popularity, key=lambda i: -popularity[i])[:12]
    gender = cases[["user_id"]].merge(users[["user_id", "gender"]], on="user_id", how="left")["gender"]
    # perfect for everyone except one gender, which never gets its target
    recs = [
        ([t] + [i for i in ranked if i != t])[:10] if g != "f" else [i for i in ranked if i != t][:10]
        for t, g in zip(cases["item_id"], gender, strict=True)
    ]
    checks, _ = _gate_fairness(recs, cases, users, popularity, tiers, len(items))
    assert checks["fairness_user_groups.gender"].status == "fail"
    assert pd.notna(checks["fairness_user_groups.gender"].value)

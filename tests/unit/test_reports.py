"""Evidently reports on small frames: files written, values read back from Evidently's results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("evidently")

from ml.evaluation.fairness import provider_exposure, user_group_fairness  # noqa: E402
from ml.evaluation.reports import (  # noqa: E402
    drift_report,
    fairness_summary_html,
    ranking_frame,
    ranking_report,
    ranking_reports_by_group,
    safe_name,
)


def _features(seed: int, shift: float = 0.0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "history_len": rng.poisson(5 + shift * 10, size=n).astype(float),
            "price": rng.normal(20 + shift * 50, 5, size=n),
            "category": rng.choice(["tools", "paint"] if shift == 0 else ["garden", "toys"], size=n),
        }
    )


def test_drift_report_identical_data_has_no_drift(tmp_path) -> None:
    data = _features(0)
    out = drift_report(data, data.copy(), tmp_path / "drift.html")
    assert out["share_drifted"] == 0.0
    assert out["n_drifted"] == 0 and out["drifted_columns"] == []
    assert out["n_columns"] == 3
    assert (tmp_path / "drift.html").stat().st_size > 10_000


def test_drift_report_huge_shift_drifts_everything(tmp_path) -> None:
    out = drift_report(_features(0), _features(1, shift=1.0), tmp_path / "sub" / "drift.html")
    assert out["share_drifted"] == pytest.approx(1.0)
    assert out["drifted_columns"] == ["category", "history_len", "price"]
    assert out["path"].endswith("drift.html")


def test_drift_report_partial_shift_and_column_choice(tmp_path) -> None:
    reference = _features(0)
    current = _features(1)
    current["price"] = current["price"] + 100.0
    out = drift_report(reference, current, tmp_path / "drift.html", columns=["price", "history_len"])
    assert 0.0 <= out["share_drifted"] <= 1.0
    assert out["share_drifted"] == pytest.approx(0.5)
    assert out["drifted_columns"] == ["price"]
    with pytest.raises(ValueError, match="no column"):
        drift_report(reference, current, tmp_path / "x.html", columns=["nope"])


# u1: target c at rank 3; u2: target z outside the top 3; u3: target p at rank 1
RECS = [["a", "b", "c"], ["x", "a", "y"], ["p", "q", "r"]]
TARGETS = ["c", "z", "p"]


def test_ranking_frame_adds_missing_relevant_rows_below_the_top_k() -> None:
    frame = ranking_frame(RECS, TARGETS, 3, user_ids=["u1", "u2", "u3"])
    u2 = frame[frame.user_id == "u2"]
    assert u2["item_id"].tolist() == ["x", "a", "y", "z"]
    assert u2["target"].tolist() == [0, 0, 0, 1]
    assert u2["prediction"].iloc[-1] < u2["prediction"].iloc[:3].min()
    with pytest.raises(ValueError, match="repeats an id"):
        ranking_frame(RECS, TARGETS, 3, user_ids=["u1", "u1", "u3"])


def test_ranking_report_values_hand_worked(tmp_path) -> None:
    frame = ranking_frame(RECS, TARGETS, 3, user_ids=["u1", "u2", "u3"])
    out = ranking_report(frame.sample(frac=1.0, random_state=0), tmp_path / "ranking.html", k=3)
    m = out["metrics"]
    assert (tmp_path / "ranking.html").exists()
    assert m["ndcg_at_3"] == pytest.approx((1 / math.log2(4) + 0 + 1) / 3)  # 0.5
    assert m["recall_at_3"] == pytest.approx(2 / 3)
    assert m["hr_at_3"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["map_at_3"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["precision_at_3"] == pytest.approx(2 / 9)
    # u1-u2 share one item of 3 (cosine 1/3), the other pairs none: 1 - (1/3) / 3
    assert m["personalization"] == pytest.approx(1 - 1 / 9)
    assert out["n_users"] == 3


def test_ranking_report_breaks_score_ties_by_frame_order(tmp_path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1"] * 4,
            "item_id": ["a", "b", "c", "d"],
            "target": [0, 0, 1, 0],
            "prediction": [1.0, 1.0, 1.0, 1.0],  # all tied: frame order decides, c is third
        }
    )
    m = ranking_report(frame, tmp_path / "tied.html", k=2)["metrics"]
    assert m["hr_at_2"] == 0.0
    m = ranking_report(frame, tmp_path / "tied3.html", k=3)["metrics"]
    assert m["mrr"] == pytest.approx(1 / 3)


def test_ranking_report_needs_the_contract_columns(tmp_path) -> None:
    with pytest.raises(ValueError, match="prediction"):
        ranking_report(pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "target": [1]}), tmp_path / "r.html", 3)


def test_ranking_reports_by_group_one_report_per_slice(tmp_path) -> None:
    rng = np.random.default_rng(4)
    recs, targets, users = [], [], []
    for i in range(40):
        items = [f"i{j}" for j in rng.choice(50, size=5, replace=False)]
        good = i < 20  # the first 20 users are served well: their target is ranked first
        recs.append(items)
        targets.append(items[0] if good else "i999")
        users.append(f"user{i}")
    frame = ranking_frame(recs, targets, 5, user_ids=users)
    groups = {
        "age band": pd.Series(["18-24"] * 20 + ["65+ / older"] * 18, index=users[:38]),
        "gender": {u: ("f" if i % 2 else "m") for i, u in enumerate(users)},
    }
    out = ranking_reports_by_group(frame, groups, tmp_path, k=5)
    assert set(out) == {"age band", "gender"}
    assert set(out["age band"]) == {"18-24", "65+ / older", "unknown"}  # users 38, 39 have no age band
    young, old = out["age band"]["18-24"]["metrics"], out["age band"]["65+ / older"]["metrics"]
    assert young["ndcg_at_5"] == pytest.approx(1.0)
    assert old["ndcg_at_5"] == pytest.approx(0.0)
    assert out["gender"]["f"]["metrics"]["ndcg_at_5"] == pytest.approx(0.5)
    files = sorted(p.name for p in tmp_path.glob("*.html"))
    assert len(files) == 5
    assert all(" " not in f and "/" not in f and "+" not in f for f in files)
    assert out["age band"]["18-24"]["n_users"] == 20


def test_safe_name_keeps_distinct_names_distinct() -> None:
    assert safe_name("female") == "female"
    assert safe_name("65+") != safe_name("65-")
    assert safe_name("a/b") != safe_name("a b")
    assert "/" not in safe_name("../../etc")


def test_fairness_summary_html(tmp_path) -> None:
    per_case = pd.DataFrame({"ndcg": [1.0] * 20 + [0.5] * 20 + [0.0] * 3, "recall": [1.0] * 43})
    groups = pd.DataFrame({"gender": ["f"] * 20 + ["m"] * 20 + ["<x>"] * 3})
    fairness = user_group_fairness(per_case, groups)
    provider = provider_exposure([["h", "t"]], ["t"], {"h": "head", "t": "tail"}, k=2)
    path = fairness_summary_html(fairness, provider, tmp_path / "fairness.html")
    text = path.read_text()
    assert "<script" not in text
    assert "&lt;x&gt; (excluded)" in text  # escaped and marked
    assert "0.5000" in text  # the ndcg ratio m / f
    assert "provider exposure ratio" in text

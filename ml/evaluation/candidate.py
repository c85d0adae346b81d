"""The candidate on the hold-out: its fair re-ranking, every baseline beside it, search, the user-side trade-off,
and the champion re-evaluated on the same cases for the gate.

Each function takes frames and a loaded recommender and returns plain values: the evaluate and gate stages only
read the run folder, call these, log and write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ml.training.recommender import Recommender

RERANK_POOL = 50  # candidates the fair re-ranker chooses from
RERANK_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4)  # settings of the NDCG-vs-exposure trade-off table


@dataclass
class Holdout:
    """What the evaluation measured: `summary` goes into evaluate.json; the rest feeds the reports and the gate."""

    summary: dict[str, Any]
    per_case: pd.DataFrame
    search_per_case: pd.DataFrame | None
    recommendations: list[list[str]]
    scores: list[list[float]]
    groups: pd.DataFrame


def evaluate_candidate(
    rec: Recommender,
    cases: pd.DataFrame,
    search_cases: pd.DataFrame,
    sequences: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    *,
    k: int,
    seed: int,
    min_tail_share: float,
    max_item_tokens: int,
    max_query_tokens: int,
    dp: bool,
    text_cache: Path | None = None,
) -> Holdout:
    """The candidate (fairly re-ranked) and every baseline on the hold-out `cases`, and on `search_cases`.

    `sequences` are the training window's sequences of the shoppers the candidate learned from: the baselines
    learn from exactly those (not from the audit shoppers). `dp`: the candidate was trained with DP, so its
    released transition counts give the private baselines. `text_cache`: where the pretrained encoder's vectors of
    catalogue texts are kept (`ml.training.text_vectors`; None: encode the catalogue here)."""
    from ml.evaluation import baselines as bl
    from ml.evaluation.compare import compare_rankings
    from ml.evaluation.evaluate import audit_groups
    from ml.evaluation.fairness import brand_tiers, catalogue_tail, item_tiers
    from ml.evaluation.rerank import RerankConfig, rerank, tradeoff
    from ml.evaluation.search import search_evaluation
    from ml.evaluation.user_fairness import worse_group_tradeoff
    from ml.training.encoder import item_texts
    from ml.training.text_vectors import catalogue_vectors

    item_ids = rec.item_ids
    popularity = sequences["item_id"].value_counts().to_dict()
    item_brand = dict(zip(items["item_id"], items["brand"], strict=True))
    tiers = item_tiers(item_brand, brand_tiers(item_brand, popularity))
    groups = audit_groups(cases, users)
    histories = cases["history"].tolist()
    pool, pool_scores = rec.recommend(histories, max(RERANK_POOL, k))
    is_tail = catalogue_tail(item_brand)
    rerank_cfg = RerankConfig(min_tail_share=min_tail_share, window=k)
    recs = [rerank(c, s.tolist(), is_tail, k, rerank_cfg) for c, s in zip(pool, pool_scores, strict=True)]
    score_of = [dict(zip(c, s.tolist(), strict=True)) for c, s in zip(pool, pool_scores, strict=True)]
    scores = [[so[i] for i in r] for r, so in zip(recs, score_of, strict=True)]
    tradeoff_table = tradeoff(
        pool, cases["item_id"].tolist(), is_tail, k, RERANK_SHARES, scores=[s.tolist() for s in pool_scores], window=k
    )

    texts = item_texts(items)
    fitted = [
        bl.Popularity.fit(item_ids, sequences),
        bl.Cooccurrence.fit(item_ids, sequences),
        bl.BM25(item_ids=item_ids, texts=texts, titles=items["title"].tolist()),
    ]
    zero_shot = bl.zero_shot_encoder()
    base_vectors = catalogue_vectors(text_cache, texts, max_item_tokens, lambda t: zero_shot(t, max_item_tokens))
    fitted.append(bl.ZeroShot(item_ids=item_ids, vectors=base_vectors))
    fitted.extend(private_baselines(rec, item_ids, dp))
    vectors = dict(zip(rec.item_ids, rec.item_vectors, strict=True))
    compared = compare_rankings(
        recs,
        {b.name: b.recommend(histories, k) for b in fitted},
        {b.name: b.learns for b in fitted},
        cases,
        k,
        n_catalog=len(item_ids),
        item_popularity=popularity,
        item_tier=tiers,
        groups=groups,
        seed=seed,
        item_vectors=vectors,
    )
    searched = search_evaluation(
        rec,
        search_cases,
        k,
        encode_query=lambda q: zero_shot(q, max_query_tokens),
        zero_shot_items=base_vectors,
        users=users,
        seed=seed,
        n_catalog=len(item_ids),
        item_popularity=popularity,
        item_tier=tiers,
        item_vectors=vectors,
    )
    search_per_case = None
    if "per_case" in searched:
        search_per_case = searched.pop("per_case")
        searched["candidate"].pop("per_case")
    user_side = worse_group_tradeoff(
        pool, pool_scores, histories, cases, compared["per_case"], k, tiers, (is_tail, rerank_cfg), seed
    )
    candidate, baselines = compared["candidate"], compared["baselines"]
    best, best_non_private = compared["best_baseline"], compared["best_non_private_baseline"]
    summary = {
        "k": k,
        "n_cases": len(cases),
        "candidate": {kk: v for kk, v in candidate.items() if kk != "per_case"},
        "baselines": baselines,
        "best_baseline": best,
        "best_baseline_ndcg": baselines[best]["metrics"][f"ndcg_at_{k}"],
        "best_non_private_baseline": best_non_private,
        "best_non_private_baseline_ndcg": baselines[best_non_private]["metrics"][f"ndcg_at_{k}"]
        if best_non_private
        else None,
        "uncertainty": compared["uncertainty"],
        "search": searched,
        "rerank": {
            "min_tail_share": min_tail_share,
            "window": k,
            "pool": RERANK_POOL,
            "tradeoff": tradeoff_table.to_dict(orient="records"),
        },
        "user_fairness_mitigation": user_side,
    }
    return Holdout(summary, compared["per_case"], search_per_case, recs, scores, groups)


def private_baselines(rec: Recommender, item_ids: list[str], dp: bool) -> list[Any]:
    """DP popularity and DP co-occurrence on the candidate's own released transition counts, when it was trained
    with DP and has them: post-processing of a release the candidate's (epsilon, delta) already covers
    (ml.evaluation.baselines). Without DP the counts are raw, so no private baseline exists."""
    from ml.evaluation import baselines as bl

    table = bl.transition_table(rec)
    if not dp or table.shape != (len(item_ids), len(item_ids)):
        return []
    return [bl.DPPopularity.from_transitions(item_ids, table), bl.DPCooccurrence.from_transitions(item_ids, table)]


def champion_on_holdout(
    rec: Recommender, cases: pd.DataFrame, groups: pd.DataFrame, k: int, search_cases: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The champion re-evaluated on this run's hold-out (not its old numbers): its per-case NDCG in the cases'
    order and its user-group fairness, so the gate compares it with the candidate case by case, on the same
    bootstrap resamples and audit groups; with `search_cases` (the candidate's, in its order) the same for search."""
    from ml.evaluation.fairness import user_group_fairness
    from ml.evaluation.metrics import per_case_metrics, summarize
    from ml.evaluation.search import search_rankings

    recs, _ = rec.recommend([list(h) for h in cases["history"]], k)
    scored = per_case_metrics(recs, cases["item_id"].tolist(), k)
    out: dict[str, Any] = {
        "metrics": summarize(scored, k),
        "per_case_ndcg": scored["ndcg"].astype(float).tolist(),
        "user_fairness": user_group_fairness(scored, groups) if len(groups.columns) else {},
    }
    if search_cases is not None:
        searched = per_case_metrics(search_rankings(rec, search_cases, k), search_cases["item_id"].tolist(), k)
        out["search_metrics"] = summarize(searched, k)
        out["search_per_case_ndcg"] = searched["ndcg"].astype(float).tolist()
    return out


def evaluation_metrics(
    summary: dict[str, Any], ratios: dict[str, float | None], mia: dict[str, Any], drift_share: float
) -> dict[str, float]:
    """The evaluation's figures as flat MLflow metrics (quality.*, baseline.*, beyond.*, fairness.*, privacy.*,
    drift.share and the search figures)."""
    from ml.evaluation.search import search_metrics

    candidate = summary["candidate"]
    flat = {f"quality.{n}": v for n, v in candidate["metrics"].items()}
    for name, res in summary["baselines"].items():
        flat.update({f"baseline.{name}.{n}": v for n, v in res["metrics"].items()})
    flat.update({f"beyond.{n}": v for n, v in candidate["beyond"].items() if v is not None})
    flat.update({f"fairness.user_ndcg_ratio.{a}": r for a, r in ratios.items() if r is not None})
    if candidate["provider"].get("ratio") is not None:
        flat["fairness.provider_exposure_ratio"] = candidate["provider"]["ratio"]
    flat.update(
        {
            "privacy.mia_auc": mia["auc"],
            "privacy.mia_advantage": mia["advantage"],
            "privacy.mia_tpr_at_1pct_fpr": mia["tpr_at_1pct_fpr"],
            "drift.share": drift_share,
        }
    )
    flat.update(search_metrics(summary["search"]))
    return {n: float(v) for n, v in flat.items()}

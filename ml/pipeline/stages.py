"""The chain's stages: one function each, taking a RunContext and returning small values.

The Airflow tasks of `dags/recsys_training.py` and `vetted run` call these same functions in the same
order, so the two never drift apart. The train stage lives in ml.pipeline.train_stage, the stages after
training (register, gate, promote, and a reviewer's answer) in ml.pipeline.registry_stages; all are called
from here by the same names. Every stage writes `<run_dir>/<stage>.json`; later stages read what they need
from there (or from the lake, Feast and MLflow), never from another stage's memory. A stage only wires: it
reads the run folder, calls the library (ml.data, ml.features, ml.training, ml.privacy, ml.evaluation,
ml.gate, ml.registry), logs and writes.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.pipeline.context import (
    CASES,
    PER_CASE,
    SEARCH_CASES,
    SEARCH_PER_CASE,
    SEQUENCES,
    TRAIN_SET,
    RunContext,
    jsonable,
)
from ml.pipeline.registry_stages import fail_version, gate, promote, register, review
from ml.pipeline.train_stage import train

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "train", "evaluate", "register", "gate", "promote")


# ---------------------------------------------------------------------------------------------------
def ingest(ctx: RunContext, raw: Any = None, key: bytes | None = None) -> dict[str, Any]:
    """Source -> validated, pseudonymized, scrubbed, consent-filtered lake partition of the run's date.

    Re-running a date rewrites the same partitions; events after the date wait for a later run.

    `raw` (RawTables) replaces reading the configured source: for notebooks and tests. `key` is the pseudonym key
    (ml.keys.load_pseudonym_key); without it the key is read from this process's environment."""
    from ml.data.ingest import ingest as run_ingest
    from ml.keys import load_pseudonym_key
    from ml.privacy.pii import PIIScrubber
    from ml.privacy.pseudonymize import Pseudonymizer

    cfg, settings = ctx.config, ctx.settings
    if key is None:
        key = load_pseudonym_key(os.environ, settings.home, allow_demo_key=settings.demo)
    ingest_date = cfg.ingest_date or datetime.now(UTC).strftime("%Y-%m-%d")  # once: the source and the lake agree
    if raw is None:
        raw = ctx.source_tables(ingest_date)
    result = run_ingest(raw, settings.lake_dir, Pseudonymizer(key), PIIScrubber(), ingest_date)
    ctx.write("ingest", {**result.__dict__, "metrics": result.metrics()})
    return {
        "ingest_date": result.ingest_date,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "deferred": result.deferred,
        "quarantine_path": result.quarantine_path,
    }


# ---------------------------------------------------------------------------------------------------
def features(ctx: RunContext) -> dict[str, Any]:
    """Lake -> Feast (apply, materialize) -> point-in-time training set and hold-out cases.

    The lake is read as it stood on the run's ingest date (a backfill never sees later partitions), and
    the feature rows depend on the lake alone, not on the clock: re-running a date gives the same rows."""
    from ml.data.ingest import read_lake
    from ml.data.splits import search_examples, temporal_split
    from ml.features import store as fs
    from ml.features.build import RECENT_ITEMS, with_history, write_feature_tables

    cfg, settings = ctx.config, ctx.settings
    ingested = ctx.read("ingest")
    tables = read_lake(settings.lake_dir, as_of=ingested["ingest_date"])
    split_time = pd.Timestamp(ingested["split_time"])
    if tables["events"].empty:
        raise ValueError(f"the lake holds no events up to {ingested['ingest_date']}: nothing to build features from")
    now = datetime.now(UTC)
    data_dir = settings.home / "features"
    as_of = tables["events"]["ts"].max()  # the catalogue counts are as of the newest event they count
    paths = write_feature_tables(data_dir, tables["items"], tables["events"], cfg.max_history, as_of)
    store = fs.open_store(fs.repo_config_for(settings))
    applied = fs.apply_definitions(store, data_dir)
    if ingested.get("deleted_users"):
        fs.rebuild_online(store, data_dir, now)  # deleted shoppers must not survive in the online store
    else:
        fs.materialize(store, now)

    split = temporal_split(tables["events"], split_time)
    train = with_history(store, split.train, cfg.max_history)
    cases = with_history(store, split.cases, cfg.max_history)
    cases = cases[cases["history"].map(len) > 0].reset_index(drop=True)
    if cases.empty:
        raise ValueError(
            f"no hold-out cases: the events known on {ingested['ingest_date']} (before "
            f"{ingested.get('known_until') or 'its end'}) end before the source's split time {split_time}"
        )
    n_all_cases = len(cases)
    cases = _at_most(cases, cfg.max_eval_cases, cfg.seed)
    searches = search_examples(tables["events"][tables["events"]["ts"] >= split_time])
    search_cases = with_history(store, _at_most(searches, cfg.max_search_cases, cfg.seed), cfg.max_history)
    train.to_parquet(ctx.path(TRAIN_SET), index=False)
    cases.to_parquet(ctx.path(CASES), index=False)
    search_cases.to_parquet(ctx.path(SEARCH_CASES), index=False)
    seq = split.sequences[split.sequences["ts"] < split_time]
    seq.to_parquet(ctx.path(SEQUENCES), index=False)
    window = {
        "train_start": str(seq["ts"].min()),
        "split_time": str(split_time),
        "holdout_end": str(split.cases["ts"].max()),
    }
    out = {
        "feature_files": paths,
        "feast_objects": applied,
        "n_train_examples": len(train),
        "n_train_search_examples": int((train["kind"] == "search").sum()),
        "n_cases": len(cases),
        "n_cases_in_holdout": n_all_cases,
        "n_search_cases": len(search_cases),
        "n_search_cases_in_holdout": len(searches),
        "n_train_users": int(train["user_id"].nunique()),
        "window": window,
        "feature_refs": [RECENT_ITEMS],
    }
    ctx.write("features", out)
    return out


def _at_most(rows: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of n rows in their order (all of them when n is 0 or None or there are fewer)."""
    if not n or len(rows) <= n:
        return rows.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    return rows.iloc[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
def evaluate(ctx: RunContext) -> dict[str, Any]:
    """Candidate and baselines on the hold-out; fairness; membership inference; Evidently reports."""
    import mlflow

    from ml.data.ingest import read_lake
    from ml.evaluation.candidate import evaluate_candidate, evaluation_metrics
    from ml.evaluation.drift import drift_frames
    from ml.evaluation.evaluate import ndcg_ratios
    from ml.evaluation.reports import (
        drift_report,
        fairness_summary_html,
        ranking_frame,
        ranking_report,
        ranking_reports_by_group,
    )
    from ml.privacy.mia import loss_attack
    from ml.registry.tracking import configure
    from ml.training.recommender import Recommender

    cfg, settings = ctx.config, ctx.settings
    k = cfg.k
    tables = read_lake(settings.lake_dir)
    cases = pd.read_parquet(ctx.path(CASES))
    cases["history"] = cases["history"].map(list)
    trained = ctx.read("train")
    seq = pd.read_parquet(ctx.path(SEQUENCES))
    seq = seq[seq["user_id"].isin(set(trained["member_users"]))]  # what the candidate learned from, no audit shopper
    rec = Recommender.load(Path(trained["model_dir"]))
    held = evaluate_candidate(
        rec,
        cases,
        pd.read_parquet(ctx.path(SEARCH_CASES)),
        seq,
        tables["items"],
        tables["users"],
        k=k,
        seed=cfg.seed,
        min_tail_share=cfg.rerank_min_tail_share,
        max_item_tokens=cfg.max_item_tokens,
        max_query_tokens=cfg.max_query_tokens,
        dp=bool(trained["privacy"].get("dp")),
        text_cache=settings.text_vectors_dir,
    )
    held.per_case.to_parquet(ctx.path(PER_CASE), index=False)
    if held.search_per_case is not None:
        held.search_per_case.to_parquet(ctx.path(SEARCH_PER_CASE), index=False)
    # membership inference: trained shoppers vs held-out shoppers of the same distribution
    mia = loss_attack(
        rec, pd.read_parquet(ctx.path(TRAIN_SET)), set(trained["member_users"]), set(trained["audit_users"]), cfg.seed
    )

    reports_dir = ctx.path("reports")
    reports_dir.mkdir(exist_ok=True)
    split_time = pd.Timestamp(ctx.read("ingest")["split_time"])
    events = tables["events"]
    drift = drift_report(
        *drift_frames(events[events["ts"] < split_time], events[events["ts"] >= split_time], tables["items"]),
        reports_dir / "drift.html",
    )
    case_ids = [f"case-{i}" for i in range(len(cases))]
    frame = ranking_frame(held.recommendations, cases["item_id"].tolist(), k, user_ids=case_ids, scores=held.scores)
    ranking = ranking_report(frame, reports_dir / "ranking.html", k)
    slice_groups = {
        col: pd.Series(held.groups[col].fillna("unknown").astype(str).to_numpy(), index=case_ids)
        for col in held.groups.columns
    }
    slices = ranking_reports_by_group(frame, slice_groups, reports_dir / "slices", k) if cfg.slice_reports else {}
    candidate = held.summary["candidate"]
    fairness_html = fairness_summary_html(
        candidate["user_fairness"], candidate["provider"], reports_dir / "fairness.html"
    )
    ratios = ndcg_ratios(candidate["user_fairness"])
    summary, searched = held.summary, held.summary["search"]
    out = {
        **{
            key: summary[key]
            for key in (
                "k",
                "n_cases",
                "candidate",
                "baselines",
                "best_baseline",
                "best_baseline_ndcg",
                "best_non_private_baseline",
                "best_non_private_baseline_ndcg",
                "uncertainty",
                "search",
            )
        },
        "user_ndcg_ratio": ratios,
        "provider_exposure_ratio": candidate["provider"].get("ratio"),
        "mia": mia,
        "drift": drift,
        "rerank": summary["rerank"],
        "user_fairness_mitigation": summary["user_fairness_mitigation"],
        "reports": {
            "drift": drift["path"],
            "ranking": ranking["path"],
            "fairness": str(fairness_html),
            "slices": {a: {g: r["path"] for g, r in gs.items()} for a, gs in slices.items()},
        },
        "evidently_ranking": ranking["metrics"],
    }
    ctx.write("evaluate", out)
    configure(settings)  # this task's own process: the run lives in the home's tracking store, not MLflow's default
    with mlflow.start_run(run_id=trained["mlflow_run_id"]):
        mlflow.log_metrics(evaluation_metrics(summary, ratios, mia, drift["share_drifted"]))
        mlflow.log_artifacts(str(reports_dir), artifact_path="reports")
        mlflow.log_dict(jsonable(out), "evaluation.json")
    return {
        "ndcg_at_k": candidate["metrics"][f"ndcg_at_{k}"],
        "best_baseline": out["best_baseline"],
        "best_baseline_ndcg": out["best_baseline_ndcg"],
        "search_ndcg_at_k": (searched.get("candidate") or {}).get("metrics", {}).get(f"ndcg_at_{k}"),
        "search_best_baseline": searched.get("best_baseline"),
        "mia_auc": mia["auc"],
        "drift_share": drift["share_drifted"],
    }


__all__ = [
    "CASES",
    "PER_CASE",
    "SEARCH_CASES",
    "SEARCH_PER_CASE",
    "SEQUENCES",
    "STAGES",
    "TRAIN_SET",
    "evaluate",
    "fail_version",
    "features",
    "gate",
    "ingest",
    "promote",
    "register",
    "review",
    "train",
]

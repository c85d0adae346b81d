"""The chain's stages: one function each, taking a RunContext and returning small values.

The Airflow tasks of `dags/recsys_training.py` and `vetted run` call these same functions in the same
order, so the two never drift apart; the stages after training (register, gate, promote, and a reviewer's
answer) live in ml.pipeline.registry_stages and are called from here by the same names. Every stage writes
`<run_dir>/<stage>.json`; later stages read what they need from there (or from the lake, Feast and MLflow),
never from another stage's memory. A stage only wires: it reads the run folder, calls the library (ml.data,
ml.features, ml.training, ml.privacy, ml.evaluation, ml.gate, ml.registry), logs and writes.
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

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "train", "evaluate", "register", "gate", "promote")


# ---------------------------------------------------------------------------------------------------
def ingest(ctx: RunContext, raw: Any = None, key: bytes | None = None) -> dict[str, Any]:
    """Source -> validated, pseudonymized, scrubbed, consent-filtered lake partition of the run's date.

    Re-running a date rewrites the same partitions; events after the date wait for a later run.

    `raw` (RawTables) replaces reading the configured source: for notebooks and tests. `key` is the pseudonym key
    (ml.keys.load_pseudonym_key); without it the key is read from this process's environment."""
    from ml.data.ingest import ingest as run_ingest
    from ml.data.sources import read_source
    from ml.keys import load_pseudonym_key
    from ml.privacy.pii import PIIScrubber
    from ml.privacy.pseudonymize import Pseudonymizer

    cfg, settings = ctx.config, ctx.settings
    if key is None:
        key = load_pseudonym_key(os.environ, settings.home, allow_demo_key=settings.demo)
    ingest_date = cfg.ingest_date or datetime.now(UTC).strftime("%Y-%m-%d")  # once: the source and the lake agree
    if raw is None:
        raw = read_source(
            cfg.source,
            cfg.path or None,
            url=cfg.url,
            n_users=cfg.n_users,
            n_items=cfg.n_items,
            seed=cfg.seed,
            ingest_date=ingest_date,
        )
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
def train(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the bi-encoder (DP-SGD at user level when on); log to MLflow; save the model folder."""
    import mlflow
    import torch

    from ml.data.ingest import read_lake
    from ml.privacy.accounting import (
        default_delta,
        plan_budget,
        privacy_metrics,
        privacy_record,
    )
    from ml.privacy.mia import split_audit_users
    from ml.privacy.noise import secure_rng_on
    from ml.privacy.transitions import own_transitions, transition_feature
    from ml.registry.datasets import log_training_inputs
    from ml.registry.tracking import configure, flat_params, start_attempt
    from ml.training.autosettings import member_sequences, resolve_run
    from ml.training.distributed import train_data_parallel, world_size_for
    from ml.training.dp_regime import apply_dp_regime
    from ml.training.dp_sgd import DPSettings
    from ml.training.encoder import item_texts, load_encoder
    from ml.training.examples import training_examples
    from ml.training.model import BiEncoder, catalogue_codes, lexical_similarity
    from ml.training.recommender import Recommender, RecommenderSettings
    from ml.training.train import planned_steps

    cfg, settings = ctx.config, ctx.settings
    items = read_lake(settings.lake_dir)["items"]
    index_of = {item: i for i, item in enumerate(items["item_id"])}
    train_set = pd.read_parquet(ctx.path(TRAIN_SET))
    members, audit = split_audit_users(train_set["user_id"].unique(), cfg.seed)
    examples = training_examples(train_set, members, index_of)
    n_users = len(set(examples.users))
    sequences = pd.read_parquet(ctx.path(SEQUENCES))
    chosen = resolve_run(cfg, examples.users, member_sequences(sequences, members, index_of), len(items))
    cfg = chosen.config  # every "auto" setting filled in from the data (ml.training.autosettings)
    steps, sample_rate = planned_steps(n_users, cfg.batch_size, cfg.epochs, cfg.max_steps)
    plan, dp = None, None
    secure = cfg.dp.enabled and secure_rng_on(cfg.dp.secure_rng, settings.profile)
    if cfg.dp.enabled:
        delta = cfg.dp.delta or default_delta(n_users)
        plan = plan_budget(
            cfg.dp.target_epsilon, delta, sample_rate, steps, cfg.dp.transitions_share, cfg.dp.transitions_per_user
        )
        dp = DPSettings(
            noise_multiplier=plan.noise_multiplier, delta=delta, max_grad_norm=cfg.dp.max_grad_norm, secure_rng=secure
        )
    transitions = None
    if cfg.dp.transitions_share > 0:
        transitions, own = transition_feature(
            sequences,
            members,
            index_of,
            seed=cfg.seed,
            pairs_per_user=cfg.dp.transitions_per_user,
            floor=cfg.dp.transitions_floor,
            sigma=plan.transitions_sigma if plan else None,
            threshold=plan.transitions_threshold if plan else None,
            secure=secure,
        )
        examples.transition_own = [
            own_transitions(h, own.get(u, {}), cfg.max_history)
            for u, h in zip(examples.users, examples.histories, strict=True)
        ]
    experiment_id = configure(settings)
    texts = item_texts(items)
    bert, tokenizer = load_encoder()
    item_category, item_brand = catalogue_codes(items)
    model = BiEncoder(
        bert,
        n_items=len(items),
        trainable_layers=cfg.trainable_layers,
        max_history=cfg.max_history,
        temperature=cfg.temperature,
        item_category=item_category,
        item_brand=item_brand,
    )
    if transitions is not None:
        model.set_transitions(transitions)
    if len(items) <= 20_000:  # public catalogue text only: no privacy cost
        model.set_lexical(lexical_similarity(items["title"].fillna("").astype(str).tolist(), texts))
    learning_rate = apply_dp_regime(
        model,
        plan.noise_multiplier if plan else None,
        sample_rate * n_users,
        len(items),
        cfg.dp.learning_rate if dp else cfg.learning_rate,
    )
    # a retry first ends what a killed attempt left RUNNING (crash safety, ml.registry.tracking)
    with start_attempt(
        experiment_id, cfg.run_name or ctx.run_dir.name, str(ctx.run_dir), {"vetted.source": cfg.source}
    ) as run:
        mlflow.log_params(flat_params("", cfg.to_dict()))
        mlflow.set_tags(chosen.tags())
        mlflow.log_metrics(ctx.read("ingest")["metrics"])
        feats = ctx.read("features")
        mlflow.log_metrics(
            {
                "data.n_train_examples": feats["n_train_examples"],
                "data.n_cases": feats["n_cases"],
                "data.n_train_users": n_users,
                "data.n_audit_users": len(audit),
            }
        )
        datasets = log_training_inputs(
            ctx.path(TRAIN_SET),
            ctx.path(CASES),
            settings.lake_dir,
            ctx.read("ingest")["ingest_date"],
            feats["window"]["split_time"],
            feats["feature_refs"],
        )  # the run's datasets panel

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics({f"epoch.{k}": v for k, v in metrics.items()}, step=epoch)

        result = train_data_parallel(
            model,
            tokenizer,
            examples,
            texts,
            world_size=world_size_for(torch.cuda.device_count(), cfg.world_size),
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            batch_size=cfg.batch_size,
            learning_rate=learning_rate,
            max_history=cfg.max_history,
            max_query_tokens=cfg.max_query_tokens,
            max_item_tokens=cfg.max_item_tokens,
            seed=cfg.seed,
            dp=dp,
            examples_per_user=cfg.examples_per_user,
            negatives=cfg.negatives,
            on_epoch=on_epoch,
        )
        privacy = privacy_record(
            plan,
            result.dp,
            n_users=n_users,
            secure=secure,
            target_epsilon=cfg.dp.target_epsilon,
            pairs_per_user=cfg.dp.transitions_per_user,
            with_transitions=transitions is not None,
        )
        mlflow.log_metrics(privacy_metrics(privacy))
        mlflow.log_metrics(
            {
                "train.seconds": result.seconds,
                "train.seconds_per_step": result.seconds_per_step,
                "train.final_loss": result.final_loss,
                "train.steps": result.steps,
            }
        )
        model.zero_dropped_weights()
        temperature = model.fold_content_scale()  # the learned text-similarity scale, saved as the temperature
        rec = Recommender(
            model,
            tokenizer,
            items,
            RecommenderSettings(temperature, cfg.max_history, cfg.max_query_tokens, cfg.max_item_tokens),
        )
        model_dir = rec.save(ctx.path("model"))
        run_id = run.info.run_id
    out = {
        "mlflow_run_id": run_id,
        "experiment_id": experiment_id,
        "model_dir": str(model_dir),
        "steps": result.steps,
        "epochs": result.epochs,
        "device": result.device,
        "seconds": result.seconds,
        "seconds_per_step": result.seconds_per_step,
        "final_loss": result.final_loss,
        "n_examples": len(examples),
        "n_users": n_users,
        "audit_users": sorted(audit),
        "member_users": sorted(members),
        "privacy": privacy,
        "config": cfg.to_dict(),
        "training_settings": chosen.to_dict(),
        "datasets": datasets,
    }
    ctx.write("train", out)
    return {k: out[k] for k in ("mlflow_run_id", "model_dir", "steps", "seconds")}


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

"""The chain's stages: one function each, taking a RunContext and returning small values.

The Airflow tasks of `dags/recsys_training.py` and `vetted run` call these same functions in the same
order, so the two never drift apart. Every stage writes `<run_dir>/<stage>.json`; later stages read
what they need from there (or from the lake, Feast and MLflow), never from another stage's memory.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ml.pipeline.context import RunContext, jsonable

log = logging.getLogger(__name__)

TRAIN_SET, CASES, SEQUENCES = "train_set.parquet", "cases.parquet", "train_sequences.parquet"
SEARCH_CASES = "search_cases.parquet"  # hold-out searches followed by a click or purchase: query -> item
# per hold-out case: the shopper, the audit groups and every ranker's NDCG, for the paired bootstrap
PER_CASE = "per_case.parquet"
SEARCH_PER_CASE = "search_per_case.parquet"  # the same for the hold-out's search cases
AUDIT_SHARE = 0.1  # shoppers kept out of training as the membership-inference audit's non-members
# DP noise (std) on each coordinate of a step's mean clipped gradient above which the projection and the item
# bias stay fixed and the rest trains at NOISY_DP_LR_SCALE x the rate. amazon2018 at 256 shoppers a step has
# 0.005 (trained, those heads left the model below the zero-shot encoder); the synthetic demo at 2,048 has
# 0.0008 (they carry its popularity and category signal). Measured: benchmarks/results/quality.md.
NOISY_DP_STEP = 0.004
# The same noise against what one item's bias sees in a step: the expected number of sampled shoppers per catalogue
# item. Above this the item bias (one coordinate per item) is mostly noise however quiet the step is overall:
# amazon2018 (3,686 items, 256 shoppers a step) has 19.6 at epsilon 8 and 13.7 at epsilon 16, where the rule above
# alone (0.0037) let the heads train and NDCG@10 fell to 0.0777 (0.1077 with them fixed; 0.1050 at epsilon 8:
# benchmarks/results/privacy.md); the synthetic demo (1,200 items, 2,048 shoppers a step) has 0.97 at epsilon 8.
NOISY_DP_ITEM_STEP = 4.0
NOISY_DP_LR_SCALE = 0.1
RERANK_POOL = 50  # candidates the fair re-ranker chooses from
RERANK_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4)  # settings of the NDCG-vs-exposure trade-off table


# ---------------------------------------------------------------------------------------------------
def ingest(ctx: RunContext, raw: Any = None) -> dict[str, Any]:
    """Source -> validated, pseudonymized, scrubbed, consent-filtered lake partition of the run's date.

    Re-running a date rewrites the same partitions; events after the date wait for a later run.

    `raw` (RawTables) replaces reading the configured source: for notebooks and tests."""
    from ml.data.ingest import ingest as run_ingest
    from ml.data.sources import read_source
    from ml.privacy.pii import PIIScrubber
    from ml.privacy.pseudonymize import Pseudonymizer, load_key

    cfg, settings = ctx.config, ctx.settings
    key = load_key(os.environ, settings.home, allow_demo_key=settings.demo)
    ingest_date = cfg.ingest_date or datetime.now(UTC).strftime("%Y-%m-%d")  # once: the source and the lake agree
    if raw is None:
        raw = read_source(cfg.source, cfg.path or None, url=cfg.url, n_users=cfg.n_users, n_items=cfg.n_items,
                          seed=cfg.seed, ingest_date=ingest_date)
    result = run_ingest(raw, settings.lake_dir, Pseudonymizer(key), PIIScrubber(), ingest_date)
    out = {**result.__dict__, "metrics": result.metrics()}
    ctx.write("ingest", out)
    return {"ingest_date": result.ingest_date, "accepted": result.accepted, "quarantined": result.quarantined,
            "deferred": result.deferred, "quarantine_path": result.quarantine_path}


# ---------------------------------------------------------------------------------------------------
def features(ctx: RunContext) -> dict[str, Any]:
    """Lake -> Feast (apply, materialize) -> point-in-time training set and hold-out cases.

    The lake is read as it stood on the run's ingest date (a backfill never sees later partitions), and
    the feature rows depend on the lake alone, not on the clock: re-running a date gives the same rows."""
    from ml.data.ingest import read_lake
    from ml.data.splits import search_examples, temporal_split
    from ml.features import store as fs
    from ml.features.build import write_feature_tables

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
    feature = ["user_recent_items:recent_items"]
    train = _with_history(store, split.train, feature, cfg.max_history)
    cases = _with_history(store, split.cases, feature, cfg.max_history)
    cases = cases[cases["history"].map(len) > 0].reset_index(drop=True)
    if cases.empty:
        raise ValueError(f"no hold-out cases: the events known on {ingested['ingest_date']} (before "
                         f"{ingested.get('known_until') or 'its end'}) end before the source's split time {split_time}")
    n_all_cases = len(cases)
    cases = _at_most(cases, cfg.max_eval_cases, cfg.seed)
    searches = search_examples(tables["events"][tables["events"]["ts"] >= split_time])
    search_cases = _with_history(store, _at_most(searches, cfg.max_search_cases, cfg.seed), feature, cfg.max_history)
    train.to_parquet(ctx.path(TRAIN_SET), index=False)
    cases.to_parquet(ctx.path(CASES), index=False)
    search_cases.to_parquet(ctx.path(SEARCH_CASES), index=False)
    seq = split.sequences[split.sequences["ts"] < split_time]
    seq.to_parquet(ctx.path(SEQUENCES), index=False)
    window = {"train_start": str(seq["ts"].min()), "split_time": str(split_time), "holdout_end": str(split.cases["ts"].max())}
    out = {"feature_files": paths, "feast_objects": applied, "n_train_examples": len(train),
           "n_train_search_examples": int((train["kind"] == "search").sum()), "n_cases": len(cases), "n_cases_in_holdout": n_all_cases,
           "n_search_cases": len(search_cases), "n_search_cases_in_holdout": len(searches),
           "n_train_users": int(train["user_id"].nunique()), "window": window, "feature_refs": feature}
    ctx.write("features", out)
    return out


def _at_most(rows: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of n rows in their order (all of them when n is 0 or None or there are fewer)."""
    if not n or len(rows) <= n:
        return rows.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    return rows.iloc[keep].reset_index(drop=True)


def _with_history(store: Any, rows: pd.DataFrame, features: list[str], max_history: int) -> pd.DataFrame:
    """Each row's history as the feature store knew it just before the row's own event."""
    from ml.features.build import decode_history
    from ml.features.store import historical_features

    if rows.empty:
        return rows.assign(history=[])
    entity = pd.DataFrame({"user_id": rows["user_id"].to_numpy(), "row_id": np.arange(len(rows)),
                           "event_timestamp": pd.to_datetime(rows["ts"], utc=True) - pd.Timedelta(microseconds=1)})
    got = historical_features(store, entity, features)
    # a row from before the shopper's first interaction has no feature row: its history is empty
    by_row = dict(zip(got["row_id"], got["recent_items"], strict=True))
    history = [decode_history(by_row.get(i))[-max_history:] for i in range(len(rows))]
    return rows.reset_index(drop=True).assign(history=history)


# ---------------------------------------------------------------------------------------------------
def split_audit_users(users: np.ndarray, seed: int) -> tuple[set[str], set[str]]:
    """Training shoppers and the held-out audit shoppers (same distribution, never trained on)."""
    rng = np.random.default_rng(seed)
    users = np.sort(users)
    audit = set(rng.choice(users, size=max(1, int(len(users) * AUDIT_SHARE)), replace=False)) if len(users) > 10 else set()
    return set(users) - audit, audit


def dense_heads_too_noisy(noise_multiplier: float, shoppers_per_step: float, n_items: int) -> bool:
    """Whether DP-SGD's noise would drown the dense heads (history projection, item bias), which then stay fixed
    (BiEncoder.freeze_dense_heads): too much noise on each coordinate of a step's mean gradient (NOISY_DP_STEP), or
    too much against the shoppers a step brings each item (NOISY_DP_ITEM_STEP)."""
    if shoppers_per_step <= 0:
        raise ValueError(f"shoppers_per_step must be positive, got {shoppers_per_step}")
    return (noise_multiplier / shoppers_per_step > NOISY_DP_STEP
            or noise_multiplier * n_items / shoppers_per_step > NOISY_DP_ITEM_STEP)


def train(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the bi-encoder (DP-SGD at user level when on); log to MLflow; save the model folder."""
    import mlflow
    import torch

    from ml.data.ingest import read_lake
    from ml.privacy.accounting import MAX_DENSE_ITEMS, default_delta, plan_budget
    from ml.privacy.noise import SECURE_SOURCE, secure_rng_on
    from ml.registry.datasets import log_training_inputs
    from ml.registry.tracking import configure, flat_params, start_attempt
    from ml.training.autosettings import member_sequences, resolve_run
    from ml.training.distributed import train_data_parallel, world_size_for
    from ml.training.encoder import item_texts, load_encoder
    from ml.training.model import BiEncoder, catalogue_codes, lexical_similarity
    from ml.training.recommender import Recommender, RecommenderSettings
    from ml.training.train import DPSettings, Examples, planned_steps

    cfg, settings = ctx.config, ctx.settings
    items = read_lake(settings.lake_dir)["items"]
    index_of = {item: i for i, item in enumerate(items["item_id"])}
    train_set = pd.read_parquet(ctx.path(TRAIN_SET))
    members, audit = split_audit_users(train_set["user_id"].unique(), cfg.seed)
    rows = train_set[train_set["user_id"].isin(members) & train_set["item_id"].isin(index_of)]
    rows = rows[(rows["kind"] == "search") | (rows["history"].map(len) > 0)]
    examples = Examples(
        users=rows["user_id"].tolist(),
        histories=[[index_of[i] for i in h if i in index_of] for h in rows["history"]],
        queries=[q if k == "search" else None for q, k in zip(rows["query"], rows["kind"], strict=True)],
        targets=[index_of[i] for i in rows["item_id"]],
    )
    n_users = len(set(examples.users))
    chosen = resolve_run(cfg, examples.users, member_sequences(pd.read_parquet(ctx.path(SEQUENCES)), members, index_of),
                         len(items))
    cfg = chosen.config  # every "auto" setting filled in from the data (ml.training.autosettings)
    steps, sample_rate = planned_steps(n_users, cfg.batch_size, cfg.epochs, cfg.max_steps)
    plan = None
    dp = None
    secure = cfg.dp.enabled and secure_rng_on(cfg.dp.secure_rng, settings.profile)
    if cfg.dp.enabled:
        delta = cfg.dp.delta or default_delta(n_users)
        plan = plan_budget(cfg.dp.target_epsilon, delta, sample_rate, steps, cfg.dp.transitions_share,
                           cfg.dp.transitions_per_user)
        dp = DPSettings(noise_multiplier=plan.noise_multiplier, delta=delta, max_grad_norm=cfg.dp.max_grad_norm,
                        secure_rng=secure)

    transitions = None
    if cfg.dp.transitions_share > 0:
        transitions, own = transition_feature(pd.read_parquet(ctx.path(SEQUENCES)), members, index_of, cfg, plan,
                                              secure)
        model_transitions = torch.as_tensor(transitions)
        examples.transition_own = [own_transitions(h, own.get(u, {}), cfg.max_history)
                                   for u, h in zip(examples.users, examples.histories, strict=True)]
    experiment_id = configure(settings)
    texts = item_texts(items)
    bert, tokenizer = load_encoder()
    item_category, item_brand = catalogue_codes(items)
    model = BiEncoder(bert, n_items=len(items), trainable_layers=cfg.trainable_layers,
                      max_history=cfg.max_history, temperature=cfg.temperature, item_category=item_category,
                      item_brand=item_brand)
    if transitions is not None:
        model.set_transitions(model_transitions)
    if len(items) <= MAX_DENSE_ITEMS:  # public catalogue text only: no privacy cost
        model.set_lexical(lexical_similarity(items["title"].fillna("").astype(str).tolist(), texts))
    learning_rate = cfg.dp.learning_rate if dp else cfg.learning_rate
    if dp is not None and plan is not None and dense_heads_too_noisy(plan.noise_multiplier, sample_rate * n_users,
                                                                     len(items)):
        model.freeze_dense_heads()  # too few shoppers a step for per-item parameters (BiEncoder.freeze_dense_heads)
        learning_rate *= NOISY_DP_LR_SCALE  # the scalar heads left: noise would swing them by several logits
    elif dp is not None:
        model.drop_text_features()  # the dense heads learn; the text features did not help then (measured)
    run_name = cfg.run_name or ctx.run_dir.name
    # a retry first ends what a killed attempt left RUNNING (crash safety, ml.registry.tracking)
    with start_attempt(experiment_id, run_name, str(ctx.run_dir), {"vetted.source": cfg.source}) as run:
        mlflow.log_params(flat_params("", cfg.to_dict()))
        mlflow.set_tags(chosen.tags())
        mlflow.log_metrics(ctx.read("ingest")["metrics"])
        feats = ctx.read("features")
        mlflow.log_metrics({"data.n_train_examples": feats["n_train_examples"], "data.n_cases": feats["n_cases"],
                            "data.n_train_users": n_users, "data.n_audit_users": len(audit)})
        datasets = log_training_inputs(ctx.path(TRAIN_SET), ctx.path(CASES), settings.lake_dir, ctx.read("ingest")[
            "ingest_date"], feats["window"]["split_time"], feats.get("feature_refs", []))  # the run's datasets panel

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics({f"epoch.{k}": v for k, v in metrics.items()}, step=epoch)

        result = train_data_parallel(
            model, tokenizer, examples, texts, world_size=world_size_for(torch.cuda.device_count(), cfg.world_size),
            epochs=cfg.epochs, max_steps=cfg.max_steps,
            batch_size=cfg.batch_size, learning_rate=learning_rate, max_history=cfg.max_history,
            max_query_tokens=cfg.max_query_tokens, max_item_tokens=cfg.max_item_tokens, seed=cfg.seed, dp=dp,
            examples_per_user=cfg.examples_per_user, on_epoch=on_epoch)
        privacy: dict[str, Any] = {"dp": cfg.dp.enabled, "unit": "user" if cfg.dp.enabled else "none",
                                   "n_users": n_users, "secure_rng": secure}
        if plan is not None and result.dp is not None:
            from ml.privacy.accounting import composed_epsilon

            total = composed_epsilon(result.dp["noise_multiplier"], sample_rate, result.steps,
                                     plan.transitions_sigma, plan.delta)
            privacy.update({"epsilon": total, "delta": plan.delta, "target_epsilon": cfg.dp.target_epsilon,
                            "mechanisms": [{"name": "DP-SGD (Opacus, ghost clipping, Poisson sampling of shoppers)",
                                            "epsilon_alone": result.dp["epsilon_sgd"],
                                            "noise_multiplier": result.dp["noise_multiplier"],
                                            "max_grad_norm": result.dp["max_grad_norm"],
                                            "sample_rate": sample_rate, "steps": result.steps,
                                            "examples_per_user": result.dp["examples_per_user"]}]
                            + ([{"name": "item-transition counts (Gaussian mechanism, per-shopper pairs capped)",
                                 "epsilon_alone": plan.epsilon_transitions, "sigma": plan.transitions_sigma,
                                 "pairs_per_shopper": cfg.dp.transitions_per_user,
                                 "noise_source": SECURE_SOURCE if secure else "seeded numpy generator"}]
                               if transitions is not None else []),
                            "accountant": "rdp", **{k: v for k, v in result.dp.items() if k != "epsilon_sgd"}})
            mlflow.log_metrics({"privacy.epsilon": total, "privacy.delta": plan.delta,
                                "privacy.noise_multiplier": result.dp["noise_multiplier"],
                                "privacy.sample_rate": sample_rate, "privacy.steps": result.steps,
                                "privacy.max_grad_norm": cfg.dp.max_grad_norm})
        mlflow.log_metrics({"train.seconds": result.seconds, "train.seconds_per_step": result.seconds_per_step,
                            "train.final_loss": result.final_loss, "train.steps": result.steps})
        model.zero_dropped_weights()
        temperature = model.fold_content_scale()  # the learned text-similarity scale, saved as the temperature
        rec = Recommender(model, tokenizer, items, RecommenderSettings(temperature, cfg.max_history,
                                                                       cfg.max_query_tokens, cfg.max_item_tokens))
        model_dir = rec.save(ctx.path("model"))
        run_id = run.info.run_id
    out = {"mlflow_run_id": run_id, "experiment_id": experiment_id, "model_dir": str(model_dir),
           "steps": result.steps, "epochs": result.epochs, "device": result.device, "seconds": result.seconds,
           "seconds_per_step": result.seconds_per_step, "final_loss": result.final_loss,
           "n_examples": len(examples), "n_users": n_users, "audit_users": sorted(audit),
           "member_users": sorted(members), "privacy": privacy, "config": cfg.to_dict(),
           "training_settings": chosen.to_dict(), "datasets": datasets}
    ctx.write("train", out)
    return {k: out[k] for k in ("mlflow_run_id", "model_dir", "steps", "seconds")}


def transition_feature(sequences: pd.DataFrame, members: set[str], index_of: dict[str, int], cfg: Any,
                       plan: Any, secure: bool = False
                       ) -> tuple[np.ndarray, dict[str, dict[int, list[tuple[int, float]]]]]:
    """log1p of item -> next-item counts over the training shoppers' sequences, for the hybrid score, and per
    shopper what its own pairs add to that table (item -> [(next item, value)]).

    With DP, each shopper adds at most `transitions_per_user` distinct pairs and every cell gets Gaussian
    noise (the plan's sigma); a floor of `transitions_floor` noise deviations is then subtracted (post-processing,
    free under DP) so that noise alone seldom scores. The noise comes from the OS CSPRNG when `secure`, else from
    a generator seeded with the run's seed (ml.privacy.noise).

    The second part is for training only (`own_transitions`): a training example reads the table without its
    own shopper's pairs, as a case reads the counts of other shoppers. With them in, the pair from an example's
    last item to its target is in the counts whenever that shopper's pairs are, and the feature's learned weight
    fits that. Privacy: the table is released by its own Gaussian mechanism; a shopper's correction comes from
    that shopper's data and the released table, and enters only that shopper's clipped DP-SGD gradient, so the
    accounting is unchanged. The saved model holds the table alone.
    """
    from ml.privacy.accounting import capped_pairs, noisy_counts
    from ml.privacy.noise import SecureRandom

    rows = sequences[sequences["user_id"].isin(members)].sort_values(["user_id", "position"])
    by_user = rows.groupby("user_id")["item_id"].agg(list)
    per_user = [[index_of[i] for i in items if i in index_of] for items in by_user]
    sigma = plan.transitions_sigma if plan is not None else None
    rng = np.random.default_rng(cfg.seed + 1)
    pairs = capped_pairs(per_user, len(index_of), cfg.dp.transitions_per_user, rng)
    counts = noisy_counts(pairs, len(index_of), cfg.dp.transitions_per_user, sigma, SecureRandom() if secure else rng)
    floor = cfg.dp.transitions_floor * sigma * np.sqrt(cfg.dp.transitions_per_user) if sigma is not None else 0.0
    table = np.log1p(np.maximum(counts - floor, 0.0)).astype(np.float32)
    own: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for user, user_pairs in zip(by_user.index, pairs, strict=True):
        entries: dict[int, list[tuple[int, float]]] = {}
        for a, b in user_pairs:
            without = float(np.log1p(max(float(counts[a, b]) - 1.0 - floor, 0.0)))
            if without != table[a, b]:
                entries.setdefault(a, []).append((b, without - float(table[a, b])))
        own[str(user)] = entries
    return table, own


def own_transitions(history: list[int], own: dict[int, list[tuple[int, float]]], max_history: int
                    ) -> list[tuple[int, float]]:
    """The (item, value) entries that take a shopper's own pairs (`transition_feature`) out of the transition
    feature of one history (oldest first), weighted as the model weighs history items (TRANSITION_DECAY)."""
    from ml.training.model import TRANSITION_DECAY

    recent = history[-max_history:][::-1]  # newest first, as build_history_tensors orders them
    return [(b, TRANSITION_DECAY**p * value) for p, item in enumerate(recent) for b, value in own.get(item, ())]


# ---------------------------------------------------------------------------------------------------
def drift_frame(events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per-event columns whose distribution the drift report compares (no shopper ids)."""
    ev = events.merge(items[["item_id", "category", "price"]], on="item_id", how="left")
    return pd.DataFrame({
        "event_type": ev["event_type"].astype(str),
        "category": ev["category"].fillna("(search)").astype(str),
        "price": pd.to_numeric(ev["price"], errors="coerce"),
        "hour_of_day": pd.to_datetime(ev["ts"], utc=True).dt.hour,
        "query_length": ev["query"].fillna("").astype(str).str.split().map(len),
    })


def drift_frames(reference: pd.DataFrame, current: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both drift frames, keeping only columns with values on both sides (a source may lack prices)."""
    ref, cur = drift_frame(reference, items), drift_frame(current, items)
    keep = [c for c in ref.columns if ref[c].notna().any() and cur[c].notna().any()]
    return ref[keep], cur[keep]


def _model_vectors(rec: Any) -> dict[str, np.ndarray]:
    return dict(zip(rec.item_ids, rec.item_vectors, strict=True))


def evaluate(ctx: RunContext) -> dict[str, Any]:
    """Candidate and baselines on the hold-out; fairness; membership inference; Evidently reports."""
    import mlflow

    from ml.data.ingest import read_lake
    from ml.evaluation import baselines as bl
    from ml.evaluation.compare import compare_rankings
    from ml.evaluation.evaluate import audit_groups, ndcg_ratios
    from ml.evaluation.fairness import brand_tiers, catalogue_tail, item_tiers
    from ml.evaluation.reports import (
        drift_report,
        fairness_summary_html,
        ranking_frame,
        ranking_report,
        ranking_reports_by_group,
    )
    from ml.evaluation.rerank import RerankConfig, rerank, tradeoff
    from ml.evaluation.search import search_evaluation, search_metrics
    from ml.evaluation.user_fairness import worse_group_tradeoff
    from ml.privacy.mia import membership_inference_audit
    from ml.training.encoder import item_texts
    from ml.training.recommender import Recommender

    cfg, settings = ctx.config, ctx.settings
    k = cfg.k
    tables = read_lake(settings.lake_dir)
    items, users = tables["items"], tables["users"]
    cases = pd.read_parquet(ctx.path(CASES))
    cases["history"] = cases["history"].map(list)
    trained = ctx.read("train")
    # baselines learn from exactly the shoppers the candidate learned from (not the audit shoppers)
    seq = pd.read_parquet(ctx.path(SEQUENCES))
    seq = seq[seq["user_id"].isin(set(trained["member_users"]))]
    rec = Recommender.load(Path(trained["model_dir"]))
    item_ids = rec.item_ids
    popularity = seq["item_id"].value_counts().to_dict()
    item_brand = dict(zip(items["item_id"], items["brand"], strict=True))
    tiers = item_tiers(item_brand, brand_tiers(item_brand, popularity))
    groups = audit_groups(cases, users)
    histories = cases["history"].tolist()
    pool, pool_scores = rec.recommend(histories, max(RERANK_POOL, k))
    is_tail = catalogue_tail(item_brand)
    rerank_cfg = RerankConfig(min_tail_share=cfg.rerank_min_tail_share, window=k)
    recs = [rerank(c, s.tolist(), is_tail, k, rerank_cfg) for c, s in zip(pool, pool_scores, strict=True)]
    score_of = [dict(zip(c, s.tolist(), strict=True)) for c, s in zip(pool, pool_scores, strict=True)]
    scores = np.array([[so[i] for i in r] for r, so in zip(recs, score_of, strict=True)])
    tradeoff_table = tradeoff(pool, cases["item_id"].tolist(), is_tail, k, RERANK_SHARES,
                              scores=[s.tolist() for s in pool_scores], window=k)

    # baselines, fitted on the training window only
    texts = item_texts(items)
    fitted = [bl.Popularity.fit(item_ids, seq), bl.Cooccurrence.fit(item_ids, seq),
              bl.BM25(item_ids=item_ids, texts=texts, titles=items["title"].tolist())]
    zero_shot = _zero_shot_encoder()
    base_vectors = zero_shot(texts, cfg.max_item_tokens)
    fitted.append(bl.ZeroShot(item_ids=item_ids, vectors=base_vectors))
    fitted.extend(_private_baselines(rec, item_ids, trained["privacy"]))
    compared = compare_rankings(recs, {b.name: b.recommend(histories, k) for b in fitted},
                                {b.name: b.learns for b in fitted}, cases, k, n_catalog=len(item_ids),
                                item_popularity=popularity, item_tier=tiers, groups=groups, seed=cfg.seed,
                                item_vectors=_model_vectors(rec))
    candidate, baselines = compared["candidate"], compared["baselines"]
    best, best_non_private = compared["best_baseline"], compared["best_non_private_baseline"]
    uncertainty = compared["uncertainty"]
    compared["per_case"].to_parquet(ctx.path(PER_CASE), index=False)
    searched = search_evaluation(rec, pd.read_parquet(ctx.path(SEARCH_CASES)), k,
                                 encode_query=lambda q: zero_shot(q, cfg.max_query_tokens), zero_shot_items=base_vectors,
                                 users=users, seed=cfg.seed, n_catalog=len(item_ids), item_popularity=popularity,
                                 item_tier=tiers, item_vectors=_model_vectors(rec))
    if "per_case" in searched:
        searched.pop("per_case").to_parquet(ctx.path(SEARCH_PER_CASE), index=False)
        searched["candidate"].pop("per_case")
    user_side = worse_group_tradeoff(pool, pool_scores, histories, cases, compared["per_case"], k, tiers,
                                     (is_tail, rerank_cfg), cfg.seed)

    # membership inference: trained shoppers vs held-out shoppers of the same distribution
    train_set = pd.read_parquet(ctx.path(TRAIN_SET))
    mia = _membership_audit(rec, train_set, set(trained["member_users"]), set(trained["audit_users"]), cfg.seed)
    mia = {**membership_inference_audit(mia["members"], mia["nonmembers"]), "attack": mia["attack"]}

    # reports
    reports_dir = ctx.path("reports")
    reports_dir.mkdir(exist_ok=True)
    split_time = pd.Timestamp(ctx.read("ingest")["split_time"])
    events = tables["events"]
    drift = drift_report(*drift_frames(events[events["ts"] < split_time], events[events["ts"] >= split_time], items),
                         reports_dir / "drift.html")
    case_ids = [f"case-{i}" for i in range(len(cases))]
    frame = ranking_frame(recs, cases["item_id"].tolist(), k, user_ids=case_ids, scores=scores.tolist())
    ranking = ranking_report(frame, reports_dir / "ranking.html", k)
    slice_groups = {col: pd.Series(groups[col].fillna("unknown").astype(str).to_numpy(), index=case_ids)
                    for col in groups.columns}
    slices = ranking_reports_by_group(frame, slice_groups, reports_dir / "slices", k) if cfg.slice_reports else {}
    fairness_html = fairness_summary_html(candidate["user_fairness"], candidate["provider"],
                                          reports_dir / "fairness.html")

    metrics = candidate["metrics"]
    ratios = ndcg_ratios(candidate["user_fairness"])
    out = {
        "k": k, "n_cases": len(cases), "candidate": {kk: v for kk, v in candidate.items() if kk != "per_case"},
        "baselines": baselines, "best_baseline": best,
        "best_baseline_ndcg": baselines[best]["metrics"][f"ndcg_at_{k}"],
        "best_non_private_baseline": best_non_private,
        "best_non_private_baseline_ndcg": baselines[best_non_private]["metrics"][f"ndcg_at_{k}"]
        if best_non_private else None,
        "uncertainty": uncertainty,
        "search": searched,
        "user_ndcg_ratio": ratios, "provider_exposure_ratio": candidate["provider"].get("ratio"),
        "mia": mia, "drift": drift,
        "rerank": {"min_tail_share": cfg.rerank_min_tail_share, "window": k, "pool": RERANK_POOL,
                   "tradeoff": tradeoff_table.to_dict(orient="records")},
        "user_fairness_mitigation": user_side,
        "reports": {"drift": drift["path"], "ranking": ranking["path"], "fairness": str(fairness_html),
                    "slices": {a: {g: r["path"] for g, r in gs.items()} for a, gs in slices.items()}},
        "evidently_ranking": ranking["metrics"],
    }
    ctx.write("evaluate", out)
    with mlflow.start_run(run_id=trained["mlflow_run_id"]):
        flat = {f"quality.{n}": v for n, v in metrics.items()}
        for name, res in baselines.items():
            flat.update({f"baseline.{name}.{n}": v for n, v in res["metrics"].items()})
        flat.update({f"beyond.{n}": v for n, v in candidate["beyond"].items() if v is not None})
        flat.update({f"fairness.user_ndcg_ratio.{a}": r for a, r in ratios.items() if r is not None})
        if out["provider_exposure_ratio"] is not None:
            flat["fairness.provider_exposure_ratio"] = out["provider_exposure_ratio"]
        flat.update({"privacy.mia_auc": mia["auc"], "privacy.mia_advantage": mia["advantage"],
                     "privacy.mia_tpr_at_1pct_fpr": mia["tpr_at_1pct_fpr"], "drift.share": drift["share_drifted"]})
        flat.update(search_metrics(searched))
        mlflow.log_metrics({n: float(v) for n, v in flat.items()})
        mlflow.log_artifacts(str(reports_dir), artifact_path="reports")
        mlflow.log_dict(jsonable(out), "evaluation.json")
    return {"ndcg_at_k": metrics[f"ndcg_at_{k}"], "best_baseline": best, "best_baseline_ndcg": out["best_baseline_ndcg"],
            "search_ndcg_at_k": (searched.get("candidate") or {}).get("metrics", {}).get(f"ndcg_at_{k}"),
            "search_best_baseline": searched.get("best_baseline"),
            "mia_auc": mia["auc"], "drift_share": drift["share_drifted"]}


def _private_baselines(rec: Any, item_ids: list[str], privacy: dict[str, Any]) -> list[Any]:
    """DP popularity and DP co-occurrence on the candidate's own released transition counts, when it was trained
    with DP and has them: post-processing of a release the candidate's (epsilon, delta) already covers
    (ml.evaluation.baselines). Without DP the counts are raw, so no private baseline exists."""
    from ml.evaluation import baselines as bl

    table = rec.model.transitions.detach().cpu().numpy()
    if not privacy.get("dp") or table.shape != (len(item_ids), len(item_ids)):
        return []
    return [bl.DPPopularity.from_transitions(item_ids, table), bl.DPCooccurrence.from_transitions(item_ids, table)]


def _resamples(per_case: pd.DataFrame, seed: int) -> Any:
    """The bootstrap resamples over the hold-out's shoppers: the same in evaluate and gate (same cases, same seed)."""
    from ml.evaluation.compare import per_case_resamples

    return per_case_resamples(per_case, seed)


def _group_frame(per_case: pd.DataFrame) -> pd.DataFrame:
    from ml.evaluation.compare import per_case_groups

    return per_case_groups(per_case)


def unmeasurable_ratios(user_fairness: dict[str, Any]) -> dict[str, str]:
    """For each attribute whose min/max ratio could not be measured on this hold-out, why
    (`unmeasurable.fairness.user_ndcg_ratio.<attribute>`): fewer than two groups with enough cases (every case of
    Coat has a full 10-item history, so there is no light/heavy split), or a best group at 0. A check with
    `skip_if_no_match` skips such a metric saying why; without a recorded reason a missing metric still fails."""
    out = {}
    for attr, res in user_fairness.items():
        if (res.get("ratio") or {}).get("ndcg") is not None:
            continue
        groups = ", ".join(f"{g} {v.get('n', '?')}" for g, v in (res.get("by_group") or {}).items()) or "none"
        excluded = res.get("excluded") or []
        why = (f"fewer than two groups with enough cases to compare (cases per group: {groups}"
               + (f"; left out: {', '.join(map(str, excluded))}" if excluded else "") + ")")
        if len([g for g in (res.get("by_group") or {}) if g not in excluded]) >= 2:
            why = f"the best-served group's NDCG is 0, so no ratio is defined (cases per group: {groups})"
        out[f"unmeasurable.fairness.user_ndcg_ratio.{attr}"] = why
    return out


def _zero_shot_encoder() -> Any:
    """The pretrained MiniLM, not fine-tuned: (texts, max_tokens) -> L2-normalized vectors."""
    from ml.training.encoder import load_encoder
    from ml.training.model import BiEncoder

    bert, tokenizer = load_encoder()
    model = BiEncoder(bert, n_items=1, trainable_layers=0)
    return lambda texts, max_tokens: model.encode_texts(tokenizer, list(texts), max_tokens).numpy()


def _membership_audit(rec: Any, train_set: pd.DataFrame, members: set[str], nonmembers: set[str],
                      seed: int, per_side: int = 500) -> dict[str, Any]:
    """Loss-based attack: a shopper whose own examples the model scores unusually well was likely trained on.

    Score per shopper = mean log-probability the model gives their next items (training window).
    """
    rows = train_set[(train_set["kind"] == "next_item") & (train_set["history"].map(len) > 0)]
    rows = rows[rows["item_id"].isin(rec.index_of)]
    rng = np.random.default_rng(seed)

    def scores_for(users: set[str]) -> np.ndarray:
        chosen = sorted(set(rows["user_id"]) & users)
        if len(chosen) > per_side:
            chosen = sorted(rng.choice(chosen, size=per_side, replace=False))
        part = rows[rows["user_id"].isin(set(chosen))]
        if part.empty:
            return np.zeros(0)
        logits = rec.scores(rec.history_vectors([list(h) for h in part["history"]]))
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        target = np.array([rec.index_of[i] for i in part["item_id"]])
        per_row = logp[np.arange(len(part)), target]
        return pd.Series(per_row).groupby(part["user_id"].to_numpy()).mean().to_numpy()

    return {"members": scores_for(members), "nonmembers": scores_for(nonmembers),
            "attack": "loss threshold: mean log-probability of a shopper's own next items, "
                      "trained shoppers vs shoppers held out of training"}


# ---------------------------------------------------------------------------------------------------
def _version_tags(ctx: RunContext) -> dict[str, str]:
    ev, tr, feats = ctx.read("evaluate"), ctx.read("train"), ctx.read("features")
    k = ev["k"]
    m = ev["candidate"]["metrics"]
    privacy = tr["privacy"]
    tags = {
        "quality.ndcg_at_10": m.get("ndcg_at_10", m[f"ndcg_at_{k}"]),
        "quality.recall_at_10": m.get("recall_at_10", m[f"recall_at_{k}"]),
        "quality.best_baseline": ev["best_baseline"],
        "quality.best_baseline_ndcg_at_10": ev["best_baseline_ndcg"],
        "privacy.dp": str(bool(privacy["dp"])).lower(),
        "privacy.unit": privacy["unit"],
        "privacy.secure_rng": str(bool(privacy.get("secure_rng"))).lower(),
        "privacy.mia_auc": ev["mia"]["auc"],
        "fairness.provider_exposure_ratio": ev["provider_exposure_ratio"],
        "drift.share": ev["drift"]["share_drifted"],
        "data.window": f"{feats['window']['train_start']} .. {feats['window']['split_time']}",
        "data.source": ctx.config.source,
        "vetted.run_dir": str(ctx.run_dir),
        "serving.rerank.min_tail_share": ev["rerank"]["min_tail_share"],
        "serving.rerank.window": ev["rerank"]["window"],
    }
    if privacy["dp"]:
        tags.update({"privacy.epsilon": privacy["epsilon"], "privacy.delta": privacy["delta"]})
    for attr, ratio in ev["user_ndcg_ratio"].items():
        tags[f"fairness.user_ndcg_ratio.{attr}"] = ratio
    return {key: ("n/a" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))) for key, v in tags.items()}


def register(ctx: RunContext) -> dict[str, Any]:
    """PII scan, log the pyfunc, register a version with its tags and card, smoke-test it in a fresh process.

    A retry is idempotent: the version already registered from this training run is reused, never a
    second one made. Once the version exists, an error leaves it `gate.status=failed` (with the reason), and
    a SIGKILL leaves the run's lease for the orphan sweep (`ml.registry.sweep`) to settle the same way.
    The version's tags record the SHA-256 of every file of the recommender folder logged with it."""
    from ml.pipeline.lease import stage_lease

    with stage_lease(ctx.run_dir, "register"):
        return _register(ctx)


def _register(ctx: RunContext) -> dict[str, Any]:
    import mlflow

    from ml.data.sources import read_source
    from ml.pipeline.lease import hold_for_tests
    from ml.privacy.pii import PIIScrubber
    from ml.privacy.scan import RawIdMatcher, catalogue_texts, scan_paths, scan_texts
    from ml.registry import registration as reg
    from ml.registry.integrity import digest_tags
    from ml.registry.pyfunc import input_example
    from ml.registry.smoke import smoke_test
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure, flat_params

    cfg, settings = ctx.config, ctx.settings
    configure(settings)
    client = make_client(settings)
    trained = ctx.read("train")
    run_id = trained["mlflow_run_id"]
    status = client.get_run(run_id).info.status
    if status not in ("FINISHED", "RUNNING"):  # RUNNING: a killed evaluate or register left it open
        raise RuntimeError(f"training run {run_id} ended {status}: it is not registered; run train again")
    tags = _version_tags(ctx)

    raw = read_source(cfg.source, cfg.path or None, url=cfg.url, n_users=cfg.n_users, n_items=cfg.n_items,
                      seed=cfg.seed, ingest_date=ctx.read("ingest")["ingest_date"])
    raw_ids = set(raw.users["user_id"].dropna().astype(str)) | set(raw.events["user_id"].dropna().astype(str))
    matcher = RawIdMatcher(raw_ids, public_texts=catalogue_texts(raw.items))  # model numbers are not leaks
    scrubber = PIIScrubber()
    texts = {f"param:{k}": v for k, v in flat_params("", cfg.to_dict()).items()}
    texts.update({f"tag:{k}": v for k, v in tags.items()})
    findings = scan_texts(texts, scrubber, matcher)
    findings += scan_paths([Path(trained["model_dir"]), ctx.path("reports"), settings.home / "features"],
                           scrubber, matcher)
    tags["privacy.pii_findings"] = str(len(findings))
    scan = [f.__dict__ for f in findings[:50]]
    tags.update(digest_tags(Path(trained["model_dir"])))  # the folder log_model stores as the recommender

    cases = pd.read_parquet(ctx.path(CASES))
    histories = [list(h) for h in cases["history"].head(5)]
    queries = _sample_queries(ctx)
    existing = reg.version_for_run(client, settings.model_name, run_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("privacy.pii_findings", len(findings))
        mlflow.log_dict({"findings": scan, "count": len(findings), "checked": matcher.report()}, "pii_scan.json")
        # a retry whose first attempt got as far as a version reuses that version's model (a registered
        # version always has a source, though MLflow's ModelVersion types it as optional)
        model_uri = cast(str, existing.source) if existing else reg.log_model(Path(trained["model_dir"]),
                                                                              input_example(histories, queries[0]))
    # a version the gate decided keeps its decision until the gate runs again (a champion never turns pending);
    # a new version, or one an earlier attempt left failed, waits for the gate
    decided = existing.tags.get("gate.status") if existing else None
    status = decided if decided not in (None, "failed", "pending") else "pending"
    card = existing.description if existing and status != "pending" and existing.description else "Gate not run yet."
    version = reg.register(client, settings.model_name, model_uri, run_id, {**tags, "gate.status": status},
                           description=card)
    hold_for_tests("register.version_created")
    with reg.failure_guard(client, settings.model_name, str(version.version), "register", settings=settings):
        smoke = smoke_test(settings.tracking_uri, f"models:/{settings.model_name}/{version.version}",
                           histories, queries, k=cfg.k)
        reg.set_tags(client, settings.model_name, version.version, {"serving.smoke_ok": str(smoke["ok"]).lower()})
        out = {"model_uri": model_uri, "version": str(version.version), "pii_findings": len(findings),
               "pii_scan": scan, "smoke": smoke, "tags": tags}
        ctx.write("register", out)
    return {"version": str(version.version), "pii_findings": len(findings), "smoke_ok": smoke["ok"]}


def fail_version(ctx: RunContext, stage: str, reason: str) -> str | None:
    """Mark this run's registered version failed (and not champion); returns it, or None if none exists.

    For a failure no stage could catch (the DAG's on_failure_callback: a killed or timed-out task)."""
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure

    if not ctx.has("train"):
        return None
    configure(ctx.settings)
    client = make_client(ctx.settings)
    version = reg.version_for_run(client, ctx.settings.model_name, ctx.read("train")["mlflow_run_id"])
    if version is None:
        return None
    reg.mark_failed(client, ctx.settings.model_name, str(version.version), stage, reason, settings=ctx.settings)
    return str(version.version)


def _sample_queries(ctx: RunContext) -> list[str]:
    train_set = pd.read_parquet(ctx.path(TRAIN_SET), columns=["kind", "query"])
    queries = train_set.loc[train_set["kind"] == "search", "query"].dropna().astype(str).head(3).tolist()
    return queries or ["gift"]


# ---------------------------------------------------------------------------------------------------
def _champion_metrics(ctx: RunContext, client: Any, version: str) -> dict[str, Any] | None:
    """Re-evaluate the current champion on this run's hold-out (not its old numbers), keeping its per-case NDCG
    (in the cases' order) and its user-group fairness, so the gate compares it with the candidate case by case,
    on the same bootstrap resamples and the same audit groups."""
    import tempfile

    from ml.evaluation.fairness import user_group_fairness
    from ml.evaluation.metrics import per_case_metrics, summarize
    from ml.evaluation.search import CASE_ROW, search_rankings
    from ml.registry.registration import CHAMPION, alias_version, download_recommender
    from ml.training.recommender import Recommender

    champ = alias_version(client, ctx.settings.model_name, CHAMPION)
    if champ is None or str(champ.version) == str(version):
        return None
    with tempfile.TemporaryDirectory(prefix="vetted-champion-") as scratch:
        rec = Recommender.load(download_recommender(client, ctx.settings.model_name, champ.version, Path(scratch)))
    cases = pd.read_parquet(ctx.path(CASES))
    k = ctx.config.k
    recs, _ = rec.recommend([list(h) for h in cases["history"]], k)
    scored = per_case_metrics(recs, cases["item_id"].tolist(), k)
    groups = _group_frame(pd.read_parquet(ctx.path(PER_CASE)))
    out = {"version": str(champ.version), "metrics": summarize(scored, k),
           "per_case_ndcg": scored["ndcg"].astype(float).tolist(),
           "user_fairness": user_group_fairness(scored, groups) if len(groups.columns) else {}}
    if ctx.path(SEARCH_PER_CASE).exists():  # the same search cases the candidate was measured on, same order
        rows = pd.read_parquet(ctx.path(SEARCH_PER_CASE), columns=[CASE_ROW])[CASE_ROW].to_numpy()
        search_cases = pd.read_parquet(ctx.path(SEARCH_CASES)).iloc[rows].reset_index(drop=True)
        searched = per_case_metrics(search_rankings(rec, search_cases, k), search_cases["item_id"].tolist(), k)
        out["search_metrics"] = summarize(searched, k)
        out["search_per_case_ndcg"] = searched["ndcg"].astype(float).tolist()
    return out


def gate(ctx: RunContext) -> dict[str, Any]:
    """Check the candidate against the policy; record the decision on the version (tags, card).

    If anything here raises, the version is left `gate.status=failed` with the reason, never champion."""
    from ml.pipeline.lease import stage_lease
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure

    settings = ctx.settings
    configure(settings)
    client = make_client(settings)
    registered = ctx.read("register")
    version = registered["version"]
    with stage_lease(ctx.run_dir, "gate"), reg.failure_guard(client, settings.model_name, version, "gate",
                                                             settings=settings):
        reg.clear_failure(client, settings.model_name, version)  # a retry decides afresh
        return _gate(ctx, client, registered)


def _gate(ctx: RunContext, client: Any, registered: dict[str, Any]) -> dict[str, Any]:
    from ml.evaluation.evaluate import gate_evidence
    from ml.gate.decision import decide
    from ml.gate.policy import load_policy
    from ml.registry import registration as reg

    cfg, settings = ctx.config, ctx.settings
    version = registered["version"]
    champion = _champion_metrics(ctx, client, version)
    tr, ev = ctx.read("train"), ctx.read("evaluate")
    per_case = pd.read_parquet(ctx.path(PER_CASE))
    ndcg = {c[len("ndcg."):]: per_case[c].to_numpy() for c in per_case.columns if c.startswith("ndcg.")}
    if champion:
        ndcg["champion"] = np.asarray(champion["per_case_ndcg"], dtype=float)
    evidence, draws = gate_evidence(ndcg, _group_frame(per_case), ev["uncertainty"]["eligible_groups"],
                                    _resamples(per_case, cfg.seed), best=ev["best_baseline"],
                                    best_non_private=ev.get("best_non_private_baseline"))
    metrics: dict[str, Any] = {
        "quality.ndcg_at_10": ev["candidate"]["metrics"][f"ndcg_at_{ev['k']}"],
        "quality.best_baseline_ndcg_at_10": ev["best_baseline_ndcg"],
        "champion.ndcg_at_10": None,
        "privacy.dp": bool(tr["privacy"]["dp"]),
        "privacy.unit": tr["privacy"]["unit"],
        "privacy.epsilon": tr["privacy"].get("epsilon"),
        "privacy.delta": tr["privacy"].get("delta"),
        "privacy.delta_bound": 1.0 / max(1, tr["n_users"]),
        "privacy.mia_auc": ev["mia"]["auc"],
        "privacy.pii_findings": registered["pii_findings"],
        "fairness.provider_exposure_ratio": ev["provider_exposure_ratio"],
        "drift.share": ev["drift"]["share_drifted"],
        "serving.smoke_ok": bool(registered["smoke"]["ok"]),
    }
    metrics.update({f"fairness.user_ndcg_ratio.{a}": r for a, r in ev["user_ndcg_ratio"].items()})
    metrics.update(unmeasurable_ratios(ev["candidate"].get("user_fairness", {})))
    if ev["provider_exposure_ratio"] is None:  # no target of the hold-out is a long-tail brand's item
        provider = ev["candidate"].get("provider") or {}
        metrics["unmeasurable.fairness.provider_exposure_ratio"] = (
            "no hold-out target is an item of a long-tail brand (tail relevance share "
            f"{provider.get('tail_relevance_share')}), so exposure cannot be compared with relevance; a catalogue "
            "without brands (amazon2018-games) has no providers to compare")
    metrics.update({key: value for key, value in evidence.items() if key not in metrics or metrics[key] is None})
    search_points, search_draws = _search_evidence(ctx, ev.get("search") or {}, champion)
    metrics.update(search_points)
    draws.update(search_draws)
    policy = load_policy(cfg.policy or None)
    decision = decide(policy, metrics, draws)
    status = decision.status
    if status == "passed" and cfg.require_approval:
        status = "pending_approval"
    tags = decision.to_tags()
    tags["gate.status"] = status
    tags.update(_uncertainty_tags(metrics, ev, decision))
    if champion:
        tags["gate.champion_compared"] = f"v{champion['version']}"
    reg.set_tags(client, settings.model_name, version, tags)
    reg.point_candidate(client, settings.model_name, version, status)
    champion_out = None if champion is None else {**{k2: v for k2, v in champion.items()
                                                     if k2 not in ("per_case_ndcg", "search_per_case_ndcg")},
                                                  "ratios": _champion_ratios(evidence)}
    out = {"status": status, "decision": decision.to_dict(), "metrics": metrics, "champion": champion_out,
           "policy": policy.label, "summary_markdown": decision.summary_markdown(),
           "alternatives": _alternatives_table(ev, evidence, decision)}
    ctx.write("gate", out)
    write_card(ctx, client)
    return {"status": status, "version": version, "blocking_failures": decision.blocking_failures}


def _search_evidence(ctx: RunContext, searched: dict[str, Any], champion: dict[str, Any] | None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The gate's search metrics (search.ndcg_at_10, search.best_baseline_ndcg_at_10, champion.search_ndcg_at_10,
    search.provider_exposure_ratio) with their paired resamples; where search could not be measured, the reason
    under unmeasurable.<metric>, so the search checks skip saying why instead of failing on a missing metric."""
    from ml.evaluation.search import search_gate_evidence

    if not searched.get("n_cases"):
        why = searched.get("unmeasurable", "the evaluation recorded no search figures")
        return {f"unmeasurable.{m}": why for m in ("search.ndcg_at_10", "search.provider_exposure_ratio")}, {}
    points, draws = search_gate_evidence(pd.read_parquet(ctx.path(SEARCH_PER_CASE)), ctx.config.seed,
                                         searched["best_baseline"], (champion or {}).get("search_per_case_ndcg"))
    provider = searched["candidate"].get("provider") or {}
    if provider.get("ratio") is not None:
        points["search.provider_exposure_ratio"] = provider["ratio"]
    else:
        points["unmeasurable.search.provider_exposure_ratio"] = (
            "no hold-out search target is an item of a long-tail brand (tail relevance share "
            f"{provider.get('tail_relevance_share')}), so exposure cannot be compared with relevance")
    return points, draws


def _champion_ratios(evidence: dict[str, Any]) -> dict[str, float | None]:
    prefix = "alternative.champion.fairness.user_ndcg_ratio."
    return {key[len(prefix):]: value for key, value in evidence.items() if key.startswith(prefix)}


def _interval_text(entry: dict[str, Any] | None) -> str:
    """"0.1074 [0.0991, 0.1160] at 95%" for a tag; "n/a" without a value."""
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("lower") is None:
        return f"{entry['value']:.4g}"
    return f"{entry['value']:.4g} [{entry['lower']:.4g}, {entry['upper']:.4g}] at {entry['confidence']:.0%}"


def _uncertainty_tags(metrics: dict[str, Any], ev: dict[str, Any], decision: Any) -> dict[str, str]:
    """Version tags with the intervals: quality.ndcg_at_10_interval, the best shippable and best non-private
    baselines (quality.best_non_private_baseline*), quality.price_of_privacy (+ _interval) and each user-group
    ratio's interval (fairness.user_ndcg_ratio_interval.<attribute>), all on the same shopper resamples."""
    unc = ev["uncertainty"]
    tags = {"quality.ndcg_at_10_interval": _interval_text(unc["ndcg"]["candidate"]),
            "quality.best_baseline_learns": ev["baselines"][ev["best_baseline"]]["learns"],
            "quality.best_baseline_ndcg_at_10_interval": _interval_text(unc["ndcg"][ev["best_baseline"]]),
            "quality.bootstrap": f"{unc['method']['n_resamples']} resamples of {unc['method']['n_shoppers']} "
                                 f"shoppers, seed {unc['method']['seed']}, paired"}
    best_np = ev.get("best_non_private_baseline")
    if best_np:
        price = unc["price_of_privacy"]
        tags.update({"quality.best_non_private_baseline": best_np,
                     "quality.best_non_private_baseline_ndcg_at_10": f"{ev['best_non_private_baseline_ndcg']:.6g}",
                     "quality.best_non_private_baseline_ndcg_at_10_interval": _interval_text(unc["ndcg"][best_np]),
                     "quality.price_of_privacy": "n/a" if price["value"] is None else f"{price['value']:.6g}",
                     "quality.price_of_privacy_interval": _interval_text(price)})
    for attr, entry in unc["user_ndcg_ratio"]["candidate"].items():
        tags[f"fairness.user_ndcg_ratio_interval.{attr}"] = _interval_text(entry)
    for result in decision.checks:
        if result.rule != "threshold":
            tags[f"gate.{result.name}.rule"] = result.rule
    return tags


def _alternatives_table(ev: dict[str, Any], evidence: dict[str, Any], decision: Any) -> list[dict[str, Any]]:
    """Per user attribute: the candidate's ratio beside the best shippable baseline's and the champion's, and which
    rule decided its check (threshold, or no worse than the alternatives)."""
    rule_of = {r.metric: (r.rule, r.status) for r in decision.checks}
    rows = []
    for attr in ev["uncertainty"]["eligible_groups"]:
        metric = f"fairness.user_ndcg_ratio.{attr}"
        rule, status = rule_of.get(metric, ("not checked", "n/a"))
        rows.append({"attribute": attr, "candidate": evidence.get(metric),
                     "best_baseline": evidence.get(f"alternative.best_baseline.{metric}"),
                     "champion": evidence.get(f"alternative.champion.{metric}"), "rule": rule, "status": status})
    return rows


def write_card(ctx: RunContext, client: Any) -> str:
    from ml.registry.card import CARD_ARTIFACT, card_links, fit_description, full_card_link, model_card
    from ml.training.autosettings import markdown as settings_markdown

    registered = ctx.read("register")
    trained = ctx.read("train")
    gate_out = ctx.read("gate") if ctx.has("gate") else None
    run_id = ctx.read("train")["mlflow_run_id"]
    links, slice_links = card_links(trained["experiment_id"], run_id, ctx.read("evaluate")["reports"], ctx.path("reports"))
    card = model_card(
        name=ctx.settings.model_name, version=registered["version"], config=trained.get("config", ctx.config.to_dict()),
        features=ctx.read("features"), ingest=ctx.read("ingest"), train=ctx.read("train"),
        evaluation=ctx.read("evaluate"), pii_findings=registered["pii_findings"], smoke=registered["smoke"],
        gate=None if gate_out is None else {"status": gate_out["status"], "policy_label": gate_out["policy"],
                                             "summary_markdown": gate_out["summary_markdown"],
                                             "alternatives": gate_out.get("alternatives")},
        champion=None if gate_out is None else gate_out["champion"], links=links, slice_links=slice_links)
    if trained.get("training_settings"):  # each setting of the run, chosen from the data or by hand, and why
        card = card.replace("## Privacy\n", "\n".join(settings_markdown(trained["training_settings"])) + "## Privacy\n", 1)
    client.update_model_version(ctx.settings.model_name, registered["version"], description=fit_description(
        card, full_card=full_card_link(trained["experiment_id"], run_id)))
    client.log_text(run_id, card, CARD_ARTIFACT)  # the whole card, whatever the registry's length limit
    ctx.path("model_card.md").write_text(card)
    return card


# ---------------------------------------------------------------------------------------------------
def promote(ctx: RunContext, actor: str = "vetted") -> dict[str, Any]:
    """Move `champion` if the version's recorded gate status allows it; otherwise leave everything as it is.

    If anything here raises, the version is tagged failed and `champion` is put back where it was."""
    from ml.pipeline.lease import stage_lease
    from ml.registry import registration as reg
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure

    settings = ctx.settings
    configure(settings)
    client = make_client(settings)
    version = ctx.read("register")["version"]
    with stage_lease(ctx.run_dir, "promote"), reg.failure_guard(client, settings.model_name, version, "promote",
                                                                settings=settings):
        return _promote(ctx, client, version, actor)


def _promote(ctx: RunContext, client: Any, version: str, actor: str) -> dict[str, Any]:
    from ml.registry import registration as reg
    from ml.registry.audit import append_event

    settings = ctx.settings
    tags = client.get_model_version(settings.model_name, version).tags
    status = tags.get("gate.status")
    if status in reg.PROMOTABLE:
        moved = reg.promote(client, settings.model_name, version, actor=actor)
        append_event(settings, "promotion", settings.model_name, version, actor,
                     f"gate.status={status}; previous champion {moved['previous']}")
        out = {"promoted": True, **moved, "status": status}
    else:
        champ = reg.alias_version(client, settings.model_name, reg.CHAMPION)
        out = {"promoted": False, "champion": str(champ.version) if champ else None, "status": status}
        if status == "failed":
            why = (f"failed at {tags[reg.FAILED_AT]}: {tags.get(reg.FAILURE_REASON, '')}" if reg.FAILED_AT in tags
                   else "blocking checks failed: " + ", ".join(ctx.read("gate")["decision"]["blocking_failures"]))
            append_event(settings, "rejection", settings.model_name, version, "gate", why)
    ctx.write("promote", out)
    write_summary(ctx)
    return out


def write_summary(ctx: RunContext) -> Path:
    """summary.json: metrics, baselines, the gate decision check by check, the version, report paths."""
    ev = ctx.read("evaluate")
    gate_out = ctx.read("gate") if ctx.has("gate") else {}
    registered = ctx.read("register") if ctx.has("register") else {}
    summary = {
        "run_dir": str(ctx.run_dir),
        "model_name": ctx.settings.model_name,
        "model_version": registered.get("version"),
        "mlflow_run_id": ctx.read("train")["mlflow_run_id"],
        "config": ctx.config.to_dict(),
        "ingest": {k: ctx.read("ingest")[k] for k in ("read", "accepted", "quarantined", "quarantine_path",
                                                       "pii_replaced", "consent")},
        "metrics": ev["candidate"]["metrics"],
        "baselines": {n: {**r["metrics"], "learns": r.get("learns")} for n, r in ev["baselines"].items()},
        "best_baseline": ev["best_baseline"],
        "best_non_private_baseline": ev.get("best_non_private_baseline"),
        "uncertainty": ev.get("uncertainty"),
        "search": _search_summary(ev.get("search") or {}),
        "privacy": {**ctx.read("train")["privacy"], "mia": ev["mia"], "pii_findings": registered.get("pii_findings")},
        "fairness": {"user_ndcg_ratio": ev["user_ndcg_ratio"], "provider_exposure_ratio": ev["provider_exposure_ratio"]},
        "drift_share": ev["drift"]["share_drifted"],
        "gate": {"status": gate_out.get("status"), "policy": gate_out.get("policy"),
                 "checks": (gate_out.get("decision") or {}).get("checks"),
                 "champion_compared": gate_out.get("champion"),
                 "fairness_vs_alternatives": gate_out.get("alternatives")},
        "promotion": ctx.read("promote") if ctx.has("promote") else None,
        "reports": ev["reports"],
        "model_card": str(ctx.path("model_card.md")),
    }
    return ctx.write("summary", summary)


def _search_summary(searched: dict[str, Any]) -> dict[str, Any]:
    if not searched.get("n_cases"):
        return {"n_cases": 0, "unmeasurable": searched.get("unmeasurable")}
    return {"n_cases": searched["n_cases"], "metrics": searched["candidate"]["metrics"],
            "zero_result_rate": searched["candidate"]["zero_result_rate"],
            "provider_exposure_ratio": (searched["candidate"].get("provider") or {}).get("ratio"),
            "dense_only": searched["dense_only"], "best_baseline": searched["best_baseline"],
            "baselines": {n: r["metrics"] for n, r in searched["baselines"].items()},
            "uncertainty": searched.get("uncertainty")}


STAGES = ("ingest", "features", "train", "evaluate", "register", "gate", "promote")


def review(ctx: RunContext, approved: bool, reviewer: str, note: str = "") -> dict[str, Any]:
    """Record a reviewer's answer on a version waiting for approval (gate.status=pending_approval).

    Approval sets gate.status=approved (promotion then reads it); rejection sets rejected. Both are
    written to the audit trail with the reviewer and the note.
    """
    from datetime import UTC, datetime

    from ml.registry import registration as reg
    from ml.registry.audit import append_event
    from ml.registry.tracking import client as make_client
    from ml.registry.tracking import configure

    settings = ctx.settings
    configure(settings)
    client = make_client(settings)
    version = ctx.read("register")["version"]
    status = client.get_model_version(settings.model_name, version).tags.get("gate.status")
    if status != "pending_approval":
        raise ValueError(f"{settings.model_name} v{version} has gate.status={status!r}: nothing waits for approval")
    new = "approved" if approved else "rejected"
    reg.set_tags(client, settings.model_name, version, {
        "gate.status": new, "gate.reviewed_by": reviewer or "unknown",
        "gate.reviewed_at": datetime.now(UTC).isoformat(timespec="seconds"), "gate.review_note": note or ""})
    reg.point_candidate(client, settings.model_name, version, new)
    reg.retitle(client, settings.model_name, version, new, f"{new} by {reviewer or 'unknown'}")
    append_event(settings, "approval" if approved else "rejection", settings.model_name, version, reviewer,
                 note or ("approved by a reviewer" if approved else "rejected by a reviewer"))
    out = {"status": new, "reviewer": reviewer, "note": note}
    ctx.write("review", out)
    return out

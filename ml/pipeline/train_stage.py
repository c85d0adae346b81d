"""The train stage: fine-tune the bi-encoder on the run's training set, log the run to MLflow, save the model.

Called as `ml.pipeline.stages.train` (re-exported there, in STAGES' order) by `vetted run`, the DAG's train task,
the benchmarks and the tests. It reads the run folder (TRAIN_SET, SEQUENCES, the ingest and features records)
and writes `<run_dir>/train.json` and the model folder; the library does the work (ml.training, ml.privacy,
ml.registry).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ml.pipeline.context import CASES, SEQUENCES, TRAIN_SET, RunContext


def train(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the bi-encoder (DP-SGD at user level when on); log to MLflow; save the model folder."""
    import mlflow
    import torch

    from ml.data.ingest import read_lake
    from ml.item_tables import lexical_neighbours
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
    from ml.training.model import BiEncoder, catalogue_codes
    from ml.training.recommender import Recommender, RecommenderSettings
    from ml.training.text_vectors import catalogue_vectors
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
    # the item table the model starts from: the pretrained encoder's vectors of the catalogue, read from the cache
    # where an earlier stage or run encoded the same texts (the evaluate stage's zero-shot baseline reads them too)
    model.item_table.copy_(
        torch.from_numpy(
            catalogue_vectors(
                settings.text_vectors_dir,
                texts,
                cfg.max_item_tokens,
                lambda t: model.encode_texts(tokenizer, t, cfg.max_item_tokens).numpy(),
            )
        )
    )
    if transitions is not None:
        model.set_transitions(transitions)
    # public catalogue text only: no privacy cost
    model.set_lexical(lexical_neighbours(items["title"].fillna("").astype(str).tolist(), texts))
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
        "transition_pairs": 0 if transitions is None else int(transitions.nnz),  # released pairs (DP), or all
        "audit_users": sorted(audit),
        "member_users": sorted(members),
        "privacy": privacy,
        "config": cfg.to_dict(),
        "training_settings": chosen.to_dict(),
        "datasets": datasets,
    }
    ctx.write("train", out)
    return {k: out[k] for k in ("mlflow_run_id", "model_dir", "steps", "seconds")}

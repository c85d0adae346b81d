"""The evidence a registered version carries: its tags (headline figures, intervals, the gate's rules), the table
of fairness alternatives, and the model card written from the run's stage outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.gate.decision import GateDecision
    from ml.pipeline.context import RunContext


def version_tags(ctx: RunContext) -> dict[str, str]:
    """The version's searchable tags: headline quality, privacy, fairness and drift figures, the data window and
    the serving settings, each as text ("n/a" for a figure the run could not measure)."""
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
        "privacy.secure_rng": str(bool(privacy["secure_rng"])).lower(),
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


def interval_text(entry: dict[str, Any] | None) -> str:
    """ "0.1074 [0.0991, 0.1160] at 95%" for a tag; "n/a" without a value."""
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("lower") is None:
        return f"{entry['value']:.4g}"
    return f"{entry['value']:.4g} [{entry['lower']:.4g}, {entry['upper']:.4g}] at {entry['confidence']:.0%}"


def uncertainty_tags(metrics: dict[str, Any], ev: dict[str, Any], decision: GateDecision) -> dict[str, str]:
    """Version tags with the intervals: quality.ndcg_at_10_interval, the best shippable and best non-private
    baselines (quality.best_non_private_baseline*), quality.price_of_privacy (+ _interval) and each user-group
    ratio's interval (fairness.user_ndcg_ratio_interval.<attribute>), all on the same shopper resamples."""
    unc = ev["uncertainty"]
    tags = {
        "quality.ndcg_at_10_interval": interval_text(unc["ndcg"]["candidate"]),
        "quality.best_baseline_learns": ev["baselines"][ev["best_baseline"]]["learns"],
        "quality.best_baseline_ndcg_at_10_interval": interval_text(unc["ndcg"][ev["best_baseline"]]),
        "quality.bootstrap": f"{unc['method']['n_resamples']} resamples of {unc['method']['n_shoppers']} "
        f"shoppers, seed {unc['method']['seed']}, paired",
    }
    best_np = ev["best_non_private_baseline"]
    if best_np:
        price = unc["price_of_privacy"]
        tags.update(
            {
                "quality.best_non_private_baseline": best_np,
                "quality.best_non_private_baseline_ndcg_at_10": f"{ev['best_non_private_baseline_ndcg']:.6g}",
                "quality.best_non_private_baseline_ndcg_at_10_interval": interval_text(unc["ndcg"][best_np]),
                "quality.price_of_privacy": "n/a" if price["value"] is None else f"{price['value']:.6g}",
                "quality.price_of_privacy_interval": interval_text(price),
            }
        )
    for attr, entry in unc["user_ndcg_ratio"]["candidate"].items():
        tags[f"fairness.user_ndcg_ratio_interval.{attr}"] = interval_text(entry)
    for result in decision.checks:
        if result.rule != "threshold":
            tags[f"gate.{result.name}.rule"] = result.rule
    return tags


def alternatives_table(ev: dict[str, Any], evidence: dict[str, Any], decision: GateDecision) -> list[dict[str, Any]]:
    """Per user attribute: the candidate's ratio beside the best shippable baseline's and the champion's, and which
    rule decided its check (threshold, or no worse than the alternatives)."""
    rule_of = {r.metric: (r.rule, r.status) for r in decision.checks}
    rows = []
    for attr in ev["uncertainty"]["eligible_groups"]:
        metric = f"fairness.user_ndcg_ratio.{attr}"
        rule, status = rule_of.get(metric, ("not checked", "n/a"))
        rows.append(
            {
                "attribute": attr,
                "candidate": evidence.get(metric),
                "best_baseline": evidence.get(f"alternative.best_baseline.{metric}"),
                "champion": evidence.get(f"alternative.champion.{metric}"),
                "rule": rule,
                "status": status,
            }
        )
    return rows


def write_card(ctx: RunContext, client: Any) -> str:
    """The model card from the run's stage outputs: the version's description (fitted to the registry's limit), the
    whole card as a run artifact, and model_card.md in the run folder; returns the card."""
    from ml.registry.card import CARD_ARTIFACT, card_links, fit_description, full_card_link, model_card
    from ml.training.autosettings import markdown as settings_markdown

    registered = ctx.read("register")
    trained = ctx.read("train")
    gate_out = ctx.read("gate") if ctx.has("gate") else None
    run_id = ctx.read("train")["mlflow_run_id"]
    links, slice_links = card_links(
        trained["experiment_id"], run_id, ctx.read("evaluate")["reports"], ctx.path("reports")
    )
    card = model_card(
        name=ctx.settings.model_name,
        version=registered["version"],
        config=trained["config"],
        features=ctx.read("features"),
        ingest=ctx.read("ingest"),
        train=ctx.read("train"),
        evaluation=ctx.read("evaluate"),
        pii_findings=registered["pii_findings"],
        smoke=registered["smoke"],
        gate=None
        if gate_out is None
        else {
            "status": gate_out["status"],
            "policy_label": gate_out["policy"],
            "summary_markdown": gate_out["summary_markdown"],
            "alternatives": gate_out["alternatives"],
        },
        champion=None if gate_out is None else gate_out["champion"],
        links=links,
        slice_links=slice_links,
    )
    if trained["training_settings"]:  # each setting of the run, chosen from the data or by hand, and why
        card = card.replace(
            "## Privacy\n", "\n".join(settings_markdown(trained["training_settings"])) + "## Privacy\n", 1
        )
    client.update_model_version(
        ctx.settings.model_name,
        registered["version"],
        description=fit_description(card, full_card=full_card_link(trained["experiment_id"], run_id)),
    )
    client.log_text(run_id, card, CARD_ARTIFACT)  # the whole card, whatever the registry's length limit
    ctx.path("model_card.md").write_text(card)
    return card

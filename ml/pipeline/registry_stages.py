"""The stages after training: register the candidate, gate it, promote it, and record a reviewer's answer.

Called as `ml.pipeline.stages.<name>` like the stages before them (STAGES there gives the order). Each reads the
run folder, calls the registry, the gate and the evidence modules, and writes `<run_dir>/<stage>.json`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from ml.pipeline.context import CASES, PER_CASE, SEARCH_CASES, SEARCH_PER_CASE, TRAIN_SET, RunContext
from ml.pipeline.summary import write_summary
from ml.registry.evidence import write_card

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml.config import Settings


def registry_client(settings: Settings) -> MlflowClient:
    """The MLflow client of the home's tracking store, the store configured for this process first."""
    from ml.registry.tracking import client, configure

    configure(settings)
    return client(settings)


# ---------------------------------------------------------------------------------------------------
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

    from ml.pipeline.lease import hold_for_tests
    from ml.privacy.release import scan_release
    from ml.registry import registration as reg
    from ml.registry.evidence import version_tags
    from ml.registry.integrity import digest_tags
    from ml.registry.pyfunc import input_example
    from ml.registry.smoke import smoke_test
    from ml.registry.tracking import flat_params

    cfg, settings = ctx.config, ctx.settings
    client = registry_client(settings)
    trained = ctx.read("train")
    run_id = trained["mlflow_run_id"]
    status = client.get_run(run_id).info.status
    if status not in ("FINISHED", "RUNNING"):  # RUNNING: a killed evaluate or register left it open
        raise RuntimeError(f"training run {run_id} ended {status}: it is not registered; run train again")
    tags = version_tags(ctx)

    raw = ctx.source_tables(ctx.read("ingest")["ingest_date"])
    texts = {f"param:{k}": v for k, v in flat_params("", cfg.to_dict()).items()}
    texts.update({f"tag:{k}": v for k, v in tags.items()})
    findings, scan = scan_release(
        raw.users,
        raw.events,
        raw.items,
        texts,
        [Path(trained["model_dir"]), ctx.path("reports"), settings.home / "features"],
    )
    tags["privacy.pii_findings"] = str(len(findings))
    tags.update(digest_tags(Path(trained["model_dir"])))  # the folder log_model stores as the recommender

    cases = pd.read_parquet(ctx.path(CASES))
    histories = [list(h) for h in cases["history"].head(5)]
    queries = _sample_queries(ctx)
    existing = reg.version_for_run(client, settings.model_name, run_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("privacy.pii_findings", len(findings))
        mlflow.log_dict(scan, "pii_scan.json")
        # a retry whose first attempt got as far as a version reuses that version's model (a registered
        # version always has a source, though MLflow's ModelVersion types it as optional)
        model_uri = (
            cast(str, existing.source)
            if existing
            else reg.log_model(Path(trained["model_dir"]), input_example(histories, queries[0]))
        )
    # a version the gate decided keeps its decision until the gate runs again (a champion never turns pending);
    # a new version, or one an earlier attempt left failed, waits for the gate
    decided = existing.tags.get("gate.status") if existing else None
    status = decided if decided not in (None, "failed", "pending") else "pending"
    card = existing.description if existing and status != "pending" and existing.description else "Gate not run yet."
    version = reg.register(
        client, settings.model_name, model_uri, run_id, {**tags, "gate.status": status}, description=card
    )
    hold_for_tests("register.version_created")
    with reg.failure_guard(client, settings.model_name, str(version.version), "register", settings=settings):
        smoke = smoke_test(
            settings.tracking_uri, f"models:/{settings.model_name}/{version.version}", histories, queries, k=cfg.k
        )
        reg.set_tags(client, settings.model_name, version.version, {"serving.smoke_ok": str(smoke["ok"]).lower()})
        ctx.write(
            "register",
            {
                "model_uri": model_uri,
                "version": str(version.version),
                "pii_findings": len(findings),
                "pii_scan": scan["findings"],
                "smoke": smoke,
                "tags": tags,
            },
        )
    return {"version": str(version.version), "pii_findings": len(findings), "smoke_ok": smoke["ok"]}


def _sample_queries(ctx: RunContext) -> list[str]:
    train_set = pd.read_parquet(ctx.path(TRAIN_SET), columns=["kind", "query"])
    queries = train_set.loc[train_set["kind"] == "search", "query"].dropna().astype(str).head(3).tolist()
    return queries or ["gift"]


def fail_version(ctx: RunContext, stage: str, reason: str) -> str | None:
    """Mark this run's registered version failed (and not champion); returns it, or None if none exists.

    For a failure no stage could catch (the DAG's on_failure_callback: a killed or timed-out task)."""
    from ml.registry import registration as reg

    if not ctx.has("train"):
        return None
    client = registry_client(ctx.settings)
    version = reg.version_for_run(client, ctx.settings.model_name, ctx.read("train")["mlflow_run_id"])
    if version is None:
        return None
    reg.mark_failed(client, ctx.settings.model_name, str(version.version), stage, reason, settings=ctx.settings)
    return str(version.version)


# ---------------------------------------------------------------------------------------------------
def gate(ctx: RunContext) -> dict[str, Any]:
    """Check the candidate against the policy; record the decision on the version (tags, card).

    If anything here raises, the version is left `gate.status=failed` with the reason, never champion."""
    from ml.pipeline.lease import stage_lease
    from ml.registry import registration as reg

    settings = ctx.settings
    client = registry_client(settings)
    registered = ctx.read("register")
    version = registered["version"]
    with (
        stage_lease(ctx.run_dir, "gate"),
        reg.failure_guard(client, settings.model_name, version, "gate", settings=settings),
    ):
        reg.clear_failure(client, settings.model_name, version)  # a retry decides afresh
        return _gate(ctx, client, registered)


def _gate(ctx: RunContext, client: Any, registered: dict[str, Any]) -> dict[str, Any]:
    from ml.evaluation.compare import per_case_groups, per_case_resamples
    from ml.evaluation.evaluate import gate_evidence
    from ml.gate.decision import decide
    from ml.gate.inputs import champion_ratios, gate_metrics, search_points
    from ml.gate.policy import load_policy
    from ml.registry import registration as reg
    from ml.registry.evidence import alternatives_table, uncertainty_tags

    cfg, settings = ctx.config, ctx.settings
    version = registered["version"]
    per_case = pd.read_parquet(ctx.path(PER_CASE))
    groups = per_case_groups(per_case)
    champion = _champion(ctx, client, version, groups)
    ev = ctx.read("evaluate")
    ndcg = {c[len("ndcg.") :]: per_case[c].to_numpy() for c in per_case.columns if c.startswith("ndcg.")}
    if champion:
        ndcg["champion"] = np.asarray(champion["per_case_ndcg"], dtype=float)
    # the same bootstrap resamples over the hold-out's shoppers as the evaluation drew (same cases, same seed)
    evidence, draws = gate_evidence(
        ndcg,
        groups,
        ev["uncertainty"]["eligible_groups"],
        per_case_resamples(per_case, cfg.seed),
        best=ev["best_baseline"],
        best_non_private=ev["best_non_private_baseline"],
    )
    metrics = gate_metrics(ctx.read("train"), ev, registered, evidence)
    searched = ev["search"]
    search_frame = pd.read_parquet(ctx.path(SEARCH_PER_CASE)) if searched.get("n_cases") else None
    search_metrics, search_draws = search_points(
        searched, search_frame, cfg.seed, (champion or {}).get("search_per_case_ndcg")
    )
    metrics.update(search_metrics)
    draws.update(search_draws)
    policy = load_policy(cfg.policy or None)
    decision = decide(policy, metrics, draws)
    status = "pending_approval" if decision.status == "passed" and cfg.require_approval else decision.status
    tags = {**decision.to_tags(), "gate.status": status, **uncertainty_tags(metrics, ev, decision)}
    if champion:
        tags["gate.champion_compared"] = f"v{champion['version']}"
    reg.set_tags(client, settings.model_name, version, tags)
    reg.point_candidate(client, settings.model_name, version, status)
    champion_out = (
        None
        if champion is None
        else {
            **{k: v for k, v in champion.items() if k not in ("per_case_ndcg", "search_per_case_ndcg")},
            "ratios": champion_ratios(evidence),
        }
    )
    ctx.write(
        "gate",
        {
            "status": status,
            "decision": decision.to_dict(),
            "metrics": metrics,
            "champion": champion_out,
            "policy": policy.label,
            "summary_markdown": decision.summary_markdown(),
            "alternatives": alternatives_table(ev, evidence, decision),
        },
    )
    write_card(ctx, client)
    return {"status": status, "version": version, "blocking_failures": decision.blocking_failures}


def _champion(ctx: RunContext, client: Any, version: str, groups: pd.DataFrame) -> dict[str, Any] | None:
    """The current champion (unless it is this version) re-evaluated on this run's hold-out and search cases."""
    import tempfile

    from ml.evaluation.candidate import champion_on_holdout
    from ml.evaluation.search import CASE_ROW
    from ml.registry.registration import CHAMPION, alias_version, download_recommender
    from ml.training.recommender import Recommender

    champ = alias_version(client, ctx.settings.model_name, CHAMPION)
    if champ is None or str(champ.version) == str(version):
        return None
    with tempfile.TemporaryDirectory(prefix="vetted-champion-") as scratch:
        rec = Recommender.load(download_recommender(client, ctx.settings.model_name, champ.version, Path(scratch)))
    search_cases = None
    if ctx.path(SEARCH_PER_CASE).exists():  # the same search cases the candidate was measured on, same order
        rows = pd.read_parquet(ctx.path(SEARCH_PER_CASE), columns=[CASE_ROW])[CASE_ROW].to_numpy()
        search_cases = pd.read_parquet(ctx.path(SEARCH_CASES)).iloc[rows].reset_index(drop=True)
    scored = champion_on_holdout(rec, pd.read_parquet(ctx.path(CASES)), groups, ctx.config.k, search_cases)
    return {"version": str(champ.version), **scored}


# ---------------------------------------------------------------------------------------------------
def promote(ctx: RunContext, actor: str = "vetted") -> dict[str, Any]:
    """Move `champion` if the version's recorded gate status allows it; otherwise leave everything as it is.

    If anything here raises, the version is tagged failed and `champion` is put back where it was."""
    from ml.pipeline.lease import stage_lease
    from ml.registry import registration as reg

    settings = ctx.settings
    client = registry_client(settings)
    version = ctx.read("register")["version"]
    with (
        stage_lease(ctx.run_dir, "promote"),
        reg.failure_guard(client, settings.model_name, version, "promote", settings=settings),
    ):
        return _promote(ctx, client, version, actor)


def _promote(ctx: RunContext, client: Any, version: str, actor: str) -> dict[str, Any]:
    from ml.registry import registration as reg
    from ml.registry.audit import append_event

    settings = ctx.settings
    tags = client.get_model_version(settings.model_name, version).tags
    status = tags.get("gate.status")
    if status in reg.PROMOTABLE:
        moved = reg.promote(client, settings.model_name, version, actor=actor)
        append_event(
            settings,
            "promotion",
            settings.model_name,
            version,
            actor,
            f"gate.status={status}; previous champion {moved['previous']}",
        )
        out = {"promoted": True, **moved, "status": status}
    else:
        champ = reg.alias_version(client, settings.model_name, reg.CHAMPION)
        out = {"promoted": False, "champion": str(champ.version) if champ else None, "status": status}
        if status == "failed":
            why = (
                f"failed at {tags[reg.FAILED_AT]}: {tags.get(reg.FAILURE_REASON, '')}"
                if reg.FAILED_AT in tags
                else "blocking checks failed: " + ", ".join(ctx.read("gate")["decision"]["blocking_failures"])
            )
            append_event(settings, "rejection", settings.model_name, version, "gate", why)
    ctx.write("promote", out)
    write_summary(ctx)
    return out


def review(ctx: RunContext, approved: bool, reviewer: str, note: str = "") -> dict[str, Any]:
    """Record a reviewer's answer on a version waiting for approval (gate.status=pending_approval).

    Approval sets gate.status=approved (promotion then reads it); rejection sets rejected. Both are
    written to the audit trail with the reviewer and the note.
    """
    from ml.registry import registration as reg
    from ml.registry.audit import append_event

    settings = ctx.settings
    client = registry_client(settings)
    version = ctx.read("register")["version"]
    status = client.get_model_version(settings.model_name, version).tags.get("gate.status")
    if status != "pending_approval":
        raise ValueError(f"{settings.model_name} v{version} has gate.status={status!r}: nothing waits for approval")
    new = "approved" if approved else "rejected"
    reg.set_tags(
        client,
        settings.model_name,
        version,
        {
            "gate.status": new,
            "gate.reviewed_by": reviewer or "unknown",
            "gate.reviewed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gate.review_note": note or "",
        },
    )
    reg.point_candidate(client, settings.model_name, version, new)
    reg.retitle(client, settings.model_name, version, new, f"{new} by {reviewer or 'unknown'}")
    append_event(
        settings,
        "approval" if approved else "rejection",
        settings.model_name,
        version,
        reviewer,
        note or ("approved by a reviewer" if approved else "rejected by a reviewer"),
    )
    out = {"status": new, "reviewer": reviewer, "note": note}
    ctx.write("review", out)
    return out

"""summary.json: the run in one file (metrics, baselines, the gate decision check by check, the version, reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml.pipeline.context import RunContext


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
        "ingest": {
            k: ctx.read("ingest")[k]
            for k in ("read", "accepted", "quarantined", "quarantine_path", "pii_replaced", "consent")
        },
        "metrics": ev["candidate"]["metrics"],
        "baselines": {n: {**r["metrics"], "learns": r.get("learns")} for n, r in ev["baselines"].items()},
        "best_baseline": ev["best_baseline"],
        "best_non_private_baseline": ev["best_non_private_baseline"],
        "uncertainty": ev["uncertainty"],
        "search": _search_summary(ev["search"]),
        "privacy": {**ctx.read("train")["privacy"], "mia": ev["mia"], "pii_findings": registered.get("pii_findings")},
        "fairness": {
            "user_ndcg_ratio": ev["user_ndcg_ratio"],
            "provider_exposure_ratio": ev["provider_exposure_ratio"],
        },
        "drift_share": ev["drift"]["share_drifted"],
        "gate": {
            "status": gate_out.get("status"),
            "policy": gate_out.get("policy"),
            "checks": (gate_out.get("decision") or {}).get("checks"),
            "champion_compared": gate_out.get("champion"),
            "fairness_vs_alternatives": gate_out.get("alternatives"),
        },
        "promotion": ctx.read("promote") if ctx.has("promote") else None,
        "reports": ev["reports"],
        "model_card": str(ctx.path("model_card.md")),
    }
    return ctx.write("summary", summary)


def _search_summary(searched: dict[str, Any]) -> dict[str, Any]:
    if not searched.get("n_cases"):
        return {"n_cases": 0, "unmeasurable": searched.get("unmeasurable")}
    return {
        "n_cases": searched["n_cases"],
        "metrics": searched["candidate"]["metrics"],
        "zero_result_rate": searched["candidate"]["zero_result_rate"],
        "provider_exposure_ratio": (searched["candidate"].get("provider") or {}).get("ratio"),
        "dense_only": searched["dense_only"],
        "best_baseline": searched["best_baseline"],
        "baselines": {n: r["metrics"] for n, r in searched["baselines"].items()},
        "uncertainty": searched.get("uncertainty"),
    }

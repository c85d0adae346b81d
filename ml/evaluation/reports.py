"""Evidently (0.7) HTML reports: data drift, ranking quality (overall and per slice), and a fairness summary.

Every number returned here is read from Evidently's own result, not recomputed, so what the gate and the
model card show is what the HTML shows. Evidently facts this module relies on (checked on 0.7.23):

- Ranking data is declared with `DataDefinition(ranking=[Recsys(..., recommendations_type="score")])`;
  `RecsysPreset` needs score-type predictions. Evidently turns scores into ranks with pandas' average rank
  cut to int, so tied scores would share (wrong) ranks: ties are broken here by frame order first.
- Its MAP reads each rank's relevance from the last row per user in frame order, so the frame is sorted by
  user and descending score before it is handed over.
- Top-k metrics come back as a table of (rank, value) for k = 1..max(k, 10); NDCG and MRR label their rows
  one rank too high, so the value at k is read from the k-th row, not from the "rank" label.
- `GroupBy` returns the overall value for recsys metrics: each slice gets a report of its own.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.evaluation.metrics import Target, relevant_set

log = logging.getLogger(__name__)

RANKING_COLUMNS = ("user_id", "item_id", "target", "prediction")
CASES_SHOWN = 5  # users listed in the report's recommendation-cases table

# Evidently metric class name -> house name (None: no "_at_k" suffix)
_TOP_K_NAMES = {
    "NDCG": "ndcg",
    "RecallTopK": "recall",
    "PrecisionTopK": "precision",
    "FBetaTopK": "f1",
    "MAP": "map",
    "HitRate": "hr",
    "MRR": "mrr",
}
_SINGLE_VALUE_NAMES = {"Personalization": "personalization", "ScoreDistribution": "score_entropy"}


# ------------------------------------------------------------------------------------------------ drift


def _drift_frames(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """The two frames restricted to the audited columns, with datetimes as epoch seconds."""
    if columns is None:
        shared = [c for c in reference.columns if c in current.columns]
        skipped = [c for c in shared if pd.api.types.is_datetime64_any_dtype(reference[c])]
        if skipped:
            log.info("drift: skipping datetime column(s) %s (windows differ by construction)", skipped)
        columns = [c for c in shared if c not in skipped]
    columns = list(columns)
    for name, frame in (("reference", reference), ("current", current)):
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ValueError(f"drift report: {name} frame has no column(s) {absent}; it has {list(frame.columns)}")
        if frame.empty:
            raise ValueError(f"drift report: the {name} frame is empty")
    if not columns:
        raise ValueError("drift report: no columns to compare")
    numerical, categorical = [], []
    ref, cur = reference[columns].copy(), current[columns].copy()
    for c in columns:
        if pd.api.types.is_datetime64_any_dtype(ref[c]):
            ref[c] = ref[c].astype("int64") / 1e9
            cur[c] = pd.to_datetime(cur[c]).astype("int64") / 1e9
        if pd.api.types.is_bool_dtype(ref[c]) or not pd.api.types.is_numeric_dtype(ref[c]):
            ref[c] = ref[c].astype(str)
            cur[c] = cur[c].astype(str)
            categorical.append(c)
        else:
            numerical.append(c)
    return ref, cur, numerical, categorical


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, path: Path, columns: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write Evidently's data-drift report (reference = training window, current = new data) as HTML.

    Returns path, share_drifted, n_drifted, n_columns (from Evidently's DriftedColumnsCount),
    drifted_columns (the columns whose ValueDrift test failed) and seconds. Numeric columns are numerical, all others
    categorical; with `columns=None` every shared non-datetime column is compared.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur, numerical, categorical = _drift_frames(reference, current, columns)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    started = time.perf_counter()
    report = Report([DataDriftPreset(columns=numerical + categorical)], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    result = snapshot.dict()
    summary = next(
        (m["value"] for m in result["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")), None
    )
    if summary is None:
        raise RuntimeError("Evidently's drift report has no DriftedColumnsCount result; check the evidently version")
    drifted = sorted(
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["metric_config"]["params"].get("type", "").endswith(":ValueDrift") and t["status"] == "FAIL"
    )
    n_drifted = int(summary["count"])
    if n_drifted != len(drifted):
        log.warning("drift: Evidently counts %d drifted columns but %d drift tests failed", n_drifted, len(drifted))
    out = {
        "path": str(path),
        "share_drifted": float(summary["share"]),
        "n_drifted": n_drifted,
        "n_columns": len(numerical) + len(categorical),
        "drifted_columns": drifted,
        "seconds": time.perf_counter() - started,
    }
    log.info("drift report %s: %d/%d drifted (%.2fs)", path, n_drifted, out["n_columns"], out["seconds"])
    return out


# ---------------------------------------------------------------------------------------------- ranking


def ranking_frame(
    recommendations: Sequence[Sequence[str]],
    targets: Sequence[Target],
    k: int,
    user_ids: Sequence[str] | None = None,
    scores: Sequence[Sequence[float]] | None = None,
) -> pd.DataFrame:
    """The long frame `ranking_report` reads: the top-k rows of each case plus its relevant items not in
    the top k (scored below every recommended item). Without scores, rank r scores k - r + 1.

    `user_ids` names the cases (default "case-<i>"); a user with several cases must get distinct ids.
    """
    if len(recommendations) != len(targets):
        raise ValueError(f"recommendations has {len(recommendations)} cases but targets has {len(targets)}")
    ids = [f"case-{i}" for i in range(len(recommendations))] if user_ids is None else [str(u) for u in user_ids]
    if len(ids) != len(recommendations):
        raise ValueError(f"user_ids has {len(ids)} entries for {len(recommendations)} cases")
    if len(set(ids)) != len(ids):
        raise ValueError("user_ids repeats an id; each case needs its own id (e.g. user + case number)")
    users, items, rel, preds = [], [], [], []
    for i, (ranked, target) in enumerate(zip(recommendations, targets, strict=True)):
        relevant = relevant_set(target)
        if scores is None:
            scored = [(item, float(k - r)) for r, item in enumerate(dict.fromkeys(ranked))]
        else:
            if len(scores[i]) != len(ranked):
                raise ValueError(f"case {i}: {len(ranked)} items but {len(scores[i])} scores")
            first: dict[str, float] = {}
            for item, score in zip(ranked, scores[i], strict=True):
                first.setdefault(item, float(score))
            scored = list(first.items())
        scored = scored[:k]
        top = [item for item, _ in scored]
        floor = min((s for _, s in scored), default=0.0)
        missing = sorted(relevant - set(top))
        for item, score in scored:
            users.append(ids[i])
            items.append(item)
            rel.append(int(item in relevant))
            preds.append(score)
        for j, item in enumerate(missing, start=1):
            users.append(ids[i])
            items.append(item)
            rel.append(1)
            preds.append(floor - j)
    return pd.DataFrame({"user_id": users, "item_id": items, "target": rel, "prediction": preds})


def _prepare_ranking(frame: pd.DataFrame) -> pd.DataFrame:
    absent = [c for c in RANKING_COLUMNS if c not in frame.columns]
    if absent:
        raise ValueError(
            f"ranking frame has no column(s) {absent}; it needs {list(RANKING_COLUMNS)} "
            "(build it with ml.evaluation.reports.ranking_frame)"
        )
    if frame.empty:
        raise ValueError("ranking frame is empty")
    data = frame[list(RANKING_COLUMNS)].copy()
    data["user_id"] = data["user_id"].astype(str)
    data["item_id"] = data["item_id"].astype(str)
    data["target"] = (data["target"].astype(float) > 0).astype(int)
    data["prediction"] = data["prediction"].astype(float)
    data = data.sort_values(["user_id", "prediction"], ascending=[True, False], kind="mergesort")
    data = data.reset_index(drop=True)
    if data.duplicated(["user_id", "prediction"]).any():
        log.warning("ranking report: tied scores within a user; breaking ties by frame order")
        position = data.groupby("user_id", sort=False).cumcount()
        data["prediction"] = -position.astype(float)
    no_feedback = data.groupby("user_id")["target"].max()
    if (no_feedback == 0).any():
        log.warning(
            "ranking report: %d user(s) have no relevant row; Evidently leaves them out",
            int((no_feedback == 0).sum()),
        )
    return data


def _value_at_k(table: Mapping[str, Mapping[str, float]], k: int) -> float:
    values = [table["value"][key] for key in sorted(table["value"], key=int)]
    if len(values) < k:
        log.warning("ranking report: Evidently computed only up to rank %d < k=%d", len(values), k)
    return float(values[min(k, len(values)) - 1])


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _read_ranking_metrics(result: dict[str, Any], k: int) -> dict[str, float | None]:
    """House-named values at k from a RecsysPreset snapshot; undefined values (NaN) become None."""
    metrics: dict[str, float | None] = {}
    for metric in result["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind in _TOP_K_NAMES:
            name = _TOP_K_NAMES[kind]
            key = name if name == "mrr" else f"{name}_at_{k}"
            metrics[key] = _finite(_value_at_k(metric["value"], k))
        elif kind in _SINGLE_VALUE_NAMES:
            metrics[_SINGLE_VALUE_NAMES[kind]] = _finite(float(metric["value"]))
    return metrics


def ranking_report(frame: pd.DataFrame, path: Path, k: int) -> dict[str, Any]:
    """Write Evidently's RecsysPreset report for a long ranking frame and return the values it computed.

    `frame` has user_id, item_id, target (1 relevant / 0 not) and prediction (score, higher is better):
    the top-k rows of every case plus its relevant rows outside the top k (see `ranking_frame`).
    Returns {"path", "metrics": {ndcg_at_k, recall_at_k, precision_at_k, f1_at_k, map_at_k, hr_at_k, mrr,
    personalization, score_entropy} (None where Evidently's value is undefined, e.g. personalization of
    one user), "n_users", "seconds"}.
    """
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.presets import RecsysPreset

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    data = _prepare_ranking(frame)
    definition = DataDefinition(
        numerical_columns=["target", "prediction"],
        categorical_columns=["user_id", "item_id"],
        ranking=[
            Recsys(
                user_id="user_id",
                item_id="item_id",
                target="target",
                prediction="prediction",
                recommendations_type="score",
            )
        ],
    )
    shown = [str(u) for u in data["user_id"].drop_duplicates().head(CASES_SHOWN)]
    started = time.perf_counter()
    snapshot = Report([RecsysPreset(k=k, user_ids=shown)]).run(
        current_data=Dataset.from_pandas(data, data_definition=definition), reference_data=None
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    seconds = time.perf_counter() - started
    metrics = _read_ranking_metrics(snapshot.dict(), k)
    log.info("ranking report %s: ndcg@%d %s (%.2fs)", path, k, metrics.get(f"ndcg_at_{k}"), seconds)
    return {
        "path": str(path),
        "metrics": metrics,
        "n_users": int(data["user_id"].nunique()),
        "seconds": seconds,
    }


def safe_name(text: str) -> str:
    """A file-name-safe version of `text` (letters, digits, dot, dash, underscore), with a short hash
    appended whenever characters had to be replaced, so distinct names stay distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "blank"
    if cleaned != str(text):
        cleaned = f"{cleaned[:60]}-{hashlib.sha1(str(text).encode()).hexdigest()[:6]}"
    return cleaned


def ranking_reports_by_group(
    frame: pd.DataFrame,
    groups: Mapping[str, pd.Series | Mapping[str, Any]],
    out_dir: Path,
    k: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """One ranking report per (attribute, group) slice of the users.

    `groups` maps an attribute name to user_id -> group (a Series indexed by user_id or a mapping); users
    without a value form the group "unknown". Files: out_dir/ranking_<attribute>_<group>.html.
    Returns {attribute: {group: ranking_report result}}.
    """
    out_dir = Path(out_dir)
    users = frame["user_id"].astype(str)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for attribute, mapping in groups.items():
        lookup = {str(u): g for u, g in mapping.items()}
        labels = users.map(lookup).astype(object)
        labels = labels.where(labels.notna(), "unknown").astype(str)
        results[attribute] = {}
        for group in sorted(labels.unique()):
            name = f"ranking_{safe_name(attribute)}_{safe_name(group)}.html"
            results[attribute][group] = ranking_report(frame[labels == group], out_dir / name, k)
    return results


# --------------------------------------------------------------------------------------- fairness summary


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.4f}"
    return html.escape(str(value))


def fairness_summary_html(fairness: Mapping[str, Any], provider: Mapping[str, Any], path: Path) -> Path:
    """A small static HTML page (no JavaScript) of user-group fairness and provider exposure results.

    `fairness` is the output of `user_group_fairness`, `provider` that of `provider_exposure`.
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Fairness summary</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #999;padding:4px 10px;text-align:right}th{background:#eee}"
        "td:first-child,th:first-child{text-align:left}.excluded{color:#888}</style></head><body>",
        "<h1>Fairness summary</h1>",
        "<h2>User groups</h2>",
    ]
    for attribute, block in fairness.items():
        by_group = block.get("by_group", {})
        metric_names = [m for m in block.get("ratio", {})] or sorted(
            {m for e in by_group.values() for m in e if m != "n"}
        )
        excluded = set(block.get("excluded", []))
        parts.append(f"<h3>{html.escape(str(attribute))}</h3><table><tr><th>group</th><th>n</th>")
        parts.extend(f"<th>{html.escape(m)}</th>" for m in metric_names)
        parts.append("</tr>")
        for group, entry in by_group.items():
            css = " class='excluded'" if group in excluded else ""
            mark = " (excluded)" if group in excluded else ""
            parts.append(f"<tr{css}><td>{html.escape(str(group))}{mark}</td><td>{_fmt(entry.get('n'))}</td>")
            parts.extend(f"<td>{_fmt(entry.get(m))}</td>" for m in metric_names)
            parts.append("</tr>")
        for label in ("ratio", "gap"):
            how = "min/max" if label == "ratio" else "max-min"
            parts.append(f"<tr><th>{label} ({how})</th><th></th>")
            parts.extend(f"<th>{_fmt(block.get(label, {}).get(m))}</th>" for m in metric_names)
            parts.append("</tr>")
        parts.append("</table>")
        if excluded:
            parts.append(
                f"<p class='excluded'>Excluded from ratio and gap (unknown, or fewer than "
                f"{_fmt(block.get('min_group_size'))} cases): {html.escape(', '.join(sorted(excluded)))}</p>"
            )
    parts.append("<h2>Providers (long-tail brands)</h2><table><tr><th>measure</th><th>value</th></tr>")
    for key, label in (
        ("tail_exposure_share", "tail share of position-discounted exposure in the top k"),
        ("tail_relevance_share", "tail share of relevant items"),
        ("ratio", "provider exposure ratio (exposure share / relevance share)"),
        ("k", "k"),
        ("n_cases", "cases"),
    ):
        if key in provider:
            parts.append(f"<tr><td>{html.escape(label)}</td><td>{_fmt(provider[key])}</td></tr>")
    parts.append("</table></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

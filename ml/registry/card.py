"""The model card: the model version's description, written so a reviewer can decide from it alone.

Here: the headline, the links into the MLflow UI, the card's order and its fit to the registry's description;
the evidence sections (privacy, quality, search, fairness, mitigations) are in ml.registry.card_sections."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ml.data.recbole_sequences import TIMES_NOTE as RECBOLE_TIMES
from ml.registry.card_sections import (
    fairness_section,
    fmt,
    mitigation_sections,
    privacy_section,
    quality_section,
    search_section,
)

# The card's first line, by gate status. The registry's version list shows a description's first 32 characters
# beside MLflow's own status icon, a green check that only means "registered" (status READY: open-source MLflow
# sets it when the version is created and has no call to change it), so the decision must be readable there.
VERDICTS = {
    "passed": "Gate passed",
    "failed": "Gate FAILED, not approved",
    "pending_approval": "Gate passed, awaiting review",
    "approved": "Approved by review",
    "rejected": "REJECTED by review",
    "pending": "Gate not run yet",
}


def headline(status: str | None, name: str, version: str | None) -> str:
    """ "# Gate FAILED, not approved: vetted-recsys v3": the decision first, then which version."""
    return f"# {VERDICTS.get(status or 'pending', f'Gate {status}')}: {name} v{version or '?'}"


# The query that opens the MLflow UI on its model-training view (runs, the registry) rather than the GenAI
# overview: MLflow 3.17 reads `workflowType` from the address before the choice a browser last made.
ML_VIEW = "workflowType=machine_learning"


def is_headline(line: str) -> bool:
    """Whether a description's first line is a status headline (`headline`)."""
    return line.startswith("# ") and any(line.startswith(f"# {v}: ") for v in VERDICTS.values())


def run_page(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, as a fragment: relative to wherever the tracking server is served, so
    it opens from the version's description in that UI (a path on the training machine would not)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def artifact_page(experiment_id: str, run_id: str, path: str) -> str:
    """The MLflow UI's view of one run artifact (an HTML report opens rendered), as a fragment."""
    if not path or path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"an artifact path is relative to the run's artifact root, got {path!r}")
    return f"{run_page(experiment_id, run_id)}/artifactPath/{quote(path, safe='/')}"


def full_card_link(experiment_id: str, run_id: str) -> str:
    """The whole card, the run artifact CARD_ARTIFACT, in the MLflow UI on its model-training view."""
    return f"{artifact_page(experiment_id, run_id, CARD_ARTIFACT)}?{ML_VIEW}"


def card_links(
    experiment_id: str, run_id: str, reports: Mapping[str, Any], reports_dir: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """(links for the top of the card, per-slice report links for its end), all MLflow UI fragments that open
    on the model-training view (ML_VIEW: a link opens a new tab, which would otherwise take the GenAI view).

    `reports` is the evaluate stage's {label: path, "slices": {attribute: {group: path}}} of files under
    `reports_dir`, which that stage logs as the run's `reports/` artifacts. The top holds the run page, the full
    card, each main report and the folder of per-slice reports: about 20 slice links do not fit the registry's
    description, one folder link does."""

    def artifact(path: str | Path) -> str:
        relative = Path(path).resolve().relative_to(Path(reports_dir).resolve())
        return f"{artifact_page(experiment_id, run_id, f'reports/{relative.as_posix()}')}?{ML_VIEW}"

    top = {
        "MLflow run (metrics, parameters, datasets)": f"{run_page(experiment_id, run_id)}?{ML_VIEW}",
        f"Full model card (run artifact {CARD_ARTIFACT})": full_card_link(experiment_id, run_id),
    }
    slices: dict[str, str] = {}
    folders: set[Path] = set()
    for label, path in reports.items():
        if isinstance(path, str):
            top[f"{label} report"] = artifact(path)
        else:  # per-slice ranking reports: {attribute: {group: path}}
            for attribute, groups in path.items():
                for group, slice_path in groups.items():
                    slices[f"ranking report, {attribute} = {group}"] = artifact(slice_path)
                    folders.add(Path(slice_path).parent)
    for folder in sorted(folders):
        top[f"ranking reports by shopper group ({len(slices)} files)"] = artifact(folder)
    return top, slices


def model_card(
    *,
    name: str,
    version: str | None,
    config: Mapping[str, Any],
    features: Mapping[str, Any],
    ingest: Mapping[str, Any],
    train: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    pii_findings: int | None,
    smoke: Mapping[str, Any] | None,
    gate: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    links: Mapping[str, str],
    slice_links: Mapping[str, str] | None = None,
) -> str:
    """The card in Markdown. The decision, the links (`links`, MLflow UI fragments: `card_links`) and the
    datasets come first and the gate's checks next, so the registry's 5,000-character description
    (`fit_description`) keeps them; the evidence follows, and `slice_links` close the full card."""
    k = evaluation["k"]
    privacy = train["privacy"]
    lines = [headline(gate["status"] if gate else None, name, version) + " (model card)", ""]
    if gate:
        lines += [f"**Gate: {gate['status'].upper()}** under policy `{gate['policy_label']}`.", ""]
    if links:
        lines += ["## Links"] + [f"- [{label}]({url})" for label, url in links.items()] + [""]
    datasets = train.get("datasets") or {}
    if datasets:
        lines += (
            ["## Datasets (MLflow run inputs)"]
            + [
                f"- `{dname}` ({d['context']}): {d['rows']} rows, digest `{d['digest']}`, from `{d['source']}`"
                for dname, d in datasets.items()
            ]
            + [""]
        )
    if gate:  # the decision check by check: the rest of the card is its evidence
        lines += ["## Gate decision", gate.get("summary_markdown", ""), ""]
    window = features["window"]
    lines += [
        "## Data",
        f"- Source `{config['source']}`; training window {window['train_start']} to {window['split_time']}; "
        f"hold-out from {window['split_time']} to {window['holdout_end']}.",
        *([f"- {RECBOLE_TIMES}"] if config["source"] == "recbole" else []),
        "- Rows read = accepted + quarantined + deferred (events after the ingest date): "
        + ", ".join(
            f"{t} {ingest['read'][t]} = {ingest['accepted'][t]} + {ingest['quarantined'][t]} + "
            f"{ingest.get('deferred', {}).get(t, 0)}"
            for t in ingest["read"]
        )
        + ".",
        f"- {features['n_train_examples']} training examples ({features['n_train_search_examples']} searches) from "
        f"{train['n_users']} shoppers; {len(train['audit_users'])} shoppers held out for the membership audit; "
        f"{evaluation['n_cases']} hold-out cases.",
        f"- PII replaced at ingestion: {ingest.get('pii_replaced') or 'none found'}; privacy requests applied: "
        f"{ingest.get('consent')}.",
        "",
        "## Training",
        f"- all-MiniLM-L6-v2 bi-encoder (offline weights), top {config['trainable_layers']} encoder layer(s) plus "
        f"history head fine-tuned; {train['steps']} steps ({train['epochs']:.2f} epochs over shoppers), batch "
        f"{config['batch_size']}, lr {config['learning_rate']}, temperature {config['temperature']}, on {train['device']} "
        f"in {train['seconds']:.0f} s.",
        "",
    ]
    lines += privacy_section(privacy, evaluation["mia"], pii_findings)
    lines += quality_section(evaluation, champion, k, "private: DP" if privacy.get("dp") else "non-private")
    lines += search_section(evaluation.get("search") or {}, champion, k)
    lines += fairness_section(evaluation, champion, gate, k)
    prov = evaluation["candidate"]["provider"]
    lines += mitigation_sections(evaluation, k)
    lines += [
        "",
        f"- Provider exposure (long-tail brands): exposure share {fmt(prov.get('tail_exposure_share'), 3)} vs relevance "
        f"share {fmt(prov.get('tail_relevance_share'), 3)}: ratio {fmt(prov.get('ratio'), 3)}.",
        f"- Drift (training window vs hold-out): {fmt(evaluation['drift'].get('share_drifted'), 3)} of columns drifted "
        f"({', '.join(evaluation['drift'].get('drifted_columns') or []) or 'none'}).",
    ]
    if smoke:
        lines.append(
            f"- Serving smoke test: {'passed' if smoke.get('ok') else 'FAILED'} "
            f"({smoke.get('error') or fmt(smoke.get('max_latency_ms'), 0) + ' ms slowest answer'})."
        )
    if slice_links:
        lines += ["", "## Ranking reports by shopper group"] + [
            f"- [{label}]({url})" for label, url in slice_links.items()
        ]
    return "\n".join(lines) + "\n"


# MLflow keeps a model version's description in VARCHAR(5000): PostgreSQL refuses a longer one (SQLite
# does not check), so a full card with per-slice report links would fail registration in the prod profile.
DESCRIPTION_LIMIT = 5000
CARD_ARTIFACT = "model_card.md"


def fit_description(card: str, limit: int = DESCRIPTION_LIMIT, full_card: str | None = None) -> str:
    """The card as a model version description: whole when it fits, else cut after the last whole line that
    fits (the decision, the links and the checks come first, so they stay) with a pointer to the full card
    artifact, a link when `full_card` (its MLflow UI fragment: `artifact_page`) is given."""
    if len(card) <= limit:
        return card
    where = f"[{CARD_ARTIFACT}]({full_card})" if full_card else f"`{CARD_ARTIFACT}`"
    note = (
        f"\n*Shortened to fit the registry's {limit:,} characters: the full card ({len(card):,} characters) "
        f"is the run artifact {where}.*\n"
    )
    kept, size = [], 0
    for line in card.splitlines(keepends=True):
        if size + len(line) + len(note) > limit:
            break
        kept.append(line)
        size += len(line)
    return "".join(kept) + note

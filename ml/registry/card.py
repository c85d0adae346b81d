"""The model card: the model version's description, written so a reviewer can decide from it alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ml.data.recbole_sequences import TIMES_NOTE as RECBOLE_TIMES

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


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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
        "## Privacy",
    ]
    if privacy.get("dp"):
        lines += [
            f"- User-level DP-SGD: **epsilon {_f(privacy.get('epsilon'), 3)} at delta {privacy.get('delta'):.3g}** "
            f"(unit: one shopper; accountant {privacy.get('accountant')}).",
            "- DP noise and sampling from "
            + (
                "the OS CSPRNG (secure RNG on)."
                if privacy.get("secure_rng")
                else "a seeded generator (secure RNG off: not for production)."
            ),
            "- What the epsilon covers: everything the model learned from shoppers. Mechanisms:",
        ]
        for m in privacy.get("mechanisms", []):
            rest = ", ".join(f"{k2} {_f(v)}" for k2, v in m.items() if k2 != "name")
            lines.append(f"  - {m['name']}: {rest}")
        lines.append("  - Negatives: the whole catalogue (public item text), no shopper statistic.")
    else:
        lines.append("- **No differential privacy**: trained for comparison only; the default policy refuses it.")
    mia = evaluation["mia"]
    lines += [
        f"- Membership inference ({mia.get('attack')}): AUC {_f(mia.get('auc'), 3)}, advantage "
        f"{_f(mia.get('advantage'), 3)}, TPR at 1% FPR {_f(mia.get('tpr_at_1pct_fpr'), 3)} "
        f"({mia.get('n_members')} vs {mia.get('n_nonmembers')} shoppers).",
        f"- PII scan of features, params, tags and artifacts: {pii_findings if pii_findings is not None else 'not run'} finding(s).",
        "",
    ]
    lines += _quality_section(evaluation, champion, k, "private: DP" if privacy.get("dp") else "non-private")
    lines += _search_section(evaluation.get("search") or {}, champion, k)
    lines += _fairness_section(evaluation, champion, gate, k)
    prov = evaluation["candidate"]["provider"]
    rr = evaluation.get("rerank")
    if rr:
        lines += [
            "",
            f"Fair re-ranking (served and measured): at least {rr['min_tail_share']:.0%} long-tail brands "
            f"(by catalogue share) in every top-{k} prefix, chosen from the top {rr['pool']}. Trade-off:",
            "",
            "| min tail share | NDCG@k | NDCG lost | tail exposure share |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['min_tail_share']:.1f} | {_f(r['ndcg'])} | {_f(r['ndcg_loss'])} | "
            f"{_f(r['tail_exposure_share'], 3)} |"
            for r in rr["tradeoff"]
        ]
    us = evaluation.get("user_fairness_mitigation") or {}
    if us.get("tradeoff"):
        lines += [
            "",
            f"User-side mitigation (diagnostic, not applied): the {us['group']} shoppers are the worse served "
            f"here; blending an `{us['support']}` score into their ranking (ml.evaluation.user_fairness) would "
            "give, after fair re-ranking (ratio interval: 95% over resampled cases; choose a strength on a "
            "development split, not on this hold-out):",
            "",
            "| strength | NDCG@k | light | heavy | activity ratio [95%] | provider ratio |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['strength']:.1f} | {_f(r['ndcg'])} | {_f(r.get('ndcg_light'))} | {_f(r.get('ndcg_heavy'))} | "
            f"{_f(r.get('ratio'), 3)} [{_f(r.get('ratio_low'), 3)}, {_f(r.get('ratio_high'), 3)}] | "
            f"{_f(r.get('provider_exposure_ratio'), 3)} |"
            for r in us["tradeoff"]
        ]
    lines += [
        "",
        f"- Provider exposure (long-tail brands): exposure share {_f(prov.get('tail_exposure_share'), 3)} vs relevance "
        f"share {_f(prov.get('tail_relevance_share'), 3)}: ratio {_f(prov.get('ratio'), 3)}.",
        f"- Drift (training window vs hold-out): {_f(evaluation['drift'].get('share_drifted'), 3)} of columns drifted "
        f"({', '.join(evaluation['drift'].get('drifted_columns') or []) or 'none'}).",
    ]
    if smoke:
        lines.append(
            f"- Serving smoke test: {'passed' if smoke.get('ok') else 'FAILED'} "
            f"({smoke.get('error') or _f(smoke.get('max_latency_ms'), 0) + ' ms slowest answer'})."
        )
    if slice_links:
        lines += ["", "## Ranking reports by shopper group"] + [
            f"- [{label}]({url})" for label, url in slice_links.items()
        ]
    return "\n".join(lines) + "\n"


def _ci(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    """ "0.1074 [0.0991, 0.1160]": a figure with its bootstrap interval; the bare figure without one."""
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("lower") is None:
        return _f(entry["value"], digits)
    return f"{_f(entry['value'], digits)} [{_f(entry['lower'], digits)}, {_f(entry['upper'], digits)}]"


LEARNS_TEXT = {
    "public": "public: catalogue text only",
    "private": "private: DP, the candidate's budget",
    "non_private": "non-private: raw shopper counts",
}


def _quality_section(
    evaluation: Mapping[str, Any], champion: Mapping[str, Any] | None, k: int, candidate_learns: str
) -> list[str]:
    """Candidate, champion and every baseline with NDCG intervals, what each learns from shoppers, and the paired
    difference candidate - it; then which baseline is the bar, and the price of privacy."""
    nd, rc = f"ndcg_at_{k}", f"recall_at_{k}"
    cand = evaluation["candidate"]["metrics"]
    unc = evaluation.get("uncertainty") or {}
    ndcg_ci, minus = unc.get("ndcg", {}), unc.get("candidate_minus", {})
    method = unc.get("method")
    lines = ["## Quality on the hold-out"]
    if method:
        lines += [
            f"Intervals: {method['confidence']:.0%} percentile intervals of a paired bootstrap over shoppers "
            f"({method['n_resamples']} resamples of the {method['n_shoppers']} shoppers behind the "
            f"{method['n_cases']} cases, each keeping all its cases; seed {method['seed']}). Every model is "
            "scored on the same resamples, so differences are paired.",
            "",
        ]
    lines += [
        f"| model | learns from shoppers | NDCG@{k} [interval] | candidate - model [interval] | Recall@{k} | "
        "MRR | coverage |",
        "|---|---|---|---|---|---|---|",
        f"| **candidate** | {candidate_learns} | {_ci(ndcg_ci.get('candidate')) if ndcg_ci else _f(cand[nd])} | | "
        f"{_f(cand[rc])} | {_f(cand['mrr'])} | {_f(evaluation['candidate']['beyond'].get('coverage'))} |",
    ]
    if champion and champion.get("metrics"):
        cm = champion["metrics"]
        lines.append(
            f"| champion v{champion['version']} (re-evaluated) | | {_f(cm[nd])} | | {_f(cm[rc])} | {_f(cm['mrr'])} | |"
        )
    best, best_np = evaluation["best_baseline"], evaluation.get("best_non_private_baseline")
    for bname, res in evaluation["baselines"].items():
        m = res["metrics"]
        mark = " (**bar**: best shippable)" if bname == best else " (best non-private)" if bname == best_np else ""
        lines.append(
            f"| {bname}{mark} | {LEARNS_TEXT.get(res.get('learns', ''), res.get('learns', '?'))} | "
            f"{_ci(ndcg_ci.get(bname)) if bname in ndcg_ci else _f(m[nd])} | {_ci(minus.get(bname))} | "
            f"{_f(m[rc])} | {_f(m['mrr'])} | {_f(res['beyond'].get('coverage'))} |"
        )
    lines += [
        "",
        f"- The quality bar is the best baseline this policy would itself ship (public or private): "
        f"**{best}**. Non-private baselines learn from raw shopper counts with no privacy guarantee; the "
        "policy would refuse them, so they measure what privacy costs and never set the bar.",
    ]
    if any(res.get("learns") == "private" for res in evaluation["baselines"].values()):
        lines.append(
            "- The DP baselines (dp_popularity, dp_cooccurrence) rank by the candidate's own released "
            "transition counts (capped per shopper, Gaussian-noised: the train stage's DP transition "
            "feature) or by item popularity from their sums. That is post-processing of an output already "
            "released under the candidate's epsilon and delta: it spends no further epsilon."
        )
    price = unc.get("price_of_privacy")
    if price:
        lines.append(
            f"- **Price of privacy**: candidate / {price['baseline']} (best non-private) = {_ci(price, 3)}"
            " (below 1: the private model ranks worse than raw shopper counts would)."
        )
    return lines + [""]


def _search_section(searched: Mapping[str, Any], champion: Mapping[str, Any] | None, k: int) -> list[str]:
    """The served search ranking beside the search baselines on the hold-out's searches, with intervals."""
    lines = ["## Search on the hold-out"]
    if not searched.get("n_cases"):
        return lines + [f"- Not measured: {searched.get('unmeasurable', 'no search figures were recorded')}.", ""]
    nd, rc = f"ndcg_at_{k}", f"recall_at_{k}"
    unc = searched.get("uncertainty") or {}
    ndcg_ci, minus = unc.get("ndcg", {}), unc.get("candidate_minus", {})
    cand = searched["candidate"]
    lines += [
        f"{searched['n_cases']} hold-out searches followed by a click, cart or purchase (the query as typed, "
        "PII scrubbed -> the item chosen), each ranked against the whole catalogue. The candidate is the "
        "served ranking: the query tower, blended with a known shopper's history, fused with BM25 by "
        "reciprocal rank fusion. Intervals as above, over the searching shoppers.",
        "",
        f"| ranker | NDCG@{k} [interval] | candidate - ranker [interval] | Recall@{k} | MRR | zero-result rate |",
        "|---|---|---|---|---|---|",
        f"| **candidate** | {_ci(ndcg_ci.get('candidate'))} | | {_f(cand['metrics'][rc])} | "
        f"{_f(cand['metrics']['mrr'])} | {_f(cand.get('zero_result_rate'), 3)} |",
    ]
    if champion and champion.get("search_metrics"):
        cm = champion["search_metrics"]
        lines.append(
            f"| champion v{champion['version']} (re-evaluated) | {_f(cm[nd])} | | {_f(cm[rc])} | {_f(cm['mrr'])} | |"
        )
    dense = searched.get("dense_only") or {}
    if dense:
        lines.append(
            f"| the query tower alone (diagnostic) | {_f(dense.get(nd))} | | {_f(dense.get(rc))} | "
            f"{_f(dense.get('mrr'))} | |"
        )
    best = searched.get("best_baseline")
    for bname, res in searched.get("baselines", {}).items():
        m = res["metrics"]
        mark = " (**bar**)" if bname == best else ""
        lines.append(
            f"| {bname}{mark} | {_ci(ndcg_ci.get(bname))} | {_ci(minus.get(bname))} | {_f(m[rc])} | "
            f"{_f(m['mrr'])} | {_f(res.get('zero_result_rate'), 3)} |"
        )
    prov = cand.get("provider") or {}
    lines += [
        "",
        f"- Provider exposure in search results (long-tail brands): exposure share "
        f"{_f(prov.get('tail_exposure_share'), 3)} vs share of what searchers chose "
        f"{_f(prov.get('tail_relevance_share'), 3)}: ratio {_f(prov.get('ratio'), 3)}.",
        f"- Beyond accuracy: coverage {_f(cand['beyond'].get('coverage'))}, novelty "
        f"{_f(cand['beyond'].get('novelty'))}.",
        "",
    ]
    return lines


def _fairness_section(
    evaluation: Mapping[str, Any], champion: Mapping[str, Any] | None, gate: Mapping[str, Any] | None, k: int
) -> list[str]:
    """Per-group NDCG of the candidate, then each attribute's min/max ratio beside the alternatives' (best shippable
    baseline, champion) with intervals, and which rule decided its check."""
    lines = ["## Fairness", f"| attribute | group | NDCG@{k} | n | ratio min/max |", "|---|---|---|---|---|"]
    for attr, res in evaluation["candidate"].get("user_fairness", {}).items():
        ratio = (res.get("ratio") or {}).get("ndcg")
        for group, vals in res.get("by_group", {}).items():
            lines.append(f"| {attr} | {group} | {_f(vals.get('ndcg'))} | {vals.get('n')} | {_f(ratio, 3)} |")
    ratios = (evaluation.get("uncertainty") or {}).get("user_ndcg_ratio") or {}
    if not ratios:
        return lines
    best = evaluation["best_baseline"]
    rules = {row["attribute"]: row for row in (gate or {}).get("alternatives") or []}
    champ_ratios = (champion or {}).get("ratios") or {}
    lines += [
        "",
        "Group ratio (min group / max group NDCG) beside the alternatives, on the same resamples:",
        "",
        f"| attribute | candidate [interval] | {best} (best shippable baseline) [interval] | champion | decided by |",
        "|---|---|---|---|---|",
    ]
    for attr, entry in ratios.get("candidate", {}).items():
        rule = rules.get(attr, {})
        decided = {
            "threshold": "threshold",
            "no_worse_than_alternatives": "**fallback: no less fair than the alternatives**",
        }.get(rule.get("rule", ""), rule.get("rule", "n/a"))
        lines.append(
            f"| {attr} | {_ci(entry, 3)} | {_ci(ratios.get(best, {}).get(attr), 3)} | "
            f"{_f(champ_ratios.get(attr), 3)} | {decided} ({rule.get('status', 'n/a')}) |"
        )
    return lines


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

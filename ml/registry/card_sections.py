"""The model card's evidence, section by section (ml.registry.card puts the card together): privacy, quality
beside the baselines, search, fairness and the mitigations' trade-offs, each as a list of Markdown lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A figure as the card shows it: "n/a" for None, yes or no for a flag, a float to `digits` places."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_interval(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    """ "0.1074 [0.0991, 0.1160]": a figure with its bootstrap interval; the bare figure without one."""
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("lower") is None:
        return fmt(entry["value"], digits)
    return f"{fmt(entry['value'], digits)} [{fmt(entry['lower'], digits)}, {fmt(entry['upper'], digits)}]"


def privacy_section(privacy: Mapping[str, Any], mia: Mapping[str, Any], pii_findings: int | None) -> list[str]:
    """The privacy guarantee (DP-SGD's epsilon and delta, the RNG, each mechanism) or its absence, then the
    membership-inference audit and the PII scan."""
    lines = ["## Privacy"]
    if privacy.get("dp"):
        lines += [
            f"- User-level DP-SGD: **epsilon {fmt(privacy.get('epsilon'), 3)} at delta {privacy.get('delta'):.3g}** "
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
            rest = ", ".join(f"{key} {fmt(v)}" for key, v in m.items() if key != "name")
            lines.append(f"  - {m['name']}: {rest}")
        lines.append("  - Negatives: the whole catalogue (public item text), no shopper statistic.")
    else:
        lines.append("- **No differential privacy**: trained for comparison only; the default policy refuses it.")
    lines += [
        f"- Membership inference ({mia.get('attack')}): AUC {fmt(mia.get('auc'), 3)}, advantage "
        f"{fmt(mia.get('advantage'), 3)}, TPR at 1% FPR {fmt(mia.get('tpr_at_1pct_fpr'), 3)} "
        f"({mia.get('n_members')} vs {mia.get('n_nonmembers')} shoppers).",
        f"- PII scan of features, params, tags and artifacts: {pii_findings if pii_findings is not None else 'not run'} finding(s).",
        "",
    ]
    return lines


LEARNS_TEXT = {
    "public": "public: catalogue text only",
    "private": "private: DP, the candidate's budget",
    "non_private": "non-private: raw shopper counts",
}


def quality_section(
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
        f"| **candidate** | {candidate_learns} | {fmt_interval(ndcg_ci.get('candidate')) if ndcg_ci else fmt(cand[nd])} | | "
        f"{fmt(cand[rc])} | {fmt(cand['mrr'])} | {fmt(evaluation['candidate']['beyond'].get('coverage'))} |",
    ]
    if champion and champion.get("metrics"):
        cm = champion["metrics"]
        lines.append(
            f"| champion v{champion['version']} (re-evaluated) | | {fmt(cm[nd])} | | {fmt(cm[rc])} | {fmt(cm['mrr'])} | |"
        )
    best, best_np = evaluation["best_baseline"], evaluation.get("best_non_private_baseline")
    for bname, res in evaluation["baselines"].items():
        m = res["metrics"]
        mark = " (**bar**: best shippable)" if bname == best else " (best non-private)" if bname == best_np else ""
        lines.append(
            f"| {bname}{mark} | {LEARNS_TEXT.get(res.get('learns', ''), res.get('learns', '?'))} | "
            f"{fmt_interval(ndcg_ci.get(bname)) if bname in ndcg_ci else fmt(m[nd])} | {fmt_interval(minus.get(bname))} | "
            f"{fmt(m[rc])} | {fmt(m['mrr'])} | {fmt(res['beyond'].get('coverage'))} |"
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
            f"- **Price of privacy**: candidate / {price['baseline']} (best non-private) = {fmt_interval(price, 3)}"
            " (below 1: the private model ranks worse than raw shopper counts would)."
        )
    return lines + [""]


def search_section(searched: Mapping[str, Any], champion: Mapping[str, Any] | None, k: int) -> list[str]:
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
        f"| **candidate** | {fmt_interval(ndcg_ci.get('candidate'))} | | {fmt(cand['metrics'][rc])} | "
        f"{fmt(cand['metrics']['mrr'])} | {fmt(cand.get('zero_result_rate'), 3)} |",
    ]
    if champion and champion.get("search_metrics"):
        cm = champion["search_metrics"]
        lines.append(
            f"| champion v{champion['version']} (re-evaluated) | {fmt(cm[nd])} | | {fmt(cm[rc])} | {fmt(cm['mrr'])} | |"
        )
    dense = searched.get("dense_only") or {}
    if dense:
        lines.append(
            f"| the query tower alone (diagnostic) | {fmt(dense.get(nd))} | | {fmt(dense.get(rc))} | "
            f"{fmt(dense.get('mrr'))} | |"
        )
    best = searched.get("best_baseline")
    for bname, res in searched.get("baselines", {}).items():
        m = res["metrics"]
        mark = " (**bar**)" if bname == best else ""
        lines.append(
            f"| {bname}{mark} | {fmt_interval(ndcg_ci.get(bname))} | {fmt_interval(minus.get(bname))} | {fmt(m[rc])} | "
            f"{fmt(m['mrr'])} | {fmt(res.get('zero_result_rate'), 3)} |"
        )
    prov = cand.get("provider") or {}
    lines += [
        "",
        f"- Provider exposure in search results (long-tail brands): exposure share "
        f"{fmt(prov.get('tail_exposure_share'), 3)} vs share of what searchers chose "
        f"{fmt(prov.get('tail_relevance_share'), 3)}: ratio {fmt(prov.get('ratio'), 3)}.",
        f"- Beyond accuracy: coverage {fmt(cand['beyond'].get('coverage'))}, novelty "
        f"{fmt(cand['beyond'].get('novelty'))}.",
        "",
    ]
    return lines


def fairness_section(
    evaluation: Mapping[str, Any], champion: Mapping[str, Any] | None, gate: Mapping[str, Any] | None, k: int
) -> list[str]:
    """Per-group NDCG of the candidate, then each attribute's min/max ratio beside the alternatives' (best shippable
    baseline, champion) with intervals, and which rule decided its check."""
    lines = ["## Fairness", f"| attribute | group | NDCG@{k} | n | ratio min/max |", "|---|---|---|---|---|"]
    for attr, res in evaluation["candidate"].get("user_fairness", {}).items():
        ratio = (res.get("ratio") or {}).get("ndcg")
        for group, vals in res.get("by_group", {}).items():
            lines.append(f"| {attr} | {group} | {fmt(vals.get('ndcg'))} | {vals.get('n')} | {fmt(ratio, 3)} |")
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
            f"| {attr} | {fmt_interval(entry, 3)} | {fmt_interval(ratios.get(best, {}).get(attr), 3)} | "
            f"{fmt(champ_ratios.get(attr), 3)} | {decided} ({rule.get('status', 'n/a')}) |"
        )
    return lines


def mitigation_sections(evaluation: Mapping[str, Any], k: int) -> list[str]:
    """The trade-offs of the fair re-ranker (served) and of the user-side mitigation (a diagnostic, not
    applied), each a table where the evaluation measured it."""
    lines: list[str] = []
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
            f"| {r['min_tail_share']:.1f} | {fmt(r['ndcg'])} | {fmt(r['ndcg_loss'])} | "
            f"{fmt(r['tail_exposure_share'], 3)} |"
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
            f"| {r['strength']:.1f} | {fmt(r['ndcg'])} | {fmt(r.get('ndcg_light'))} | {fmt(r.get('ndcg_heavy'))} | "
            f"{fmt(r.get('ratio'), 3)} [{fmt(r.get('ratio_low'), 3)}, {fmt(r.get('ratio_high'), 3)}] | "
            f"{fmt(r.get('provider_exposure_ratio'), 3)} |"
            for r in us["tradeoff"]
        ]
    return lines

"""The model against every baseline, all ranking metrics, and fairness before and after re-ranking,
on amazon2018-industrial and Coat.

    python benchmarks/quality.py

Every test row of amazon2018-industrial is one case ranked against all items (the published protocol);
MiniOneRec's published figures on that split are put beside ours. Writes benchmarks/results/quality.json
and quality.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, new_context, write  # noqa: E402

DATASETS = {"amazon2018": "amazon2018-industrial", "coat": "coat"}
PUBLISHED = {"amazon2018": {"name": "MiniOneRec (1.5B+ LLM, GPUs)", "hr_at_10": 0.1586, "ndcg_at_10": 0.1167}}


def run(source: str, folder: str) -> dict:
    from ml.pipeline import stages

    ctx = new_context(f"quality-{source}", {"source": source, "path": str(SHARED_DATA / folder),
                                            "max_eval_cases": 0, "batch_size": 256, "slice_reports": False})
    for stage in ("ingest", "features", "train", "evaluate"):
        getattr(stages, stage)(ctx)
    ev, tr = ctx.read("evaluate"), ctx.read("train")
    return {"n_cases": ev["n_cases"], "privacy": {k: tr["privacy"].get(k) for k in ("dp", "epsilon", "delta")},
            "candidate": ev["candidate"], "baselines": ev["baselines"], "best_baseline": ev["best_baseline"],
            "user_ndcg_ratio": ev["user_ndcg_ratio"], "rerank": ev["rerank"], "published": PUBLISHED.get(source)}


def markdown(results: dict) -> str:
    out = [f"# Quality benchmark ({results['machine']['date']}, {results['machine']['cores']} cores)", ""]
    for source, r in results["datasets"].items():
        if "skipped" in r:
            out += [f"## {source}", r["skipped"], ""]
            continue
        m = r["candidate"]["metrics"]
        eps = r["privacy"].get("epsilon")
        out += [f"## {source} ({r['n_cases']} cases; candidate trained with DP, epsilon {eps:.2f})" if eps else f"## {source}",
                "", "| model | NDCG@10 | HR@10 | MRR | MAP@10 | coverage | novelty | gini exposure | provider ratio |",
                "|---|---|---|---|---|---|---|---|---|"]

        def row(name, metrics, beyond, provider, k=10):
            return (f"| {name} | {metrics[f'ndcg_at_{k}']:.4f} | {metrics[f'hr_at_{k}']:.4f} | {metrics['mrr']:.4f} | "
                    f"{metrics[f'map_at_{k}']:.4f} | {beyond.get('coverage') or 0:.3f} | {beyond.get('novelty') or 0:.2f} | "
                    f"{beyond.get('gini_exposure') or 0:.3f} | {provider.get('ratio') or 0:.3f} |")

        out.append(row("**candidate** (re-ranked)", m, r["candidate"]["beyond"], r["candidate"]["provider"]))
        for name, b in r["baselines"].items():
            out.append(row(name, b["metrics"], b["beyond"], b["provider"]))
        if r.get("published"):
            p = r["published"]
            out.append(f"| {p['name']} (published) | {p['ndcg_at_10']:.4f} | {p['hr_at_10']:.4f} | | | | | | |")
        out += ["", "User-group NDCG ratio (min/max): " + ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} n/a"
                                                                   for a, v in r["user_ndcg_ratio"].items()),
                "", "Fair re-ranking trade-off (tail = long-tail brands by catalogue share):", "",
                "| min tail share | NDCG@10 | NDCG lost | tail exposure share | exposure/relevance |", "|---|---|---|---|---|"]
        out += [f"| {t['min_tail_share']:.1f} | {t['ndcg']:.4f} | {t['ndcg_loss']:.4f} | {t['tail_exposure_share']:.3f} | "
                f"{(t['provider_exposure_ratio'] or 0):.3f} |" for t in r["rerank"]["tradeoff"]]
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    results = {"machine": machine(), "datasets": {}}
    for source, folder in DATASETS.items():
        if not (SHARED_DATA / folder).exists():
            results["datasets"][source] = {"skipped": f"{SHARED_DATA / folder} is absent"}
            continue
        print(f"{source} ...", flush=True)
        results["datasets"][source] = run(source, folder)
    write("quality", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

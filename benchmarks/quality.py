"""The model against every baseline, all ranking metrics, and fairness before and after re-ranking,
on amazon2018-industrial and Coat.

    python benchmarks/quality.py              # the test splits
    python benchmarks/quality.py --split dev  # amazon2018's development split (no test target read)

Every test row of amazon2018-industrial is one case ranked against all items (the published protocol);
MiniOneRec's published figures on that split are put beside ours. Each seed also trains the same model without DP
on the same features, as the baselines are trained: what user-level DP costs (that model cannot pass the gate).
Writes benchmarks/results/quality.json and quality.md.

A change to the model or its settings is compared on the development split first
(`ml.data.amazon2018.development_split`: the test split's training data, each shopper's last item held out;
written to quality-dev.json and quality-dev.md), so that choices are not fitted to the test rows the target is
read on.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, branch_context, machine, new_context, write  # noqa: E402

DATASETS = {"amazon2018": "amazon2018-industrial", "coat": "coat"}
PUBLISHED = {"amazon2018": {"name": "MiniOneRec (1.5B+ LLM, GPUs)", "hr_at_10": 0.1586, "ndcg_at_10": 0.1167}}


def run(source: str, path: Path, seed: int) -> dict:
    from ml.pipeline import stages

    ctx = new_context(
        f"quality-{source}",
        {"source": source, "path": str(path), "seed": seed, "max_eval_cases": 0, "slice_reports": False},
    )
    for stage in ("ingest", "features", "train", "evaluate"):
        getattr(stages, stage)(ctx)
    ev, tr = ctx.read("evaluate"), ctx.read("train")
    # the same model trained without DP on the same features: what user-level DP costs against non-private baselines
    # (it cannot ship: the gate requires DP)
    no_dp = branch_context(ctx, f"quality-{source}-no-dp", {"dp": {"enabled": False}})
    stages.train(no_dp)
    stages.evaluate(no_dp)
    ev_no_dp = no_dp.read("evaluate")
    return {
        "seed": seed,
        "n_cases": ev["n_cases"],
        "privacy": {k: tr["privacy"].get(k) for k in ("dp", "epsilon", "delta")},
        "candidate": ev["candidate"],
        "baselines": ev["baselines"],
        "best_baseline": ev["best_baseline"],
        "user_ndcg_ratio": ev["user_ndcg_ratio"],
        "rerank": ev["rerank"],
        "no_dp": {"candidate": ev_no_dp["candidate"], "rerank": ev_no_dp["rerank"]},
    }


def _not_reranked(rerank: dict) -> float:
    return next(t["ndcg"] for t in rerank["tradeoff"] if t["min_tail_share"] == 0.0)


def seed_summary(r: dict) -> dict:
    """One seed's headline: the candidate, and the same model without DP, re-ranked and not, against the best
    baseline of that seed."""
    k = 10
    plain = _not_reranked(r["rerank"])
    best = r["baselines"][r["best_baseline"]]["metrics"][f"ndcg_at_{k}"]
    ndcg = r["candidate"]["metrics"][f"ndcg_at_{k}"]
    no_dp = r["no_dp"]["candidate"]["metrics"][f"ndcg_at_{k}"]
    no_dp_plain = _not_reranked(r["no_dp"]["rerank"])
    return {
        "seed": r["seed"],
        "candidate_ndcg": ndcg,
        "candidate_ndcg_no_rerank": plain,
        "best_baseline": r["best_baseline"],
        "best_baseline_ndcg": best,
        "ratio": ndcg / best,
        "ratio_no_rerank": plain / best,
        "no_dp_ndcg": no_dp,
        "no_dp_ndcg_no_rerank": no_dp_plain,
        "no_dp_ratio": no_dp / best,
        "no_dp_ratio_no_rerank": no_dp_plain / best,
    }


def seeds_table(summaries: list[dict]) -> list[str]:
    out = [
        "",
        "Across seeds (each seed draws its own DP noise and its own membership-audit shoppers, whom "
        "neither the candidate nor the baselines learn from). Without DP: the same model and settings trained "
        "without DP on the same features, as the baselines are; it cannot ship (the gate requires DP), and it "
        "measures what user-level DP costs:",
        "",
        "| seed | candidate (re-ranked) | candidate (not re-ranked) | best baseline | x best (re-ranked) | "
        "x best (not re-ranked) | without DP (re-ranked) | without DP (not re-ranked) | x best without DP "
        "(re-ranked / not) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {s['seed']} | {s['candidate_ndcg']:.4f} | {s['candidate_ndcg_no_rerank']:.4f} | "
        f"{s['best_baseline']} {s['best_baseline_ndcg']:.4f} | {s['ratio']:.3f} | {s['ratio_no_rerank']:.3f} | "
        f"{s['no_dp_ndcg']:.4f} | {s['no_dp_ndcg_no_rerank']:.4f} | {s['no_dp_ratio']:.3f} / "
        f"{s['no_dp_ratio_no_rerank']:.3f} |"
        for s in summaries
    ]
    keys = (
        "candidate_ndcg",
        "candidate_ndcg_no_rerank",
        "best_baseline_ndcg",
        "ratio",
        "ratio_no_rerank",
        "no_dp_ndcg",
        "no_dp_ndcg_no_rerank",
        "no_dp_ratio",
        "no_dp_ratio_no_rerank",
    )
    mean = {key: sum(s[key] for s in summaries) / len(summaries) for key in keys}
    out.append(
        f"| mean | {mean['candidate_ndcg']:.4f} | {mean['candidate_ndcg_no_rerank']:.4f} | "
        f"{mean['best_baseline_ndcg']:.4f} | {mean['ratio']:.3f} | {mean['ratio_no_rerank']:.3f} | "
        f"{mean['no_dp_ndcg']:.4f} | {mean['no_dp_ndcg_no_rerank']:.4f} | {mean['no_dp_ratio']:.3f} / "
        f"{mean['no_dp_ratio_no_rerank']:.3f} |"
    )
    return out


def markdown(results: dict) -> str:
    title = (
        "Quality benchmark"
        if results.get("split", "test") == "test"
        else "Quality benchmark, amazon2018 development split"
    )
    out = [
        f"# {title} ({results['machine']['date']}, {results['machine']['cores']} cores)",
        "",
        f"`python benchmarks/quality.py --split {results.get('split', 'test')} "
        f"--seeds {','.join(str(s) for s in results.get('seeds', [7]))}`; the tables detail the first seed.",
        "",
    ]
    for source, r in results["datasets"].items():
        if "skipped" in r:
            out += [f"## {source}", r["skipped"], ""]
            continue
        m = r["candidate"]["metrics"]
        eps = r["privacy"].get("epsilon")
        out += [
            f"## {source} ({r['n_cases']} cases; candidate trained with DP, epsilon {eps:.2f})"
            if eps
            else f"## {source}",
            "",
            "| model | NDCG@10 | HR@10 | MRR | MAP@10 | coverage | novelty | gini exposure | provider ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def row(name, metrics, beyond, provider, k=10):
            return (
                f"| {name} | {metrics[f'ndcg_at_{k}']:.4f} | {metrics[f'hr_at_{k}']:.4f} | {metrics['mrr']:.4f} | "
                f"{metrics[f'map_at_{k}']:.4f} | {beyond.get('coverage') or 0:.3f} | {beyond.get('novelty') or 0:.2f} | "
                f"{beyond.get('gini_exposure') or 0:.3f} | {provider.get('ratio') or 0:.3f} |"
            )

        out.append(row("**candidate** (re-ranked)", m, r["candidate"]["beyond"], r["candidate"]["provider"]))
        if r.get("no_dp"):
            c = r["no_dp"]["candidate"]
            out.append(
                row("the same model without DP (re-ranked; cannot ship)", c["metrics"], c["beyond"], c["provider"])
            )
        for name, b in r["baselines"].items():
            out.append(row(name, b["metrics"], b["beyond"], b["provider"]))
        if r.get("published"):
            p = r["published"]
            out.append(f"| {p['name']} (published) | {p['ndcg_at_10']:.4f} | {p['hr_at_10']:.4f} | | | | | | |")
        out += [
            "",
            "User-group NDCG ratio (min/max): "
            + ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} n/a" for a, v in r["user_ndcg_ratio"].items()),
            "",
            "Fair re-ranking trade-off (tail = long-tail brands by catalogue share):",
            "",
            "| min tail share | NDCG@10 | NDCG lost | tail exposure share | exposure/relevance |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {t['min_tail_share']:.1f} | {t['ndcg']:.4f} | {t['ndcg_loss']:.4f} | {t['tail_exposure_share']:.3f} | "
            f"{(t['provider_exposure_ratio'] or 0):.3f} |"
            for t in r["rerank"]["tradeoff"]
        ]
        if len(r.get("seeds", [])) > 1:
            out += seeds_table(r["seeds"])
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    import argparse
    import tempfile

    from ml.data.amazon2018 import development_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--split",
        choices=("test", "dev"),
        default="test",
        help="test: both datasets' hold-outs; dev: amazon2018's development split only",
    )
    parser.add_argument(
        "--seeds", default="7", help="comma-separated run seeds; the tables detail the first, a last table compares all"
    )
    args = parser.parse_args()
    split, seeds = args.split, [int(s) for s in args.seeds.split(",")]
    results = {"machine": machine(), "split": split, "seeds": seeds, "datasets": {}}
    datasets = DATASETS if split == "test" else {"amazon2018": DATASETS["amazon2018"]}
    for source, folder in datasets.items():
        if not (SHARED_DATA / folder).exists():
            results["datasets"][source] = {"skipped": f"{SHARED_DATA / folder} is absent"}
            continue
        print(f"{source} ...", flush=True)
        path = SHARED_DATA / folder
        if split == "dev":  # written to a temporary folder: the data's terms forbid copying it into the repository
            path = development_split(path, Path(tempfile.mkdtemp(prefix="vetted-dev-split-")) / "data")
        runs = [run(source, path, seed) for seed in seeds]
        published = PUBLISHED.get(source) if split == "test" else None
        results["datasets"][source] = {**runs[0], "published": published, "seeds": [seed_summary(r) for r in runs]}
    name = "quality" if split == "test" else "quality-dev"
    write(name, results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

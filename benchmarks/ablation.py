"""What each training setting is worth on amazon2018-industrial: the candidate retrained with one setting
changed at a time, on fixed features, before re-ranking.

    python benchmarks/ablation.py                  # the development split, seeds 7 and 8
    python benchmarks/ablation.py --seeds 7,8,9

Per seed, ingestion and features run once (`ml.pipeline.stages`, as in the DAG); every variant then trains on
that same split (`branch_context`) and ranks every case against all items. Only the candidate is scored
(NDCG@10 and HR@10, not re-ranked): the baselines and the fairness and privacy audits do not depend on these
settings and are in quality-dev.md. The development split is the test split's training data with each
shopper's last item held out (`ml.data.amazon2018.development_split`): no test target is read. Writes benchmarks/results/ablation.json and .md.

Each seed draws its own DP noise, and a variant that changes which transitions a shopper contributes draws
other noise too: compare a variant's difference with how far the seeds of one variant lie apart (the per-seed
columns of benchmarks/results/ablation.md) before reading it as an effect.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, branch_context, machine, new_context, write  # noqa: E402

# name -> (what changes, RunConfig overrides on top of the benchmark's settings)
VARIANTS: dict[str, tuple[str, dict]] = {
    "current": ("the quality benchmark's settings", {}),
    "one_example_per_shopper": ("examples_per_user 1 (8, chosen from the data)", {"examples_per_user": 1}),
    "no_transition_counts": (
        "transitions_share 0: DP-SGD takes the whole budget, no item-transition counts",
        {"dp": {"enabled": True, "transitions_share": 0.0}},
    ),
    "transitions_floor_2": (
        "transitions_floor 2 (1, chosen from the data): two noise deviations off each count, the demo's choice",
        {"dp": {"enabled": True, "transitions_floor": 2.0}},
    ),
    "transitions_per_user_5": (
        "each shopper adds at most 5 transitions (8): less noise, fewer pairs",
        {"dp": {"enabled": True, "transitions_per_user": 5}},
    ),
    "more_dp_sgd_steps": ("max_steps 300 (100): 220 steps at the same epsilon, more noise each", {"max_steps": 300}),
    "item_text_96_tokens": ("max_item_tokens 96 (48): the description's start fits", {"max_item_tokens": 96}),
}


def score(ctx) -> dict:
    import pandas as pd

    from ml.evaluation.metrics import ranking_metrics
    from ml.pipeline.stages import CASES
    from ml.training.recommender import Recommender

    rec = Recommender.load(Path(ctx.read("train")["model_dir"]))
    cases = pd.read_parquet(ctx.path(CASES))
    ranked, _ = rec.recommend([list(h) for h in cases["history"]], 10)
    return ranking_metrics(ranked, cases["item_id"].tolist(), 10)


def markdown(results: dict) -> str:
    seeds = results["seeds"]
    ran = list(results["variants"])
    only = "" if set(ran) == set(VARIANTS) else f" --only {','.join(ran)}"
    out = [
        f"# Ablation, amazon2018 {results['split']} split ({results['machine']['date']}, "
        f"{results['machine']['cores']} cores)",
        "",
        f"`python benchmarks/ablation.py --split {results['split']} --seeds {','.join(map(str, seeds))}{only}`: the "
        "candidate retrained with one setting changed, on the same features; NDCG@10 over every case, not "
        "re-ranked.",
        "",
        "| variant | change | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs current |",
        "|---|---|" + "---|" * (len(seeds) + 2),
    ]
    current = results["variants"].get("current", {}).get("mean_ndcg_at_10")
    for name, v in results["variants"].items():
        cells = " | ".join(f"{r['ndcg_at_10']:.4f}" for r in v["runs"])
        delta = "" if current is None or name == "current" else f"{v['mean_ndcg_at_10'] - current:+.4f}"
        out.append(f"| {name} | {v['change']} | {cells} | {v['mean_ndcg_at_10']:.4f} | {delta} |")
    out += [
        "",
        "Train stage seconds per variant (mean over seeds): "
        + ", ".join(f"{n} {v['mean_train_seconds']:.0f}" for n, v in results["variants"].items()),
        "",
    ]
    return "\n".join(out)


def main() -> None:
    from ml.data.amazon2018 import development_split
    from ml.pipeline import stages

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--seeds", default="7,8")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    path = SHARED_DATA / "amazon2018-industrial"
    if not path.exists():
        raise SystemExit(f"{path} is absent: this benchmark reads the real corpus")
    if args.split == "dev":  # written to a temporary folder: the data's terms forbid copying it into the repository
        path = development_split(path, Path(tempfile.mkdtemp(prefix="vetted-dev-split-")) / "data")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for seed in seeds:
        base = new_context(
            f"ablation-{seed}",
            {"source": "amazon2018", "path": str(path), "seed": seed, "max_eval_cases": 0, "slice_reports": False},
        )
        stages.ingest(base)
        stages.features(base)
        for name in names:
            ctx = branch_context(base, f"ablation-{seed}-{name}", VARIANTS[name][1])
            start = time.perf_counter()
            stages.train(ctx)
            seconds = time.perf_counter() - start
            metrics = score(ctx)
            privacy = ctx.read("train")["privacy"]
            runs[name].append(
                {
                    "seed": seed,
                    "ndcg_at_10": metrics["ndcg_at_10"],
                    "hr_at_10": metrics["hr_at_10"],
                    "epsilon": privacy.get("epsilon"),
                    "train_seconds": round(seconds, 1),
                }
            )
            print(seed, name, runs[name][-1], flush=True)
    results = {
        "machine": machine(),
        "split": args.split,
        "seeds": seeds,
        "settings": "the defaults (chosen from the data: ml.training.autosettings)",
        "variants": {
            n: {
                "change": VARIANTS[n][0],
                "overrides": VARIANTS[n][1],
                "runs": runs[n],
                "mean_ndcg_at_10": sum(r["ndcg_at_10"] for r in runs[n]) / len(runs[n]),
                "mean_train_seconds": sum(r["train_seconds"] for r in runs[n]) / len(runs[n]),
            }
            for n in names
        },
    }
    name = "ablation" if args.split == "dev" else "ablation-test"
    write(name, results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

"""The privacy-utility trade-off on amazon2018-industrial: NDCG@10 and membership-inference AUC at
epsilon in {1, 3, 8, 16, no DP}, and the time per training step with and without DP.

    python benchmarks/privacy.py [--source synthetic]
    python benchmarks/privacy.py --crowd 3000,10000,25000,all [--seeds 7,8]  # the Games crowd curve

With --crowd, the crowd curve on seeded subsets of the amazon2018-games shoppers instead (benchmarks/privacy_crowd.py:
NDCG@10 and MIA AUC at epsilon 1, 3, 8 and without DP against the crowd size; privacy-crowd.json, .md and .png).
`--max-steps`, `--max-eval-cases` and `--out` bound a check of it and keep its files apart.

Ingestion and features run once; each setting trains and evaluates on the same split, 256 shoppers
expected per step (the corpus has about 3,000 shoppers). Writes
benchmarks/results/privacy.json and privacy.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, new_context, trained_branch, write  # noqa: E402

SETTINGS = {
    "eps1": {"dp": {"enabled": True, "target_epsilon": 1.0}},
    "eps3": {"dp": {"enabled": True, "target_epsilon": 3.0}},
    "eps8": {"dp": {"enabled": True, "target_epsilon": 8.0}},
    # above the gate's epsilon 8: what twice the budget buys toward the quality target on this corpus
    "eps16": {"dp": {"enabled": True, "target_epsilon": 16.0}},
    "no_dp": {"dp": {"enabled": False}},
}


def main() -> None:
    from ml.pipeline import stages

    parser = argparse.ArgumentParser()
    parser.add_argument("--source", choices=["amazon2018", "synthetic"], default="amazon2018")
    parser.add_argument("--crowd", default=None, help="Games crowd sizes, e.g. 3000,10000,25000,all: the crowd curve")
    parser.add_argument("--seeds", default="7", help="with --crowd: comma-separated seeds (subset draw and run)")
    parser.add_argument("--max-steps", type=int, default=None, help="with --crowd: training steps of each run")
    parser.add_argument("--max-eval-cases", type=int, default=0, help="with --crowd: test rows evaluated; 0 = all")
    parser.add_argument("--out", default="privacy-crowd", help="with --crowd: result file name in benchmarks/results")
    parser.add_argument("--epsilons", default="1,3,8", help="with --crowd: the DP candidate's budgets (the twin too)")
    args = parser.parse_args()
    if args.crowd is not None:
        import shlex

        import privacy_crowd

        if args.max_eval_cases < 0 or (args.max_steps is not None and args.max_steps < 1):
            parser.error("--max-eval-cases must be >= 0 (0 = all) and --max-steps >= 1")
        bounds: dict = {"max_eval_cases": args.max_eval_cases}
        if args.max_steps is not None:
            bounds["max_steps"] = args.max_steps
        seeds = [int(s) for s in args.seeds.split(",")]
        command = "python benchmarks/privacy.py " + shlex.join(sys.argv[1:])
        try:
            epsilons = tuple(float(e) for e in args.epsilons.split(","))
        except ValueError:
            parser.error(f"--epsilons takes comma-separated numbers, got {args.epsilons!r}")
        if any(e <= 0 for e in epsilons):
            parser.error("--epsilons must be positive")
        privacy_crowd.main(args.crowd, seeds, bounds, args.out, command, epsilons)
        return
    # the training settings are the defaults, chosen from the data and each setting's budget (ml.training.autosettings)
    overrides = {"source": args.source, "slice_reports": False, "max_eval_cases": 0}
    if args.source == "amazon2018":
        path = SHARED_DATA / "amazon2018-industrial"
        if not path.exists():
            raise SystemExit(f"{path} is absent: this benchmark reads the real corpus")
        overrides["path"] = str(path)
    base = new_context(f"privacy-{args.source}", overrides)
    stages.ingest(base)
    stages.features(base)
    rows = {}
    for name, change in SETTINGS.items():
        ctx, timing = trained_branch(base, f"privacy-{name}", change)
        tr, ev = ctx.read("train"), ctx.read("evaluate")
        k = ev["k"]
        rows[name] = {
            "epsilon": tr["privacy"].get("epsilon"),
            "delta": tr["privacy"].get("delta"),
            "ndcg_at_10": ev["candidate"]["metrics"][f"ndcg_at_{k}"],
            "hr_at_10": ev["candidate"]["metrics"][f"hr_at_{k}"],
            "mia_auc": ev["mia"]["auc"],
            "mia_advantage": ev["mia"]["advantage"],
            "seconds_per_step": tr["seconds_per_step"],
            "steps": tr["steps"],
            "train_stage_seconds": timing["seconds"],
            "best_baseline": ev["best_baseline"],
            "best_baseline_ndcg_at_10": ev["best_baseline_ndcg"],
            "best_non_private_baseline": ev["best_non_private_baseline"],
            "best_non_private_baseline_ndcg_at_10": ev["best_non_private_baseline_ndcg"],
        }
        print(name, rows[name], flush=True)
    no_dp = rows["no_dp"]["ndcg_at_10"]
    for r in rows.values():
        r["share_of_non_private_ndcg"] = r["ndcg_at_10"] / no_dp if no_dp else None
    results = {"machine": machine(), "source": args.source, "settings": rows}
    lines = [
        f"# Privacy benchmark: {args.source} ({results['machine']['date']}, {results['machine']['cores']} cores)",
        "",
        "| setting | epsilon | NDCG@10 | share of non-DP NDCG | HR@10 | MIA AUC | s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        eps = f"{r['epsilon']:.2f}" if r["epsilon"] else "none"
        lines.append(
            f"| {name} | {eps} | {r['ndcg_at_10']:.4f} | {r['share_of_non_private_ndcg']:.2f} | "
            f"{r['hr_at_10']:.4f} | {r['mia_auc']:.3f} | {r['seconds_per_step']:.3f} |"
        )
    first = next(iter(rows.values()))
    lines += [
        "",
        "NDCG@10 and HR@10 after fair re-ranking (the run's minimum long-tail share), as the gate reads them.",
        "",
        f"Best shippable baseline on the same split (the gate's bar): {first['best_baseline']} "
        f"{first['best_baseline_ndcg_at_10']:.4f}; best non-private baseline (learns from the shoppers without DP): "
        + (
            f"{first['best_non_private_baseline']} {first['best_non_private_baseline_ndcg_at_10']:.4f}."
            if first["best_non_private_baseline"]
            else "none."
        ),
    ]
    write("privacy" if args.source == "amazon2018" else f"privacy-{args.source}", results, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""User-side fairness mitigation: the activity groups' NDCG@10 and their ratio at each strength setting.

    python benchmarks/user_fairness.py [--seeds 7] [--home DIR]

Trains the candidate (the defaults: training settings chosen from the data, as the quality benchmark runs) on
amazon2018-industrial's development split and on its test split, and on a small synthetic shop; the strength is
chosen on the development split and the test split is reported at every setting. Writes benchmarks/results/user-fairness.json and user-fairness.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, new_context, write  # noqa: E402

AMAZON = "amazon2018-industrial"
STRENGTHS = (0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5)
K = 10
# a synthetic shop small enough to train in a minute or two on two cores (benchmarks/pipeline.py's prod run)
SYNTHETIC = {"source": "synthetic", "n_users": 5000, "n_items": 800, "epochs": 5, "max_steps": 30, "batch_size": 512}


def trained_context(name: str, overrides: dict, root: Path):
    """Run `name` (its own VETTED_HOME under `root`: each corpus has its own lake) with ingest, features and
    train done; reused when a previous call trained it."""
    import os

    from ml.pipeline import stages
    from ml.pipeline.context import RunContext

    home = root / name
    run_dir = home / "runs" / name
    if (run_dir / "train.json").exists():
        os.environ["VETTED_HOME"] = str(home)
        return RunContext.load(run_dir)
    ctx = new_context(name, {"max_eval_cases": 0, "slice_reports": False, **overrides}, home)
    for stage in ("ingest", "features", "train"):
        getattr(stages, stage)(ctx)
    return ctx


def corpora(seed: int, root: Path) -> dict[str, dict]:
    """name -> run overrides: amazon2018's development and test splits, and the synthetic shop."""
    from ml.data.amazon2018 import development_split

    out: dict[str, dict] = {}
    folder = SHARED_DATA / AMAZON
    if folder.exists():
        real = {"source": "amazon2018", "seed": seed}  # the training settings chosen from the data (the defaults)
        dev_dir = root / "dev-split" / "data"
        if not dev_dir.exists():  # outside the repository: the data's terms forbid copying it there
            dev_dir = development_split(folder, dev_dir)
        out[f"amazon2018-dev-s{seed}"] = {**real, "path": str(dev_dir)}
        out[f"amazon2018-test-s{seed}"] = {**real, "path": str(folder)}
    out[f"synthetic-s{seed}"] = {**SYNTHETIC, "seed": seed}
    return out


def candidate_inputs(ctx) -> dict:
    """The evaluation stage's inputs for the mitigation: cases, the model's candidate pools and scores, the
    history lengths and the provider tiers (as `ml.evaluation.candidate.evaluate_candidate` builds them)."""
    import pandas as pd

    from ml.data.ingest import read_lake
    from ml.evaluation.candidate import RERANK_POOL
    from ml.evaluation.fairness import brand_tiers, catalogue_tail, item_tiers
    from ml.evaluation.rerank import RerankConfig
    from ml.pipeline.stages import CASES, SEQUENCES
    from ml.training.recommender import Recommender

    trained = ctx.read("train")
    cases = pd.read_parquet(ctx.path(CASES))
    cases["history"] = cases["history"].map(list)
    seq = pd.read_parquet(ctx.path(SEQUENCES))
    seq = seq[seq["user_id"].isin(set(trained["member_users"]))]
    items = read_lake(ctx.settings.lake_dir)["items"]
    item_brand = dict(zip(items["item_id"], items["brand"], strict=True))
    tiers = item_tiers(item_brand, brand_tiers(item_brand, seq["item_id"].value_counts().to_dict()))
    rec = Recommender.load(Path(trained["model_dir"]))
    histories = cases["history"].tolist()
    pools, scores = rec.recommend(histories, max(RERANK_POOL, K))
    return {
        "rec": rec,
        "histories": histories,
        "targets": cases["item_id"].tolist(),
        "pools": pools,
        "pool_scores": [s.tolist() for s in scores],
        "lengths": [len(h) for h in histories],
        "item_tier": tiers,
        "epsilon": trained["privacy"].get("epsilon"),
        "provider": (
            catalogue_tail(item_brand),
            RerankConfig(min_tail_share=ctx.config.rerank_min_tail_share, window=K),
        ),
    }


def signals(inputs: dict) -> list[dict]:
    """Per-group NDCG@10 of whole-catalogue rankings by each signal the mitigation could lean on."""
    import numpy as np
    import torch

    from ml.evaluation.baselines import released_counts, transition_table
    from ml.evaluation.fairness import activity_groups
    from ml.evaluation.metrics import per_case_metrics
    from ml.evaluation.user_fairness import group_ndcg
    from ml.topk import top_k

    rec, histories = inputs["rec"], inputs["histories"]
    model = rec.model
    labels = np.asarray(activity_groups(inputs["lengths"]), dtype=object)
    parts: dict[str, list[np.ndarray]] = {
        "model": [],
        "text score alone": [],
        "DP transition counts alone": [],
        "model on the newest 2 items": [],
    }
    for start in range(0, len(histories), 256):
        batch = histories[start : start + 256]
        t = rec._history_tensors(batch)
        with torch.no_grad():
            q = model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
            parts["text score alone"].append((q @ model.item_table.T / model.temperature).numpy())
            parts["DP transition counts alone"].append(
                model.history_features(t["hist_idx"], t["hist_mask"])[..., 4].numpy()
            )
        parts["model"].append(rec.history_scores(batch))
        parts["model on the newest 2 items"].append(rec.history_scores([h[-2:] for h in batch]))
    table = {name: np.vstack(p) for name, p in parts.items()}
    counts = transition_table(rec)
    if counts.shape[0] == len(rec.item_ids):  # column sums of the released counts: post-processing, no epsilon
        released = released_counts(rec.item_ids, counts).sum(axis=0)
        table["DP popularity (released counts)"] = np.tile(np.asarray(released).ravel(), (len(histories), 1))
    table["model, history items put last"] = table["model"] - 1e3 * np.asarray(
        [[item in set(h) for item in rec.item_ids] for h in histories], dtype=np.float32
    )
    rows = []
    for name, scores in table.items():
        lists = [[rec.item_ids[j] for j in row] for row in top_k(scores, K)]
        ndcg = per_case_metrics(lists, inputs["targets"], K)["ndcg"].to_numpy()
        rows.append({"signal": name, "ndcg": float(ndcg.mean()), **group_ndcg(ndcg, labels)})
    return rows


def measure(inputs: dict, group: str) -> dict[str, list[dict]]:
    """The trade-off table on the model's own ranking of the pool, and after the provider re-ranker as the
    evaluation stage ranks the candidate (the figures the gate reads)."""
    from ml.evaluation.user_fairness import tradeoff, unseen

    support = unseen(inputs["pools"], inputs["histories"])
    args = (
        inputs["pools"],
        inputs["pool_scores"],
        support,
        inputs["lengths"],
        inputs["targets"],
        K,
        STRENGTHS,
        inputs["item_tier"],
    )
    return {
        "not_reranked": tradeoff(*args, group=group).to_dict(orient="records"),
        "provider_reranked": tradeoff(*args, group=group, provider=inputs["provider"]).to_dict(orient="records"),
    }


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def table_md(rows: list[dict], chosen: float | None) -> list[str]:
    out = [
        "| strength | NDCG@10 | NDCG lost | light | heavy | min/max ratio | 95% interval | ratio gain over 0, "
        "paired 95% interval | provider exposure ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " (chosen)" if chosen is not None and r["strength"] == chosen else ""
        out.append(
            f"| {r['strength']:.2f}{mark} | {r['ndcg']:.4f} | {r['ndcg_loss']:+.4f} | {_fmt(r['ndcg_light'])} | "
            f"{_fmt(r['ndcg_heavy'])} | {_fmt(r['ratio'])} | {_fmt(r['ratio_low'])} to {_fmt(r['ratio_high'])} | "
            f"{_fmt(r['gain_low'])} to {_fmt(r['gain_high'])} | {_fmt(r['provider_exposure_ratio'])} |"
        )
    return out


def _row(rows: list[dict], strength: float) -> dict:
    return next(r for r in rows if r["strength"] == strength)


def summary_md(results: dict) -> list[str]:
    """Per seed and corpus: the user NDCG ratio and NDCG@10 after provider re-ranking, unmitigated and at the
    chosen strength."""
    chosen = results["chosen_strength"]
    out = [
        f"## Summary: chosen group {results['chosen_group']}, strength {chosen} (after provider re-ranking)",
        "",
        "| seed | corpus | group | ratio at 0 | ratio at chosen | paired gain interval | NDCG@10 at 0 | "
        "NDCG@10 at chosen | mitigated group NDCG@10 at 0 / chosen | provider exposure ratio at 0 / chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, r in results["runs"].items():
        for name, part in r["corpora"].items():
            rows = part["tradeoff"]["provider_reranked"]
            base, at = _row(rows, 0.0), _row(rows, chosen)
            worse = f"ndcg_{part['group']}"
            out.append(
                f"| {seed} | {name} | {part['group']} | {_fmt(base['ratio'])} | {_fmt(at['ratio'])} | "
                f"{_fmt(at['gain_low'])} to {_fmt(at['gain_high'])} | {base['ndcg']:.4f} | {at['ndcg']:.4f} | "
                f"{_fmt(base[worse])} / {_fmt(at[worse])} | {_fmt(base['provider_exposure_ratio'])} / "
                f"{_fmt(at['provider_exposure_ratio'])} |"
            )
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    out = [
        f"# User-side fairness mitigation ({m['date']}, {m['cores']} cores)",
        "",
        f"`python benchmarks/user_fairness.py --seeds {','.join(map(str, results['seeds']))}`. The candidate is "
        "trained as the quality benchmark trains it (user-level DP); its top "
        f"{results['pool']} candidates are re-ranked for the shoppers of the worse-served activity group (by "
        "history length, ml.evaluation.fairness.activity_groups) by blending the model's score with the support "
        "score `unseen` (is the candidate new to the shopper), `ml.evaluation.user_fairness.mitigate`; everyone "
        "else keeps the model's ranking. The group and the strength are chosen on amazon2018's development split "
        "(the highest user NDCG ratio, after provider re-ranking and averaged over the seeds, among the strengths "
        "that lose no overall NDCG@10 on that average); the test split and the "
        "synthetic shop are read at every strength. Intervals: 2.5th to 97.5th percentiles over 1,000 resamples of "
        "shoppers, the same resamples at every strength (paired). The gate's threshold is 0.80.",
        "",
    ]
    out += summary_md(results) + [""]
    for seed, r in results["runs"].items():
        out += [f"## Seed {seed}", ""]
        if "signals" in r:
            out += [
                "### Signals on the development split (whole-catalogue rankings, NDCG@10)",
                "",
                "| signal | all | light | heavy |",
                "|---|---|---|---|",
            ]
            out += [
                f"| {s['signal']} | {s['ndcg']:.4f} | {_fmt(s.get('light'))} | {_fmt(s.get('heavy'))} |"
                for s in r["signals"]
            ]
            out.append("")
        for name, part in r["corpora"].items():
            out += [
                f"### {name} ({part['n_cases']} cases; mitigated group {part['group']}; epsilon "
                f"{_fmt(part['epsilon'])})",
                "",
            ]
            out += ["Not re-ranked for providers:", ""]
            out += table_md(part["tradeoff"]["not_reranked"], results["chosen_strength"])
            share = part["provider_min_tail_share"]
            out += [
                "",
                f"Then re-ranked for providers (min tail share {share}), as the evaluation stage ranks the "
                "candidate: the figures the gate reads",
                "",
            ]
            out += table_md(part["tradeoff"]["provider_reranked"], results["chosen_strength"])
            out.append("")
    return "\n".join(out) + "\n"


def _worse_group(inputs: dict) -> str:
    """The activity group the model's own top k serves worse."""
    from ml.evaluation.metrics import per_case_metrics
    from ml.evaluation.user_fairness import worse_served

    plain = [p[:K] for p in inputs["pools"]]
    return worse_served(per_case_metrics(plain, inputs["targets"], K)["ndcg"].tolist(), inputs["lengths"])


def main() -> None:
    import argparse
    import tempfile
    from collections import Counter

    import pandas as pd

    from ml.evaluation.candidate import RERANK_POOL
    from ml.evaluation.user_fairness import choose_strength

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="7", help="comma-separated run seeds")
    parser.add_argument("--home", default="", help="folder for the runs; a run already trained there is reused")
    args = parser.parse_args()
    root = Path(args.home or tempfile.mkdtemp(prefix="vetted-user-fairness-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {
        "machine": machine(),
        "seeds": seeds,
        "pool": RERANK_POOL,
        "strengths": list(STRENGTHS),
        "runs": {},
    }
    dev_tables, dev_groups = [], []
    for seed in seeds:
        run: dict = {"corpora": {}}
        group = "heavy"
        for name, overrides in corpora(seed, root).items():
            print(name, "...", flush=True)
            inputs = candidate_inputs(trained_context(name, overrides, root))
            if name.startswith("amazon2018-dev"):
                group = _worse_group(inputs)
                dev_groups.append(group)
                run["signals"] = signals(inputs)
            rows = measure(inputs, group)
            if name.startswith("amazon2018-dev"):
                dev_tables.append(pd.DataFrame(rows["provider_reranked"]))
            run["corpora"][name] = {
                "n_cases": len(inputs["targets"]),
                "group": group,
                "epsilon": inputs["epsilon"],
                "provider_min_tail_share": inputs["provider"][1].min_tail_share,
                "tradeoff": rows,
            }
            if name.startswith("synthetic"):  # no development split: its worse-served group is read on its hold-out
                own = _worse_group(inputs)
                if own != group:
                    run["corpora"][f"{name}, its own worse-served group"] = {
                        **run["corpora"][name],
                        "group": own,
                        "tradeoff": measure(inputs, own),
                    }
        results["runs"][str(seed)] = run
    results["chosen_group"] = Counter(dev_groups).most_common(1)[0][0] if dev_groups else "heavy"
    results["chosen_strength"] = (
        choose_strength(pd.concat(dev_tables).groupby("strength", as_index=False)[["ndcg", "ratio"]].mean())
        if dev_tables
        else None
    )
    write("user-fairness", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

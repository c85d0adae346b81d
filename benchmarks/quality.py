"""The model against every baseline, all ranking metrics, and fairness before and after re-ranking,
on amazon2018-industrial and Coat, or on the Games crowd (amazon2018-games).

    python benchmarks/quality.py              # the test splits
    python benchmarks/quality.py --split dev  # amazon2018's development split (no test target read)
    python benchmarks/quality.py --corpus games --seeds 7,8,9  # the Games crowd: quality-games.json/.md
    python benchmarks/quality.py --corpus games --seeds 8,9 --keep-seeds  # add seeds, keep the file's seed 7
    python benchmarks/quality.py --corpus games --markdown-only  # quality-games.md again from its JSON

On Games (the leave-one-out protocol of `ml.data.recbole`: every shopper's last item a test row ranked against
all items, the second-to-last the development case; the chain trains on what precedes the test item) the two targets are computed per seed: the DP
candidate over the best non-private baseline (the evaluate stage's price of privacy, target `TARGETS`) and over
its non-DP twin (`games.twin_ratio`), each with its paired bootstrap interval over shoppers.
`--max-eval-cases N`, `--max-steps N` and, on Games, `--crowd N` bound a run (a seeded sample of N test rows; N
training steps; a seeded subset of N shoppers, `games.write_subset`) and `--out NAME` names its result files, so a
bounded check does not overwrite the full-scale results.

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

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SHARED_DATA, branch_context, machine, new_context, write  # noqa: E402
from games import crowd_order, interval_text, parse_crowd, twin_ratio_of, write_subset  # noqa: E402

# corpus name -> (the chain's source, its folder in ../shared/data)
DATASETS = {
    "amazon2018": ("amazon2018", "amazon2018-industrial"),
    "coat": ("coat", "coat"),
    "games": ("recbole", "amazon2018-games"),
}
DEFAULT_CORPORA = ("amazon2018", "coat")
PUBLISHED = {"amazon2018": {"name": "MiniOneRec (1.5B+ LLM, GPUs)", "hr_at_10": 0.1586, "ndcg_at_10": 0.1167}}
# where no published figure shares our protocol, the results say so instead of quoting one
NOT_COMPARABLE = {
    "games": "No published figure is quoted: none known to us was measured under this protocol (every shopper's "
    "last item ranked against all 16,859 items, the model trained on what precedes it).",
}
# issue 22: the DP candidate / best non-private baseline, and / its non-DP twin (NDCG@10)
TARGETS = {"price_of_privacy": 1.10, "dp_vs_twin": 0.95}


def run(source: str, path: Path, seed: int, name: str | None = None, bounds: dict | None = None) -> dict:
    """One seed on one corpus: the DP candidate and every baseline, then its non-DP twin on the same features.
    `bounds` overrides the run's settings (max_eval_cases, max_steps); by default every test row is a case."""
    from ml.pipeline import stages

    name = name or source
    ctx = new_context(
        f"quality-{name}",
        {
            "source": source,
            "path": str(path),
            "seed": seed,
            "max_eval_cases": 0,
            "slice_reports": False,
            **(bounds or {}),
        },
    )
    for stage in ("ingest", "features", "train", "evaluate"):
        getattr(stages, stage)(ctx)
    # the same model trained without DP on the same features: what user-level DP costs against non-private baselines
    # (it cannot ship: the gate requires DP)
    no_dp = branch_context(ctx, f"quality-{name}-no-dp", {"dp": {"enabled": False}})
    stages.train(no_dp)
    stages.evaluate(no_dp)
    return summary_of(ctx, no_dp)


def summary_of(ctx, no_dp) -> dict:
    """One seed's figures from its two finished run folders: the DP candidate's and its non-DP twin's."""
    ev, tr = ctx.read("evaluate"), ctx.read("train")
    ev_no_dp = no_dp.read("evaluate")
    seed = ctx.config.seed
    return {
        "seed": seed,
        "n_cases": ev["n_cases"],
        "privacy": {k: tr["privacy"].get(k) for k in ("dp", "epsilon", "delta")},
        "candidate": ev["candidate"],
        "baselines": ev["baselines"],
        "best_baseline": ev["best_baseline"],
        "best_non_private_baseline": ev.get("best_non_private_baseline"),
        "best_non_private_baseline_ndcg": ev.get("best_non_private_baseline_ndcg"),
        "user_ndcg_ratio": ev["user_ndcg_ratio"],
        "rerank": ev["rerank"],
        "no_dp": {"candidate": ev_no_dp["candidate"], "rerank": ev_no_dp["rerank"]},
        "targets": {
            "price_of_privacy": ev["uncertainty"].get("price_of_privacy"),
            "dp_vs_twin": twin_ratio_of(ctx, no_dp, seed),
        },
        "steps": tr.get("steps"),
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
        "best_non_private_baseline": r.get("best_non_private_baseline"),
        "best_non_private_baseline_ndcg": r.get("best_non_private_baseline_ndcg"),
        "targets": r.get("targets"),
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
    lo = {key: min(s[key] for s in summaries) for key in keys}
    hi = {key: max(s[key] for s in summaries) for key in keys}

    def spread(key: str, digits: int) -> str:
        return f"{lo[key]:.{digits}f}-{hi[key]:.{digits}f}"

    out.append(
        f"| range over seeds | {spread('candidate_ndcg', 4)} | {spread('candidate_ndcg_no_rerank', 4)} | "
        f"{spread('best_baseline_ndcg', 4)} | {spread('ratio', 3)} | {spread('ratio_no_rerank', 3)} | "
        f"{spread('no_dp_ndcg', 4)} | {spread('no_dp_ndcg_no_rerank', 4)} | {spread('no_dp_ratio', 3)} / "
        f"{spread('no_dp_ratio_no_rerank', 3)} |"
    )
    return out


def _mean_value(rows: list[dict], key: str) -> float | None:
    values = [(s["targets"].get(key) or {}).get("value") for s in rows]
    return None if any(v is None for v in values) else sum(values) / len(values)


def targets_table(summaries: list[dict]) -> list[str]:
    """The two targets per seed with their 95% paired intervals over shoppers, their mean over seeds, and whether
    the mean reaches each (`TARGETS`)."""
    rows = [s for s in summaries if s.get("targets")]
    if not rows:
        return []
    out = [
        "",
        "Targets (NDCG@10 of the DP candidate as the gate reads it, re-ranked): over the best non-private baseline "
        "(one that learns from the shoppers without DP, as the evaluate stage picks it) "
        f">= {TARGETS['price_of_privacy']:.2f}, over its non-DP twin >= {TARGETS['dp_vs_twin']:.2f}. Brackets: 95% "
        "paired bootstrap interval over shoppers (the evaluate stage's resamples).",
        "",
        "| seed | best non-private baseline | DP / best non-private | DP / non-DP twin |",
        "|---|---|---|---|",
    ]
    for s in rows:
        base, ndcg = s.get("best_non_private_baseline"), s.get("best_non_private_baseline_ndcg")
        out.append(
            f"| {s['seed']} | {f'{base} {ndcg:.4f}' if base else 'none'} | "
            f"{interval_text(s['targets'].get('price_of_privacy'))} | {interval_text(s['targets'].get('dp_vs_twin'))} |"
        )
    means = {key: _mean_value(rows, key) for key in TARGETS}
    if len(rows) > 1:
        cells = [f"{m:.3f}" if m is not None else "n/a" for m in means.values()]
        out.append(f"| mean | | {cells[0]} | {cells[1]} |")
        ranges = []
        for key in TARGETS:
            values = [(s["targets"].get(key) or {}).get("value") for s in rows]
            ranges.append("n/a" if None in values else f"{min(values):.3f}-{max(values):.3f}")
        out.append(f"| range over seeds | | {ranges[0]} | {ranges[1]} |")
    verdicts = []
    for (key, target), label in zip(TARGETS.items(), ("DP / best non-private", "DP / twin"), strict=True):
        mean = means[key]
        if mean is None:
            verdicts.append(f"{label} undefined on some seed")
            continue
        lowers = [(s["targets"].get(key) or {}).get("lower") for s in rows]
        sure = all(lo is not None and lo >= target for lo in lowers)
        verdicts.append(
            f"{label} {mean:.3f} over {len(rows)} seed(s) "
            + (f"meets {target:.2f}" if mean >= target else f"misses {target:.2f}")
            + (" (every seed's lower bound too)" if sure else "")
        )
    return [*out, "", "Verdict: " + "; ".join(verdicts) + "."]


def markdown(results: dict) -> str:
    split = results.get("split", "test")
    title = (
        "Quality benchmark"
        if split == "test"
        else f"Quality benchmark, {', '.join(results['datasets'])} development split"
    )
    seeds = ",".join(str(s) for s in results.get("seeds", [7]))
    command = results.get("command") or f"python benchmarks/quality.py --split {split} --seeds {seeds}"
    out = [
        f"# {title} ({results['machine']['date']}, {results['machine']['cores']} cores)",
        "",
        f"`{command}`; the tables detail the first seed.",
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
        out += [""]
        if r.get("not_comparable"):
            out += [r["not_comparable"], ""]
        out += [
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
        earlier = [s for s in r.get("seeds", []) if s.get("command") not in (None, results.get("command"))]
        if earlier:
            out += [
                "",
                "Kept from earlier runs (`--keep-seeds`): "
                + "; ".join(f"seed {s['seed']}, measured {s['measured']} by `{s['command']}`" for s in earlier)
                + ".",
            ]
        if len(r.get("seeds", [])) > 1:
            out += seeds_table(r["seeds"])
        out += targets_table(r.get("seeds", []))
        out.append("")
    return "\n".join(out) + "\n"


def finished_runs(folders: list[Path]) -> list[dict]:
    """The seeds' figures from the run folders of an earlier invocation (`runs/quality-<corpus>` under each seed's
    temporary home; its twin is the sibling `-no-dp` folder), without training again: a benchmark stopped after
    some corpora keeps what it finished."""
    from ml.pipeline.context import RunContext

    if not folders:
        raise SystemExit("--from-runs names no run folder of this corpus (runs/quality-<corpus>)")
    out = []
    for folder in folders:
        ctx = RunContext.load(folder)
        twin = folder.with_name(folder.name + "-no-dp")
        if not (folder / "evaluate.json").exists() or not (twin / "evaluate.json").exists():
            raise SystemExit(f"{folder}: the DP run or its twin ({twin.name}) did not finish evaluating")
        out.append(summary_of(ctx, RunContext.load(twin)))
    return sorted(out, key=lambda r: r["seed"])


def kept_seeds(
    previous: Path, corpus: str, seeds: list[int], split: str, bounds: dict, crowd: int | None
) -> dict | None:
    """`--keep-seeds`: what an earlier result file measured on the same corpus, split, bounds and crowd for seeds
    this run does not measure again: its corpus entry with only those seeds, each with the date and command that
    measured it; None when it holds none to keep."""
    if not previous.exists():
        return None
    old = json.loads(previous.read_text())
    entry = old.get("datasets", {}).get(corpus)
    same = old.get("split", "test") == split and old.get("bounds") == bounds and old.get("crowd") == crowd
    if not entry or "skipped" in entry or not same:
        return None
    kept = [
        {**s, "measured": s.get("measured", old["machine"]["date"]), "command": s.get("command", old.get("command"))}
        for s in entry.get("seeds", [])
        if s["seed"] not in seeds
    ]
    return {**entry, "seeds": kept} if kept else None


def with_kept(entry: dict, kept: dict | None) -> dict:
    """This run's corpus entry with the kept seeds added (ordered by seed); the detailed tables stay those of the
    smallest seed, the kept entry's when it is that seed's."""
    if kept is None:
        return entry
    seeds = sorted(kept["seeds"] + entry["seeds"], key=lambda s: s["seed"])
    kept_detail = kept["seed"] in {s["seed"] for s in kept["seeds"]} and kept["seed"] < entry["seed"]
    return {**(kept if kept_detail else entry), "seeds": seeds}


def corpus_runs(name: str, split: str, seeds: list[int], bounds: dict, crowd: int | None) -> list[dict]:
    """Every seed's run on one corpus. Its development split, and a seeded subset of `crowd` shoppers (Games), are
    written to a temporary folder, removed after the run: the data's terms forbid copying it into the repository."""
    import tempfile

    from ml.data import amazon2018, recbole

    dev_splits = {"amazon2018": amazon2018.development_split, "games": recbole.development_split}
    source, folder = DATASETS[name]
    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix=f"vetted-quality-{name}-") as tmp:
            path = SHARED_DATA / folder
            if crowd is not None:
                order = crowd_order(path, seed)
                if crowd < len(order):
                    path = write_subset(path, order[:crowd], Path(tmp) / "crowd")
            if split == "dev":
                path = dev_splits[name](path, Path(tmp) / "dev")
            runs.append(run(source, path, seed, name, bounds))
    return runs


def main() -> None:
    import argparse
    import shlex

    from games import GAMES, shoppers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--split",
        choices=("test", "dev"),
        default="test",
        help="test: the corpora's hold-outs; dev: their development split (amazon2018 and games only)",
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help=f"comma-separated, of {sorted(DATASETS)}; default {','.join(DEFAULT_CORPORA)} (amazon2018 with "
        "--split dev). games runs alone and writes quality-games (quality-dev-games with --split dev)",
    )
    parser.add_argument(
        "--seeds", default="7", help="comma-separated run seeds; the tables detail the first, a last table compares all"
    )
    parser.add_argument("--max-eval-cases", type=int, default=0, help="test rows evaluated (a seeded sample); 0 = all")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps of each run (default: the chain's)")
    parser.add_argument("--out", default=None, help="result file name in benchmarks/results (default from the corpora)")
    parser.add_argument("--crowd", default=None, help="games only: a seeded subset of this many shoppers (or all)")
    parser.add_argument(
        "--from-runs",
        nargs="+",
        type=Path,
        default=None,
        help="read the seeds' figures from these finished run folders (runs/quality-<corpus> of an earlier "
        "invocation's temporary homes, the corpus named by the folder) instead of training",
    )
    parser.add_argument(
        "--keep-seeds",
        action="store_true",
        help="keep the seeds the result file already holds and this run does not measure (same corpus, split, "
        "bounds and crowd; each dated): add seeds to a finished run without training its seeds again",
    )
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="write the result file's Markdown again from its JSON (the --out name, else the default one), "
        "measuring nothing: a change to the tables' layout reaches committed results",
    )
    args = parser.parse_args()
    split, seeds = args.split, [int(s) for s in args.seeds.split(",")]
    corpora = args.corpus.split(",") if args.corpus else (list(DEFAULT_CORPORA) if split == "test" else ["amazon2018"])
    unknown = sorted(set(corpora) - set(DATASETS))
    if unknown:
        parser.error(f"--corpus {unknown}: not one of {sorted(DATASETS)}")
    if "games" in corpora and len(corpora) > 1:
        parser.error("--corpus games runs alone (it writes its own result files)")
    if split == "dev" and set(corpora) - {"amazon2018", "games"}:
        parser.error("--split dev exists for amazon2018 and games only")
    crowd = None
    if args.crowd is not None:
        if corpora != ["games"] or not GAMES.exists():
            parser.error("--crowd draws Games shoppers: it needs --corpus games and the corpus")
        try:
            sizes = parse_crowd(args.crowd, len(shoppers(GAMES)))
        except ValueError as err:
            parser.error(str(err))
        if len(sizes) != 1:
            parser.error("--crowd takes one size here (the privacy benchmark draws the curve)")
        crowd = sizes[0]
    if args.max_eval_cases < 0 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--max-eval-cases must be >= 0 (0 = all) and --max-steps >= 1")
    bounds: dict = {"max_eval_cases": args.max_eval_cases}
    if args.max_steps is not None:
        bounds["max_steps"] = args.max_steps
    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:])
    default = ("quality" if split == "test" else "quality-dev") + ("-games" if corpora == ["games"] else "")
    out = args.out or default
    if args.markdown_only:
        saved = json.loads((RESULTS / f"{out}.json").read_text())
        (RESULTS / f"{out}.md").write_text(markdown(saved))
        return
    results = {"machine": machine(), "split": split, "seeds": seeds, "bounds": bounds, "crowd": crowd}
    results["command"] = command
    results["datasets"] = {}
    for name in corpora:
        folder = DATASETS[name][1]
        if not (SHARED_DATA / folder).exists():
            results["datasets"][name] = {"skipped": f"{SHARED_DATA / folder} is absent"}
            continue
        print(f"{name} ...", flush=True)
        if args.from_runs:
            runs = finished_runs([f for f in args.from_runs if f.name == f"quality-{name}"])
        else:
            runs = corpus_runs(name, split, seeds, bounds, crowd)
        published = PUBLISHED.get(name) if split == "test" else None
        entry = {
            **runs[0],
            "published": published,
            "not_comparable": NOT_COMPARABLE.get(name) if split == "test" else None,
            "seeds": [{**seed_summary(r), "measured": results["machine"]["date"], "command": command} for r in runs],
        }
        kept = kept_seeds(RESULTS / f"{out}.json", name, seeds, split, bounds, crowd) if args.keep_seeds else None
        results["datasets"][name] = with_kept(entry, kept)
        results["seeds"] = [s["seed"] for s in results["datasets"][name]["seeds"]]
    write(out, results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

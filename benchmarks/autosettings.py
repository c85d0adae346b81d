"""Training settings chosen from the data (ml.training.autosettings) against the hand-chosen ones they replace.

    python benchmarks/autosettings.py --seeds 7,8          # amazon2018 development split, the demo, Games
    python benchmarks/autosettings.py --only games,demo    # a subset

- amazon2018: the quality benchmark's development split (`ml.data.amazon2018.development_split`), the candidate
  trained with the defaults (every setting chosen from the data) and with the settings the benchmarks used to pass
  by hand (HAND_SETTINGS), on the same features; NDCG@10 over every case, re-ranked and not.
- demo: the whole chain (`vetted run` with its defaults) on the synthetic demo: the gate's decision.
- games: amazon2018-games has no source adapter: only what the rules choose for its statistics (each shopper's
  sequence less its last two items, the leave-one-out protocol's training part; the budget's delta at its shoppers).

Writes benchmarks/results/autosettings.json and autosettings.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, branch_context, machine, measure, new_context, write  # noqa: E402

# what the benchmarks passed by hand for the real corpora before the settings were chosen from the data: fewer
# shoppers a step than the demo's 2,048, each sampled shopper's gradient taken over up to 8 of its examples, and one
# noise deviation off each noised transition count instead of two, as few shoppers share a pair there
# (benchmarks/results/quality-dev.md, ablation.md)
HAND_SETTINGS = {"batch_size": 256, "examples_per_user": 8, "dp": {"transitions_floor": 1.0}}


def _ndcg(ev: dict) -> dict:
    plain = next(t["ndcg"] for t in ev["rerank"]["tradeoff"] if t["min_tail_share"] == 0.0)
    return {
        "ndcg_at_10": ev["candidate"]["metrics"]["ndcg_at_10"],
        "ndcg_at_10_no_rerank": plain,
        "best_baseline": ev["best_baseline"],
        "best_baseline_ndcg": ev["best_baseline_ndcg"],
    }


def _trained(ctx, ev: dict, timing: dict) -> dict:
    tr = ctx.read("train")
    return {
        **_ndcg(ev),
        "epsilon": tr["privacy"].get("epsilon"),
        "steps": tr["steps"],
        "train_seconds": tr["seconds"],
        "seconds": timing["seconds"],
        "settings": {c["name"]: c["value"] for c in tr["training_settings"]["choices"]},
        "choices": tr["training_settings"]["choices"],
        "stats": tr["training_settings"]["stats"],
    }


def amazon(seed: int, path: Path) -> dict:
    from ml.pipeline import stages

    base = new_context(
        f"autosettings-amazon-{seed}",
        {"source": "amazon2018", "path": str(path), "seed": seed, "max_eval_cases": 0, "slice_reports": False},
    )
    stages.ingest(base)
    stages.features(base)
    out = {"seed": seed}
    for name, ctx in (
        ("auto", base),
        ("hand", branch_context(base, f"autosettings-amazon-{seed}-hand", HAND_SETTINGS)),
    ):
        print(f"amazon2018 seed {seed}: {name} ...", flush=True)
        timing: dict = {}
        with measure(timing):
            stages.train(ctx)
            stages.evaluate(ctx)
        out[name] = _trained(ctx, ctx.read("evaluate"), timing)
    return out


def demo() -> dict:
    from ml.cli import run_chain
    from ml.config import RunConfig, Settings

    ctx = new_context("autosettings-demo-home", {})  # sets VETTED_HOME and the benchmarks' pseudonym key
    timing: dict = {}
    with measure(timing):
        summary = run_chain(Settings.from_env(), RunConfig(), echo=lambda *a, **k: None)
    run_dir = Path(summary["run_dir"])
    from ml.pipeline.context import RunContext

    tr = RunContext.load(run_dir).read("train")
    checks = {c["name"]: c["status"] for c in summary["gate"]["checks"] or []}
    return {
        "gate": summary["gate"]["status"],
        "checks": checks,
        "ndcg_at_10": summary["metrics"]["ndcg_at_10"],
        "best_baseline": summary["best_baseline"],
        "best_baseline_ndcg": summary["baselines"][summary["best_baseline"]]["ndcg_at_10"],
        "epsilon": summary["privacy"].get("epsilon"),
        "seconds": timing["seconds"],
        "home": str(ctx.settings.home),
        "settings": {c["name"]: c["value"] for c in tr["training_settings"]["choices"]},
        "choices": tr["training_settings"]["choices"],
        "stats": tr["training_settings"]["stats"],
    }


def games() -> dict:
    """What the rules choose for amazon2018-games (no adapter: its files are read here)."""
    import pandas as pd

    from ml.config import RunConfig
    from ml.privacy.mia import split_audit_users
    from ml.training.autosettings import resolve_run

    folder = SHARED_DATA / "amazon2018-games"
    test = pd.read_csv(folder / "Games-6k.test.inter", sep="\t", dtype=str)
    test.columns = [c.split(":")[0] for c in test.columns]
    n_items = sum(1 for _ in open(folder / "Games-6k.item", encoding="utf-8")) - 1
    # whole sequence = test history + test target; training = all but the last two items
    sequences = {
        u: (h.split() + [t])[:-2]
        for u, h, t in zip(test["user_id"], test["item_id_list"], test["item_id"], strict=True)
    }
    members, _ = split_audit_users(pd.Series(list(sequences)).to_numpy(), 7)
    index_of: dict[str, int] = {}
    seqs = [[index_of.setdefault(i, len(index_of)) for i in sequences[u]] for u in sorted(members)]
    # one example per item after the first (a history of at least one item), as the features stage builds them
    example_users = [u for u in sorted(members) for _ in range(max(0, len(sequences[u]) - 1))]
    timing: dict = {}
    with measure(timing):
        resolved = resolve_run(RunConfig(), example_users, seqs, n_items)
    return {
        "settings": {c.name: c.value for c in resolved.choices},
        "choices": resolved.to_dict()["choices"],
        "stats": resolved.stats.to_dict(),
        "resolve_seconds": timing["seconds"],
    }


def markdown(r: dict) -> str:
    out = [
        f"# Training settings chosen from the data ({r['machine']['date']}, {r['machine']['cores']} cores)",
        "",
        f"`python benchmarks/autosettings.py --seeds {','.join(map(str, r.get('seeds', [])))}`. The defaults (batch_size 0, "
        "examples_per_user 0, dp.transitions_floor None: chosen by `ml.training.autosettings`) against the "
        f"settings the benchmarks passed by hand ({HAND_SETTINGS}).",
        "",
    ]
    if r.get("amazon"):
        out += [
            "## amazon2018-industrial, development split",
            "",
            "| seed | settings | batch | examples/shopper | floor | steps | NDCG@10 (re-ranked) | NDCG@10 (not) | "
            "best baseline | train s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in r["amazon"]:
            for name in ("auto", "hand"):
                x = s[name]
                st = x["settings"]
                out.append(
                    f"| {s['seed']} | {name} | {st['batch_size']} | {st['examples_per_user']} | "
                    f"{st['dp.transitions_floor']} | {x['steps']} | {x['ndcg_at_10']:.4f} | "
                    f"{x['ndcg_at_10_no_rerank']:.4f} | {x['best_baseline']} {x['best_baseline_ndcg']:.4f} | "
                    f"{x['train_seconds']:.0f} |"
                )
        first = r["amazon"][0]["auto"]
        out += (
            [
                "",
                "Statistics read: " + ", ".join(f"{k} {v:g}" for k, v in first["stats"].items()),
                "",
                "Why (seed " + str(r["amazon"][0]["seed"]) + "):",
            ]
            + [f"- {c['name']} {c['value']}: {c['text']}" for c in first["choices"]]
            + [""]
        )
    if r.get("demo"):
        d = r["demo"]
        out += [
            "## Synthetic demo (`vetted run` defaults)",
            "",
            f"Gate **{d['gate']}**: candidate NDCG@10 {d['ndcg_at_10']:.4f} against {d['best_baseline']} "
            f"{d['best_baseline_ndcg']:.4f} (needs x 1.05 = {1.05 * d['best_baseline_ndcg']:.4f}); epsilon "
            f"{d['epsilon']:.2f}; whole chain {d['seconds']:.0f} s.",
            "",
            "Statistics read: " + ", ".join(f"{k} {v:g}" for k, v in d["stats"].items()),
            "",
        ]
        out += [f"- {c['name']} {c['value']}: {c['text']}" for c in d["choices"]] + [""]
    if r.get("games"):
        g = r["games"]
        out += [
            "## amazon2018-games (no source adapter: the rules' choice only, not trained)",
            "",
            "Statistics: " + ", ".join(f"{k} {v:g}" for k, v in g["stats"].items()),
            "",
        ]
        out += [f"- {c['name']} {c['value']}: {c['text']}" for c in g["choices"]] + [""]
    return "\n".join(out) + "\n"


def save(results: dict) -> dict:
    """Write the parts this invocation measured over those of the results file (a run with --only keeps the rest)."""
    import json

    from common import RESULTS

    old = RESULTS / "autosettings.json"
    merged = {**(json.loads(old.read_text()) if old.exists() else {}), **results}
    write("autosettings", merged, markdown(merged))
    return merged


def main() -> None:
    import argparse
    import json

    from ml.data.amazon2018 import development_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="7", help="comma-separated seeds of the amazon2018 runs")
    parser.add_argument("--only", default="amazon,demo,games", help="comma-separated subset of amazon,demo,games")
    args = parser.parse_args()
    seeds, only = [int(s) for s in args.seeds.split(",")], set(args.only.split(","))
    results: dict = {"machine": machine()}
    if "amazon" in only:
        results["seeds"] = seeds
    if "games" in only and (SHARED_DATA / "amazon2018-games").exists():
        results["games"] = games()
        print(json.dumps(results["games"]["settings"]), flush=True)
    if "amazon" in only and (SHARED_DATA / "amazon2018-industrial").exists():
        path = development_split(
            SHARED_DATA / "amazon2018-industrial", Path(tempfile.mkdtemp(prefix="vetted-dev-split-")) / "data"
        )
        results["amazon"] = []
        for seed in seeds:
            results["amazon"].append(amazon(seed, path))
            save(results)  # what has run so far
    if "demo" in only:
        results["demo"] = demo()
    print(markdown(save(results)))


if __name__ == "__main__":
    main()

"""How much of the item-transition signal a thresholded DP release can keep on a real corpus, before any training.

The transition counts are released by Gaussian partition selection (`ml.privacy.pair_counts.release_counts`): each
shopper adds at most `per_user` distinct (previous, next) pairs, each pair's count gets N(0, s^2) noise with
s = sigma x sqrt(per_user), and a pair is released only when its noised count clears the threshold tau
(`ml.privacy.accounting.selection_threshold`). This benchmark reads each corpus' training sequences (the source
adapter, then the temporal split: the events before the split time, as the chain trains on them), bounds each
shopper's pairs exactly as the chain does (`capped_pairs`) and reports, for epsilon 1, 3 and 8 and several
`per_user`:

- the exact (noiseless) capped count of every pair that occurs, and how many pairs reach tau;
- the expected number of pairs released, sum over pairs of P(count + noise > tau), and the share of the counted
  pair occurrences those pairs hold (the signal a release can keep at all);
- on amazon2018-games, the same on seeded subsets of shoppers (the crowd: how the kept share grows with it).

sigma is the counts' noise at the chain's split of the budget (`DPConfig.transitions_share` of epsilon, its delta
rule `ml.privacy.accounting.default_delta`): the counts' share of the privacy cost does not depend on DP-SGD's
sample rate or steps. No model is trained: these are the ceilings of what the release can hand the model.

    .venv/bin/python benchmarks/pair_support.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import ndtr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, write  # noqa: E402

EPSILONS = (1.0, 3.0, 8.0)
PER_USER = (1, 2, 4, 8, 16)
CROWDS = (3000, 10_000, 25_000)  # Games subsets; the whole corpus is added
CORPORA = {"amazon2018-industrial": "amazon2018", "amazon2018-games": "recbole"}


def training_sequences(source: str, folder: Path) -> tuple[list[str], list[list[int]], int]:
    """(shopper ids, each shopper's items before the split time in index space, n_items) from the source adapter."""
    from ml.data import amazon2018, recbole
    from ml.data.splits import interaction_sequences

    raw = {"amazon2018": amazon2018.load, "recbole": recbole.load}[source](folder)
    seq = interaction_sequences(raw.events)
    seq = seq[seq["ts"] < raw.split_time]
    index_of = {item: i for i, item in enumerate(raw.items["item_id"])}
    seq = seq.assign(code=seq["item_id"].map(index_of)).dropna(subset=["code"])
    users, per_user = [], []
    for user, group in seq.groupby("user_id", sort=True):
        users.append(str(user))
        per_user.append(group.sort_values("position")["code"].astype(np.int64).tolist())
    return users, per_user, len(index_of)


def support(sequences: list[list[int]], n_items: int, per_user: int, sigma: float, delta_sel: float) -> dict:
    """The exact capped counts against the threshold at noise multiplier `sigma`."""
    from ml.privacy.accounting import selection_threshold
    from ml.privacy.pair_counts import capped_pairs, pair_keys

    pairs = capped_pairs(sequences, n_items, per_user, np.random.default_rng(0))
    keys = pair_keys(pairs, n_items)
    _, counts = np.unique(keys, return_counts=True)
    tau = selection_threshold(sigma, per_user, delta_sel)
    s = sigma * np.sqrt(per_user)
    p_release = ndtr((counts - tau) / s)  # P(count + N(0, s^2) > tau)
    total = max(int(counts.sum()), 1)
    return {
        "per_user": per_user,
        "threshold": round(tau, 2),
        "pairs": int(len(counts)),
        "occurrences": int(counts.sum()),
        "pairs_count_1": int((counts == 1).sum()),
        "pairs_reaching_threshold": int((counts >= tau).sum()),
        "expected_released": round(float(p_release.sum()), 1),
        "kept_share": round(float((p_release * counts).sum()) / total, 4),
    }


def corpus_rows(name: str, users: list[str], sequences: list[list[int]], n_items: int, crowd: int) -> list[dict]:
    from ml.config import DPConfig
    from ml.privacy.accounting import default_delta, plan_budget, selection_delta

    share = DPConfig().transitions_share
    delta = default_delta(len(users))
    rows = []
    for eps in EPSILONS:
        for k in PER_USER:
            # the counts' noise at their share of epsilon (independent of DP-SGD's sample rate and steps)
            plan = plan_budget(eps, delta, 0.01, 1, share, k)
            assert plan.transitions_sigma is not None
            row = support(sequences, n_items, k, plan.transitions_sigma, selection_delta(delta))
            rows.append({"corpus": name, "shoppers": crowd, "epsilon": eps, "sigma": round(plan.transitions_sigma, 3)})
            rows[-1].update(row)
            print(rows[-1], flush=True)
    return rows


def markdown(results: dict) -> str:
    m = results["machine"]
    out = [
        "# Pair support: what a thresholded DP release of the transition counts can keep (benchmarks/pair_support.py)",
        "",
        f"{m['date']}, {m['cores']} cores; {results['seconds']:.0f} s. No model is trained. Per corpus, shopper "
        "count, epsilon and pairs per shopper (`per_user`): the counts' noise multiplier sigma at the chain's "
        "share of epsilon, the release threshold tau (counts), the distinct pairs that occur and how many occur "
        "once, how many reach tau without noise, the expected number released, and the share of the counted "
        "pair occurrences held by released pairs (kept share: the most of the signal a release can pass on).",
        "",
        "| corpus | shoppers | epsilon | per_user | sigma | tau | pairs | pairs seen once | reaching tau "
        "| expected released | kept share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        out.append(
            f"| {r['corpus']} | {r['shoppers']:,} | {r['epsilon']:g} | {r['per_user']} | {r['sigma']} "
            f"| {r['threshold']} | {r['pairs']:,} | {r['pairs_count_1']:,} | {r['pairs_reaching_threshold']:,} "
            f"| {r['expected_released']:,} | {r['kept_share']:.4f} |"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="pair-support", help="result files' name in benchmarks/results")
    args = parser.parse_args()
    start = time.perf_counter()
    rows: list[dict] = []
    for folder, source in CORPORA.items():
        path = SHARED_DATA / folder
        if not path.exists():
            print(f"{path} is absent: skipped", flush=True)
            continue
        users, sequences, n_items = training_sequences(source, path)
        rows += corpus_rows(folder, users, sequences, n_items, len(users))
        if source == "recbole":
            order = np.random.default_rng(7).permutation(len(users))
            for crowd in CROWDS:
                chosen = order[:crowd]
                rows += corpus_rows(folder, [users[i] for i in chosen], [sequences[i] for i in chosen], n_items, crowd)
    results = {"machine": machine(), "seconds": time.perf_counter() - start, "rows": rows}
    write(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

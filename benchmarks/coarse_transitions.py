"""Can a transition signal survive user-level DP on the Games crowd at a coarser grain than the item?

`benchmarks/results/pair-support.md` shows that almost every (previous, next) item pair of amazon2018-games is
held by one shopper, so a thresholded DP release keeps under 1% of the counted pairs. This benchmark measures the
alternative before any model change: count transitions between item *clusters* (k-means over the items' MiniLM
vectors: public catalogue text, no privacy cost), a domain of K x K cells fixed in advance, so the Gaussian
mechanism can noise every cell and no partition selection is needed. Each shopper adds at most `per_user`
distinct cluster pairs (1 each), the same L2 sensitivity sqrt(per_user) and the same noise multiplier as the
chain's item counts at epsilon 8 (`ml.privacy.accounting.plan_budget`, the counts' share of the budget).

Rankers, each over every item, on the development protocol (each shopper's last training item held out, the
items before it as history and as the training sequences; no test item is read):
- zero-shot MiniLM (the decayed mean of the history's vectors, `ml.evaluation.baselines.ZeroShot`'s rule);
- co-occurrence, non-private (adjacent item pairs, every pair exact);
- DP item pairs (the chain's release: capped pairs, noise, partition selection at tau);
- zero-shot + w x the DP cluster-transition feature (log1p of the noised cluster -> cluster count, decayed over
  the history as the model's transition feature is), for K clusters and weights w;
- the same with the exact (non-private) cluster counts, the ceiling of the coarse signal.

No model is trained: this tells whether the coarse feature carries signal a model could weigh, not what the model
would reach. NDCG@10 over a seeded sample of cases, with a paired bootstrap interval against zero-shot.

    .venv/bin/python benchmarks/coarse_transitions.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, write  # noqa: E402

GAMES = SHARED_DATA / "amazon2018-games"
CLUSTERS = (64, 256, 1024)
WEIGHTS = (0.02, 0.05, 0.1, 0.2)
EPSILON = 8.0
PER_USER = 8
HISTORY = 10
DECAY = 0.6  # the model's TRANSITION_DECAY
ZERO_SHOT_DECAY = 0.5


def read_games(folder: Path) -> tuple[list[str], list[list[int]]]:
    """Item titles by row, and each shopper's items before the test item (the test file's history column)."""
    item_file = next(folder.glob("*.item"))
    items = pd.read_csv(item_file, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    items.columns = [c.split(":")[0] for c in items.columns]
    row_of = {item: r for r, item in enumerate(items["item_id"])}
    test = pd.read_csv(next(folder.glob("*.test.inter")), sep="\t", dtype=str, keep_default_na=False, quoting=3)
    test.columns = [c.split(":")[0] for c in test.columns]
    sequences = [[row_of[i] for i in h.split() if i in row_of] for h in test["item_id_list"]]
    return items["title"].tolist(), sequences


def encode(titles: list[str]) -> np.ndarray:
    from ml.training.encoder import load_encoder
    from ml.training.model import BiEncoder

    bert, tokenizer = load_encoder()
    model = BiEncoder(bert, n_items=1, trainable_layers=0)
    return model.encode_texts(tokenizer, titles, max_tokens=32, batch_size=256, progress=True).numpy()


def history_matrix(histories: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros((len(histories), HISTORY), dtype=np.int64)
    real = np.zeros(rows.shape, dtype=bool)
    for b, h in enumerate(histories):
        newest = h[-HISTORY:][::-1]
        rows[b, : len(newest)] = newest
        real[b, : len(newest)] = True
    return rows, real


def ndcg_at_10(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    target_score = scores[np.arange(len(targets)), targets]
    rank = (scores > target_score[:, None]).sum(axis=1)  # 0 = first; ties count in the target's favour
    return np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, n: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def cluster_counts(sequences: list[list[int]], labels: np.ndarray, k: int, per_user: int, rng) -> np.ndarray:
    """[k, k] counts of distinct (cluster, next cluster) pairs per shopper, at most `per_user` of them (random)."""
    counts = np.zeros((k, k), dtype=np.float64)
    for seq in sequences:
        c = labels[seq]
        pairs = list(dict.fromkeys((int(a), int(b)) for a, b in zip(c[:-1], c[1:], strict=False)))
        if len(pairs) > per_user:
            pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), size=per_user, replace=False))]
        for a, b in pairs:
            counts[a, b] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="development cases sampled (seeded)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="coarse-transitions")
    args = parser.parse_args()

    from scipy import sparse
    from sklearn.cluster import KMeans

    from ml.config import DPConfig
    from ml.item_tables import decayed_rows
    from ml.privacy.accounting import default_delta, plan_budget, selection_delta
    from ml.privacy.transitions import transition_feature

    start = time.perf_counter()
    titles, full = read_games(GAMES)
    n_items = len(titles)
    # development protocol: the last item before the test item is the case's target; the rest trains
    train = [h[:-1] for h in full]
    eligible = [u for u, h in enumerate(full) if len(h) >= 2]
    rng = np.random.default_rng(args.seed)
    cases = rng.choice(eligible, size=min(args.cases, len(eligible)), replace=False)
    targets = np.array([full[u][-1] for u in cases])
    rows, real = history_matrix([train[u] for u in cases])
    print(f"{n_items} items, {len(full)} shoppers, {len(cases)} cases", flush=True)

    vectors = encode(titles)
    weights = np.where(real, ZERO_SHOT_DECAY ** np.arange(HISTORY)[None, :], 0.0).astype(np.float32)
    zero_shot = np.einsum("bh,bhd->bd", weights, vectors[rows]) @ vectors.T
    results: dict[str, dict] = {}

    def record(name: str, scores: np.ndarray) -> np.ndarray:
        per_case = ndcg_at_10(scores, targets)
        low, high = paired_interval(per_case, base) if name != "zero-shot MiniLM" else (0.0, 0.0)
        results[name] = {"ndcg10": round(float(per_case.mean()), 4), "vs_zero_shot": [round(low, 4), round(high, 4)]}
        print(name, results[name], flush=True)
        return per_case

    base = ndcg_at_10(zero_shot, targets)
    record("zero-shot MiniLM", zero_shot)

    # item pairs: exact adjacent counts, and the chain's DP release
    members = {str(u) for u in range(len(train))}
    frame = pd.DataFrame(
        {
            "user_id": np.repeat([str(u) for u in range(len(train))], [len(h) for h in train]),
            "item_id": np.concatenate([np.asarray(h, dtype=np.int64) for h in train]).astype(str),
        }
    )
    frame["position"] = frame.groupby("user_id").cumcount()
    index_of = {str(i): i for i in range(n_items)}
    delta = default_delta(len(train))
    share = DPConfig().transitions_share
    plan = plan_budget(EPSILON, delta, 0.01, 1, share, PER_USER)
    exact, _ = transition_feature(
        frame, members, index_of, seed=args.seed, pairs_per_user=10**6, floor=None, sigma=None
    )
    cooc = decayed_rows(sparse.csr_matrix(exact), rows, real, DECAY)
    record("co-occurrence (non-private, item pairs)", cooc + 1e-6 * zero_shot)
    dp_items, _ = transition_feature(
        frame,
        members,
        index_of,
        seed=args.seed,
        pairs_per_user=PER_USER,
        floor=0.0,
        sigma=plan.transitions_sigma,
        threshold=plan.transitions_threshold,
    )
    results["DP item pairs released"] = {"pairs": int(dp_items.nnz)}
    for w in WEIGHTS:
        record(f"zero-shot + {w} x DP item pairs", zero_shot + w * decayed_rows(dp_items, rows, real, DECAY))

    sigma = plan.transitions_sigma * np.sqrt(PER_USER)
    for k in CLUSTERS:
        labels = KMeans(n_clusters=k, n_init=1, random_state=args.seed).fit_predict(vectors)
        counts = cluster_counts(train, labels, k, PER_USER, np.random.default_rng(args.seed))
        noised = counts + np.random.default_rng(args.seed + 1).normal(0.0, sigma, size=counts.shape)
        for label, table in (("exact", counts), ("DP", noised)):
            feature_table = np.log1p(np.maximum(table, 0.0)).astype(np.float32)  # [k, k]
            # the decayed sum over the history of each history item's cluster row, read at each item's cluster
            decays = np.where(real, DECAY ** np.arange(HISTORY)[None, :], 0.0).astype(np.float32)
            by_cluster = np.einsum("bh,bhk->bk", decays, feature_table[labels[rows]])
            feature = by_cluster[:, labels]
            for w in WEIGHTS:
                record(f"zero-shot + {w} x {label} cluster transitions (K={k})", zero_shot + w * feature)
    out = {
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 1),
        "cases": len(cases),
        "epsilon": EPSILON,
        "per_user": PER_USER,
        "sigma": plan.transitions_sigma,
        "threshold": plan.transitions_threshold,
        "delta": delta,
        "selection_delta": selection_delta(delta),
        "results": results,
    }
    lines = [
        "# Coarse transitions on the Games crowd (benchmarks/coarse_transitions.py)",
        "",
        f"{out['machine']['date']}, {out['machine']['cores']} cores, {out['seconds']:.0f} s. amazon2018-games, "
        f"development protocol, {len(cases):,} sampled cases, every item ranked. DP: epsilon {EPSILON:g} for the "
        f"counts' share ({share}) at delta {delta:.2e}: noise multiplier {plan.transitions_sigma:.3f}, "
        f"per_user {PER_USER}; item pairs released by partition selection at tau "
        f"{plan.transitions_threshold:.2f} ({results['DP item pairs released']['pairs']} pairs); cluster pairs "
        "noised on every cell of the fixed K x K domain. No model is trained: the weight w is a grid, not fitted.",
        "",
        "| ranker | NDCG@10 | minus zero-shot, 95% paired bootstrap |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        if "ndcg10" in r:
            low, high = r["vs_zero_shot"]
            lines.append(f"| {name} | {r['ndcg10']:.4f} | [{low:+.4f}, {high:+.4f}] |")
    write(args.out, out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

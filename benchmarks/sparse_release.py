"""What the sparse release of the item-transition counts (Gaussian partition selection, ml.privacy.pair_counts)
costs as the catalogue grows, against the dense release it replaced (noise on every cell of n_items x n_items).

Synthetic shoppers: 50,000 of them, each a walk of 2 to 9 items (up to 8 pairs) drawn by a Zipf-like popularity
(item i with weight 1 / (i + 1)), at 20k, 100k and 200k items. Noise and threshold from the default DP plan
(target epsilon 8, transitions_share 0.85, 8 pairs a shopper, delta = n_users ** -1.1). Each size runs in a fresh
process so that its peak resident memory is its own:
- `release`: capped_pairs + release_counts (the DP mechanism itself);
- `feature`: transition_feature end to end (pandas grouping, the release, the CSR table, each shopper's own
  entries, floor 1.5 noise deviations), what the training stage calls.
The dense release is main's `noisy_counts` before this change (git show b7eca46:ml/privacy/accounting.py), run at
20k items only (its table alone is n_items ** 2 * 4 bytes). Also the threshold and the counts' epsilon at other
splits of delta (SELECTION_DELTA_SHARE).

Writes benchmarks/results/sparse-release.json and .md. Run: `PYTHONPATH=. python benchmarks/sparse_release.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, measure, write  # noqa: E402

from ml.privacy.accounting import (  # noqa: E402
    SELECTION_DELTA_SHARE,
    composed_epsilon,
    default_delta,
    plan_budget,
    selection_threshold,
)

SHOPPERS, PER_USER, TARGET, SHARE = 50_000, 8, 8.0, 0.85
DENSE_COMMIT = "b7eca46"  # the last commit with the dense release


def _plan() -> tuple[float, float, float]:
    """(sigma, tau, delta) of the default plan for SHOPPERS shoppers."""
    delta = default_delta(SHOPPERS)
    plan = plan_budget(TARGET, delta, 1.0, 1, SHARE, PER_USER)
    assert plan.transitions_sigma is not None and plan.transitions_threshold is not None
    return plan.transitions_sigma, plan.transitions_threshold, delta


def walks(n_items: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    lengths = rng.integers(2, PER_USER + 2, size=SHOPPERS)
    items = rng.choice(n_items, size=int(lengths.sum()), p=weights / weights.sum())
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [items[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def one(kind: str, n_items: int) -> dict[str, Any]:
    """One measurement, in this process."""
    import psutil

    from ml.privacy.pair_counts import capped_pairs, pair_keys, release_counts

    sigma, tau, _ = _plan()
    sequences = walks(n_items)
    out: dict[str, Any] = {"kind": kind, "n_items": n_items}
    if kind == "feature":
        import pandas as pd

        from ml.privacy.transitions import transition_feature

        frame = pd.DataFrame(
            [(f"u{u}", p, f"i{i}") for u, seq in enumerate(sequences) for p, i in enumerate(seq)],
            columns=["user_id", "position", "item_id"],
        )
        index_of = {f"i{i}": i for i in range(n_items)}
        members = set(frame["user_id"])
        out["rss_before_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        with measure(out):
            table, own = transition_feature(
                frame, members, index_of, seed=0, pairs_per_user=PER_USER, floor=1.5, sigma=sigma, threshold=tau
            )
        out.update(released=int(table.nnz), own_entries=sum(len(v) for e in own.values() for v in e.values()))
    elif kind == "release":
        out["rss_before_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        with measure(out):
            pairs = capped_pairs(sequences, n_items, PER_USER, np.random.default_rng(1))
            start = time.perf_counter()
            released = release_counts(pairs, n_items, PER_USER, sigma, np.random.default_rng(1), threshold=tau)
            out["release_counts_seconds"] = round(time.perf_counter() - start, 3)
        distinct = len(np.unique(pair_keys(pairs, n_items)))
        out.update(pairs=sum(map(len, pairs)), distinct=distinct, released=len(released.keys))
    elif kind == "dense":
        source = subprocess.run(
            ["git", "show", f"{DENSE_COMMIT}:ml/privacy/accounting.py"], capture_output=True, text=True, check=True
        ).stdout
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dense_accounting.py"
            path.write_text(source)
            spec = importlib.util.spec_from_file_location("dense_accounting", path)
            assert spec is not None and spec.loader is not None
            dense = importlib.util.module_from_spec(spec)
            sys.modules["dense_accounting"] = dense  # its dataclasses look their module up
            spec.loader.exec_module(dense)
        out["rss_before_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        with measure(out):
            pairs = dense.capped_pairs(sequences, n_items, PER_USER, np.random.default_rng(1))
            counts = dense.noisy_counts(pairs, n_items, PER_USER, sigma, np.random.default_rng(1))
            kept = int(np.count_nonzero(counts > tau))
        out.update(matrix_mb=round(counts.nbytes / 2**20, 1), cells_above_threshold=kept)
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    return out


def in_fresh_process(kind: str, n_items: int) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--one", kind, str(n_items)], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - start, 1)
    return result


def _counts_epsilon(sigma: float, delta: float, share: float) -> float:
    """The counts' epsilon at the full `delta` when `share` of it goes to the threshold (composed_epsilon's rule)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, 1.0, 1)]
    return float(accountant.get_epsilon(delta=delta * (1 - share))) - math.log1p(-delta * share)


def delta_splits() -> list[dict[str, Any]]:
    """For shares of delta to the threshold: at the plan's epsilon for the counts, the noise the rest of delta needs
    and the threshold tau (in counts) that follows."""
    sigma, _, delta = _plan()
    target = _counts_epsilon(sigma, delta, SELECTION_DELTA_SHARE)
    assert target == composed_epsilon(None, 1.0, 1, sigma, delta)
    rows = []
    for share in (0.05, 0.1, 0.25, 0.4, SELECTION_DELTA_SHARE, 0.6, 0.75, 0.9):
        lo, hi = 0.1 * sigma, 10 * sigma  # the smallest sigma with epsilon <= target, by bisection
        while hi - lo > 1e-5 * hi:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _counts_epsilon(mid, delta, share) > target else (lo, mid)
        rows.append(
            {
                "share": share,
                "epsilon_transitions": round(target, 4),
                "sigma": round(hi, 4),
                "noise_std": round(hi * math.sqrt(PER_USER), 3),
                "tau": round(selection_threshold(hi, PER_USER, share * delta), 3),
            }
        )
    return rows


def markdown(data: dict[str, Any]) -> str:
    m, p = data["machine"], data["plan"]
    lines = [
        "# Sparse release of the transition counts (Gaussian partition selection)",
        "",
        f"{m['date']}, {m['cpu']}, {m['cores']} cores (shared with other work: times are indicative); "
        "`benchmarks/sparse_release.py`. "
        f"{SHOPPERS:,} synthetic shoppers, walks of 2 to {PER_USER + 1} items by Zipf-like popularity; the default "
        f"plan: sigma {p['sigma']:.3f}, noise std {p['noise_std']:.2f}, threshold tau {p['tau']:.2f} counts, "
        f"delta {p['delta']:.3g} (selection delta {p['selection_delta']:.3g}). Each row in a fresh process; peak "
        "RSS is the whole process's (Python, numpy, pandas included).",
        "",
        "| items | path | seconds | of which release_counts | RSS before MB | peak RSS MB | pairs | distinct pairs "
        "| released |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        lines.append(
            f"| {r['n_items']:,} | {r['kind']} | {r['seconds']} | {r.get('release_counts_seconds', '')} | "
            f"{r['rss_before_mb']} | {r['peak_rss_mb']} | {r.get('pairs', '')} | "
            f"{r.get('distinct', '')} | {r.get('released', r.get('cells_above_threshold', ''))} |"
        )
    lines += [
        "",
        "`release`: capped_pairs + release_counts. `feature`: transition_feature end to end (with each shopper's own "
        "entries). `dense`: the replaced release (noise on every cell; its table alone "
        + ", ".join(f"{r['matrix_mb']} MB at {r['n_items']:,} items" for r in data["runs"] if r["kind"] == "dense")
        + "; the last column counts its cells above tau, which it did not threshold), not run above 20k items "
        "(n_items ** 2 * 4 bytes: 149 GiB at 200k).",
        "",
        "## The split of delta (SELECTION_DELTA_SHARE)",
        "",
        f"At the plan's epsilon for the counts ({data['splits'][0]['epsilon_transitions']}), the noise that the delta "
        "left to the accountant needs, and the threshold that the share to the selection gives.",
        "",
        "| share of delta to the threshold | sigma | noise std | tau (counts) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['share']} | {r['sigma']} | {r['noise_std']} | {r['tau']} |" for r in data["splits"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="*", default=[20_000, 100_000, 200_000])
    parser.add_argument("--dense-items", type=int, nargs="*", default=[20_000])
    parser.add_argument("--one", nargs=2, metavar=("KIND", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    sigma, tau, delta = _plan()
    runs = [in_fresh_process(kind, n) for n in args.items for kind in ("release", "feature")]
    runs += [in_fresh_process("dense", n) for n in args.dense_items]
    data = {
        "machine": machine(),
        "plan": {
            "sigma": sigma,
            "noise_std": sigma * math.sqrt(PER_USER),
            "tau": tau,
            "delta": delta,
            "selection_delta": SELECTION_DELTA_SHARE * delta,
            "shoppers": SHOPPERS,
            "per_user": PER_USER,
        },
        "runs": runs,
        "splits": delta_splits(),
    }
    write("sparse-release", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()

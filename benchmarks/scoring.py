"""In-process latency of the recommendation scoring: `Champion.top_for_histories`, no HTTP, one thread.

A model over random unit item vectors with every behavioural weight non-zero (the closest-history-item
similarity included, the costliest part), at the demo's size and at 10,000 items; per request the exact
top-10 of one shopper (batch 1) and of a batch of 8 shoppers (what the scoring thread groups under load).
`--dump FILE` also writes the served scores and top-10 of fixed histories (behaviour checks across changes).

    .venv/bin/python benchmarks/scoring.py --label after
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine  # noqa: E402

SIZES = (1000, 10_000)  # the demo catalogue's order of size, and the serving benchmark's 10k world
HISTORY = 10
FEATURE_WEIGHTS = [0.4, -0.8, 0.3, 0.2, 0.5, 1.5, 0.6]
# entries per row of the random item x item tables: the model's tables are sparse (the released transition pairs,
# ml.privacy.transitions; the lexical neighbour lists, ml.item_tables)
TRANSITIONS_PER_ITEM = 20
LEXICAL_PER_ITEM = 50


def build(n_items: int, seed: int, bert_and_tokenizer: Any, tables: bool) -> Any:
    """A Recommender over `n_items` random unit vectors, every feature weight non-zero; `tables` installs
    the item x item transition and lexical tables (n_items^2 floats each)."""
    import pandas as pd
    import torch

    from ml.training.model import BiEncoder
    from ml.training.recommender import Recommender, RecommenderSettings

    rng = np.random.default_rng(seed)
    n_cat, n_brand = max(5, n_items // 250), max(10, n_items // 50)
    cats, brands = np.arange(n_items) % n_cat, rng.integers(0, n_brand, size=n_items)
    items = pd.DataFrame(
        {
            "item_id": [f"it{i:06d}" for i in range(n_items)],
            "title": [f"item {i} of brand {b}" for i, b in enumerate(brands)],
            "brand": [f"b{b}" for b in brands],
            "category": [f"c{c}" for c in cats],
        }
    )
    bert, tokenizer = bert_and_tokenizer
    model = BiEncoder(
        bert,
        n_items=n_items,
        trainable_layers=0,
        max_history=HISTORY,
        item_category=torch.as_tensor(cats),
        item_brand=torch.as_tensor(brands),
    )
    vectors = rng.normal(size=(n_items, model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with torch.no_grad():
        model.item_table.copy_(torch.from_numpy(vectors))
        model.item_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, size=(n_items, 1)).astype(np.float32)))
        model.recency.weight.copy_(torch.from_numpy(rng.normal(size=(HISTORY, 1)).astype(np.float32)))
        model.category_transition.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        model.feature_weights.weight.copy_(torch.tensor(FEATURE_WEIGHTS))
    if tables:
        model.set_transitions(sparse_rows(n_items, TRANSITIONS_PER_ITEM, seed + 1))
        model.set_lexical(sparse_rows(n_items, LEXICAL_PER_ITEM, seed + 2))
    settings = RecommenderSettings(temperature=0.05, max_history=HISTORY, max_query_tokens=16, max_item_tokens=16)
    return Recommender(model, tokenizer, items, settings)


def sparse_rows(n_items: int, per_row: int, seed: int) -> sparse.csr_matrix:
    """A random sparse item x item table with `per_row` entries in each row, as the model's tables are sparse."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_items), per_row)
    cols = rng.integers(0, n_items, size=n_items * per_row)
    values = rng.random(n_items * per_row, dtype=np.float32)
    return sparse.csr_matrix((values, (rows, cols)), shape=(n_items, n_items))


def histories(n_items: int, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = [[int(r) for r in rng.integers(0, n_items, size=int(rng.integers(1, HISTORY + 4)))] for _ in range(n)]
    out[0] = [out[1][0], *out[1]]  # a repeated item
    return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {f"p{p}": round(float(np.percentile(ms, p)), 3) for p in (50, 95, 99)}


def time_scoring(champion: Any, n_items: int, batch: int, n_requests: int, seed: int) -> dict[str, float]:
    hs = histories(n_items, n_requests * batch, seed)
    groups = [hs[i : i + batch] for i in range(0, len(hs), batch)]
    for g in groups[:20]:
        champion.top_for_histories(g, 10)
    seconds, cpu = [], []
    for g in groups:
        t0, c0 = time.perf_counter(), time.thread_time()
        champion.top_for_histories(g, 10)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    # CPU time of the calling thread: what the call costs, whatever else the machine runs meanwhile
    return {**percentiles(seconds), "cpu_p50": round(float(np.median(cpu)) * 1000, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="current", help="the row's label (say, before / after a change)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dump", type=Path, help="also write served scores and top-10 of fixed histories here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of scoring.json and scoring.md")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from ml.serving.champion import build_champion
    from ml.training.encoder import load_encoder

    torch.set_num_threads(1)
    bert_and_tokenizer = load_encoder()
    rows: list[dict[str, Any]] = []
    dump: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        for n_items in SIZES:
            rec = build(n_items, seed=n_items, bert_and_tokenizer=bert_and_tokenizer, tables=n_items <= 1000)
            champion = build_champion(rec, "bench", "1", {}, Path(tmp))
            for batch in (1, 8):
                load = os.getloadavg()[0]
                row = {
                    "items": n_items,
                    "batch": batch,
                    "label": args.label,
                    **time_scoring(champion, n_items, batch, args.requests, seed=batch),
                    "load_before": round(load, 1),
                    "load_after": round(os.getloadavg()[0], 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            fixed = histories(n_items, 12, seed=99)
            tops = champion.top_for_histories(fixed, 10)
            dump[f"rows_{n_items}"] = np.stack([r for r, _ in tops])
            dump[f"scores_{n_items}"] = np.stack([s for _, s in tops])
            dump[f"full_{n_items}"] = champion.history_scores(fixed[:4])
            dump[f"vector_{n_items}"] = champion.history_vector(fixed[2])
    if args.dump:
        np.savez(args.dump, **dump)
    if args.no_write:
        return 0
    path = args.results / "scoring.json"
    old = json.loads(path.read_text()) if path.exists() else {"runs": []}
    old["runs"] = [r for r in old["runs"] if r["label"] != args.label] + rows
    old["machine"] = machine()
    path.write_text(json.dumps(old, indent=2) + "\n")
    lines = [
        "# Recommendation scoring in process (benchmarks/scoring.py)",
        "",
        "`Champion.top_for_histories`: the exact top-10, one thread, no HTTP; ms per call "
        f"({args.requests} calls after 20 warm-up ones). Every feature weight is non-zero; the 1,000-item model "
        "also has the item x item tables. Load: the machine's 1-minute load average before and after the row "
        "(other jobs share the cores: compare rows run back to back, not with other files' numbers).",
        "",
        "| label | items | shoppers per call | CPU ms p50 | wall p50 ms | wall p95 ms | wall p99 ms | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {r['items']:,} | {r['batch']} | {r.get('cpu_p50', '?')} | {r['p50']} | {r['p95']} "
        f"| {r['p99']} | {r.get('load_before', '?')}→{r.get('load_after', '?')} |"
        for r in old["runs"]
    ]
    m = old["machine"]
    lines += ["", f"Machine: {m['cores']} cores, {m['cpu']}, torch {m['versions'].get('torch')}, {m['date']}."]
    (args.results / "scoring.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

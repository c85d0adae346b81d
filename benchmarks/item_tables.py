"""Sparse BM25 neighbour lists (ml.item_tables.lexical_neighbours) against the dense lexical similarity.

    python benchmarks/item_tables.py [--sizes 20000 100000 200000] [--full-up-to 100000] [--sample 20000]

1. On amazon2018-industrial (item_texts of its catalogue, the train stage's inputs): for several top_n, how much of
   the dense [n, n] similarity the sparse table keeps (its share of the dense mass, each row's dense top-10 found
   in its sparse top-10, and the entries of the dense top-10 kept exactly), and the time of each.
2. On synthetic catalogues (ml.data.synthetic_catalog, the demo shop's titles and descriptions) of each size, in a
   fresh process each: the time and peak memory of lexical_neighbours at the module's TOP_N, against the dense
   table's size. Sizes above --full-up-to items are timed on their first --sample titles against the whole
   catalogue's index (per title the same `BM25Index.top` call lexical_neighbours makes, so the loop's time
   scales by n / sample), and the table's peak memory is estimated from its entries (the same estimate is given
   for the full runs, to compare with their measured peak): a full run there would hold one of the machine's
   two shared cores for many minutes.
Writes benchmarks/results/item-tables.json and item-tables.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, write  # noqa: E402

TOP_NS = (10, 25, 50, 100, 200)
K = 10  # the row top-k compared


def dense_similarity(titles: list[str], texts: list[str]) -> Any:
    """The dense [n, n] lexical similarity the neighbour lists replace: each title's BM25 row over every item's
    text divided by its largest score, the mean of both directions."""
    import numpy as np

    from ml.lexical import BM25Index, words

    rows = BM25Index(texts).scores([words(t) for t in titles], dtype=np.float32)
    top = rows.max(axis=1, keepdims=True)
    rows = np.divide(rows, top, out=np.zeros_like(rows), where=top > 0)
    return (rows + rows.T) / 2


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def quality() -> dict:
    import numpy as np

    from ml.data.amazon2018 import load_items
    from ml.item_tables import TOP_N, lexical_neighbours
    from ml.topk import top_k
    from ml.training.encoder import item_texts

    folder = SHARED_DATA / "amazon2018-industrial"
    items = load_items(next(folder.glob("*.item.json")))
    titles, texts = items["title"].fillna("").astype(str).tolist(), item_texts(items)
    start = time.perf_counter()
    dense = dense_similarity(titles, texts)
    dense_s = time.perf_counter() - start
    dense_top = top_k(dense, K)
    dense_kept = np.take_along_axis(dense, dense_top, axis=1) > 0  # only positive entries are neighbours
    rows = []
    for top_n in TOP_NS:
        start = time.perf_counter()
        table = lexical_neighbours(titles, texts, top_n=top_n)
        seconds = time.perf_counter() - start
        sparse_dense = table.toarray()
        sparse_top = top_k(sparse_dense, K)
        found = np.array([np.isin(d, s) for d, s in zip(dense_top, sparse_top, strict=True)]) & dense_kept
        exact = np.isclose(
            np.take_along_axis(sparse_dense, dense_top, axis=1), np.take_along_axis(dense, dense_top, axis=1)
        )
        rows.append(
            {
                "top_n": top_n,
                "seconds": seconds,
                "entries_per_item": table.nnz / len(titles),
                "mass_kept": float(sparse_dense.sum() / dense.sum()),
                "top10_found": float(found.sum() / dense_kept.sum()),
                "top10_exact": float((exact & dense_kept).sum() / dense_kept.sum()),
                "mb": (table.data.nbytes + table.indices.nbytes + table.indptr.nbytes) / 2**20,
            }
        )
    return {
        "corpus": "amazon2018-industrial",
        "n_items": len(titles),
        "dense_seconds": dense_s,
        "dense_positive_per_item": float((dense > 0).sum() / len(titles)),
        "dense_mb": dense.nbytes / 2**20,
        "chosen_top_n": TOP_N,
        "rows": rows,
    }


def one_size(n: int, full_up_to: int, sample: int) -> dict:
    """Run in a fresh process: the catalogue, then lexical_neighbours (or its per-title loop on `sample` titles)."""
    import gc

    import numpy as np

    from ml.data.synthetic_behaviour import Behaviour
    from ml.data.synthetic_catalog import make_catalog
    from ml.item_tables import TOP_N, lexical_neighbours
    from ml.lexical import BM25Index, words
    from ml.training.encoder import item_texts

    items = make_catalog(np.random.default_rng(0), n, Behaviour()).items
    titles, texts = items["title"].tolist(), item_texts(items)
    del items
    gc.collect()
    before = _rss_mb()
    out: dict = {"n_items": n, "top_n": TOP_N, "rss_before_mb": before, "dense_float32_mb": n * n * 4 / 2**20}
    if n <= full_up_to:
        start = time.perf_counter()
        table = lexical_neighbours(titles, texts)
        out.update(
            full_run=True,
            seconds=time.perf_counter() - start,
            peak_above_inputs_mb=_peak_mb() - before,
            entries=int(table.nnz),
            table_mb_estimate=_table_mb_estimate(table.nnz / 2),
            table_mb=(table.data.nbytes + table.indices.nbytes + table.indptr.nbytes) / 2**20,
        )
        return out
    start = time.perf_counter()
    index = BM25Index(texts)
    _ = index.postings
    index_s = time.perf_counter() - start
    start, kept = time.perf_counter(), 0
    for title in titles[:sample]:
        kept += len(index.top(words(title), TOP_N)[0])
    loop_s = time.perf_counter() - start
    forward_entries = kept * n / sample
    out.update(
        full_run=False,
        sample=sample,
        index_seconds=index_s,
        loop_seconds_sample=loop_s,
        seconds=index_s + loop_s * n / sample,
        peak_above_inputs_mb=_peak_mb() - before,
        entries_forward_estimate=forward_entries,
        table_mb_estimate=_table_mb_estimate(forward_entries),
    )
    return out


def _table_mb_estimate(forward_entries: float) -> float:
    """The table's memory at its peak, from the forward table's entries: while symmetrizing, the forward csr,
    its transpose and their sum (at most twice the entries) are held together, each entry float32 + int32 index
    (8 bytes), plus the per-title arrays the forward csr is built from: about 5 x forward entries x 8 bytes."""
    return 5 * forward_entries * 8 / 2**20


def dense_chunk_seconds(n: int, rows: int = 2000) -> dict:
    """The chunked dense alternative (BM25Index.scores of a chunk, then a partition per row) on `rows` titles of
    the n-item synthetic catalogue, against the per-title posting-list loop on the same titles."""
    import numpy as np

    from ml.data.synthetic_behaviour import Behaviour
    from ml.data.synthetic_catalog import make_catalog
    from ml.item_tables import TOP_N
    from ml.lexical import BM25Index, words
    from ml.training.encoder import item_texts

    items = make_catalog(np.random.default_rng(0), n, Behaviour()).items
    index = BM25Index(item_texts(items))
    queries = [words(t) for t in items["title"][:rows]]
    chunk = max(1, 2**24 // n)
    start = time.perf_counter()
    for lo in range(0, rows, chunk):
        scores = index.scores(queries[lo : lo + chunk], dtype=np.float32, block=chunk)
        np.partition(scores, n - TOP_N, axis=1)
    dense_s = time.perf_counter() - start
    _ = index.postings
    start = time.perf_counter()
    for q in queries:
        index.top(q, TOP_N)
    return {
        "n_items": n,
        "titles": rows,
        "dense_chunks_seconds": dense_s,
        "posting_lists_seconds": time.perf_counter() - start,
    }


def markdown(res: dict) -> str:
    q = res["quality"]
    lines = [
        "# Item x item tables: sparse BM25 neighbour lists",
        "",
        f"Written by `benchmarks/item_tables.py` on {res['machine']['date']} ({res['machine']['cores']} cores, "
        f"{res['machine']['memory_gb']} GB; shared with other work, so times are upper bounds).",
        "",
        f"## Closeness to the dense similarity: {q['corpus']} ({q['n_items']} items)",
        "",
        f"Dense [n, n] (`dense_similarity`, what the model used before the neighbour lists): {q['dense_seconds']:.1f} s, {q['dense_mb']:.0f} MB, "
        f"{q['dense_positive_per_item']:.0f} positive entries per item. Sparse (`ml.item_tables.lexical_neighbours`) "
        f"at each top_n; chosen: {q['chosen_top_n']}. Mass kept: sum of the sparse table / sum of the dense one "
        "(a direction outside the other item's top_n counts as 0). Top-10 found: of each row's dense top-10 "
        "(positive entries), the share in the row's sparse top-10; exact: the share whose sparse value is the dense value.",
        "",
        "| top_n | entries/item | mass kept | top-10 found | top-10 exact | seconds | MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['top_n']} | {r['entries_per_item']:.1f} | {r['mass_kept']:.3f} | {r['top10_found']:.3f} | "
            f"{r['top10_exact']:.3f} | {r['seconds']:.1f} | {r['mb']:.1f} |"
        )
    lines += [
        "",
        f"## Time and memory on synthetic catalogues (top_n {q['chosen_top_n']})",
        "",
        "Each size in a fresh process. Peak above inputs: the process's peak RSS less its RSS once the titles and "
        f"texts were built. Sizes over {res['full_up_to']}: the index and the per-title loop on the first "
        f"{res['sample']} titles are measured, the loop's time scaled by n / sample (marked ~), and the peak is "
        "the index and that loop only; the table's peak is then estimated from its entries (5 x forward entries x "
        "8 bytes, given beside the measured peak of the full runs too).",
        "",
        "| items | full run | seconds | peak above inputs (MB) | table (MB) | table peak estimate (MB) "
        "| dense float32 table (MB) |",
        "|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["scale"]:
        mark = "" if r["full_run"] else "~"
        table_mb = f"{r['table_mb']:.0f}" if r["full_run"] else "-"
        lines.append(
            f"| {r['n_items']} | {'yes' if r['full_run'] else 'no'} | {mark}{r['seconds']:.0f} | "
            f"{r['peak_above_inputs_mb']:.0f} | {table_mb} | {r['table_mb_estimate']:.0f} | {r['dense_float32_mb']:.0f} |"
        )
    d = res["dense_chunks"]
    lines += [
        "",
        f"Chunked dense scoring (`BM25Index.scores` of {2**24 // d['n_items']} titles at a time, then a partition "
        f"per row) on {d['titles']} titles of the {d['n_items']}-item catalogue: {d['dense_chunks_seconds']:.1f} s, "
        f"against {d['posting_lists_seconds']:.1f} s for the per-title posting lists `lexical_neighbours` uses.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    parser.add_argument("--full-up-to", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.full_up_to, args.sample)))
        return
    scale = []
    for n in args.sizes:
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--full-up-to",
                str(args.full_up_to),
                "--sample",
                str(args.sample),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        scale.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(scale[-1], flush=True)
    res = {
        "machine": machine(),
        "sample": args.sample,
        "full_up_to": args.full_up_to,
        "quality": quality(),
        "scale": scale,
        "dense_chunks": dense_chunk_seconds(args.sizes[0]),
    }
    write("item-tables", res, markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

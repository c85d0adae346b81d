"""The exported query encoder: what int8 costs in ranking quality against fp32 ONNX and torch, and what it saves.

For each seed, a model is trained on the synthetic shop with the demo's settings (`vetted demo`'s chain:
ingest, features, train; fewer shoppers and steps to keep it short, see --n-users and --max-steps), saved with its
exported encoders (`Recommender.save`). The same loaded model then encodes queries three ways: the torch encoder,
the fp32 ONNX file and the int8 one (each one query at a time, as serving does, no cache), and is measured on

- the synthetic hold-out's search cases: the served search ranking (`ml.evaluation.search.search_rankings`: the
  query tower blended with the shopper's history, fused with BM25) and its dense side alone, NDCG@10 against the
  item the shopper then chose;
- the Crowdflower queries (../shared/data/crowdflower-search, evaluation only): retrieval from all of the file's
  products by the model's query tower (query vector . product vector, the products encoded by the model's item
  tower with torch), graded NDCG@10 (`ml.evaluation.metrics.graded_ndcg`; queries with no relevant product
  left out);

with paired bootstrap intervals of int8 - fp32 and int8 - torch (resampling shoppers on the synthetic cases, queries
on Crowdflower). Target (issue 20): int8 loses under 1% NDCG@10 against fp32. Also the cosine of each query's int8
and fp32 vectors to torch's (what `ml.search.onnx_encoder.MIN_COSINE` is set against), and single-query encode
latency per runtime on one thread (tokenization included, every Crowdflower query, several passes).

    .venv/bin/python benchmarks/search_encoder.py                  # seeds 7, 8, 9
    .venv/bin/python benchmarks/search_encoder.py --seeds 7 --max-steps 20

Writes benchmarks/results/search-encoder.json and search-encoder.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, machine, new_context, write  # noqa: E402

RUNTIMES = ("torch", "fp32", "int8")
K = 10
LATENCY_PASSES = 5
LATENCY_QUERIES = 200  # synthetic queries timed when the Crowdflower file is absent
TARGET_LOSS = 0.01  # int8 may lose under 1% NDCG@10 against fp32 (issue 20)


def train(seed: int, n_users: int, max_steps: int) -> tuple[Path, Path]:
    """(the saved model's folder, the search cases file) of a synthetic run trained with the demo's settings."""
    from ml.pipeline import stages

    ctx = new_context(
        f"search-encoder-{seed}",
        {"source": "synthetic", "seed": seed, "n_users": n_users, "max_steps": max_steps, "slice_reports": False},
    )
    for stage in ("ingest", "features", "train"):
        getattr(stages, stage)(ctx)
    return Path(ctx.read("train")["model_dir"]), ctx.path(stages.SEARCH_CASES)


def encoders(folder: Path) -> dict[str, Any]:
    """The saved model loaded once, and a function per runtime giving [n, D] query vectors one query at a time."""
    from ml.search.onnx_encoder import QueryEncoder, onnx_path
    from ml.training.recommender import Recommender

    rec = Recommender.load(folder, query_encoder="torch")
    max_tokens = rec.settings.max_query_tokens
    onnx = {p: QueryEncoder(onnx_path(folder, p), rec.tokenizer, max_tokens, precision=p) for p in ("fp32", "int8")}

    def torch_one_by_one(queries: list[str]) -> np.ndarray:
        return np.vstack([rec.torch_query_vectors([q]) for q in queries])

    return {
        "rec": rec,
        "encode": {"torch": torch_one_by_one, "fp32": onnx["fp32"].encode, "int8": onnx["int8"].encode},
        "onnx": onnx,
    }


def paired(values: dict[str, np.ndarray], units: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean per runtime, and int8 - fp32, int8 - torch, fp32 - torch with 95% paired bootstrap intervals."""
    from ml.evaluation.bootstrap import hold_out, interval, shopper_resamples

    resamples = shopper_resamples(units, seed=seed)
    itself = hold_out(resamples)
    out: dict[str, Any] = {"mean": {r: float(itself.means(v)[0]) for r, v in values.items()}, "diff": {}}
    for a, b in (("int8", "fp32"), ("int8", "torch"), ("fp32", "torch")):
        diff = values[a] - values[b]
        lower, upper = interval(resamples.means(diff))
        base = out["mean"][b]
        out["diff"][f"{a}-{b}"] = {
            "value": float(itself.means(diff)[0]),
            "lower": lower,
            "upper": upper,
            "relative": float(itself.means(diff)[0]) / base if base else None,
        }
    return out


def synthetic(cases_file: Path, enc: dict[str, Any], seed: int) -> dict[str, Any]:
    import pandas as pd

    from ml.evaluation.metrics import per_case_metrics
    from ml.evaluation.search import search_rankings

    rec = enc["rec"]
    cases = pd.read_parquet(cases_file)
    cases = cases[cases["item_id"].isin(rec.index_of)].reset_index(drop=True)
    cases = cases.assign(history=[list(h) for h in cases["history"]])
    targets = cases["item_id"].tolist()
    served: dict[str, np.ndarray] = {}
    dense: dict[str, np.ndarray] = {}
    for runtime in RUNTIMES:
        rec.query_encoder = None if runtime == "torch" else enc["onnx"][runtime]
        served[runtime] = per_case_metrics(search_rankings(rec, cases, K), targets, K)["ndcg"].to_numpy(float)
        dense[runtime] = per_case_metrics(search_rankings(rec, cases, K, dense_only=True), targets, K)["ndcg"].to_numpy(
            float
        )
    rec.query_encoder = None
    units = cases["user_id"].astype(str).to_numpy()
    return {
        "n_cases": len(cases),
        "n_shoppers": int(len(set(units))),
        "served": paired(served, units, seed),
        "dense_only": paired(dense, units, seed),
        "queries": cases["query"].astype(str).tolist(),
    }


def crowdflower(enc: dict[str, Any], seed: int) -> dict[str, Any]:
    from ml.data.crowdflower import load_judgments
    from ml.evaluation.metrics import graded_ndcg
    from ml.topk import top_k

    path = SHARED_DATA / "crowdflower-search"
    if not path.exists():
        return {"skipped": f"{path} is absent"}
    judgments = load_judgments(path)
    rec = enc["rec"]
    products = judgments.products
    items = rec.model.encode_texts(rec.tokenizer, products["text"].tolist(), rec.settings.max_item_tokens).numpy()
    ids = products["product_id"].tolist()
    queries = [q for q in judgments.queries if any(g > 0 for g in judgments.gains(q).values())]
    ndcg: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}
    for runtime in RUNTIMES:
        vectors[runtime] = enc["encode"][runtime](queries)
        top = top_k(vectors[runtime] @ items.T, K)
        ndcg[runtime] = np.array(
            [graded_ndcg([ids[j] for j in row], judgments.gains(q), K) for q, row in zip(queries, top, strict=True)]
        )
    return {
        "n_queries": len(queries),
        "n_products": len(ids),
        "retrieval": paired(ndcg, np.array(queries), seed),
        "queries": queries,
    }


def cosines(enc: dict[str, Any], queries: list[str]) -> dict[str, Any]:
    """Per runtime, the cosine of each query's vector to the torch encoder's: min, 1st percentile, median."""
    reference = enc["encode"]["torch"](queries)
    out = {}
    for precision in ("fp32", "int8"):
        got = enc["encode"][precision](queries)
        cos = (got * reference).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        out[precision] = {
            "min": float(cos.min()),
            "p01": float(np.quantile(cos, 0.01)),
            "median": float(np.median(cos)),
            "n_queries": len(queries),
        }
    return out


def latency(enc: dict[str, Any], queries: list[str]) -> dict[str, Any]:
    """Single-query encode time per runtime on one thread (torch's intra-op threads 1; ONNX Runtime's sessions
    have one), passes interleaved so that a busy moment of the shared machine hits every runtime alike."""
    import torch

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for runtime in RUNTIMES:  # warm-up
        enc["encode"][runtime](queries[:5])
    for _ in range(LATENCY_PASSES):
        for query in queries:
            for runtime in RUNTIMES:
                start = time.perf_counter()
                enc["encode"][runtime]([query])
                times[runtime].append(time.perf_counter() - start)
    return {
        r: {"median_ms": 1000 * float(np.median(t)), "p99_ms": 1000 * float(np.quantile(t, 0.99)), "n": len(t)}
        for r, t in times.items()
    }


def run(seed: int, n_users: int, max_steps: int) -> dict[str, Any]:
    print(f"seed {seed}: training ...", flush=True)
    model_dir, cases_file = train(seed, n_users, max_steps)
    enc = encoders(model_dir)
    print(f"seed {seed}: measuring ...", flush=True)
    synth = synthetic(cases_file, enc, seed)
    cf = crowdflower(enc, seed)
    synth_queries, cf_queries = synth.pop("queries"), cf.pop("queries", [])
    timed = cf_queries or synth_queries[:LATENCY_QUERIES]  # real queries where there are some
    return {
        "seed": seed,
        "synthetic": synth,
        "crowdflower": cf,
        "cosine": cosines(enc, synth_queries + cf_queries),
        "latency": latency(enc, timed),
        "sizes_mb": {p: round(e.path.stat().st_size / 2**20, 1) for p, e in enc["onnx"].items()},
    }


# ---------------------------------------------------------------------------------------------- the report
def _fmt_diff(d: dict[str, Any]) -> str:
    rel = "" if d["relative"] is None else f" ({100 * d['relative']:+.2f}%)"
    return f"{d['value']:+.4f}{rel} [{d['lower']:+.4f}, {d['upper']:+.4f}]"


def _table(title: str, runs: list[dict[str, Any]], pick) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| seed | cases | torch | fp32 ONNX | int8 ONNX | int8 - fp32 [95% CI] | int8 - torch [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        part, n = pick(r)
        if part is None:
            continue
        m, d = part["mean"], part["diff"]
        lines.append(
            f"| {r['seed']} | {n} | {m['torch']:.4f} | {m['fp32']:.4f} | {m['int8']:.4f} | "
            f"{_fmt_diff(d['int8-fp32'])} | {_fmt_diff(d['int8-torch'])} |"
        )
    return [*lines, ""]


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):+.2f}% (seeds: {', '.join(f'{v:+.2f}%' for v in values)})"


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    m = results["machine"]
    lines = [
        f"# Search query encoder: int8 vs fp32 ONNX vs torch ({m['date']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, Python {m['python']}, torch {m['versions'].get('torch')}, "
        f"onnxruntime {results['onnxruntime']})",
        "",
        f"Models trained on the synthetic shop with the demo's settings ({results['n_users']} shoppers, "
        f"{results['max_steps']} steps, seeds {', '.join(str(r['seed']) for r in runs)}); the same model encodes "
        "queries with torch, the fp32 ONNX file and the int8 file (dynamic quantization, per-channel weights), "
        "one query at a time. Intervals: 95% paired bootstrap (shoppers on the synthetic cases, queries on "
        "Crowdflower). `benchmarks/search_encoder.py`.",
        "",
        "With the demo's settings the encoder is frozen (`trainable_layers` 0): every seed's query tower is "
        "MiniLM itself, so the Crowdflower figures repeat across seeds, and the seeds differ only in the "
        "synthetic hold-out and the trained heads the served ranking adds. A fine-tuned encoder "
        "(`vetted run --trainable-layers N`) is not measured here; the registration check compares each model's own files "
        "with its torch encoder.",
        "",
    ]
    cf_ok = [r for r in runs if "retrieval" in r["crowdflower"]]
    loss = {
        "crowdflower": [100 * r["crowdflower"]["retrieval"]["diff"]["int8-fp32"]["relative"] for r in cf_ok],
        "synthetic served": [100 * r["synthetic"]["served"]["diff"]["int8-fp32"]["relative"] for r in runs],
        "synthetic dense only": [100 * r["synthetic"]["dense_only"]["diff"]["int8-fp32"]["relative"] for r in runs],
    }
    worst = min(v for vs in loss.values() for v in vs)
    met = worst > -100 * TARGET_LOSS
    lines += [
        "## Verdict",
        "",
        f"Target: int8 loses under {100 * TARGET_LOSS:.0f}% NDCG@10 against fp32. "
        f"**{'Met' if met else 'Not met'}**: the worst int8 - fp32 change over every seed and protocol is "
        f"{worst:+.2f}% (negative: a loss).",
        "",
    ]
    lines += [f"- {name}: int8 vs fp32 NDCG@10 change, mean over seeds {_spread(v)}" for name, v in loss.items() if v]
    lines += ["", "## NDCG@10", ""]
    lines += _table(
        "Crowdflower queries, retrieval from all products (graded NDCG@10)",
        runs,
        lambda r: (r["crowdflower"].get("retrieval"), r["crowdflower"].get("n_queries")),
    )
    lines += _table(
        "Synthetic hold-out search cases, the served search ranking (dense + BM25, history blended)",
        runs,
        lambda r: (r["synthetic"]["served"], r["synthetic"]["n_cases"]),
    )
    lines += _table(
        "Synthetic hold-out search cases, the dense side alone",
        runs,
        lambda r: (r["synthetic"]["dense_only"], r["synthetic"]["n_cases"]),
    )
    skipped = [r for r in runs if "skipped" in r["crowdflower"]]
    if skipped:
        lines += [f"Crowdflower skipped: {skipped[0]['crowdflower']['skipped']}", ""]
    lines += [
        "## Vectors against torch (cosine per query; registration floors: "
        f"fp32 {results['min_cosine']['fp32']}, int8 {results['min_cosine']['int8']})",
        "",
        "| seed | queries | fp32 min | int8 min | int8 1st percentile | int8 median |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        c = r["cosine"]
        lines.append(
            f"| {r['seed']} | {c['int8']['n_queries']} | {c['fp32']['min']:.6f} | {c['int8']['min']:.4f} | "
            f"{c['int8']['p01']:.4f} | {c['int8']['median']:.4f} |"
        )
    lines += [
        "",
        "## Single-query encode latency (one thread, tokenization included)",
        "",
        "| seed | runtime | median (ms) | p99 (ms) | queries timed | file (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        for runtime in RUNTIMES:
            t = r["latency"][runtime]
            size = r["sizes_mb"].get(runtime, "-")
            lines.append(f"| {r['seed']} | {runtime} | {t['median_ms']:.2f} | {t['p99_ms']:.2f} | {t['n']} | {size} |")
    lines += [
        "",
        "The machine is shared: latencies are read side by side (interleaved passes), not as absolute figures.",
        "",
    ]
    return "\n".join(lines)


def rewrite_report() -> None:
    """The markdown again from the stored JSON (after a change to the report's wording only)."""
    import json

    from common import RESULTS

    results = json.loads((RESULTS / "search-encoder.json").read_text())
    write("search-encoder", results, markdown(results))


def main() -> None:
    from importlib import metadata

    from ml.search.onnx_encoder import MIN_COSINE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--n-users", type=int, default=5000, help="synthetic shoppers (the demo has 20,000)")
    parser.add_argument("--max-steps", type=int, default=40, help="training steps (the demo has 100)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown from the stored JSON")
    args = parser.parse_args()
    if args.report_only:
        rewrite_report()
        return
    runs = [run(seed, args.n_users, args.max_steps) for seed in args.seeds]
    results = {
        "machine": machine(),
        "onnxruntime": metadata.version("onnxruntime"),
        "n_users": args.n_users,
        "max_steps": args.max_steps,
        "target_loss": TARGET_LOSS,
        "min_cosine": MIN_COSINE,
        "runs": runs,
    }
    write("search-encoder", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

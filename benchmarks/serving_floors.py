"""The serving benchmark's floors: one shopper's top-10 without HTTP, on one thread, for the tables' reference."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_world import N_SHOPPERS, PSEUDONYM_KEY, K  # noqa: E402


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 4) for q in (50, 95, 99)}


def floors(world: dict[str, Any], n_queries: int, seed: int) -> dict[str, Any]:
    """One shopper's top-10 without HTTP, one thread: a bare numpy matrix-vector product, a bare FAISS
    IndexFlatIP search, the exact top by inner product of the `DenseIndex` that serving uses (its int8 first
    pass over the item vectors, then exact scores of the candidates), the model's full score of every item in numpy followed by a top-k, and the
    service's whole path (pseudonym, Feast read, the exact top-k of `Champion.top_for_history`,
    explanations)."""
    import faiss
    from threadpoolctl import threadpool_limits

    from ml.features import store as fs
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.search.dense import DenseIndex
    from ml.serving import ranking
    from ml.serving.champion import build_champion, one_openmp_thread
    from ml.serving.history import HistoryReader
    from ml.training.recommender import Recommender

    rng = np.random.default_rng(seed)
    vectors = world["vectors"]
    queries = rng.normal(size=(n_queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def time_each(fn: Any) -> list[float]:
        for q in queries[:20]:
            fn(q)
        out = []
        for q in queries:
            t0 = time.perf_counter()
            fn(q)
            out.append(time.perf_counter() - t0)
        return out

    def numpy_top(q: np.ndarray) -> np.ndarray:
        s = vectors @ q
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])]

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    dense = DenseIndex(vectors)
    one_openmp_thread()  # the DenseIndex's integer product runs in torch: one thread, as in the service
    rec = Recommender.load(world["folder"])
    champion = build_champion(rec, "benchmark", "1", {}, world["folder"])
    reader = HistoryReader(fs.open_store(fs.repo_config(world["settings"].feast_dir)))
    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    rnd = random.Random(seed)
    histories = [
        ranking.history_rows(champion, reader.recent_items(pseudo.pseudonym(f"shopper{u}"))) for u in range(200)
    ]
    options = ranking.RankingOptions()

    def full_score_top(_: np.ndarray) -> None:
        s = champion.history_scores([rnd.choice(histories)])[0]
        top = np.argpartition(-s, K)[:K]
        top[np.argsort(-s[top])]

    def service_path(_: np.ndarray) -> None:
        history = reader.recent_items(pseudo.pseudonym(f"shopper{rnd.randrange(N_SHOPPERS)}"))
        ranking.recommend(champion, history, K, options)

    with threadpool_limits(limits=1):  # one BLAS thread, as in the service
        return {
            "numpy_topk": _percentiles(time_each(numpy_top)),
            "faiss_flat_ip_topk": _percentiles(time_each(lambda q: index.search(q[None], K))),
            "dense_index_topk": _percentiles(time_each(lambda q: dense.search(q[None], K))),
            "full_score_topk": _percentiles(time_each(full_score_top)),
            "in_process_recommendation": _percentiles(time_each(service_path)),
        }

"""The search ranking that is evaluated, gated and served: the model's dense ranking fused with BM25's.

A query goes two ways: the model's query tower (dense: dot(query vector, item vector) / temperature + item bias,
the model's own score) and BM25 over the item's public text (title, brand, category; English plurals reduced,
`ml.lexical.plural_stem`). Their rankings are fused by
reciprocal rank fusion (`ml.search.fusion`), each taken `depth` deep. The dense side finds what the words do not
say (synonyms, what shoppers clicked for such a query); the lexical side holds exact names, model numbers and
brands that a 6-layer encoder blurs. `lexical_weight` 0 turns the lexical side off.

Evaluation (`ml.evaluation.search`) and serving (`ml.serving.ranking.search`) both call `SearchEngine.fuse` with
their own dense top rows (numpy over the model's scores in one, `ml.search.dense.DenseIndex` over the same vectors in the other), so the
ranking a reviewer sees measured is the ranking shoppers get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.lexical import BM25Index, search_words, words
from ml.search.fusion import fuse
from ml.search.query_cache import DEFAULT_SIZE as DEFAULT_QUERY_CACHE_SIZE
from ml.topk import top_k

DEFAULT_DEPTH = 100
# the query encoder's exported copies (ml.search.onnx_encoder): float32, or int8 weights (dynamic quantization)
ENCODER_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class SearchSettings:
    # BM25's weight in the fusion (the dense side's is 1); 0: dense only. The default is the weight no interval
    # separates from the best on both the Crowdflower queries and the synthetic hold-out: a trained query tower
    # needs little lexical help on the shop's own queries, an untrained one on new products more
    # (benchmarks/results/search.md, "Lexical weight").
    lexical_weight: float = 0.25
    depth: int = DEFAULT_DEPTH  # rows taken from each side
    history_weight: float = 0.25  # a known shopper's history vector blended into the query (0: query only)
    # which exported query encoder answers (a model saved without them uses its torch encoder); int8 is the
    # default where its NDCG@10 loss against fp32 is under 1% (benchmarks/results/search-encoder.md)
    encoder_precision: str = "int8"
    query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE  # recent query vectors kept (ml.search.query_cache); 0: none
    # the lexical side reduces English plurals (ml.lexical.plural_stem) in items and queries alike; a model saved
    # before this setting existed is served as it was measured, without (Recommender.load)
    stem_plurals: bool = True

    def __post_init__(self) -> None:
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(f"encoder_precision must be one of {ENCODER_PRECISIONS}, got {self.encoder_precision!r}")
        if (
            isinstance(self.query_cache_size, bool)
            or not isinstance(self.query_cache_size, int)
            or self.query_cache_size < 0
        ):
            raise ValueError(
                f"query_cache_size must be a whole number >= 0 (0 turns the cache off), got {self.query_cache_size!r}"
            )
        if not 0.0 <= self.lexical_weight <= 10.0:
            raise ValueError(f"lexical_weight must be in [0, 10], got {self.lexical_weight}")
        if not 0.0 <= self.history_weight < 1.0:
            raise ValueError(f"history_weight must be in [0, 1), got {self.history_weight}")
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")


def search_texts(items: pd.DataFrame) -> list[str]:
    """The public words a shopper may type to find an item: title, brand and category."""
    cols = [c for c in ("title", "brand", "category") if c in items.columns]
    return [" ".join(str(v) for v in row if isinstance(v, str) and v) for row in items[cols].itertuples(index=False)]


class LexicalIndex:
    """BM25 over item texts; `top` gives, per query, the rows with a positive score (best first, at most n).
    `stem_plurals`: items and queries split by `ml.lexical.search_words` (plurals reduced), else by `words`."""

    def __init__(self, texts: Sequence[str], stem_plurals: bool = True) -> None:
        self.analyze = search_words if stem_plurals else words
        self.bm25 = BM25Index(list(texts), analyze=self.analyze)
        self.n_items = len(texts)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.bm25.scores([self.analyze(q) for q in queries], dtype=np.float32)

    def top(self, queries: Sequence[str], n: int) -> list[np.ndarray]:
        """Per query, up to n rows whose BM25 score is positive, best first (a query no item's words match: none)."""
        return [self.bm25.top(self.analyze(q), n)[0] for q in queries]


class SearchEngine:
    def __init__(self, lexical: LexicalIndex | None, settings: SearchSettings) -> None:
        if settings.lexical_weight > 0 and lexical is None:
            raise ValueError("a lexical_weight above 0 needs a LexicalIndex")
        self.lexical = lexical
        self.settings = settings

    @classmethod
    def for_items(cls, items: pd.DataFrame, settings: SearchSettings) -> SearchEngine:
        lexical = LexicalIndex(search_texts(items), settings.stem_plurals) if settings.lexical_weight > 0 else None
        return cls(lexical, settings)

    def fuse(
        self, queries: Sequence[str], dense_rows: Sequence[np.ndarray], k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the top-k rows and fused scores from its dense rows (best first, `depth` of them or more)
        and BM25's. With the lexical side off: the dense rows themselves, first k, with RRF scores."""
        if len(queries) != len(dense_rows):
            raise ValueError(f"{len(queries)} queries but {len(dense_rows)} dense rankings")
        depth = self.settings.depth
        if self.lexical is None or self.settings.lexical_weight == 0:
            return [fuse([np.asarray(d)[:depth]], [1.0], k) for d in dense_rows]
        lexical = self.lexical.top(list(queries), depth)
        return [
            fuse([np.asarray(d)[:depth], lex], [1.0, self.settings.lexical_weight], k)
            for d, lex in zip(dense_rows, lexical, strict=True)
        ]


def blend_history(
    query_vectors: np.ndarray, history_vectors: np.ndarray | None, has_history: np.ndarray, weight: float
) -> np.ndarray:
    """(1 - weight) * query + weight * history, L2-normalized, for the rows with history; other rows unchanged."""
    out = np.asarray(query_vectors, dtype=np.float32).copy()
    if history_vectors is None or weight == 0 or not np.any(has_history):
        return out
    rows = np.flatnonzero(has_history)
    mixed = (1 - weight) * out[rows] + weight * np.asarray(history_vectors, dtype=np.float32)[rows]
    out[rows] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def dense_top(scores: np.ndarray, depth: int) -> list[np.ndarray]:
    """Per row of [n_queries, n_items] scores, the `depth` best rows (best first; ties: the lower row)."""
    return list(top_k(scores, depth))


def served_search(
    rec: Any,
    queries: Sequence[str],
    histories: Sequence[Sequence[str]],
    k: int,
    engine: SearchEngine | None = None,
    dense_only: bool = False,
    batch: int = 256,
) -> tuple[list[list[str]], list[np.ndarray]]:
    """The search ranking of a `Recommender` (top-k item ids and fused scores per query), each query blended with
    its shopper's history (item ids, oldest first; empty for an anonymous search) as serving does."""
    search: SearchSettings = rec.settings.search
    engine = engine or SearchEngine.for_items(rec.items, search)
    ids: list[list[str]] = []
    scores: list[np.ndarray] = []
    for start in range(0, len(queries), batch):
        q, h = list(queries[start : start + batch]), [list(x) for x in histories[start : start + batch]]
        vectors = rec.query_vectors(q)
        known = np.array([any(i in rec.index_of for i in hist) for hist in h], dtype=bool)
        hist_vectors = rec.history_vectors(h) if search.history_weight > 0 and known.any() else None
        vectors = blend_history(vectors, hist_vectors, known, search.history_weight)
        dense = dense_top(rec.scores(vectors), max(search.depth, k))
        if dense_only:
            ids.extend([[rec.item_ids[r] for r in row[:k]] for row in dense])
            continue
        for rows, fused in engine.fuse(q, dense, k):
            ids.append([rec.item_ids[r] for r in rows])
            scores.append(fused)
    return ids, scores

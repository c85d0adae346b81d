"""The champion the service answers with, and the watcher that hot-swaps it.

`ChampionWatcher` resolves the registry alias `models:/<name>@champion`, downloads that version's
recommender folder (the pyfunc's artifact "recommender"), loads it (`Recommender.load`), builds the dense
search index over `augmented_items()` (`ml.search.dense.DenseIndex`: the exact model score, dot / temperature
+ item bias, with an int8 first pass), answers one warm-up query, and only then swaps it in: a single reference assignment under a
lock. A request takes `watcher.current()` once and uses that object to the end, so in-flight requests keep
the model they started with. A background thread polls the alias every `poll_seconds`; a version that fails
to load leaves the old champion serving, and the failure is kept in `last_error` (with `last_checked`) for
the authenticated /version. A changed tag on the same version (say, the re-ranking share) is picked up
without a reload.

Before loading, the downloaded folder is checked against the SHA-256 digests recorded in the version's tags
at registration (`ml.registry.integrity.verify_folder`): a changed, missing or extra file, or a version
without digests, is refused like any other load failure. A file changed after the gate judged it is a model
nobody vetted.

A cold start whose champion cannot be loaded (or verified) does not leave shoppers with 503s: the watcher
serves the newest other version whose recorded gate decision allows serving (`gate.status` passed or
approved, the rule promotion applies) and that loads, says so (`status().fallback_for`, /version, the log),
and keeps trying the alias's version with the usual back-off, swapping to it once it loads. With nothing
loadable the service answers 503 as before.

Where the folder is: `client.get_model_version_download_uri()` gives the logged model's artifact root,
its `MLmodel` file names the folder of the artifact "recommender" (`artifacts/<folder name>`). (Note:
`f"{version.source}/artifacts/recommender"` does not resolve in MLflow 3: `source` is `models:/m-<id>`,
read as a registered model name, and the artifact is stored under the original folder's name.)

Fair re-ranking settings come from the version's tags: `serving.rerank.min_tail_share` (default 0 = off),
`serving.rerank.window` (default 10), `serving.rerank.head_share` (default 0.5). Tail brands are the
brands outside the head set computed from the catalogue's item count per brand (public data, no shopper
events), with `ml.evaluation.fairness.brand_tiers`.
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.config import Settings
from ml.evaluation.fairness import catalogue_tail
from ml.evaluation.rerank import RerankConfig
from ml.registry.integrity import verify_folder
from ml.registry.registration import CHAMPION, PROMOTABLE, recommender_artifact_uri
from ml.search.dense import TOP_CANDIDATES, DenseIndex, QuantizedItems, _best, _matmul_t
from ml.search.engine import SearchEngine
from ml.training.model import LEXICAL_DECAY, TRANSITION_DECAY
from ml.training.recommender import Recommender

log = logging.getLogger(__name__)

TAG_MIN_TAIL_SHARE = "serving.rerank.min_tail_share"
TAG_WINDOW = "serving.rerank.window"
TAG_HEAD_SHARE = "serving.rerank.head_share"
DEFAULT_HEAD_SHARE = 0.5
FALLBACK_DEPTH = 1000  # items kept in the non-personalized order (enough for k=100 plus re-ranking room)


class ChampionLoadError(RuntimeError):
    """A model version could not be turned into a servable champion; the message says which and why."""


@dataclass(frozen=True)
class ServingRerank:
    """Re-ranking at serving: the evaluation's config and the tail brands it protects."""

    config: RerankConfig
    head_share: float
    tail_brands: frozenset[str]
    is_tail: Mapping[str, bool]  # item id -> its brand is in the tail

    @property
    def enabled(self) -> bool:
        return self.config.min_tail_share > 0


@dataclass(frozen=True)
class HistoryTower:
    """The model's history path in numpy: the history tower's vector and the full score of every item
    (several times cheaper than the torch call for one shopper; a batch of shoppers shares one matrix
    product).

    Same maths as `BiEncoder.history_vector` and `BiEncoder.logits` (a history query, never a search):
    softmax of the learned recency weights over the positions in use (newest first), the weighted sum of
    the cached item vectors, the learned projection, L2 norm; then dot / temperature x content scale +
    item bias + the behavioural part (category transition from the newest item, and the weighted
    history-candidate features: shared brand, repeat, same category and brand as the newest item, item
    transitions, and, when the model has them, the largest similarity to one history item and the
    decayed lexical similarity to the history items). The query
    vectors and the history items' vectors go through ONE matrix product with the item table; the
    per-shopper parts are gathered from small per-category and per-brand tables instead of built as
    [n_items, n_features]. `build_champion` checks it against the torch model and serves with the torch
    model if they disagree (say, after a change of the model's features).
    """

    FEATURES = (
        "shared_brand",
        "repeat",
        "same_category",
        "same_brand",
        "transition",
        "closest_similarity",
        "lexical",
    )

    recency: np.ndarray  # [max_history] recency logits, position 0 = newest
    weight: np.ndarray  # [D, D] projection (y = W x + b)
    bias: np.ndarray  # [D]
    item_vectors: np.ndarray  # [n_items, D]
    temperature: float = 1.0
    content_scale: float = 1.0  # the learned multiplier of the text similarity (1 once folded into temperature)
    item_bias: np.ndarray | None = None  # [n_items]
    item_category: np.ndarray | None = None  # [n_items] category codes
    item_brand: np.ndarray | None = None  # [n_items] brand codes
    category_transition: np.ndarray | None = None  # [n_cat, n_cat] newest item's category -> category
    feature_weights: np.ndarray | None = None  # one weight per feature of FEATURES (the first 5, 6 or 7)
    # the item x item features (a decayed sum of one table row per history item): (feature position,
    # [n_items, n_items] table, decay); only those the model has (an unused table is [1, 1] in the model)
    item_tables: tuple[tuple[int, np.ndarray, float], ...] = ()
    n_brands: int = 1
    item_norms: np.ndarray | None = None  # [n_items] L2 norms of item_vectors (bounds for `top`)

    @classmethod
    def of(cls, recommender: Recommender) -> HistoryTower:
        """The tower of a loaded model; ValueError for a model whose features it does not know."""
        model = recommender.model

        def array(t: Any, dtype: Any) -> np.ndarray:
            return t.detach().cpu().numpy().astype(dtype)

        n_items = len(recommender.item_ids)
        brands = array(model.item_brand, np.int64)
        weights = array(model.feature_weights.weight, np.float32)
        if not 5 <= len(weights) <= len(cls.FEATURES):
            raise ValueError(
                f"the model has {len(weights)} history features; the numpy tower knows 5 to {len(cls.FEATURES)}"
            )
        tables = []
        for position, name, decay in ((4, "transitions", TRANSITION_DECAY), (6, "lexical", LEXICAL_DECAY)):
            table = getattr(model, name, None)
            if position < len(weights) and table is not None and table.shape[0] == n_items:
                tables.append((position, array(table, np.float32), decay))
        scale = getattr(model, "content_scale", None)
        return cls(
            recency=array(model.recency.weight, np.float64)[:, 0],
            weight=array(model.history_proj.weight, np.float32),
            bias=array(model.history_proj.bias, np.float32),
            item_vectors=recommender.item_vectors,
            temperature=float(model.temperature),
            content_scale=float(np.exp(array(scale.log_scale, np.float64)[0])) if scale is not None else 1.0,
            item_bias=recommender.item_bias,
            item_category=array(model.item_category, np.int64),
            item_brand=brands,
            category_transition=array(model.category_transition.weight, np.float32),
            feature_weights=weights,
            item_tables=tuple(tables),
            n_brands=int(brands.max()) + 1 if len(brands) else 1,
            item_norms=np.linalg.norm(recommender.item_vectors, axis=1).astype(np.float32),
        )

    @cached_property
    def identity_projection(self) -> bool:
        """The history projection is y = x (as the model starts, and stays when DP training freezes it)."""
        return bool(np.array_equal(self.weight, np.eye(*self.weight.shape)) and not np.any(self.bias))

    def vector(self, rows: list[int]) -> np.ndarray:
        """[1, D] query vector for item rows given oldest first (at least one)."""
        return self.vectors([rows])

    def _recent(self, rows: Sequence[int]) -> list[int]:
        """The rows the model looks at: the last max_history, newest first."""
        return list(rows)[-len(self.recency) :][::-1]

    def _padded(self, recents: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """[B, max_history] rows of each recent list (newest first), padded with row 0, and which are real."""
        rows = np.zeros((len(recents), len(self.recency)), dtype=np.int64)
        used = np.zeros(rows.shape, dtype=bool)
        for b, recent in enumerate(recents):
            rows[b, : len(recent)] = recent
            used[b, : len(recent)] = True
        return rows, used

    def vectors(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, D] query vectors, one per history of item rows (oldest first, at least one row each)."""
        return self._vectors(*self._padded([self._recent(h) for h in histories]))

    def _vectors(self, rows: np.ndarray, used: np.ndarray) -> np.ndarray:
        logits = np.where(used, self.recency[None, :], -np.inf)  # a softmax over the positions in use
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        y = np.einsum("bh,bhd->bd", w.astype(np.float32), self.item_vectors[rows])
        if not self.identity_projection:
            y = y @ self.weight.T + self.bias
        norms = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return (y / norms).astype(np.float32)

    @property
    def uses_closest(self) -> bool:
        return self.feature_weights is not None and len(self.feature_weights) >= 6

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, n_items] full scores, one row per history of item rows (oldest first, at least one row each):
        what `Recommender.history_scores` gives, with one matrix product for the whole batch."""
        if self.item_bias is None or self.feature_weights is None:
            raise ValueError("this HistoryTower was built without the scoring tables; use HistoryTower.of")
        recents = [self._recent(rows) for rows in histories]
        queries = self._vectors(*self._padded(recents)) * self._content_factor
        if self.uses_closest:  # the history items' similarities come out of the same product
            queries = np.vstack([queries, self.item_vectors[[r for recent in recents for r in recent]]])
        products = _matmul_t(queries, self.item_vectors)
        out = self._rest(recents)  # in `top_many`'s order: the rest first, then the text similarity
        out += products[: len(histories)]
        start = len(histories)
        for b, recent in enumerate(recents):
            if self.uses_closest:
                closest = products[start : start + len(recent)].max(axis=0)
                out[b] += np.float32(self.feature_weights[5]) * closest
                start += len(recent)
        return out

    def _rest(self, recents: Sequence[list[int]]) -> np.ndarray:
        """[B, n_items] the score without the text similarity and the closest-similarity feature: the item
        bias and the behavioural part, for each history (rows newest first)."""
        out = np.empty((len(recents), len(self.item_vectors)), dtype=np.float32)
        out[:] = self.item_bias
        self._add_behaviours(out, recents)
        return out

    @cached_property
    def _content_factor(self) -> np.float32:
        """The text similarity's factor (content scale / temperature), applied to the query vectors: the
        same product as scaling every item's score, at the cost of B x D multiplications, not B x n_items."""
        return np.float32(self.content_scale / self.temperature)

    def _add_behaviours(self, out: np.ndarray, recents: Sequence[list[int]]) -> None:
        """Add to `out` [B, n_items] the behavioural part for each history (rows newest first, at most
        max_history), but the closest-similarity feature (`scores` and `top_many` add it). Per history, a
        row of the category table and a row of a brand table, gathered for every item: one gather each for
        the batch."""
        weights, cats, brands = self.feature_weights, self.item_category, self.item_brand
        transition = self.category_transition
        if weights is None or cats is None or brands is None or transition is None:
            raise ValueError("this HistoryTower was built without the scoring tables; use HistoryTower.of")
        w_brand, w_repeat, w_same_cat, w_same_brand = (float(x) for x in weights[:4])
        batch = np.arange(len(recents))
        newest = np.array([recent[0] for recent in recents])
        owner = np.repeat(batch, [len(recent) for recent in recents])  # (history, item) pairs
        items = np.concatenate([np.asarray(recent, dtype=np.int64) for recent in recents])
        by_category = transition[cats[newest]]  # [B, n_cat]: transition + same category
        by_category[batch, cats[newest]] += w_same_cat
        by_brand = np.zeros((len(recents), self.n_brands), dtype=np.float32)  # shared + same-as-newest brand
        by_brand[owner, brands[items]] = w_brand
        by_brand[batch, brands[newest]] += w_same_brand
        out += np.take(by_category, cats, axis=1)
        out += np.take(by_brand, brands, axis=1)
        out.reshape(-1)[np.unique(owner * out.shape[1] + items)] += w_repeat  # once per item repeated
        for position, table, decay in self.item_tables:
            for b, recent in enumerate(recents):
                decays = np.float32(decay) ** np.arange(len(recent), dtype=np.float32)
                out[b] += float(weights[position]) * (decays @ table[recent])

    def top(self, rows: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-n item rows (best first) and their full scores for one history (oldest first)."""
        return self.top_many([rows], n)[0]

    def top_many(self, histories: Sequence[Sequence[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The exact top-n item rows (best first) and their full scores for each history (oldest first).

        The same ranking as `scores` followed by a top-n, at a fraction of its cost. Each item's score gets
        an upper bound first, from two cheap parts:
        - the text similarity from the int8 copy of the item table (`QuantizedItems`): one integer matrix
          product for the whole batch (the table does not stay in the CPU's cache, and int8 reads a
          quarter of the memory float32 does), plus a bound on that product's error;
        - |w x closest similarity| <= |w| x |history item vector| x |item vector|.
        The exact score (float32 vectors) is computed for the best candidates by that bound, and then for
        every other item whose bound still reaches the n-th best exact score found: the answer is always
        exact, whatever the rounding of the first pass.
        """
        if self.item_bias is None or self.feature_weights is None:
            raise ValueError("this HistoryTower was built without the scoring tables; use HistoryTower.of")
        recents = [self._recent(rows) for rows in histories]
        padded, used = self._padded(recents)
        queries = self._vectors(padded, used) * self._content_factor  # [B, D]
        rest = self._rest(recents)
        n_items = rest.shape[1]
        n = min(n, n_items)
        w = float(self.feature_weights[5]) if self.uses_closest else 0.0
        m = max(4 * n, TOP_CANDIDATES)
        if m >= n_items:  # a small catalogue: every item's exact score
            every = np.arange(n_items)
            return [
                _best(*self._exact_rows(r, q, row, every, w), n)
                for r, q, row in zip(recents, queries, rest, strict=True)
            ]
        approx, factors = self.quantized.products(queries)
        norms = self._norms
        # the closest-similarity feature's bound, (1 + 1e-5): float32 rounding of its products
        reach = [abs(w) * float(norms[r].max()) * (1 + 1e-5) for r in recents]
        # float32 rounding of the sums here and in the exact score: 1e-6 of their size, and 1e-5
        # (|approx| <= (|q| + |e|) |s_i c_i|, |rest| <= its row's largest)
        size = np.maximum(rest.max(axis=1), -rest.min(axis=1)).astype(np.float64)
        q_norm, q_missed = factors[:, 0].astype(np.float64), factors[:, 1].astype(np.float64)
        terms = np.column_stack([q_norm, q_missed + 1e-6 * (q_norm + q_missed), reach, 1e-6 * size + 1e-5])
        upper = approx  # the bound is built in place: [B, 4] @ [4, n_items] adds every item's margin
        upper += rest
        upper += (terms * (1 + 1e-6)).astype(np.float32) @ self._bound_rows
        # each row's m best bounds, unordered (torch's top-k: 4x faster here than numpy's argpartition)
        first = torch.topk(torch.from_numpy(upper), m, dim=1, sorted=False).indices.numpy()
        # their exact text similarity and similarities to every history item, for the batch at once:
        # [B, 1 + max_history, D] @ [B, D, m], the query in row 0
        stacked = np.concatenate([queries[:, None, :], self.item_vectors[padded]], axis=1)
        products = np.matmul(stacked, self.item_vectors[first].transpose(0, 2, 1))
        first_exact = np.take_along_axis(rest, first, axis=1) + products[:, 0]
        if w != 0.0:
            similarity = products[:, 1:]
            similarity[~used] = -np.inf  # padding is no history item
            first_exact += np.float32(w) * similarity.max(axis=1)
        # every item that could still make its history's top n: a bound reaching the n-th best exact score
        # found, and not scored yet (one operation for the batch: each costs a round of the GIL)
        thresholds = np.partition(first_exact, m - n, axis=1)[:, m - n]
        reachable = upper >= thresholds[:, None]
        np.put_along_axis(reachable, first, False, axis=1)
        owners, more = np.nonzero(reachable)  # by history, then by row
        bounds = np.searchsorted(owners, np.arange(len(recents) + 1))
        out = []
        for b, (recent, query, row) in enumerate(zip(recents, queries, rest, strict=True)):
            rows, exact = first[b], first_exact[b]
            if bounds[b + 1] > bounds[b]:
                extra, extra_exact = self._exact_rows(recent, query, row, more[bounds[b] : bounds[b + 1]], w)
                rows, exact = np.concatenate([rows, extra]), np.concatenate([exact, extra_exact])
            out.append(_best(rows, exact, n))
        return out

    @cached_property
    def _bound_rows(self) -> np.ndarray:
        """[4, n_items] what `top_many`'s per-history terms multiply: the int8 pass's two error terms, the
        item norms (the closest-similarity bound) and ones (the rounding margin)."""
        ones = np.ones(len(self.item_vectors), dtype=np.float32)
        return np.vstack([self.quantized.slack, self._norms[None, :], ones[None, :]]).astype(np.float32)

    @cached_property
    def _norms(self) -> np.ndarray:
        """[n_items] the item vectors' L2 norms (`item_norms`, or computed once)."""
        if self.item_norms is not None:
            return self.item_norms
        return np.linalg.norm(self.item_vectors, axis=1).astype(np.float32)

    @cached_property
    def quantized(self) -> QuantizedItems:
        """The int8 item table of `top_many`'s first pass (built on first use: the warm-up builds it)."""
        return QuantizedItems.of(self.item_vectors)

    def _exact_rows(
        self, recent: list[int], query: np.ndarray, rest: np.ndarray, rows: np.ndarray, w: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, their full scores): `rest` plus the text similarity (`query`, the content factor applied)
        plus w x the largest similarity to one history item."""
        vectors = self.item_vectors[rows]
        exact = rest[rows] + vectors @ query
        if w != 0.0:
            exact += np.float32(w) * (self.item_vectors[recent] @ vectors.T).max(axis=0)
        return rows, exact


@dataclass(frozen=True)
class Champion:
    """One loaded model version, ready to answer; never mutated after the swap."""

    model_name: str
    version: str
    run_id: str | None
    tags: Mapping[str, str]
    recommender: Recommender
    search_engine: SearchEngine  # the lexical side of search and the fusion (ml.search.engine)
    dense: DenseIndex  # search's dense side: the exact top by the model's score (recommender.augmented_items())
    rerank: ServingRerank
    fallback_rows: np.ndarray  # item rows by the learned item bias, best first (non-personalized answers)
    loaded_at: datetime
    folder: Path
    titles: list[str] = field(
        default_factory=list
    )  # per item row, "" when missing (plain lists: fast lookups)
    brands: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    tower: HistoryTower | None = None  # None: use the torch tower (the numpy one disagreed at load)

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """[n, D] the query tower's vectors of search texts: the version's exported ONNX encoder (one core, with
        the query cache) when it has one and the service does not force torch, else the torch encoder
        (`Recommender.query_vectors`; which one: `query_encoder`)."""
        return self.recommender.query_vectors(list(queries))

    @property
    def query_encoder(self) -> str:
        """What encodes search queries: "onnx-int8", "onnx-fp32" or "torch"."""
        return self.recommender.query_runtime

    @property
    def gate_status(self) -> str | None:
        return self.tags.get("gate.status")

    def search_rows(self, query_vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """[B, n] top item rows and exact scores (dot / temperature + bias) for each query vector, best first."""
        one_openmp_thread()
        found = self.dense.search(self.recommender.augmented_queries(query_vectors), n)
        return np.stack([rows for rows, _ in found]), np.stack([scores for _, scores in found])

    def history_vector(self, rows: list[int]) -> np.ndarray:
        """[1, D] history-tower vector of item rows (oldest first)."""
        if self.tower is not None:
            return self.tower.vector(rows)
        rec = self.recommender
        return rec.history_vectors([[rec.item_ids[r] for r in rows]])

    def top_for_history(self, rows: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-n item rows (best first) and full scores for one history of item rows (oldest
        first, at least one)."""
        return self.top_for_histories([rows], n)[0]

    def top_for_histories(self, histories: Sequence[Sequence[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`top_for_history` of several histories at once (one matrix product for the batch)."""
        one_openmp_thread()
        if self.tower is not None:
            return self.tower.top_many(histories, n)
        full = self.history_scores(histories)
        return [_best(np.arange(full.shape[1]), row, min(n, full.shape[1])) for row in full]

    def history_scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, n_items] the model's full score of every item, one row per history of item rows (oldest
        first, at least one each)."""
        if self.tower is not None:
            return self.tower.scores(histories)
        rec = self.recommender
        return rec.history_scores([[rec.item_ids[r] for r in rows] for rows in histories])


# ---------------------------------------------------------------------------------------------- pure pieces
_thread_state = threading.local()


def one_openmp_thread() -> None:
    """Make torch use one OpenMP thread in the calling thread (once per thread).

    OpenMP's thread count is per calling thread, so setting it in the main thread does not reach the
    server's other threads (the scoring thread, the thread pool that runs /search, the champion watcher):
    in a thread it has not seen, OpenMP starts a team of one thread per core, and between parallel regions
    the idle team member spins on the other core, the core the event loop needs. Requests already run in
    parallel, so one request's work stays on one thread.
    """
    if not getattr(_thread_state, "openmp_single", False):
        torch.set_num_threads(1)
        _thread_state.openmp_single = True


def settle_heap() -> None:
    """Collect garbage once, then exempt every object alive now from later collections (`gc.freeze`).

    The serving process holds millions of long-lived objects (torch, transformers, MLflow, Feast, the
    model), and each of CPython's full collections walks them all: measured on the 2-core machines under
    16 concurrent clients, one took 420 ms, a stall every few thousand requests for every request waiting
    (it was the benchmark's maximum latency). Frozen, they are not walked again, and collections cover
    what requests allocate. Called once the service has warmed up, and after each champion swap: the
    heap is unfrozen first so the replaced champion's reference cycles are reclaimed, one pause per
    promotion instead of one every few thousand requests.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def one_blas_thread() -> None:
    """Make every BLAS library in the process (numpy's and FAISS's OpenBLAS) use one thread.

    The scores are one matrix product per batch of waiting requests, too small to split, and the event
    loop needs the other core: measured on the 2-core machines, OpenBLAS's default of two threads per call spun both
    cores under 16 concurrent requests and took 9 ms of CPU per 10k-item recommendation instead of 0.3.
    OpenBLAS's setting is process-wide, so calling this once (at startup) is enough. torch and FAISS use
    OpenMP, whose setting is per thread: this sets it for the calling thread (`one_openmp_thread`), and
    every other thread sets its own before its first product.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    one_openmp_thread()


def _float_tag(
    tags: Mapping[str, str], key: str, default: float, low: float, high: float, where: str
) -> float:
    raw = tags.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ChampionLoadError(
            f"{where}: tag {key}={raw!r} is not a number; set it to a value in [{low}, {high}]"
        ) from None
    if not low <= value <= high:
        raise ChampionLoadError(f"{where}: tag {key}={raw!r} is outside [{low}, {high}]")
    return value


def rerank_settings(
    tags: Mapping[str, str], item_ids: list[str], brands: list[str], where: str
) -> ServingRerank:
    """Re-ranking config from the version's tags, and tail brands from the catalogue's items per brand."""
    share = _float_tag(tags, TAG_MIN_TAIL_SHARE, 0.0, 0.0, 1.0, where)
    window = _float_tag(tags, TAG_WINDOW, 10, 1, 10_000, where)
    if window != int(window):
        raise ChampionLoadError(f"{where}: tag {TAG_WINDOW}={tags.get(TAG_WINDOW)!r} is not a whole number")
    head_share = _float_tag(tags, TAG_HEAD_SHARE, DEFAULT_HEAD_SHARE, 1e-9, 1.0, where)
    item_brand = dict(zip(item_ids, brands, strict=True))
    is_tail = catalogue_tail(item_brand, head_share)
    tail = frozenset(item_brand[i] for i, t in is_tail.items() if t)
    return ServingRerank(RerankConfig(min_tail_share=share, window=int(window)), head_share, tail, is_tail)


def build_champion(
    recommender: Recommender,
    model_name: str,
    version: str,
    tags: Mapping[str, str],
    folder: Path,
    run_id: str | None = None,
) -> Champion:
    """Index, fallback order, re-ranking settings; then one warm-up query of each kind."""
    where = f"{model_name} v{version}"
    items = recommender.items
    titles, brands, categories = (
        [v if isinstance(v, str) else "" for v in items[c].tolist()] for c in ("title", "brand", "category")
    )
    rerank = rerank_settings(tags, recommender.item_ids, brands, where)
    depth = min(FALLBACK_DEPTH, len(recommender.item_ids))
    fallback = np.argsort(-recommender.item_bias, kind="stable")[:depth]
    champion = Champion(
        model_name=model_name,
        version=str(version),
        run_id=run_id,
        tags=dict(tags),
        recommender=recommender,
        dense=DenseIndex(recommender.augmented_items()),
        rerank=rerank,
        fallback_rows=fallback,
        loaded_at=datetime.now(UTC),
        folder=folder,
        titles=titles,
        brands=brands,
        categories=categories,
        tower=checked_tower(recommender, where),
        search_engine=SearchEngine.for_items(items, recommender.settings.search),
    )
    warm_up(champion)
    return champion


def checked_tower(
    recommender: Recommender, where: str, n_checks: int = 8, seed: int = 0
) -> HistoryTower | None:
    """The numpy history path if it reproduces the torch model (vectors and full scores) on random histories
    (one with a repeated item), else None (and a warning)."""
    try:
        tower = HistoryTower.of(recommender)
    except ValueError as err:
        log.warning("%s: no numpy history path (%s); serving with the torch model", where, err)
        return None
    n = len(recommender.item_ids)
    rng = np.random.default_rng(seed)
    max_h = recommender.settings.max_history
    lengths = [1, max_h, max_h + 3, *rng.integers(1, max_h + 1, size=n_checks)]
    histories = [[int(r) for r in rng.integers(0, n, size=int(length))] for length in lengths]
    histories.append([histories[1][0], *histories[1]])  # a repeat: the repeat feature is exercised
    as_ids = [[recommender.item_ids[r] for r in rows] for rows in histories]
    same_vectors = np.allclose(tower.vectors(histories), recommender.history_vectors(as_ids), atol=1e-5)
    full = recommender.history_scores(as_ids)
    same_scores = np.allclose(tower.scores(histories), full, rtol=1e-5, atol=1e-4)
    # the served top (int8 first pass, then exact scores; this also builds the int8 table before the swap)
    top_n = min(10, n)
    try:
        served = np.stack([scores for _, scores in tower.top_many(histories, top_n)])
    except (RuntimeError, NotImplementedError, AttributeError) as err:  # say, a torch without its int8 product
        log.warning("%s: the numpy history path's top failed (%s); serving with the torch model", where, err)
        return None
    same_top = np.allclose(served, -np.sort(-full, axis=1)[:, :top_n], rtol=1e-5, atol=1e-4)
    if not (same_vectors and same_scores and same_top):
        log.warning(
            "%s: the numpy history path differs from the model's (%s); serving with the torch model",
            where,
            "vectors" if not same_vectors else "scores" if not same_scores else "top scores",
        )
        return None
    return tower


def warm_up(champion: Champion) -> None:
    """One history query and one text query, so the first shopper does not pay for lazy initialisation."""
    rec = champion.recommender
    rows, _ = champion.search_rows(champion.history_vector(list(range(min(3, len(rec.item_ids))))), 10)
    if rows.shape[1] == 0:
        raise ChampionLoadError(
            f"{champion.model_name} v{champion.version}: the warm-up search returned nothing"
        )
    champion.search_rows(champion.query_vectors(["warm up"]), 10)


# ---------------------------------------------------------------------------------------------- the registry
def recommender_uri(client: MlflowClient, name: str, version: str, scratch: Path) -> str:
    """The artifact URI of the version's recommender folder (see ml.registry.registration)."""
    try:
        return recommender_artifact_uri(client, name, version, scratch)
    except ValueError as err:
        raise ChampionLoadError(str(err)) from None


def load_version(
    client: MlflowClient,
    name: str,
    version: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
    query_encoder: str = "onnx",
) -> Champion:
    """Download, verify (IntegrityError on a file that differs from the digests in `tags`), load, index and
    warm up one version. The download folder lives as long as the champion. `query_encoder` "torch" serves
    search queries with the torch encoder even when the version has an exported one (`Settings.query_encoder`)."""
    import mlflow

    scratch = Path(tempfile.mkdtemp(prefix=f"vetted-serving-v{version}-"))
    try:
        uri = recommender_uri(client, name, version, scratch)
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch / "model")))
        verify_folder(folder, tags, what=f"{name} v{version}")
        recommender = Recommender.load(folder, query_encoder=query_encoder)
        log.info("%s v%s: search queries encoded by %s", name, version, recommender.query_runtime)
        return build_champion(recommender, name, version, tags, scratch, run_id=run_id)
    except Exception:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def refuse_unvetted(version: str, tags: Mapping[str, str]) -> None:
    """Only a version the gate passed or a reviewer approved is served as champion, whoever moved the alias:
    promotion and rollback refuse others (ml.registry), and serving does not trust that alone."""
    status = tags.get("gate.status")
    if status not in PROMOTABLE:
        raise ChampionLoadError(f"v{version} has gate.status={status!r}, not one of {PROMOTABLE}: it is not served")


# ---------------------------------------------------------------------------------------------- the watcher
@dataclass
class WatchStatus:
    last_checked: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    swaps: int = 0
    failed_versions: dict[str, str] = field(default_factory=dict)  # version -> its last load error
    fallback_for: str | None = None  # the alias's version, while another one answers in its place


def fallback_order(versions: Sequence[tuple[str, Mapping[str, str]]], exclude: set[str]) -> list[str]:
    """The versions a cold start may serve instead of a champion that does not load: those whose recorded
    gate decision allows serving (`gate.status` in PROMOTABLE, as for promotion), newest first."""
    allowed = [v for v, tags in versions if tags.get("gate.status") in PROMOTABLE and v not in exclude]
    return sorted(allowed, key=lambda v: int(v) if v.isdigit() else -1, reverse=True)


@dataclass
class _Failure:
    attempts: int
    retry_at: float  # time.monotonic() after which the version is tried again


class ChampionWatcher:
    """Keeps the current champion loaded and swaps in a new one when the alias moves."""

    def __init__(
        self,
        settings: Settings,
        poll_seconds: float = 10,
        alias: str = CHAMPION,
        client: MlflowClient | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        self.settings = settings
        self.model_name = settings.model_name
        self.alias = alias
        self.poll_seconds = float(poll_seconds)
        self._client = client or MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll at a time (the thread, or a caller of poll_once)
        self._current: Champion | None = None
        self._status = WatchStatus()
        self._failures: dict[str, _Failure] = {}
        self.max_backoff_seconds = 600.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what requests read -------------------------------------------------------------------
    def current(self) -> Champion | None:
        """The champion to answer one request with: take it once, use it to the end."""
        with self._lock:
            return self._current

    def status(self) -> WatchStatus:
        with self._lock:
            return replace(self._status, failed_versions=dict(self._status.failed_versions))

    # ---- polling -------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """Check the alias once; load and swap if it moved. Returns True when the champion changed."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        now = datetime.now(UTC)
        try:
            mv = self._client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as err:
            self._record(now, f"cannot resolve models:/{self.model_name}@{self.alias}: {_short(err)}")
            return False
        except Exception as err:  # the registry is down: keep serving what we have
            self._record(now, f"registry unreachable ({type(err).__name__}): {_short(err)}")
            return False
        version, tags = str(mv.version), dict(mv.tags or {})
        current = self.current()
        if current is not None and current.version == version:
            if dict(current.tags) != tags:
                return self._retag(current, tags, now)
            self._record(now, None)
            return False
        where = f"{self.model_name} v{version}"
        failure = self._failures.get(version)
        if failure is not None and time.monotonic() < failure.retry_at:
            self._record(now, self.status().failed_versions.get(version))  # backing off: keep the error shown
            return False
        started = time.perf_counter()
        try:
            if self.alias == CHAMPION:
                refuse_unvetted(version, tags)
            champion = load_version(self._client, self.model_name, version, tags, run_id=mv.run_id,
                                    query_encoder=self.settings.query_encoder)
        except Exception as err:
            attempts = failure.attempts + 1 if failure else 1
            backoff = min(self.max_backoff_seconds, self.poll_seconds * 2 ** (attempts - 1))
            self._failures[version] = _Failure(attempts, time.monotonic() + backoff)
            message = f"loading {where} failed ({type(err).__name__}): {_short(err)}"
            if current is None:  # a cold start: serve a vetted version rather than nothing
                fallback = self._load_fallback(exclude={version})
                if fallback is not None:
                    self._swap(fallback, now, fallback_for=version)
                    message += f"; serving v{fallback.version} instead, the newest gate-passed version that loads"
                else:
                    message += "; no champion loaded, and no other gate-passed version loads"
            else:
                message += f"; still serving v{current.version}"
            log.error("%s (attempt %d, next try in %.0f s)", message, attempts, backoff)
            self._record(now, message, failed_version=version)
            return current is None and self.current() is not None
        self._failures.pop(version, None)
        self._swap(champion, now)
        log.info(
            "champion is now %s (loaded and warmed in %.1f s; was %s)",
            where,
            time.perf_counter() - started,
            f"v{current.version}" if current else "none",
        )
        if current is not None:
            shutil.rmtree(current.folder, ignore_errors=True)  # requests in flight hold the loaded object
            current = None  # this poll's reference to the replaced champion, dropped before the collection
            settle_heap()  # reclaim the replaced champion, freeze the new one
        return True

    def _load_fallback(self, exclude: set[str]) -> Champion | None:
        """The newest version in `fallback_order` that loads (and verifies), or None. Versions that fail
        here are recorded in `failed_versions` and backed off like the alias's."""
        try:
            found = self._client.search_model_versions(f"name = '{self.model_name}'")
        except Exception as err:  # the registry is down: nothing to fall back to now
            log.error("cannot list the versions of %s to fall back to (%s)", self.model_name, type(err).__name__)
            return None
        runs = {str(mv.version): mv.run_id for mv in found}
        tags = {str(mv.version): dict(mv.tags or {}) for mv in found}
        for version in fallback_order(list(tags.items()), exclude):
            failure = self._failures.get(version)
            if failure is not None and time.monotonic() < failure.retry_at:
                continue
            try:
                return load_version(self._client, self.model_name, version, tags[version], run_id=runs[version],
                                    query_encoder=self.settings.query_encoder)
            except Exception as err:
                attempts = failure.attempts + 1 if failure else 1
                backoff = min(self.max_backoff_seconds, self.poll_seconds * 2 ** (attempts - 1))
                self._failures[version] = _Failure(attempts, time.monotonic() + backoff)
                message = f"fallback {self.model_name} v{version} failed ({type(err).__name__}): {_short(err)}"
                log.error(message)
                with self._lock:
                    self._status.failed_versions[version] = message
        return None

    def _retag(self, current: Champion, tags: dict[str, str], now: datetime) -> bool:
        where = f"{self.model_name} v{current.version}"
        try:
            rerank = rerank_settings(tags, current.recommender.item_ids, current.brands, where)
        except ChampionLoadError as err:
            self._record(
                now,
                f"new tags on {where} rejected: {err}; still serving its old tags",
                failed_version=current.version,
            )
            return False
        self._swap(replace(current, tags=tags, rerank=rerank), now)
        log.info("tags of %s changed; re-ranking share now %s", where, rerank.config.min_tail_share)
        return True

    def _swap(self, champion: Champion, now: datetime, fallback_for: str | None = None) -> None:
        with self._lock:
            self._current = champion  # the one reference assignment requests see
            self._status.last_checked = now
            self._status.last_error = None
            self._status.swaps += 1
            self._status.fallback_for = fallback_for

    def _record(self, now: datetime, error: str | None, failed_version: str | None = None) -> None:
        with self._lock:
            self._status.last_checked = now
            if error is not None:
                self._status.last_error = error
                self._status.last_error_at = now
            else:  # the alias points at the version we serve (again, e.g. after a rollback of a bad version)
                self._status.last_error = None
                self._status.fallback_for = None
            if failed_version is not None and error is not None:
                self._status.failed_versions[failed_version] = error

    # ---- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the champion now (if there is one), then poll in a daemon thread. Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("champion poll failed")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop polling and remove the current champion's download folder."""
        self.stop()
        current = self.current()
        if current is not None:
            shutil.rmtree(current.folder, ignore_errors=True)


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

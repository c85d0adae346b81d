"""The served history score in numpy: `HistoryTower`, the same maths as `BiEncoder.history_vector` and
`BiEncoder.logits` for a history query, kept because the torch path costs several times more per request
(benchmarks/results/scoring.md). `checked_tower` accepts it for a loaded model only if it reproduces the torch
model's vectors, full scores and top scores on random histories; otherwise the service scores with the torch
model (`ml.serving.scorer.Scorer`). A new model feature is written in `ml.training.model` and here, and the load-
time check refuses this path until both agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ml.item_tables import decayed_rows
from ml.search.dense import TOP_CANDIDATES, QuantizedItems, _matmul_t
from ml.topk import best
from ml.training.history_features import LEXICAL_DECAY, TRANSITION_DECAY
from ml.training.recommender import Recommender

log = logging.getLogger(__name__)


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
    # scipy sparse [n_items, n_items] table, decay); only those the model has (ml.training.item_table)
    item_tables: tuple[tuple[int, Any, float], ...] = ()
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
            if position < len(weights) and table is not None and table.size == n_items:
                tables.append((position, table.to_scipy(), decay))
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
        if self.item_tables:
            rows, used = self._padded(recents)
            for position, table, decay in self.item_tables:
                out += np.float32(weights[position]) * decayed_rows(table, rows, used, decay)

    def top(self, rows: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-n item rows (best first) and their full scores for one history (oldest first)."""
        return self.top_many([rows], n)[0]

    def top_many(self, histories: Sequence[Sequence[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The exact top-n item rows (best first) and their full scores for each history (oldest first).

        The same ranking as `scores` followed by a top-n, at a fraction of its cost. Each item's score gets
        an upper bound first, from two cheap parts:
        - the text similarity from the first pass of `QuantizedItems` (int8 or float32, whichever measured faster
          on the table at load): one matrix product for the whole batch (the table does not stay in the CPU's cache, and int8 reads a
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
                best(*self._exact_rows(r, q, row, every, w), n)
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
            out.append(best(rows, exact, n))
        return out

    @cached_property
    def _bound_rows(self) -> np.ndarray:
        """[4, n_items] what `top_many`'s per-history terms multiply: the first pass's two error terms, the
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
        """The item table of `top_many`'s first pass (int8 or float32, `QuantizedItems`) (built on first use: the warm-up builds it)."""
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


def checked_tower(recommender: Recommender, where: str, n_checks: int = 8, seed: int = 0) -> HistoryTower | None:
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
    # the served top (first pass, then exact scores; this also builds the first pass's table before the swap)
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

"""A shopper's recommendations: the model's own score of every item for their history, and its exact top-n.

The score has one implementation, `ml.training.model.BiEncoder` (what training optimizes and evaluation
measures, `BiEncoder.logits`); this module runs its parts on the loaded model, in torch without gradients,
on tensors that share the item table's memory. What serving adds is a faster way to the same top-n: the text
part of the score is linear in the item vector, so a first pass over the item table (`QuantizedItems`: int8 or float32, chosen at load) gives
every item an upper bound of its score in one integer product, and only the items whose bound can still
reach the n-th best are scored exactly, with the model's functions. The closest-history-item feature, whose
exact value needs a product with every history item, is bounded the same way and computed exactly for
those candidates only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch

from ml.search.dense import TOP_CANDIDATES, QuantizedItems
from ml.topk import best
from ml.training.model import BiEncoder, build_history_tensors
from ml.training.recommender import Recommender

log = logging.getLogger(__name__)


class Scorer:
    """The model's score and exact top-n for histories of item rows (oldest first, at least one row each).

    `exact_only` True skips the first pass: every item is scored exactly (a torch without its int8
    product, or a check of the first pass)."""

    def __init__(self, recommender: Recommender, exact_only: bool = False) -> None:
        self.model: BiEncoder = recommender.model.eval()
        self.max_history = recommender.settings.max_history
        self.item_vectors = recommender.item_vectors  # the item table in numpy, the first pass's source
        self.exact_only = exact_only
        with torch.inference_mode():
            self._bias = self.model.item_bias.weight[:, 0].detach().clone()
            self._norms = torch.linalg.vector_norm(self.model.item_table, dim=1).numpy()

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def _tensors(self, histories: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        if not histories or any(len(h) == 0 for h in histories):
            raise ValueError("every history needs at least one item row")
        device = self.model.item_table.device
        return {k: v.to(device) for k, v in build_history_tensors(histories, self.max_history).items()}

    def vectors(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, D] history-tower vectors (`BiEncoder.history_vector`)."""
        t = self._tensors(histories)
        with torch.inference_mode():
            return self.model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"]).numpy()

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, n_items] the full score of every item (`BiEncoder.logits`, a history query)."""
        t = self._tensors(histories)
        with torch.inference_mode():
            q = self.model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
            no_search = torch.zeros(len(histories))
            return self.model.logits(q, t["hist_idx"], t["hist_mask"], no_search).numpy()

    @cached_property
    def _closest_weight(self) -> float:
        """The closest-history-item feature's weight (0 when the model scores without it)."""
        weight = float(self.model.feature_weights.weight[BiEncoder.CLOSEST].detach())
        return weight if self.model.text_features else 0.0

    @cached_property
    def quantized(self) -> QuantizedItems:
        """The item table of the first pass (int8 or float32, `QuantizedItems`) (built on first use: the warm-up builds it)."""
        return QuantizedItems.of(self.item_vectors)

    def top_many(self, histories: Sequence[Sequence[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The exact top-n item rows (best first; equal scores: the lower row) and their scores for each
        history; the first pass is one product for the whole batch. The same ranking as
        `scores` followed by a top-n (the scores agree to float32 rounding: the parts are summed in
        another order).

        Each item's score gets an upper bound: the item bias and the behavioural part without the closest
        feature (exact, for every item), plus the first pass's text product and its error bound, plus
        |w| x |history item| x |item| for the closest feature (w its weight). The best candidates by that
        bound are scored exactly, then every other item whose bound still reaches the n-th best exact
        score found: the answer is exact whatever the rounding of the first pass."""
        model, t = self.model, self._tensors(histories)
        idx, mask = t["hist_idx"], t["hist_mask"]
        real = mask > 0
        n = min(n, self.n_items)
        w = self._closest_weight
        m = max(4 * n, TOP_CANDIDATES)
        with torch.inference_mode():
            q = model.history_vector(idx, t["hist_pos"], mask)  # [B, D]
            rest = self._bias + model.behaviour_scores(idx, mask, torch.zeros(len(histories)), closest=False)
            if self.exact_only or m >= self.n_items:  # a small catalogue: every item's exact score
                exact = self._exact(q, idx, real, rest, None).numpy()
                return [best(np.arange(self.n_items), row, n) for row in exact]
            factor = float(model.content_scale.log_scale.exp()) / model.temperature
            approx, factors = self.quantized.products((q * factor).numpy())
            rest_np = rest.numpy()
            # the closest feature's bound, (1 + 1e-5): float32 rounding of its products
            hist_norms = np.where(real.numpy(), self._norms[idx.numpy()], 0.0)
            reach = abs(w) * hist_norms.max(axis=1) * (1 + 1e-5)
            # float32 rounding of the sums here and in the exact score: 1e-6 of their size, and 1e-5
            size = np.maximum(rest_np.max(axis=1), -rest_np.min(axis=1)).astype(np.float64)
            q_norm, q_missed = factors[:, 0].astype(np.float64), factors[:, 1].astype(np.float64)
            terms = np.column_stack([q_norm, q_missed + 1e-6 * (q_norm + q_missed), reach, 1e-6 * size + 1e-5])
            upper = approx  # built in place: [B, 4] @ [4, n_items] adds every item's margin
            upper += rest_np
            upper += (terms * (1 + 1e-6)).astype(np.float32) @ self._bound_rows
            first_t = torch.topk(torch.from_numpy(upper), m, dim=1, sorted=False).indices  # unordered
            first_exact = self._exact(q, idx, real, rest, first_t).numpy()
            first = first_t.numpy()
            # every item that could still make its history's top n, not scored yet (one operation for the batch)
            thresholds = np.partition(first_exact, m - n, axis=1)[:, m - n]
            reachable = upper >= thresholds[:, None]
            np.put_along_axis(reachable, first, False, axis=1)
            owners, more = np.nonzero(reachable)  # by history, then by row
            bounds = np.searchsorted(owners, np.arange(len(histories) + 1))
            counts = np.diff(bounds)
            if counts.any():  # the extra items of every history scored in one call, padded with each one's first
                padded = np.repeat(first[:, :1], counts.max(), axis=1)
                slots = np.arange(len(more)) - np.repeat(bounds[:-1], counts)
                padded[owners, slots] = more
                extra_exact = self._exact(q, idx, real, rest, torch.from_numpy(padded)).numpy()
            out = []
            for b in range(len(histories)):
                rows, exact = first[b], first_exact[b]
                c = counts[b]
                if c:
                    rows, exact = np.concatenate([rows, padded[b, :c]]), np.concatenate([exact, extra_exact[b, :c]])
                out.append(best(rows, exact, n))
            return out

    def _exact(
        self, q: torch.Tensor, idx: torch.Tensor, real: torch.Tensor, rest: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        """[B, M] the full score of items `rows` [B, M] (None: every item): `rest` there plus the model's
        text part and weighted closest-history-item similarity."""
        if rows is None:
            closest = self.model.closest_similarity(idx, real) if self._closest_weight != 0.0 else 0.0
            return rest + self.model.text_scores(q) + self._closest_weight * closest
        return rest.gather(1, rows) + self.model.candidate_scores(q, idx, real, rows)

    @cached_property
    def _bound_rows(self) -> np.ndarray:
        """[4, n_items] what `top_many`'s per-history terms multiply: the first pass's two error terms, the
        item norms (the closest-similarity bound) and ones (the rounding margin)."""
        ones = np.ones(self.n_items, dtype=np.float32)
        return np.vstack([self.quantized.slack, self._norms[None, :], ones[None, :]]).astype(np.float32)


def scorer_for(recommender: Recommender, where: str) -> Scorer:
    """The scorer serving runs for a loaded model: with the int8 (or float32) first pass when this torch has its
    integer product, else scoring every item exactly (a warning says so)."""
    scorer = Scorer(recommender)
    try:
        scorer.quantized.products(recommender.item_vectors[:1])
    except (RuntimeError, NotImplementedError, AttributeError) as err:  # say, a torch without `_int_mm`
        log.warning("%s: no int8 first pass (%s); every item is scored exactly", where, err)
        return Scorer(recommender, exact_only=True)
    return scorer

"""Baselines on exactly the candidate's split: popularity, item co-occurrence, BM25, zero-shot MiniLM, and the
DP popularity and co-occurrence built on the candidate's own released transition counts.

Each baseline is fitted on the training window only and answers `recommend(histories, k)` with top-k
item ids per case, so the candidate and every baseline are measured by the same code on the same cases.

Each baseline says what it learns from shoppers (`learns`), because the gate compares the candidate only with
alternatives its policy would itself ship:

- `public`: catalogue text only (BM25, zero-shot MiniLM); no shopper data, no privacy cost.
- `private`: shoppers' data through a DP mechanism at the candidate's epsilon and delta. The DP baselines read the
  train stage's DP transition feature, the capped, Gaussian-noised transition counts the model itself was given
  (`ml.privacy.pair_counts.release_counts`). Ranking by those released counts, or by item popularity from their sums,
  is post-processing of a released output: it spends no further epsilon, and the candidate's (epsilon, delta)
  already covers it.
- `non_private`: raw counts of shoppers' events (popularity, co-occurrence). The policy would refuse such a model
  itself, so it is reported as the price of privacy, never used as the bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ml.item_tables import decayed_rows
from ml.lexical import BM25Index, words
from ml.topk import top_k

log = logging.getLogger(__name__)

PUBLIC, PRIVATE, NON_PRIVATE = "public", "private", "non_private"
LEARNS = (PUBLIC, PRIVATE, NON_PRIVATE)
SHIPPABLE = (PUBLIC, PRIVATE)  # what a policy requiring DP could itself ship
# Score cells ([histories, catalogue]) a batch of `recommend` holds: top_k copies and compares them, so the batch
# shrinks as the catalogue grows (512 histories up to 32,768 items, 83 at 200,000), bounding memory to a few
# hundred MB whatever the catalogue's size.
BATCH_CELLS = 2**24


@dataclass
class Baseline:
    """Scores every catalogue item for a history; subclasses fill `_scores`."""

    item_ids: list[str]
    name: str = "baseline"
    learns: str = NON_PRIVATE  # what it learns from shoppers: public | private | non_private (module docstring)
    index_of: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.learns not in LEARNS:
            raise ValueError(f"baseline {self.name!r}: learns={self.learns!r} is not one of {', '.join(LEARNS)}")
        self.index_of = {item: i for i, item in enumerate(self.item_ids)}

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, histories: Sequence[Sequence[str]], k: int, batch: int = 512) -> list[list[str]]:
        idx = [[self.index_of[i] for i in h if i in self.index_of] for h in histories]
        out: list[list[str]] = []
        batch = max(1, min(batch, BATCH_CELLS // max(1, len(self.item_ids))))
        for start in range(0, len(idx), batch):
            top = top_k(self._scores(idx[start : start + batch]), k)
            out.extend([[self.item_ids[j] for j in row] for row in top])
        return out


@dataclass
class Popularity(Baseline):
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = "popularity"

    @classmethod
    def fit(cls, item_ids: list[str], sequences: pd.DataFrame) -> Popularity:
        model = cls(item_ids=item_ids)
        model.counts = _popularity(model.index_of, sequences)
        return model

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))


def _popularity(index_of: dict[str, int], sequences: pd.DataFrame) -> np.ndarray:
    counts = np.zeros(len(index_of), dtype=np.float32)
    for item, n in sequences["item_id"].value_counts().items():
        if item in index_of:
            counts[index_of[item]] = n
    return counts


@dataclass
class Cooccurrence(Baseline):
    """Item-to-item transition counts within a window, weighted by gap and recency (a strong baseline).

    `matrix` is a float32 csr (n, n): only the pairs seen, so a large catalogue with few events stays small."""

    matrix: sparse.csr_matrix = field(default_factory=lambda: sparse.csr_matrix((0, 0), dtype=np.float32))
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recency: float = 0.3
    history: int = 10  # newest history items read
    name: str = "cooccurrence"

    @classmethod
    def fit(cls, item_ids: list[str], sequences: pd.DataFrame, window: int = 5, gap_decay: float = 0.6) -> Cooccurrence:
        """Each item followed `gap` (1..window) positions later in a shopper's sequence (of catalogue items, in
        the frame's order) adds gap_decay**(gap - 1) to matrix[earlier, later]."""
        if window < 1:
            raise ValueError(f"the co-occurrence window must be at least 1 position, got {window}")
        model = cls(item_ids=item_ids)
        n = len(item_ids)
        idx = sequences["item_id"].map(model.index_of)
        known = (idx.notna() & sequences["user_id"].notna()).to_numpy()
        items = idx.to_numpy()[known].astype(np.int64)
        users = pd.factorize(sequences["user_id"].to_numpy()[known])[0]
        order = np.argsort(users, kind="stable")  # each shopper's events together, in the frame's order
        items, users = items[order], users[order]
        src, dst, val = [], [], []
        for gap in range(1, window + 1):
            same = users[:-gap] == users[gap:]
            src.append(items[:-gap][same])
            dst.append(items[gap:][same])
            val.append(np.full(int(same.sum()), gap_decay ** (gap - 1)))
        counts = sparse.coo_matrix(
            (np.concatenate(val), (np.concatenate(src), np.concatenate(dst))), shape=(n, n), dtype=np.float64
        )
        model.matrix = counts.tocsr().astype(np.float32)  # duplicates summed in float64
        model.popularity = _popularity(model.index_of, sequences)
        return model

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        rows = np.zeros((len(histories), self.history), dtype=np.int64)
        real = np.zeros((len(histories), self.history), dtype=bool)
        for row, hist in enumerate(histories):
            newest = list(reversed(hist[-self.history :]))
            rows[row, : len(newest)] = newest
            real[row, : len(newest)] = True
        out = decayed_rows(self.matrix, rows, real, 1 - self.recency)
        # popularity only breaks ties among items the history says nothing about
        return out + 1e-6 * self.popularity / max(1.0, float(self.popularity.max()))


@dataclass
class BM25(Baseline):
    """Text retrieval: the titles of the shopper's last items as the query against item text."""

    name: str = "bm25"
    learns: str = PUBLIC
    texts: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._bm25 = BM25Index(self.texts)

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        queries = [words(" ".join(self.titles[i] for i in hist[-3:])) for hist in histories]
        return self._bm25.scores(queries, dtype=np.float32)


@dataclass
class ZeroShot(Baseline):
    """The pretrained MiniLM, not fine-tuned: history = recency-decayed mean of its item vectors."""

    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    decay: float = 0.5
    name: str = "zero_shot_minilm"
    learns: str = PUBLIC

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        q = np.zeros((len(histories), self.vectors.shape[1]), dtype=np.float32)
        for row, hist in enumerate(histories):
            for age, item in enumerate(reversed(hist[-10:])):
                q[row] += np.float32(self.decay**age) * self.vectors[item]
        return q @ self.vectors.T


def released_counts(item_ids: list[str], log_counts: sparse.spmatrix | np.ndarray) -> sparse.csr_matrix:
    """The transition counts the train stage released, from the model's table of their log1p (post-processing),
    as a float32 csr (n, n).

    The table is ``log1p(max(noisy count - floor, 0))`` (ml.privacy.transitions.transition_feature): a scipy sparse
    matrix (what the model holds, `transition_table`), or a dense array. expm1 gives back the floored noisy counts,
    which rank exactly as the table does; a 0 stays 0, so the result is as sparse as the table."""
    n = len(item_ids)
    shape = getattr(log_counts, "shape", None)
    if shape != (n, n):
        raise ValueError(
            f"the transition table is {shape}, not {n} x {n} for the catalogue's {n} items; pass "
            "the table of the model trained on this catalogue (transition_table(recommender))"
        )
    table = sparse.csr_matrix(log_counts, dtype=np.float64, copy=True)  # the model's table is left as it is
    table.data = np.expm1(np.maximum(table.data, 0.0))
    table.eliminate_zeros()
    return table.astype(np.float32)


def transition_table(rec: Any) -> sparse.csr_matrix:
    """The released DP transition table (log1p of the counts) of a loaded `Recommender`, as a csr (n, n).

    The model's `ItemTable` gives it by `to_scipy()`."""
    return sparse.csr_matrix(rec.model.transitions.to_scipy())


class _FromReleasedCounts:
    """A private baseline: built from the model's released DP counts, never fitted on raw events."""

    @classmethod
    def fit(cls, *args: object, **kwargs: object) -> Any:
        raise TypeError(
            f"{cls.__name__} is built from released DP counts, never fitted on raw events: use "
            "from_transitions(item_ids, transition_table(recommender))"
        )


@dataclass
class DPPopularity(_FromReleasedCounts, Popularity):
    """Items ranked by how often they follow another item in the released DP transition counts (column sums)."""

    name: str = "dp_popularity"
    learns: str = PRIVATE

    @classmethod
    def from_transitions(cls, item_ids: list[str], log_counts: sparse.spmatrix | np.ndarray) -> DPPopularity:
        model = cls(item_ids=item_ids)
        model.counts = np.asarray(released_counts(item_ids, log_counts).sum(axis=0), dtype=np.float32).ravel()
        return model


@dataclass
class DPCooccurrence(_FromReleasedCounts, Cooccurrence):
    """Co-occurrence scoring (recency-weighted rows of the history's items) on the released DP transition counts,
    ties broken by the DP popularity from the same counts."""

    name: str = "dp_cooccurrence"
    learns: str = PRIVATE

    @classmethod
    def from_transitions(cls, item_ids: list[str], log_counts: sparse.spmatrix | np.ndarray) -> DPCooccurrence:
        model = cls(item_ids=item_ids)
        model.matrix = released_counts(item_ids, log_counts)
        model.popularity = np.asarray(model.matrix.sum(axis=0), dtype=np.float32).ravel()
        return model


def best_baseline(ndcg: dict[str, float], learns: dict[str, str], kinds: tuple[str, ...]) -> str | None:
    """The name of the baseline with the highest NDCG among those whose `learns` is one of `kinds` (None if none);
    ties go to the first in name order, so the choice never depends on dict order."""
    eligible = sorted(name for name in ndcg if learns.get(name) in kinds)
    return max(eligible, key=lambda name: ndcg[name]) if eligible else None


def zero_shot_encoder() -> Callable[[Sequence[str], int], np.ndarray]:
    """The pretrained MiniLM, not fine-tuned: (texts, max_tokens) -> L2-normalized vectors, encoded as the
    bi-encoder encodes them (the ZeroShot baseline of recommendation, and of search)."""
    from ml.training.encoder import load_encoder
    from ml.training.model import BiEncoder

    bert, tokenizer = load_encoder()
    model = BiEncoder(bert, n_items=1, trainable_layers=0)
    return lambda texts, max_tokens: model.encode_texts(tokenizer, list(texts), max_tokens).numpy()

"""Ranking and beyond-accuracy metrics for top-k recommendation lists.

Inputs are plain Python sequences so any recommender (the model, a baseline, a re-ranker) can be scored the
same way: `recommendations[i]` is the ranked list of item ids for case i (best first) and `targets[i]` is the
relevant item id of that case, or a collection of relevant item ids. Relevance is binary.

Per-case definitions, with `rel@i` = 1 when the item at rank i (1-based) is relevant:

- ndcg:   sum_{i<=k} rel@i / log2(i + 1)  /  sum_{i <= min(k, n_relevant)} 1 / log2(i + 1)
- recall: relevant items found in the top k / n_relevant
- hit:    1 if any relevant item is in the top k, else 0
- rr:     1 / rank of the first relevant item within the top k, 0 if none
- ap:     sum_{i<=k} rel@i * precision@i / min(k, n_relevant)

An item repeated within one list counts once, at its first position.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)

Target = str | Collection[str]

PER_CASE_COLUMNS = ("ndcg", "recall", "hit", "rr", "ap")
PERSONALIZATION_MAX_CASES = 2000
PERSONALIZATION_SEED = 0
_CHUNK = 1024  # cases per block when computing intra-list diversity


def relevant_set(target: Target) -> frozenset[str]:
    """The relevant item ids of one case: a single id or a collection of ids."""
    if isinstance(target, str):
        return frozenset((target,))
    return frozenset(target)


def check_cases(recommendations: Sequence[Sequence[str]], targets: Sequence[Target], k: int) -> None:
    """Refuse a cutoff below 1 and a target list that does not pair one to one with the recommended lists."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(recommendations) != len(targets):
        raise ValueError(
            f"recommendations has {len(recommendations)} cases but targets has {len(targets)}; "
            "pass one target (or collection of targets) per recommended list, in the same order"
        )


def _check_inputs(recommendations: Sequence[Sequence[str]], targets: Sequence[Target], k: int) -> None:
    check_cases(recommendations, targets, k)
    if len(recommendations) == 0:
        raise ValueError("no cases to evaluate: recommendations and targets are empty")


def _top_k(items: Sequence[str], k: int) -> list[str]:
    """The first k distinct items of a ranked list (a repeated item keeps its first position)."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item in seen:
            continue
        seen.add(item)
        out.append(item)
        if len(out) == k:
            break
    return out


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def case_metrics(ranked: Sequence[str], target: Target, k: int) -> dict[str, float]:
    """ndcg, recall, hit, rr and ap at k of one ranked list against its relevant item(s)."""
    relevant = relevant_set(target)
    if not relevant:
        raise ValueError("a case has no relevant item; drop cases without a target before evaluating")
    top = _top_k(ranked, k)
    disc = _discounts(k)
    dcg = 0.0
    hits = 0
    precision_sum = 0.0
    first_rank = 0
    for rank, item in enumerate(top, start=1):
        if item in relevant:
            hits += 1
            dcg += disc[rank - 1]
            precision_sum += hits / rank
            if first_rank == 0:
                first_rank = rank
    n_ideal = min(k, len(relevant))
    idcg = float(disc[:n_ideal].sum())
    return {
        "ndcg": dcg / idcg,
        "recall": hits / len(relevant),
        "hit": 1.0 if hits else 0.0,
        "rr": 1.0 / first_rank if first_rank else 0.0,
        "ap": precision_sum / n_ideal,
    }


def per_case_metrics(recommendations: Sequence[Sequence[str]], targets: Sequence[Target], k: int) -> pd.DataFrame:
    """One row per case, in input order, with columns ndcg, recall, hit, rr, ap (all at k)."""
    _check_inputs(recommendations, targets, k)
    rows = []
    for i, (ranked, target) in enumerate(zip(recommendations, targets, strict=True)):
        try:
            rows.append(case_metrics(ranked, target, k))
        except ValueError as err:
            raise ValueError(f"case {i}: {err}") from err
    return pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS))


def summarize(per_case: pd.DataFrame, k: int) -> dict[str, float]:
    """Mean of per-case metrics under the house names (ndcg_at_k, recall_at_k, hr_at_k, mrr, map_at_k)."""
    means = per_case[list(PER_CASE_COLUMNS)].mean()
    return {
        f"ndcg_at_{k}": float(means["ndcg"]),
        f"recall_at_{k}": float(means["recall"]),
        f"hr_at_{k}": float(means["hit"]),
        "mrr": float(means["rr"]),
        f"map_at_{k}": float(means["ap"]),
    }


def ranking_metrics(recommendations: Sequence[Sequence[str]], targets: Sequence[Target], k: int) -> dict[str, float]:
    """Means over cases: ndcg_at_k, recall_at_k, hr_at_k, mrr (reciprocal rank within k), map_at_k."""
    return summarize(per_case_metrics(recommendations, targets, k), k)


# ----------------------------------------------------------------------------------------- beyond accuracy


def gini(values: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = perfectly equal, (n-1)/n = all mass on one value."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    if x[0] < 0:
        raise ValueError("gini needs non-negative values")
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * x.sum()))


def personalization(tops: Sequence[Sequence[str]], max_cases: int = PERSONALIZATION_MAX_CASES) -> float | None:
    """1 - mean pairwise cosine similarity of the cases' top-k sets seen as binary item vectors.

    At most `max_cases` cases are used (a fixed-seed sample), so the pairwise matrix stays small.
    None when fewer than two cases.
    """
    n = len(tops)
    if n < 2:
        return None
    if n > max_cases:
        rng = np.random.default_rng(PERSONALIZATION_SEED)
        chosen = np.sort(rng.choice(n, size=max_cases, replace=False))
        tops = [tops[i] for i in chosen]
        n = max_cases
    index: dict[str, int] = {}
    rows, cols = [], []
    for r, top in enumerate(tops):
        for item in set(top):
            rows.append(r)
            cols.append(index.setdefault(item, len(index)))
    x = sparse.csr_matrix((np.ones(len(rows)), (np.asarray(rows), np.asarray(cols))), shape=(n, max(len(index), 1)))
    norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    x = sparse.diags(1.0 / norms) @ x
    sim = (x @ x.T).toarray()
    off_diagonal = (sim.sum() - np.trace(sim)) / (n * (n - 1))
    return float(1.0 - off_diagonal)


def intra_list_diversity(tops: Sequence[Sequence[str]], item_vectors: Mapping[str, np.ndarray] | None) -> float | None:
    """Mean over lists of the mean pairwise (1 - cosine) of item vectors inside a list.

    Items without a vector are skipped; lists with fewer than two vectors do not count. None when no vectors.
    """
    if not item_vectors:
        return None
    names = list(item_vectors)
    pos = {name: i for i, name in enumerate(names)}
    mat = np.stack([np.asarray(item_vectors[n], dtype=np.float64).ravel() for n in names])
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    mat = np.vstack([mat / norms, np.zeros((1, mat.shape[1]))])  # last row: "no vector"
    missing = len(names)
    width = max((len(t) for t in tops), default=0)
    if width < 2:
        return None
    idx = np.full((len(tops), width), missing, dtype=np.int64)
    for r, top in enumerate(tops):
        idx[r, : len(top)] = [pos.get(item, missing) for item in top]
    per_list: list[np.ndarray] = []
    upper = np.triu(np.ones((width, width), dtype=bool), k=1)
    for start in range(0, len(tops), _CHUNK):
        block = idx[start : start + _CHUNK]
        vecs = mat[block]  # (b, width, d)
        sim = np.einsum("bid,bjd->bij", vecs, vecs)
        valid = block != missing
        pair_mask = valid[:, :, None] & valid[:, None, :] & upper[None]
        n_pairs = pair_mask.sum(axis=(1, 2))
        dist = np.where(pair_mask, 1.0 - sim, 0.0).sum(axis=(1, 2))
        keep = n_pairs > 0
        per_list.append(dist[keep] / n_pairs[keep])
    values = np.concatenate(per_list) if per_list else np.array([])
    if values.size == 0:
        return None
    return float(values.mean())


def beyond_accuracy(
    recommendations: Sequence[Sequence[str]],
    k: int,
    n_catalog: int,
    item_popularity: Mapping[str, float],
    item_vectors: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float | None]:
    """Catalog-level qualities of the top-k lists.

    `item_popularity` holds interaction counts per item (training window). Returned keys:
    coverage (distinct recommended items / n_catalog), personalization, intra_list_diversity (None without
    vectors), novelty (mean -log2(count / total count) over recommended slots; an unseen item counts 1),
    avg_rec_popularity (mean count of the recommended items, unseen = 0), gini_exposure (Gini of how often
    each catalog item is recommended, never-recommended items included as zeros).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(recommendations) == 0:
        raise ValueError("no cases: recommendations is empty")
    tops = [_top_k(r, k) for r in recommendations]
    counts = Counter(item for top in tops for item in top)
    if n_catalog < len(counts):
        raise ValueError(
            f"n_catalog={n_catalog} but {len(counts)} distinct items were recommended; "
            "pass the size of the whole catalog the recommender ranks over"
        )
    total_pop = float(sum(item_popularity.values()))
    if total_pop <= 0:
        raise ValueError("item_popularity sums to 0; pass interaction counts from the training window")
    slots = [item for top in tops for item in top]
    pops = np.array([float(item_popularity.get(item, 0.0)) for item in slots])
    self_info = -np.log2(np.maximum(pops, 1.0) / total_pop)
    exposure = np.zeros(n_catalog)
    exposure[: len(counts)] = list(counts.values())
    return {
        "coverage": len(counts) / n_catalog,
        "personalization": personalization(tops),
        "intra_list_diversity": intra_list_diversity(tops, item_vectors),
        "novelty": float(self_info.mean()) if slots else math.nan,
        "avg_rec_popularity": float(pops.mean()) if slots else math.nan,
        "gini_exposure": gini(exposure),
    }


def graded_ndcg(ranked: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    """NDCG@k with graded relevance: sum_{i<=k} gain(item@i) / log2(i + 1), over the same sum of the best possible
    order of the judged gains; an item without a gain (not judged) gains 0. Undefined (NaN) when nothing gains."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return float("nan")
    top = _top_k(ranked, k)
    dcg = float(sum(gains.get(item, 0.0) * d for item, d in zip(top, _discounts(len(top)), strict=True)))
    return dcg / float(np.dot(ideal, _discounts(len(ideal))))

"""Exact top-n by inner product over a large table, fast: an int8 first pass with an error bound, then exact scores.

Used for both halves of serving: a shopper's recommendations (`ml.serving.scorer.Scorer.top_many`,
whose score adds behavioural terms to the bound) and search's dense side (`DenseIndex`: the query vector
against the items' augmented vectors, the model's own score). The answer is always the exact top-n, whatever
the rounding of the first pass: every item whose upper bound still reaches the n-th best exact score is scored
exactly. It replaced a flat FAISS scan in serving because it reads a quarter of the memory per query; the
serving benchmark's floors (benchmarks/results/serving.md) keep the bare FAISS scan for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.topk import best


@dataclass(frozen=True)
class QuantizedItems:
    """The item table in int8, one scale per item, and what bounds the error of a product with it.

    Item i is s_i x c_i + e_i (c_i int8 in [-127, 127], s_i = max |v_i| / 127); a query q (float32) is
    t x d + e (t, d the same way). The integer product d . c_i is exact (int32: at most 127^2 x D), so
        q . v_i = t s_i (d . c_i) + q . e_i + e . (s_i c_i),
    and the error of the first pass is at most |q| |e_i| + |e| |s_i c_i|. A margin of 1e-4 |q| |v_i| covers
    float32 rounding (the scaling here, and the float32 dot product it is compared with: at most
    D x 2^-24 |q| |v_i| with D <= 1024). The integer product (`torch._int_mm`) reads a quarter of the memory
    a float32 one does, which is what a product with a large table waits for (benchmarks/results/serving.md).
    """

    codes_t: torch.Tensor  # [D', n_items] int8, a transposed view (D' = D padded to a multiple of 8)
    scales: np.ndarray  # [n_items] float32
    # [2, n_items]: |e_i| + 1e-4 |v_i| (times |q|), and |s_i c_i| (times |e|)
    slack: np.ndarray

    @classmethod
    def of(cls, vectors: np.ndarray) -> QuantizedItems:
        codes, scales, residual = _quantize(vectors)
        exact = codes.astype(np.float64) * scales[:, None].astype(np.float64)
        slack = np.stack(
            [
                _up(residual + 1e-4 * np.linalg.norm(vectors.astype(np.float64), axis=1)),
                _up(np.linalg.norm(exact, axis=1)),
            ]
        )
        return cls(torch.from_numpy(_pad8(codes)).T, scales, slack)

    def products(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([B, n_items] approximate products with every item, [B, 2] the factors of `slack` that bound
        their error: |q| and |e| per query)."""
        codes, scales, residual = _quantize(queries)
        integers = torch._int_mm(torch.from_numpy(_pad8(codes)), self.codes_t).numpy()
        approx = integers.astype(np.float32)
        approx *= scales[:, None]
        approx *= self.scales[None, :]
        factors = np.column_stack([_up(np.linalg.norm(queries.astype(np.float64), axis=1)), _up(residual)])
        return approx, factors


def _quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric int8 codes of each row, the row's float32 scale, and the norm of what the codes miss."""
    x64 = x.astype(np.float64)
    scales = (np.abs(x64).max(axis=1) / 127).astype(np.float32)
    scales[scales == 0] = 1  # a zero row: codes 0, nothing missed
    codes = np.clip(np.rint(x64 / scales[:, None]), -127, 127)
    residual = np.linalg.norm(x64 - codes * scales[:, None].astype(np.float64), axis=1)
    return codes.astype(np.int8), scales, residual


def _pad8(codes: np.ndarray) -> np.ndarray:
    """Zero columns up to a multiple of 8 (the integer kernel's requirement; they add nothing)."""
    extra = -codes.shape[1] % 8
    return np.ascontiguousarray(np.pad(codes, ((0, 0), (0, extra))) if extra else codes)


def _up(x: np.ndarray) -> np.ndarray:
    """float64 -> float32, rounded up (a bound stays a bound)."""
    down = x.astype(np.float32)
    return np.where(down.astype(np.float64) < x, np.nextafter(down, np.float32(np.inf)), down).astype(np.float32)


def _matmul_t(queries: np.ndarray, table: np.ndarray) -> np.ndarray:
    """queries @ table.T as a new float32 array [B, n_items], on the calling thread (one thread).

    For more than one query, torch's product (no copy of the table: `from_numpy` shares its memory), which
    ran a batch faster than numpy's OpenBLAS on the serving machines; one matrix-vector product both do
    about as fast (benchmarks/results/serving.md).
    """
    if len(queries) == 1:
        return (table @ queries[0])[None, :]
    return (torch.from_numpy(np.ascontiguousarray(queries)) @ torch.from_numpy(table).T).numpy()


TOP_CANDIDATES = 64  # the smallest first candidate set scored exactly (`DenseIndex.search`, `Scorer.top_many`)


class DenseIndex:
    """The exact top-n rows of `table` by inner product with each query vector (ties: the lower row)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.quantized = QuantizedItems.of(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def search(self, queries: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (rows, float32 scores) of the n best, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_rows = len(self.table)
        n = min(n, n_rows)
        m = max(4 * n, TOP_CANDIDATES)
        if m >= n_rows:  # a small table: every exact score
            every = np.arange(n_rows)
            return [best(every, row, n) for row in _matmul_t(queries, self.table)]
        approx, factors = self.quantized.products(queries)
        upper = approx  # built in place: the approximate product plus its error bound, (1 + 1e-6) for rounding
        upper += (factors * (1 + 1e-6)).astype(np.float32) @ self.quantized.slack
        first = np.argpartition(-upper, m - 1, axis=1)[:, :m]  # each row's m best bounds, unordered
        first_exact = np.einsum("bd,bmd->bm", queries, self.table[first])
        # every row whose bound reaches the n-th best exact score found, and not scored yet
        thresholds = np.partition(first_exact, m - n, axis=1)[:, m - n]
        reachable = upper >= thresholds[:, None]
        np.put_along_axis(reachable, first, False, axis=1)
        out = []
        for b, query in enumerate(queries):
            rows, exact = first[b], first_exact[b]
            more = np.flatnonzero(reachable[b])
            if len(more):
                rows = np.concatenate([rows, more])
                exact = np.concatenate([exact, self.table[more] @ query])
            out.append(best(rows, exact, n))
        return out

"""Exact top-n by inner product over a large table, fast: a first pass with an error bound, then exact scores.

Used for both halves of serving: a shopper's recommendations (`ml.serving.scorer.Scorer.top_many`,
whose score adds behavioural terms to the bound) and search's dense side (`DenseIndex`: the query vector
against the items' augmented vectors, the model's own score). The answer is always the exact top-n, whatever
the rounding of the first pass: every item whose upper bound still reaches the n-th best exact score is scored
exactly. The first pass is an int8 product (a quarter of the memory read per query) or a float32 one, whichever
ran faster on this machine and this table when the table was loaded (`time_first_passes`): the int8 kernel is
fast where the CPU has integer dot-product instructions, and several times slower than float32 where it has
not (benchmarks/results/serving-first-pass.md). `VETTED_DENSE_FIRST_PASS` = int8 | float32 | auto forces one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ml.topk import best

log = logging.getLogger(__name__)

FIRST_PASS_ENV = "VETTED_DENSE_FIRST_PASS"
FIRST_PASSES = ("int8", "float32")
# the batch sizes the choice is measured on: one query, and the most searches or recommendations the service
# ranks together (`ml.serving.batching.DEFAULT_MAX_BATCH`, not imported: that module imports this one); each on
# at most this many rows of the table (its first), which bounds the measurement's time (a batch's product with
# a whole large table takes a second where the int8 kernel is slow: benchmarks/results/serving-first-pass.md).
# One query reads more rows: its product waits on memory, which a small table's cache hides.
MEASURED_BATCHES = (1, 32)
MEASURED_ROWS = (16384, 1024)
MEASURE_SECONDS = 0.05  # rounds of the measurement stop after this: at least 2 (one can fall on a hiccup), at most 5
_MIN_ROUNDS, _MAX_ROUNDS = 2, 5


@dataclass(frozen=True)
class QuantizedItems:
    """The item table as the first pass reads it, and what bounds the error of a product with it.

    int8 (`first_pass` "int8"): item i is s_i x c_i + e_i (c_i int8 in [-127, 127], s_i = max |v_i| / 127); a
    query q (float32) is t x d + e (t, d the same way). The integer product d . c_i is exact (int32: at most
    127^2 x D), so
        q . v_i = t s_i (d . c_i) + q . e_i + e . (s_i c_i),
    and the error of the first pass is at most |q| |e_i| + |e| |s_i c_i|. A margin of 1e-4 |q| |v_i| covers
    float32 rounding (the scaling here, and the float32 dot product it is compared with: at most
    D x 2^-24 |q| |v_i| with D <= 1024). The integer product (`torch._int_mm`) reads a quarter of the memory
    a float32 one does.

    float32 (`first_pass` "float32"): the first pass is the float32 product itself; it and the exact score
    it is compared with are two float32 dot products, each within D x 2^-24 |q| |v_i| of the real one
    (`_float_margin`), the only error.

    Either way `products` gives the approximate products and two factors per query whose product with
    `slack` bounds their error: the callers build their bounds from these alone.
    """

    codes_t: torch.Tensor | None  # [D', n_items] int8, a transposed view (D' = D padded to a multiple of 8)
    scales: np.ndarray  # [n_items] float32 (int8 only; ones for float32)
    # [2, n_items]: int8: |e_i| + 1e-4 |v_i| (times |q|), and |s_i c_i| (times |e|); float32: the rounding
    # margin times |v_i| (times |q|), and zeros
    slack: np.ndarray
    first_pass: str = "int8"
    table: np.ndarray | None = None  # [n_items, D] float32 (float32 only)
    # the measured seconds of each pass per batch size in `MEASURED_BATCHES`, scaled to the whole table (empty
    # when forced)
    timings: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, vectors: np.ndarray, first_pass: str | None = None) -> QuantizedItems:
        """The first pass over `vectors` [n_items, D]: `first_pass` "int8" or "float32", or "auto" (the
        default, or `VETTED_DENSE_FIRST_PASS`) for whichever runs faster here (`time_first_passes`; only the
        chosen one is built over the whole table). A failing int8 product raises, as it would at the first
        query: the callers have their fallbacks."""
        mode = first_pass_setting(first_pass)
        if vectors.ndim != 2:
            raise ValueError(f"the first pass needs an [n_items, D] table, got shape {vectors.shape}")
        if mode == "auto" and len(vectors):  # an empty table: nothing to time
            times = time_first_passes(vectors)
            mode = min(times, key=lambda name: sum(times[name]))
            log.info(
                "dense first pass over %d items: %s (best ms per batch of %s, scaled to the whole table: %s)",
                len(vectors),
                mode,
                "/".join(str(b) for b in MEASURED_BATCHES),
                ", ".join(f"{name} " + "/".join(f"{1000 * t:.2f}" for t in times[name]) for name in times),
            )
            return replace(cls.int8(vectors) if mode == "int8" else cls.floats(vectors), timings=times)
        return cls.int8(vectors) if mode == "int8" else cls.floats(vectors)

    @classmethod
    def int8(cls, vectors: np.ndarray) -> QuantizedItems:
        """The int8 first pass (no measurement)."""
        codes, scales, residual = _quantize(vectors)
        exact = codes.astype(np.float64) * scales[:, None].astype(np.float64)
        slack = np.stack(
            [
                _up(residual + 1e-4 * np.linalg.norm(vectors.astype(np.float64), axis=1)),
                _up(np.linalg.norm(exact, axis=1)),
            ]
        )
        return cls(torch.from_numpy(_pad8(codes)).T, scales, slack)

    @classmethod
    def floats(cls, vectors: np.ndarray) -> QuantizedItems:
        """The float32 first pass (no measurement; no copy of a contiguous float32 table)."""
        table = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(table.astype(np.float64), axis=1)
        slack = np.stack([_up(_float_margin(table.shape[1]) * norms), np.zeros(len(table), dtype=np.float32)])
        return cls(None, np.ones(len(table), dtype=np.float32), slack, "float32", table)

    def head(self, rows: int) -> QuantizedItems:
        """The first pass over the first `rows` items only (views, no copy): what `time_first_passes` times."""
        return QuantizedItems(
            None if self.codes_t is None else self.codes_t[:, :rows],
            self.scales[:rows],
            self.slack[:, :rows],
            self.first_pass,
            None if self.table is None else self.table[:rows],
        )

    def products(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([B, n_items] approximate products with every item, [B, 2] the factors of `slack` that bound
        their error: |q| and |e| per query (float32: |q| and 0))."""
        q_norms = _up(np.linalg.norm(queries.astype(np.float64), axis=1))
        if self.table is not None:
            approx = _matmul_t(np.ascontiguousarray(queries, dtype=np.float32), self.table)
            return approx, np.column_stack([q_norms, np.zeros_like(q_norms)])
        if self.codes_t is None:
            raise ValueError("this QuantizedItems has neither int8 codes nor a float32 table")
        codes, scales, residual = _quantize(queries)
        integers = torch._int_mm(torch.from_numpy(_pad8(codes)), self.codes_t).numpy()
        approx = integers.astype(np.float32)
        approx *= scales[:, None]
        approx *= self.scales[None, :]
        return approx, np.column_stack([q_norms, _up(residual)])


def first_pass_setting(first_pass: str | None = None) -> str:
    """The first pass asked for, "int8", "float32" or "auto": `first_pass` if given, else
    `VETTED_DENSE_FIRST_PASS`, else "auto"."""
    value = first_pass if first_pass is not None else (os.environ.get(FIRST_PASS_ENV, "") or "auto")
    if value not in (*FIRST_PASSES, "auto"):
        raise ValueError(f"the dense first pass must be int8, float32 or auto, got {value!r} (see {FIRST_PASS_ENV})")
    return value


def time_first_passes(vectors: np.ndarray) -> dict[str, list[float]]:
    """Seconds of each first pass ("int8", "float32") per batch size of `MEASURED_BATCHES`, best of the rounds,
    scaled to the whole table: each batch is timed over the table's first `MEASURED_ROWS` items (both products
    are linear in the number of items), with rows of the table as queries, on one thread (as the service runs
    them). Each pass runs once untimed (a kernel's first call sets it up), then rounds of every batch size and
    pass, interleaved (load from other processes falls on both), until `MEASURE_SECONDS` are spent (at least
    `_MIN_ROUNDS`). Only the rows timed are quantized. A failing int8 product raises."""
    n = len(vectors)
    rows = [min(n, r) for r in MEASURED_ROWS]
    head = np.ascontiguousarray(vectors[: max(rows)], dtype=np.float32)
    rng = np.random.default_rng(0)
    batches = [head[rng.integers(0, len(head), size=b)] for b in MEASURED_BATCHES]
    built = {"int8": QuantizedItems.int8(head), "float32": QuantizedItems.floats(head)}
    passes = {name: [q.head(r).products for r in rows] for name, q in built.items()}
    times = {name: [np.inf] * len(batches) for name in passes}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for runs in passes.values():
                runs[0](batches[0])
            deadline = time.perf_counter() + MEASURE_SECONDS
            for rounds in range(_MAX_ROUNDS):
                for i, queries in enumerate(batches):
                    for name, runs in passes.items():
                        t0 = time.perf_counter()
                        runs[i](queries)
                        times[name][i] = min(times[name][i], (time.perf_counter() - t0) * n / rows[i])
                if rounds + 1 >= _MIN_ROUNDS and time.perf_counter() > deadline:
                    break
    finally:
        torch.set_num_threads(threads)
    return times


def _float_margin(d: int) -> float:
    """The float32 first pass's error bound, as a multiple of |q| |v_i|: two float32 dot products of d terms
    (the first pass and the exact score), each within gamma_d = d u / (1 - d u) of the real product (u =
    2^-24, any order of summation), and 8 u more for the sums and scalings of the bound itself."""
    u = 2.0**-24
    return 2 * d * u / (1 - d * u) + 8 * u


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

    def __init__(self, table: np.ndarray, first_pass: str | None = None) -> None:
        """`first_pass`: "int8", "float32" or "auto" (None: `VETTED_DENSE_FIRST_PASS`, else auto: the faster
        here, measured now). Where the int8 product fails (a torch without it), auto takes float32."""
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        try:
            self.quantized = QuantizedItems.of(self.table, first_pass)
        except (RuntimeError, NotImplementedError, AttributeError) as err:
            if first_pass_setting(first_pass) != "auto":
                raise
            log.warning("dense first pass: the int8 product failed (%s); float32 first pass", err)
            self.quantized = QuantizedItems.floats(self.table)

    @property
    def first_pass(self) -> str:
        """The first pass this index runs: "int8" or "float32"."""
        return self.quantized.first_pass

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

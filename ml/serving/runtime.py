"""How the serving process runs its numeric work: one thread per request for BLAS and OpenMP, and a garbage
collector that does not walk the long-lived heap.

Requests already run in parallel (the scoring thread, the thread pool that runs /search, the event loop),
so one request's work stays on one thread: a library that splits a small product over every core makes
the other requests wait and spins the core the event loop needs. The measurements behind each rule are in
benchmarks/results/serving.md.
"""

from __future__ import annotations

import gc
import threading

import torch

_thread_state = threading.local()


def one_openmp_thread() -> None:
    """Make torch use one OpenMP thread in the calling thread (once per thread).

    OpenMP's thread count is per calling thread, so setting it in the main thread does not reach the
    server's other threads (the scoring thread, the thread pool that runs /search, the champion watcher):
    in a thread it has not seen, OpenMP starts a team of one thread per core, and between parallel regions
    the idle team member spins on another core, one the event loop needs.
    """
    if not getattr(_thread_state, "openmp_single", False):
        torch.set_num_threads(1)
        _thread_state.openmp_single = True


def one_blas_thread() -> None:
    """Make every BLAS library in the process (numpy's OpenBLAS) use one thread, and torch's OpenMP in the
    calling thread (`one_openmp_thread`; every other thread sets its own before its first product).

    The scores are one matrix product per batch of waiting requests, too small to split: OpenBLAS's default
    of one thread per core spins every core under concurrent requests for no gain. Its setting is
    process-wide, so calling this once (at startup) is enough.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    one_openmp_thread()


def settle_heap() -> None:
    """Collect garbage once, then exempt every object alive now from later collections (`gc.freeze`).

    The serving process holds millions of long-lived objects (torch, transformers, MLflow, Feast, the
    model), and each of CPython's full collections walks them all: a stall of every waiting request, the
    serving benchmark's maximum latency before this. Frozen, they are not walked again, and collections
    cover what requests allocate. Called once the service has warmed up, and after each champion swap: the
    heap is unfrozen first so the replaced champion's reference cycles are reclaimed, one pause per
    promotion instead of one every few thousand requests.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()

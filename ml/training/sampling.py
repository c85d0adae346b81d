"""Which shoppers a training step takes: the per-shopper dataset, DP-SGD's Poisson sample from the OS CSPRNG, and
the global batches every rank of a data-parallel run draws alike (each training on its share), with the gradient
bookkeeping of a share. Why the shared sample keeps the privacy accounting of one process: ml.training.distributed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from ml.privacy.noise import SecureRandom

if TYPE_CHECKING:
    from ml.training.examples import Examples


class PerUserDataset(Dataset):
    """Item u = up to `per_user` distinct examples of shopper u (all of them when it has fewer), drawn afresh
    (seeded) each time it is read."""

    def __init__(self, examples: Examples, seed: int, per_user: int = 1) -> None:
        if per_user < 1:
            raise ValueError(f"per_user must be at least 1, got {per_user}")
        by_user: dict[str, list[int]] = {}
        for i, user in enumerate(examples.users):
            by_user.setdefault(user, []).append(i)
        self.users = sorted(by_user)
        self.example_ids = [np.asarray(by_user[u]) for u in self.users]
        self.per_user = per_user
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, u: int) -> tuple[int, ...]:
        ids = self.example_ids[u]
        if self.per_user == 1:
            return (int(ids[self.rng.integers(len(ids))]),)
        return tuple(int(i) for i in self.rng.choice(ids, size=min(self.per_user, len(ids)), replace=False))


class SecurePoissonBatches(Sampler[list[int]]):
    """DP-SGD's sample of shoppers from the OS CSPRNG: each shopper joins each of the `batches_per_epoch`
    batches independently with probability 1 / batches_per_epoch (Opacus' Poisson sampling; its own needs
    torchcsprng for a secure generator). A batch may be empty."""

    def __init__(self, n: int, batches_per_epoch: int) -> None:
        self.n, self.batches_per_epoch = n, batches_per_epoch
        self.source = SecureRandom()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rate = 1.0 / self.batches_per_epoch
        for _ in range(self.batches_per_epoch):
            yield np.flatnonzero(self.source.random(self.n) < rate).tolist()


class _SharedSampleShards(Sampler[list[int]], ABC):
    """Global batches drawn identically on every rank; each rank yields its share (every world-th member)."""

    def __init__(self, n: int, batches_per_epoch: int, seed: int, rank: int, world_size: int) -> None:
        if n < 1 or batches_per_epoch < 1:
            raise ValueError(f"need n >= 1 and batches_per_epoch >= 1, got {n} and {batches_per_epoch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.n = n
        self.batches_per_epoch = batches_per_epoch
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed)  # the same stream on every rank

    def __len__(self) -> int:
        return self.batches_per_epoch

    @abstractmethod
    def global_batches(self) -> Iterator[torch.Tensor]:
        """One epoch of global batches (shopper indices), the same on every rank."""

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            if len(batch):  # nobody drawn: every rank skips the step, as the single process does
                yield batch[self.rank :: self.world_size].tolist()


class PoissonShards(_SharedSampleShards):
    """DP: each shopper joins each step's global sample independently with probability 1 / batches_per_epoch."""

    def global_batches(self) -> Iterator[torch.Tensor]:
        rate = 1.0 / self.batches_per_epoch
        for _ in range(self.batches_per_epoch):
            yield (torch.rand(self.n, generator=self.generator) < rate).nonzero().flatten()


class ShuffleShards(_SharedSampleShards):
    """No DP: a shared permutation per epoch cut into batches of `batch_size`."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world_size: int) -> None:
        super().__init__(n, math.ceil(n / batch_size), seed, rank, world_size)
        self.batch_size = batch_size

    def global_batches(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator)
        yield from order.split(self.batch_size)


def shard_loader(
    dataset: Dataset,
    collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    poisson: bool,
    seed: int,
) -> DataLoader:
    """This rank's loader: its share of each global batch (possibly empty: then only an empty `target`).

    The number of batches per epoch is ceil(n / batch_size), so Opacus derives the planned sample rate
    from `1 / len(loader)`.
    """
    n = len(dataset)  # type: ignore[arg-type]
    per_epoch = max(1, math.ceil(n / batch_size))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    sampler = (
        PoissonShards(n, per_epoch, seed, rank, world_size)
        if poisson
        else ShuffleShards(n, batch_size, seed, rank, world_size)
    )

    def collate_share(rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        return collate(rows) if rows else {"target": torch.zeros(0, dtype=torch.long)}

    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_share)


def trainable_params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def zero_gradients(optimizer: torch.optim.Optimizer) -> None:
    """A rank whose share of the global sample is empty contributes zero, but still joins the all-reduce."""
    for p in trainable_params(optimizer):
        p.grad = torch.zeros_like(p)


def average_gradients(optimizer: torch.optim.Optimizer, n_local: int) -> None:
    """Without DP: the global batch's mean gradient from each rank's mean, weighted by its share's size."""
    params = trainable_params(optimizer)
    if not params:
        return
    total = torch.tensor([float(n_local)], device=params[0].device)
    dist.all_reduce(total)
    weight = n_local / float(total.item())
    for p in params:
        assert p.grad is not None  # set by the backward pass, or by zero_gradients for an empty share
        p.grad.mul_(weight)
        dist.all_reduce(p.grad)

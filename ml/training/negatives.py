"""Sampled negatives: a training step's work bounded whatever the size of the catalogue.

With every item scored, a step costs batch x history x n_items (the closest-history-item similarity and the
decayed item-table rows of every example against every item). Above `negatives` items, each step instead scores
each example's target and one uniform sample of `negatives` items shared by the batch (the sampled softmax of
Jean et al. 2015), so a step costs the same at 20,000 items as at 200,000 (benchmarks/results/pipeline.md).

Privacy: the sample is drawn uniformly, from the catalogue alone, independently of any shopper's data; an
example's loss reads only its own target and the sample, so each shopper's gradient still depends on that
shopper's data alone, which is what DP-SGD's per-shopper clipping needs. A sampled item equal to the example's
target is masked out (it is the target's column already).

The loss estimates the full-catalogue softmax: each sampled negative stands for (n_items - 1) / negatives
items, so its logit gets log((n_items - 1) / negatives) added (the log of its inverse inclusion rate). Without
that, the partition function is underestimated by that factor and a model trained on samples learns a different
temperature from one trained on every item.
"""

from __future__ import annotations

import math

import torch

MASKED = -1e9  # the logit of a sampled negative that is the example's own target


def use_sampling(n_items: int, negatives: int) -> bool:
    """Whether training on a catalogue of `n_items` samples `negatives` items a step (0: never sample)."""
    if negatives < 0:
        raise ValueError(f"negatives must be 0 (score every item) or positive, got {negatives}")
    return 0 < negatives < n_items


class NegativeSampler:
    """A uniform sample of `count` distinct items of `n_items` for each batch, from its own seeded generator."""

    def __init__(self, n_items: int, count: int, seed: int) -> None:
        if not 0 < count < n_items:
            raise ValueError(f"need 0 < count < n_items to sample negatives, got count={count}, n_items={n_items}")
        self.n_items, self.count = n_items, count
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> torch.Tensor:
        """[count] distinct item indices, sorted."""
        return torch.randperm(self.n_items, generator=self.generator)[: self.count].sort().values


def sampled_logits(scores: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B, (K,) 1 + M] logits whose column 0 is each example's target: `scores` read at [target, negatives]
    (`ml.training.columns.Columns`), the negatives corrected for sampling and a negative equal to the target masked.
    Padding slots (target < 0) keep their row; their loss is ignored."""
    m = len(negatives)
    correction = math.log((n_items - 1) / m)
    hits = negatives.view(*([1] * target.dim()), m) == target.unsqueeze(-1)
    rest = (scores[..., 1:] + correction).masked_fill(hits, MASKED)
    return torch.cat([scores[..., :1], rest], dim=-1)


def sampled_targets(target: torch.Tensor, ignore: int) -> torch.Tensor:
    """The training targets of `sampled_logits`: column 0 for every real example, `ignore` kept for padding."""
    return torch.where(target == ignore, target, torch.zeros_like(target))

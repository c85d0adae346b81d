"""The training batches and their loss: examples collated into tensors, one shopper per row when grouped.

A batch holds each example's search text (tokens, or the cached vector of a frozen encoder), its history, and
its target. Grouped batches (`per_user` = K > 1) give each row one shopper and K example slots, padding slots
targeting IGNORE; `per_user_loss` is then the mean over a row's real slots, the loss whose gradient DP-SGD clips
once per shopper (`ml.training.train`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ml.training.encoder import tokenize
from ml.training.examples import Examples
from ml.training.model import build_history_tensors
from ml.training.negatives import NegativeSampler

IGNORE = -100  # target of a padding slot in a grouped batch (CrossEntropyLoss' default ignore_index)


def make_collate(
    examples: Examples,
    tokenizer: PreTrainedTokenizerBase,
    max_history: int,
    max_query_tokens: int,
    query_cache: torch.Tensor | None = None,
    per_user: int = 1,
    sampler: NegativeSampler | None = None,
) -> Callable[[Sequence[tuple[int, ...]]], dict[str, torch.Tensor]]:
    """Batches of examples; with `query_cache` (frozen encoder) search text comes as its cached vector.

    per_user = 1: one example per row, tensors [B, ...]. per_user = K > 1 (needs `query_cache`): one shopper
    per row with a second axis of K example slots, [B, K, ...]; a shopper with fewer examples has padding
    slots, whose target is IGNORE (and whose history is empty). With `sampler`, each batch carries its uniform
    sample of negative items (`negatives`, [M]; ml.training.negatives)."""
    if per_user > 1 and query_cache is None:
        raise ValueError("grouped batches (per_user > 1) need the cached query vectors of a frozen encoder")

    def flat(ids: Sequence[int]) -> dict[str, torch.Tensor]:
        if query_cache is not None:
            batch = {"query_vec": query_cache[list(ids)]}
        else:
            batch = tokenize(tokenizer, [examples.queries[i] or "" for i in ids], max_query_tokens)
        batch.update(build_history_tensors([examples.histories[i] for i in ids], max_history))
        batch["is_search"] = torch.tensor([1.0 if examples.queries[i] else 0.0 for i in ids])
        batch["target"] = torch.tensor([examples.targets[i] for i in ids], dtype=torch.long)
        if examples.transition_own is not None:
            own = [examples.transition_own[i] for i in ids]
            width = max(1, max(map(len, own)))  # padding entries add 0.0 to item 0
            batch["own_idx"] = torch.zeros((len(ids), width), dtype=torch.long)
            batch["own_val"] = torch.zeros((len(ids), width), dtype=torch.float32)
            for row, entries in enumerate(own):
                if entries:
                    batch["own_idx"][row, : len(entries)] = torch.tensor([j for j, _ in entries], dtype=torch.long)
                    batch["own_val"][row, : len(entries)] = torch.tensor([v for _, v in entries])
        return batch

    def collate(rows: Sequence[tuple[int, ...]]) -> dict[str, torch.Tensor]:
        batch = grouped(rows)
        if sampler is not None:
            batch["negatives"] = sampler.draw()
        return batch

    def grouped(rows: Sequence[tuple[int, ...]]) -> dict[str, torch.Tensor]:
        if per_user == 1:
            return flat([r[0] for r in rows])
        slots = [i for r in rows for i in r]
        batch = flat(slots)
        position = torch.tensor([b * per_user + j for b, r in enumerate(rows) for j in range(len(r))], dtype=torch.long)
        grouped = {}
        for key, value in batch.items():
            fill = IGNORE if key == "target" else 0
            out = value.new_full((len(rows) * per_user, *value.shape[1:]), fill)
            out[position] = value
            grouped[key] = out.view(len(rows), per_user, *value.shape[1:])
        return grouped

    return collate


def per_user_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row: the cross-entropy of [B, n] logits, or of grouped [B, K, n] ones the mean over the row's real
    (not IGNORE) slots. What Opacus' ghost-clipping loss computes with `shape` (the DP path)."""
    if logits.dim() == 2:
        return nn.functional.cross_entropy(logits, target, reduction="none")
    per_slot = nn.functional.cross_entropy(
        logits.flatten(0, 1), target.flatten(), reduction="none", ignore_index=IGNORE
    ).view(target.shape)
    return per_slot.sum(dim=1) / (target != IGNORE).sum(dim=1).clamp(min=1)

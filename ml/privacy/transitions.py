"""The DP item-transition feature: noised next-item counts over the training shoppers, and per shopper what its
own pairs add to them (so that a training example reads the table as a hold-out case does)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.privacy.accounting import capped_pairs, noisy_counts
from ml.privacy.noise import SecureRandom

OwnPairs = dict[int, list[tuple[int, float]]]  # item -> [(next item, value)]


def transition_feature(
    sequences: pd.DataFrame,
    members: set[str],
    index_of: dict[str, int],
    *,
    seed: int,
    pairs_per_user: int,
    floor: float | None,
    sigma: float | None,
    secure: bool = False,
) -> tuple[np.ndarray, dict[str, OwnPairs]]:
    """log1p of item -> next-item counts over the training shoppers' sequences, for the hybrid score, and per
    shopper what its own pairs add to that table (item -> [(next item, value)]).

    With DP (`sigma`, the plan's noise std), each shopper adds at most `pairs_per_user` distinct pairs and every
    cell gets Gaussian noise; a floor of `floor` noise deviations is then subtracted (post-processing, free under
    DP) so that noise alone seldom scores. Without `sigma` the counts are exact and no floor applies. The noise
    comes from the OS CSPRNG when `secure`, else from a generator seeded with `seed` + 1 (ml.privacy.noise).

    The second part is for training only (`own_transitions`): a training example reads the table without its
    own shopper's pairs, as a case reads the counts of other shoppers. With them in, the pair from an example's
    last item to its target is in the counts whenever that shopper's pairs are, and the feature's learned weight
    fits that. Privacy: the table is released by its own Gaussian mechanism; a shopper's correction comes from
    that shopper's data and the released table, and enters only that shopper's clipped DP-SGD gradient, so the
    accounting is unchanged. The saved model holds the table alone.
    """
    if pairs_per_user < 1:
        raise ValueError(f"pairs_per_user must be at least 1, got {pairs_per_user}")
    if sigma is not None and floor is None:
        raise ValueError("noised counts need their floor (noise deviations to subtract); choose_floor gives one")
    rows = sequences[sequences["user_id"].isin(members)].sort_values(["user_id", "position"])
    by_user = rows.groupby("user_id")["item_id"].agg(list)
    per_user = [[index_of[i] for i in items if i in index_of] for items in by_user]
    rng = np.random.default_rng(seed + 1)
    pairs = capped_pairs(per_user, len(index_of), pairs_per_user, rng)
    counts = noisy_counts(pairs, len(index_of), pairs_per_user, sigma, SecureRandom() if secure else rng)
    cut = floor * sigma * np.sqrt(pairs_per_user) if sigma is not None and floor is not None else 0.0
    table = np.log1p(np.maximum(counts - cut, 0.0)).astype(np.float32)
    own: dict[str, OwnPairs] = {}
    for user, user_pairs in zip(by_user.index, pairs, strict=True):
        entries: OwnPairs = {}
        for a, b in user_pairs:
            without = float(np.log1p(max(float(counts[a, b]) - 1.0 - cut, 0.0)))
            if without != table[a, b]:
                entries.setdefault(a, []).append((b, without - float(table[a, b])))
        own[str(user)] = entries
    return table, own


def own_transitions(history: list[int], own: OwnPairs, max_history: int) -> list[tuple[int, float]]:
    """The (item, value) entries that take a shopper's own pairs (`transition_feature`) out of the transition
    feature of one history (oldest first), weighted as the model weighs history items (TRANSITION_DECAY)."""
    from ml.training.history_features import TRANSITION_DECAY

    recent = history[-max_history:][::-1]  # newest first, as build_history_tensors orders them
    return [(b, TRANSITION_DECAY**p * value) for p, item in enumerate(recent) for b, value in own.get(item, ())]

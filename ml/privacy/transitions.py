"""The DP item-transition feature: noised next-item counts over the training shoppers, and per shopper what its
own pairs add to them (so that a training example reads the table as a hold-out case does)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from ml.privacy.noise import SecureRandom
from ml.privacy.pair_counts import capped_pairs, pair_keys, release_counts

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
    threshold: float | None = None,
    secure: bool = False,
) -> tuple[sparse.csr_matrix, dict[str, OwnPairs]]:
    """log1p of item -> next-item counts over the training shoppers' sequences, for the hybrid score, as an
    n_items x n_items float32 CSR matrix (sorted indices, no stored zeros), and per shopper what its own pairs add
    to that table (item -> [(next item, value)]).

    With DP (`sigma`, the plan's noise multiplier, and `threshold`, the plan's `transitions_threshold`), each
    shopper adds at most `pairs_per_user` distinct pairs, the pairs that occur get Gaussian noise and only those
    whose noised count exceeds the threshold are released (ml.privacy.pair_counts.release_counts); a floor of
    `floor` noise deviations is then subtracted from the released counts (post-processing, free under DP) so that
    noise alone seldom scores. Without `sigma` the counts are exact, for every pair that occurs, and no threshold
    or floor applies. The noise comes from the OS CSPRNG when `secure`, else from a generator seeded with
    `seed` + 1 (ml.privacy.noise).

    The second part is for training only (`own_transitions`): a training example reads the table without its
    own shopper's pairs, as a case reads the counts of other shoppers. With them in, the pair from an example's
    last item to its target is in the counts whenever that shopper's pairs are, and the feature's learned weight
    fits that. For each of a shopper's pairs in the table (noised count c) the entry is the change when its 1 is
    taken out: log1p(max(c - 1 - cut, 0)) where c - 1 still exceeds the threshold, else 0 (the pair would not be
    released), minus the table's value; a pair not released gets no entry. Privacy: a shopper's correction
    comes from that shopper's data and the released table, and enters only that shopper's clipped DP-SGD
    gradient, so the accounting is unchanged. The saved model holds the table alone.
    """
    if pairs_per_user < 1:
        raise ValueError(f"pairs_per_user must be at least 1, got {pairs_per_user}")
    if sigma is not None and floor is None:
        raise ValueError("noised counts need their floor (noise deviations to subtract); choose_floor gives one")
    n_items = len(index_of)
    users, per_user = _member_items(sequences, members, index_of)
    rng = np.random.default_rng(seed + 1)
    pairs = capped_pairs(per_user, n_items, pairs_per_user, rng)
    released = release_counts(
        pairs, n_items, pairs_per_user, sigma, SecureRandom() if secure else rng, threshold=threshold
    )
    cut = floor * sigma * np.sqrt(pairs_per_user) if sigma is not None and floor is not None else 0.0
    values = np.log1p(np.maximum(released.counts - cut, 0.0)).astype(np.float32)
    table = sparse.csr_matrix((values, (released.rows, released.cols)), shape=(n_items, n_items), dtype=np.float32)
    table.eliminate_zeros()
    table.sort_indices()

    # each shopper's pairs, looked up among the released ones at once
    keys = pair_keys(pairs, n_items)
    at = released.find(keys)
    hit = at >= 0  # read by boolean index: a release may hold no pair at all (a small crowd, a high threshold)
    with_own = np.zeros(len(keys), dtype=np.float32)
    with_own[hit] = values[at[hit]]
    less = np.full(len(keys), -1.0)
    less[hit] = released.counts[at[hit]] - 1.0
    still = less > released.threshold if released.threshold is not None else np.ones(len(less), dtype=bool)
    without = np.where(still, np.log1p(np.maximum(less - cut, 0.0)), 0.0)
    change = without - with_own.astype(np.float64)
    owner = np.repeat(np.arange(len(pairs)), [len(p) for p in pairs])
    own: dict[str, OwnPairs] = {str(user): {} for user in users}
    for k in np.flatnonzero(hit & (with_own > 0) & (without != with_own.astype(np.float64))):
        a, b = divmod(int(keys[k]), n_items)
        own[str(users[owner[k]])].setdefault(a, []).append((b, float(change[k])))
    return table, own


def _member_items(
    sequences: pd.DataFrame, members: set[str], index_of: dict[str, int]
) -> tuple[list[object], list[list[int]]]:
    """The members (sorted, as pandas groups them) and each one's items in time order, in index space; items
    outside `index_of` are left out, a member with none keeps an empty list."""
    rows = sequences[sequences["user_id"].isin(members)].sort_values(["user_id", "position"], kind="stable")
    if rows.empty:
        return [], []
    user_ids = rows["user_id"].to_numpy()
    codes = rows["item_id"].map(index_of).to_numpy(dtype=np.float64, na_value=np.nan)
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    per_user = [seg[~np.isnan(seg)].astype(np.int64).tolist() for seg in np.split(codes, starts[1:])]
    return list(user_ids[starts]), per_user


def own_transitions(history: list[int], own: OwnPairs, max_history: int) -> list[tuple[int, float]]:
    """The (item, value) entries that take a shopper's own pairs (`transition_feature`) out of the transition
    feature of one history (oldest first), weighted as the model weighs history items (TRANSITION_DECAY)."""
    from ml.training.history_features import TRANSITION_DECAY

    recent = history[-max_history:][::-1]  # newest first, as build_history_tensors orders them
    return [(b, TRANSITION_DECAY**p * value) for p, item in enumerate(recent) for b, value in own.get(item, ())]

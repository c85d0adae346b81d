"""The transition feature's training view: each shopper's own pairs taken out of the released counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.privacy.transitions import own_transitions, transition_feature
from ml.training.model import TRANSITION_DECAY

N_ITEMS, MAX_HISTORY = 8, 3
SEQUENCES = {"a": [0, 1, 2, 3], "b": [0, 1, 4], "c": [0, 1, 2, 5], "d": [6, 7]}


def _frame(sequences: dict[str, list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, pos, f"i{item}") for u, items in sequences.items() for pos, item in enumerate(items)],
        columns=["user_id", "position", "item_id"],
    )


def _decayed(table: np.ndarray, history: list[int]) -> np.ndarray:
    """The model's transition feature of one history (oldest first): decayed rows, newest first."""
    recent = history[-MAX_HISTORY:][::-1]
    return sum((TRANSITION_DECAY**p * table[item] for p, item in enumerate(recent)), np.zeros(N_ITEMS))


@pytest.mark.parametrize("sigma", [None, 0.01])
def test_a_shoppers_own_entries_give_the_feature_of_the_counts_without_that_shopper(sigma):
    # with DP both tables draw the same noise (no shopper is capped, so the generator draws nothing else)
    settings = {"seed": 3, "pairs_per_user": 8, "floor": 2.0, "sigma": sigma}
    index_of = {f"i{j}": j for j in range(N_ITEMS)}
    frame = _frame(SEQUENCES)
    table, own = transition_feature(frame, set(SEQUENCES), index_of, **settings)
    assert set(own) == set(SEQUENCES)
    for user, items in SEQUENCES.items():
        without, _ = transition_feature(frame, set(SEQUENCES) - {user}, index_of, **settings)
        for end in range(1, len(items)):  # every history the shopper's examples can have
            history = items[:end]
            feature = _decayed(table, history)
            for item, value in own_transitions(history, own[user], MAX_HISTORY):
                feature[item] += value
            np.testing.assert_allclose(feature, _decayed(without, history), atol=1e-6)
    # the pair 0 -> 1 is in three shoppers' counts: taking one out leaves two
    floor = 0.0 if sigma is None else 2.0 * sigma * np.sqrt(8)
    assert table[0, 1] == pytest.approx(np.log1p(max(3 - floor, 0)), abs=0.1)  # noise std 0.028
    assert dict(own["b"][0]) == pytest.approx({1: np.log1p(max(2 - floor, 0)) - table[0, 1]}, abs=0.1)


def test_own_entries_follow_the_history_order_and_decay():
    own = {2: [(5, -1.0)], 4: [(6, -0.5), (7, -0.25)]}
    # newest first: 4 at position 0, 2 at position 1, 9 (no own pairs) at 2; 1 lies beyond MAX_HISTORY
    assert own_transitions([1, 9, 2, 4], own, MAX_HISTORY) == [(6, -0.5), (7, -0.25), (5, -TRANSITION_DECAY)]
    assert own_transitions([], own, MAX_HISTORY) == []


def test_a_shopper_must_be_allowed_a_pair():
    with pytest.raises(ValueError, match="pairs_per_user"):
        transition_feature(
            _frame(SEQUENCES),
            set(SEQUENCES),
            {f"i{j}": j for j in range(N_ITEMS)},
            seed=3,
            pairs_per_user=0,
            floor=2.0,
            sigma=None,
        )

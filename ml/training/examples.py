"""Training examples in index space, built from the features stage's point-in-time training set."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Examples:
    """Training examples in index space: history (item indices, oldest first) or query -> target item.

    `transition_own`, when given, holds per example the (item index, value) entries added to its transition
    feature in training: its shopper's own pairs taken out of the counts (ml.privacy.transitions.transition_feature).
    """

    users: list[str]
    histories: list[list[int]]
    queries: list[str | None]
    targets: list[int]
    transition_own: list[list[tuple[int, float]]] | None = None

    def __len__(self) -> int:
        return len(self.targets)


def training_examples(train_set: pd.DataFrame, members: set[str], index_of: dict[str, int]) -> Examples:
    """The examples of the training shoppers `members` whose target is in the catalogue: every search, and every
    next-item row with a history (a first interaction has nothing to predict from)."""
    rows = train_set[train_set["user_id"].isin(members) & train_set["item_id"].isin(index_of)]
    rows = rows[(rows["kind"] == "search") | (rows["history"].map(len) > 0)]
    return Examples(
        users=rows["user_id"].tolist(),
        histories=[[index_of[i] for i in h if i in index_of] for h in rows["history"]],
        queries=[q if k == "search" else None for q, k in zip(rows["query"], rows["kind"], strict=True)],
        targets=[index_of[i] for i in rows["item_id"]],
    )

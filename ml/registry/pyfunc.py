"""The MLflow pyfunc flavour of a Vetted model.

Input: a DataFrame with a `history` column (lists of item ids, oldest first) and/or a `query` column
(search text); a row with a non-empty query is a search, otherwise a recommendation from its history.
Output: a DataFrame with `item_ids` (top-k, best first) and `scores`, one row per input row.
`k` comes from params (default 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

ARTIFACT_KEY = "recommender"

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(Array("string"), "history", required=False), ColSpec("string", "query", required=False)]),
    outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores")]),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)


class VettedRecommender(PythonModel):
    def load_context(self, context: Any) -> None:
        from pathlib import Path

        from ml.training.recommender import Recommender

        self.recommender = Recommender.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        n = len(model_input)
        queries: list[Any] = model_input["query"].tolist() if "query" in model_input else [None] * n
        histories = model_input["history"].tolist() if "history" in model_input else [[]] * n
        is_search = [isinstance(q, str) and q.strip() != "" for q in queries]
        ids: list[list[str]] = [[] for _ in range(n)]
        scores: list[list[float]] = [[] for _ in range(n)]
        search_rows = [i for i in range(n) if is_search[i]]
        rec_rows = [i for i in range(n) if not is_search[i]]
        known = [list(h) if h is not None and not _is_nan(h) else [] for h in histories]
        if search_rows:
            got, sc = self.recommender.search([queries[i] for i in search_rows], k, [known[i] for i in search_rows])
            for row, items, s in zip(search_rows, got, sc, strict=True):
                ids[row], scores[row] = items, [float(x) for x in s]
        if rec_rows:
            got_rec, sc_rec = self.recommender.recommend([known[i] for i in rec_rows], k)
            for row, items, s in zip(rec_rows, got_rec, sc_rec, strict=True):
                ids[row], scores[row] = items, [float(x) for x in s]
        return pd.DataFrame({"item_ids": ids, "scores": scores})


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def input_example(histories: list[list[str]], query: str) -> pd.DataFrame:
    return pd.DataFrame({"history": [histories[0], []], "query": [None, query]})

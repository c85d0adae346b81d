"""Crowdflower "Search Results Relevance": real shop queries with crowd-graded products, for evaluation only.

The file (`judgments.csv`: id, query, product_title, product_description, median_relevance, relevance_variance)
pairs each query with the products a shop returned for it, graded 1 (irrelevant) .. 4 (exactly what was asked).
It is never a training source: no shopper, no event, only judged (query, product) pairs.

A product is known by its title (the file's distinct titles; a title seen with several descriptions keeps its
first non-empty one). Its text is the title and the start of its description with HTML tags removed, the same
length of description the model reads for a catalogue item (`ml.training.encoder.DESCRIPTION_CHARS`).

Two protocols (`benchmarks/search.py`):
- re-ranking: each query ranks only its own judged products;
- retrieval: each query ranks every product of the file; a product not judged for that query counts as irrelevant.
Gain of a product of grade g is 2^(g-1) - 1 (grade 1 gains nothing), as in graded NDCG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ml.data.raw import SourceError
from ml.training.encoder import DESCRIPTION_CHARS

COLUMNS = ("query", "product_title", "product_description", "median_relevance")
GRADES = (1, 2, 3, 4)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Judgments:
    products: pd.DataFrame  # product_id, title, description, text
    judged: pd.DataFrame  # query, product_id, grade, gain

    @property
    def queries(self) -> list[str]:
        return sorted(self.judged["query"].unique())

    def gains(self, query: str) -> dict[str, float]:
        """product_id -> gain of every product judged for `query` (grade-1 products included, gain 0)."""
        part = self.judged[self.judged["query"] == query]
        return dict(zip(part["product_id"], part["gain"].astype(float), strict=True))


def gain(grade: int) -> float:
    return float(2 ** (int(grade) - 1) - 1)


def clean(text: str) -> str:
    return _SPACE.sub(" ", _TAG.sub(" ", str(text))).strip()


def load_judgments(path: Path | str) -> Judgments:
    """Read `judgments.csv` (or the folder holding it). Raises `SourceError` naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / "judgments.csv"
    if not path.is_file():
        raise SourceError(f"{path}: no such file (the Crowdflower judgments, judgments.csv)")
    frame = pd.read_csv(
        path, keep_default_na=False, dtype={"query": str, "product_title": str, "product_description": str}
    )
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SourceError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}")
    grades = pd.to_numeric(frame["median_relevance"], errors="coerce")
    bad = frame.index[~grades.isin(GRADES)]
    if len(bad):
        row = int(bad[0]) + 2  # 1-based, after the header line
        raise SourceError(
            f"{path}, line {row}: median_relevance {frame.at[bad[0], 'median_relevance']!r} "
            f"is not one of {list(GRADES)}"
        )
    frame = frame.assign(
        grade=grades.astype(int), query=frame["query"].str.strip(), product_title=frame["product_title"].str.strip()
    )
    frame = frame[(frame["query"] != "") & (frame["product_title"] != "")]
    titles = frame.groupby("product_title", sort=True)["product_description"].agg(
        lambda ds: next((clean(d) for d in ds if clean(d)), "")
    )
    products = pd.DataFrame(
        {"product_id": [f"cf-{i}" for i in range(len(titles))], "title": titles.index, "description": titles.to_numpy()}
    )
    products["text"] = [
        f"{t}. {d[:DESCRIPTION_CHARS]}" if d else t
        for t, d in zip(products["title"], products["description"], strict=True)
    ]
    id_of = dict(zip(products["title"], products["product_id"], strict=True))
    # a query judged twice on one product (same title, another description) keeps its best grade
    judged = (
        frame.assign(product_id=frame["product_title"].map(id_of))
        .groupby(["query", "product_id"], as_index=False)["grade"]
        .max()
    )
    judged["gain"] = judged["grade"].map(gain)
    return Judgments(products=products, judged=judged)

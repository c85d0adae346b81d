"""Short, honest explanations of one served result (pure functions).

- a recommendation: the shopper's history item whose vector is closest to the result's (the history
  tower pools those vectors, so that item is the one that pulled the result up most directly);
- a search result: the query's words found in the item's text (title, brand, category), split into words as
  search's lexical side splits them (`ml.lexical.words`, plurals reduced where the model's search settings say),
  so an explanation names only words search matches on;
- a non-personalized result: says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.lexical import plural_stem, search_words, words

STOPWORDS = frozenset(
    "a an and are as at be by for from in is it of on or the to with without my me i you your".split()
)
TITLE_CHARS = 60
NOT_PERSONALIZED = "a top pick overall (not personalized)"


def query_terms(query: str) -> list[str]:
    """Distinct query words without stop words (kept all if only stop words)."""
    all_words = list(dict.fromkeys(words(query)))
    kept = [w for w in all_words if w not in STOPWORDS]
    return kept or all_words


def terms_found(terms: Sequence[str], text: str, stem_plurals: bool = False) -> list[str]:
    """The terms present as whole words in `text`, in the query's order; with `stem_plurals` (as the lexical side
    was told to match), a term whose plural stem is one of the text's (a query's "drills" in "Cordless Drill")."""
    if not stem_plurals:
        present = set(words(text))
        return [t for t in terms if t in present]
    stems = set(search_words(text))
    return [t for t in terms if plural_stem(t) in stems]


def best_history_match(item_vectors: np.ndarray, history_rows: Sequence[int], result_rows: Sequence[int]) -> list[int]:
    """For each result row, the history row with the largest dot product (ties: the most recent)."""
    if not history_rows:
        raise ValueError("best_history_match needs at least one history row")
    hist = np.asarray(history_rows, dtype=np.int64)[::-1]  # newest first, so argmax's first hit is the newest
    sims = item_vectors[hist] @ item_vectors[np.asarray(result_rows, dtype=np.int64)].T  # [H, R]
    return [int(hist[j]) for j in np.argmax(sims, axis=0)]


def _short_title(title: str) -> str:
    title = " ".join(str(title).split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 3].rstrip() + "..."


def history_explanation(result_row: int, matched_row: int, matched_title: str) -> str:
    if result_row == matched_row:
        return "in your recent items"
    return f"similar to \u201c{_short_title(matched_title)}\u201d from your recent items"


def search_explanation(found: Sequence[str], personalized: bool) -> str:
    if found:
        text = "matches " + ", ".join(f"\u201c{t}\u201d" for t in found)
    else:
        text = "close in meaning to your query (no exact word match)"
    return text + ("; nudged by your recent items" if personalized else "")

"""BM25 (Okapi) over public catalogue text, scored for many queries at once, or one query's best documents fast.

Shared by the model's lexical feature (`ml.item_tables.lexical_neighbours`), the BM25 baseline
(`ml.evaluation.baselines.BM25`) and search's lexical side (`ml.search.engine.LexicalIndex`). The index is
rank_bm25's `BM25Okapi` (its idf with the floor on negative values, k1 = 1.5, b = 0.75); only the scoring
differs: `BM25Okapi.get_scores` loops in Python over every document for every query word. Here each
document's term weights are precomputed into a sparse matrix and a batch of queries is one sparse product
(`scores`: the same sums in another order, tested against `get_scores`). A search request needs only one
query's best documents: `top` adds up the posting lists of the query's words (a word's column of that
matrix), so its cost follows the documents that hold the words, not the catalogue's size. Timings:
benchmarks/results/serving.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
from scipy import sparse

_ALNUM_RUN = re.compile(r"[^\W_]+")  # runs of characters for which str.isalnum() holds (re's \w less "_")
_ASCII_WORD = re.compile(r"[^\W_]{2,}")  # the same runs, two characters or more


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of two characters or more: how both the index and queries tokenize.

    A word is a run of characters for which `str.isalnum()` holds, each lower-cased on its own (so a Greek
    capital sigma ends a word as "σ", not "ς"), kept when it has two characters or more once lower-cased.
    Regular expressions over the text instead of a Python loop over its characters: explanations split every
    result's text per request, and the lexical index splits every item's text at load. ASCII text, lower-cased
    whole, is the same as lower-cased character by character."""
    text = str(text)
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    out = []
    for run in _ALNUM_RUN.findall(text):
        low = "".join(c.lower() for c in run)  # lower-casing can lengthen a run: "İ" becomes two characters
        if len(low) > 1:
            out.append(low)
    return out


def plural_stem(word: str) -> str:
    """Harman's S stemmer ("How effective is suffixing?", JASIS 1991): an English plural to its singular, the first
    rule that applies: -ies (not -eies, -aies) to -y; -es (not -aes, -ees, -oes) to -e; -s (not -us, -ss) dropped.
    Words of three characters or fewer are kept ("gas", "ios"). Lighter than Porter's stemmer: it touches only
    plural-like endings, so "universe" and "university" stay apart (Porter's makes both "univers"), and it needs
    no dictionary; like every such rule it slips on words that only look plural ("series" becomes "sery").
    Search's lexical side uses it so that "drills" finds "Drill" (benchmarks/results/search.md)."""
    if len(word) <= 3 or not word.endswith("s"):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith(("us", "ss")):
        return word
    return word[:-1]


def search_words(text: str) -> list[str]:
    """`words`, each reduced by `plural_stem`: how search's lexical side splits items and queries."""
    return [plural_stem(w) for w in words(text)]


class BM25Index:
    """BM25Okapi over `documents` (texts, split by `analyze`); `scores` gives [n_queries, n_documents]. Queries
    come as lists of words split by the same `analyze`."""

    def __init__(self, documents: Sequence[str], analyze: Callable[[str], list[str]] = words) -> None:
        from rank_bm25 import BM25Okapi

        if not documents:
            raise ValueError("BM25Index needs at least one document")
        ok = BM25Okapi([analyze(d) for d in documents])
        self.vocabulary = {w: j for j, w in enumerate(ok.idf)}
        doc_len = np.asarray(ok.doc_len, dtype=np.float64)
        # (every document empty: avgdl 0, and no word has a weight to normalize)
        length_norm = ok.k1 * (1 - ok.b + ok.b * doc_len / ok.avgdl) if ok.avgdl > 0 else np.full(len(doc_len), ok.k1)
        rows, cols, vals = [], [], []
        for d, freqs in enumerate(ok.doc_freqs):
            for word, tf in freqs.items():
                rows.append(d)
                cols.append(self.vocabulary[word])
                vals.append(ok.idf[word] * tf * (ok.k1 + 1) / (tf + length_norm[d]))
        # [n_documents, vocabulary]: what each word of a query adds to each document's score
        self.weights = sparse.csr_matrix((vals, (rows, cols)), shape=(len(documents), len(self.vocabulary)))

    def scores(self, queries: Sequence[Sequence[str]], dtype: type = np.float64, block: int = 1024) -> np.ndarray:
        """BM25 score of every document for each query (a list of words; a word counts as often as it
        appears, and a word no document holds adds nothing), [n_queries, n_documents] in `dtype`.

        Summed in float64, `block` queries at a time: beside the result, memory holds one block's scores."""
        rows, cols, vals = [], [], []
        for q, query in enumerate(queries):
            for word, n in Counter(w for w in query if w in self.vocabulary).items():
                rows.append(q)
                cols.append(self.vocabulary[word])
                vals.append(float(n))
        counts = sparse.csr_matrix((vals, (rows, cols)), shape=(len(queries), len(self.vocabulary)))
        out = np.empty((len(queries), self.weights.shape[0]), dtype=dtype)
        for start in range(0, len(queries), block):
            out[start : start + block] = (counts[start : start + block] @ self.weights.T).toarray()
        return out

    @cached_property
    def postings(self) -> sparse.csr_matrix:
        """[vocabulary, n_documents]: each word's row lists the documents holding it and its weight there."""
        return self.weights.T.tocsr()

    def top(self, query: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, float32 scores) of the n best documents with a positive score for one query (a list of
        words), best first; equal scores: the lower document first. The same order as `scores` (cast to
        float32) followed by a top-n, reading only the posting lists of the query's words."""
        postings = self.postings
        counts = Counter(w for w in query if w in self.vocabulary)
        if not counts or n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        docs, vals = [], []
        for word, count in counts.items():
            j = self.vocabulary[word]
            lo, hi = postings.indptr[j], postings.indptr[j + 1]
            docs.append(postings.indices[lo:hi])
            vals.append(postings.data[lo:hi] * float(count))
        hits, weights = np.concatenate(docs), np.concatenate(vals)
        n_documents = postings.shape[1]
        if len(hits) * 16 > n_documents:  # long posting lists: one pass over every document beats sorting hits
            every = np.bincount(hits, weights=weights, minlength=n_documents).astype(np.float32)
            found = np.flatnonzero(every > 0)
            total = every[found]
        else:
            found, where = np.unique(hits, return_inverse=True)  # ascending documents
            total = np.bincount(where, weights=weights).astype(np.float32)
            keep = total > 0
            found, total = found[keep], total[keep]
        if n < len(total):  # every document scoring at least the n-th best, then exactly ordered
            kth = np.partition(total, len(total) - n)[len(total) - n]
            keep = total >= kth
            found, total = found[keep], total[keep]
        order = np.lexsort((found, -total))[:n]
        return found[order].astype(np.int64), total[order]

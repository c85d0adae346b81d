"""The batched BM25 scorer gives rank_bm25's own scores, and the BM25 baseline ranks with it."""

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ml.evaluation.baselines import BM25
from ml.lexical import BM25Index, words

DOCUMENTS = [
    "Stanley 1/2-inch staples, steel (1000 count)",
    "Stanley staple gun, heavy duty",
    "Gorilla heavy duty construction adhesive",
    "3D printer PLA filament 1.75 mm, red",
    "3D printer PLA filament 1.75 mm, white. PLA PLA",  # a word repeated within a document
    "Super glue, 12-pack",
    "x",  # no word of two letters: an empty document
]


def test_scores_equal_rank_bm25_get_scores():
    queries = [
        words("stanley staples"),
        words("pla pla filament"),  # a word repeated in the query counts twice, as in get_scores
        words("heavy duty glue"),
        words("printer"),  # a word of 2 of the 7 documents
        words("unknown words only"),  # nothing matches
        [],  # an empty query
        words("mm 3d filament duty"),
    ]
    okapi = BM25Okapi([words(d) for d in DOCUMENTS])
    got = BM25Index(DOCUMENTS).scores(queries)
    assert got.shape == (len(queries), len(DOCUMENTS))
    for row, query in zip(got, queries, strict=True):
        np.testing.assert_allclose(row, okapi.get_scores(query), rtol=1e-12, atol=1e-12)
    assert got[1, 4] > got[1, 3] > 0  # the document that says PLA three times scores higher
    assert not got[4].any() and not got[5].any()
    # scored a few queries at a time, into float32: the same values, rounded once
    blocked = BM25Index(DOCUMENTS).scores(queries, dtype=np.float32, block=2)
    assert blocked.dtype == np.float32
    np.testing.assert_array_equal(blocked, got.astype(np.float32))


def test_a_word_in_most_documents_gets_rank_bm25s_idf_floor():
    documents = ["tape red", "tape blue", "tape green", "glue"]  # "tape" in 3 of 4: a negative raw idf
    okapi = BM25Okapi([words(d) for d in documents])
    np.testing.assert_allclose(BM25Index(documents).scores([["tape"]])[0], okapi.get_scores(["tape"]), rtol=1e-12)
    assert BM25Index(documents).scores([["tape"]])[0, 0] > 0


def test_an_empty_catalogue_is_refused():
    with pytest.raises(ValueError, match="at least one document"):
        BM25Index([])


def test_the_bm25_baseline_ranks_by_the_last_three_titles():
    items = [f"i{k}" for k in range(len(DOCUMENTS))]
    baseline = BM25(item_ids=items, texts=DOCUMENTS, titles=DOCUMENTS)
    top = baseline.recommend([["i3"], ["i0"], []], k=2)
    assert set(top[0]) == {"i3", "i4"}  # the filaments
    assert set(top[1]) == {"i0", "i1"}  # the Stanley staples
    assert len(top[2]) == 2  # no history: every score is 0, still k items


def test_one_querys_top_reads_its_posting_lists_and_ranks_as_the_full_scores_do():
    rng = np.random.default_rng(3)
    vocabulary = [f"w{j}" for j in range(40)] + ["common"] * 10  # "common" in most documents: ties abound
    documents = [" ".join(rng.choice(vocabulary, size=rng.integers(1, 6))) for _ in range(500)] + DOCUMENTS
    index = BM25Index(documents)
    queries = [words(" ".join(rng.choice(vocabulary, size=rng.integers(1, 4)))) for _ in range(60)]
    queries += [words("pla pla filament"), words("unknown words only"), [], words("common")]
    full = index.scores(queries, dtype=np.float32)
    for query, row in zip(queries, full, strict=True):
        for n in (1, 10, 600):
            docs, scores = index.top(query, n)
            positive = np.flatnonzero(row > 0)
            expected = positive[np.lexsort((positive, -row[positive]))][:n]  # best first, ties: lower document
            np.testing.assert_array_equal(docs, expected)
            np.testing.assert_array_equal(scores, row[expected])
    assert index.top(words("stanley"), 0)[0].size == 0


def _words_by_characters(text: str) -> list[str]:
    """The definition `words` implements: each character lower-cased when alphanumeric, else a space."""
    return [t for t in "".join(c.lower() if c.isalnum() else " " for c in str(text)).split() if len(t) > 1]


def test_words_is_the_character_by_character_definition_on_any_text():
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ09 _-.,/'\t\n") + [
        "\u0130",
        "\u03a3",
        "\u00e9",
        "\u00c9",
        "\u0301",
        "\u00bd",
        "\u2168",
        "\u4e2d",
        "\u00df",
        "\u0663",
    ]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 40))) for _ in range(3000)]
    texts += ["", "a", "ΣΑΣ ΟΔΟΣ", "İstanbul", "Straße 3½", "snake_case_word", 12345, None]
    for text in texts:
        assert words(text) == _words_by_characters(text), repr(text)


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("drills", "drill"),
        ("batteries", "battery"),
        ("series", "sery"),  # the S stemmer's known slip: -ies becomes -y even where the word is no plural
        ("cases", "case"),
        ("shoes", "shoe"),
        ("glass", "glass"),
        ("status", "status"),
        ("gas", "gas"),
        ("ios", "ios"),
        ("drill", "drill"),
    ],
)
def test_the_plural_stemmer_follows_harmans_rules(word, stem):
    from ml.lexical import plural_stem

    assert plural_stem(word) == stem


def test_the_search_index_finds_a_singular_title_for_a_plural_query_and_not_without_stemming():
    from ml.search.engine import LexicalIndex

    titles = ["Cordless Drill, 18V", "Drill bit set", "Work gloves", "Safety glasses", "Wood glue", "Tape measure"]
    stemmed, plain = LexicalIndex(titles), LexicalIndex(titles, stem_plurals=False)
    assert set(stemmed.top(["drills"], 10)[0].tolist()) == {0, 1}
    assert plain.top(["drills"], 10)[0].tolist() == []
    assert stemmed.top(["glove"], 10)[0].tolist() == [2]
    np.testing.assert_array_equal(stemmed.scores(["drills"]), stemmed.scores(["drill"]))


def test_an_explanation_names_a_plural_query_word_where_search_matched_it():
    from ml.serving.explain import terms_found

    assert terms_found(["drills", "cordless"], "Cordless Drill 18V", stem_plurals=True) == ["drills", "cordless"]
    assert terms_found(["drills", "cordless"], "Cordless Drill 18V") == ["cordless"]

"""The amazon2018 adapter: parsing, sequence recovery, the temporal split, and the real corpus."""

from __future__ import annotations

import ast
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.data import amazon2018, schema
from ml.data.amazon2018 import Row, clean_description, merge_sequences
from ml.data.sources import RawTables, SourceError, SourceNotFoundError, read_source

REAL = Path(__file__).parents[2] / ".." / "shared" / "data" / "amazon2018-industrial"
HEADER = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"


def write_folder(folder: Path, valid: list[tuple], test: list[tuple], items: dict | None = None) -> Path:
    """A tiny folder in the published format; rows are (user, [history ids], target id)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = {str(i) for _, h, t in valid + test for i in [*h, t]}
    items = items or {
        i: {"title": f"item {i}", "description": f"['about {i}']", "brand": "B", "categories": ""} for i in ids
    }
    (folder / "Shop.item.json").write_text(json.dumps(items))
    for name, rows in (("Shop.valid.csv", valid), ("Shop.test.csv", test)):
        lines = [f'{u},"[]",t,"{list(h)}",{t},"[]",s\n' for u, h, t in rows]
        (folder / name).write_text(HEADER + "".join(lines))
    return folder


def cases(raw: RawTables) -> list[tuple[str, tuple[str, ...], str]]:
    """The chain's evaluation rule, re-implemented here: each interaction event at/after split_time is a case,
    its history the shopper's previous <= 10 item events (oldest first)."""
    out = []
    events = raw.events.sort_values(["user_id", "ts", "event_id"], kind="stable")
    for user, group in events.groupby("user_id", sort=False):
        items, stamps, kinds = group["item_id"].tolist(), group["ts"].tolist(), group["event_type"].tolist()
        for k, item in enumerate(items):
            if stamps[k] >= raw.split_time and kinds[k] in schema.INTERACTION_TYPES:
                out.append((user, tuple(items[max(0, k - 10) : k]), item))
    return out


def before_split(raw: RawTables) -> dict[str, list[str]]:
    pre = raw.events[raw.events["ts"] < raw.split_time].sort_values(["user_id", "ts"], kind="stable")
    return {u: g["item_id"].tolist() for u, g in pre.groupby("user_id")}


# --- parsing -------------------------------------------------------------------------------------------


def test_clean_description_joins_the_stringified_list_and_collapses_whitespace():
    assert clean_description("['First  part.\\n', 'Second &amp; last.']") == "First part. Second & last."
    assert clean_description("") == ""
    assert clean_description("[]") == ""


def test_clean_description_survives_broken_quoting_and_html():
    # an apostrophe inside single quotes: not a Python literal, as in 16 items of the real file
    assert clean_description("['LulzBot's TAZ printer', 'Second <br />part']") == "LulzBot's TAZ printer Second part"


def test_items_keep_index_ids_and_empty_categories(tmp_path):
    items = {
        "0": {"title": "Drill", "description": "['Cordless.']", "brand": "Acme", "categories": ""},
        "1": {"title": "Saw", "description": "", "brand": "", "categories": [["Tools", "Saws"]]},
    }
    write_folder(tmp_path, [("A", [0], 1)], [("A", [0, 1], 0)], items)
    raw = amazon2018.load(tmp_path)
    first = raw.items.drop(columns="price").to_dict("records")[0]
    assert first == {
        "item_id": "0",
        "title": "Drill",
        "description": "Cordless.",
        "brand": "Acme",
        "category": "",
    }
    assert raw.items["price"].isna().all()
    assert raw.items["category"].tolist() == ["", "Saws"]
    accepted, quarantined = schema.validate("items", raw.items)
    assert len(accepted) == 2 and quarantined.empty


# --- sequence recovery and the split ----------------------------------------------------------------------


def test_overlapping_rows_chain_into_one_sequence_with_periods():
    rows = [
        Row("A", ("1", "2"), "3", "valid", 2),
        Row("A", ("1", "2", "3"), "4", "valid", 3),
        Row("A", ("1", "2", "3", "4"), "5", "test", 2),
        Row("A", ("1", "2", "3", "4", "5"), "6", "test", 3),
        Row("B", ("7",), "8", "test", 4),  # a shopper seen only in the test period
    ]
    seqs, report = merge_sequences(rows)
    assert [(p.item_id, p.period) for p in seqs["A"]] == [
        ("1", "train"),
        ("2", "train"),
        ("3", "valid"),
        ("4", "valid"),
        ("5", "test"),
        ("6", "test"),
    ]
    assert [(p.item_id, p.period) for p in seqs["B"]] == [("7", "train"), ("8", "test")]
    assert (report.users, report.rows, report.chained, report.repaired, report.unreproducible) == (
        2,
        5,
        5,
        0,
        0,
    )


def test_history_is_capped_at_ten_when_chaining():
    first = tuple(str(i) for i in range(10))
    rows = [Row("A", first, "10", "valid", 2), Row("A", tuple(str(i) for i in range(1, 11)), "11", "test", 2)]
    seqs, report = merge_sequences(rows)
    assert [p.item_id for p in seqs["A"]] == [str(i) for i in range(12)]
    assert report.repaired == 0 and report.unreproducible == 0


def test_load_reproduces_every_test_row_and_keeps_test_targets_after_the_split(tmp_path):
    valid = [("A", [1, 2], 3), ("B", [5], 6), ("A", [1, 2, 3], 4)]
    test = [("A", [1, 2, 3, 4], 2), ("B", [5, 6], 7), ("A", [1, 2, 3, 4, 2], 9), ("C", [8, 8], 1)]
    raw = amazon2018.load(write_folder(tmp_path, valid, test))
    expected = [(u, tuple(str(i) for i in h), str(t)) for u, h, t in test]
    assert Counter(cases(raw)) == Counter(expected)
    # before the split: every valid row and each shopper's earliest test history, nothing else
    assert before_split(raw) == {"A": ["1", "2", "3", "4"], "B": ["5", "6"], "C": ["8", "8"]}
    assert set(raw.events["event_type"]) == {"purchase"}
    assert raw.events["event_id"].is_unique and raw.events["event_id"].str.fullmatch(r"[ABC]-\d+").all()
    assert str(raw.events["ts"].dt.tz) == "UTC"
    assert raw.users["user_id"].tolist() == ["A", "B", "C"] and list(raw.users.columns) == ["user_id"]
    assert raw.privacy_requests.empty and list(raw.privacy_requests.columns) == ["user_id", "request", "ts"]
    for table in ("items", "users", "events", "privacy_requests"):
        assert schema.validate(table, getattr(raw, table))[1].empty


def test_timestamps_increase_along_each_sequence(tmp_path):
    valid = [("A", list(range(10)), 10), ("A", list(range(1, 11)), 11)]
    test = [("A", list(range(2, 12)), 12), ("A", list(range(3, 13)), 13)]
    raw = amazon2018.load(write_folder(tmp_path, valid, test))
    events = raw.events.assign(pos=raw.events["event_id"].str.split("-").str[1].astype(int)).sort_values("pos")
    assert events["ts"].is_monotonic_increasing and events["ts"].is_unique
    assert (events["ts"] < raw.split_time).sum() == 12


def test_a_row_that_skips_items_is_repaired_with_views_and_still_reproduces(tmp_path):
    # the second test row's history holds item 9, never seen before: a gap in the published rows
    valid = [("A", [1], 2)]
    test = [("A", [1, 2], 3), ("A", [1, 2, 3, 9], 4)]
    raw = amazon2018.load(write_folder(tmp_path, valid, test))
    assert Counter(cases(raw)) == Counter([("A", ("1", "2"), "3"), ("A", ("1", "2", "3", "9"), "4")])
    gap = raw.events[raw.events["item_id"] == "9"]
    assert gap["event_type"].tolist() == ["view"] and (gap["ts"] >= raw.split_time).all()
    _, report = merge_sequences(
        amazon2018.read_rows(tmp_path / "Shop.valid.csv", "valid")
        + amazon2018.read_rows(tmp_path / "Shop.test.csv", "test")
    )
    assert (report.repaired, report.gap_items, report.unreproducible, report.repaired_users) == (
        1,
        1,
        0,
        {"A"},
    )


def test_a_history_shorter_than_the_known_sequence_is_counted_unreproducible():
    rows = [Row("A", ("1", "2", "3"), "4", "valid", 2), Row("A", ("3", "4"), "5", "test", 2)]
    _, report = merge_sequences(rows)
    assert report.repaired == 1 and report.unreproducible == 1


# --- errors ------------------------------------------------------------------------------------------------


def test_missing_folder_and_files_name_the_path_and_what_is_expected(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"nowhere.*\*\.item\.json"):
        read_source("amazon2018", tmp_path / "nowhere")  # the registry adds what the source expects
    write_folder(tmp_path, [("A", [1], 2)], [("A", [1, 2], 3)])
    (tmp_path / "Shop.test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"no file ending in '\.test\.csv' in .*test_missing_folder"):
        amazon2018.load(tmp_path)


def test_bad_history_cell_names_file_and_line(tmp_path):
    write_folder(tmp_path, [("A", [1], 2)], [("A", [1, 2], 3)])
    (tmp_path / "Shop.valid.csv").write_text(HEADER + 'A,"[]",t,"[1, 2",2,"[]",s\n')
    with pytest.raises(SourceError, match=r"Shop\.valid\.csv line 2: history_item_id"):
        amazon2018.load(tmp_path)


def test_read_source_dispatches_and_explains_errors(tmp_path):
    folder = write_folder(tmp_path / "shop", [("A", [1], 2)], [("A", [1, 2], 3)])
    assert read_source("amazon2018", str(folder)).name == "amazon2018"
    import re

    from ml.config import SOURCES

    with pytest.raises(SourceError, match=re.escape(f"unknown source 'amazon'; choose one of {list(SOURCES)}")):
        read_source("amazon", str(folder))
    with pytest.raises(SourceError, match=r"needs a path"):
        read_source("amazon2018", None)
    with pytest.raises(SourceNotFoundError, match=r"missing-dir"):
        read_source("amazon2018", str(tmp_path / "missing-dir"))


# --- the real corpus -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[RawTables, pd.DataFrame, pd.DataFrame]:
    if not REAL.is_dir():
        pytest.skip(f"real corpus not found at {REAL.resolve()} (needs ../shared/data/amazon2018-industrial)")
    valid = pd.read_csv(next(REAL.glob("*.valid.csv")), dtype=str)
    test = pd.read_csv(next(REAL.glob("*.test.csv")), dtype=str)
    return amazon2018.load(REAL), valid, test


def parse(frame: pd.DataFrame) -> list[tuple[str, tuple[str, ...], str]]:
    return [
        (u, tuple(str(i) for i in ast.literal_eval(h)), t)
        for u, h, t in zip(frame["user_id"], frame["history_item_id"], frame["item_id"], strict=True)
    ]


@pytest.mark.data
def test_real_corpus_cases_reproduce_the_test_file_exactly(real):
    raw, _, test = real
    expected = parse(test)
    got = cases(raw)
    assert len(got) == len(expected) == 4533
    assert Counter(got) == Counter(expected)  # same targets with the same histories, row for row
    assert len(raw.items) == 3686 and raw.items["item_id"].is_unique
    assert set(raw.events["item_id"]) <= set(raw.items["item_id"])


@pytest.mark.data
def test_real_corpus_trains_only_on_what_precedes_the_test_period(real):
    raw, valid, test = real
    rows_by_user: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
    for u, h, t in parse(valid) + parse(test):
        rows_by_user[u].append((h, t))
    n_valid = Counter(valid["user_id"])
    earliest_test = {u: h for u, h, _ in reversed(parse(test))}
    pre = before_split(raw)
    for user, seq in pre.items():
        first_history = rows_by_user[user][0][0]
        # the sequence before the split: the first row's history plus every valid target, nothing more
        assert len(seq) == len(first_history) + n_valid.get(user, 0), user
        allowed = {i for h, t in rows_by_user[user][: n_valid.get(user, 0)] for i in (*h, t)}
        allowed |= set(earliest_test.get(user, ()))
        assert set(seq) <= allowed, user
        if user in earliest_test:
            assert tuple(seq[-10:]) == earliest_test[user], user
    # a leaky training set is told by an item-transition baseline (README: ~0.10 clean, ~0.27+ leaky)
    assert 0.07 < transition_ndcg(pre, parse(test)) < 0.15


def transition_ndcg(sequences: dict[str, list[str]], rows: list[tuple[str, tuple[str, ...], str]]) -> float:
    """NDCG@10 of item-transition counts (window 5, gap decay 0.6, recency 0.7) learned from `sequences`."""
    trans: dict[str, Counter] = defaultdict(Counter)
    for seq in sequences.values():
        for a, item in enumerate(seq):
            for d in range(1, 6):
                if a + d < len(seq):
                    trans[item][seq[a + d]] += 0.6 ** (d - 1)
    gains = []
    for _, history, target in rows:
        score: Counter = Counter()
        for j, item in enumerate(reversed(history)):
            for nxt, c in trans[item].items():
                score[nxt] += c * 0.7**j
        top = [i for i, _ in score.most_common(10)]
        gains.append(1 / np.log2(top.index(target) + 2) if target in top else 0.0)
    return float(np.mean(gains))


# --- the development split (benchmarks/quality.py --split dev) ------------------------------------------------------------


def test_the_development_split_holds_out_each_shoppers_last_item_before_the_test_period(tmp_path):
    valid = [("A", [1], 2), ("A", [1, 2], 3), ("B", [5], 6), ("C", [7], 8)]
    test = [
        ("A", [1, 2, 3], 91),
        ("A", [1, 2, 3, 91], 92),  # a valid shopper's test rows
        ("D", [10, 11, 12], 93),
        ("D", [10, 11, 12, 93], 94),  # a shopper first seen in the test file
        ("E", [], 95),  # no item before the test period
        ("F", list(range(20, 32)), 96),
    ]  # 12 items before the test period: longer than one row's history
    real = amazon2018.load(write_folder(tmp_path / "real", valid, test))
    dev = amazon2018.load(amazon2018.development_split(tmp_path / "real", tmp_path / "dev"))
    f = [str(i) for i in range(20, 32)]
    # each shopper's sequence before the test period, its last item held out as the one case
    assert before_split(real) == {
        "A": ["1", "2", "3"],
        "B": ["5", "6"],
        "C": ["7", "8"],
        "D": ["10", "11", "12"],
        "F": f,
    }
    assert sorted(cases(dev)) == [
        ("A", ("1", "2"), "3"),
        ("B", ("5",), "6"),
        ("C", ("7",), "8"),
        ("D", ("10", "11"), "12"),
        ("F", tuple(f[:-1][-10:]), f[-1]),
    ]
    assert before_split(dev) == {"A": ["1", "2"], "B": ["5"], "C": ["7"], "D": ["10", "11"], "F": f[:-1]}
    # no test target reaches the development split, as training data or as a case
    assert not {"91", "92", "93", "94", "95", "96"} & set(dev.events["item_id"])
    assert (tmp_path / "dev" / "Shop.item.json").is_symlink()


def test_the_development_split_keeps_a_shopper_with_one_item_as_training_data(tmp_path):
    folder = write_folder(tmp_path / "real", [("A", [1], 2), ("B", [], 5)], [("A", [1, 2], 9)])
    dev = amazon2018.load(amazon2018.development_split(folder, tmp_path / "dev"))
    assert cases(dev) == [("A", ("1",), "2")]
    assert before_split(dev) == {"A": ["1"], "B": ["5"]}


@pytest.mark.parametrize(
    ("items", "says"),
    [
        ({"1": "a string, not an object", "2": {"title": "t"}}, r"item '1' is a str .*expected an object"),
        ({"1": {"title": True, "brand": "B"}, "2": {"title": "t"}}, r"item '1': title is a bool .*expected a string"),
        ({"1": {"title": "t", "brand": ["B"]}, "2": {"title": "t"}}, r"item '1': brand is a list"),
        ({"1": {"title": "t", "categories": [["a", 3]]}, "2": {"title": "t"}}, r"item '1': categories is"),
        ([["1", {"title": "t"}]], r"must hold an object mapping item index"),
    ],
)
def test_a_malformed_item_file_is_a_source_error_naming_the_file_the_item_and_what_was_expected(tmp_path, items, says):
    folder = write_folder(tmp_path / "shop", [("u", ["1"], "2")], [("u", ["1", "2"], "1")])
    (folder / "Shop.item.json").write_text(json.dumps(items))
    with pytest.raises(SourceError, match=says) as err:
        amazon2018.load(folder)
    assert "Shop.item.json" in str(err.value)


def test_undecodable_or_ragged_files_are_source_errors_not_tracebacks(tmp_path):
    folder = write_folder(tmp_path / "shop", [("u", ["1"], "2")], [("u", ["1", "2"], "1")])
    (folder / "Shop.item.json").write_bytes(b'{"1": {"title": "\xff\xfe"}}')
    with pytest.raises(SourceError, match=r"Shop.item.json is not valid UTF-8 JSON"):
        amazon2018.load(folder)
    folder = write_folder(tmp_path / "shop2", [("u", ["1"], "2")], [("u", ["1", "2"], "1")])
    (folder / "Shop.valid.csv").write_text(HEADER + 'u,"[]",t,"[1]",2,"[]",s\nv,1,2,3,4,5,6,7,8,9\n')
    with pytest.raises(SourceError, match=r"Shop.valid.csv is not a UTF-8 csv"):
        amazon2018.load(folder)
    (folder / "Shop.valid.csv").write_text(HEADER + 'u,"[]",t,"[1.5, None]",2,"[]",s\n')
    with pytest.raises(SourceError, match=r"Shop.valid.csv line 2: .* not a list of item indices"):
        amazon2018.load(folder)

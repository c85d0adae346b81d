"""The recbole adapter: both `.inter` shapes, the leave-one-out periods and times, errors, and the Games corpus."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from ml.data import recbole, schema
from ml.data.recbole_files import read_atomic
from ml.data.recbole_sequences import SPLIT_TIME, WINDOWS
from ml.data.sources import RawTables, SourceError, SourceNotFoundError, read_source
from ml.data.splits import temporal_split
from tests.oracles import histories_before

SEQ_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
ITEM_HEADER = "item_id:token\ttitle:token_seq\n"


def write(folder: Path, name: str, header: str, rows: list[tuple]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(header + "".join("\t".join(str(v) for v in row) + "\n" for row in rows), encoding="utf-8")
    return path


def items_file(folder: Path, ids: list[str] | range) -> Path:
    return write(folder, "Shop.item", ITEM_HEADER, [(i, f"Game number {i}") for i in ids])


def pair_folder(folder: Path, sequences: dict[str, list[int]]) -> Path:
    """The usual valid/test pair in the sequences shape: valid = all but the last two -> second-to-last,
    test = all but the last -> last."""
    items_file(folder, range(20))
    valid = [(u, " ".join(map(str, s[:-2])), s[-2]) for u, s in sequences.items()]
    test = [(u, " ".join(map(str, s[:-1])), s[-1]) for u, s in sequences.items()]
    write(folder, "Shop.valid.inter", SEQ_HEADER, valid)
    write(folder, "Shop.test.inter", SEQ_HEADER, test)
    return folder


def ordered(raw: RawTables) -> dict[str, list[tuple[str, pd.Timestamp]]]:
    ev = raw.events.sort_values(["user_id", "ts"], kind="stable")
    return {u: list(zip(g["item_id"], g["ts"], strict=True)) for u, g in ev.groupby("user_id")}


def periods(raw: RawTables) -> dict[str, list[str]]:
    """Each shopper's items labelled by the window their time falls in."""
    out = {}
    for user, seq in ordered(raw).items():
        out[user] = [next(p for p, (lo, hi) in WINDOWS.items() if lo <= ts < hi) for _, ts in seq]
    return out


SEQUENCES = {"a": [1, 2, 3, 4, 5], "b": [6, 7, 8], "c": [9, 1, 9, 2]}


# --- the sequences shape, valid/test pair -----------------------------------------------------------------


def test_valid_test_pair_recovers_each_sequence_in_order(tmp_path):
    raw = recbole.load(pair_folder(tmp_path / "d", SEQUENCES))
    assert {u: [i for i, _ in s] for u, s in ordered(raw).items()} == {
        u: [str(i) for i in s] for u, s in SEQUENCES.items()
    }
    for seq in ordered(raw).values():  # strictly increasing times: the order is unambiguous
        assert all(a[1] < b[1] for a, b in zip(seq, seq[1:], strict=False))
    assert raw.counts() == {"items": 20, "users": 3, "events": 12, "privacy_requests": 0}
    assert raw.split_time == SPLIT_TIME
    assert set(raw.events["event_type"]) == {"purchase"}
    assert raw.events["event_id"].is_unique


def test_leave_one_out_holds_out_exactly_the_last_item_and_puts_the_second_to_last_before_the_split(tmp_path):
    raw = recbole.load(pair_folder(tmp_path / "d", SEQUENCES))
    assert periods(raw) == {
        "a": ["train", "train", "train", "valid", "test"],
        "b": ["train", "valid", "test"],
        "c": ["train", "train", "valid", "test"],
    }
    split = temporal_split(raw.events, raw.split_time)
    cases = split.cases.sort_values("user_id")
    assert list(zip(cases["user_id"], cases["item_id"], strict=True)) == [("a", "5"), ("b", "8"), ("c", "2")]
    # each case's history is the test file's item_id_list (everything before the held-out item)
    histories = histories_before(split.sequences, cases, max_history=50)
    assert histories == [["1", "2", "3", "4"], ["6", "7"], ["9", "1", "9"]]
    # training examples: every position before the split but the first
    assert len(split.train) == sum(len(s) - 2 for s in SEQUENCES.values())


def test_a_test_history_cut_by_a_length_cap_still_continues_the_sequence(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    write(folder, "S.valid.inter", SEQ_HEADER, [("u", "0 1 2 3", 4)])
    write(folder, "S.test.inter", SEQ_HEADER, [("u", "2 3 4", 5)])  # capped at 3 items: 0 and 1 were cut
    raw = recbole.load(folder)
    assert [i for i, _ in ordered(raw)["u"]] == ["0", "1", "2", "3", "4", "5"]
    assert periods(raw)["u"] == ["train"] * 4 + ["valid", "test"]


def test_a_byte_order_mark_does_not_hide_the_first_field(tmp_path):
    folder = pair_folder(tmp_path / "d", SEQUENCES)
    (folder / "Shop.item").write_text(ITEM_HEADER + "1\tOne\n", encoding="utf-8-sig")
    assert list(recbole.load(folder).items["item_id"]) == ["1"]


def test_loading_is_deterministic(tmp_path):
    folder = pair_folder(tmp_path / "d", SEQUENCES)
    pd.testing.assert_frame_equal(recbole.load(folder).events, recbole.load(folder).events)


def test_a_single_sequences_file_with_augmented_rows_uses_leave_one_out(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    # RecBole's augmented training rows: every prefix of the sequence -> its next item
    write(folder, "S.inter", SEQ_HEADER, [("u", "0", 1), ("u", "0 1", 2), ("u", "0 1 2", 3), ("v", "4", 5)])
    raw = recbole.load(folder)
    assert [i for i, _ in ordered(raw)["u"]] == ["0", "1", "2", "3"]
    assert periods(raw) == {"u": ["train", "train", "valid", "test"], "v": ["valid", "test"]}


# --- the interactions shape ---------------------------------------------------------------------------------


def test_one_interactions_file_is_ordered_by_timestamp_then_line_and_left_one_out(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    rows = [("u", 3, 5, 300), ("u", 1, 4, 100), ("w", 7, 1, 50), ("u", 2, 3, 200), ("u", 0, 5, 100)]
    write(folder, "S.inter", header, rows)
    raw = recbole.load(folder)
    # u: t=100 (line 3: item 1), t=100 (line 6: item 0), t=200, t=300; w has one item: no case
    assert [i for i, _ in ordered(raw)["u"]] == ["1", "0", "2", "3"]
    assert periods(raw) == {"u": ["train", "train", "valid", "test"], "w": ["train"]}
    assert list(temporal_split(raw.events, raw.split_time).cases["item_id"]) == ["3"]


def test_interactions_without_timestamps_keep_file_order(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    write(folder, "S.inter", "user_id:token\titem_id:token\n", [("u", 5), ("u", 2), ("u", 8)])
    raw = recbole.load(folder)
    assert [i for i, _ in ordered(raw)["u"]] == ["5", "2", "8"]
    assert periods(raw)["u"] == ["train", "valid", "test"]


def test_interaction_benchmark_files_give_each_row_its_files_period(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    write(folder, "S.train.inter", header, [("u", 1, 20), ("u", 0, 10), ("v", 4, 1)])
    write(folder, "S.valid.inter", header, [("u", 2, 30)])
    write(folder, "S.test.inter", header, [("u", 3, 40), ("u", 6, 50), ("v", 5, 2)])
    raw = recbole.load(folder)
    assert [i for i, _ in ordered(raw)["u"]] == ["0", "1", "2", "3", "6"]
    assert periods(raw) == {"u": ["train", "train", "valid", "test", "test"], "v": ["train", "test"]}
    assert len(temporal_split(raw.events, raw.split_time).cases) == 3


# --- items --------------------------------------------------------------------------------------------------


def test_item_fields_map_onto_the_contract_and_missing_columns_are_empty_and_logged(tmp_path, caplog):
    folder = tmp_path / "d"
    header = "item_id:token\tmovie_title:token_seq\tgenre:token_seq\tprice:float\trelease_year:token\n"
    write(folder, "M.item", header, [(1, "Toy  Story ", "Animation Comedy", 9.5, 1995), (2, "Heat", "Crime", "", 1995)])
    write(folder, "M.inter", "user_id:token\titem_id:token\n", [("u", 1), ("u", 2)])
    with caplog.at_level(logging.INFO, logger="ml.data.recbole"):
        raw = recbole.load(folder)
    items = raw.items.set_index("item_id")
    assert list(raw.items.columns) == [c.name for c in schema.TABLES["items"]]
    assert items.loc["1", "title"] == "Toy Story"
    assert items.loc["1", "category"] == "Animation Comedy"
    assert (items["description"] == "").all() and (items["brand"] == "").all()
    assert items.loc["1", "price"] == 9.5 and pd.isna(items.loc["2", "price"])
    assert "left empty: ['description', 'brand']" in caplog.text
    assert "fields ignored: ['release_year']" in caplog.text
    accepted, quarantined = schema.validate("items", raw.items)
    assert len(accepted) == 2 and quarantined.empty


def test_an_item_missing_from_the_catalogue_is_passed_on_for_quarantine_and_logged(tmp_path, caplog):
    folder = pair_folder(tmp_path / "d", {"a": [1, 2, 3, 99]})
    with caplog.at_level(logging.WARNING, logger="ml.data.recbole"):
        raw = recbole.load(folder)
    assert "absent from the .item file, first '99' at" in caplog.text and "Shop.test.inter line 2" in caplog.text
    accepted, quarantined = schema.validate("events", raw.events, known_items=set(raw.items["item_id"]))
    assert list(quarantined["item_id"]) == ["99"] and set(quarantined["reason"]) == {"item_id not in catalog"}
    assert len(accepted) == 3


# --- errors -------------------------------------------------------------------------------------------------


def test_missing_folder_and_files_say_what_is_expected(tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        recbole.load(tmp_path / "nowhere")
    folder = tmp_path / "d"
    write(folder, "S.valid.inter", SEQ_HEADER, [("u", "1", 2)])
    with pytest.raises(SourceNotFoundError, match=r"no file ending in '\.item'"):
        recbole.load(folder)
    items_file(folder, range(5))
    with pytest.raises(SourceNotFoundError, match=r"no \*\.test\.inter"):
        recbole.load(folder)
    (folder / "S.valid.inter").unlink()
    with pytest.raises(SourceNotFoundError, match=r"no file ending in '\.inter'"):
        recbole.load(folder)


def test_a_header_field_without_a_type_names_the_file_and_line_1(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(5))
    write(folder, "S.inter", "user_id\titem_id:token\n", [("u", 1)])
    with pytest.raises(SourceError, match=r"S\.inter line 1: header field 'user_id' is not name:type"):
        recbole.load(folder)
    write(folder, "S.inter", "user_id:tokens\titem_id:token\n", [("u", 1)])
    with pytest.raises(SourceError, match="line 1: header field 'user_id:tokens'"):
        recbole.load(folder)


def test_a_row_with_the_wrong_number_of_fields_names_its_line(tmp_path):
    folder = tmp_path / "d"
    write(folder, "S.item", ITEM_HEADER, [(0, "ok"), (1, "a title\twith a tab"), (2, "ok")])
    write(folder, "S.inter", "user_id:token\titem_id:token\n", [("u", 0)])
    with pytest.raises(SourceError, match=r"S\.item line 3: 3 tab-separated field\(s\), the header names 2"):
        recbole.load(folder)
    items_file(folder, range(5))
    (folder / "S.item").unlink()
    (folder / "S.inter").write_text("user_id:token\titem_id:token\nu\t1\n\nu\n")  # line 4: one field
    with pytest.raises(SourceError, match=r"S\.inter line 4: 1 tab-separated"):
        recbole.load(folder)


def test_required_fields_and_shapes_are_checked(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(5))
    write(folder, "S.inter", "session_id:token\titem_id:token\n", [("s", 1)])
    with pytest.raises(SourceError, match=r"lacks field\(s\) \['user_id'\]"):
        recbole.load(folder)
    (folder / "S.inter").unlink()
    write(folder, "S.valid.inter", SEQ_HEADER, [("u", "1", 2)])
    write(folder, "S.test.inter", "user_id:token\titem_id:token\n", [("u", 3)])
    with pytest.raises(SourceError, match="mix shapes"):
        recbole.load(folder)


def test_a_history_that_does_not_continue_the_sequence_names_its_row(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(10))
    write(folder, "S.valid.inter", SEQ_HEADER, [("u", "1 2", 3), ("v", "5", 6)])
    write(folder, "S.test.inter", SEQ_HEADER, [("v", "5 6", 7), ("u", "1 4 3", 2)])
    with pytest.raises(SourceError, match=r"S\.test\.inter line 3: shopper 'u'"):
        recbole.load(folder)


def test_a_timestamp_that_is_not_a_number_names_its_line(tmp_path):
    folder = tmp_path / "d"
    items_file(folder, range(5))
    write(folder, "S.inter", "user_id:token\titem_id:token\ttimestamp:float\n", [("u", 1, 10), ("u", 2, "soon")])
    with pytest.raises(SourceError, match=r"S\.inter line 3: timestamp 'soon' is not a number"):
        recbole.load(folder)


# --- registration -----------------------------------------------------------------------------------------


def test_read_source_reads_recbole_and_needs_a_path(tmp_path):
    raw = read_source("recbole", pair_folder(tmp_path / "d", SEQUENCES))
    assert raw.name == "recbole" and raw.counts()["users"] == 3
    with pytest.raises(SourceError, match=r"needs a path.*\*\.item"):
        read_source("recbole", None)


# --- the real corpus --------------------------------------------------------------------------------------


@pytest.mark.data
def test_games_corpus_holds_one_case_per_shopper():
    from tests.conftest import shared_data

    folder = shared_data("amazon2018-games")
    raw = recbole.load(folder)
    assert raw.counts() == {"items": 16_859, "users": 50_546, "events": 440_264, "privacy_requests": 0}
    assert raw.items["title"].str.len().gt(0).all()
    split = temporal_split(raw.events, raw.split_time)
    assert len(split.cases) == 50_546 and split.cases["user_id"].is_unique
    # every case reproduces its test-file row: the target, and the history as its item_id_list
    test = read_atomic(folder / "Games-6k.test.inter").rows.set_index("user_id")
    cases = split.cases.set_index("user_id").loc[test.index].reset_index()
    assert (cases["item_id"].to_numpy() == test["item_id"].to_numpy()).all()
    sample = cases.iloc[::997]
    seqs = split.sequences[split.sequences["user_id"].isin(set(sample["user_id"]))]
    histories = histories_before(seqs, sample, max_history=50)
    assert histories == [h.split() for h in test.loc[sample["user_id"], "item_id_list"]]


def test_development_split_holds_out_the_second_to_last_item_and_reads_no_test_item(tmp_path):
    dev = recbole.development_split(pair_folder(tmp_path / "d", SEQUENCES), tmp_path / "dev")
    raw = recbole.load(dev)
    assert {u: [i for i, _ in s] for u, s in ordered(raw).items()} == {
        u: [str(i) for i in s[:-1]] for u, s in SEQUENCES.items()
    }
    split = temporal_split(raw.events, raw.split_time)
    cases = split.cases.sort_values("user_id")
    assert list(zip(cases["user_id"], cases["item_id"], strict=True)) == [("a", "4"), ("b", "7"), ("c", "9")]
    # training examples: each sequence less its last two items (the first position has no history)
    assert len(split.train) == sum(len(s) - 3 for s in SEQUENCES.values())

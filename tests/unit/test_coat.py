"""The Coat adapter: one-hot features -> users and items, ratings >= 4 -> events on each side of the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.data import coat, schema
from ml.data.sources import SourceError, SourceNotFoundError, read_source

REAL = Path(__file__).parents[2] / ".." / "shared" / "data" / "coat"

USER_MAP = [
    "gender:men",
    "gender:women",
    "age:20-30",
    "age:under 20",
    "age:over 60",
    "location:urban",
    "location:rural",
]
ITEM_MAP = [
    "gender:men",
    "gender:women",
    "jackettype:bomber",
    "jackettype:parkas",
    "jackettype:other",
    "color:black",
    "color:multi",
    "color:other",
    "onfrontpage:yes",
    "onfrontpage:no",
]


def write_folder(folder: Path, train: list[list[int]], test: list[list[int]]) -> Path:
    """A tiny Coat folder: 3 users x 4 items, maps with CRLF and no final newline, as in the real files."""
    feats = folder / "user_item_features"
    feats.mkdir(parents=True)
    (feats / "user_features_map.txt").write_bytes("\r\n".join(USER_MAP).encode())
    (feats / "item_features_map.txt").write_bytes("\r\n".join(ITEM_MAP).encode())
    users = [[0, 1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1, 0]]
    items = [
        [0, 1, 1, 0, 0, 1, 0, 0, 1, 0],  # women's black bomber, front page
        [1, 0, 0, 1, 0, 0, 1, 0, 0, 1],  # men's multicolour parka
        [1, 0, 0, 0, 1, 0, 0, 1, 0, 1],  # men's jacket, colour other
        [0, 1, 0, 0, 1, 1, 0, 0, 0, 1],  # women's black jacket
    ]
    for name, matrix in (
        ("user_item_features/user_features.ascii", users),
        ("user_item_features/item_features.ascii", items),
        ("train.ascii", train),
        ("test.ascii", test),
    ):
        (folder / name).write_text("\n".join(" ".join(map(str, row)) for row in matrix) + "\n")
    return folder


TRAIN = [[5, 0, 3, 4], [0, 4, 0, 0], [1, 2, 0, 0]]
TEST = [[0, 5, 0, 0], [2, 0, 4, 0], [0, 0, 0, 1]]


@pytest.fixture
def raw(tmp_path):
    return coat.load(write_folder(tmp_path / "coat", TRAIN, TEST))


def test_users_carry_real_attributes(raw):
    assert raw.users.to_dict("records") == [
        {"user_id": "u000", "gender": "f", "age_band": "20-30", "region": "urban", "fashion_interest": ""},
        {"user_id": "u001", "gender": "m", "age_band": "<20", "region": "rural", "fashion_interest": ""},
        {"user_id": "u002", "gender": "m", "age_band": "60+", "region": "urban", "fashion_interest": ""},
    ]


def test_items_get_text_from_features_category_jacket_type_brand_colour(raw):
    items = raw.items.drop(columns="price").to_dict("records")
    assert items[0] == {
        "item_id": "c000",
        "title": "women's black bomber jacket",
        "description": "A bomber jacket in black for women. Featured on the shop's front page.",
        "brand": "black",
        "category": "bomber",
    }
    assert [i["title"] for i in items[1:]] == [
        "men's multicolour parka",
        "men's jacket",
        "women's black jacket",
    ]
    assert [i["brand"] for i in items] == ["black", "multicolour", "other", "black"]
    assert items[2]["description"] == "A jacket for men."
    assert raw.items["price"].isna().all()


def test_ratings_of_four_and_five_become_rating_events_split_by_file(raw):
    events = raw.events
    assert set(events["event_type"]) == {"rating"}
    train = events[events["ts"] < raw.split_time]
    test = events[events["ts"] >= raw.split_time]
    assert sorted(zip(train["user_id"], train["item_id"], strict=True)) == [
        ("u000", "c000"),
        ("u000", "c003"),
        ("u001", "c001"),
    ]
    assert sorted(zip(test["user_id"], test["item_id"], strict=True)) == [("u000", "c001"), ("u001", "c002")]
    assert events["event_id"].is_unique
    assert (train["ts"] >= coat.START).all() and (test["ts"] < coat.END).all()
    for table in ("items", "users", "events", "privacy_requests"):
        assert schema.validate(table, getattr(raw, table))[1].empty


def test_timestamps_are_seeded(tmp_path):
    folder = write_folder(tmp_path / "coat", TRAIN, TEST)
    a, b, c = coat.load(folder, seed=1), coat.load(folder, seed=1), coat.load(folder, seed=2)
    assert a.events.equals(b.events)
    assert not a.events["ts"].equals(
        c.events.set_index("event_id").loc[a.events["event_id"], "ts"].reset_index(drop=True)
    )


def test_shape_mismatch_and_missing_files_are_explained(tmp_path):
    folder = write_folder(tmp_path / "coat", TRAIN, [row[:3] for row in TEST])
    with pytest.raises(SourceError, match=r"test\.ascii is 3 x 3; expected users x items = 3 x 4"):
        coat.load(folder)
    (folder / "train.ascii").unlink()
    with pytest.raises(SourceNotFoundError, match=r"missing file .*train\.ascii; expected train\.ascii, test\.ascii"):
        read_source("coat", folder)  # the registry adds what the source expects
    with pytest.raises(SourceNotFoundError, match=r"folder .*absent does not exist"):
        read_source("coat", str(tmp_path / "absent"))


def test_read_map_rejects_a_line_without_group(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("gender:men\nwomen\n")
    with pytest.raises(SourceError, match=r"m\.txt line 2: 'women' is not 'group:value'"):
        coat.read_map(path)


@pytest.mark.data
def test_real_coat_folder():
    if not REAL.is_dir():
        pytest.skip(f"Coat not found at {REAL.resolve()} (needs ../shared/data/coat)")
    raw = read_source("coat", str(REAL))
    train = np.loadtxt(REAL / "train.ascii", dtype=int)
    test = np.loadtxt(REAL / "test.ascii", dtype=int)
    assert (len(raw.users), len(raw.items)) == (290, 300)
    assert (raw.events["ts"] < raw.split_time).sum() == (train >= 4).sum() == 1905
    assert (raw.events["ts"] >= raw.split_time).sum() == (test >= 4).sum() == 860
    assert raw.users["gender"].value_counts().to_dict() == {"m": 162, "f": 128}
    assert set(raw.users["age_band"]) == {"<20", "20-30", "30-40", "40-50", "50-60", "60+"}
    assert set(raw.users["region"]) == {"rural", "suburban", "urban"}
    assert raw.items["brand"].value_counts().iloc[0] == 69  # black, the head colour
    assert raw.items["category"].nunique() == 16
    for table in ("items", "users", "events", "privacy_requests"):
        assert schema.validate(table, getattr(raw, table))[1].empty


def test_cells_out_of_range_and_undecodable_maps_are_source_errors_naming_the_cell(tmp_path):
    folder = write_folder(tmp_path / "coat", [[5, 0, 0, 4], [0, 0, 0, 0], [0, 0, 0, 0]], [[0] * 4] * 3)
    (folder / "train.ascii").write_text("5 0 0 4\n0 0 7 0\n0 0 0 0\n")
    with pytest.raises(SourceError, match=r"train.ascii line 2, column 3 holds 7; expected 0 to 5"):
        coat.load(folder)
    folder = write_folder(tmp_path / "coat2", [[5, 0, 0, 4], [0, 0, 0, 0], [0, 0, 0, 0]], [[0] * 4] * 3)
    (folder / "user_item_features" / "user_features_map.txt").write_bytes(b"gender:\xffmen\n")
    with pytest.raises(SourceError, match=r"user_features_map.txt is not UTF-8 text"):
        coat.load(folder)

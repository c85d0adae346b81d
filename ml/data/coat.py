"""Adapter for the Coat shopping data (Schnabel et al., "Recommendations as Treatments", ICML 2016).

The folder holds `train.ascii` and `test.ascii` (users x items matrices of ratings, 0 = not rated, 1-5) and
`user_item_features/` with one-hot `user_features.ascii` and `item_features.ascii`, each column named by the
matching `*_map.txt` line ("group:value", e.g. "gender:women", "jackettype:bomber").

What becomes what:
- users: `user_id` "u000".. (row index), real `gender` ("f"/"m"), `age_band` (the survey's bands: "<20",
  "20-30", "30-40", "40-50", "50-60", "60+"), `region` (location: rural/suburban/urban) and
  `fashion_interest`. These are audit attributes only.
- items: `item_id` "c000".. (row index); title built from the features, e.g. "women's black bomber jacket";
  `category` = jacket type; `brand` = colour. Coat has no sellers, so colour stands in for the provider group
  of provider-side fairness: it is independent of the category and long-tailed (black 69 items, pink 8).
  No price.
- events: a rating >= 4 is a `rating` event (the shopper liked the item). Ratings < 4 are NOT events: the
  contract has no rating value, so a low rating cannot be told apart from a liked one once it is an event.
  `train.ascii` ratings (self-selected items) get seeded random timestamps before `split_time`;
  `test.ascii` ratings (items chosen at random by the study: the unbiased hold-out) get timestamps after it.
  Neither file has times, so the order within a period is random (seeded); a test case's history may
  therefore hold the shopper's other liked test items that were drawn earlier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data import schema
from ml.data.raw import RawTables, SourceError, SourceRequest, require_file, require_folder

log = logging.getLogger(__name__)

SOURCE = "coat"
MIN_RATING = 4  # ratings at or above this become events
RATINGS = (0, 5)  # 0 = not rated
ONE_HOT = (0, 1)
START = pd.Timestamp("2016-01-04", tz="UTC")
SPLIT_TIME = pd.Timestamp("2016-03-01", tz="UTC")
END = pd.Timestamp("2016-03-15", tz="UTC")

GENDERS = {"men": "m", "women": "f"}
AGE_BANDS = {"under 20": "<20", "over 60": "60+"}  # the others ("20-30", ...) keep their survey label
JACKET_NOUNS = {
    "bomber": "bomber jacket",
    "cropped": "cropped jacket",
    "field": "field jacket",
    "fleece": "fleece jacket",
    "insulated": "insulated jacket",
    "motorcycle": "motorcycle jacket",
    "other": "jacket",
    "packable": "packable jacket",
    "parkas": "parka",
    "pea": "pea coat",
    "rain": "rain jacket",
    "shells": "shell jacket",
    "track": "track jacket",
    "trench": "trench coat",
    "vests": "vest",
    "waterproof": "waterproof jacket",
}
COLOURS = {"multi": "multicolour"}  # "other" stays "other"; the rest keep their name


def read_map(path: Path) -> list[tuple[str, str]]:
    """The column names of a one-hot feature file: one "group:value" a line (CRLF tolerated)."""
    names = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(f"source {SOURCE!r}: {path} is not UTF-8 text ({err}); expected 'group:value' lines") from err
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        group, sep, value = line.partition(":")
        if not sep:
            raise SourceError(f"source {SOURCE!r}: {path} line {n}: {line!r} is not 'group:value'")
        names.append((group.strip(), value.strip()))
    return names


def read_matrix(path: Path, columns: int | None = None, values: tuple[int, int] | None = None) -> np.ndarray:
    """A whitespace-separated integer matrix; `columns` checks its width, `values` (lowest, highest) its cells."""
    try:
        matrix = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as err:
        raise SourceError(f"source {SOURCE!r}: {path} is not a whitespace-separated integer matrix ({err})") from err
    if columns is not None and matrix.shape[1] != columns:
        raise SourceError(f"source {SOURCE!r}: {path} has {matrix.shape[1]} columns; its map names {columns} features")
    if values is not None and matrix.size:
        lo, hi = values
        bad = np.argwhere((matrix < lo) | (matrix > hi))
        if len(bad):
            row, col = (int(x) for x in bad[0])
            raise SourceError(
                f"source {SOURCE!r}: {path} line {row + 1}, column {col + 1} holds {int(matrix[row, col])}; "
                f"expected {lo} to {hi} ({len(bad)} such cell(s))"
            )
    return matrix


def decode_one_hot(matrix: np.ndarray, names: list[tuple[str, str]]) -> pd.DataFrame:
    """One column per feature group holding the value whose bit is set ("" when none is)."""
    out = {}
    for group in dict.fromkeys(g for g, _ in names):
        cols = [j for j, (g, _) in enumerate(names) if g == group]
        block = matrix[:, cols]
        values = np.array([names[j][1] for j in cols], dtype=object)
        picked = values[block.argmax(axis=1)]
        picked[block.max(axis=1) == 0] = ""
        out[group] = picked
    return pd.DataFrame(out)


def build_users(features: pd.DataFrame) -> pd.DataFrame:
    n = len(features)
    get = features.get
    return pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in range(n)],
            "gender": [GENDERS.get(v, v) for v in get("gender", pd.Series([""] * n))],
            "age_band": [AGE_BANDS.get(v, v) for v in get("age", pd.Series([""] * n))],
            "region": list(get("location", pd.Series([""] * n))),
            "fashion_interest": list(get("fashioninterest", pd.Series([""] * n))),
        }
    )


def item_title(gender: str, colour: str, jacket: str) -> str:
    """E.g. ("women", "black", "bomber") -> "women's black bomber jacket"."""
    words = [f"{gender}'s" if gender else "", "" if colour in ("", "other") else COLOURS.get(colour, colour)]
    words.append(JACKET_NOUNS.get(jacket, f"{jacket} jacket" if jacket else "jacket"))
    return " ".join(w for w in words if w)


def build_items(features: pd.DataFrame) -> pd.DataFrame:
    n = len(features)
    blank = pd.Series([""] * n)
    gender, jacket = features.get("gender", blank), features.get("jackettype", blank)
    colour, front = features.get("color", blank), features.get("onfrontpage", blank)
    titles, descriptions = [], []
    for g, c, j, f in zip(gender, colour, jacket, front, strict=True):
        title = item_title(g, c, j)
        titles.append(title)
        noun = JACKET_NOUNS.get(j, "jacket")
        text = f"{'An' if noun[0] in 'aeiou' else 'A'} {noun}"
        text += f" in {COLOURS.get(c, c)}" if c and c != "other" else ""
        text += f" for {g}." if g else "."
        if f == "yes":
            text += " Featured on the shop's front page."
        descriptions.append(text)
    return pd.DataFrame(
        {
            "item_id": [f"c{i:03d}" for i in range(n)],
            "title": titles,
            "description": descriptions,
            "brand": [COLOURS.get(c, c) for c in colour],
            "category": list(jacket),
            "price": np.nan,
        }
    )


def rating_events(
    ratings: np.ndarray,
    users: list[str],
    items: list[str],
    period: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One `rating` event per rating >= MIN_RATING, at a random time inside `window`."""
    u_idx, i_idx = np.nonzero(ratings >= MIN_RATING)
    lo, hi = window
    seconds = rng.integers(0, int((hi - lo).total_seconds()), size=len(u_idx))
    return pd.DataFrame(
        {
            "event_id": [f"{users[u]}-{period}-{items[i]}" for u, i in zip(u_idx, i_idx, strict=True)],
            "user_id": [users[u] for u in u_idx],
            "item_id": [items[i] for i in i_idx],
            "event_type": "rating",
            "query": None,
            "ts": lo + pd.to_timedelta(seconds, unit="s"),
        }
    )


def load(path: str | Path, seed: int = 7) -> RawTables:
    """Read a Coat folder into the contract's tables (see the module docstring); `seed` draws the timestamps."""
    folder = require_folder(path, SOURCE)
    feats = folder / "user_item_features"
    user_names = read_map(require_file(feats / "user_features_map.txt", SOURCE))
    item_names = read_map(require_file(feats / "item_features_map.txt", SOURCE))
    user_matrix = read_matrix(require_file(feats / "user_features.ascii", SOURCE), len(user_names), ONE_HOT)
    item_matrix = read_matrix(require_file(feats / "item_features.ascii", SOURCE), len(item_names), ONE_HOT)
    users = build_users(decode_one_hot(user_matrix, user_names))
    items = build_items(decode_one_hot(item_matrix, item_names))
    rng = np.random.default_rng(seed)
    frames = []
    for period, name, window in (
        ("train", "train.ascii", (START, SPLIT_TIME)),
        ("test", "test.ascii", (SPLIT_TIME, END)),
    ):
        ratings = read_matrix(require_file(folder / name, SOURCE), values=RATINGS)
        if ratings.shape != (len(users), len(items)):
            raise SourceError(
                f"source {SOURCE!r}: {folder / name} is {ratings.shape[0]} x {ratings.shape[1]}; expected "
                f"users x items = {len(users)} x {len(items)} (from user_item_features/)"
            )
        frames.append(rating_events(ratings, list(users["user_id"]), list(items["item_id"]), period, window, rng))
    events = pd.concat(frames, ignore_index=True).sort_values(["ts", "event_id"], kind="stable")
    log.info(
        "coat: %d users, %d items, %d train and %d test rating events (ratings >= %d)",
        len(users),
        len(items),
        len(frames[0]),
        len(frames[1]),
        MIN_RATING,
    )
    return RawTables(
        name=SOURCE,
        items=items,
        users=users,
        events=events.reset_index(drop=True),
        privacy_requests=schema.empty("privacy_requests"),
        split_time=SPLIT_TIME,
    )


def read(request: SourceRequest) -> RawTables:
    """The registry's entry (`ml.data.sources`)."""
    return load(request.path)

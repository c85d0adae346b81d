"""The data contract: four tables, their columns and types, and row-level validation.

`validate(table, df)` splits a frame into the rows that keep the contract and the rows that break it.
Every broken row keeps its original values and gains `reason` (what was wrong), so nothing read is lost:
len(accepted) + len(quarantined) == len(df). (Ingestion then defers events after its date:
accepted + quarantined + deferred == read, per table; see ml/data/ingest.py.)

Value rules, each checked per row:
- text columns hold `str` (an integer is taken as its decimal text: ids often arrive as numbers); bytes, bools,
  floats and other objects are not text. Text must be valid Unicode (no lone surrogates: parquet cannot store
  them) and at most MAX_CHARS long (ids and enumerations MAX_ID_CHARS): a megabyte in a title is an upstream bug,
  not a product.
- `price` is a finite number >= 0 (a number, or text holding one); NaN means "no price", inf is not a price.
- `ts` is a timestamp, text (ISO-8601 or another date-time form pandas reads; no zone means UTC), or a number of
  SECONDS since the Unix epoch (UTC), as Unix tools and most databases write them. A numeric `ts` is never read
  as nanoseconds (pandas' default, which puts 1700000000 in 1970); bools are not timestamps.
- users: every column besides `user_id` is an optional attribute (free text, for the fairness audit only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "search")
REQUEST_TYPES = ("opt_out", "delete")
# event types that mean "the shopper chose this item": the next-item targets
INTERACTION_TYPES = ("click", "add_to_cart", "purchase", "rating")


# the longest text a column may hold; the longest real description read so far is a few thousand characters
MAX_CHARS = 20_000
MAX_ID_CHARS = 256  # ids and enumerations
# the largest |seconds since the epoch| a timestamp may have: datetime64[ns] ends in the year 2262
MAX_EPOCH_SECONDS = 9.2e9


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str", "float", "ts"
    nullable: bool = False
    text: bool = False  # free text a person wrote: scrubbed of PII at ingestion

    @property
    def max_chars(self) -> int:
        return MAX_CHARS if self.text else MAX_ID_CHARS


TABLES: dict[str, tuple[Column, ...]] = {
    "items": (
        Column("item_id", "str"),
        Column("title", "str", text=True),
        Column("description", "str", nullable=True, text=True),
        Column("brand", "str", nullable=True, text=True),
        Column("category", "str", nullable=True, text=True),
        Column("price", "float", nullable=True),
    ),
    "users": (Column("user_id", "str"),),
    "events": (
        Column("event_id", "str"),
        Column("user_id", "str"),
        Column("item_id", "str", nullable=True),
        Column("event_type", "str"),
        Column("query", "str", nullable=True, text=True),
        Column("ts", "ts"),
    ),
    "privacy_requests": (
        Column("user_id", "str"),
        Column("request", "str"),
        Column("ts", "ts"),
    ),
}
# the optional user attributes the fairness audit reads (never model inputs)
USER_ATTRIBUTES = ("gender", "age_band", "region")
KEYS = {"items": "item_id", "users": "user_id", "events": "event_id"}


class ContractError(ValueError):
    """A whole table is unusable (a required column is missing); rows are not judged one by one."""


def columns(table: str, df: pd.DataFrame | None = None) -> tuple[Column, ...]:
    """The contract's columns of `table`; for users, plus each attribute column `df` brings (nullable text)."""
    if table not in TABLES:
        raise ContractError(f"unknown table {table!r}; the contract has {sorted(TABLES)}")
    named = TABLES[table]
    if table != "users" or df is None:
        return named
    known = {c.name for c in named}
    return named + tuple(Column(str(c), "str", nullable=True, text=True) for c in df.columns if c not in known)


def extra_columns(table: str, df: pd.DataFrame) -> list[str]:
    """Columns of `df` the contract does not name (users' attributes are named: any column is one)."""
    named = {c.name for c in columns(table, df)}
    return [str(c) for c in df.columns if c not in named]


def text_columns(table: str, df: pd.DataFrame | None = None) -> tuple[str, ...]:
    """The free-text columns of `table` (with users' attributes in `df`): the ones scrubbed of PII."""
    return tuple(c.name for c in columns(table, df) if c.text)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _text_problem(v: object, limit: int) -> str:
    """What keeps `v` from being contract text ("" when nothing: missing values are judged elsewhere)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
        return ""
    if not isinstance(v, str):
        return f"is not text ({type(v).__name__})"
    if len(v) > limit:
        return f"is longer than {limit} characters ({len(v)})"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    return ""


def parse_timestamps(values: pd.Series) -> pd.Series:
    """`values` as UTC timestamps (NaT where a value is none): text is parsed as a date-time, a number is
    SECONDS since the Unix epoch (see the module docstring); bools, bytes and other objects are NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if values.empty:
        return out
    numeric = values.map(_is_number).astype(bool)
    if numeric.any():
        seconds = values[numeric].astype(float)
        ok = seconds.map(lambda x: math.isfinite(x) and abs(x) < MAX_EPOCH_SECONDS).astype(bool)
        out[seconds.index[ok]] = pd.to_datetime(seconds[ok], unit="s", utc=True)
    timelike = values.map(lambda v: isinstance(v, str | datetime | date | np.datetime64)).astype(bool)
    if timelike.any():
        out[timelike] = pd.to_datetime(values[timelike], errors="coerce", utc=True, format="mixed")
    return out


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def validate(table: str, df: pd.DataFrame, known_items: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (accepted, quarantined) for one table; quarantined rows carry `table` and `reason`.

    `known_items`, for events, quarantines events that name an item missing from the catalog.
    """
    table_columns = columns(table, df)
    missing = [c.name for c in table_columns if c.name not in df.columns]
    if missing:
        raise ContractError(f"table {table!r} lacks required column(s) {missing}; it has {list(df.columns)}")
    df = df.reset_index(drop=True).copy()
    reasons = pd.Series("", index=df.index, dtype=object)

    def flag(mask: pd.Series, why: str) -> None:
        mask = mask.fillna(False).astype(bool) & (reasons == "")
        reasons[mask] = why

    for col in table_columns:
        values = df[col.name]
        if not col.nullable:
            flag(_blank(values), f"{col.name} is missing")
        if col.kind == "str":
            problems = values.map(lambda v, limit=col.max_chars: _text_problem(v, limit))
            for problem in problems[problems != ""].unique():
                flag(problems == problem, f"{col.name} {problem}")
        elif col.kind == "float":
            is_bool = values.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
            flag(is_bool, f"{col.name} is not a number (bool)")
            numeric = pd.to_numeric(values.where(~is_bool), errors="coerce")
            flag(values.notna() & numeric.isna(), f"{col.name} is not a number")
            flag(numeric.isin([np.inf, -np.inf]), f"{col.name} is not finite")
            flag(numeric < 0, f"{col.name} is negative")
        elif col.kind == "ts":
            parsed = parse_timestamps(values)
            flag(values.notna() & parsed.isna(), f"{col.name} is not a timestamp")
    key = KEYS.get(table)
    if key:
        flag(df[key].map(str).duplicated(keep="first"), f"duplicate {key}")
    if table == "events":
        flag(
            ~df["event_type"].map(lambda v: isinstance(v, str) and v in EVENT_TYPES), f"event_type not in {EVENT_TYPES}"
        )
        is_search = df["event_type"].map(lambda v: v == "search" if isinstance(v, str) else False).astype(bool)
        flag(is_search & _blank(df["query"]), "search event without query")
        flag(~is_search & _blank(df["item_id"]), "non-search event without item_id")
        if known_items is not None:
            flag(
                ~_blank(df["item_id"]) & ~df["item_id"].astype(str).isin(known_items),
                "item_id not in catalog",
            )
    if table == "privacy_requests":
        flag(~df["request"].map(lambda v: isinstance(v, str) and v in REQUEST_TYPES), f"request not in {REQUEST_TYPES}")

    bad = reasons != ""
    quarantined = df[bad].copy()
    quarantined["table"] = table
    quarantined["reason"] = reasons[bad]
    accepted = _coerce(table, df[~bad])
    return accepted.reset_index(drop=True), quarantined.reset_index(drop=True)


def _coerce(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Give accepted rows their contract types."""
    df = df.copy()
    for col in columns(table, df):
        if col.kind == "str":
            df[col.name] = df[col.name].astype(object).where(df[col.name].notna(), None)
            df[col.name] = df[col.name].map(lambda v: None if v is None else str(v))
        elif col.kind == "float":
            df[col.name] = pd.to_numeric(df[col.name], errors="coerce").astype(float)
        elif col.kind == "ts":
            df[col.name] = parse_timestamps(df[col.name])
    if table == "items":
        for name in ("description", "brand", "category"):
            df[name] = df[name].fillna("")
    return df


def empty(table: str) -> pd.DataFrame:
    """An empty frame with the table's columns, for sources that lack a table."""
    cols = {
        c.name: pd.Series(dtype="datetime64[ns, UTC]" if c.kind == "ts" else (float if c.kind == "float" else object))
        for c in TABLES[table]
    }
    return pd.DataFrame(cols)

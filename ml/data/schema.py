"""The data contract: four tables, their columns and types, and row-level validation.

`validate(table, df)` splits a frame into the rows that keep the contract and the rows that break it.
Every broken row keeps its original values and gains `reason` (what was wrong), so nothing read is lost:
len(accepted) + len(quarantined) == len(df).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "search")
REQUEST_TYPES = ("opt_out", "delete")
# event types that mean "the shopper chose this item": the next-item targets
INTERACTION_TYPES = ("click", "add_to_cart", "purchase", "rating")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str", "float", "ts"
    nullable: bool = False


TABLES: dict[str, tuple[Column, ...]] = {
    "items": (
        Column("item_id", "str"),
        Column("title", "str"),
        Column("description", "str", nullable=True),
        Column("brand", "str", nullable=True),
        Column("category", "str", nullable=True),
        Column("price", "float", nullable=True),
    ),
    "users": (Column("user_id", "str"),),
    "events": (
        Column("event_id", "str"),
        Column("user_id", "str"),
        Column("item_id", "str", nullable=True),
        Column("event_type", "str"),
        Column("query", "str", nullable=True),
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


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def validate(
    table: str, df: pd.DataFrame, known_items: set[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (accepted, quarantined) for one table; quarantined rows carry `table` and `reason`.

    `known_items`, for events, quarantines events that name an item missing from the catalog.
    """
    if table not in TABLES:
        raise ContractError(f"unknown table {table!r}; the contract has {sorted(TABLES)}")
    columns = TABLES[table]
    missing = [c.name for c in columns if c.name not in df.columns]
    if missing:
        raise ContractError(f"table {table!r} lacks required column(s) {missing}; it has {list(df.columns)}")
    df = df.reset_index(drop=True).copy()
    reasons = pd.Series("", index=df.index, dtype=object)

    def flag(mask: pd.Series, why: str) -> None:
        mask = mask.fillna(False).astype(bool) & (reasons == "")
        reasons[mask] = why

    for col in columns:
        values = df[col.name]
        if not col.nullable:
            flag(_blank(values), f"{col.name} is missing")
        if col.kind == "float":
            numeric = pd.to_numeric(values, errors="coerce")
            flag(values.notna() & numeric.isna(), f"{col.name} is not a number")
            flag(numeric < 0, f"{col.name} is negative")
        elif col.kind == "ts":
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
            flag(values.notna() & parsed.isna(), f"{col.name} is not a timestamp")
    key = KEYS.get(table)
    if key:
        flag(df[key].duplicated(keep="first"), f"duplicate {key}")
    if table == "events":
        flag(~df["event_type"].isin(EVENT_TYPES), f"event_type not in {EVENT_TYPES}")
        is_search = df["event_type"] == "search"
        flag(is_search & _blank(df["query"]), "search event without query")
        flag(~is_search & _blank(df["item_id"]), "non-search event without item_id")
        if known_items is not None:
            flag(
                ~_blank(df["item_id"]) & ~df["item_id"].astype(str).isin(known_items),
                "item_id not in catalog",
            )
    if table == "privacy_requests":
        flag(~df["request"].isin(REQUEST_TYPES), f"request not in {REQUEST_TYPES}")

    bad = reasons != ""
    quarantined = df[bad].copy()
    quarantined["table"] = table
    quarantined["reason"] = reasons[bad]
    accepted = _coerce(table, df[~bad])
    return accepted.reset_index(drop=True), quarantined.reset_index(drop=True)


def _coerce(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Give accepted rows their contract types."""
    df = df.copy()
    for col in TABLES[table]:
        if col.kind == "str":
            df[col.name] = df[col.name].astype(object).where(df[col.name].notna(), None)
            df[col.name] = df[col.name].map(lambda v: None if v is None else str(v))
        elif col.kind == "float":
            df[col.name] = pd.to_numeric(df[col.name], errors="coerce").astype(float)
        elif col.kind == "ts":
            df[col.name] = pd.to_datetime(df[col.name], utc=True, format="mixed")
    if table == "items":
        for name in ("description", "brand", "category"):
            df[name] = df[name].fillna("")
    return df


def empty(table: str) -> pd.DataFrame:
    """An empty frame with the table's columns, for sources that lack a table."""
    cols = {
        c.name: pd.Series(
            dtype="datetime64[ns, UTC]" if c.kind == "ts" else (float if c.kind == "float" else object)
        )
        for c in TABLES[table]
    }
    return pd.DataFrame(cols)


"""Ingestion: raw source tables -> validated, pseudonymized, scrubbed, consent-filtered lake partitions.

Order matters. Columns the contract does not name are dropped first (logged, and listed in the result's
`dropped_columns`): a source's extra column may hold anything, e-mails and IP addresses included. Rows are
validated next (bad rows go to quarantine with a reason each; so does a row whose item_id or event_id holds PII,
as a key cannot be scrubbed); then every user id, in accepted and quarantined rows alike, becomes a keyed
pseudonym and every free-text column (`schema.text_columns`: title, description, brand, category, query and
users' attributes) is scrubbed of PII, and so is every value of the quarantine, so no raw id or PII passes this
step; then privacy requests are applied (deletions purge older partitions too).

Ingestion is incremental by the run's logical date: a run for date D writes D's partitions and takes only
the events that had happened by the end of D (`ts` before D + 1 day); later events wait for the run of
their own date (`deferred`). So a backfill of an older date writes what was known on that date, into that
date's partitions only, and re-running a date rewrites the same bytes. Privacy requests are never
deferred: a deletion known today holds in every partition written today, whatever its date. They are an
append-only ledger (`lake.append_privacy_requests`): re-running a date with a source that carries fewer or
other requests keeps every request received before.
accepted + quarantined + deferred = read, per table.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ml.data import lake, schema
from ml.data.raw import RawTables
from ml.data.schema import validate
from ml.privacy.consent import append_deletion_log, apply_privacy_requests
from ml.privacy.pii import PIIScrubber
from ml.privacy.pseudonymize import Pseudonymizer

log = logging.getLogger(__name__)

TABLE_ORDER = ("items", "users", "events", "privacy_requests")
# keys other than user_id (which becomes a pseudonym): a key holding PII sends its row to quarantine
ID_COLUMNS = {"items": ("item_id",), "events": ("event_id", "item_id")}
# quarantine columns ingestion wrote itself or already pseudonymized: not scrubbed
_OWN_COLUMNS = ("user_id", "table", "reason", "row_number")


@dataclass
class IngestResult:
    ingest_date: str
    lake_dir: str
    read: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    dropped_columns: dict[str, list[str]] = field(default_factory=dict)  # per table, columns not in the contract
    pii_replaced: dict[str, int] = field(default_factory=dict)
    consent: dict[str, int] = field(default_factory=dict)
    deleted_users: int = 0
    lake_rows_purged: int = 0
    quarantine_path: str = ""
    split_time: str = ""
    known_until: str = ""  # events before this instant (the end of the ingest date) were taken

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow."""
        out: dict[str, float] = {}
        for kind in ("read", "accepted", "quarantined", "deferred"):
            for table, n in getattr(self, kind).items():
                out[f"ingest.{table}.{kind}"] = n
        for table, names in self.dropped_columns.items():
            out[f"ingest.{table}.dropped_columns"] = len(names)
        for pii_type, n in self.pii_replaced.items():
            out[f"ingest.pii.{pii_type}"] = n
        for name, n in self.consent.items():
            out[f"ingest.consent.{name}"] = n
        return out


def ingest(
    raw: RawTables,
    lake_dir: Path,
    pseudonymizer: Pseudonymizer,
    scrubber: PIIScrubber,
    ingest_date: str | None = None,
) -> IngestResult:
    """Validate, pseudonymize, scrub and consent-filter `raw`; write the date's partitions.

    `ingest_date` (YYYY-MM-DD) is the run's logical date; empty means today (UTC)."""
    ingest_date = lake.check_date(ingest_date or datetime.now(UTC).strftime("%Y-%m-%d"))
    known_until = cutoff(ingest_date)
    result = IngestResult(
        ingest_date=ingest_date,
        lake_dir=str(lake_dir),
        split_time=raw.split_time.isoformat(),
        known_until=known_until.isoformat(),
    )
    accepted: dict[str, pd.DataFrame] = {}
    quarantine: list[pd.DataFrame] = []
    pii: Counter[str] = Counter()

    for table in TABLE_ORDER:
        df = getattr(raw, table)
        extra = schema.extra_columns(table, df)
        if extra:
            log.warning("%s: dropped column(s) %s: the contract does not name them (they may hold PII)", table, extra)
            result.dropped_columns[table] = extra
        known = set(accepted["items"]["item_id"]) if table == "events" else None
        named = df.drop(columns=extra)
        good, bad = validate(table, named.assign(row_number=range(len(df))), known_items=known)
        good, bad = _quarantine_keys_with_pii(table, good, bad, scrubber)
        good = good.drop(columns="row_number")
        later = good["ts"] >= known_until if table == "events" else pd.Series(False, index=good.index)
        good = good[~later]
        result.read[table] = len(df)
        result.accepted[table] = len(good)
        result.quarantined[table] = len(bad)
        result.deferred[table] = int(later.sum())
        if len(good) + len(bad) + int(later.sum()) != len(df):  # the contract's promise; a bug if it breaks
            raise RuntimeError(
                f"{table}: {len(good)} accepted + {len(bad)} quarantined + {int(later.sum())} "
                f"deferred != {len(df)} read"
            )
        accepted[table] = good
        quarantine.append(bad)

    # nothing below this line sees a raw id or unscrubbed text
    for table in ("users", "events", "privacy_requests"):
        accepted[table] = pseudonymizer.apply(accepted[table])
    quarantined = pd.concat(quarantine, ignore_index=True) if quarantine else pd.DataFrame()
    if "user_id" in quarantined.columns:
        quarantined = pseudonymizer.apply(quarantined)
    for table in TABLE_ORDER:
        for column in schema.text_columns(table, accepted[table]):
            accepted[table][column], counts = scrubber.scrub_series(accepted[table][column])
            pii.update(counts)
    # quarantined values are as read (any type, any length): as text, cut to the contract's longest, then scrubbed
    quarantined = lake.as_text(quarantined, max_chars=schema.MAX_CHARS)
    for column in quarantined.columns:
        if column not in _OWN_COLUMNS:
            quarantined[column], counts = scrubber.scrub_series(quarantined[column])
            pii.update(counts)
    result.pii_replaced = dict(sorted(pii.items()))
    result.quarantine_reasons = dict(Counter(quarantined.get("reason", pd.Series(dtype=object))).most_common())

    # privacy requests: this batch's and every one in the lake (of any date, later ones too: a backfill
    # must not bring a deleted shopper back), so a deletion holds at every ingestion
    requests = pd.concat(
        [lake.read_table(lake_dir, "privacy_requests"), accepted["privacy_requests"]], ignore_index=True
    ).drop_duplicates(["user_id", "request", "ts"])
    consent = apply_privacy_requests(accepted["events"], accepted["users"], requests)
    accepted["events"], accepted["users"] = consent.events, consent.users
    result.consent = dict(consent.counts)
    result.deleted_users = len(consent.deleted)
    if "user_id" in quarantined.columns and consent.deleted:
        quarantined = quarantined[~quarantined["user_id"].isin(consent.deleted)]

    for table in ("items", "users", "events"):
        lake.write_partition(lake_dir, table, ingest_date, accepted[table])
    # an append-only ledger: a re-run with fewer or other requests adds to the date's requests, never drops one
    lake.append_privacy_requests(lake_dir, ingest_date, accepted["privacy_requests"])
    result.quarantine_path = str(lake.write_partition(lake_dir, lake.QUARANTINE, ingest_date, quarantined))
    if consent.deleted:
        result.lake_rows_purged = lake.purge_users(lake_dir, consent.deleted)
        append_deletion_log(lake_dir / "deletion_log.jsonl", consent.deleted, datetime.now(UTC))
    log.info(
        "ingested %s: %s; pii replaced %s; consent %s; dropped columns %s",
        ingest_date,
        "; ".join(formula(result, table) for table in result.read),
        result.pii_replaced,
        result.consent,
        result.dropped_columns or "none",
    )
    return result


def formula(result: IngestResult, table: str) -> str:
    """One table's row count as the contract states it: "events: 100 read = 90 accepted + 6 quarantined + 4
    deferred" (deferred: events after the ingest date, taken by the run of their own date)."""
    return (
        f"{table}: {result.read[table]} read = {result.accepted[table]} accepted + "
        f"{result.quarantined[table]} quarantined + {result.deferred[table]} deferred"
    )


def _quarantine_keys_with_pii(
    table: str, good: pd.DataFrame, bad: pd.DataFrame, scrubber: PIIScrubber
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move accepted rows whose item_id or event_id holds PII to the quarantine, the kinds in the reason."""
    for column in ID_COLUMNS.get(table, ()):
        kinds = scrubber.kinds_in_ids(good[column])
        hit = kinds != ""
        if hit.any():
            moved = good[hit].assign(table=table, reason=[f"{column} holds PII ({k})" for k in kinds[hit]])
            bad = pd.concat([bad, moved], ignore_index=True)
            good = good[~hit].reset_index(drop=True)
            log.warning("%s: %d row(s) whose %s holds PII quarantined", table, int(hit.sum()), column)
    return good, bad


def cutoff(ingest_date: str) -> pd.Timestamp:
    """The end of the ingest date (UTC): a run for that date takes the events before it."""
    return pd.Timestamp(lake.check_date(ingest_date), tz="UTC") + pd.Timedelta(days=1)


def read_lake(lake_dir: Path, as_of: str | None = None) -> dict[str, pd.DataFrame]:
    """The lake: every table, newest partition winning per key; with `as_of`, as it stood on that date."""
    return {table: lake.read_table(lake_dir, table, as_of) for table in TABLE_ORDER}

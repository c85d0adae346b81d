"""The synthetic shop's privacy load: PII planted in free text, and the shoppers' privacy requests.

About 1% of search queries get an e-mail address or phone number, a few item descriptions a phone number. Only
reserved, fictional values are used (example.com/org/net addresses, +1 555-01xx and +44 20 7946 0xxx numbers).
About 1% of shoppers opt out (mid-period), about 0.5% ask for deletion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.data.synthetic_events import iso_utc

if TYPE_CHECKING:
    from ml.data.synthetic_behaviour import Behaviour

_FIRST = ("jane", "john", "maria", "li", "ahmed", "sofia", "lukas", "emma", "noah", "aisha")
_LAST = ("doe", "smith", "garcia", "chen", "khan", "rossi", "muller", "okafor", "novak", "silva")


def _email(rng: np.random.Generator) -> str:
    first, last = _FIRST[rng.integers(len(_FIRST))], _LAST[rng.integers(len(_LAST))]
    return f"{first}.{last}{rng.integers(10, 99)}@example.{('com', 'org', 'net')[rng.integers(3)]}"


def _phone(rng: np.random.Generator) -> str:
    n = int(rng.integers(100, 200))  # fictional ranges: US 555-0100..0199, UK 020 7946 0xxx
    area = ("212", "415", "646", "206")[rng.integers(4)]
    return (f"+1 {area} 555 0{n}", f"({area}) 555-0{n}", f"+44 20 7946 0{n}")[rng.integers(3)]


def plant_pii(rng: np.random.Generator, events: pd.DataFrame, items: pd.DataFrame, cfg: Behaviour) -> None:
    """In place: e-mails and phone numbers in ~1% of queries, phone numbers in a few descriptions."""
    searches = np.flatnonzero(events["event_type"].to_numpy() == "search")
    n = max(1, round(cfg.pii_query_share * len(searches))) if len(searches) else 0
    templates = ("{q} {pii}", "{q} contact {pii}", "order status {pii}", "{pii} {q}")
    for row in rng.choice(searches, size=n, replace=False) if n else []:
        pii = _email(rng) if rng.random() < 0.5 else _phone(rng)
        query = events.at[row, "query"]
        events.at[row, "query"] = templates[rng.integers(len(templates))].format(q=query, pii=pii)
    k = max(2, round(cfg.pii_item_share * len(items)))
    for row in rng.choice(len(items), size=min(k, len(items)), replace=False):
        items.at[row, "description"] += f" Questions? Call our support line at {_phone(rng)}."


def privacy_requests(
    rng: np.random.Generator, user_ids: np.ndarray, cfg: Behaviour, t0: pd.Timestamp, span: pd.Timedelta
) -> pd.DataFrame:
    n_opt = max(1, round(cfg.opt_out_share * len(user_ids)))
    n_del = max(1, round(cfg.delete_share * len(user_ids)))
    n_opt, n_del = min(n_opt, len(user_ids)), min(n_del, max(0, len(user_ids) - n_opt))
    chosen = rng.choice(len(user_ids), size=n_opt + n_del, replace=False)
    span_s = span.total_seconds()
    when = (
        np.concatenate(
            [rng.uniform(0.4, 0.6, n_opt), rng.uniform(0.2, 0.9, n_del)]  # opt-outs mid-period
        )
        * span_s
    )
    stamps = iso_utc(t0, np.round(when).astype(np.int64))
    frame = pd.DataFrame(
        {
            "user_id": user_ids[chosen],
            "request": ["opt_out"] * n_opt + ["delete"] * n_del,
            "ts": stamps,
        }
    )
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)

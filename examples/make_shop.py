"""Writes examples/shop/: a small shop's own tables, as a shop would keep them, for `vetted run --source files`.

The rows come from the project's synthetic generator (`ml.data.synthetic`, 300 shoppers, 120 products, its few
deliberately broken rows included, so a run shows the quarantine); the layout is a shop's, not the contract's:
the catalogue is `catalogue.csv` with the shop's own column names, the events a folder of parquet parts
partitioned by month with their own column names and a real timestamp type, and `vetted-source.yaml` maps both
onto the contract. Re-running it rewrites the same files.

    python examples/make_shop.py [OUT]      # default: examples/shop next to this file
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from ml.data.schema import parse_timestamps  # noqa: E402
from ml.data.synthetic import generate  # noqa: E402

OPTIONS = """\
# How Vetted reads this folder (`vetted run --source files --path examples/shop`); see the README,
# "How a shop points Vetted at its tables".
tables:
  items: catalogue.csv          # the catalogue has a file name of its own
columns:                        # your column: the contract's column
  items: {sku: item_id, name: title, details: description, maker: brand, department: category, list_price: price}
  events: {id: event_id, customer: user_id, sku: item_id, kind: event_type, search_text: query, at: ts}
# split_time: 2026-03-20T00:00:00Z   # where the hold-out begins; default: the last 10% of the event time range
"""


def main(out: Path) -> None:
    raw = generate(n_users=300, n_items=120, seed=7)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    items = raw.items.rename(
        columns={
            "item_id": "sku",
            "title": "name",
            "description": "details",
            "brand": "maker",
            "category": "department",
            "price": "list_price",
        }
    )
    items.to_csv(out / "catalogue.csv", index=False)
    events = raw.events.rename(
        columns={
            "event_id": "id",
            "user_id": "customer",
            "item_id": "sku",
            "event_type": "kind",
            "query": "search_text",
            "ts": "at",
        }
    )
    events["at"] = parse_timestamps(events["at"])  # a shop's log has a time type; the one unreadable time is null
    events["internal_note"] = "not read: the contract does not name it"
    month = events["at"].dt.strftime("%Y-%m").fillna("unknown")
    for value, part in events.groupby(month, sort=True):
        folder = out / "events" / f"month={value}"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "part-0.parquet", index=False)
    raw.users.to_csv(out / "users.csv", index=False)
    pd.DataFrame(raw.privacy_requests).to_csv(out / "privacy_requests.csv", index=False)
    (out / "vetted-source.yaml").write_text(OPTIONS)
    print(
        f"wrote {out}: {len(items)} items, {len(raw.users)} users, {len(events)} events, "
        f"{len(raw.privacy_requests)} privacy requests"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "shop")

"""The ingestion robustness benchmark: its counts add up, it plants what it scans for, and no raw id survives."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import robustness_ingest  # noqa: E402


def test_hostile_rows_leave_no_raw_id_and_every_row_is_accounted_for():
    result = robustness_ingest.run(seed=1, n_rows=80)
    for table, t in result["tables"].items():
        assert t["rows_read"] == 80, table
        assert t["accepted"] + t["quarantined"] + t["deferred"] == t["rows_read"], table
        assert t["quarantined"] > 0 and t["cells_scanned"] > 0, table
        assert t["raw_ids_found"] == 0 and t["pii_found"] == 0, table
    assert result["total"]["rows_read"] == 320
    assert result["dropped_columns"] == {
        "items": ["seller_note"],
        "events": ["client_ip", "user_agent"],
        "privacy_requests": ["note"],
    }
    assert result["pii_values_planted"] > 80 and sum(result["pii_replaced"].values()) > 0
    assert "| **total** | 320 |" in robustness_ingest.markdown(result)


def test_the_scan_finds_a_planted_value_and_a_raw_id_left_in_a_lake_file(tmp_path):
    import pandas as pd

    from ml.data import lake

    frame = pd.DataFrame(
        {
            "item_id": ["i1"],
            "title": ["call +1 212-555-0100"],
            "description": ["shopper-00042"],
            "brand": [""],
            "category": [""],
            "price": [1.0],
        }
    )
    lake.write_partition(tmp_path, "items", "2026-01-01", frame)
    found = robustness_ingest.scan(tmp_path, {"+1 212-555-0100"})
    assert found["items"]["pii_found"] == 1 and found["items"]["raw_ids_found"] == 1

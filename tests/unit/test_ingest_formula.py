"""One formula for ingestion's row counts everywhere: read = accepted + quarantined + deferred, per table, in
the result, the log, the model card and the README."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ml.data.ingest import IngestResult, ingest
from ml.data.synthetic import generate
from ml.privacy.pii import PIIScrubber
from ml.privacy.pseudonymize import Pseudonymizer
from ml.registry.card import model_card

ROOT = Path(__file__).resolve().parents[2]
# synthetic events span 2026-01-05 .. 2026-03-30: a run dated inside that window defers the later ones
INSIDE = "2026-03-01"


def _ingested(tmp_path: Path, caplog) -> IngestResult:
    caplog.set_level(logging.INFO, logger="ml.data.ingest")
    raw = generate(n_users=120, n_items=80, seed=3)
    return ingest(raw, tmp_path / "lake", Pseudonymizer(b"k" * 32), PIIScrubber(), INSIDE)


def _card(ingest_result: IngestResult) -> str:
    metrics = {"ndcg_at_10": 0.1, "recall_at_10": 0.2, "mrr": 0.1}
    return model_card(
        name="m",
        version="1",
        config={
            "source": "synthetic",
            "trainable_layers": 1,
            "batch_size": 8,
            "learning_rate": 1e-4,
            "temperature": 0.05,
        },
        features={
            "window": {"train_start": "a", "split_time": "b", "holdout_end": "c"},
            "n_train_examples": 1,
            "n_train_search_examples": 0,
        },
        ingest=ingest_result.__dict__,
        train={
            "privacy": {"dp": False},
            "n_users": 1,
            "audit_users": [],
            "steps": 1,
            "epochs": 1.0,
            "device": "cpu",
            "seconds": 1.0,
        },
        evaluation={
            "k": 10,
            "n_cases": 1,
            "mia": {},
            "candidate": {"metrics": metrics, "beyond": {}, "provider": {}},
            "baselines": {},
            "best_baseline": None,
            "drift": {},
        },
        pii_findings=0,
        smoke=None,
        gate=None,
        champion=None,
        links={},
    )


def test_the_log_and_the_card_state_read_as_accepted_plus_quarantined_plus_deferred(tmp_path, caplog):
    result = _ingested(tmp_path, caplog)
    assert result.deferred["events"] > 0 and result.quarantined["events"] > 0  # every term counts here
    e = {k: getattr(result, k)["events"] for k in ("read", "accepted", "quarantined", "deferred")}
    assert e["read"] == e["accepted"] + e["quarantined"] + e["deferred"]
    said = (
        f"events: {e['read']} read = {e['accepted']} accepted + {e['quarantined']} quarantined + "
        f"{e['deferred']} deferred"
    )
    assert said in caplog.text
    card = _card(result)
    line = next(x for x in card.splitlines() if x.startswith("- Rows read"))
    assert "read = accepted + quarantined + deferred" in line
    assert f"events {e['read']} = {e['accepted']} + {e['quarantined']} + {e['deferred']}" in line


def test_the_readme_states_the_same_formula_and_the_unit_of_numeric_timestamps():
    readme = (ROOT / "README.md").read_text()
    assert "read = accepted + quarantined + deferred" in readme
    assert not re.search(r"accepted \+ quarantined = read", readme)
    assert "seconds** since the Unix epoch" in readme

"""The impression log writes off the request path: everything queued reaches the file on flush and on
close (the app's shutdown), a write failure neither fails a request nor stops the writer, and a stalled
writer holds appends back instead of growing without bound."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ml.serving.feedback import ImpressionLog, impression_path, impression_record
from tests.oracles import read_impressions

T0 = datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC)


def _record(i: int, ts: datetime = T0) -> dict:
    return impression_record(f"id{i}", ts, f"u_{i:04d}", "recommendations", [f"i{i}"], True, "m", "1")


def test_close_writes_everything_queued_in_order(tmp_path):
    log = ImpressionLog(tmp_path, flush_seconds=60)  # the timer never fires: only close writes
    for i in range(500):
        log.append(_record(i))
    log.close()
    assert [r["impression_id"] for r in read_impressions(tmp_path)] == [f"id{i}" for i in range(500)]
    assert log.written == 500 and log.pending == 0
    with pytest.raises(RuntimeError, match="closed"):
        log.append(_record(501))


def test_flush_waits_until_the_lines_are_on_disk(tmp_path):
    log = ImpressionLog(tmp_path, flush_seconds=60)
    log.append(_record(1))
    log.append(_record(2, T0 + timedelta(seconds=2)))  # the next UTC day: another file
    assert log.flush(timeout=10)
    assert [r["impression_id"] for r in read_impressions(tmp_path, "2026-05-01")] == ["id1"]
    assert [r["impression_id"] for r in read_impressions(tmp_path, "2026-05-02")] == ["id2"]
    assert impression_path(tmp_path, "2026-05-02", os.getpid()).exists()
    log.close()


def test_appends_from_many_threads_are_all_written(tmp_path):
    log = ImpressionLog(tmp_path, flush_seconds=0.01)

    def burst(start: int) -> None:
        for i in range(start, start + 200):
            log.append(_record(i))

    threads = [threading.Thread(target=burst, args=(t * 200,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ids = sorted(r["impression_id"] for r in read_impressions(tmp_path))
    assert ids == sorted(f"id{i}" for i in range(1600))


def test_a_failed_write_is_counted_and_the_writer_goes_on(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log wants a folder")
    log = ImpressionLog(blocked, flush_seconds=60)
    log.append(_record(1))
    assert log.flush(timeout=10)
    assert log.failed == 1 and log.written == 0 and "Error" in log.last_error
    log.home = tmp_path / "fine"  # the disk is back
    log.append(_record(2))
    log.close()
    assert [r["impression_id"] for r in read_impressions(tmp_path / "fine")] == ["id2"]


def test_a_full_queue_holds_appends_back_until_the_writer_catches_up(tmp_path):
    log = ImpressionLog(tmp_path, flush_seconds=60, max_pending=3)
    for i in range(20):  # would block forever if a full queue did not wake the writer
        log.append(_record(i))
    log.close()
    assert len(read_impressions(tmp_path)) == 20


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="flush_seconds"):
        ImpressionLog(tmp_path, flush_seconds=0)
    with pytest.raises(ValueError, match="max_pending"):
        ImpressionLog(tmp_path, max_pending=0)

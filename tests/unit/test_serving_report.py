"""The serving benchmark's /search report: every run of a /search level is in the Markdown with its spread and its
verdict, a `--search-only` run carries its repeats into the merged report, and the capacity bound is the cores
divided by the in-process cost of a search."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import serving_report  # noqa: E402


def _row(kind: str, p99: float, rps: float, cpu: float, errors: int = 0) -> dict:
    return {
        "endpoint": kind,
        "clients": 16,
        "requests": 600,
        "errors": errors,
        "p50_ms": p99 / 2,
        "p95_ms": p99 * 0.9,
        "p99_ms": p99,
        "max_ms": p99 + 1,
        "throughput_rps": rps,
        "server_cpu_ms_per_request": cpu,
        "other_processes_cores": 0.0,
        "query_encoder": "onnx",
    }


def _report() -> dict:
    repeated = [_row("search_repeated", p, 600, 2.0) for p in (29.0, 35.0, 28.5, 25.0)]
    repeated[3]["errors"] = 2  # under the target's time, but a run with errors does not meet it
    new = [_row("search", p, 300, 4.0) for p in (60.0, 55.0, 70.0)]
    return {
        "date": "2026-12-07T00:00:00+00:00",
        "machine": {"cores": 2},
        "sizes": [
            {
                "n_items": 10_000,
                "load": [new[0], repeated[0]],
                "search_target_repeats": {"search": new, "search_repeated": repeated},
                "floors": {
                    "in_process_search_new": {"p50_ms": 2.5, "p95_ms": 3.0, "p99_ms": 3.5},
                    "in_process_search_cached": {"p50_ms": 1.0, "p95_ms": 1.2, "p99_ms": 1.5},
                },
            }
        ],
    }


def test_each_search_level_reports_its_runs_spread_and_verdict():
    text = "\n".join(serving_report.search_markdown(_report()))
    assert (
        "10,000 items, repeated queries, the level run 4 times on the same server (the first is the row above): "
        "p99 25.00 / 29.00 / 35.00 ms (min / median / max), 600-600 req/s, 2.00-2.00 ms of server CPU a request, "
        "2 errors; target met in 2 of 4" in text
    )
    assert "new queries, the level run 3 times" in text and "0 errors; target met in 0 of 3" in text


def test_the_capacity_bound_is_the_cores_over_a_search_in_process():
    lines = serving_report.search_capacity(_report())
    bound = [line for line in lines if line.startswith("- 10,000 items")]
    # 16 clients under 30 ms: 533 req/s; 2 cores / 2.5 ms = 800 req/s, 2 cores / 1.0 ms = 2000 req/s
    assert bound == [
        "- 10,000 items: the 30 ms target needs more than 533 req/s; new queries 2.50 ms, at most 800 req/s; "
        "cached queries 1.00 ms, at most 2000 req/s."
    ]


def test_no_capacity_line_without_the_search_floors():
    report = _report()
    report["sizes"][0]["floors"] = {}  # a --search-only run measures no floors
    assert serving_report.search_capacity(report) == []


def test_a_search_only_run_replaces_the_search_rows_and_their_repeats():
    previous = _report()
    previous["sizes"][0]["load"].append({"endpoint": "recommendations", "clients": 16})
    fresh = _report()
    fresh["sizes"][0]["search_target_repeats"] = {"search": [_row("search", 20.0, 900, 1.5)]}
    fresh["sizes"][0]["load"] = [_row("search", 20.0, 900, 1.5)]
    fresh["date"], fresh["load_average_before"], fresh["load_average_after"] = "later", [0.1], [0.2]
    merged = serving_report.merge_search_rows(previous, fresh)
    size = merged["sizes"][0]
    assert [r["endpoint"] for r in size["load"]] == ["recommendations", "search"]
    assert size["search_target_repeats"] == {"search": [_row("search", 20.0, 900, 1.5)]}
    assert merged["search_measured"] == "later"

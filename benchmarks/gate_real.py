"""The default chain's gate on each shared real corpus: every check's value, interval, rule and decision.

    python benchmarks/gate_real.py                          # amazon2018-industrial, then coat
    python benchmarks/gate_real.py --only coat
    python benchmarks/gate_real.py --summary amazon2018-industrial=/tmp/gate-home/runs/<run>/summary.json

Each corpus runs `vetted run --source <adapter> --path <corpus>` with the defaults (the packaged policy, no
option changed) in a fresh VETTED_HOME, as a reviewer would; `--summary` tables a run already made instead.
Writes benchmarks/results/gate-real.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SHARED_DATA, machine, write  # noqa: E402

CORPORA = {"amazon2018-industrial": "amazon2018", "coat": "coat"}  # shared folder -> source adapter
PSEUDONYM_KEY = "benchmark-key-0123456789"  # not a secret: benchmark data only


def run_chain(corpus: str, source: str) -> tuple[Path, float]:
    """`vetted run` with the defaults in a fresh home; (summary.json, wall seconds)."""
    home = Path(tempfile.mkdtemp(prefix=f"vetted-gate-{corpus}-"))
    env = {
        **os.environ,
        "VETTED_HOME": str(home),
        "VETTED_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ml.cli", "run", "--source", source, "--path", str(SHARED_DATA / corpus)],
        env=env,
        check=True,
    )
    seconds = time.perf_counter() - started
    (summary,) = sorted((home / "runs").glob("*/summary.json"))
    return summary, seconds


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _bounds(bounds: list[float] | None) -> str:
    return "" if not bounds else f"[{_fmt(bounds[0])}, {_fmt(bounds[1])}]"


def rows_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per gate check as the run recorded it."""
    rows = []
    for check in summary["gate"]["checks"] or []:
        decided = (
            "point"
            if check.get("decide_on", "point") == "point"
            else f"{check['decide_on']} {check['confidence']:.0%} bound"
        )
        rows.append(
            {
                "check": check["name"],
                "value": check["value"],
                "interval": check.get("interval"),
                "threshold": f"{check['comparator']} {_fmt(check['threshold'])}",
                "margin": check.get("margin"),
                "margin_interval": check.get("margin_interval"),
                "decided_on": decided,
                "rule": check.get("rule", "threshold"),
                "status": check["status"],
                "message": check["message"],
            }
        )
    return rows


def corpus_result(corpus: str, summary_path: Path, seconds: float | None) -> dict[str, Any]:
    summary = json.loads(summary_path.read_text())
    k = summary["config"]["k"]
    unc = summary.get("uncertainty") or {}
    return {
        "corpus": corpus,
        "summary": str(summary_path),
        "seconds": None if seconds is None else round(seconds),
        "status": summary["gate"]["status"],
        "policy": summary["gate"]["policy"],
        "candidate_ndcg": (unc.get("ndcg") or {}).get("candidate") or summary["metrics"][f"ndcg_at_{k}"],
        "baselines": {
            n: {
                "ndcg": (unc.get("ndcg") or {}).get(n),
                "learns": m.get("learns"),
                "candidate_minus": (unc.get("candidate_minus") or {}).get(n),
            }
            for n, m in summary["baselines"].items()
        },
        "best_baseline": summary["best_baseline"],
        "best_non_private_baseline": summary.get("best_non_private_baseline"),
        "price_of_privacy": unc.get("price_of_privacy"),
        "bootstrap": unc.get("method"),
        "fairness_vs_alternatives": summary["gate"].get("fairness_vs_alternatives"),
        "checks": rows_of(summary),
    }


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return f"{_fmt(entry.get('value'))} {_bounds([entry['lower'], entry['upper']]) if entry.get('lower') else ''}"


def markdown(results: list[dict[str, Any]], info: dict[str, Any], note: str = "") -> str:
    lines = [
        "# The default gate on the shared real corpora",
        "",
        f"`benchmarks/gate_real.py`, {info['date']}, Python {info['python']}, {info['cores']} cores; "
        f"MLflow {info['versions'].get('mlflow')}, Opacus {info['versions'].get('opacus')}. Each corpus: "
        "`vetted run` with the defaults (packaged policy). Intervals: 95% paired bootstrap over shoppers "
        "(1,000 resamples; margin = value - threshold on each resample).",
        "",
    ]
    if note:
        lines += [f"Note: {note}", ""]
    for res in results:
        boot = res.get("bootstrap") or {}
        lines += [
            f"## {res['corpus']}: gate {res['status']}",
            "",
            f"Policy `{res['policy']}`; {boot.get('n_cases')} cases of {boot.get('n_shoppers')} shoppers"
            + (f"; chain {res['seconds']} s" if res["seconds"] else "")
            + (f"; measured {res['measured']}" if res.get("measured") else "")
            + ".",
            "",
            "| model | learns from shoppers | NDCG@10 [95%] | candidate - model [95%] |",
            "|---|---|---|---|",
            f"| candidate | DP | {_ci(res['candidate_ndcg']) if isinstance(res['candidate_ndcg'], dict) else _fmt(res['candidate_ndcg'])} | |",
        ]
        for name, b in res["baselines"].items():
            mark = (
                " (bar)"
                if name == res["best_baseline"]
                else " (best non-private)"
                if name == res["best_non_private_baseline"]
                else ""
            )
            lines.append(f"| {name}{mark} | {b['learns']} | {_ci(b['ndcg'])} | {_ci(b['candidate_minus'])} |")
        if res.get("price_of_privacy"):
            lines += [
                "",
                f"Price of privacy (candidate / {res['price_of_privacy']['baseline']}): "
                f"{_ci(res['price_of_privacy'])}.",
            ]
        lines += [
            "",
            "| check | value [95%] | threshold | margin [95%] | decided on | rule | decision |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in res["checks"]:
            lines.append(
                f"| {row['check']} | {_fmt(row['value'])} {_bounds(row['interval'])} | {row['threshold']} | "
                f"{_fmt(row['margin']) if row['margin_interval'] else ''} {_bounds(row['margin_interval'])} | "
                f"{row['decided_on']} | {row['rule']} | {row['status']} |"
            )
        for alt in res.get("fairness_vs_alternatives") or []:
            lines.append(
                f"\n- {alt['attribute']}: candidate {_fmt(alt['candidate'])}, best shippable baseline "
                f"{_fmt(alt['best_baseline'])}, champion {_fmt(alt['champion'])}: {alt['rule']} "
                f"({alt['status']})"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def kept_results(results: list[dict[str, Any]], previous: Path) -> list[dict[str, Any]]:
    """`results` with the corpora they lack taken from the previous results file, in CORPORA's order."""
    if not previous.exists():
        return results
    stored = json.loads(previous.read_text())
    by_corpus = {res["corpus"]: res for res in results}
    for res in stored.get("results", []):
        if res["corpus"] not in by_corpus:
            by_corpus[res["corpus"]] = {**res, "measured": res.get("measured", stored["machine"]["date"])}
    order = list(CORPORA)
    return sorted(by_corpus.values(), key=lambda r: order.index(r["corpus"]) if r["corpus"] in order else len(order))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(CORPORA), action="append")
    parser.add_argument(
        "--summary",
        action="append",
        default=[],
        metavar="CORPUS=PATH",
        help="table this run's summary.json instead of running the corpus",
    )
    parser.add_argument("--note", default="", help="how the tabled runs were made, when not by this script")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.summary)
    results = []
    for corpus in args.only or list(CORPORA):
        if corpus in given:
            results.append(corpus_result(corpus, Path(given[corpus]), None))
            continue
        if not (SHARED_DATA / corpus).is_dir():
            print(f"skipping {corpus}: {SHARED_DATA / corpus} not found")
            continue
        summary, seconds = run_chain(corpus, CORPORA[corpus])
        results.append(corpus_result(corpus, summary, seconds))
    info = machine()
    for res in results:
        res.setdefault("measured", info["date"])
    if args.only:  # a partial run keeps the other corpora's last results, each with its own date
        results = kept_results(results, RESULTS / "gate-real.json")
    write("gate-real", {"machine": info, "note": args.note, "results": results}, markdown(results, info, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

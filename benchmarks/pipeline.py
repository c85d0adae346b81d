"""Wall time and peak memory of each stage, and model vs popularity quality, per data set.

    python benchmarks/pipeline.py                       # synthetic default and amazon2018-industrial
    python benchmarks/pipeline.py --only synthetic

Each data set runs the whole chain (`ml.pipeline.stages`, the functions the DAG calls) in a fresh
VETTED_HOME. On amazon2018-industrial the evaluation follows the published protocol: every test row is one
case (its history -> its target) ranked against all items. Writes benchmarks/results/pipeline.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SHARED_DATA, machine, measure, write  # noqa: E402


def run_one(name: str, overrides: dict) -> dict:
    from ml.config import RunConfig, Settings
    from ml.pipeline import stages
    from ml.pipeline.context import RunContext

    home = Path(tempfile.mkdtemp(prefix=f"vetted-bench-{name}-"))
    os.environ["VETTED_HOME"] = str(home)
    os.environ["VETTED_DEMO"] = "1"
    ctx = RunContext.create(Settings.from_env(), RunConfig.from_dict(overrides))
    timings: dict[str, dict] = {}
    for stage in stages.STAGES:
        with measure(timings.setdefault(stage, {})):
            getattr(stages, stage)(ctx)
        print(f"  {name}: {stage} {timings[stage]['seconds']} s, peak {timings[stage]['peak_rss_mb']} MB", flush=True)
    summary = ctx.read("summary")
    k = summary["config"]["k"]
    return {
        "config": overrides,
        "stages": timings,
        "total_seconds": round(sum(t["seconds"] for t in timings.values()), 1),
        "n_cases": ctx.read("evaluate")["n_cases"],
        "model": {"ndcg_at_10": summary["metrics"][f"ndcg_at_{k}"], "hr_at_10": summary["metrics"][f"hr_at_{k}"]},
        "baselines": {b: {"ndcg_at_10": m[f"ndcg_at_{k}"], "hr_at_10": m[f"hr_at_{k}"]}
                      for b, m in summary["baselines"].items()},
        "privacy": {key: summary["privacy"].get(key) for key in ("dp", "epsilon", "delta")},
        "gate": summary["gate"]["status"],
    }


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Pipeline benchmark ({m['date']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']})", ""]
    for name, r in results["datasets"].items():
        if "skipped" in r:
            lines += [f"## {name}", f"skipped: {r['skipped']}", ""]
            continue
        lines += [f"## {name} ({r['n_cases']} hold-out cases; gate {r['gate']}; DP epsilon "
                  f"{r['privacy']['epsilon']:.2f})" if r["privacy"].get("epsilon") else f"## {name}", "",
                  "| stage | seconds | peak RSS (MB) |", "|---|---|---|"]
        lines += [f"| {s} | {t['seconds']} | {t['peak_rss_mb']} |" for s, t in r["stages"].items()]
        lines += [f"| **total** | {r['total_seconds']} | |", "", "| model | NDCG@10 | HR@10 |", "|---|---|---|",
                  f"| candidate (DP) | {r['model']['ndcg_at_10']:.4f} | {r['model']['hr_at_10']:.4f} |"]
        lines += [f"| {b} | {v['ndcg_at_10']:.4f} | {v['hr_at_10']:.4f} |" for b, v in r["baselines"].items()]
        lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["synthetic", "amazon2018"], default=None)
    args = parser.parse_args()
    datasets = {
        "synthetic": {"source": "synthetic"},
        "amazon2018": {"source": "amazon2018", "path": str(SHARED_DATA / "amazon2018-industrial"),
                       "max_eval_cases": 0},
    }
    previous = RESULTS / "pipeline.json"  # a partial run (--only) keeps the other data set's figures
    results = {"machine": machine(), "datasets": json.loads(previous.read_text())["datasets"] if previous.exists() else {}}
    for name, overrides in datasets.items():
        if args.only and name != args.only:
            continue
        if overrides.get("path") and not Path(overrides["path"]).exists():
            results["datasets"][name] = {"skipped": f"{overrides['path']} is absent"}
            continue
        print(f"{name} ...", flush=True)
        results["datasets"][name] = run_one(name, overrides)
    write("pipeline", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

"""Wall time and peak memory of each stage, and model vs popularity quality, per data set; and the prod profile.

    python benchmarks/pipeline.py                       # synthetic default and amazon2018-industrial
    python benchmarks/pipeline.py --only synthetic
    python benchmarks/pipeline.py --only prod           # the same chain on SQLite (local) and PostgreSQL + Redis
    python benchmarks/pipeline.py --only scale          # synthetic catalogues of 20k, 100k and 200k items
    python benchmarks/pipeline.py --only games          # amazon2018-games (RecBole files), the chain's defaults

The prod part runs one smaller synthetic chain twice, in the local profile (SQLite for MLflow and Feast)
and in the prod profile (MLflow and the Feast registry on PostgreSQL, the online store on Redis), then
times single-shopper online reads of the history feature from each online store. It creates its own
databases (`vetted_bench_<random>_*`, dropped after) and Feast project (its Redis keys deleted after) on
VETTED_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres) and VETTED_BENCH_REDIS
(default redis://127.0.0.1:6379/15).

Each data set runs the whole chain (`ml.pipeline.stages`, the functions the DAG calls) in a fresh
VETTED_HOME. On amazon2018-industrial the evaluation follows the published protocol: every test row is one
case (its history -> its target) ranked against all items. Writes benchmarks/results/pipeline.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SHARED_DATA, machine, measure, new_context, write  # noqa: E402

POSTGRES = os.environ.get("VETTED_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("VETTED_BENCH_REDIS", "redis://127.0.0.1:6379/15")
# one synthetic chain, run in both profiles: big enough that the stores do real work, small enough for ~2 x 2 min
PROD_RUN = {
    "source": "synthetic",
    "n_users": 5000,
    "n_items": 800,
    "epochs": 5,
    "max_steps": 30,
    "batch_size": 512,
    "max_eval_cases": 2000,
    "slice_reports": False,
}
# the catalogue-scale runs: the transition signal on (DP, the default policy's), 20,000 shoppers, a bounded training
# and evaluation so that the 200,000-item run fits a 2-core machine; a step scores each example's target and the
# default sample of negatives, so its time should not grow with the catalogue (ml.training.negatives)
SCALE_ITEMS = (20_000, 100_000, 200_000)
SCALE_RUN = {
    "source": "synthetic",
    "n_users": 20_000,
    "max_steps": 20,
    "max_eval_cases": 1000,
    "max_search_cases": 300,
    "slice_reports": False,
}
ONLINE_READS = 500
REPEATS = 2
HISTORY = "user_recent_items:recent_items"


def run_one(name: str, overrides: dict) -> dict:
    return _run_stages(name, overrides)[0]


def _run_stages(name: str, overrides: dict):
    """The whole chain in a fresh home under the current environment's profile; (result, settings)."""
    from ml.pipeline import stages

    # a fresh home, and the benchmarks' one pseudonym key (with a fresh demo key per run the audit shoppers, and
    # so the model and co-occurrence figures, would move between runs of the same code)
    ctx = new_context(name, overrides)
    timings: dict[str, dict] = {}
    for stage in stages.STAGES:
        with measure(timings.setdefault(stage, {})):
            getattr(stages, stage)(ctx)
        print(f"  {name}: {stage} {timings[stage]['seconds']} s, peak {timings[stage]['peak_rss_mb']} MB", flush=True)
    summary = ctx.read("summary")
    k = summary["config"]["k"]
    trained = ctx.read("train")
    return {
        "config": overrides,
        "stages": timings,
        "train_steps": trained["steps"],
        "train_seconds_per_step": trained["seconds_per_step"],
        "transition_pairs": trained["transition_pairs"],
        "total_seconds": round(sum(t["seconds"] for t in timings.values()), 1),
        "n_cases": ctx.read("evaluate")["n_cases"],
        "model": {"ndcg_at_10": summary["metrics"][f"ndcg_at_{k}"], "hr_at_10": summary["metrics"][f"hr_at_{k}"]},
        "baselines": {
            b: {"ndcg_at_10": m[f"ndcg_at_{k}"], "hr_at_10": m[f"hr_at_{k}"]} for b, m in summary["baselines"].items()
        },
        "privacy": {key: summary["privacy"].get(key) for key in ("dp", "epsilon", "delta")},
        "gate": summary["gate"]["status"],
    }, ctx.settings


# --------------------------------------------------------------------------------------------- prod profile
@contextmanager
def prod_environment() -> Iterator[dict[str, str]]:
    """Fresh PostgreSQL databases and a Feast project of our own, set as the prod profile's environment."""
    import psycopg
    import redis
    from psycopg import sql

    prefix = f"vetted_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    dbs = {purpose: f"{prefix}_{purpose}" for purpose in ("feast", "mlflow")}
    for name in dbs.values():
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        "VETTED_PROFILE": "prod",
        "VETTED_FEAST_PROJECT": prefix,
        "VETTED_REDIS_URL": REDIS,
        "VETTED_POSTGRES_DSN": urlsplit(POSTGRES)._replace(path=f"/{dbs['feast']}").geturl(),
        "MLFLOW_TRACKING_URI": urlsplit(POSTGRES)._replace(path=f"/{dbs['mlflow']}").geturl(),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        client = redis.Redis.from_url(REDIS)
        for key in list(client.scan_iter(match=f"*{prefix}".encode(), count=1000)):
            client.delete(key)
        for name in dbs.values():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def online_reads(settings, n: int = ONLINE_READS, seed: int = 0) -> tuple[str, list[float], int]:
    """Seconds of `n` single-shopper `get_online_features` reads of the history feature; (store type, times, found)."""
    import pandas as pd

    from ml.features import store as fs

    store = fs.open_store(fs.repo_config_for(settings))
    users = pd.read_parquet(settings.home / "features" / "user_events.parquet", columns=["user_id"])["user_id"].unique()
    picks = np.random.default_rng(seed).choice(users, size=n + 20, replace=len(users) < n + 20)
    seconds, found = [], 0
    for i, user in enumerate(picks):
        start = time.perf_counter()
        got = store.get_online_features(features=[HISTORY], entity_rows=[{"user_id": str(user)}]).to_dict()
        elapsed = time.perf_counter() - start
        if i >= 20:  # the first reads open connections and warm caches
            seconds.append(elapsed)
            found += got["recent_items"][0] is not None
    return store.config.online_store.type, seconds, found


def latency_summary(store_type: str, seconds: list[float], found: int) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "online_store": store_type,
        "reads": len(seconds),
        "found": found,
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 99)},
        "mean_ms": round(float(ms.mean()), 3),
    }


def best_of(runs: list[dict]) -> dict:
    """Per stage the fastest of the repeats (the machine is shared: the minimum is the least disturbed)."""
    stages = {s: min((r["stages"][s] for r in runs), key=lambda t: t["seconds"]) for s in runs[0]["stages"]}
    return {
        "stages": stages,
        "total_seconds": round(sum(t["seconds"] for t in stages.values()), 1),
        "run_totals": [r["total_seconds"] for r in runs],
        "gates": [r["gate"] for r in runs],
        "ndcg_at_10": [round(r["model"]["ndcg_at_10"], 4) for r in runs],
        "best_baseline_ndcg_at_10": [round(max(b["ndcg_at_10"] for b in r["baselines"].values()), 4) for r in runs],
        "n_cases": runs[0]["n_cases"],
    }


def _local_profile() -> None:
    os.environ["VETTED_PROFILE"] = "local"
    for k in (
        "MLFLOW_TRACKING_URI",
        "VETTED_TRACKING_URI",
        "VETTED_POSTGRES_DSN",
        "VETTED_REDIS_URL",
        "VETTED_FEAST_PROJECT",
    ):
        os.environ.pop(k, None)


def run_profiles() -> dict:
    """The same chain on the local and the prod profile (interleaved, REPEATS times), and online reads."""
    out: dict = {"date": machine()["date"], "config": PROD_RUN, "repeats": REPEATS, "runs": {}, "online_reads": {}}
    # a small unrecorded run first: imports, model loading and file caches would otherwise bill the first profile
    print("warm-up run ...", flush=True)
    _local_profile()
    _run_stages(
        "warmup", {**PROD_RUN, "n_users": 400, "n_items": 200, "max_steps": 2, "batch_size": 64, "max_eval_cases": 200}
    )
    runs: dict[str, list[dict]] = {"local": [], "prod": []}
    reads: dict[str, tuple[str, list[float], int]] = {}
    for rep in range(REPEATS):
        for profile in ("local", "prod"):
            print(f"profile {profile}, run {rep + 1} of {REPEATS} ...", flush=True)
            if profile == "local":
                _local_profile()
                result, settings = _run_stages(f"local{rep}", PROD_RUN)
                got = online_reads(settings, seed=rep)
            else:
                with prod_environment():
                    result, settings = _run_stages(f"prod{rep}", PROD_RUN)
                    got = online_reads(settings, seed=rep)
            kind, seconds, found = reads.get(profile, (got[0], [], 0))
            reads[profile] = (kind, seconds + got[1], found + got[2])
            runs[profile].append(result)
    for profile in runs:
        out["runs"][profile] = best_of(runs[profile])
        out["online_reads"][profile] = latency_summary(*reads[profile])
        print(
            f"  {profile}: {out['runs'][profile]['total_seconds']} s; reads {out['online_reads'][profile]}", flush=True
        )
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Pipeline benchmark ({m['date']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']})", ""]
    for name, r in results["datasets"].items():
        if "skipped" in r:
            lines += [f"## {name}", f"skipped: {r['skipped']}", ""]
            continue
        lines += [
            f"## {name} ({r['n_cases']} hold-out cases; gate {r['gate']}; DP epsilon {r['privacy']['epsilon']:.2f})"
            if r["privacy"].get("epsilon")
            else f"## {name}",
            "",
            "| stage | seconds | peak RSS (MB) |",
            "|---|---|---|",
        ]
        lines += [f"| {s} | {t['seconds']} | {t['peak_rss_mb']} |" for s, t in r["stages"].items()]
        lines += [
            f"| **total** | {r['total_seconds']} | |",
            "",
            "| model | NDCG@10 | HR@10 |",
            "|---|---|---|",
            f"| candidate (DP) | {r['model']['ndcg_at_10']:.4f} | {r['model']['hr_at_10']:.4f} |",
        ]
        lines += [f"| {b} | {v['ndcg_at_10']:.4f} | {v['hr_at_10']:.4f} |" for b, v in r["baselines"].items()]
        lines.append("")
    if "scale" in results:
        lines += scale_markdown(results["scale"])
    if "profiles" in results:
        lines += profiles_markdown(results["profiles"])
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    return "\n".join(lines) + "\n"


def scale_name(n_items: int) -> str:
    """The key of a catalogue size's run in the results: synthetic-20k, synthetic-100k, ..."""
    return f"synthetic-{n_items // 1000}k"


def kept_scale(previous: dict, sizes: list[int]) -> dict:
    """The previous results' scale runs of the sizes this run does not measure again."""
    rerun = {scale_name(n) for n in sizes}
    return {name: run for name, run in previous.items() if name not in rerun}


def by_size(runs: dict) -> dict:
    """The scale runs, smallest catalogue first."""
    return dict(sorted(runs.items(), key=lambda kv: int(kv[0].removeprefix("synthetic-").removesuffix("k"))))


def scale_markdown(runs: dict) -> list[str]:
    """The catalogue-scale table: time per training step, each stage's time and the run's peak memory per size."""
    lines = [
        "## Catalogue scale: synthetic, the transition signal on (DP), "
        + ", ".join(f"{k} {v}" for k, v in SCALE_RUN.items() if k != "source"),
        "",
        "A training step scores each example's target and a uniform sample of `negatives` items (4,096 by default),"
        " not the whole catalogue; the item x item tables are sparse (released transition pairs, BM25 neighbour"
        " lists). Each run is the whole chain in a fresh home, one after the other on a shared 2-core machine.",
        "",
        "| items | measured (load average at start) | train s/step | steps | transition pairs | ingest s | features s | train s | evaluate s | register s | peak RSS (MB) "
        "| candidate NDCG@10 | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | | | | | | |")
            continue
        st = r["stages"]
        peak = max(t["peak_rss_mb"] for t in st.values())
        lines.append(
            f"| {r['config']['n_items']:,} | {r.get('measured', '?')} ({r.get('load_average_at_start', '?')}) "
            f"| {r['train_seconds_per_step']:.2f} | {r['train_steps']} "
            f"| {r['transition_pairs']:,} "
            f"| {st['ingest']['seconds']} | {st['features']['seconds']} | {st['train']['seconds']} "
            f"| {st['evaluate']['seconds']} | {st['register']['seconds']} | {peak} "
            f"| {r['model']['ndcg_at_10']:.4f} | {r['gate']} |"
        )
    missing = [f"{n:,}" for n in SCALE_ITEMS if scale_name(n) not in runs]
    if missing:
        lines += [
            "",
            f"Not run end to end yet: {', '.join(missing)} items. Encoding the catalogue with MiniLM grows with it "
            "(most of the 20k run's train stage outside its steps); the step itself at 20k-200k items is in "
            "benchmarks/results/train-steps.md.",
        ]
    return lines + [""]


def profiles_markdown(p: dict) -> list[str]:
    c, local, prod = p["config"], p["runs"]["local"], p["runs"]["prod"]

    def each(values: list) -> str:
        return " / ".join(str(v) for v in values)

    lines = [
        f"## Profiles: local (SQLite) vs prod (PostgreSQL + Redis) (measured {p['date']})",
        "",
        f"Synthetic, {c['n_users']} shoppers x {c['n_items']} items, {c['max_steps']} DP steps, "
        f"{local['n_cases']} hold-out cases; each profile run {p['repeats']} times, interleaved, after an "
        "unrecorded warm-up run. MLflow backend: SQLite file vs PostgreSQL; Feast registry: SQLite file vs "
        "PostgreSQL (`sql`); online store: SQLite vs Redis; offline store: parquet on the home in both. "
        "Stage times are the fastest of the runs (the machine is shared).",
        "",
        "| stage | local (s) | prod (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {t['seconds']} | {prod['stages'][s]['seconds']} |" for s, t in local["stages"].items()]
    lines += [
        f"| **total** (sum of the above) | {local['total_seconds']} | {prod['total_seconds']} |",
        f"| each run's total | {each(local['run_totals'])} | {each(prod['run_totals'])} |",
        f"| candidate NDCG@10, each run | {each(local['ndcg_at_10'])} | {each(prod['ndcg_at_10'])} |",
        f"| best baseline NDCG@10 | {each(local['best_baseline_ndcg_at_10'])} | "
        f"{each(prod['best_baseline_ndcg_at_10'])} |",
        f"| gate, each run | {each(local['gates'])} | {each(prod['gates'])} |",
        "",
        "The gate row is the default policy's verdict on each small run, reported rather than compared: the "
        "profile changes where results are stored, not how the model trains.",
        "",
        f"Feast online read of one shopper's history (`get_online_features`, {p['online_reads']['local']['reads']} "
        "reads in all, each run's first 20 not counted, one process, loopback):",
        "",
        "| online store | p50 (ms) | p99 (ms) | mean (ms) | shoppers found |",
        "|---|---|---|---|---|",
    ]
    for profile, r in p["online_reads"].items():
        lines.append(
            f"| {r['online_store']} ({profile}) | {r['p50_ms']} | {r['p99_ms']} | {r['mean_ms']} | "
            f"{r['found']}/{r['reads']} |"
        )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--only",
        choices=["synthetic", "amazon2018", "games", "prod", "scale"],
        default=None,
        help="one data set, or `prod`: the profile comparison alone",
    )
    parser.add_argument(
        "--scale-items",
        default=",".join(str(n) for n in SCALE_ITEMS),
        help="with --only scale: the catalogue sizes to run, comma-separated (the other sizes' figures are kept)",
    )
    args = parser.parse_args()
    try:
        sizes = [int(n) for n in args.scale_items.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"--scale-items: whole numbers separated by commas, got {args.scale_items!r}") from None
    if not sizes or min(sizes) < 1000 or any(n % 1000 for n in sizes):
        raise SystemExit(
            f"--scale-items: whole thousands of items (the runs are named by them), got {args.scale_items!r}"
        )
    datasets = {
        "synthetic": {"source": "synthetic"},
        "amazon2018": {"source": "amazon2018", "path": str(SHARED_DATA / "amazon2018-industrial"), "max_eval_cases": 0},
        # the crowd: 50,546 shoppers, 16,859 items, the chain's defaults (10,000 evaluated cases); run alone with
        # --only games (not in the default run: about an hour on 2 cores)
        "games": {"source": "recbole", "path": str(SHARED_DATA / "amazon2018-games")},
    }
    previous = RESULTS / "pipeline.json"  # a partial run (--only) keeps the other data set's figures
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    results = {"machine": machine(), "datasets": kept.get("datasets", {})}
    if "profiles" in kept:
        results["profiles"] = kept["profiles"]
    if "scale" in kept:
        results["scale"] = kept["scale"]
    if args.only in (None, "prod"):
        results["profiles"] = run_profiles()
    if args.only in (None, "scale"):
        results["scale"] = kept_scale(kept.get("scale", {}), sizes)
        for n_items in sizes:
            name = scale_name(n_items)
            print(f"{name} ...", flush=True)
            load = [round(x, 2) for x in os.getloadavg()]
            results["scale"][name] = {**run_one(name, {**SCALE_RUN, "n_items": n_items}), "measured": machine()["date"]}
            results["scale"][name]["load_average_at_start"] = load
            results["scale"] = by_size(results["scale"])
            write("pipeline", results, markdown(results))  # each size as it finishes
    for name, overrides in datasets.items():
        if (args.only and name != args.only) or (not args.only and name == "games"):
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

"""The `vetted` command: run the chain without Airflow, roll back, read the audit trail, serve.

vetted demo                                   # the whole chain on the synthetic default
vetted run --source amazon2018 --path DIR     # the same chain on your data
vetted run --source files --path DIR          # your own tables as parquet or CSV
vetted run --source sql --url URL             # ... or in a database
vetted rollback [--to VERSION] --reason TEXT  # only to a version the gate passed or a reviewer approved
vetted doctor [--dry-run]                     # settle runs whose stage died (SIGKILL, lost machine)
vetted audit
vetted serve
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from ml.config import SOURCES, ConfigError, RunConfig, Settings
from ml.data.sources import REGISTRY
from ml.pipeline.context import SOURCE_URL_VARIABLE

log = logging.getLogger("vetted")


def _run_args(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=d.source,
        help="; ".join(f"{s.name}: {s.summary}" for s in REGISTRY.values()),
    )
    p.add_argument(
        "--path",
        default="",
        help="the folder (or fsspec URL) of a source that reads files ("
        + ", ".join(s.name for s in REGISTRY.values() if s.needs == "path")
        + "); for "
        + "; ".join(f"{s.name}: {s.path_note}" for s in REGISTRY.values() if s.path_note),
    )
    p.add_argument(
        "--url",
        default="",
        help="database URL of a source that reads one ("
        + ", ".join(s.name for s in REGISTRY.values() if s.needs == "url")
        + f"); default ${SOURCE_URL_VARIABLE}, which keeps a password out of the shell's history",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--n-users", type=int, default=d.n_users, help="synthetic set size")
    p.add_argument("--n-items", type=int, default=d.n_items, help="synthetic set size")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--trainable-layers", type=int, default=d.trainable_layers)
    p.add_argument(
        "--negatives",
        type=int,
        default=d.negatives,
        help="items a training step samples besides each example's target when the catalogue is larger (0: every item)",
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=d.world_size,
        help="data-parallel training processes (0: one per GPU when there are several)",
    )
    p.add_argument("--no-dp", action="store_true", help="train without DP (comparison only; the policy refuses it)")
    p.add_argument("--epsilon", type=float, default=d.dp.target_epsilon)
    p.add_argument("--delta", type=float, default=None, help="default n_users ** -1.1")
    p.add_argument("--policy", default="", help="gate policy YAML (default: the packaged policy)")
    p.add_argument("--require-approval", action="store_true")
    p.add_argument("--no-slice-reports", action="store_true")
    p.add_argument("--ingest-date", default="")


def config_from_args(a: argparse.Namespace) -> RunConfig:
    return RunConfig.from_dict(
        {
            "source": a.source,
            "path": a.path,
            "url": _source_url(a),
            "seed": a.seed,
            "n_users": a.n_users,
            "n_items": a.n_items,
            "epochs": a.epochs,
            "max_steps": a.max_steps,
            "batch_size": a.batch_size,
            "learning_rate": a.learning_rate,
            "trainable_layers": a.trainable_layers,
            "negatives": a.negatives,
            "world_size": a.world_size,
            "policy": a.policy,
            "require_approval": a.require_approval,
            "slice_reports": not a.no_slice_reports,
            "ingest_date": a.ingest_date,
            "dp": {"enabled": not a.no_dp, "target_epsilon": a.epsilon, "delta": a.delta},
        }
    )


def _source_url(a: argparse.Namespace) -> str:
    """--url, else $VETTED_SOURCE_URL for a source that reads a database (another source records none)."""
    return a.url or (os.environ.get(SOURCE_URL_VARIABLE, "") if REGISTRY[a.source].needs == "url" else "")


def run_chain(settings: Settings, config: RunConfig, echo: Any = print, key: bytes | None = None) -> dict[str, Any]:
    """Settle runs whose stage died, then every stage in order (each holding the run's lease), printing each as
    it goes; returns the summary. `key` is the pseudonym key; without it the key is loaded (ml.keys) before any
    stage starts, so a missing key stops the chain before it settles or creates anything."""
    from ml.keys import load_pseudonym_key
    from ml.lineage import cli_client, emit_stage
    from ml.pipeline import stages
    from ml.pipeline.context import RunContext
    from ml.pipeline.lease import stage_lease
    from ml.registry.sweep import sweep

    if key is None:
        key = load_pseudonym_key(os.environ, settings.home, allow_demo_key=settings.demo)
    for orphan in sweep(settings, actor="vetted run").orphans:
        echo(f"Settled a dead run first: {_orphan_line(orphan)}")
    ctx = RunContext.create(settings, config)
    echo(f"Run folder: {ctx.run_dir}")
    lineage = cli_client(settings.home)  # what each stage read and wrote, as the Airflow tasks report it
    for n, name in enumerate(stages.STAGES, start=1):
        started = time.perf_counter()
        echo(f"[{n}/{len(stages.STAGES)}] {name} ...", flush=True)
        run_id = emit_stage(lineage, name, str(ctx.run_dir), None, "START") if lineage else None
        try:
            with stage_lease(ctx.run_dir, name):
                result = stages.ingest(ctx, key=key) if name == "ingest" else getattr(stages, name)(ctx)
        except BaseException:
            if lineage:
                emit_stage(lineage, name, str(ctx.run_dir), run_id, "FAIL")
            raise
        if lineage:
            emit_stage(lineage, name, str(ctx.run_dir), run_id, "COMPLETE")
        echo(f"      {name} done in {time.perf_counter() - started:.1f} s: {_short(result)}", flush=True)
    return ctx.read("summary")


def _orphan_line(orphan: Any) -> str:
    versions = ", ".join(f"v{v}" for v in orphan.versions_failed) or "none"
    return (
        f"{orphan.run_dir.name}: {orphan.reason}. Versions marked failed: {versions}; "
        f"MLflow runs ended FAILED: {', '.join(orphan.runs_failed) or 'none'}"
    )


def doctor(settings: Settings, dry_run: bool = False) -> int:
    """Print the run folders whose stage died and what was done about them, and the stages at work now."""
    from ml.registry.sweep import sweep

    report = sweep(settings, actor="vetted doctor", dry_run=dry_run)
    if not report.orphans:
        print("No dead runs: every run's stages ended or are still at work.")
    for orphan in report.orphans:
        print(f"{'Would settle' if dry_run else 'Settled'} {_orphan_line(orphan)}")
    for run_dir, lease in report.live:
        print(f"At work: {run_dir.name}: {lease.stage} (pid {lease.pid} on {lease.host} since {lease.since})")
    return 0


def _short(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict)) or len(str(v)) < 120)


def print_summary(summary: dict[str, Any], settings: Settings) -> None:
    k = summary["config"]["k"]
    nd = f"ndcg_at_{k}"
    print("\n=== Vetted run summary ===")
    print(
        f"Model {summary['model_name']} v{summary['model_version']}: gate {summary['gate']['status']!s}"
        f" (policy {summary['gate']['policy']})"
    )
    for check in summary["gate"]["checks"] or []:
        print(f"  {check['status']:>8}  {check['name']}: {check['message']}")
    print(f"NDCG@{k}: candidate {summary['metrics'][nd]:.4f}")
    for name, m in summary["baselines"].items():
        star = "  <- best baseline" if name == summary["best_baseline"] else ""
        print(f"          {name:<18} {m[nd]:.4f}{star}")
    search = summary.get("search") or {}
    if search.get("n_cases"):
        print(
            f"Search NDCG@{k} ({search['n_cases']} hold-out searches): candidate {search['metrics'][nd]:.4f}, "
            f"zero-result rate {search['zero_result_rate']:.3f}"
        )
        for name, m in search["baselines"].items():
            star = "  <- best search baseline" if name == search["best_baseline"] else ""
            print(f"          {name:<26} {m[nd]:.4f}{star}")
    else:
        print(f"Search: not measured ({search.get('unmeasurable')})")
    p = summary["privacy"]
    if p.get("dp"):
        print(
            f"Privacy: user-level DP, epsilon {p['epsilon']:.2f} at delta {p['delta']:.2e}; "
            f"MIA AUC {p['mia']['auc']:.3f}; PII findings {p['pii_findings']}"
        )
    else:
        print(f"Privacy: NO DP; MIA AUC {p['mia']['auc']:.3f}; PII findings {p['pii_findings']}")
    promo = summary["promotion"] or {}
    print(f"Champion: v{promo.get('champion')} ({'promoted now' if promo.get('promoted') else 'unchanged'})")
    print("Reports:")
    for label, path in summary["reports"].items():
        if isinstance(path, str):
            print(f"  {label:<9} {path}")
    print(f"Model card: {summary['model_card']}\nSummary:    {summary['run_dir']}/summary.json")
    print(f"Tracking:   {settings.tracking_uri}  (make mlflow to browse)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vetted", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_args(sub.add_parser("run", help="run the whole chain"))
    demo = sub.add_parser("demo", help="the whole chain on the synthetic default, with a local demo key")
    _run_args(demo)
    rb = sub.add_parser("rollback", help="move champion back to previous (or --to VERSION)")
    rb.add_argument("--to", default=None)
    rb.add_argument("--reason", required=True)
    rb.add_argument("--actor", default=None)
    dr = sub.add_parser("doctor", help="find runs whose stage died; mark their versions failed, end their runs")
    dr.add_argument("--dry-run", action="store_true", help="only say what would be settled")
    sub.add_parser("audit", help="print the audit trail")
    sv = sub.add_parser("serve", help="the search and recommendation API")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ml.training.train").setLevel(logging.INFO)  # its progress lines show without --verbose
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "demo":
            os.environ["VETTED_DEMO"] = "1"
        settings = Settings.from_env()
        if args.command in ("run", "demo"):
            summary = run_chain(settings, config_from_args(args))
            print_summary(summary, settings)
            return 0
        if args.command == "rollback":
            from ml.registry.rollback import rollback

            moved = rollback(settings, to=args.to, reason=args.reason, actor=args.actor)
            print(f"champion is now v{moved['champion']} (was v{moved['was']})")
            return 0
        if args.command == "doctor":
            return doctor(settings, dry_run=args.dry_run)
        if args.command == "audit":
            from ml.registry.audit import read_events

            for e in read_events(settings):
                print(f"{e['at']}  {e['event']:<10} {e['model']} v{e['version']}  by {e['actor']}: {e['reason']}")
            return 0
        if args.command == "serve":
            from ml.serving.app import serve

            serve(settings, host=args.host, port=args.port)
            return 0
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"vetted: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

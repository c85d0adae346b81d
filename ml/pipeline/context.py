"""The run context: one folder per run holding each stage's small outputs, so stages can run apart.

The DAG passes only the run folder's path between tasks; `vetted run` passes the same object in-process.
The folder sits on a volume every worker reads, so it keeps no secret: store URLs are written with their
passwords masked, and a task that loads the run takes the real ones from its own environment (checked to
name the same store).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import ConfigError, RunConfig, Settings

if TYPE_CHECKING:
    from ml.data.raw import RawTables

# the frames the stages leave in the run folder beside their <stage>.json
TRAIN_SET, CASES, SEQUENCES = "train_set.parquet", "cases.parquet", "train_sequences.parquet"
SEARCH_CASES = "search_cases.parquet"  # hold-out searches followed by a click or purchase: query -> item
# per hold-out case: the shopper, the audit groups and every ranker's NDCG, for the paired bootstrap
PER_CASE = "per_case.parquet"
SEARCH_PER_CASE = "search_per_case.parquet"  # the same for the hold-out's search cases

# Settings fields that may carry a password, and the variable each comes from
SECRET_SETTINGS = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "artifact_root": "VETTED_ARTIFACT_ROOT",
    "postgres_dsn": "VETTED_POSTGRES_DSN",
    "redis_url": "VETTED_REDIS_URL",
}
# where a task finds the source database's URL with its password (RunConfig.url is stored masked)
SOURCE_URL_VARIABLE = "VETTED_SOURCE_URL"


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value


@dataclass
class RunContext:
    settings: Settings
    config: RunConfig
    run_dir: Path

    @classmethod
    def create(cls, settings: Settings, config: RunConfig, name: str = "") -> RunContext:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        run_dir = settings.runs_dir / (name or f"{stamp}-{config.source}")
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = cls(settings=settings, config=config, run_dir=run_dir)
        ctx.write("context", {"settings": _masked(settings), "config": config.to_dict()})
        return ctx

    @classmethod
    def load(cls, run_dir: str | Path) -> RunContext:
        run_dir = Path(run_dir)
        data = json.loads((run_dir / "context.json").read_text())
        settings = _unmasked(data["settings"])
        return cls(settings=settings, config=_unmasked_config(data["config"]), run_dir=run_dir)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def write(self, name: str, data: dict[str, Any]) -> Path:
        path = self.run_dir / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(jsonable(data), indent=2, sort_keys=False))
        tmp.replace(path)
        return path

    def read(self, name: str) -> dict[str, Any]:
        path = self.run_dir / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the stage that writes {name!r} has not run for this run")
        return json.loads(path.read_text())

    def has(self, name: str) -> bool:
        return (self.run_dir / f"{name}.json").exists()

    def source_tables(self, ingest_date: str) -> RawTables:
        """The tables of the source this run's config names, read as of `ingest_date` (YYYY-MM-DD): what the
        ingest stage validates into the lake, and what the register stage reads again for the PII scan."""
        from ml.data.sources import read_source

        cfg = self.config
        return read_source(
            cfg.source,
            cfg.path or None,
            url=cfg.url,
            n_users=cfg.n_users,
            n_items=cfg.n_items,
            seed=cfg.seed,
            ingest_date=ingest_date,
        )


def _masked(settings: Settings) -> dict[str, Any]:
    from ml.store_urls import redact

    data = asdict(settings)
    for name in SECRET_SETTINGS:
        data[name] = redact(data[name])
    return data


def _unmasked(stored: dict[str, Any]) -> Settings:
    """The run's settings, with each masked URL replaced by this process's own (which must name the same store)."""
    from ml.store_urls import redact

    data = {**stored, "home": Path(stored["home"])}
    masked = [name for name in SECRET_SETTINGS if ":***@" in str(stored.get(name, ""))]
    if masked:
        env = asdict(Settings.from_env())
        for name in masked:
            if redact(env[name]) != stored[name]:
                raise ConfigError(
                    f"{SECRET_SETTINGS[name]} in this environment ({redact(env[name]) or 'unset'}) is "
                    f"not the store the run was created with ({stored[name]}): set it as the "
                    "scheduler's workers have it"
                )
            data[name] = env[name]
    return Settings(**data)


def _unmasked_config(stored: dict[str, Any]) -> RunConfig:
    """The run's config, its masked source URL replaced by VETTED_SOURCE_URL (which must name the same database)."""
    import os

    from ml.store_urls import redact

    url = str(stored.get("url") or "")
    if ":***@" in url:
        real = os.environ.get(SOURCE_URL_VARIABLE, "")
        if redact(real) != url:
            raise ConfigError(
                f"{SOURCE_URL_VARIABLE} in this environment ({redact(real) or 'unset'}) is not the "
                f"source database the run was created with ({url}): set it on every worker"
            )
        stored = {**stored, "url": real}
    return RunConfig.from_dict(stored)

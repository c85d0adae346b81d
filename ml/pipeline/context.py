"""The run context: one folder per run holding each stage's small outputs, so stages can run apart.

The DAG passes only the run folder's path between tasks; `vetted run` passes the same object in-process.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.config import RunConfig, Settings


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
        ctx.write("context", {"settings": asdict(settings), "config": config.to_dict()})
        return ctx

    @classmethod
    def load(cls, run_dir: str | Path) -> RunContext:
        run_dir = Path(run_dir)
        data = json.loads((run_dir / "context.json").read_text())
        s = data["settings"]
        settings = Settings(**{**s, "home": Path(s["home"])})
        return cls(settings=settings, config=RunConfig.from_dict(data["config"]), run_dir=run_dir)

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

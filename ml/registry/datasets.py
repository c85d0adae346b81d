"""The training set and the hold-out as MLflow dataset inputs of the training run.

`mlflow.log_input` puts each on the run page's datasets panel with its name, digest, source, schema and row
count, so a reviewer sees what the model learned from and what it was judged on. The source names where the
rows come from: the lake's events table as it stood on the run's ingest date (the partition written that
day, and every older one, newest winning per key) and the Feast features joined point in time onto it.
The rows themselves stay in the run folder: they hold pseudonymous shopper ids and search text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from mlflow.data.dataset_source import DatasetSource

from ml.data import lake

TRAINING, EVALUATION = "training", "evaluation"  # MLflow's input contexts: the datasets panel groups by them
FEATURE_SERVICE = "recommender"  # the Feast feature service whose views the rows are joined with
DIGEST_CHARS = 24  # hex digits of the file's SHA-256 kept: MLflow's dataset digest column holds 36 characters


class LakeSource(DatasetSource):
    """A dataset read from the local lake and joined with Feast features.

    Typed "local" with the lake partition's file URI as `uri`, so the MLflow UI shows it as a local file;
    the rest of the dict says which table, as of which date, and which Feast features were joined."""

    def __init__(self, spec: Mapping[str, Any]):
        if not str(spec.get("uri", "")).startswith("file://"):
            raise ValueError(f"a lake source needs a file:// uri, got {spec.get('uri')!r}")
        self._spec = dict(spec)

    @staticmethod
    def _get_source_type() -> str:
        return "local"

    def load(self, **kwargs: Any) -> str:
        return str(self._spec["uri"])

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> LakeSource:
        raise NotImplementedError("lake sources are built from a spec, never resolved from a string")

    def to_dict(self) -> dict[str, Any]:
        return dict(self._spec)

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> LakeSource:
        return cls(source_dict)


def file_digest(path: Path) -> str:
    """The first DIGEST_CHARS hex digits of the file's SHA-256: the same rows written again give the same digest."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:DIGEST_CHARS]


def file_uri(path: Path) -> str:
    """The absolute file:// URI of `path`, keeping the lake's `ingest_date=` readable (`=` may stand in a path)."""
    return "file://" + quote(Path(path).resolve().as_posix(), safe="/=")


def lake_source(lake_dir: Path, ingest_date: str, features: Sequence[str], split: str) -> LakeSource:
    """Where a feature set's rows come from: the events partition of `ingest_date` (read with the older ones),
    the Feast feature service and the feature references joined onto them, and which side of the split."""
    partition = lake.partition_path(Path(lake_dir), "events", ingest_date)
    return LakeSource(
        {
            "uri": file_uri(partition),
            "lake_table": "events",
            "lake_as_of": ingest_date,
            "feast_feature_service": FEATURE_SERVICE,
            "feast_features": list(features),
            "split": split,
        }
    )


def log_training_inputs(
    train_path: Path, holdout_path: Path, lake_dir: Path, ingest_date: str, split_time: str, features: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Log the training set and the hold-out as inputs of the active MLflow run; return, per dataset, its name,
    digest, row count and source URI (for the model card)."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    if mlflow.active_run() is None:
        raise RuntimeError("log_training_inputs needs an active MLflow run (inside the training run)")
    out: dict[str, dict[str, Any]] = {}
    for context, path, name, split in (
        (TRAINING, train_path, "training_set", f"events before {split_time}"),
        (EVALUATION, holdout_path, "holdout", f"events from {split_time}"),
    ):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the features stage writes it before training")
        source = lake_source(lake_dir, ingest_date, features, split)
        dataset = from_pandas(pd.read_parquet(path), source=source, name=name, digest=file_digest(path))
        mlflow.log_input(dataset, context=context)
        out[name] = {"context": context, "digest": dataset.digest, "rows": len(dataset.df), "source": source.load()}
    return out

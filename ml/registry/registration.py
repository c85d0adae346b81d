"""Model versions: log the pyfunc, register it, write tags and the description, move aliases.

Promotion reads the decision the gate recorded on the version (`gate.status`); it never recomputes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.registry.pyfunc import ARTIFACT_KEY, SIGNATURE, VettedRecommender

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS, CANDIDATE = "champion", "previous", "candidate"
PROMOTABLE = ("passed", "approved")
_REQUIREMENTS = ("torch", "transformers", "pandas", "numpy", "pyarrow", "mlflow", "faiss-cpu")


class PromotionRefused(RuntimeError):
    """The version's recorded gate decision does not allow promotion."""


def requirements() -> list[str]:
    reqs = []
    for name in _REQUIREMENTS:
        try:
            version = metadata.version(name).split("+")[0]
            reqs.append(f"{name}=={version}")
        except metadata.PackageNotFoundError:
            continue
    reqs.append(f"vetted=={metadata.version('vetted')}")
    return reqs


def log_model(recommender_dir: Path, example: pd.DataFrame) -> str:
    """Log the pyfunc under the active run; returns the model URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=VettedRecommender(),
        artifacts={ARTIFACT_KEY: str(recommender_dir)},
        signature=SIGNATURE,
        input_example=example,
        pip_requirements=requirements(),
    )
    return info.model_uri


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str],
             description: str) -> ModelVersion:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Vetted search and recommendation model")
    version = client.create_model_version(name=name, source=model_uri, run_id=run_id, tags=tags,
                                          description=description)
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return version


def set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str, actor: str = "vetted") -> dict[str, str | None]:
    """Move `champion` to this version if, and only if, its recorded gate status allows it.

    The version it replaces gets `previous`. Returns {"champion": new, "previous": old}.
    """
    mv = client.get_model_version(name, version)
    status = mv.tags.get("gate.status")
    if status not in PROMOTABLE:
        raise PromotionRefused(f"{name} v{version} has gate.status={status!r}; only {PROMOTABLE} may be promoted")
    old = alias_version(client, name, CHAMPION)
    if old is not None and str(old.version) == str(version):
        return {"champion": str(version), "previous": None}
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(old.version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promoted_at", datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_model_version_tag(name, str(version), "promoted_by", actor)
    previous = str(old.version) if old else None
    log.info("promoted %s v%s to champion (previous: %s)", name, version, previous)
    return {"champion": str(version), "previous": previous}


def recommender_artifact_uri(client: MlflowClient, name: str, version: str, scratch: Path) -> str:
    """The artifact URI of a version's recommender folder, read from its MLmodel file.

    MLflow 3 stores a logged model's artifacts under `models:/m-<id>`; the folder keeps the name it was
    logged from, which the MLmodel file records.
    """
    import yaml

    root = client.get_model_version_download_uri(name, version).rstrip("/")
    mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=str(scratch)))
    spec = yaml.safe_load(mlmodel.read_text())
    try:
        relative = spec["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"]
    except (KeyError, TypeError):
        raise ValueError(f"{name} v{version}: its MLmodel ({root}/MLmodel) has no python_function artifact "
                         f"{ARTIFACT_KEY!r}; was it logged with ml.registry.registration.log_model?") from None
    return f"{root}/{relative}"


def download_recommender(client: MlflowClient, name: str, version: str, scratch: Path) -> Path:
    """Download a version's recommender folder into `scratch`; returns its local path."""
    uri = recommender_artifact_uri(client, name, version, scratch)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch / "model")))

"""Model versions: log the pyfunc, register it, write tags and the description, move aliases.

Promotion reads the decision the gate recorded on the version (`gate.status`); it never recomputes it.

Crash safety: one MLflow run gets at most one version (`register` looks up a version already registered
from the run and reuses it, so a retried task never adds a second), and a stage that fails after the
version exists leaves it `gate.status=failed` with the stage and the reason (`failure_guard`,
`mark_failed`), never champion: an alias the failing stage moved is put back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.config import Settings
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


FAILED_AT, FAILURE_REASON = "gate.failed_at", "gate.failure_reason"


def version_for_run(client: MlflowClient, name: str, run_id: str | None) -> ModelVersion | None:
    """The version already registered from this MLflow run (the lowest if several), or None."""
    if not run_id:
        return None
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # no such registered model yet
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def register(
    client: MlflowClient, name: str, model_uri: str, run_id: str | None, tags: dict[str, str], description: str
) -> ModelVersion:
    """Register `model_uri` as a version with `tags`; `candidate` moves only when the gate passes it
    (`point_candidate`).

    With a run id this is idempotent: a version already registered from that run is reused (its tags
    rewritten, any failure mark of an earlier attempt cleared) instead of a second version being made.
    """
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Vetted search and recommendation model")
    version = version_for_run(client, name, run_id)
    if version is None:
        return client.create_model_version(
            name=name, source=model_uri, run_id=run_id, tags=tags, description=description
        )
    log.info("%s v%s is already registered from run %s: reusing it", name, version.version, run_id)
    with failure_guard(client, name, str(version.version), "register"):
        clear_failure(client, name, str(version.version))
        set_tags(client, name, str(version.version), tags)
        client.update_model_version(name, str(version.version), description=description)
    return client.get_model_version(name, str(version.version))


# `candidate` names the newest version the gate let through (passed, waiting for a reviewer, or approved): the
# one to look at next. A version the gate or a reviewer turned down, or that failed a stage, never holds it.
CANDIDATE_STATUSES = ("passed", "pending_approval", "approved")


def point_candidate(client: MlflowClient, name: str, version: str, status: str | None) -> None:
    """After the gate or a review recorded `status` on the version: give it `candidate`, or take it away."""
    if status in CANDIDATE_STATUSES:
        client.set_registered_model_alias(name, CANDIDATE, str(version))
        return
    holder = alias_version(client, name, CANDIDATE)
    if holder is not None and str(holder.version) == str(version):
        client.delete_registered_model_alias(name, CANDIDATE)


def set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _aliases(client: MlflowClient, name: str) -> dict[str, str | None]:
    """Where `champion` and `previous` point now (None: unset)."""
    out: dict[str, str | None] = {}
    for alias in (CHAMPION, PREVIOUS):
        mv = alias_version(client, name, alias)
        out[alias] = None if mv is None else str(mv.version)
    return out


def _point(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    if version is None:
        try:
            client.delete_registered_model_alias(name, alias)
        except MlflowException:  # already unset
            pass
    else:
        client.set_registered_model_alias(name, alias, version)


def clear_failure(client: MlflowClient, name: str, version: str) -> None:
    """Drop an earlier attempt's failure mark (a retried stage that now succeeds decides afresh)."""
    tags = client.get_model_version(name, version).tags
    for key in (FAILED_AT, FAILURE_REASON):
        if key in tags:
            client.delete_model_version_tag(name, version, key)


def retitle(client: MlflowClient, name: str, version: str, status: str, detail: str = "") -> str:
    """Make the description's first line say the version's status now (`ml.registry.card.headline`).

    The registry's version list shows that line beside MLflow's green "registered" check, which no client can
    change: a version that fails after the gate wrote its card, or that a reviewer decides on, must not keep a
    first line saying it passed. A first line that is a headline is replaced, any other first line is kept
    below the new one; the result still fits the registry's description limit. Returns the new description."""
    from ml.registry.card import fit_description, headline, is_headline

    description = client.get_model_version(name, str(version)).description or ""
    first, newline, rest = description.partition("\n")
    body = (rest if newline else "") if is_headline(first) else description
    title = headline(status, name, str(version)) + (f" ({detail})" if detail else " (model card)")
    updated = fit_description(f"{title}\n{body}" if body else f"{title}\n")
    client.update_model_version(name, str(version), description=updated)
    return updated


def mark_failed(
    client: MlflowClient,
    name: str,
    version: str,
    stage: str,
    reason: str,
    aliases_before: dict[str, str | None] | None = None,
    settings: Settings | None = None,
) -> None:
    """Tag the version `gate.status=failed` (with the stage and the reason) and make sure it is not champion.

    `aliases_before` (champion and previous as they were when the failing stage began) is restored if
    that stage moved `champion` to this version; without it, or if the version was champion already,
    `champion` goes back to `previous` (or is removed when there is none). With `settings`, taking
    `champion` away is written to the audit trail as a rollback."""
    version = str(version)
    set_tags(client, name, version, {"gate.status": "failed", FAILED_AT: stage, FAILURE_REASON: reason[:500]})
    point_candidate(client, name, version, "failed")
    try:
        retitle(client, name, version, "failed", f"failed at {stage}")
    except MlflowException:  # the tags hold the decision; taking `champion` away below matters more than the title
        log.exception("could not retitle %s v%s's description after it failed at %s", name, version, stage)
    now = _aliases(client, name)
    if now[PREVIOUS] == version:
        _point(client, name, PREVIOUS, None)  # a failed version is no rollback target
        now[PREVIOUS] = None
    if now[CHAMPION] != version:
        return
    client.set_model_version_tag(
        name, version, "rolled_back", f"{datetime.now(UTC).isoformat(timespec='seconds')} by vetted: failed at {stage}"
    )
    if aliases_before is not None and aliases_before.get(CHAMPION) != version:
        # the failing stage made it champion: put both aliases back as they were
        _point(client, name, CHAMPION, aliases_before.get(CHAMPION))
        _point(client, name, PREVIOUS, aliases_before.get(PREVIOUS))
    else:
        fallback = now[PREVIOUS] if now[PREVIOUS] != version else None
        _point(client, name, CHAMPION, fallback)
        if fallback is not None:
            _point(client, name, PREVIOUS, None)  # it is champion again; nothing older is recorded
    champion = _aliases(client, name)[CHAMPION]
    log.warning("%s v%s failed at %s and is not champion (champion now %s): %s", name, version, stage, champion, reason)
    if settings is not None:
        from ml.registry.audit import append_event

        append_event(
            settings, "rollback", name, champion, "vetted", f"from v{version}, which failed at {stage}: {reason}"
        )


@contextmanager
def failure_guard(
    client: MlflowClient, name: str, version: str, stage: str, settings: Settings | None = None
) -> Iterator[None]:
    """Run a stage's work on an existing version; if it raises, mark the version failed, then re-raise.

    Catches BaseException too: a task that Airflow terminates (SIGTERM) still records why."""
    before = _aliases(client, name)
    try:
        yield
    except BaseException as err:
        try:
            mark_failed(
                client, name, version, stage, f"{type(err).__name__}: {err}", aliases_before=before, settings=settings
            )
        except Exception:  # the registry itself is down: the original error matters more
            log.exception("could not mark %s v%s failed after %s raised", name, version, stage)
        raise


def require_promotable(client: MlflowClient, name: str, version: str, action: str = "promoted") -> ModelVersion:
    """The version, if its recorded gate status lets it hold `champion` (or `previous`); else PromotionRefused.

    The house rule has no override: only a version the gate passed or a reviewer approved may serve shoppers,
    whether it gets there by promotion or by rollback."""
    mv = client.get_model_version(name, str(version))
    status = mv.tags.get("gate.status")
    if status not in PROMOTABLE:
        raise PromotionRefused(f"{name} v{version} has gate.status={status!r}; only {PROMOTABLE} may be {action}")
    return mv


def is_promotable(mv: ModelVersion | None) -> bool:
    return mv is not None and mv.tags.get("gate.status") in PROMOTABLE


def promote(client: MlflowClient, name: str, version: str, actor: str = "vetted") -> dict[str, str | None]:
    """Move `champion` to this version if, and only if, its recorded gate status allows it.

    The version it replaces gets `previous` if it may still hold `champion` (a rollback target); otherwise
    `previous` stays where it was. Returns {"champion": new, "previous": old or None}.
    """
    require_promotable(client, name, version)
    old = alias_version(client, name, CHAMPION)
    if old is not None and str(old.version) == str(version):
        return {"champion": str(version), "previous": None}
    previous = str(old.version) if old is not None and is_promotable(old) else None
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS, previous)
    elif old is not None:
        log.warning(
            "%s v%s (champion until now) has gate.status=%r: it does not become previous",
            name,
            old.version,
            old.tags.get("gate.status"),
        )
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promoted_at", datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_model_version_tag(name, str(version), "promoted_by", actor)
    log.info("promoted %s v%s to champion (previous: %s)", name, version, previous)
    return {"champion": str(version), "previous": previous}


def recommender_relpath(spec: dict, where: str) -> str:
    """The recommender folder's path inside a logged model, as its MLmodel (`spec`, read from `where`) records it."""
    try:
        return str(spec["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"])
    except (KeyError, TypeError):
        raise ValueError(
            f"{where} has no python_function artifact {ARTIFACT_KEY!r}; was it logged with "
            "ml.registry.registration.log_model?"
        ) from None


def recommender_artifact_uri(client: MlflowClient, name: str, version: str, scratch: Path) -> str:
    """The artifact URI of a version's recommender folder, read from its MLmodel file.

    MLflow 3 stores a logged model's artifacts under `models:/m-<id>`; the folder keeps the name it was
    logged from, which the MLmodel file records.
    """
    import yaml

    root = client.get_model_version_download_uri(name, version).rstrip("/")
    mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=str(scratch)))
    relative = recommender_relpath(yaml.safe_load(mlmodel.read_text()), f"{name} v{version}'s MLmodel ({root}/MLmodel)")
    return f"{root}/{relative}"


def download_recommender(client: MlflowClient, name: str, version: str, scratch: Path) -> Path:
    """Download a version's recommender folder into `scratch`; returns its local path."""
    uri = recommender_artifact_uri(client, name, version, scratch)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch / "model")))


def download_verified(client: MlflowClient, name: str, version: str, scratch: Path) -> Path:
    """Download a version's recommender folder and check it against the digests recorded at registration.

    Raises IntegrityError (ml.registry.integrity) on any changed, missing or extra file, or when no digests
    were recorded; returns the verified folder."""
    from ml.registry.integrity import verify_folder

    folder = download_recommender(client, name, version, scratch)
    verify_folder(folder, client.get_model_version(name, str(version)).tags, what=f"{name} v{version}")
    return folder

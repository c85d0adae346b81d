"""The Feast store of a Vetted home: configuration per profile, apply, materialize, reads.

Local profile: SQLite online store and registry under `<home>/feast`, parquet offline store.
Prod profile: Redis online store (`VETTED_REDIS_URL`), the registry on PostgreSQL (`VETTED_POSTGRES_DSN`,
Feast's `sql` registry), the parquet offline store on the home (a volume every worker shares).

Feast and pandas are imported inside the functions that need them: `Settings` validates the prod URLs
with the parsers below, and checking a setting should not cost the seconds Feast takes to import.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

from ml.config import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, RepoConfig

    from ml.config import Settings

log = logging.getLogger(__name__)

REDIS_SCHEMES = {"redis": False, "rediss": True}  # scheme -> TLS
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
DEFAULT_REDIS_PORT = 6379


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<a URL that does not parse>"
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}").geturl()


def _split(url: str, where: str) -> SplitResult:
    try:
        return urlsplit(url.strip())
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def redis_connection_string(url: str) -> str:
    """`redis://[[user]:password@]host[:port][/db]` (or `rediss://`) as Feast's Redis `connection_string`.

    Feast does not take URLs: it wants `host:port,username=U,password=PW,db=N,ssl=true`, splits that on
    commas and JSON-decodes each value. So a credential with a comma, or one JSON would turn into something
    else (`true`, `null`, `1.5`), cannot be passed through and is refused here with the reason, instead of
    failing later as a Redis authentication error.
    """
    where = f"VETTED_REDIS_URL={redact(url)!r}"
    parts = _split(url, where)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(f"{where}: expected redis://[:password@]host[:port][/db] or rediss://... (TLS)")
    try:
        port = parts.port or DEFAULT_REDIS_PORT
    except ValueError as err:
        raise ConfigError(f"{where}: the port is not a number in 1..65535 ({err})") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"{where}: no host name")
    if ":" in host:
        raise ConfigError(f"{where}: IPv6 addresses do not fit Feast's host:port format; use a host name")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: options after '?' or '#' are not supported; put the db number in the path")
    db = parts.path.strip("/") or "0"
    if not (db.isascii() and db.isdigit()):
        raise ConfigError(f"{where}: the path must be a database number (e.g. /1), got {parts.path!r}")
    username = unquote(parts.username) if parts.username else ""
    password = unquote(parts.password) if parts.password else ""
    if username and not password:
        raise ConfigError(f"{where}: a user name without a password; write redis://:PASSWORD@host for a "
                          "password alone or redis://USER:PASSWORD@host")
    fields = [f"{host}:{port}"]
    for name, value in (("username", username), ("password", password)):
        if value:
            _check_credential(where, name, value)
            fields.append(f"{name}={value}")
    fields.append(f"db={int(db)}")
    if REDIS_SCHEMES[parts.scheme]:
        fields.append("ssl=true")
    return ",".join(fields)


def _check_credential(where: str, name: str, value: str) -> None:
    """Refuse a credential that Feast's connection-string parser would split or change."""
    if "," in value:
        raise ConfigError(f"{where}: the {name} contains a comma, which Feast's Redis connection string cannot "
                          "carry; choose one without commas (e.g. hex)")
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return  # stays the string it is
    if not (isinstance(decoded, int) and not isinstance(decoded, bool) and str(decoded) == value):
        raise ConfigError(f"{where}: Feast JSON-decodes the {name}, which would turn it into "
                          f"{type(decoded).__name__} {decoded!r}; choose another {name} (e.g. hex)")


def sql_registry_url(dsn: str) -> str:
    """`postgresql://user[:pw]@host[:port]/db` as the SQLAlchemy URL of Feast's `sql` registry (psycopg 3)."""
    where = f"VETTED_POSTGRES_DSN={redact(dsn)!r}"
    parts = _split(dsn, where)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ConfigError(f"{where}: expected postgresql://user[:password]@host[:port]/database")
    if not parts.path.strip("/"):
        raise ConfigError(f"{where}: no database name; add it as the path (…@host:5432/vetted)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as err:
        raise ConfigError(f"{where}: the port is not a number in 1..65535 ({err})") from None
    return parts._replace(scheme="postgresql+psycopg").geturl()


def repo_config(feast_dir: Path, profile: str = "local", project: str = "vetted", redis_url: str = "",
                postgres_dsn: str = "") -> RepoConfig:
    from feast import RepoConfig

    feast_dir.mkdir(parents=True, exist_ok=True)
    registry: dict[str, object] | str
    if profile == "prod":
        if not redis_url or not postgres_dsn:
            raise ConfigError("the prod profile needs VETTED_REDIS_URL and VETTED_POSTGRES_DSN for Feast")
        online = {"type": "redis", "connection_string": redis_connection_string(redis_url)}
        registry = {"registry_type": "sql", "path": sql_registry_url(postgres_dsn), "cache_ttl_seconds": 60,
                    "sqlalchemy_config_kwargs": {"pool_pre_ping": True}}
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online.db")}
        registry = str(feast_dir / "registry.db")
    # the online store keeps one row per entity: materializing only the newest values is the same result
    # for a fraction of the writes (every shopper has one row per interaction offline)
    return RepoConfig(project=project, provider="local", registry=registry, online_store=online,
                      offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=feast_dir,
                      materialization={"pull_latest_features": True})


def repo_config_for(settings: Settings) -> RepoConfig:
    """The Feast configuration of a home's profile and project."""
    return repo_config(settings.feast_dir, settings.profile, project=settings.feast_project,
                       redis_url=settings.redis_url, postgres_dsn=settings.postgres_dsn)


def open_store(config: RepoConfig) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(config=config)


def apply_definitions(store: FeatureStore, data_dir: Path) -> list[str]:
    """`feast apply` in code: register every entity, view and service; returns their names."""
    from feature_repo.definitions import build

    objects = build(data_dir)
    store.apply(list(objects.values()))
    return sorted(objects)


def materialize(store: FeatureStore, end: datetime) -> None:
    """Load the newest feature values up to `end` into the online store (incremental after the first)."""
    store.materialize_incremental(end_date=end)


def historical_features(store: FeatureStore, entity_df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Point-in-time join: each row gets the feature values as they were at its `event_timestamp`."""
    return store.get_historical_features(entity_df=entity_df, features=features).to_df()


def online_features(store: FeatureStore, user_ids: list[str], features: list[str]) -> dict[str, list]:
    return store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in user_ids]).to_dict()


def rebuild_online(store: FeatureStore, data_dir: Path, end: datetime) -> None:
    """Drop and refill this project's online rows from the feature files (after deletions: nothing stale survives).

    Only the online store is cleared. `FeatureStore.teardown()` would also delete every project in the
    registry, and in prod the registry is a PostgreSQL database that other projects may share.
    """
    apply_definitions(store, data_dir)
    views, entities = store.list_feature_views(), store.list_entities()
    provider = store._get_provider()  # Feast has no public "clear the online store" call
    provider.teardown_infra(store.project, views, entities)
    # recreate what teardown dropped (the SQLite tables; Redis keeps no schema)
    provider.update_infra(store.project, tables_to_delete=[], tables_to_keep=views, entities_to_delete=[],
                          entities_to_keep=entities, partial=False)
    store.materialize(start_date=datetime(1970, 1, 2, tzinfo=end.tzinfo), end_date=end)

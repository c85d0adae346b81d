"""The prod profile's stores, isolated per test: a fresh PostgreSQL database and a Redis namespace.

Each test gets databases it creates and drops itself (`vetted_test_<random>`, dropped WITH (FORCE) so a
connection left open by MLflow or Feast cannot keep them alive) and a Feast project of its own in a spare
Redis db; Feast suffixes every online-store key with the project name, so the keys the test made are
exactly those ending in it, and they are deleted afterwards. Servers default to the ones on this machine;
VETTED_TEST_POSTGRES / VETTED_TEST_REDIS point elsewhere. When a server does not answer, the tests skip and
say which one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("VETTED_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("VETTED_TEST_REDIS", "redis://127.0.0.1:6379")
SPARE_REDIS_DBS = range(15, 0, -1)  # db 0 is everyone's default; take the highest empty one


def _dsn(database: str) -> str:
    return urlsplit(POSTGRES)._replace(path=f"/{database}").geturl()


def _admin():
    import psycopg

    try:
        return psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(
            f"PostgreSQL at {POSTGRES} is not reachable ({' '.join(str(err).split())[:200]}); "
            "the services tests need it"
        )


@pytest.fixture
def postgres_db() -> Iterator[Callable[[str], str]]:
    """A factory of fresh databases: `make("feast")` -> DSN of `vetted_test_<random>_feast`, dropped after."""
    from psycopg import sql

    admin = _admin()
    prefix = f"vetted_test_{secrets.token_hex(4)}"
    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"{prefix}_{purpose}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return _dsn(name)

    try:
        yield make
    finally:
        for name in made:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@dataclass(frozen=True)
class RedisSpace:
    url: str  # VETTED_REDIS_URL for the test: the spare db in the path
    db: int
    project: str  # the Feast project: every key the test makes ends with it

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def keys(self) -> list[bytes]:
        return list(self.client().scan_iter(match=f"*{self.project}".encode(), count=1000))


@pytest.fixture
def redis_space() -> Iterator[RedisSpace]:
    import redis

    base = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        base.ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis at {REDIS} is not reachable ({err}); the services tests need it")
    db = next((n for n in SPARE_REDIS_DBS if redis.Redis.from_url(_redis_db(n)).dbsize() == 0), SPARE_REDIS_DBS[0])
    space = RedisSpace(url=_redis_db(db), db=db, project=f"vetted_test_{secrets.token_hex(4)}")
    try:
        yield space
    finally:
        client = space.client()
        for key in space.keys():
            client.delete(key)


def _redis_db(n: int) -> str:
    return urlsplit(REDIS)._replace(path=f"/{n}").geturl()


@pytest.fixture
def prod_env(tmp_path, monkeypatch, postgres_db, redis_space) -> dict[str, str]:
    """The prod profile's environment for one test: its own databases, Redis namespace and home."""
    env = {
        "VETTED_PROFILE": "prod",
        "VETTED_HOME": str(tmp_path / "home"),  # stands in for the shared volume
        "VETTED_POSTGRES_DSN": postgres_db("feast"),
        "MLFLOW_TRACKING_URI": postgres_db("mlflow"),
        "VETTED_REDIS_URL": redis_space.url,
        "VETTED_FEAST_PROJECT": redis_space.project,
        "VETTED_PSEUDONYM_KEY": secrets.token_hex(32),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("VETTED_DEMO", "VETTED_ARTIFACT_ROOT", "VETTED_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def lenient_policy(tmp_path) -> str:
    """The default policy with the quality bar at 0 and fairness/MIA as warnings.

    A 6-step model on 400 shoppers is not the point of these tests: where the stores live is.
    """
    from ml.gate.policy import load_policy

    policy = yaml.safe_load((ROOT / "ml" / "gate" / "default_policy.yaml").read_text())
    policy["name"] = "lenient"
    for check in policy["checks"]:
        if check["name"] == "quality_vs_baseline":
            check.pop("reference", None), check.pop("factor", None), check.pop("offset", None)
            check["threshold"] = 0.0
        if check["metric"].startswith(("fairness.", "privacy.mia", "search.", "champion.search")):
            check["blocking"] = False
    path = tmp_path / "lenient.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    load_policy(path)
    return str(path)

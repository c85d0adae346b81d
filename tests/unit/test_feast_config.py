"""VETTED_REDIS_URL and VETTED_POSTGRES_DSN as Feast takes them; bad URLs refused with the reason."""

import pytest

from ml.config import ConfigError
from ml.features.store import repo_config
from ml.store_urls import redact, redis_connection_string, sql_registry_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6379", "127.0.0.1:6379,db=0"),
        ("redis://redis", "redis:6379,db=0"),
        ("redis://:s3cret@redis:6380/1", "redis:6380,password=s3cret,db=1"),
        ("redis://app:s3cret@redis:6379/2/", "redis:6379,username=app,password=s3cret,db=2"),
        ("rediss://:s3cret@cache.example.com:6380/0", "cache.example.com:6380,password=s3cret,db=0,ssl=true"),
        ("redis://:p%40ss%3Dw0rd@redis/3", "redis:6379,password=p@ss=w0rd,db=3"),  # percent-decoded
        (
            "redis://:123456@redis/1",
            "redis:6379,password=123456,db=1",
        ),  # Feast decodes it to 123456; redis sends "123456"
    ],
)
def test_redis_urls_become_feast_connection_strings(url, expected):
    assert redis_connection_string(url) == expected


def test_feast_reads_the_connection_string_back_as_redis_py_arguments():
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(
        redis_connection_string("rediss://app:p%40ss=w0rd@cache:6380/4")
    )
    assert nodes == [{"host": "cache", "port": "6380"}]
    assert params == {"username": "app", "password": "p@ss=w0rd", "db": 4, "ssl": True}


@pytest.mark.parametrize(
    "url, match",
    [
        ("", "expected redis://"),
        ("http://redis:6379", "expected redis://"),
        ("unix:///var/run/redis.sock", "expected redis://"),
        ("redis://", "no host name"),
        ("redis://redis:notaport/1", "port is not a number"),
        ("redis://redis:70000", "port is not a number"),
        ("redis://redis/one", "database number"),
        ("redis://redis/1?ssl_cert_reqs=none", "options after"),
        ("redis://[::1]:6379", "IPv6"),
        ("redis://app@redis", "user name without a password"),
        ("redis://:a,b@redis", "comma"),
        ("redis://:true@redis", "bool"),
        ("redis://:null@redis", "NoneType"),
        ("redis://:1.5@redis", "float"),
    ],
)
def test_bad_redis_urls_say_what_is_wrong(url, match):
    with pytest.raises(ConfigError, match=match):
        redis_connection_string(url)


def test_errors_never_show_the_password():
    with pytest.raises(ConfigError) as err:
        redis_connection_string("redis://:topsecret@redis/x")
    assert "topsecret" not in str(err.value) and "***" in str(err.value)
    assert redact("postgresql://vetted:topsecret@db:5432/vetted") == "postgresql://vetted:***@db:5432/vetted"
    assert redact("redis://redis:6379/1") == "redis://redis:6379/1"


@pytest.mark.parametrize(
    "dsn, expected",
    [
        ("postgresql://postgres@127.0.0.1:5432/vetted", "postgresql+psycopg://postgres@127.0.0.1:5432/vetted"),
        ("postgres://u:p%2Fw@db/vetted", "postgresql+psycopg://u:p%2Fw@db/vetted"),
        ("postgresql+psycopg2://u:p@db:5433/x?sslmode=require", "postgresql+psycopg://u:p@db:5433/x?sslmode=require"),
    ],
)
def test_postgres_dsn_becomes_the_sql_registry_url(dsn, expected):
    assert sql_registry_url(dsn) == expected


@pytest.mark.parametrize(
    "dsn, match",
    [
        ("mysql://root@db/vetted", "expected postgresql://"),
        ("postgresql://postgres@db:5432", "no database name"),
        ("postgresql://postgres@db:port/x", "port is not a number"),
    ],
)
def test_bad_postgres_dsns_say_what_is_wrong(dsn, match):
    with pytest.raises(ConfigError, match=match):
        sql_registry_url(dsn)


def test_prod_repo_config_uses_redis_and_the_sql_registry(tmp_path):
    cfg = repo_config(
        tmp_path,
        "prod",
        project="shop_a",
        redis_url="redis://:pw@redis:6379/1",
        postgres_dsn="postgresql://vetted:pw@postgres:5432/vetted",
    )
    assert cfg.project == "shop_a"
    assert cfg.online_store.type == "redis"
    assert cfg.online_store.connection_string == "redis:6379,password=pw,db=1"
    assert cfg.registry.registry_type == "sql"
    assert cfg.registry.path == "postgresql+psycopg://vetted:pw@postgres:5432/vetted"
    assert cfg.offline_store.type == "file"


def test_local_repo_config_stays_on_sqlite(tmp_path):
    cfg = repo_config(tmp_path / "feast")
    assert cfg.project == "vetted" and cfg.online_store.type == "sqlite"
    assert cfg.online_store.path == str(tmp_path / "feast" / "online.db")
    assert cfg.registry.path == str(tmp_path / "feast" / "registry.db")


def test_prod_repo_config_without_urls_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="VETTED_REDIS_URL and VETTED_POSTGRES_DSN"):
        repo_config(tmp_path, "prod", redis_url="redis://redis")

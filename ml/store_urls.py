"""The prod stores' URLs: Redis and PostgreSQL as Feast wants them, and any URL with its password hidden.

Beside the configuration (`Settings` checks the prod URLs with these parsers before any stage runs) and below the
Feast store that uses them, so neither imports the other.
"""

from __future__ import annotations

import json
from urllib.parse import SplitResult, unquote, urlsplit

from ml.errors import ConfigError

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
        raise ConfigError(
            f"{where}: a user name without a password; write redis://:PASSWORD@host for a "
            "password alone or redis://USER:PASSWORD@host"
        )
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
        raise ConfigError(
            f"{where}: the {name} contains a comma, which Feast's Redis connection string cannot "
            "carry; choose one without commas (e.g. hex)"
        )
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return  # stays the string it is
    if not (isinstance(decoded, int) and not isinstance(decoded, bool) and str(decoded) == value):
        raise ConfigError(
            f"{where}: Feast JSON-decodes the {name}, which would turn it into "
            f"{type(decoded).__name__} {decoded!r}; choose another {name} (e.g. hex)"
        )


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

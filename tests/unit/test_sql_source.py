"""The `sql` source on SQLite: tables or queries, the column map, the ingest date bounding the events read, chunked
reading, values kept as the contract reads them, and a password never shown. PostgreSQL: tests/services."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml.config import RunConfig
from ml.data import schema, shop, sql
from ml.data.sources import SourceError, SourceNotFoundError, read_source
from tests.contract_shop import shop_tables

ITEMS, EVENTS = shop_tables((1, 2, 3), unknown=99)
USERS = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "region": ["north", "south", None]})


def write_shop(url: str, events: pd.DataFrame = EVENTS, prefix: str = "") -> str:
    """The shop's tables in the database at `url` (item ids as integers, with a NULL among the events')."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ITEMS.to_sql(f"{prefix}items", conn, index=False, if_exists="replace")
        events.astype({"item_id": "Int64"}).to_sql(f"{prefix}events", conn, index=False, if_exists="replace")
        USERS.to_sql(f"{prefix}users", conn, index=False, if_exists="replace")
    engine.dispose()
    return url


def check_shop(url: str, options: str = "") -> None:
    """What every database must give: the tables, ids as the contract's text, the date bound, the quarantine."""
    raw = read_source("sql", options or None, url=url, ingest_date="2026-01-05")
    assert raw.name == "sql" and raw.counts() == {"items": 3, "users": 3, "events": 5, "privacy_requests": 0}
    assert raw.split_time == pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=4) * 0.9
    good, bad = schema.validate("events", raw.events, known_items={"1", "2", "3"})
    assert bad.empty and sorted(good["item_id"]) == ["1", "1", "2", "3", "3"]  # integers, not 1.0
    assert list(raw.users.columns) == ["user_id", "region"]
    later = read_source("sql", options or None, url=url, ingest_date="2026-02-01")
    good, bad = schema.validate("events", later.events, known_items={"1", "2", "3"})
    assert len(later.events) == 10 and list(bad["reason"]) == ["item_id not in catalog"]
    assert good.loc[good["event_type"] == "search", "item_id"].isna().all()  # the NULL stays missing


def test_tables_by_their_contract_names(tmp_path):
    check_shop(write_shop(f"sqlite:///{tmp_path / 'shop.db'}"))


def test_text_and_epoch_times_are_bounded_in_their_own_type(tmp_path):
    iso = EVENTS.assign(ts=EVENTS["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    check_shop(write_shop(f"sqlite:///{tmp_path / 'iso.db'}", iso))
    epoch = EVENTS.assign(ts=EVENTS["ts"].astype("int64") // 10**9)
    check_shop(write_shop(f"sqlite:///{tmp_path / 'epoch.db'}", epoch))


def test_an_event_without_a_time_is_read_for_the_quarantine(tmp_path):
    events = EVENTS.astype({"ts": object})
    events.loc[2, "ts"] = None
    url = write_shop(f"sqlite:///{tmp_path / 'null.db'}", events)
    raw = read_source("sql", None, url=url, ingest_date="2026-01-05")
    _, bad = schema.validate("events", raw.events)
    assert list(bad["reason"]) == ["ts is missing"]


def test_names_queries_and_a_column_map_come_from_the_options_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'named.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ITEMS.rename(columns={"item_id": "sku", "title": "name"}).assign(cost_price=1.0).to_sql(
            "products", conn, index=False
        )
        EVENTS.astype({"item_id": "Int64"}).rename(columns={"ts": "at"}).to_sql("log", conn, index=False)
        USERS.to_sql("users", conn, index=False)
    engine.dispose()
    options = tmp_path / "source.yaml"
    options.write_text(
        "tables: {items: products}\n"
        "queries: {events: \"SELECT event_id, user_id, item_id, event_type, query, at FROM log WHERE user_id <> 'x'\"}\n"
        "columns:\n  items: {sku: item_id, name: title}\n  events: {at: ts}\n"
    )
    check_shop(url, str(options))
    raw = read_source("sql", str(options), url=url, ingest_date="2026-01-05")
    assert "cost_price" not in raw.items.columns  # only the contract's columns are selected


def test_chunks_of_chunk_rows(tmp_path):
    url = write_shop(f"sqlite:///{tmp_path / 'chunks.db'}")
    options = tmp_path / "o.yaml"
    options.write_text("chunk_rows: 4\n")
    seen = []
    original = shop.contract_chunk
    try:
        shop.contract_chunk = lambda table, chunk, opts: (
            seen.append((table, len(chunk))) or original(table, chunk, opts)
        )
        raw = read_source("sql", str(options), url=url, ingest_date="2026-02-01")
    finally:
        shop.contract_chunk = original
    assert [n for t, n in seen if t == "events"] == [4, 4, 2] and len(raw.events) == 10


def test_errors_name_the_problem_and_never_the_password(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(SourceError, match="needs a url"):
        read_source("sql", None)
    with pytest.raises(SourceError, match="not a database URL"):
        read_source("sql", None, url="nosuchdb://u:hunter2@h/db")
    with pytest.raises(
        SourceError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db\?connect_timeout=2: OperationalError"
    ) as err:
        read_source("sql", None, url="postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2")
    assert "hunter2" not in str(err.value) and "hunter2" not in caplog.text
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    sa.create_engine(url).connect().close()
    with pytest.raises(SourceNotFoundError, match=r"has no table 'items'.*; expected a SQLAlchemy database URL"):
        read_source("sql", None, url=url)
    with pytest.raises(SourceNotFoundError, match="options file .* does not exist"):
        read_source("sql", str(tmp_path / "none.yaml"), url=url)
    write_shop(url, EVENTS.drop(columns=["event_type"]))
    with pytest.raises(SourceError, match=r"table events lacks column\(s\) \['event_type'\]"):
        read_source("sql", None, url=url)


def test_a_url_is_stored_masked_and_a_sql_run_needs_one():
    config = RunConfig(source="sql", url="postgresql://shop:hunter2@db.example/shop")
    assert config.to_dict()["url"] == "postgresql://shop:***@db.example/shop"
    assert config.url.endswith(":hunter2@db.example/shop")  # the live config keeps it for this process
    assert sql.redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    with pytest.raises(ValueError, match=r"source='sql' needs url="):
        RunConfig(source="sql")
    with pytest.raises(ValueError, match=r"source='files' needs path="):
        RunConfig(source="files")


def test_a_loaded_run_takes_the_masked_url_from_its_environment(tmp_path, monkeypatch):
    from ml.config import ConfigError, Settings
    from ml.pipeline.context import RunContext

    settings = Settings(home=tmp_path)
    ctx = RunContext.create(settings, RunConfig(source="sql", url="postgresql://shop:hunter2@db/shop"), name="r")
    assert "hunter2" not in (ctx.run_dir / "context.json").read_text()
    monkeypatch.setenv("VETTED_SOURCE_URL", "postgresql://shop:hunter2@db/shop")
    assert RunContext.load(ctx.run_dir).config.url == "postgresql://shop:hunter2@db/shop"
    monkeypatch.setenv("VETTED_SOURCE_URL", "postgresql://shop:hunter2@other/shop")
    with pytest.raises(ConfigError, match="not the source database the run was created with"):
        RunContext.load(ctx.run_dir)


def test_the_registry_is_the_one_list_of_sources(monkeypatch):
    from ml import cli, config
    from ml.data.sources import REGISTRY

    assert config.SOURCES == tuple(REGISTRY)
    parser = cli.argparse.ArgumentParser()
    cli._run_args(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "source")
    assert list(choices) == list(REGISTRY)
    args = parser.parse_args(["--source", "sql", "--url", "sqlite:///x.db"])
    assert cli.config_from_args(args).url == "sqlite:///x.db"
    monkeypatch.setenv("VETTED_SOURCE_URL", "sqlite:///env.db")
    assert cli.config_from_args(parser.parse_args(["--source", "sql"])).url == "sqlite:///env.db"
    assert cli.config_from_args(parser.parse_args(["--source", "synthetic"])).url == ""
    for name, row in REGISTRY.items():  # every adapter module has the registry's entry point
        module = __import__(row.adapter, fromlist=["read"])
        assert callable(module.read), name


def test_no_adapter_imports_the_registry():
    import ast

    root = Path(__file__).resolve().parents[2] / "ml" / "data"
    for module in root.glob("*.py"):
        if module.name == "sources.py":
            continue
        imported = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        assert "ml.data.sources" not in imported, module.name

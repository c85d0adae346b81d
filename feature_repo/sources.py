"""Feast sources: parquet files that `ml.features.build` writes from the lake, in one folder."""

from pathlib import Path

from feast import FileSource


def item_source(data_dir: Path) -> FileSource:
    return FileSource(
        name="item_source",
        path=str(Path(data_dir).resolve() / "items.parquet"),
        timestamp_field="event_timestamp",
        description="One row per item per build: public catalogue text and interaction counts",
    )


def user_event_source(data_dir: Path) -> FileSource:
    return FileSource(
        name="user_event_source",
        path=str(Path(data_dir).resolve() / "user_events.parquet"),
        timestamp_field="event_timestamp",
        description="One row per shopper interaction: the shopper's state right after it",
    )

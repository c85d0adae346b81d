"""Feast feature views: item text and popularity, a shopper's recent items, a shopper's activity."""

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Int64, String

from feature_repo.entities import item, user

# ttl 0 keeps features forever: a quiet shopper's last state is still their state
FOREVER = timedelta(days=0)


def item_features(source: FileSource) -> FeatureView:
    return FeatureView(
        name="item_features",
        entities=[item],
        ttl=FOREVER,
        schema=[
            Field(name="title", dtype=String),
            Field(name="brand", dtype=String),
            Field(name="category", dtype=String),
            Field(name="n_interactions", dtype=Int64),
        ],
        source=source,
        online=True,
        description="Item text and brand (public) and how often shoppers chose the item (analysis only)",
    )


def user_recent_items(source: FileSource) -> FeatureView:
    return FeatureView(
        name="user_recent_items",
        entities=[user],
        ttl=FOREVER,
        # item ids oldest first, joined by "\x1f" (ml.features.build.encode_history)
        schema=[Field(name="recent_items", dtype=String), Field(name="history_length", dtype=Int64)],
        source=source,
        online=True,
        description="The shopper's last N interacted items, oldest first, as of each interaction",
    )


def user_activity(source: FileSource) -> FeatureView:
    return FeatureView(
        name="user_activity",
        entities=[user],
        ttl=FOREVER,
        schema=[
            Field(name="n_interactions", dtype=Int64),
            Field(name="n_searches", dtype=Int64),
            Field(name="n_purchases", dtype=Int64),
        ],
        source=source,
        online=True,
        description="Cumulative activity counts of the shopper as of each interaction",
    )

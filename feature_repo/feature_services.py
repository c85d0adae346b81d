"""Feast feature services: what the recommender reads, in training and at serving."""

from feast import FeatureService, FeatureView


def recommender(recent_items: FeatureView, activity: FeatureView) -> FeatureService:
    return FeatureService(
        name="recommender",
        features=[recent_items, activity[["n_interactions"]]],
        description="Shopper features the recommender reads: recent items (the history tower's input), activity",
    )


def catalog(items: FeatureView) -> FeatureService:
    return FeatureService(name="catalog", features=[items], description="Item text for display and audits")

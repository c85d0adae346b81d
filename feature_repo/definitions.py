"""Every Feast object of the repository.

`build(data_dir)` is what the library applies (ml/features/store.py). For the `feast` CLI run in this
folder, the module-level objects below read their data folder from VETTED_FEATURE_DATA.
"""

import os
from pathlib import Path
from typing import Any

from feature_repo import feature_services, feature_views, sources
from feature_repo.entities import item, user


def build(data_dir: Path) -> dict[str, Any]:
    item_src, user_src = sources.item_source(data_dir), sources.user_event_source(data_dir)
    items = feature_views.item_features(item_src)
    recent = feature_views.user_recent_items(user_src)
    activity = feature_views.user_activity(user_src)
    return {
        "user": user,
        "item": item,
        "item_source": item_src,
        "user_event_source": user_src,
        "item_features": items,
        "user_recent_items": recent,
        "user_activity": activity,
        "recommender": feature_services.recommender(recent, activity),
        "catalog": feature_services.catalog(items),
    }


if os.environ.get("VETTED_FEATURE_DATA"):  # only when the feast CLI is pointed at real data
    globals().update(build(Path(os.environ["VETTED_FEATURE_DATA"])))

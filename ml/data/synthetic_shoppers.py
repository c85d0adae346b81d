"""The synthetic shop's shoppers: who they are (the knobs of how they shop are `ml.data.synthetic_behaviour`).

Each shopper has a gender (f/m/x, "x" = not stated), an age band and a region, 1-3 preferred categories and two
favourite brands. Age band and gender tilt WHICH categories a shopper prefers, never how predictable they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.data.synthetic_catalog import CATEGORIES

if TYPE_CHECKING:
    from ml.data.synthetic_behaviour import Behaviour
    from ml.data.synthetic_catalog import Catalog

GENDERS = ("f", "m", "x")
GENDER_SHARES = (0.45, 0.43, 0.12)  # x: not stated
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES = (0.18, 0.24, 0.22, 0.19, 0.17)
REGIONS = ("north", "south", "east", "west", "central")


def make_users(
    rng: np.random.Generator, n_users: int, cfg: Behaviour, catalog: Catalog
) -> tuple[pd.DataFrame, list[np.ndarray], np.ndarray]:
    n_cat = len(CATEGORIES)
    gender = rng.choice(len(GENDERS), size=n_users, p=GENDER_SHARES)
    age = rng.choice(len(AGE_BANDS), size=n_users, p=AGE_SHARES)
    region = rng.integers(0, len(REGIONS), n_users)
    # groups tilt which categories are preferred (mildly), not how predictable a shopper is
    age_tilt = rng.dirichlet(np.ones(n_cat), size=len(AGE_BANDS))
    gender_tilt = rng.dirichlet(np.ones(n_cat), size=len(GENDERS))
    brand_pop = np.bincount(catalog.brand, weights=catalog.popularity, minlength=cfg.n_brands)
    brand_pop = brand_pop / brand_pop.sum()
    uniform = 1.0 - cfg.age_tilt - cfg.gender_tilt
    cat_p = uniform / n_cat + cfg.age_tilt * age_tilt[age] + cfg.gender_tilt * gender_tilt[gender]  # rows sum to 1
    n_pref = rng.choice([1, 2, 3], size=n_users, p=[0.3, 0.45, 0.25])
    ranked = _sample_without_replacement(rng, cat_p)
    prefs = [ranked[u, : n_pref[u]] for u in range(n_users)]
    favourites = _sample_without_replacement(rng, np.broadcast_to(brand_pop, (n_users, cfg.n_brands)))[:, :2]
    users = pd.DataFrame(
        {
            "user_id": [f"shopper-{u:05d}" for u in range(n_users)],
            "gender": [GENDERS[g] for g in gender],
            "age_band": [AGE_BANDS[a] for a in age],
            "region": [REGIONS[r] for r in region],
        }
    )
    return users, prefs, favourites


def _sample_without_replacement(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Per row, all columns in a random order drawn without replacement with probabilities p (Gumbel top-k)."""
    keys = np.log(np.maximum(p, 1e-300)) + rng.gumbel(size=p.shape)
    return np.argsort(-keys, axis=1)

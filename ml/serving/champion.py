"""Loading a champion: one registered model version turned into the object requests are answered with.

`load_version` downloads the version's recommender folder (`ml.registry.registration.download_recommender`),
checks it against the SHA-256 digests recorded in the version's tags at registration
(`ml.registry.integrity.verify_folder`: a changed, missing or extra file, or a version without digests, is
refused like any other load failure; a file changed after the gate judged it is a model nobody vetted),
loads it (`Recommender.load`), and `build_champion` builds what serving reads: the history scorer
(`ml.serving.scorer`), the dense search index over `augmented_items()` (`ml.search.dense.DenseIndex`: the
exact model score, dot / temperature + item bias), the lexical side of search, the non-personalized order
and the re-ranking settings; then one warm-up query of each kind. The watcher (`ml.serving.watcher`) swaps
the result in.

Fair re-ranking settings come from the version's tags: `serving.rerank.min_tail_share` (default 0 = off),
`serving.rerank.window` (default 10), `serving.rerank.head_share` (default 0.5). Tail brands are the
brands outside the head set computed from the catalogue's item count per brand (public data, no shopper
events), with `ml.evaluation.fairness.brand_tiers`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from ml.evaluation.fairness import catalogue_tail
from ml.evaluation.rerank import RerankConfig
from ml.registry.integrity import verify_folder
from ml.registry.registration import PROMOTABLE, download_recommender
from ml.search.dense import DenseIndex
from ml.search.engine import SearchEngine
from ml.serving.runtime import one_openmp_thread
from ml.serving.scorer import Scorer, scorer_for
from ml.topk import top_k
from ml.training.recommender import Recommender

log = logging.getLogger(__name__)

TAG_MIN_TAIL_SHARE = "serving.rerank.min_tail_share"
TAG_WINDOW = "serving.rerank.window"
TAG_HEAD_SHARE = "serving.rerank.head_share"
DEFAULT_HEAD_SHARE = 0.5
FALLBACK_DEPTH = 1000  # items kept in the non-personalized order (enough for k=100 plus re-ranking room)


class ChampionLoadError(RuntimeError):
    """A model version could not be turned into a servable champion; the message says which and why."""


@dataclass(frozen=True)
class ServingRerank:
    """Re-ranking at serving: the evaluation's config and the tail brands it protects."""

    config: RerankConfig
    head_share: float
    tail_brands: frozenset[str]
    is_tail: Mapping[str, bool]  # item id -> its brand is in the tail

    @property
    def enabled(self) -> bool:
        return self.config.min_tail_share > 0


@dataclass(frozen=True)
class Champion:
    """One loaded model version, ready to answer; never mutated after the swap."""

    model_name: str
    version: str
    run_id: str | None
    tags: Mapping[str, str]
    recommender: Recommender
    search_engine: SearchEngine  # the lexical side of search and the fusion (ml.search.engine)
    dense: DenseIndex  # search's dense side: the exact top by the model's score (recommender.augmented_items())
    rerank: ServingRerank
    fallback_rows: np.ndarray  # item rows by the learned item bias, best first (non-personalized answers)
    loaded_at: datetime
    folder: Path
    titles: list[str] = field(default_factory=list)  # per item row, "" when missing (plain lists: fast lookups)
    brands: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    scorer: Scorer | None = None  # the history scores and their top-n (`ml.serving.scorer.scorer_for`)

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """[n, D] the query tower's vectors of search texts: the version's exported ONNX encoder (one core, with
        the query cache) when it has one and the service does not force torch, else the torch encoder
        (`Recommender.query_vectors`; which one: `query_encoder`)."""
        return self.recommender.query_vectors(list(queries))

    @property
    def query_encoder(self) -> str:
        """What encodes search queries: "onnx-int8", "onnx-fp32" or "torch"."""
        return self.recommender.query_runtime

    def search_rows(self, query_vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """[B, n] top item rows and exact scores (dot / temperature + bias) for each query vector, best first."""
        one_openmp_thread()
        found = self.dense.search(self.recommender.augmented_queries(query_vectors), n)
        return np.stack([rows for rows, _ in found]), np.stack([scores for _, scores in found])

    def history_vector(self, rows: list[int]) -> np.ndarray:
        """[1, D] history-tower vector of item rows (oldest first)."""
        return self._scorer.vectors([rows])

    @property
    def _scorer(self) -> Scorer:
        if self.scorer is None:
            raise ValueError(f"{self.model_name} v{self.version} was built without its scorer; use build_champion")
        return self.scorer

    def top_for_histories(self, histories: Sequence[Sequence[int]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The exact top-n item rows (best first) and full scores for each history of item rows (oldest
        first, at least one each); one first-pass product for the batch."""
        one_openmp_thread()
        return self._scorer.top_many(histories, n)

    def history_scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, n_items] the model's full score of every item, one row per history of item rows (oldest
        first, at least one each)."""
        one_openmp_thread()
        return self._scorer.scores(histories)


def _float_tag(tags: Mapping[str, str], key: str, default: float, low: float, high: float, where: str) -> float:
    raw = tags.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ChampionLoadError(
            f"{where}: tag {key}={raw!r} is not a number; set it to a value in [{low}, {high}]"
        ) from None
    if not low <= value <= high:
        raise ChampionLoadError(f"{where}: tag {key}={raw!r} is outside [{low}, {high}]")
    return value


def rerank_settings(tags: Mapping[str, str], item_ids: list[str], brands: list[str], where: str) -> ServingRerank:
    """Re-ranking config from the version's tags, and tail brands from the catalogue's items per brand."""
    share = _float_tag(tags, TAG_MIN_TAIL_SHARE, 0.0, 0.0, 1.0, where)
    window = _float_tag(tags, TAG_WINDOW, 10, 1, 10_000, where)
    if window != int(window):
        raise ChampionLoadError(f"{where}: tag {TAG_WINDOW}={tags.get(TAG_WINDOW)!r} is not a whole number")
    head_share = _float_tag(tags, TAG_HEAD_SHARE, DEFAULT_HEAD_SHARE, 1e-9, 1.0, where)
    item_brand = dict(zip(item_ids, brands, strict=True))
    is_tail = catalogue_tail(item_brand, head_share)
    tail = frozenset(item_brand[i] for i, t in is_tail.items() if t)
    return ServingRerank(RerankConfig(min_tail_share=share, window=int(window)), head_share, tail, is_tail)


def build_champion(
    recommender: Recommender,
    model_name: str,
    version: str,
    tags: Mapping[str, str],
    folder: Path,
    run_id: str | None = None,
) -> Champion:
    """Index, fallback order, re-ranking settings; then one warm-up query of each kind."""
    where = f"{model_name} v{version}"
    items = recommender.items
    titles, brands, categories = (
        [v if isinstance(v, str) else "" for v in items[c].tolist()] for c in ("title", "brand", "category")
    )
    rerank = rerank_settings(tags, recommender.item_ids, brands, where)
    depth = min(FALLBACK_DEPTH, len(recommender.item_ids))
    fallback = top_k(recommender.item_bias[None, :], depth)[0]
    champion = Champion(
        model_name=model_name,
        version=str(version),
        run_id=run_id,
        tags=dict(tags),
        recommender=recommender,
        dense=DenseIndex(recommender.augmented_items()),
        rerank=rerank,
        fallback_rows=fallback,
        loaded_at=datetime.now(UTC),
        folder=folder,
        titles=titles,
        brands=brands,
        categories=categories,
        scorer=scorer_for(recommender, where),
        search_engine=SearchEngine.for_items(items, recommender.settings.search),
    )
    warm_up(champion)
    return champion


def warm_up(champion: Champion) -> None:
    """One history query and one text query, so the first shopper does not pay for lazy initialisation."""
    rec = champion.recommender
    rows, _ = champion.search_rows(champion.history_vector(list(range(min(3, len(rec.item_ids))))), 10)
    if rows.shape[1] == 0:
        raise ChampionLoadError(f"{champion.model_name} v{champion.version}: the warm-up search returned nothing")
    champion.search_rows(champion.query_vectors(["warm up"]), 10)


def load_version(
    client: MlflowClient,
    name: str,
    version: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
    query_encoder: str = "onnx",
) -> Champion:
    """Download, verify (IntegrityError on a file that differs from the digests in `tags`), load, index and
    warm up one version. The download folder lives as long as the champion. `query_encoder` "torch" serves
    search queries with the torch encoder even when the version has an exported one (`Settings.query_encoder`)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"vetted-serving-v{version}-"))
    try:
        try:
            folder = download_recommender(client, name, version, scratch)
        except ValueError as err:  # the version's MLmodel names no recommender folder
            raise ChampionLoadError(str(err)) from None
        verify_folder(folder, tags, what=f"{name} v{version}")
        recommender = Recommender.load(folder, query_encoder=query_encoder)
        log.info("%s v%s: search queries encoded by %s", name, version, recommender.query_runtime)
        return build_champion(recommender, name, version, tags, scratch, run_id=run_id)
    except Exception:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def refuse_unvetted(version: str, tags: Mapping[str, str]) -> None:
    """Only a version the gate passed or a reviewer approved is served as champion, whoever moved the alias:
    promotion and rollback refuse others (ml.registry), and serving does not trust that alone."""
    status = tags.get("gate.status")
    if status not in PROMOTABLE:
        raise ChampionLoadError(f"v{version} has gate.status={status!r}, not one of {PROMOTABLE}: it is not served")

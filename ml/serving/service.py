"""What the service's endpoints share (`Service`, built once by `ml.serving.app.create_app`): the champion to
answer with, the shopper's history and opt-out, the answer's results and impression, and the bodies of
/healthz and /version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from ml.config import Settings
from ml.privacy.pseudonymize import Pseudonymizer
from ml.serving import ranking
from ml.serving.batching import RecommendationBatcher
from ml.serving.champion import Champion
from ml.serving.feedback import ImpressionLog, impression_record, new_impression_id
from ml.serving.history import HistoryReader
from ml.serving.optouts import OptOutList
from ml.serving.schemas import Diagnostics, GateSummary, HealthResponse, RerankSummary, VersionResponse
from ml.serving.search_batching import SearchBatcher
from ml.serving.watcher import ChampionWatcher

NO_CHAMPION = (
    "no champion model is loaded yet: promote a version to the 'champion' alias (vetted run / vetted demo); "
    "GET /version (with the API key) shows the last loading error"
)


@dataclass
class Service:
    """What the endpoints share; built once by `create_app`."""

    settings: Settings
    watcher: ChampionWatcher
    history: HistoryReader
    optouts: OptOutList
    pseudonymizer: Pseudonymizer
    impressions: ImpressionLog
    options: ranking.RankingOptions
    batcher: RecommendationBatcher
    searcher: SearchBatcher

    def champion(self) -> Champion:
        champion = self.watcher.current()
        if champion is None:
            raise HTTPException(status_code=503, detail=NO_CHAMPION)
        return champion

    def results(self, champion: Champion, ranked: ranking.Ranked) -> list[dict[str, Any]]:
        """The `Result` fields of each answer, as plain values (building pydantic models per result costs
        the event loop; the response model validates them where one is built, as for /search)."""
        ids, titles, brands = champion.recommender.item_ids, champion.titles, champion.brands
        return [
            {"item_id": ids[r], "title": titles[r], "brand": brands[r], "score": s, "explanation": e}
            for r, s, e in zip(ranked.rows, ranked.scores, ranked.explanations, strict=True)
        ]

    def answered(
        self, kind: str, champion: Champion, pseudonym: str | None, opted_out: bool, ranked: ranking.Ranked
    ) -> tuple[str, list[Any]]:
        """The results to send, and the impression logged for them (never for an opted-out shopper)."""
        results = self.results(champion, ranked)
        impression_id = new_impression_id()
        if not opted_out:
            item_ids = [r["item_id"] for r in results]
            record = impression_record(
                impression_id,
                datetime.now(UTC),
                pseudonym,
                kind,
                item_ids,
                ranked.personalized,
                champion.model_name,
                champion.version,
            )
            self.impressions.append(record)
        return impression_id, results

    def health(self) -> HealthResponse:
        """/healthz: ok, degraded (a fallback version, or an error loading, reading features or opt-outs) or
        unavailable (no model: the route answers 503)."""
        champion = self.watcher.current()
        status = self.watcher.status()
        troubled = (
            status.fallback_for is not None
            or status.last_error is not None
            or self.history.last_error is not None
            or self.optouts.last_error is not None
        )
        return HealthResponse(
            status="unavailable" if champion is None else "degraded" if troubled else "ok",
            model_name=self.settings.model_name,
            model_version=champion.version if champion else None,
            loaded_at=champion.loaded_at if champion else None,
            last_checked=status.last_checked,
            poll_seconds=self.watcher.poll_seconds,
            scoring_batches=self.batcher.batches,
            scored_requests=self.batcher.jobs_done,
        )

    def version(self) -> VersionResponse:
        """/version: the served version, its gate decision, re-ranking and the last errors (503 without a model)."""
        champion = self.watcher.current()
        status = self.watcher.status()
        if champion is None:
            raise HTTPException(status_code=503, detail=f"{NO_CHAMPION}. Last error: {status.last_error}")
        tags = champion.tags
        rerank = champion.rerank
        return VersionResponse(
            model_name=champion.model_name,
            version=champion.version,
            alias=self.watcher.alias,
            fallback_for=status.fallback_for,
            run_id=champion.run_id,
            loaded_at=champion.loaded_at,
            query_encoder=champion.query_encoder,
            gate=GateSummary(
                status=tags.get("gate.status"),
                checks={k: v for k, v in sorted(tags.items()) if k.startswith("gate.") and k != "gate.status"},
            ),
            rerank=RerankSummary(
                min_tail_share=rerank.config.min_tail_share,
                window=rerank.config.window,
                head_share=rerank.head_share,
                n_tail_brands=len(rerank.tail_brands),
            ),
            diagnostics=Diagnostics(
                last_checked=status.last_checked,
                last_error=status.last_error,
                failed_versions=status.failed_versions,
                feature_store_error=self.history.last_error,
                privacy_requests_error=self.optouts.last_error,
            ),
        )

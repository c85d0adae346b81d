"""Request and response models of the HTTP API (they are also its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_K = 100
DEFAULT_K = 10
MAX_QUERY_CHARS = 512
MAX_USER_ID_CHARS = 256
# the cap on a request body (413 above it, see ml.serving.limits): the longest valid /search body, every
# character of query and user id written as a 12-byte JSON escape pair, is about 9 KiB
MAX_BODY_BYTES = 16 * 1024
# /docs' example values: a shopper of the demo's synthetic data (`make demo`: seed 7, 20,000 shoppers) with
# purchases and searches and no privacy request, and one of its most searched queries
DEMO_SHOPPER = "shopper-00001"
DEMO_QUERY = "espresso machine"


class Result(BaseModel):
    item_id: str
    title: str
    brand: str
    score: float = Field(description="The model's score (dot product / temperature + item bias); higher is better")
    explanation: str = Field(description="Why this item: the matching history item, or the query words found")


class RecommendationResponse(BaseModel):
    impression_id: str = Field(description="Identifies this answer in the impression log (for click attribution)")
    model_name: str
    model_version: str
    personalized: bool = Field(description="False: no usable history, or the shopper opted out (popular items)")
    results: list[Result]


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": DEMO_QUERY, "k": DEFAULT_K, "user_id": DEMO_SHOPPER}]}
    )

    query: str = Field(
        min_length=1, max_length=MAX_QUERY_CHARS, description="What the shopper typed", examples=[DEMO_QUERY]
    )
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K, description="How many results", examples=[DEFAULT_K])
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_USER_ID_CHARS,
        description="The shopper's id, to blend in their recent items; pseudonymized on arrival, never stored raw",
        examples=[DEMO_SHOPPER],
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is blank: send at least one character that is not a space")
        return value


class SearchResponse(RecommendationResponse):
    query: str


class ErrorMessage(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    """What anyone may see: whether the service answers, and with which version. Why it is degraded is
    for the authenticated /version (error texts name files and folders)."""

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok; degraded: answering, but with a fallback version, or a newer champion, the feature "
        "store or the privacy requests failed (GET /version says which); unavailable: no model loaded"
    )
    model_name: str
    model_version: str | None = Field(description="The version being served; null before the first load")
    loaded_at: datetime | None
    last_checked: datetime | None = Field(description="When the registry alias was last polled")
    poll_seconds: float
    scoring_batches: int = Field(
        default=0, description="Recommendation batches this process has scored since it started"
    )
    scored_requests: int = Field(
        default=0,
        description="Recommendation requests in those batches (divided by scoring_batches: the mean batch size)",
    )


class GateSummary(BaseModel):
    status: str | None = Field(description="gate.status of the version (passed, approved, ...)")
    checks: dict[str, str] = Field(description="Every gate.* tag of the version but gate.status")


class RerankSummary(BaseModel):
    min_tail_share: float
    window: int
    head_share: float
    n_tail_brands: int


class Diagnostics(BaseModel):
    last_checked: datetime | None = Field(description="When the registry alias was last polled")
    last_error: str | None = Field(
        description="The last polling or loading error (the version being served keeps serving)"
    )
    failed_versions: dict[str, str] = Field(description="Each version that failed to load, and why")
    feature_store_error: str | None = Field(description="The last online-store read error (answers fall back)")
    privacy_requests_error: str | None = Field(description="Why opt-outs could not be read (nobody personalized)")


class VersionResponse(BaseModel):
    model_name: str
    version: str
    alias: str
    fallback_for: str | None = Field(
        default=None,
        description="The version the alias points at, when it could not be loaded (or verified) at start "
        "and this version, the newest gate-passed one that loads, answers instead; null otherwise",
    )
    run_id: str | None
    loaded_at: datetime
    query_encoder: str = Field(
        default="torch",
        description="What encodes search queries: onnx-int8 or onnx-fp32 (the version's exported encoder, "
        "ONNX Runtime) or torch (a version without one, or VETTED_QUERY_ENCODER=torch)",
    )
    gate: GateSummary
    rerank: RerankSummary
    diagnostics: Diagnostics

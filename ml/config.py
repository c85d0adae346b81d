"""Configuration: where things live (Settings) and what one run does (RunConfig).

Both are plain dataclasses, built once at the edge (the CLI, a DAG task, a test) and passed down.
Nothing deeper in `ml/` reads the environment; `Settings.from_env()` is the one place that does.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ml.data.sources import REGISTRY, SOURCE_NAMES
from ml.errors import ConfigError
from ml.store_urls import redact, redis_connection_string, sql_registry_url

PROFILES = ("local", "prod")
# the source names, read from the one registry of sources (ml.data.sources.REGISTRY: adapter, what it needs)
SOURCES = SOURCE_NAMES
# tracking stores every worker of the prod profile can reach (PostgreSQL, MySQL, an MLflow server)
PROD_TRACKING_SCHEMES = ("postgresql", "mysql", "http", "https")
FEAST_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
# what encodes search queries in a loaded model (ml.training.recommender): its exported ONNX encoder when it has
# one (else torch), or always the torch encoder (to measure the two side by side)
QUERY_ENCODERS = ("onnx", "torch")


@dataclass(frozen=True)
class Settings:
    """Where the stores are.

    `local` keeps everything under one home folder (SQLite for MLflow and Feast). `prod` puts the MLflow
    backend on PostgreSQL (or an MLflow server), the Feast registry on PostgreSQL, the online store on
    Redis, and keeps the lake, the offline feature files and run folders on the home, which must be a
    volume every worker shares. A prod setting that is missing or malformed stops here, before any stage.
    """

    home: Path
    profile: str = "local"
    tracking_uri: str = ""
    artifact_root: str = ""
    model_name: str = "vetted-recsys"
    experiment: str = "vetted-recsys"
    # prod profile only
    postgres_dsn: str = ""
    redis_url: str = ""
    # the demo may create a local pseudonym key; everywhere else a missing key stops the run
    demo: bool = False
    # Feast project: the registry's namespace and the suffix of every online-store key in Redis
    feast_project: str = "vetted"
    # serving's search-query encoder (QUERY_ENCODERS): "onnx" unless VETTED_QUERY_ENCODER=torch
    query_encoder: str = "onnx"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"VETTED_PROFILE={self.profile!r} is not one of {PROFILES}")
        if self.query_encoder not in QUERY_ENCODERS:
            raise ConfigError(f"VETTED_QUERY_ENCODER={self.query_encoder!r} is not one of {QUERY_ENCODERS}")
        if not FEAST_PROJECT.fullmatch(self.feast_project):
            raise ConfigError(
                f"VETTED_FEAST_PROJECT={self.feast_project!r}: use letters, digits and underscores, "
                "starting with a letter or digit (Feast puts it in table names and Redis keys)"
            )
        if self.profile == "prod":
            self._check_prod()

    def _check_prod(self) -> None:
        """Every store the prod profile needs is named, and in a form its client accepts."""
        missing = [
            name
            for name, value in (
                ("VETTED_POSTGRES_DSN", self.postgres_dsn),
                ("VETTED_REDIS_URL", self.redis_url),
                ("MLFLOW_TRACKING_URI", self.tracking_uri),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"VETTED_PROFILE=prod needs {', '.join(missing)} (see docs/production.md): "
                "PostgreSQL for the Feast registry, Redis for the online store, and a tracking "
                "store every worker reaches (postgresql://... or an MLflow server http(s)://...)"
            )
        scheme = self.tracking_uri.split(":", 1)[0].split("+", 1)[0] if "://" in self.tracking_uri else ""
        if scheme not in PROD_TRACKING_SCHEMES:
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={redact(self.tracking_uri)!r} does not suit the prod profile: "
                f"use one of {', '.join(s + '://' for s in PROD_TRACKING_SCHEMES)} (a local file or "
                "SQLite store is not shared between workers)"
            )
        redis_connection_string(self.redis_url)
        sql_registry_url(self.postgres_dsn)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("VETTED_HOME", ".vetted")).expanduser().resolve()
        profile = env.get("VETTED_PROFILE", "local")
        tracking = env.get("MLFLOW_TRACKING_URI") or env.get("VETTED_TRACKING_URI", "")
        if not tracking and profile != "prod":  # prod names its tracking store; a local file would not be shared
            tracking = f"sqlite:///{home / 'mlflow.db'}"
        artifacts = env.get("VETTED_ARTIFACT_ROOT", "") or (home / "mlartifacts").as_uri()
        return cls(
            home=home,
            profile=profile,
            tracking_uri=tracking,
            artifact_root=artifacts,
            model_name=env.get("VETTED_MODEL_NAME", "vetted-recsys"),
            experiment=env.get("VETTED_EXPERIMENT", "vetted-recsys"),
            postgres_dsn=env.get("VETTED_POSTGRES_DSN", ""),
            redis_url=env.get("VETTED_REDIS_URL", ""),
            demo=env.get("VETTED_DEMO", "") in ("1", "true", "yes"),
            feast_project=env.get("VETTED_FEAST_PROJECT", "") or "vetted",
            query_encoder=env.get("VETTED_QUERY_ENCODER", "") or "onnx",
        )

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def text_vectors_dir(self) -> Path:
        """The pretrained encoder's vectors of catalogue texts, reused across stages and runs
        (ml.training.text_vectors); nothing of a shopper's is kept there."""
        return self.home / "cache" / "text-vectors"


@dataclass(frozen=True)
class DPConfig:
    """User-level DP-SGD settings. delta=None means n_users ** -1.1 (strictly below 1/n_users)."""

    enabled: bool = True
    target_epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    # DP-SGD uses SGD with momentum (Adam would turn noise into full-size steps); its base learning rate
    learning_rate: float = 0.2
    # share of the epsilon budget spent on the noised item-transition counts (0 = no transition signal)
    transitions_share: float = 0.85
    # each shopper contributes at most this many transitions to the counts
    transitions_per_user: int = 8
    # noise deviations subtracted from every noised count (post-processing, free under DP): higher keeps less
    # noise and fewer real pairs. None = auto: a released pair's expected count in noise deviations, within 1..2
    # (ml.training.autosettings.choose_floor): few shoppers sharing each pair want a low floor, a crowd with many
    # pairs each a higher one (floors measured by corpus: benchmarks/results/autosettings.md and ablation.md)
    transitions_floor: float | None = None
    # DP noise and DP-SGD's sample of shoppers from the OS CSPRNG (ml.privacy.noise) instead of a seeded generator:
    # None = on in the prod profile, off in local (reproducible from the seed, faster); `secure_rng_on` decides
    secure_rng: bool | None = None


_TEXT_FIELDS = ("source", "path", "url", "policy", "ingest_date", "run_name")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs to know; the DAG's Params map onto these fields."""

    source: str = "synthetic"
    path: str = ""
    # the database of the `sql` source (SQLAlchemy URL); `to_dict` masks its password, as it goes to run folders,
    # MLflow params and summaries
    url: str = ""
    seed: int = 7
    # synthetic generator size (ignored by file-based sources)
    n_users: int = 20000
    n_items: int = 1200
    # training budget
    epochs: int = 20
    max_steps: int = 100
    # expected shoppers per step; 0 = auto (ml.training.autosettings.choose_batch): the largest before doubling it
    # stops cutting much of the DP noise on a step's mean gradient (each corpus's choice and why:
    # benchmarks/results/autosettings.md)
    batch_size: int = 0
    learning_rate: float = 1e-3
    trainable_layers: int = 0
    # examples of each sampled shopper in a training step (all its examples when it has fewer): under DP the
    # shopper's gradient over them is clipped once. A step does up to that many times the work. 0 = auto
    # (ml.training.autosettings.choose_examples_per_user): a step's example slots (SLOTS_PER_STEP) shared among the
    # batch, at most what most shoppers have (each corpus's choice: benchmarks/results/autosettings.md).
    # With trainable_layers > 0 a step takes one per shopper
    examples_per_user: int = 0
    # training scores each example's target and a uniform sample of this many items a step when the catalogue is
    # larger (the sampled softmax: a step's work stays flat as the catalogue grows, ml.training.negatives); every
    # item when it is not, or at 0. The default keeps the demo's and amazon2018's catalogues exact
    negatives: int = 4096
    temperature: float = 0.05
    max_history: int = 10
    max_query_tokens: int = 32
    max_item_tokens: int = 48
    k: int = 10
    # fair re-ranking at evaluation and serving: minimum share of long-tail brands in each top-k prefix
    rerank_min_tail_share: float = 0.3
    # hold-out cases evaluated (a seeded sample when there are more); 0 = all
    max_eval_cases: int = 10000
    # hold-out search cases evaluated (a seeded sample when there are more); 0 = all. Each costs a query-encoder pass
    # for the model and for the zero-shot baseline, where a recommendation case costs a matrix row.
    max_search_cases: int = 3000
    # one Evidently ranking report per user group (Evidently's GroupBy is wrong for recsys metrics)
    slice_reports: bool = True
    dp: DPConfig = field(default_factory=DPConfig)
    policy: str = ""
    require_approval: bool = False
    ingest_date: str = ""  # YYYY-MM-DD; empty means today (UTC)
    run_name: str = ""
    # training processes, one per GPU (data-parallel DP-SGD); 0 = every visible GPU when there are several
    world_size: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"source={self.source!r} is not one of {SOURCES}")
        needs = REGISTRY[self.source].needs
        if needs == "path" and not self.path:
            raise ConfigError(
                f"source={self.source!r} needs path= (the folder holding {REGISTRY[self.source].expects})"
            )
        if needs == "url" and not self.url:
            raise ConfigError(f"source={self.source!r} needs url= ({REGISTRY[self.source].expects})")
        for name in ("epochs", "max_steps", "k", "max_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.negatives < 0:
            raise ConfigError(f"negatives must be 0 (score every item) or positive, got {self.negatives}")
        for name in ("batch_size", "examples_per_user"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be at least 1, or 0 to choose it from the data, got {getattr(self, name)}"
                )
        if not 0 <= self.trainable_layers <= 6:
            raise ConfigError(f"trainable_layers must be in 0..6 (MiniLM has 6), got {self.trainable_layers}")
        if self.dp.enabled and self.dp.target_epsilon <= 0:
            raise ConfigError(f"target_epsilon must be positive, got {self.dp.target_epsilon}")
        if self.dp.delta is not None and not 0 < self.dp.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.dp.delta}")
        if not 0 <= self.rerank_min_tail_share <= 1:
            raise ConfigError(f"rerank_min_tail_share must be in [0, 1], got {self.rerank_min_tail_share}")
        if not 0 <= self.dp.transitions_share < 1:
            raise ConfigError(f"transitions_share must be in [0, 1), got {self.dp.transitions_share}")
        if self.dp.transitions_floor is not None and not 0 <= self.dp.transitions_floor <= 10:
            raise ConfigError(
                f"transitions_floor must be in [0, 10] noise deviations, or None to choose it from "
                f"the data, got {self.dp.transitions_floor}"
            )
        if self.world_size < 0:
            raise ConfigError(f"world_size must be >= 0 (0 = every visible GPU), got {self.world_size}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, the source URL's password masked (`***`): this is what run folders, MLflow params, model
        cards and summaries record. A run loaded from its folder takes the real URL from VETTED_SOURCE_URL
        (`ml.pipeline.context`)."""
        from ml.store_urls import redact

        return {**asdict(self), "url": redact(self.url)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a flat or nested mapping (DAG Params, CLI flags); unknown keys are an error."""
        # a form's empty text field arrives as None (Airflow Params: type ["null", "string"]): the default ""
        data = {k: ("" if v is None and k in _TEXT_FIELDS else v) for k, v in dict(data).items()}
        dp_keys = {f.name for f in fields(DPConfig)}
        dp_data = dict(data.pop("dp", {}) or {})
        for key in list(data):
            if key.startswith("dp_") and key[3:] in dp_keys:
                dp_data[key[3:]] = data.pop(key)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown run parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data, dp=DPConfig(**dp_data))

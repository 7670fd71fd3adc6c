"""Typed settings for every process of the platform.

All values come from environment variables prefixed ``ANNOT_`` (or a ``.env`` file); each field's
description is its documentation, printed by ``annot settings``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# One service, one gRPC server, one Celery queue of the same name (order fixes the metrics ports).
SERVICES: tuple[str, ...] = ("selection", "segmentation", "byproducts", "quality", "dialog", "video", "training")
QUEUES: tuple[str, ...] = SERVICES

# Proto service names (package annotation.v1) hosted by each service's server.
PROTO_SERVICES: dict[str, str] = {
    "selection": "annotation.v1.Selection",
    "segmentation": "annotation.v1.Segmentation",
    "byproducts": "annotation.v1.Byproducts",
    "quality": "annotation.v1.Quality",
    "dialog": "annotation.v1.Dialog",
    "video": "annotation.v1.Video",
    "training": "annotation.v1.Training",
}

REPO_ROOT = Path(__file__).resolve().parents[2]
TRITON_MODELS = REPO_ROOT / "deploy" / "triton" / "models"  # the shipped Triton model repository
SplitKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]  # the training tables' project id width


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOT_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = Field(
        "development", description="Deployment environment; production refuses unsafe defaults."
    )
    host: str = Field(
        "127.0.0.1",
        description="Address every server binds to. Loopback by default; 0.0.0.0 inside containers.",
    )
    var_dir: Path = Field(
        REPO_ROOT / "var", description="Runtime state: SQLite file, Redis AOF, logs, pid files."
    )
    log_level: str = Field("INFO", description="Root log level (DEBUG, INFO, WARNING, ERROR).")
    log_json: bool = Field(True, description="One JSON object per log line; false for plain text.")

    redis_url: str = Field(
        "redis://127.0.0.1:6390/0",
        description="Redis for the Celery broker, result backend and short-lived session state.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the store; empty means SQLite at VAR_DIR/annotation.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
    )
    triton_grpc_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint (host:port).")
    triton_http_port: int = Field(8000, description="Triton HTTP port (health: /v2/health/ready).")
    triton_metrics_port: int = Field(8002, description="Triton Prometheus metrics port.")
    triton_local: bool = Field(
        True, description="`annot up` starts tritonserver (from .venv-triton) with the platform; "
        "false when Triton runs elsewhere (Kubernetes, a container)."
    )
    triton_model_name: str = Field(
        "clickseg_lite0", description="Segmentation model in the repository (clickseg: the earlier network "
        "trained from scratch, still served beside it).")
    triton_model_version: str = Field("", description="Model version to call; empty: Triton's policy.")
    segmentation_project_models: dict[str, str] = Field(
        default_factory=dict, description="Interactive model per project (JSON: project id -> Triton model; "
        "'*' the default, else TRITON_MODEL_NAME): the own click network, a fine-tuned one, or a foundation "
        "model's <name>_decoder from export_foundation (its encoder then runs once per session).")

    segmentation_max_image_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest image accepted (width x height), checked before decoding."
    )
    segmentation_max_image_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest encoded image accepted, in bytes."
    )
    segmentation_max_clicks: int = Field(100, gt=0, description="Most clicks in one session or request.")
    segmentation_session_ttl_s: int = Field(
        3600, gt=0, description="Seconds an idle interactive session is kept in Redis."
    )
    segmentation_finished_ttl_s: int = Field(
        7 * 24 * 3600, gt=0, description="Seconds a finished session stays readable in Redis."
    )
    segmentation_refine: bool = Field(
        True, description="GrabCut refinement of the network's probability (see predictor.py)."
    )
    segmentation_threshold: float = Field(
        0.5, gt=0, lt=1, description="Default probability threshold of the binary mask."
    )

    dialog_min_gain_per_second: float = Field(
        0.01, ge=0,
        description="The dialog asks nothing (a SKIP question) when no plan's expected gain per expected human "
        "second reaches this: gain is selection's score in [0, 1], seconds come from the cost and acceptance "
        "models. 0.01: a region scoring 0.1 is worth at most about 10 s of a person (segmenting an object "
        "costs about 8.5 s, verifying a proposal 1.8 s); 0 never skips.",
    )

    gateway_port: int = Field(8080, description="Gateway REST/HTML port.")
    selection_port: int = Field(50051, description="Selection service gRPC port.")
    segmentation_port: int = Field(50052, description="Segmentation service gRPC port.")
    byproducts_port: int = Field(50053, description="Byproducts service gRPC port.")
    quality_port: int = Field(50054, description="Quality service gRPC port.")
    dialog_port: int = Field(50055, description="Dialog service gRPC port.")
    video_port: int = Field(50056, description="Video service gRPC port.")
    training_port: int = Field(50057, description="Training service gRPC port.")
    metrics_port_base: int = Field(
        9100,
        description="Prometheus metrics ports: the gateway on BASE, the gRPC servers on BASE+1..BASE+7 "
        "and the Celery workers on BASE+11..BASE+17 by the queue they consume, in SERVICES order (selection, "
        "segmentation, byproducts, quality, dialog, video, training).",
    )
    service_hosts: dict[str, str] = Field(
        default_factory=dict,
        description='Where clients reach each service, e.g. {"selection": "selection:50051"} '
        "(JSON). Missing entries mean HOST:<service>_port.",
    )

    grpc_max_workers: int = Field(16, ge=1, description="Threads serving gRPC calls per server.")
    grpc_max_message_mb: int = Field(32, ge=1, description="Largest gRPC message accepted, in MiB.")
    grpc_grace_s: float = Field(10.0, ge=0, description="SIGTERM: seconds in-flight calls may finish.")
    default_deadline_s: float = Field(
        30.0, gt=0, description="Deadline applied to calls whose client set none."
    )
    dependency_timeout_s: float = Field(
        1.0, gt=0, description="Socket timeout of dependency checks (Redis ping), so none hangs."
    )
    health_interval_s: float = Field(
        2.0, gt=0, description="Seconds between dependency checks feeding the gRPC health status."
    )
    auth_cache_ttl_s: float = Field(
        30.0, ge=0, description="Seconds a verified API key stays cached; revocation latency."
    )
    service_key: SecretStr = Field(
        SecretStr(""),
        description="This service's own API key (ak_<id>.<secret>), which it calls other services with "
        "(role service, least privilege: services/common/keys.py SERVICE_GRANTS); its hash is stored at start. "
        "Empty: outside production, one kept at VAR_DIR/service-keys/<service>.key; production requires it.",
    )

    celery_task_time_limit_s: int = Field(600, gt=0, description="Hard time limit of a task.")
    celery_task_soft_time_limit_s: int = Field(
        540, gt=0, description="Soft time limit: the task gets SoftTimeLimitExceeded to clean up."
    )
    celery_visibility_timeout_s: int = Field(
        3600,
        gt=0,
        description="Seconds before an unacknowledged task is redelivered (acks_late); "
        "must exceed the longest task.",
    )
    celery_visibility_timeout_by_queue: dict[str, int] = Field(
        default_factory=lambda: {"byproducts": 120},
        description="Per-queue cap on the visibility timeout (JSON map), for queues whose tasks are "
        "short: a killed byproducts worker's batch is redelivered in 2 minutes, not an hour.",
    )
    operation_ttl_s: int = Field(
        7 * 24 * 3600, gt=0, description="Seconds an Operation record stays queryable."
    )

    training_model_repository: str = Field(
        "",
        description="Triton model repository the training worker publishes promoted versions into (a folder "
        "Triton also serves, started with --model-control-mode=explicit); empty means VAR_DIR/triton/published.",
    )
    training_publish: bool = Field(
        True, description="Load promoted versions into Triton with its model-control API (load_model); false: "
        "only write them into the repository (a Triton that polls it, or none)."
    )
    training_heldout_percent: int = Field(
        20, ge=1, le=90, description="Share of a project's images held out for evaluation and the promotion "
        "gate, chosen by a hash of the project's split key and the image id (stable across snapshots)."
    )
    training_split_keys: dict[str, SplitKey] = Field(
        default_factory=dict, description="Split key per project (JSON: project id -> key; a project not named "
        "is its own key). Projects sharing a key hold out the same image ids, so two arms of a comparison gate on "
        "the same images. Fixed at a project's first snapshot: a later snapshot under another key is refused.")
    training_trigger_every: int = Field(
        50, ge=0, description="Start training a project's models (TRAINING_TRIGGER_KINDS) after every this many "
        "newly accepted annotations of it, counted since the snapshot its last job of the kind trained on "
        "(the training worker's annotation_submitted task); 0 turns the automatic trigger off."
    )
    training_trigger_kinds: str = Field(
        "interactive,task", pattern=r"^((interactive|task)(,(interactive|task))*)?$",
        description="Model kinds the automatic trigger trains, comma-separated (interactive, task); the quality "
        "model learns from reviews and is trained on demand.",
    )
    training_interactive_base: str = Field(
        "", description="Triton model folder of the click network interactive jobs fine-tune (its 1/model.pt "
        "and 1/training.json) and publish beside; empty means deploy/triton/models/<TRITON_MODEL_NAME>."
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "Settings":
        if self.celery_task_soft_time_limit_s >= self.celery_task_time_limit_s:
            raise ValueError("celery_task_soft_time_limit_s must be below celery_task_time_limit_s")
        if self.env == "production" and self.resolved_database_url.startswith("sqlite"):
            raise ValueError("database_url: production needs PostgreSQL, not the SQLite default")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'annotation.db'}"

    @property
    def resolved_model_repository(self) -> Path:
        return Path(self.training_model_repository) if self.training_model_repository else \
            self.var_dir / "triton" / "published"

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    def grpc_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def metrics_port(self, service: str) -> int:
        return self.metrics_port_base + 1 + SERVICES.index(service)

    def worker_metrics_port(self, queue: str) -> int:
        return self.metrics_port_base + 11 + QUEUES.index(queue)

    @property
    def gateway_metrics_port(self) -> int:
        return self.metrics_port_base

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process read these same settings."""
        return {f"ANNOT_{name.upper()}": json.dumps(value) if isinstance(value, dict)
                else value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                for name, value in ((n, getattr(self, n)) for n in type(self).model_fields)}

    def service_address(self, service: str) -> str:
        return self.service_hosts.get(service) or f"{self.host}:{self.grpc_port(service)}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once; tests build ``Settings(...)`` and pass it explicitly."""
    return Settings()


def served_model_dir(name: str | None = None) -> Path:
    """A shipped Triton model folder: ``name``'s, or the default click model's (``triton_model_name``)."""
    return TRITON_MODELS / (name or Settings.model_fields["triton_model_name"].default)

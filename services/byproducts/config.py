"""Settings of the byproducts service (environment variables ``ANNOT_BYPRODUCTS_*``).

Kept beside the service rather than in the shared Settings, so the service's knobs land with it;
``annot settings`` does not list them yet.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ByproductsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOT_BYPRODUCTS_", env_file=".env", extra="ignore")

    max_batch_events: int = Field(5000, ge=1, description="Largest RecordBatch (events).")
    flush_events: int = Field(
        1000, ge=1, description="Record streams are enqueued in chunks of this many events "
        "(one Celery message per chunk).")
    flush_interval_ms: int = Field(
        250, ge=0, description="A Record stream also enqueues what it holds when its oldest unsent "
        "event is this old and a new one arrives.")
    max_queue_messages: int = Field(
        200, ge=1, description="Back-pressure: ingest waits while more batches than this wait to be "
        "stored (on the byproducts queue, or held by a worker for a retry; each holds up to FLUSH_EVENTS "
        "events).")
    backpressure_wait_s: float = Field(
        10.0, ge=0, description="How long ingest waits for room on the queue (never past the "
        "call's deadline) before refusing with RESOURCE_EXHAUSTED.")
    session_state_ttl_s: int = Field(
        7 * 24 * 3600, gt=0, description="Seconds the ingest state of a session (dedup index, "
        "times, gaps) stays in Redis after its last event.")
    redeliver_after_s: float = Field(
        300.0, gt=0, description="An admitted batch still in the outbox this long after it was queued is "
        "queued again (its message was lost with a killed worker); keep it above the queue's visibility "
        "timeout, or slow batches are sent twice (harmless, stored once).")
    idle_threshold_ms: int = Field(5000, gt=0, description="A pause longer than this is an idle gap.")
    export_chunk_bytes: int = Field(1 << 20, ge=1024, description="Largest export chunk (bytes).")

"""Scoring finished sessions: check the summary, extract the features, score, and (for a stored
session) record the score. What the gRPC adapter and the Celery task both call."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.models.quality_gru import DEFAULT_THRESHOLD
from services.quality import features, summary
from services.quality.scorer import Score, Scorer
from services.quality.store import QualityStore


def check_threshold(value: float, field: str = "threshold") -> float:
    """0 means the default; otherwise the threshold must be in (0, 1)."""
    if value == 0:
        return DEFAULT_THRESHOLD
    if not 0 < value < 1:
        raise InvalidArgument(field, f"{value} is not in (0, 1)")
    return float(value)


def score_summaries(scorer: Scorer, summaries: list[dict], threshold: float = DEFAULT_THRESHOLD,
                    prefixes: list[str] | None = None) -> list[Score]:
    """Validates every summary first (all or nothing; fields named under ``prefixes[i]``), then scores
    them in one batch."""
    prefixes = prefixes or [""] * len(summaries)
    items = [features.extract(s, summary.validate(s, p)) for s, p in zip(summaries, prefixes)]
    return scorer.score(items, threshold) if items else []


def record_finished(store: QualityStore, scorer: Scorer, payload: dict) -> dict:
    """The ``quality.score_session`` task: scores the FinishSession payload and stores it under its
    session id (idempotent: a redelivered payload replaces the score with the same one)."""
    meta = payload.get("session") if isinstance(payload, dict) else None
    if not meta or not meta.get("session_id") or not meta.get("project_id"):
        raise InvalidArgument("session", "the payload names no session_id and project_id")
    score = score_summaries(scorer, [payload])[0]
    store.record(payload, score)
    return {"project_id": meta["project_id"], "session_id": meta["session_id"],
            "predicted_iou": round(score.predicted_iou, 4),
            "probability_below_threshold": round(score.probability_below_threshold, 4),
            "threshold": score.threshold, "model_version": score.model_version}

"""Scoring finished sessions: check the summary, extract the features, score, and (for a submitted
annotation, the loop's ``AnnotationSubmitted``) record the score. What the gRPC adapter and the Celery task
both call."""

from __future__ import annotations

from annotation.v1 import common_pb2
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


def summary_of(event: common_pb2.AnnotationSubmitted) -> dict:
    """The quality model's summary (``summary.py``) of a decoded ``AnnotationSubmitted``; steps the event
    does not carry read as zero (unknown)."""
    finish = event.submit_time.ToMilliseconds() / 1000 if event.HasField("submit_time") else 0.0
    steps = [{"stats": {"area_px": s.area_px, "click_confidence": s.click_confidence,
                        "mean_confidence": s.mean_confidence, "uncertain_fraction": s.uncertain_fraction,
                        "mean_foreground_probability": s.mean_foreground_probability},
              "iou_with_previous": s.iou_with_previous, "model_latency_ms": s.model_latency_ms} for s in event.steps]
    return {
        "session": {"session_id": event.session_id or event.annotation_id, "project_id": event.project_id,
                    "image_id": event.image.image_id, "uri": event.image.uri, "width": event.image.width,
                    "height": event.image.height, "annotator_id": event.annotator_id, "task_id": event.task_id,
                    "label": event.label, "model_version": event.model_version, "outcome": "SUBMITTED",
                    "create_time": finish - event.total_time_ms / 1000, "update_time": finish, "finish_time": finish},
        "clicks": [{"x": c.x, "y": c.y, "positive": c.positive, "t_ms": c.t_ms, "index": i}
                   for i, c in enumerate(event.clicks)],
        "steps": steps or [{"stats": {}, "iou_with_previous": 0.0, "model_latency_ms": 0.0} for _ in event.clicks],
        "mask": {"size": list(event.mask.size), "counts": event.mask.counts},
    }


def record_submitted(store: QualityStore, scorer: Scorer, event: common_pb2.AnnotationSubmitted) -> dict:
    """The ``quality.annotation_submitted`` task: scores the submitted session and stores it under its
    session id (idempotent: a redelivered event replaces the score with the same one)."""
    summary_ = summary_of(event)
    score = score_summaries(scorer, [summary_])[0]
    store.record(summary_, score)
    meta = summary_["session"]
    return {"project_id": meta["project_id"], "session_id": meta["session_id"],
            "predicted_iou": round(score.predicted_iou, 4),
            "probability_below_threshold": round(score.probability_below_threshold, 4),
            "threshold": score.threshold, "model_version": score.model_version}

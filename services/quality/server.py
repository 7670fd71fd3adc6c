"""gRPC adapter of ``annotation.v1.Quality``: proto <-> scored sessions, the review queue, reviews."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import json_format

from annotation.v1 import common_pb2, quality_pb2, quality_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.grpc_server import Kit, serve
from services.common.masks import decode_rle
from services.common.proto_time import to_timestamp
from services.models.quality_gru import DEFAULT_THRESHOLD
from services.quality import features, review_messages
from services.quality.project_models import ProjectModels
from services.quality.scorer import Score, Scorer
from services.quality.sessions import check_threshold, score_summaries
from services.quality.store import CORRECTED, QualityStore
from services.quality.summary import from_steps

MAX_BATCH = 1000


def _score_pb(score: Score, session_id: str = "", when: datetime | None = None) -> quality_pb2.QualityScore:
    return quality_pb2.QualityScore(
        session_id=session_id, predicted_iou=score.predicted_iou,
        probability_below_threshold=score.probability_below_threshold, threshold=score.threshold,
        top_reasons=[quality_pb2.Reason(feature=r.feature, value=r.value, contribution=r.contribution,
                                        description=r.description) for r in score.reasons],
        model_version=score.model_version, score_time=to_timestamp(when or datetime.now(UTC)))


def _sequence_summary(sequence: quality_pb2.ClickSequence, prefix: str) -> dict:
    """An inline ClickSequence -> the summary the model reads (masks decoded and checked here)."""
    width, height = sequence.image.width, sequence.image.height
    if not width or not height:
        raise InvalidArgument(f"{prefix}image", "width and height are required")
    if not sequence.steps:
        raise InvalidArgument(f"{prefix}steps", "the sequence has no clicks: nothing to score")
    clicks, masks = [], []
    for i, step in enumerate(sequence.steps):
        if not step.HasField("click"):
            raise InvalidArgument(f"{prefix}steps[{i}].click", "required")
        if not step.HasField("mask_after"):
            raise InvalidArgument(f"{prefix}steps[{i}].mask_after", "required")
        c = step.click
        clicks.append({"x": c.x, "y": c.y, "positive": c.positive, "t_ms": c.t_ms, "index": c.index})
        masks.append(decode_rle(step.mask_after.size, step.mask_after.counts, (height, width),
                                f"{prefix}steps[{i}].mask_after"))
    if all(c["index"] == 0 for c in clicks):  # index left unset throughout: the listed order
        for i, c in enumerate(clicks):
            c["index"] = i
    if sequence.total_time_ms and sequence.total_time_ms < clicks[-1]["t_ms"]:
        raise InvalidArgument(f"{prefix}total_time_ms", f"{sequence.total_time_ms} is before the last click's "
                              f"t_ms {clicks[-1]['t_ms']}")
    steps = sequence.steps
    return from_steps(width, height, clicks, masks, [s.click_confidence for s in steps],
                      [s.mean_confidence for s in steps], [s.uncertain_fraction for s in steps],
                      {"image_id": sequence.image.image_id, "uri": sequence.image.uri})


class QualityServicer(quality_pb2_grpc.QualityServicer):
    def __init__(self, store: QualityStore, models: ProjectModels, celery) -> None:
        self.store, self.models, self.celery = store, models, celery

    def _score(self, project_id: str, subjects: list, threshold: float, prefixes: list[str]) -> list:
        """(which, value) subjects -> QualityScore messages; stored sessions are re-scored and stored."""
        summaries, stored = [], []
        for (which, value), prefix in zip(subjects, prefixes):
            if which == "session_id":
                summaries.append(self.store.get(project_id, value).summary)
                stored.append(value)
            elif which == "sequence":
                summaries.append(_sequence_summary(value, f"{prefix}sequence."))
                stored.append("")
            else:
                raise InvalidArgument(f"{prefix}subject", "set session_id or sequence")
        scores = score_summaries(self.models.scorer(project_id), summaries, threshold, [
            "" if sid else f"{p}sequence." for sid, p in zip(stored, prefixes)])
        out = []
        for summary, score, session_id in zip(summaries, scores, stored):
            when = None
            if session_id:
                when = self.store.record(summary, score).score_time
            out.append(_score_pb(score, session_id, when))
        return out

    def Score(self, request, context):
        which = request.WhichOneof("subject")
        subject = (which, getattr(request, which) if which else None)
        score = self._score(request.project_id, [subject], check_threshold(request.threshold), [""])[0]
        return quality_pb2.ScoreResponse(score=score)

    def ScoreBatch(self, request, context):
        if not request.items:
            raise InvalidArgument("items", "at least one item is needed")
        if len(request.items) > MAX_BATCH:
            raise InvalidArgument("items", f"{len(request.items)} items is over the limit of {MAX_BATCH}")
        subjects = []
        for item in request.items:
            which = item.WhichOneof("subject")
            subjects.append((which, getattr(item, which) if which else None))
        scores = self._score(request.project_id, subjects, check_threshold(request.threshold),
                             [f"items[{i}]." for i in range(len(subjects))])
        return quality_pb2.ScoreBatchResponse(scores=scores)

    def ListReviewQueue(self, request, context):
        window = request.time_range
        rows, token, total = self.store.queue(
            request.project_id, annotator_id=request.annotator_id, max_predicted_iou=request.max_predicted_iou,
            include_reviewed=request.include_reviewed,
            start=window.start.ToDatetime(UTC) if window.HasField("start") else None,
            end=window.end.ToDatetime(UTC) if window.HasField("end") else None,
            page_size=request.page.page_size, page_token=request.page.page_token)
        return quality_pb2.ListReviewQueueResponse(
            items=[self._item(r) for r in rows], page=common_pb2.PageInfo(next_page_token=token, total_size=total))

    def RecordReview(self, request, context):
        mask = None
        if request.HasField("corrected_mask"):
            mask = {"size": list(request.corrected_mask.size), "counts": request.corrected_mask.counts}
        if request.verdict == CORRECTED and mask is None:
            raise InvalidArgument("corrected_mask", "required for a CORRECTED verdict")
        row = self.store.review(request.project_id, request.session_id, request.verdict, mask,
                                request.reviewer_id, request.comment)
        message = review_messages.session_reviewed(row)
        if message is not None:  # the quality model learns from the project's reviews (training service)
            self.celery.send_task(review_messages.SESSION_REVIEWED, queue="training", args=[
                json_format.MessageToDict(message, preserving_proto_field_name=True)])
        return quality_pb2.RecordReviewResponse(item=self._item(row))

    def GetModelInfo(self, request, context):
        card = self.models.base.card  # the shipped model; a project's own version names itself in each score
        evaluation = card.get("evaluation", {}).get("model", {})
        info = quality_pb2.QualityGetModelInfoResponse(
            model_name=card.get("model_name", "click-gru"), model_version=self.models.base.version,
            default_threshold=DEFAULT_THRESHOLD,
            features=[*(f"step.{n}" for n in features.STEP_FEATURES),
                      *(f"session.{n}" for n in features.SESSION_FEATURES)],
            metrics={**{k: float(v) for k, v in evaluation.items() if isinstance(v, (int, float))},
                     **{f"cv_{k}": float(v) for k, v in card.get("cross_validation", {}).items()
                        if isinstance(v, (int, float))}},
            training_command=card.get("training_command", ""),
            training_sessions=int(card.get("training_sessions", 0)))
        if card.get("train_time"):
            info.train_time.FromJsonString(card["train_time"])
        return info

    @staticmethod
    def _item(row) -> quality_pb2.ReviewItem:
        score = Score(row.predicted_iou, row.probability_below, row.threshold, row.model_version)
        reasons = [quality_pb2.Reason(**r) for r in row.reasons]
        score_pb = _score_pb(score, row.session_id, row.score_time)
        score_pb.top_reasons.extend(reasons)
        mask = row.summary["mask"]
        return quality_pb2.ReviewItem(
            session_id=row.session_id, annotator_id=row.annotator_id, task_id=row.task_id,
            image=common_pb2.ImageRef(image_id=row.image_id, uri=row.uri, width=row.width, height=row.height),
            mask=common_pb2.Mask(size=mask["size"], counts=mask["counts"]), label=row.label,
            click_count=row.click_count, score=score_pb, finish_time=to_timestamp(row.finish_time),
            verdict=row.verdict, true_iou=-1.0 if row.true_iou is None else row.true_iou)


def register(server: grpc.Server, kit: Kit) -> None:
    servicer = QualityServicer(QualityStore(kit.sessions), ProjectModels(kit.sessions, Scorer.load()), kit.celery)
    quality_pb2_grpc.add_QualityServicer_to_server(servicer, server)


if __name__ == "__main__":
    serve("quality", register)

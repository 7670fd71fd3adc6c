"""Scored sessions in SQL: idempotent recording, the review queue (worst first), reviews and the
labelled sessions they yield for retraining."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.masks import decode_rle, iou
from services.quality.scorer import Score
from services.quality.tables import ScoredSessionRow

ACCEPTED, REJECTED, CORRECTED = 1, 2, 3
MAX_PAGE, DEFAULT_PAGE = 1000, 50


def _time(seconds: float | None) -> datetime:
    return datetime.fromtimestamp(seconds, UTC) if seconds else datetime.now(UTC)


def page_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, fingerprint]).encode()).decode()


def read_page_token(token: str, fingerprint: str) -> int:
    if not token:
        return 0
    try:
        offset, seen = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(offset)
    except (ValueError, TypeError):
        raise InvalidArgument("page.page_token", "not a token returned by this server") from None
    if seen != fingerprint or offset < 0:
        raise InvalidArgument("page.page_token", "the request changed between pages; start again without a token")
    return offset


class QualityStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def record(self, summary: dict, score: Score) -> ScoredSessionRow:
        """Stores (or replaces) the score of a finished session; its review, if any, is kept."""
        meta = summary["session"]
        key = (meta["project_id"], meta["session_id"])
        values = {
            "annotator_id": meta.get("annotator_id", ""), "task_id": meta.get("task_id", ""),
            "image_id": meta.get("image_id", ""), "uri": meta.get("uri", ""), "width": meta["width"],
            "height": meta["height"], "label": meta.get("label", ""), "click_count": len(summary["clicks"]),
            "finish_time": _time(meta.get("finish_time") or meta.get("update_time")), "summary": summary,
            "predicted_iou": score.predicted_iou, "probability_below": score.probability_below_threshold,
            "threshold": score.threshold, "reasons": [asdict(r) for r in score.reasons],
            "model_version": score.model_version, "score_time": datetime.now(UTC)}
        for _ in range(2):  # a concurrent first insert of the same session: retry as an update
            try:
                with self._sessions.begin() as session:
                    row = session.get(ScoredSessionRow, key)
                    if row is None:
                        row = ScoredSessionRow(project_id=key[0], session_id=key[1], verdict=0, reviewer_id="",
                                               comment="", **values)
                        session.add(row)
                    else:
                        for name, value in values.items():
                            setattr(row, name, value)
                return row
            except IntegrityError:
                continue
        raise FailedPrecondition(f"session {key[1]!r} is being recorded concurrently; retry")

    def get(self, project_id: str, session_id: str) -> ScoredSessionRow:
        if not session_id:
            raise InvalidArgument("session_id", "required")
        with self._sessions() as session:
            row = session.get(ScoredSessionRow, (project_id, session_id))
        if row is None:
            raise NotFound(f"no finished session {session_id!r} in project {project_id!r} has reached the "
                           "quality service", field="session_id")
        return row

    def queue(self, project_id: str, *, annotator_id: str = "", max_predicted_iou: float = 0.0,
              include_reviewed: bool = False, start: datetime | None = None, end: datetime | None = None,
              page_size: int = 0, page_token: str = "") -> tuple[list[ScoredSessionRow], str, int]:
        """Worst first (ascending predicted IoU, then descending P(bad), then session id); rows, next token,
        total."""
        if not 0 <= max_predicted_iou <= 1:
            raise InvalidArgument("max_predicted_iou", f"{max_predicted_iou} is not in (0, 1]")
        conditions = [ScoredSessionRow.project_id == project_id]
        if annotator_id:
            conditions.append(ScoredSessionRow.annotator_id == annotator_id)
        if max_predicted_iou:
            conditions.append(ScoredSessionRow.predicted_iou <= max_predicted_iou)
        if not include_reviewed:
            conditions.append(ScoredSessionRow.verdict == 0)
        if start is not None:
            conditions.append(ScoredSessionRow.finish_time >= start)
        if end is not None:
            conditions.append(ScoredSessionRow.finish_time < end)
        fingerprint = hashlib.sha256(json.dumps([project_id, annotator_id, max_predicted_iou, include_reviewed,
                                                 str(start), str(end)]).encode()).hexdigest()[:16]
        offset = read_page_token(page_token, fingerprint)
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(ScoredSessionRow).where(*conditions))
            rows = list(session.scalars(select(ScoredSessionRow).where(*conditions).order_by(
                ScoredSessionRow.predicted_iou, ScoredSessionRow.probability_below.desc(),
                ScoredSessionRow.session_id).offset(offset).limit(size)))
        following = offset + len(rows)
        return rows, page_token_if(following < total, following, fingerprint), int(total)

    def review(self, project_id: str, session_id: str, verdict: int, corrected_mask: dict | None = None,
               reviewer_id: str = "", comment: str = "") -> ScoredSessionRow:
        """Records a verdict; CORRECTED needs the corrected mask and yields the true IoU."""
        if verdict not in (ACCEPTED, REJECTED, CORRECTED):
            raise InvalidArgument("verdict", "ACCEPTED, REJECTED or CORRECTED is required")
        with self._sessions.begin() as session:
            row = session.get(ScoredSessionRow, (project_id, session_id))
            if row is None:
                raise NotFound(f"no scored session {session_id!r} in project {project_id!r}", field="session_id")
            true_iou = None
            if verdict == CORRECTED:
                if not corrected_mask or not corrected_mask.get("size"):
                    raise InvalidArgument("corrected_mask", "required for a CORRECTED verdict")
                shape = (row.height, row.width)
                corrected = decode_rle(corrected_mask["size"], corrected_mask["counts"], shape, "corrected_mask")
                submitted = decode_rle(row.summary["mask"]["size"], row.summary["mask"]["counts"], shape, "mask")
                true_iou = iou(submitted, corrected)
            elif corrected_mask and corrected_mask.get("size"):
                raise InvalidArgument("corrected_mask", "only a CORRECTED verdict takes a corrected mask")
            row.verdict, row.reviewer_id, row.comment = verdict, reviewer_id, comment
            row.review_time, row.true_iou = datetime.now(UTC), true_iou
            row.corrected_mask = corrected_mask if verdict == CORRECTED else None
        return row

    def labelled_sessions(self) -> list[tuple[dict, float]]:
        """(summary, true IoU) of every session a reviewer corrected: training labels."""
        with self._sessions() as session:
            rows = session.execute(select(ScoredSessionRow.summary, ScoredSessionRow.true_iou).where(
                ScoredSessionRow.true_iou.is_not(None))).all()
        return [(s, float(np.clip(v, 0, 1))) for s, v in rows]


def page_token_if(more: bool, offset: int, fingerprint: str) -> str:
    return page_token(offset, fingerprint) if more else ""

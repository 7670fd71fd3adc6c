"""Stored region scores (what strategies select from), human labels and selected batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import sessionmaker

from services.common.errors import InvalidArgument
from services.selection.candidates import Candidates
from services.selection.scoring import RegionScores
from services.selection.tables import (
    HEURISTIC_COLUMNS,
    BatchRow,
    ItemRow,
    LabelRow,
    PoolRow,
    ScoreRow,
)

CANDIDATE_COLUMNS = (ScoreRow.item_id, ScoreRow.segment, ScoreRow.x, ScoreRow.y, ScoreRow.width, ScoreRow.height,
                     ScoreRow.area_px, ScoreRow.majority_class, ScoreRow.confidence, ScoreRow.labelled,
                     *(getattr(ScoreRow, h) for h in HEURISTIC_COLUMNS))


@dataclass
class Label:
    item_id: str
    region_key: str | None = None  # None: the whole item
    segment: int | None = None
    region: dict | None = None
    class_labels: list[int] | None = None
    mask: dict | None = None
    annotator_id: str = ""
    label_time: datetime | None = None
    annotation_id: str | None = None  # the loop's annotation; recorded once per pool


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


class ScoreStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def store_item_scores(self, project_id: str, pool_id: str, item_id: str, results: list[RegionScores],
                          prediction_digest: str, model_version: str, present_classes: list[int],
                          histogram: np.ndarray | None, embedding: np.ndarray | None) -> int:
        """Replaces the item's scores of each result's region key (idempotent), in one transaction."""
        now = datetime.now(UTC)
        rows = 0
        with self._sessions.begin() as session:
            labelled = session.scalar(select(ItemRow.labelled).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id, ItemRow.item_id == item_id))
            for result in results:
                key = result.spec.key
                session.execute(delete(ScoreRow).where(ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id,
                                                       ScoreRow.item_id == item_id, ScoreRow.region_key == key))
                columns = {h: [_nan_to_none(v) for v in result.scores[h]] for h in HEURISTIC_COLUMNS}
                session.execute(insert(ScoreRow), [
                    {"project_id": project_id, "pool_id": pool_id, "item_id": item_id, "region_key": key,
                     "segment": int(result.segment[i]), "x": int(result.boxes[i, 0]), "y": int(result.boxes[i, 1]),
                     "width": int(result.boxes[i, 2]), "height": int(result.boxes[i, 3]),
                     "area_px": int(result.area_px[i]), "majority_class": int(result.majority_class[i]),
                     "confidence": float(result.confidence[i]), "labelled": bool(labelled),
                     "digest": prediction_digest, "model_version": model_version, "scored_at": now,
                     **{h: columns[h][i] for h in HEURISTIC_COLUMNS}} for i in range(len(result))])
                rows += len(result)
            values = {"present_classes": present_classes}
            if histogram is not None:
                values["histogram"] = histogram.astype(np.float32).tobytes()
            if embedding is not None:
                values["embedding"] = embedding.astype(np.float32).tobytes()
            session.execute(update(ItemRow).where(ItemRow.project_id == project_id, ItemRow.pool_id == pool_id,
                                                  ItemRow.item_id == item_id).values(**values))
        return rows

    def scored_digests(self, project_id: str, pool_id: str, region_key: str) -> dict[str, str]:
        with self._sessions() as session:
            return dict(session.execute(select(ScoreRow.item_id, ScoreRow.digest).distinct().where(
                ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id, ScoreRow.region_key == region_key)).all())

    def region_keys(self, project_id: str, pool_id: str) -> list[str]:
        """The region specs (``RegionSpec.key``) the pool has scores for."""
        with self._sessions() as session:
            return sorted(session.scalars(select(ScoreRow.region_key).distinct().where(
                ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id)))

    def mark_scored(self, project_id: str, pool_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(update(PoolRow).where(PoolRow.project_id == project_id, PoolRow.pool_id == pool_id)
                            .values(score_time=datetime.now(UTC)))

    def candidates(self, project_id: str, pool_id: str, region_key: str, classes: int) -> Candidates:
        with self._sessions() as session:
            rows = session.execute(select(*CANDIDATE_COLUMNS).where(
                ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id, ScoreRow.region_key == region_key)
                .order_by(ScoreRow.item_id, ScoreRow.segment)).all()
            items = session.execute(select(ItemRow.item_id, ItemRow.image_labels, ItemRow.embedding, ItemRow.height,
                                           ItemRow.width).where(ItemRow.project_id == project_id,
                                                                ItemRow.pool_id == pool_id)
                                    .order_by(ItemRow.item_id)).all()
        item_ids = [i.item_id for i in items]
        index = {item_id: n for n, item_id in enumerate(item_ids)}
        cols = list(zip(*rows)) if rows else [[] for _ in CANDIDATE_COLUMNS]
        num = lambda k, dtype: np.asarray(cols[k], dtype=dtype)  # noqa: E731
        scores = {h: np.array([np.nan if v is None else v for v in cols[10 + j]], np.float32)
                  for j, h in enumerate(HEURISTIC_COLUMNS)}
        labels = None
        if any(i.image_labels for i in items):
            labels = np.zeros((len(items), classes), bool)
            for n, item in enumerate(items):
                labels[n, list(item.image_labels or [])] = True
        embeddings = None
        if items and all(i.embedding for i in items):
            embeddings = np.stack([np.frombuffer(i.embedding, np.float32) for i in items])
        sizes = np.array([[i.height, i.width] for i in items], np.int64).reshape(-1, 2)
        boxes = np.stack([num(k, np.int64) for k in (2, 3, 4, 5)], axis=1) if rows else np.zeros((0, 4), np.int64)
        return Candidates(np.array([index[i] for i in cols[0]], np.int64), item_ids, num(1, np.int64), boxes,
                          num(6, np.int64), num(7, np.int64), num(8, np.float32), scores, num(9, bool), labels,
                          embeddings, sizes)

    def model_versions(self, project_id: str, pool_id: str, region_key: str, item_ids: list[str]) -> dict[str, str]:
        """The model version each item's scores at ``region_key`` came from (one per item: scored together)."""
        if not item_ids:
            return {}
        with self._sessions() as session:
            return dict(session.execute(select(ScoreRow.item_id, ScoreRow.model_version).where(
                ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id, ScoreRow.region_key == region_key,
                ScoreRow.item_id.in_(set(item_ids))).distinct()).all())

    def item_features(self, project_id: str, pool_id: str) -> list[tuple]:
        """(item_id, uri, labelled, image_labels, present_classes, histogram, embedding) of every item."""
        with self._sessions() as session:
            return session.execute(select(ItemRow.item_id, ItemRow.uri, ItemRow.labelled, ItemRow.image_labels,
                                          ItemRow.present_classes, ItemRow.histogram, ItemRow.embedding,
                                          ItemRow.image_id, ItemRow.width, ItemRow.height).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id).order_by(ItemRow.position)).all()

    def region_scores(self, project_id: str, pool_id: str, item_id: str | None, region_key: str | None,
                      segment: int | None, heuristic: str | None = None, include_labelled: bool = True,
                      offset: int = 0, limit: int | None = None) -> tuple[list[ScoreRow], int]:
        """Stored score rows, highest ``heuristic`` first (or by item and segment)."""
        where = [ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id]
        if item_id is not None:
            where.append(ScoreRow.item_id == item_id)
        if region_key is not None:
            where.append(ScoreRow.region_key == region_key)
        if segment is not None:
            where.append(ScoreRow.segment == segment)
        if not include_labelled:
            where.append(ScoreRow.labelled.is_(False))
        if heuristic is not None:
            where.append(getattr(ScoreRow, heuristic).is_not(None))
        order = ((getattr(ScoreRow, heuristic).desc(),) if heuristic else ()) + (ScoreRow.item_id, ScoreRow.id)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(ScoreRow).where(*where))
            query = select(ScoreRow).where(*where).order_by(*order).offset(offset)
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query)), int(total)

    def report_labels(self, project_id: str, pool_id: str, labels: list[Label], classes: int) -> tuple[int, int]:
        """Records labels; a whole-item label marks the item and all its regions labelled, a region
        label marks that region (matched by region key and segment). A label of an annotation this pool
        holds already is left out. Returns (recorded, completed)."""
        now = datetime.now(UTC)
        completed = recorded = 0
        with self._sessions.begin() as session:
            known = {r.item_id: r for r in session.scalars(select(ItemRow).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id,
                ItemRow.item_id.in_([label.item_id for label in labels])))}
            annotations = [label.annotation_id for label in labels if label.annotation_id]
            seen = set(session.scalars(select(LabelRow.annotation_id).where(
                LabelRow.project_id == project_id, LabelRow.pool_id == pool_id,
                LabelRow.annotation_id.in_(annotations)))) if annotations else set()
            for i, label in enumerate(labels):
                item = known.get(label.item_id)
                if item is None:
                    raise InvalidArgument(f"labels[{i}].item_id", f"no item {label.item_id!r} in pool {pool_id!r}",
                                          reason="NOT_FOUND")
                bad = [k for k in label.class_labels or [] if not 0 <= k < classes]
                if bad:
                    raise InvalidArgument(f"labels[{i}].class_labels", f"class index {bad[0]} not in [0, {classes})")
                if label.annotation_id:
                    if label.annotation_id in seen:
                        continue  # this annotation is in the pool already (a redelivered event)
                    seen.add(label.annotation_id)
                recorded += 1
                session.add(LabelRow(project_id=project_id, pool_id=pool_id, item_id=label.item_id,
                                     region=label.region, class_labels=list(label.class_labels or []), mask=label.mask,
                                     annotator_id=label.annotator_id, label_time=label.label_time or now,
                                     annotation_id=label.annotation_id))
                where = [ScoreRow.project_id == project_id, ScoreRow.pool_id == pool_id,
                         ScoreRow.item_id == label.item_id]
                if label.region_key is None:
                    if not item.labelled:
                        completed += 1
                    item.labelled = True
                    if label.class_labels:
                        item.image_labels = sorted(set(item.image_labels or []) | set(label.class_labels))
                else:
                    where += [ScoreRow.region_key == label.region_key, ScoreRow.segment == label.segment]
                session.execute(update(ScoreRow).where(*where).values(labelled=True))
        return recorded, completed

    def items_showing(self, project_id: str, image_id: str) -> list[tuple[str, str]]:
        """``(pool_id, item_id)`` of every item of the project's pools that shows the image."""
        with self._sessions() as session:
            return [(r.pool_id, r.item_id) for r in session.execute(select(ItemRow.pool_id, ItemRow.item_id).where(
                ItemRow.project_id == project_id, ItemRow.image_id == image_id).order_by(ItemRow.pool_id))]

    def record_batch(self, project_id: str, pool_id: str, strategy: str, request: dict, regions: list[dict]) -> str:
        selection_id = uuid.uuid4().hex
        with self._sessions.begin() as session:
            session.add(BatchRow(selection_id=selection_id, project_id=project_id, pool_id=pool_id, strategy=strategy,
                                 request=request, regions=regions, created_at=datetime.now(UTC)))
        return selection_id

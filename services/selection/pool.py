"""The pool store: pools, items, predictions, region scores and labels in SQL (SQLite or PostgreSQL).

Plain domain code over a SQLAlchemy session factory; every error names the offending field.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.selection.predictions import Prediction, digest
from services.selection.tables import ItemRow, PoolRow, PredictionRow

POOL_ID = re.compile(r"^[a-z0-9_-]{1,63}$")


@dataclass
class PoolInfo:
    pool_id: str
    project_id: str
    display_name: str
    class_names: list[str]
    created_at: datetime
    score_time: datetime | None
    embedding_dim: int | None = None
    item_count: int = 0
    labelled_count: int = 0
    predicted_count: int = 0


@dataclass
class Item:
    item_id: str
    kind: str = "image"  # image | frame
    image_id: str = ""
    uri: str = ""
    width: int = 0
    height: int = 0
    video_id: str | None = None
    frame_index: int | None = None
    image_labels: list[int] = field(default_factory=list)
    labelled: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def _item(row: ItemRow) -> Item:
    return Item(row.item_id, row.kind, row.image_id, row.uri, row.width, row.height, row.video_id,
                row.frame_index, list(row.image_labels or []), row.labelled)


class PoolStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    # -- pools and items -------------------------------------------------------------------------
    def create_pool(self, project_id: str, pool_id: str, display_name: str, class_names: list[str]) -> PoolInfo:
        pool_id = pool_id or uuid.uuid4().hex[:12]
        if not POOL_ID.match(pool_id):
            raise InvalidArgument("pool_id", "must match [a-z0-9_-]{1,63}")
        if len(class_names) < 2 or len(set(class_names)) != len(class_names) or not all(class_names):
            raise InvalidArgument("class_names", "needs at least 2 distinct non-empty names")
        with self._sessions.begin() as session:
            if session.get(PoolRow, (project_id, pool_id)) is not None:
                raise AlreadyExists(f"pool {pool_id!r} exists", field="pool_id")
            session.add(PoolRow(project_id=project_id, pool_id=pool_id, display_name=display_name,
                                class_names=list(class_names), created_at=_now()))
        return self.get_pool(project_id, pool_id)

    def get_pool(self, project_id: str, pool_id: str) -> PoolInfo:
        with self._sessions() as session:
            row = session.get(PoolRow, (project_id, pool_id))
            if row is None:
                raise NotFound(f"no pool {pool_id!r} in project {project_id!r}", field="pool_id")
            where = (ItemRow.project_id == project_id, ItemRow.pool_id == pool_id)
            items, labelled = session.execute(select(func.count(), func.count().filter(ItemRow.labelled))
                                              .where(*where)).one()
            predicted = session.scalar(select(func.count()).select_from(PredictionRow).where(
                PredictionRow.project_id == project_id, PredictionRow.pool_id == pool_id))
            return PoolInfo(row.pool_id, row.project_id, row.display_name, list(row.class_names), row.created_at,
                            row.score_time, row.embedding_dim, items, labelled, predicted)

    def pool_ids(self, project_id: str) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(PoolRow.pool_id).where(PoolRow.project_id == project_id)
                                        .order_by(PoolRow.pool_id)))

    def register_items(self, project_id: str, pool_id: str, items: list[Item]) -> tuple[int, int]:
        pool = self.get_pool(project_id, pool_id)
        classes = len(pool.class_names)
        for i, item in enumerate(items):
            if not item.item_id:
                raise InvalidArgument(f"items[{i}].item_id", "must not be empty", reason="REQUIRED")
            bad = [k for k in item.image_labels if not 0 <= k < classes]
            if bad:
                raise InvalidArgument(f"items[{i}].image_labels", f"class index {bad[0]} not in [0, {classes})")
        with self._sessions.begin() as session:
            ids = [item.item_id for item in items]
            present = set(session.scalars(select(ItemRow.item_id).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id, ItemRow.item_id.in_(ids))))
            position = session.scalar(select(func.count()).select_from(ItemRow).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id)) or 0
            new = 0
            for item in items:
                if item.item_id in present:
                    continue
                present.add(item.item_id)
                session.add(ItemRow(project_id=project_id, pool_id=pool_id, item_id=item.item_id,
                                    position=position + new, kind=item.kind, image_id=item.image_id or item.item_id,
                                    uri=item.uri, width=item.width, height=item.height, video_id=item.video_id,
                                    frame_index=item.frame_index, image_labels=list(item.image_labels), labelled=False))
                new += 1
        return new, len(items) - new

    def items(self, project_id: str, pool_id: str, item_ids: list[str] | None = None) -> list[Item]:
        with self._sessions() as session:
            query = select(ItemRow).where(ItemRow.project_id == project_id, ItemRow.pool_id == pool_id)
            if item_ids is not None:
                query = query.where(ItemRow.item_id.in_(item_ids))
            return [_item(r) for r in session.scalars(query.order_by(ItemRow.position))]

    def set_image_size(self, project_id: str, pool_id: str, item_id: str, height: int, width: int) -> None:
        with self._sessions.begin() as session:
            session.execute(update(ItemRow).where(ItemRow.project_id == project_id, ItemRow.pool_id == pool_id,
                                                  ItemRow.item_id == item_id).values(height=height, width=width))

    # -- predictions ------------------------------------------------------------------------------
    def put_predictions(self, project_id: str, pool_id: str, predictions: list[tuple[str, Prediction]],
                        first_index: int = 0) -> tuple[int, int]:
        """Stores (replaces) predictions; unknown items are INVALID_ARGUMENT ``predictions[i].item_id``."""
        pool = self.get_pool(project_id, pool_id)
        with self._sessions.begin() as session:
            known = set(session.scalars(select(ItemRow.item_id).where(
                ItemRow.project_id == project_id, ItemRow.pool_id == pool_id,
                ItemRow.item_id.in_([item_id for item_id, _ in predictions]))))
            dim = pool.embedding_dim
            stored = replaced = 0
            for offset, (item_id, prediction) in enumerate(predictions):
                field_name = f"predictions[{first_index + offset}]"
                if item_id not in known:
                    raise InvalidArgument(f"{field_name}.item_id", f"no item {item_id!r} in pool {pool_id!r}",
                                          reason="NOT_FOUND")
                if prediction.embedding is not None:
                    if dim is not None and prediction.embedding.shape[0] != dim:
                        raise InvalidArgument(f"{field_name}.embedding", f"length {prediction.embedding.shape[0]}; "
                                              f"this pool's embeddings have length {dim}", reason="SHAPE_MISMATCH")
                    if dim is None:
                        dim = prediction.embedding.shape[0]
                        session.execute(update(PoolRow).where(PoolRow.project_id == project_id,
                                                              PoolRow.pool_id == pool_id).values(embedding_dim=dim))
                blob = prediction.to_bytes()
                row = session.get(PredictionRow, (project_id, pool_id, item_id))
                if row is None:
                    session.add(PredictionRow(project_id=project_id, pool_id=pool_id, item_id=item_id, blob=blob,
                                              digest=digest(blob), model_version=prediction.model_version,
                                              created_at=_now()))
                else:
                    row.blob, row.digest, row.model_version, row.created_at = (
                        blob, digest(blob), prediction.model_version, _now())
                    replaced += 1
                stored += 1
                session.flush()
        return stored, replaced

    def prediction(self, project_id: str, pool_id: str, item_id: str) -> tuple[Prediction, str] | None:
        with self._sessions() as session:
            row = session.get(PredictionRow, (project_id, pool_id, item_id))
            return None if row is None else (Prediction.from_bytes(row.blob, row.model_version), row.digest)

    def predicted_item_ids(self, project_id: str, pool_id: str) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(PredictionRow.item_id).where(
                PredictionRow.project_id == project_id, PredictionRow.pool_id == pool_id)
                .order_by(PredictionRow.item_id)))

"""Data snapshots: a project's accepted annotations frozen, content-addressed, with a stable split.

A snapshot is its entries (annotation id, image id and size, label, mask RLE, split, pseudo-label flag);
its id is the SHA-256 of their canonical JSON (sorted by annotation id, with the project and the held-out
percentage), so the same annotations always give the same snapshot and every model names exactly what
it learned from. The split is per image, by a hash of the project's split key (its id unless the
TRAINING_SPLIT_KEYS setting names another) and the image id: an image is held out in every snapshot of its
project or in none, so no model of the project ever trained on a held-out image and the gate compares
versions on images neither saw. The key is fixed at the project's first snapshot; projects sharing one
(the two arms of a comparison) hold out the same images. Entries are copied (not referenced): a later
review that rejects an annotation changes later snapshots, never this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.common.errors import FailedPrecondition, NotFound
from services.training.annotations import AnnotationStore
from services.training.tables import SnapshotEntryRow, SnapshotRow

BACKGROUND = "background"
ID_HEX_DIGITS = 32


def is_heldout(split_key: str, image_id: str, heldout_percent: int) -> bool:
    """Whether ``image_id`` is in the held-out split of the projects keyed ``split_key`` (a project's own id
    by default): stable across snapshots and processes."""
    digest = hashlib.sha256(f"{split_key}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < heldout_percent


@dataclass(frozen=True)
class Entry:
    annotation_id: str
    image_id: str
    uri: str
    width: int
    height: int
    label: str
    mask_counts: str
    heldout: bool
    pseudo_label: bool = False


@dataclass(frozen=True)
class Snapshot:
    project_id: str
    snapshot_id: str
    annotation_count: int
    image_count: int
    train_image_count: int
    heldout_image_count: int
    heldout_percent: int
    class_names: list[str]
    created_at: datetime
    split_key: str


def class_names(labels) -> list[str]:
    """``background`` first, then the labels, sorted (a label named ``background`` is class 0)."""
    return [BACKGROUND, *sorted(set(labels) - {BACKGROUND})]


def snapshot_id(project_id: str, heldout_percent: int, entries: list[Entry]) -> str:
    """The content address of a snapshot: image ids, sizes, labels, masks and split (not the URIs, which
    say where the pixels are, not what was annotated)."""
    canonical = json.dumps({
        "project_id": project_id, "heldout_percent": heldout_percent,
        "entries": [[e.annotation_id, e.image_id, e.width, e.height, e.label, e.mask_counts, e.heldout,
                     e.pseudo_label] for e in sorted(entries, key=lambda e: e.annotation_id)],
    }, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_HEX_DIGITS]


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives times back without their zone)."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _snapshot(row: SnapshotRow) -> Snapshot:
    return Snapshot(row.project_id, row.snapshot_id, row.annotation_count, row.image_count, row.train_image_count,
                    row.heldout_image_count, row.heldout_percent, list(row.class_names), utc(row.created_at),
                    row.split_key)


class SnapshotStore:
    def __init__(self, sessions: sessionmaker, annotations: AnnotationStore) -> None:
        self._sessions, self._annotations = sessions, annotations

    def freeze(self, project_id: str, heldout_percent: int, split_key: str = "") -> tuple[Snapshot, bool]:
        """The snapshot of the project's accepted annotations now, split by ``split_key`` (empty: the project
        id); ``created`` False when it existed. NOT_FOUND for a project without any annotation;
        FAILED_PRECONDITION when none is accepted (or only pseudo-labels are), or when the project's earlier
        snapshots were split by another key (its models trained on images the new key would hold out)."""
        split_key = split_key or project_id
        if self._annotations.count(project_id) == 0:
            raise NotFound(f"the training service has no annotation of project {project_id!r}", field="project_id")
        with self._sessions() as session:
            earlier = session.scalars(select(SnapshotRow.split_key).where(
                SnapshotRow.project_id == project_id, SnapshotRow.split_key != split_key).limit(1)).first()
        if earlier is not None:
            raise FailedPrecondition(f"project {project_id!r} is split by key {earlier!r} since its first snapshot; "
                                     f"the setting now says {split_key!r}, which would hold out images its models "
                                     "trained on: restore TRAINING_SPLIT_KEYS for it", field="project_id")
        rows = self._annotations.accepted(project_id)
        if not any(not r.pseudo_label for r in rows):
            raise FailedPrecondition(f"project {project_id!r} has no accepted human annotation: the snapshot would "
                                     "be empty", field="project_id")
        # Paint order within an image: submit time, then id (a later annotation covers an earlier one).
        order = {r.annotation_id: n for n, r in enumerate(sorted(rows, key=lambda r: (r.submit_time, r.annotation_id)))}
        entries = [Entry(r.annotation_id, r.image_id, r.uri, r.width, r.height, r.label, r.mask_counts,
                         is_heldout(split_key, r.image_id, heldout_percent), r.pseudo_label) for r in rows]
        sid = snapshot_id(project_id, heldout_percent, entries)
        existing = self.find(project_id, sid)
        if existing is not None:
            return existing, False
        images = {e.image_id: e.heldout for e in entries}
        heldout_images = sum(images.values())
        row = SnapshotRow(project_id=project_id, snapshot_id=sid, annotation_count=len(entries),
                          image_count=len(images), train_image_count=len(images) - heldout_images,
                          heldout_image_count=heldout_images, heldout_percent=heldout_percent, split_key=split_key,
                          class_names=class_names(e.label for e in entries), created_at=datetime.now(UTC))
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                session.add_all(SnapshotEntryRow(
                    project_id=project_id, snapshot_id=sid, annotation_id=e.annotation_id, image_id=e.image_id,
                    uri=e.uri, width=e.width, height=e.height, label=e.label, mask_counts=e.mask_counts,
                    heldout=e.heldout, pseudo_label=e.pseudo_label, position=order[e.annotation_id])
                    for e in entries)
        except IntegrityError:  # frozen by a concurrent call: the same content, the same snapshot
            return self.get(project_id, sid), False
        return _snapshot(row), True

    def find(self, project_id: str, sid: str) -> Snapshot | None:
        with self._sessions() as session:
            row = session.get(SnapshotRow, (project_id, sid))
        return None if row is None else _snapshot(row)

    def get(self, project_id: str, sid: str) -> Snapshot:
        found = self.find(project_id, sid) if sid else None
        if found is None:
            raise NotFound(f"no snapshot {sid!r} in project {project_id!r}", field="snapshot_id")
        return found

    def entries(self, project_id: str, sid: str) -> list[Entry]:
        """The snapshot's entries in paint order (submit time, then id)."""
        with self._sessions() as session:
            rows = session.scalars(select(SnapshotEntryRow).where(
                SnapshotEntryRow.project_id == project_id, SnapshotEntryRow.snapshot_id == sid)
                .order_by(SnapshotEntryRow.position))
            return [Entry(r.annotation_id, r.image_id, r.uri, r.width, r.height, r.label, r.mask_counts, r.heldout,
                          r.pseudo_label) for r in rows]

    def list(self, project_id: str, offset: int, limit: int) -> tuple[list[Snapshot], int]:
        with self._sessions() as session:
            total = int(session.scalar(select(func.count()).select_from(SnapshotRow)
                                       .where(SnapshotRow.project_id == project_id)) or 0)
            rows = session.scalars(select(SnapshotRow).where(SnapshotRow.project_id == project_id)
                                   .order_by(SnapshotRow.created_at.desc(), SnapshotRow.snapshot_id)
                                   .offset(offset).limit(limit))
            return [_snapshot(r) for r in rows], total


def check_trainable(snapshot: Snapshot) -> None:
    """FAILED_PRECONDITION (naming ``snapshot_id``) for a snapshot the task model cannot be gated on."""
    if snapshot.train_image_count == 0:
        raise FailedPrecondition(f"snapshot {snapshot.snapshot_id} has no image in the training split "
                                 f"({snapshot.image_count} images, all held out)", field="snapshot_id")
    if snapshot.heldout_image_count == 0:
        raise FailedPrecondition(f"snapshot {snapshot.snapshot_id} has no held-out image to gate on "
                                 f"({snapshot.image_count} images; {snapshot.heldout_percent}% are held out by "
                                 "a hash of the split key and image id): annotate more images", field="snapshot_id")

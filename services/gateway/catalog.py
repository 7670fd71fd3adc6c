"""Projects and their images: creation, listing, upload checks and storage on disk.

Image bytes are stored under ``VAR_DIR/images`` with a generated name (``<uuid>.<ext>`` from the
decoded format); the client's file name is kept for display only (its base name by either separator,
``..\\..\\y.png`` is ``y.png``) and never touches a path.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath

from PIL import Image as PILImage
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.images import decode_image
from services.common.keys import Principal
from services.gateway.tables import Annotation, Image, Project, Task
from services.gateway.text import refusal

PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


def display_name(name: str, fallback: str) -> str:
    """A client-given name fit to show: no control characters, bidirectional overrides or separators
    (text.refusal), at most 255 characters."""
    kept = "".join(char for char in name if refusal(char) is None).strip()[:255]
    return kept or fallback


def file_display_name(filename: str, fallback: str) -> str:
    """An uploaded file's name fit to show: its base name whichever separator the client's system uses
    (PureWindowsPath splits on / and \\ and drops a drive), never just dots."""
    name = display_name(PureWindowsPath(filename or "").name, fallback)
    return fallback if not name.strip(". ") else name


@dataclass(frozen=True)
class Upload:
    image: Image
    duplicate: bool


class Catalog:
    def __init__(self, sessions: sessionmaker, image_dir: Path, max_bytes: int, max_pixels: int) -> None:
        self.sessions = sessions
        self.image_dir = image_dir
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    # --- projects --------------------------------------------------------------------------------
    def create_project(self, project_id: str, name: str, labels: list[str], creator: str) -> Project:
        if not PROJECT_ID.match(project_id):
            raise InvalidArgument("project_id", "1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit")
        row = Project(project_id=project_id, name=name or project_id, labels=labels, created_by=creator,
                      created_at=datetime.now(UTC))
        try:
            with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise AlreadyExists(f"project {project_id!r} exists", field="project_id") from None
        return row

    def project(self, project_id: str) -> Project:
        with self.sessions() as session:
            row = session.get(Project, project_id)
        if row is None:
            raise NotFound(f"no project {project_id!r}", field="project_id")
        return row

    def delete_project(self, project_id: str) -> dict[str, int]:
        """Deletes a project's rows (annotations, tasks, images, the project) in one transaction, then its
        image files. Counts of what went."""
        self.project(project_id)
        with self.sessions.begin() as session:
            stored = list(session.scalars(select(Image.stored_name).where(Image.project_id == project_id)).all())
            annotations = session.execute(delete(Annotation).where(Annotation.project_id == project_id)).rowcount
            tasks = session.execute(delete(Task).where(Task.project_id == project_id)).rowcount
            session.execute(delete(Image).where(Image.project_id == project_id))
            session.execute(delete(Project).where(Project.project_id == project_id))
        for name in stored:
            (self.image_dir / name).unlink(missing_ok=True)
        return {"images": len(stored), "tasks": tasks, "annotations": annotations}

    def projects(self, principal: Principal) -> list[Project]:
        """The projects the key may see (annotators and reviewers only their own)."""
        with self.sessions() as session:
            rows = session.scalars(select(Project).order_by(Project.created_at)).all()
        return [row for row in rows if principal.may_access(row.project_id)]

    # --- images ----------------------------------------------------------------------------------
    def add_image(self, project_id: str, data: bytes, filename: str) -> Upload:
        """Checks size, type and pixel count (from the header, before decoding), then stores."""
        self.project(project_id)
        # Full decode (EXIF orientation applied, as the segmentation service sees it): no corrupt file kept.
        height, width = decode_image(data, self.max_bytes, self.max_pixels, field="file").shape[:2]
        with PILImage.open(io.BytesIO(data)) as probe:
            fmt = probe.format
        digest = hashlib.sha256(data).hexdigest()
        with self.sessions() as session:
            existing = session.scalars(select(Image).where(Image.project_id == project_id,
                                                          Image.sha256 == digest)).first()
        if existing is not None:
            return Upload(existing, True)
        stored_name = f"{uuid.uuid4().hex}.{EXTENSIONS[fmt]}"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        path = self.image_dir / stored_name
        path.write_bytes(data)
        # display only; control characters (NUL cannot be stored by PostgreSQL) dropped
        safe_name = file_display_name(filename, stored_name)
        try:
            with self.sessions.begin() as session:
                position = session.scalar(select(func.coalesce(func.max(Image.position), 0))
                                          .where(Image.project_id == project_id)) + 1
                row = Image(project_id=project_id, image_id=f"img_{uuid.uuid4().hex[:16]}", filename=safe_name,
                            stored_name=stored_name, content_type=f"image/{fmt.lower()}", width=width,
                            height=height, size_bytes=len(data), sha256=digest, position=position,
                            created_at=datetime.now(UTC))
                session.add(row)
        except IntegrityError:  # the same bytes uploaded concurrently: keep the first
            path.unlink(missing_ok=True)
            with self.sessions() as session:
                return Upload(session.scalars(select(Image).where(Image.project_id == project_id,
                                                                  Image.sha256 == digest)).one(), True)
        return Upload(row, False)

    def image(self, project_id: str, image_id: str) -> Image:
        with self.sessions() as session:
            row = session.get(Image, (project_id, image_id))
        if row is None:
            raise NotFound(f"no image {image_id!r} in project {project_id!r}", field="image_id")
        return row

    def image_bytes(self, row: Image) -> bytes:
        return (self.image_dir / row.stored_name).read_bytes()

    def images(self, project_id: str, offset: int = 0, limit: int = 100) -> tuple[list[Image], int]:
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Image).where(Image.project_id == project_id))
            rows = session.scalars(select(Image).where(Image.project_id == project_id)
                                   .order_by(Image.position).offset(offset).limit(limit)).all()
        return list(rows), int(total or 0)

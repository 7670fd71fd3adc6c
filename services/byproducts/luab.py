"""Training export for learning using annotation byproducts (LUAB, Han et al., ICCV 2023).

One JSON line per image over its SUBMITTED sessions, as the ImageNet-AB / COCO-AB loaders read them:
the clicks, the mouse positions, the box prompts (``boxes``: x0, y0, x1, y1, t_ms, normalised), the
category histories, and a localisation target derived from them: a point (mean of each session's first
positive click; a box's step is a click at its centre) and a heatmap (a Gaussian at every click, and at
every mouse position weighted by ``mouse_weight``), kept compact as a low-resolution uint8 grid, base64,
scaled so that its maximum is 255.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts import queries
from services.byproducts.tables import SessionRow
from services.byproducts.validation import KINDS

USED_KINDS = (KINDS["click"], KINDS["mouse"], KINDS["box"], KINDS["category_change"], KINDS["submit"])


@dataclass(frozen=True)
class HeatmapSpec:
    size: int = 64
    sigma: float = 2.0
    mouse_weight: float = 0.0


def heatmap(clicks: np.ndarray, mouse: np.ndarray, spec: HeatmapSpec) -> np.ndarray:
    """size x size uint8 grid (rows = y); clicks and mouse are (n, 2) arrays of normalised x, y."""
    grid = np.zeros((spec.size, spec.size), dtype=np.float64)
    for points, weight in ((clicks, 1.0), (mouse, spec.mouse_weight)):
        if weight > 0 and len(points):
            hist, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=spec.size, range=[[0, 1], [0, 1]])
            grid += weight * hist
    grid = gaussian_filter(grid, spec.sigma, mode="constant")
    peak = grid.max()
    return (np.round(grid / peak * 255) if peak > 0 else grid).astype(np.uint8)


def image_record(image: common_pb2.ImageRef, sessions: Sequence[tuple[pb.Session, list[pb.Event]]],
                 spec: HeatmapSpec) -> dict:
    clicks, mouse, boxes, histories, labels, firsts = [], [], [], [], [], []
    for session, events in sessions:
        first = None
        for event in events:
            kind = event.WhichOneof("payload")
            if kind == "click":
                click = event.click
                clicks.append([click.x, click.y, event.t_ms, click.positive])
                if first is None and click.positive:
                    first = (click.x, click.y)
            elif kind == "mouse":
                mouse.extend([p.x, p.y, p.t_ms] for p in event.mouse.points)
            elif kind == "box":
                boxes.append([event.box.x0, event.box.y0, event.box.x1, event.box.y1, event.t_ms])
            elif kind == "category_change":
                change = event.category_change
                histories.append({"index": change.index, "name": change.name,
                                  "time": change.t_ms if change.HasField("t_ms") else event.t_ms,
                                  "usingKeyboard": change.using_keyboard})
            elif kind == "submit":
                labels.extend(label for label in event.submit.labels if label not in labels)
        if first is not None:
            firsts.append(first)
    if not labels and histories:
        labels = [histories[-1]["name"]]
    grid = heatmap(np.array([c[:2] for c in clicks]).reshape(-1, 2), np.array([m[:2] for m in mouse]).reshape(-1, 2),
                   spec)
    return {
        "image_id": image.image_id, "uri": image.uri, "width": image.width, "height": image.height,
        "labels": labels, "sessions": [session.session_id for session, _ in sessions],
        "point": [float(v) for v in np.mean(firsts, axis=0)] if firsts else None,
        "clicks": clicks, "mouse": mouse, "boxes": boxes, "category_histories": histories,
        "heatmap": {"size": [spec.size, spec.size], "dtype": "uint8",
                    "data": base64.b64encode(grid.tobytes(order="C")).decode()},
    }


def _submitted(where: pb.SessionFilter) -> pb.SessionFilter:
    copy = pb.SessionFilter()
    copy.CopyFrom(where)
    copy.outcome = common_pb2.SESSION_OUTCOME_SUBMITTED
    return copy


def lines(engine: Engine, project_id: str, where: pb.SessionFilter, spec: HeatmapSpec) -> Iterator[bytes]:
    """One line per image of the matching SUBMITTED sessions (grouped by project and image id)."""
    clauses = queries.session_filters(project_id, _submitted(where))
    with Session(engine) as connection:
        keys = connection.execute(select(SessionRow.project_id, SessionRow.image_id).where(*clauses)
                                  .distinct().order_by(SessionRow.project_id, SessionRow.image_id)).all()
    for project, image_id in keys:
        with Session(engine) as connection:
            rows = connection.scalars(select(SessionRow).where(
                *clauses, SessionRow.project_id == project, SessionRow.image_id == image_id)
                .order_by(SessionRow.start_time, SessionRow.session_id)).all()
            sessions = [(queries.session_message(row), queries.load_events(connection, row.session_id, USED_KINDS))
                        for row in rows]
        image = common_pb2.ImageRef()
        for session, _ in sessions:  # the most complete reference among the sessions
            if session.image.width and not image.width or not image.image_id:
                image.CopyFrom(session.image)
        record = image_record(image, sessions, spec)
        yield json.dumps(record, separators=(",", ":")).encode() + b"\n"

"""Checks of one event that need no state: ids present, payload set, coordinates in [0, 1] (boxes not
inverted), times.

``check_event`` returns the first problem of an event as an ``InvalidArgument`` whose field is the
dotted path inside the request (``events[3].click.x``), or None. What needs the session's history
(unknown session, seq conflicts, times going backwards across events) is checked by ``ingest``.
"""

from __future__ import annotations

from annotation.v1 import byproducts_pb2 as pb
from services.common.errors import InvalidArgument

MAX_ID = 128
MAX_SEQ = 2**53  # sequence numbers travel through Lua (doubles) and JSON
MAX_POINTS = 1000

# Event payload field name -> EventKind number (the oneof mirrors the enum, in order).
KINDS: dict[str, int] = {field.name: field.number - 9
                         for field in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields}


def _unit(value: float) -> bool:
    return 0.0 <= value <= 1.0  # False for NaN too


def _id(value: str, field: str, required: bool = True) -> InvalidArgument | None:
    """Ids land in indexed columns: on PostgreSQL a NUL or an over-long id would fail the worker's
    insert on every redelivery (a poison batch), so both are refused here, at ingest."""
    if not value:
        return InvalidArgument(field, "required", reason="MISSING") if required else None
    if len(value) > MAX_ID:
        return InvalidArgument(field, f"longer than {MAX_ID} characters", reason="TOO_LONG")
    if "\x00" in value:
        return InvalidArgument(field, "must not contain NUL characters", reason="INVALID_CHARACTER")
    return None


def _points(mouse: pb.MouseTrajectory, t_ms: int, at: str) -> InvalidArgument | None:
    if not mouse.points:
        return InvalidArgument(f"{at}.mouse.points", "at least one point is required", reason="MISSING")
    if len(mouse.points) > MAX_POINTS:
        return InvalidArgument(f"{at}.mouse.points", f"at most {MAX_POINTS} points per event", reason="TOO_MANY")
    previous = 0
    for j, point in enumerate(mouse.points):
        if not _unit(point.x):
            return InvalidArgument(f"{at}.mouse.points[{j}].x", f"{point.x} is outside [0, 1]", reason="OUT_OF_RANGE")
        if not _unit(point.y):
            return InvalidArgument(f"{at}.mouse.points[{j}].y", f"{point.y} is outside [0, 1]", reason="OUT_OF_RANGE")
        if point.t_ms < previous:
            return InvalidArgument(f"{at}.mouse.points[{j}].t_ms", f"time goes backwards ({point.t_ms} < {previous})",
                                   reason="TIME_BACKWARDS")
        previous = point.t_ms
    if t_ms != previous:
        return InvalidArgument(f"{at}.t_ms", f"must equal the last point's t_ms ({previous}), is {t_ms}",
                               reason="TIME_MISMATCH")
    return None


def _xy(message, at: str) -> InvalidArgument | None:
    for name in ("x", "y"):
        value = getattr(message, name)
        if not _unit(value):
            return InvalidArgument(f"{at}.{name}", f"{value} is outside [0, 1]", reason="OUT_OF_RANGE")
    return None


def _box(box: pb.BoxEvent, at: str) -> InvalidArgument | None:
    """Edges in [0, 1], and a box with an extent: x1 > x0 and y1 > y0 (INVERTED names the far edge)."""
    for name in ("x0", "y0", "x1", "y1"):
        value = getattr(box, name)
        if not _unit(value):
            return InvalidArgument(f"{at}.{name}", f"{value} is outside [0, 1]", reason="OUT_OF_RANGE")
    for near, far in (("x0", "x1"), ("y0", "y1")):
        if not getattr(box, far) > getattr(box, near):
            return InvalidArgument(f"{at}.{far}", f"{far} ({getattr(box, far)}) must be greater than {near} "
                                   f"({getattr(box, near)})", reason="INVERTED")
    return None


def _payload(event: pb.Event, kind: str, at: str) -> InvalidArgument | None:
    if kind == "mouse":
        return _points(event.mouse, event.t_ms, at)
    if kind == "click":
        problem = _xy(event.click, f"{at}.click")
        if problem is None and event.click.WhichOneof("mask_change") == "iou_change" \
                and not _unit(event.click.iou_change):
            problem = InvalidArgument(f"{at}.click.iou_change", "outside [0, 1]", reason="OUT_OF_RANGE")
        return problem
    if kind == "correction":
        return _xy(event.correction, f"{at}.correction")
    if kind == "box":
        return _box(event.box, f"{at}.box")
    if kind == "zoom_pan":
        view = event.zoom_pan
        if not view.zoom > 0:
            return InvalidArgument(f"{at}.zoom_pan.zoom", "must be > 0", reason="OUT_OF_RANGE")
        for name in ("view_x", "view_y"):
            if not _unit(getattr(view, name)):
                return InvalidArgument(f"{at}.zoom_pan.{name}", "outside [0, 1]", reason="OUT_OF_RANGE")
        for name in ("view_width", "view_height"):
            value = getattr(view, name)
            if not 0.0 < value <= 1.0:
                return InvalidArgument(f"{at}.zoom_pan.{name}", "outside (0, 1]", reason="OUT_OF_RANGE")
    if kind == "session_start":
        session = event.session_start.session
        for name in ("session_id", "project_id"):
            value = getattr(session, name)
            if value and value != getattr(event, name):
                return InvalidArgument(f"{at}.session_start.session.{name}", f"must equal the event's {name}",
                                       reason="MISMATCH")
        return _id(session.annotator_id, f"{at}.session_start.session.annotator_id") or \
            _id(session.task_id, f"{at}.session_start.session.task_id", required=False) or \
            _id(session.image.image_id, f"{at}.session_start.session.image.image_id", required=False)
    return None


def check_event(event: pb.Event, at: str) -> InvalidArgument | None:
    """The first problem of ``event`` (its fields are named under ``at``, e.g. ``events[3]``)."""
    for name in ("project_id", "event_id", "session_id"):
        problem = _id(getattr(event, name), f"{at}.{name}")
        if problem:
            return problem
    if not 1 <= event.seq <= MAX_SEQ:
        return InvalidArgument(f"{at}.seq", "must be >= 1 (the session_start is seq 1)", reason="MISSING")
    kind = event.WhichOneof("payload")
    if kind is None:
        return InvalidArgument(f"{at}.payload", "exactly one payload must be set", reason="MISSING")
    if (kind == "session_start") != (event.seq == 1):
        return InvalidArgument(f"{at}.seq", "seq 1 is the session_start and only it",
                               reason="SESSION_START_SEQ")
    return _payload(event, kind, at)


def normalise(event: pb.Event) -> None:
    """Fill what the client may leave implicit: the session's ids in its session_start."""
    if event.WhichOneof("payload") == "session_start":
        session = event.session_start.session
        session.session_id = event.session_id
        session.project_id = event.project_id

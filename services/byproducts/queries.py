"""Reading the store: sessions with their ingest statistics, events, signals; filters and paging.

Page tokens are opaque (base64 JSON of an offset, or of the last seq for events, plus a fingerprint
of the request), so a token reused with other filters is refused (INVALID_ARGUMENT).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts import signals as signal_math
from services.byproducts.tables import EventRow, SessionRow, SignalsRow
from services.common.errors import InvalidArgument, NotFound

DEFAULT_PAGE, MAX_PAGE = 50, 1000


def load_events(connection, session_id: str, kinds: Sequence[int] = ()) -> list[pb.Event]:
    query = select(EventRow.data).where(EventRow.session_id == session_id)
    if kinds:
        query = query.where(EventRow.kind.in_(kinds))
    return [pb.Event.FromString(blob) for blob in connection.scalars(query.order_by(EventRow.seq))]


def missing_ranges(connection, session_id: str) -> list[tuple[int, int]]:
    """Ranges of seq below the highest stored one that are not stored, ascending."""
    previous = func.lag(EventRow.seq).over(order_by=EventRow.seq).label("previous")
    steps = select(EventRow.seq, previous).where(EventRow.session_id == session_id).subquery()
    holes = connection.execute(select(steps.c.previous, steps.c.seq)
                               .where(steps.c.seq - func.coalesce(steps.c.previous, 0) > 1)
                               .order_by(steps.c.seq)).all()
    return [((previous or 0) + 1, seq - 1) for previous, seq in holes]


def session_stats(connection, session_id: str) -> pb.SessionStats:
    count, last = connection.execute(select(func.count(), func.max(EventRow.seq))
                                     .where(EventRow.session_id == session_id)).one()
    return pb.SessionStats(event_count=count, last_seq=last or 0, missing=[
        pb.SeqRange(first=first, last=last) for first, last in missing_ranges(connection, session_id)])


def _fingerprint(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _token(value: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": value, "f": fingerprint}).encode()).decode()


def _untoken(token: str, fingerprint: str) -> int:
    if not token:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        value, check = int(decoded["v"]), decoded["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page.page_token", "not a token from a previous page") from None
    if check != fingerprint:
        raise InvalidArgument("page.page_token", "the request's other fields changed between pages")
    return value


def page_size(page: common_pb2.PageRequest) -> int:
    return min(page.page_size or DEFAULT_PAGE, MAX_PAGE)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def session_filters(project_id: str, where: pb.SessionFilter) -> list:
    clauses = []
    if project_id:
        clauses.append(SessionRow.project_id == project_id)
    for name in ("session_id", "task_id", "annotator_id"):
        if getattr(where, name):
            clauses.append(getattr(SessionRow, name) == getattr(where, name))
    if where.outcome:
        clauses.append(SessionRow.outcome == where.outcome)
    if where.question_type:
        clauses.append(SessionRow.question_type == where.question_type)
    window = where.time_range
    if window.HasField("start"):
        clauses.append(SessionRow.start_time >= window.start.ToDatetime(UTC))
    if window.HasField("end"):
        clauses.append(SessionRow.start_time < window.end.ToDatetime(UTC))
    return clauses


def session_message(row: SessionRow) -> pb.Session:
    return pb.Session.FromString(row.data)


def iter_sessions(engine: Engine, project_id: str, where: pb.SessionFilter, batch: int = 200):
    """Every matching session row, newest first (exports)."""
    offset = 0
    while True:
        with Session(engine) as connection:
            rows = connection.scalars(select(SessionRow).where(*session_filters(project_id, where))
                                      .order_by(SessionRow.start_time.desc(), SessionRow.session_id.desc())
                                      .offset(offset).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        offset += batch


def list_sessions(engine: Engine, project_id: str, where: pb.SessionFilter,
                  page: common_pb2.PageRequest) -> tuple[list[pb.Session], common_pb2.PageInfo]:
    fingerprint = _fingerprint("sessions", project_id, where.SerializeToString(deterministic=True))
    offset, size = _untoken(page.page_token, fingerprint), page_size(page)
    clauses = session_filters(project_id, where)
    with Session(engine) as connection:
        total = connection.scalar(select(func.count()).select_from(SessionRow).where(*clauses))
        rows = connection.execute(select(SessionRow.data).where(*clauses)
                                  .order_by(SessionRow.start_time.desc(), SessionRow.session_id.desc())
                                  .offset(offset).limit(size)).scalars().all()
    more = offset + len(rows) < total
    info = common_pb2.PageInfo(total_size=total, next_page_token=_token(offset + size, fingerprint) if more else "")
    return [pb.Session.FromString(data) for data in rows], info


def get_session(engine: Engine, project_id: str, session_id: str) -> tuple[pb.Session, pb.SessionStats]:
    if not session_id:
        raise InvalidArgument("session_id", "required")
    with Session(engine) as connection:
        row = connection.get(SessionRow, session_id)
        if row is None or (project_id and row.project_id != project_id):
            raise NotFound(f"no session {session_id!r} in project {project_id!r}", field="session_id")
        return session_message(row), session_stats(connection, session_id)


def list_events(engine: Engine, request: pb.ListEventsRequest) -> tuple[list[pb.Event], common_pb2.PageInfo]:
    if not request.session_id:
        raise InvalidArgument("session_id", "required")
    fingerprint = _fingerprint("events", request.project_id, request.session_id, request.from_seq,
                               request.to_seq, tuple(request.kinds))
    after, size = _untoken(request.page.page_token, fingerprint), page_size(request.page)
    clauses = [EventRow.session_id == request.session_id, EventRow.seq > max(after, request.from_seq - 1)]
    if request.project_id:
        clauses.append(EventRow.project_id == request.project_id)
    if request.to_seq:
        clauses.append(EventRow.seq <= request.to_seq)
    if request.kinds:
        clauses.append(EventRow.kind.in_(list(request.kinds)))
    with Session(engine) as connection:
        rows = connection.execute(select(EventRow.seq, EventRow.data).where(*clauses)
                                  .order_by(EventRow.seq).limit(size + 1)).all()
        known = [EventRow.session_id == request.session_id]
        if request.project_id:
            known.append(EventRow.project_id == request.project_id)
        if not rows and not after and connection.scalar(select(func.count()).select_from(EventRow).where(*known)) == 0:
            raise NotFound(f"no events of session {request.session_id!r}", field="session_id")
    more = len(rows) > size
    rows = rows[:size]
    info = common_pb2.PageInfo(total_size=-1,
                               next_page_token=_token(rows[-1][0], fingerprint) if more and rows else "")
    return [pb.Event.FromString(data) for _, data in rows], info


def signals_message(row: SignalsRow, session: pb.Session) -> pb.SessionSignals:
    message = pb.SessionSignals(
        session_id=row.session_id, annotator_id=session.annotator_id, task_id=session.task_id,
        question_type=session.question_type, time_to_first_click_ms=row.time_to_first_click_ms,
        total_time_ms=row.total_time_ms, active_time_ms=row.active_time_ms,
        idle_gaps=[pb.IdleGap(start_ms=start, duration_ms=duration) for start, duration in row.idle_gaps],
        idle_threshold_ms=row.idle_threshold_ms, click_count=row.click_count,
        correction_count=row.correction_count, mouse_path_length=row.mouse_path_length,
        clicks_per_minute=row.clicks_per_minute, category_change_count=row.category_change_count,
        keyboard_fraction=row.keyboard_fraction, outcome=session.outcome, complete=bool(row.complete))
    message.compute_time.FromDatetime(_aware(row.compute_time))
    return message


def get_signals(engine: Engine, project_id: str, session_id: str, threshold_ms: int) -> pb.SessionSignals:
    """Stored signals, or (for a session not ended yet) signals computed now and not stored."""
    if not session_id:
        raise InvalidArgument("session_id", "required")
    with Session(engine) as connection:
        session_row = connection.get(SessionRow, session_id)
        if session_row is None or (project_id and session_row.project_id != project_id):
            raise NotFound(f"no session {session_id!r} in project {project_id!r}", field="session_id")
        session = session_message(session_row)
        stored = connection.get(SignalsRow, session_id)
        if stored is not None:
            return signals_message(stored, session)
        result = signal_math.compute(load_events(connection, session_id), threshold_ms)
    row = SignalsRow(session_id=session_id, project_id=session.project_id, complete=0,
                     compute_time=datetime.now(UTC),
                     **{name: getattr(result, name) for name in (
                         "time_to_first_click_ms", "total_time_ms", "active_time_ms", "idle_gaps",
                         "idle_threshold_ms", "click_count", "correction_count", "mouse_path_length",
                         "clicks_per_minute", "category_change_count", "keyboard_fraction")})
    return signals_message(row, session)


def list_signals(engine: Engine, project_id: str, where: pb.SessionFilter,
                 page: common_pb2.PageRequest) -> tuple[list[pb.SessionSignals], common_pb2.PageInfo]:
    """Stored signals (ended sessions) of the matching sessions, newest session first."""
    fingerprint = _fingerprint("signals", project_id, where.SerializeToString(deterministic=True))
    offset, size = _untoken(page.page_token, fingerprint), page_size(page)
    clauses = [*session_filters(project_id, where), SignalsRow.session_id == SessionRow.session_id]
    with Session(engine) as connection:
        total = connection.scalar(select(func.count()).select_from(SessionRow).join(
            SignalsRow, SignalsRow.session_id == SessionRow.session_id).where(*clauses))
        rows = connection.execute(select(SignalsRow, SessionRow.data).join(
            SessionRow, SignalsRow.session_id == SessionRow.session_id).where(*clauses)
            .order_by(SessionRow.start_time.desc(), SessionRow.session_id.desc())
            .offset(offset).limit(size)).all()
    more = offset + len(rows) < total
    info = common_pb2.PageInfo(total_size=total, next_page_token=_token(offset + size, fingerprint) if more else "")
    return [signals_message(row, pb.Session.FromString(data)) for row, data in rows], info

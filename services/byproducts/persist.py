"""Persisting a batch of admitted events exactly once, then what follows from them.

``persist`` is idempotent, so the worker may run it again on a redelivered message (acks_late after
kill -9): events are bulk-inserted with ``ON CONFLICT DO NOTHING`` on (session_id, seq) and
(session_id, event_id); the session row is rebuilt from the session's start/submit/skip/end events
(so batches may land in any order); the signals of an ended session are recomputed from its events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts import signals as signal_math
from services.byproducts.queries import load_events, missing_ranges
from services.byproducts.tables import EventRow, SessionRow, SignalsRow
from services.byproducts.validation import KINDS

LIFECYCLE = (KINDS["session_start"], KINDS["submit"], KINDS["skip"], KINDS["session_end"])
INSERT_CHUNK = 2000


def _insert(bind, table):
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _ms(timestamp) -> int | None:
    return timestamp.ToMilliseconds() if timestamp.seconds or timestamp.nanos else None


def event_row(event: pb.Event, received_ms: int) -> dict:
    return {"session_id": event.session_id, "seq": event.seq, "event_id": event.event_id,
            "project_id": event.project_id, "kind": KINDS[event.WhichOneof("payload")], "t_ms": event.t_ms,
            "client_time_ms": _ms(event.time), "received_ms": received_ms, "data": event.SerializeToString()}


COLUMNS = ("session_id", "seq", "event_id", "project_id", "kind", "t_ms", "client_time_ms", "received_ms", "data")
# PostgreSQL: one statement per chunk, the rows as arrays (constant SQL, 9 parameters); row by row
# executemany is ~5x slower there. SQLite's executemany is fast already.
_PG_UNNEST = (
    f"INSERT INTO byproduct_events ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    "%(session_id)s::varchar[], %(seq)s::bigint[], %(event_id)s::varchar[], %(project_id)s::varchar[], "
    "%(kind)s::smallint[], %(t_ms)s::bigint[], %(client_time_ms)s::bigint[], %(received_ms)s::bigint[], "
    "%(data)s::bytea[]) ON CONFLICT DO NOTHING")


def insert_events(connection, rows: list[dict]) -> None:
    """Insert event rows; rows already stored (same session and seq, or same event id) are skipped."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_UNNEST, {name: [row[name] for row in rows] for name in COLUMNS})
    else:
        connection.execute(sqlite.insert(EventRow.__table__).on_conflict_do_nothing(), rows)


def persist(engine: Engine, events: Sequence[pb.Event], received_ms: int, idle_threshold_ms: int) -> dict:
    """Store ``events`` (one queue message); returns counts for the task's log."""
    rows = [event_row(event, received_ms) for event in events]
    lifecycle = {row["session_id"] for row in rows if row["kind"] in LIFECYCLE}
    touched = {row["session_id"] for row in rows}
    with engine.begin() as connection:  # events and the session rows they change: visible together
        for first in range(0, len(rows), INSERT_CHUNK):
            insert_events(connection, rows[first:first + INSERT_CHUNK])
        for session_id in sorted(lifecycle):
            refresh_session(connection, session_id)
    with engine.connect() as connection:
        ended = set(connection.scalars(select(SessionRow.session_id).where(
            SessionRow.session_id.in_(touched), SessionRow.end_time.is_not(None)))) if touched else set()
    for session_id in sorted(ended):
        store_signals(engine, session_id, idle_threshold_ms)
    return {"events": len(rows), "sessions": len(touched), "signals": len(ended)}


def build_session(rows: Sequence[tuple[bytes, int]]) -> pb.Session | None:
    """The session as its lifecycle events (serialized, with their received_ms) in seq order say."""
    events = [(pb.Event.FromString(data), received_ms) for data, received_ms in rows]
    start = next(((e, r) for e, r in events if e.WhichOneof("payload") == "session_start"), None)
    if start is None:
        return None
    session = pb.Session()
    session.CopyFrom(start[0].session_start.session)
    if not (session.start_time.seconds or session.start_time.nanos):
        session.start_time.FromMilliseconds(_ms(start[0].time) or start[1])
    start_ms = session.start_time.ToMilliseconds()
    for event, _ in events:
        kind = event.WhichOneof("payload")
        if kind == "session_start":
            continue
        session.end_time.FromMilliseconds(_ms(event.time) or start_ms + event.t_ms)
        if kind == "submit":
            session.outcome = common_pb2.SESSION_OUTCOME_SUBMITTED
        elif kind == "skip":
            session.outcome = common_pb2.SESSION_OUTCOME_SKIPPED
        elif event.session_end.outcome:
            session.outcome = event.session_end.outcome
        elif not session.outcome:
            session.outcome = common_pb2.SESSION_OUTCOME_ABANDONED
    return session


def refresh_session(connection, session_id: str) -> None:
    """Rebuild the session row from its lifecycle events, inside the caller's transaction."""
    rows = connection.execute(
        select(EventRow.data, EventRow.received_ms)
        .where(EventRow.session_id == session_id, EventRow.kind.in_(LIFECYCLE))
        .order_by(EventRow.seq)).all()
    session = build_session(rows)
    if session is None:
        return
    ended = session.end_time.seconds or session.end_time.nanos
    values = {
        "session_id": session.session_id, "project_id": session.project_id,
        "annotator_id": session.annotator_id, "task_id": session.task_id,
        "image_id": session.image.image_id, "question_type": session.question_type,
        "start_time": session.start_time.ToDatetime(UTC),
        "end_time": session.end_time.ToDatetime(UTC) if ended else None,
        "outcome": session.outcome, "data": session.SerializeToString()}
    statement = _insert(connection, SessionRow.__table__).values(**values)
    connection.execute(statement.on_conflict_do_update(
        index_elements=["session_id"], set_={k: v for k, v in values.items() if k != "session_id"}))


def store_signals(engine: Engine, session_id: str, idle_threshold_ms: int) -> None:
    with Session(engine) as connection, connection.begin():
        session = connection.get(SessionRow, session_id)
        events = load_events(connection, session_id)
        result = signal_math.compute(events, idle_threshold_ms)
        complete = session is not None and session.end_time is not None \
            and not missing_ranges(connection, session_id)
        values = {
            "session_id": session_id, "project_id": events[0].project_id,
            "time_to_first_click_ms": result.time_to_first_click_ms, "total_time_ms": result.total_time_ms,
            "active_time_ms": result.active_time_ms, "idle_gaps": [list(gap) for gap in result.idle_gaps],
            "idle_threshold_ms": result.idle_threshold_ms, "click_count": result.click_count,
            "correction_count": result.correction_count, "mouse_path_length": result.mouse_path_length,
            "clicks_per_minute": result.clicks_per_minute, "category_change_count": result.category_change_count,
            "keyboard_fraction": result.keyboard_fraction, "complete": int(complete),
            "compute_time": datetime.now(UTC)}
        statement = _insert(engine, SignalsRow.__table__).values(**values)
        connection.execute(statement.on_conflict_do_update(
            index_elements=["session_id"], set_={k: v for k, v in values.items() if k != "session_id"}))


"""JSON Lines export of sessions, their events and signals, in chunks that end on line boundaries.

Each line is one object in the proto3 JSON mapping with a ``type`` key: the session, then its events
in seq order, then (if asked) its signals. ``chunks`` cuts any line stream into pieces of at most
``max_bytes`` (a single longer line travels alone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from google.protobuf.json_format import MessageToDict
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotation.v1 import byproducts_pb2 as pb
from services.byproducts import queries


def _line(kind: str, message) -> bytes:
    body = MessageToDict(message, preserving_proto_field_name=False)
    return json.dumps({"type": kind, **body}, separators=(",", ":")).encode() + b"\n"


def jsonl_lines(engine: Engine, project_id: str, where: pb.SessionFilter, kinds: Sequence[int],
                include_signals: bool, threshold_ms: int) -> Iterator[bytes]:
    for row in queries.iter_sessions(engine, project_id, where):
        yield _line("session", queries.session_message(row))
        with Session(engine) as connection:
            events = queries.load_events(connection, row.session_id, kinds)
        for event in events:
            yield _line("event", event)
        if include_signals:
            yield _line("signals", queries.get_signals(engine, project_id, row.session_id, threshold_ms))


def chunks(lines: Iterable[bytes], max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(data, line_count) pieces of at most ``max_bytes``, each ending on a line boundary."""
    buffer: list[bytes] = []
    size = 0
    for line in lines:
        if buffer and size + len(line) > max_bytes:
            yield b"".join(buffer), len(buffer)
            buffer, size = [], 0
        buffer.append(line)
        size += len(line)
    if buffer:
        yield b"".join(buffer), len(buffer)

"""REST for the byproducts service (web annotator ingest, queries, exports), calling its gRPC API.

The caller's ``Authorization: Bearer`` key is checked here and forwarded (the gateway's one client,
``upstream.py``), so the service applies the same roles and project scopes as to gRPC clients. Bodies and
answers use the proto3 JSON mapping of the messages (field names as in the proto, snake_case; camelCase is
accepted on input). Errors map as on every gateway route (``upstream.domain_error``, then the app's
handler): INVALID_ARGUMENT 422 with every ErrorDetail in ``details``, NOT_FOUND 404, RESOURCE_EXHAUSTED
429, UNAVAILABLE 503, ...
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import BaseModel, Field

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.common.errors import InvalidArgument
from services.gateway.auth import Caller, CurrentCaller, authenticated
from services.gateway.json_paths import non_finite, proto_parse_field

router = APIRouter(prefix="/v1/byproducts", tags=["byproducts"], dependencies=[Depends(authenticated)])

EXPORT_TIMEOUT_S = 3600.0  # a whole project's export streams through one call
ENUM_MAX = 2**31 - 1  # proto enums are int32


class EventBatchIn(BaseModel):
    project_id: str = Field(min_length=1)
    events: list[dict[str, Any]] = Field(description="Events in the proto3 JSON mapping of annotation.v1.Event.")


def _json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _unary(request: Request, who: Caller, method: str, message) -> JSONResponse:
    return JSONResponse(_json(request.app.state.upstream.call("byproducts", method, message, who.key)))


def _stream(request: Request, who: Caller, method: str, message, filename: str) -> StreamingResponse:
    """Stream an export's chunks; the first chunk is fetched before answering, so errors get their status."""
    replies = request.app.state.upstream.stream("byproducts", method, message, who.key, EXPORT_TIMEOUT_S)
    first = next(replies)

    def body() -> Iterator[bytes]:
        yield first.data
        for reply in replies:
            yield reply.data

    return StreamingResponse(body(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _timestamp(value: datetime | None, into, field: str) -> None:
    if value is not None:
        try:
            into.FromDatetime(value)
        except (ValueError, OverflowError) as exc:  # e.g. 9999-12-31T23:59:59-05:00 is past year 9999 in UTC
            raise InvalidArgument(field, f"not a representable time: {exc}") from None


def session_filter(session_id: str = "", task_id: str = "", annotator_id: str = "",
                   outcome: Annotated[int, Query(ge=0, le=3)] = 0,
                   question_type: Annotated[int, Query(ge=0, le=ENUM_MAX)] = 0,
                   start: Annotated[datetime | None, Query(description="start_time >= (ISO 8601)")] = None,
                   end: Annotated[datetime | None, Query(description="start_time < (ISO 8601)")] = None
                   ) -> pb.SessionFilter:
    where = pb.SessionFilter(session_id=session_id, task_id=task_id, annotator_id=annotator_id, outcome=outcome,
                             question_type=question_type)
    _timestamp(start, where.time_range.start, "start")
    _timestamp(end, where.time_range.end, "end")
    return where


Filter = Annotated[pb.SessionFilter, Depends(session_filter)]
# Bounded as the proto fields are, so an out-of-range number is a 422 naming it, not a 500.
Seq = Annotated[int, Query(ge=0, le=2**53)]
Kinds = Annotated[list[Annotated[int, Field(ge=0, le=ENUM_MAX)]] | None, Query()]
PageSize = Annotated[int, Query(ge=0, le=1000)]


def event_batch(project_id: str, events: list[dict[str, Any]]) -> pb.EventBatch:
    """The EventBatch of a REST body (proto3 JSON mapping), or InvalidArgument on ``events``.
    ParseDict raises more than ParseError on hostile JSON (OverflowError for an integer too large
    for a float field, found by fuzz/targets.py:events_json)."""
    bad = non_finite(events, "events")
    if bad is not None:  # a JSON NaN / Infinity literal: named where it is, not just "events"
        raise InvalidArgument(bad, "not a finite number (NaN and Infinity are refused)")
    try:
        return ParseDict({"project_id": project_id, "events": events}, pb.EventBatch())
    except (ParseError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        message = str(exc) or type(exc).__name__
        raise InvalidArgument(proto_parse_field(message, "events"), message) from None


@router.post("/events")
def record_events(request: Request, who: CurrentCaller, body: Annotated[EventBatchIn, Body()]):
    """RecordBatch: all or nothing, at most 5000 events; accepted = durably queued."""
    try:
        batch = event_batch(body.project_id, body.events)
    except InvalidArgument as exc:
        exc.details = []  # every 422 of this route lists the details; a batch that does not parse has none
        raise
    return _unary(request, who, "RecordBatch", batch)


@router.get("/sessions")
def list_sessions(request: Request, who: CurrentCaller, where: Filter, project_id: str = "", page_size: PageSize = 0,
                  page_token: str = ""):
    return _unary(request, who, "ListSessions", pb.ListSessionsRequest(
        project_id=project_id, filter=where, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)))


@router.get("/sessions/{session_id}")
def get_session(request: Request, who: CurrentCaller, session_id: str, project_id: str = ""):
    return _unary(request, who, "GetSession",
                  pb.ByproductsGetSessionRequest(project_id=project_id, session_id=session_id))


@router.get("/sessions/{session_id}/events")
def list_events(request: Request, who: CurrentCaller, session_id: str, project_id: str = "", from_seq: Seq = 0,
                to_seq: Seq = 0, kinds: Kinds = None, page_size: PageSize = 0, page_token: str = ""):
    return _unary(request, who, "ListEvents", pb.ListEventsRequest(
        project_id=project_id, session_id=session_id, from_seq=from_seq, to_seq=to_seq, kinds=kinds or [],
        page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)))


@router.get("/sessions/{session_id}/signals")
def get_signals(request: Request, who: CurrentCaller, session_id: str, project_id: str = ""):
    return _unary(request, who, "GetSignals", pb.GetSignalsRequest(project_id=project_id, session_id=session_id))


@router.get("/signals")
def list_signals(request: Request, who: CurrentCaller, where: Filter, project_id: str = "", page_size: PageSize = 0,
                 page_token: str = ""):
    return _unary(request, who, "ListSignals", pb.ListSignalsRequest(
        project_id=project_id, filter=where, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)))


@router.get("/export.jsonl")
def export_jsonl(request: Request, who: CurrentCaller, where: Filter, project_id: str = "",
                 kinds: Kinds = None, include_signals: bool = False):
    return _stream(request, who, "ExportJsonl", pb.ExportJsonlRequest(
        project_id=project_id, filter=where, kinds=kinds or [], include_signals=include_signals),
        "byproducts.jsonl")


@router.get("/luab.jsonl")
def export_luab(request: Request, who: CurrentCaller, where: Filter, project_id: str = "",
                heatmap_size: Annotated[int, Query(ge=0, le=512)] = 0,
                heatmap_sigma: Annotated[float, Query(ge=0)] = 0.0,
                mouse_weight: Annotated[float, Query(ge=0, le=1)] = 0.0):
    return _stream(request, who, "ExportLuab", pb.ExportLuabRequest(
        project_id=project_id, filter=where, heatmap_size=heatmap_size, heatmap_sigma=heatmap_sigma,
        mouse_weight=mouse_weight), "luab.jsonl")

"""gRPC adapter of ``annotation.v1.Byproducts``: ingest, queries, signals and exports of annotation byproducts.

Record (client stream) keeps the events before the first invalid one; RecordBatch is all or nothing.
Both acknowledge only what is on the byproducts queue; the worker persists it exactly once. A background
thread re-sends outbox batches whose queue message was lost (see ``outbox.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status
from kombu.exceptions import OperationalError
from prometheus_client import Counter, Gauge
from redis.exceptions import OutOfMemoryError

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import byproducts_pb2_grpc, common_pb2
from services.byproducts import export, luab, queries
from services.byproducts.config import ByproductsSettings
from services.byproducts.ingest import QUEUE, Admission, Ingestor
from services.byproducts.validation import check_event, normalise
from services.common.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unavailable
from services.common.grpc_server import Kit, serve
from services.common.request_context import caller
from services.common.storage import make_engine

log = logging.getLogger(__name__)
REDELIVERED = Counter("annot_byproducts_redelivered_batches_total",
                      "Outbox batches queued again because they were not stored in time")
OUTBOX = Gauge("annot_byproducts_outbox_batches", "Admitted batches not yet stored")


class _Summary:
    def __init__(self) -> None:
        self.received = self.accepted = self.duplicates = 0
        self.gaps: dict[str, list[tuple[int, int]]] = {}

    def add(self, admission: Admission, touched: Iterable[str]) -> None:
        self.accepted += len(admission.new)
        self.duplicates += len(admission.duplicates)
        for session_id in touched:
            self.gaps.pop(session_id, None)
        self.gaps.update(admission.gaps)

    def message(self) -> pb.RecordSummary:
        return pb.RecordSummary(
            received=self.received, accepted=self.accepted, duplicates=self.duplicates,
            gaps=[pb.SequenceGap(session_id=sid, missing=[pb.SeqRange(first=a, last=b) for a, b in ranges])
                  for sid, ranges in sorted(self.gaps.items())])


def _refuse(context: grpc.ServicerContext, errors: list[InvalidArgument]) -> None:
    """INVALID_ARGUMENT with one ErrorDetail per invalid event (the kit's mapping carries one)."""
    details = []
    for error in errors:
        detail = any_pb2.Any()
        detail.Pack(common_pb2.ErrorDetail(field=error.field, reason=error.reason, message=error.message))
        details.append(detail)
    more = f" (and {len(errors) - 1} more invalid events)" if len(errors) > 1 else ""
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                               message=f"{errors[0]}{more}; nothing of this batch was accepted", details=details)
    context.abort_with_status(rpc_status.to_status(status))


def _own_start(event: pb.Event) -> None:
    """A session_start that names no annotator names the caller (the interceptor refuses an annotator's
    key naming another); the session then belongs to that annotator."""
    if event.WhichOneof("payload") == "session_start":
        session = event.session_start.session
        session.annotator_id = caller().acting_as(session.annotator_id)


def send_batch(celery, batch_id: str) -> None:
    """Queues one outbox batch for the worker. Kombu wraps every Redis error in OperationalError; a full
    Redis (maxmemory) stays OutOfMemoryError, so that the Ingestor answers RESOURCE_EXHAUSTED, not
    UNAVAILABLE (found by tests/chaos/test_backpressure.py)."""
    try:
        celery.send_task("byproducts.persist_batch", args=[batch_id], queue=QUEUE)
    except OperationalError as exc:
        if isinstance(exc.__cause__, OutOfMemoryError):
            raise OutOfMemoryError(str(exc.__cause__)) from exc
        raise Unavailable(f"the byproducts queue (Redis) is unreachable: {exc}") from exc


class ByproductsServicer(byproducts_pb2_grpc.ByproductsServicer):
    def __init__(self, kit: Kit, config: ByproductsSettings | None = None) -> None:
        self.config = config or ByproductsSettings()
        self.engine = make_engine(kit.settings.resolved_database_url)
        celery = kit.celery

        self.ingest = Ingestor(kit.redis, lambda batch_id: send_batch(celery, batch_id), self.config)
        threading.Thread(target=self._redeliver_forever, name="outbox-redeliver", daemon=True).start()

    def _redeliver_forever(self) -> None:
        interval_s = max(0.5, min(5.0, self.config.redeliver_after_s / 2))
        while True:
            time.sleep(interval_s)
            try:
                sent = self.ingest.redeliver_due()
                OUTBOX.set(self.ingest.outbox.size())
            except (Unavailable, ResourceExhausted) as exc:  # Redis down or full: the next round tries again
                log.warning("outbox redelivery skipped: %s", exc)
                continue
            if sent:
                REDELIVERED.inc(sent)
                log.warning("re-sent %d outbox batches not stored within %.0f s", sent,
                            self.config.redeliver_after_s)

    # ---- ingest

    def _step(self, events: list[pb.Event], positions: list[int], all_or_nothing: bool) -> Admission:
        self.ingest.wait_for_room()
        admission = self.ingest.admit(events, positions, all_or_nothing, actor=caller().owner_scope or "")
        self.ingest.send(admission.new + admission.duplicates)
        return admission

    def Record(self, request_iterator, context):
        summary = _Summary()
        buffer: list[pb.Event] = []
        positions: list[int] = []
        oldest = 0.0

        def flush() -> None:
            if not buffer:
                return
            admission = self._step(buffer, positions, all_or_nothing=False)
            summary.add(admission, {event.session_id for event in buffer})
            buffer.clear()
            positions.clear()
            if admission.errors:
                error = admission.errors[0]
                message = f"{error.message}; the {summary.accepted + summary.duplicates} events before it were accepted"
                if isinstance(error, PermissionDenied):
                    raise PermissionDenied(message, field=error.field, reason=error.reason)
                raise InvalidArgument(error.field, message, reason=error.reason)

        for index, event in enumerate(request_iterator):
            summary.received += 1
            _own_start(event)
            problem = check_event(event, f"events[{index}]")
            if problem is not None:
                flush()
                raise InvalidArgument(problem.field, f"{problem.message}; the {summary.accepted + summary.duplicates} "
                                      "events before it were accepted", reason=problem.reason)
            normalise(event)
            if not buffer:
                oldest = time.monotonic()
            buffer.append(event)
            positions.append(index)
            if len(buffer) >= self.config.flush_events \
                    or (time.monotonic() - oldest) * 1000 >= self.config.flush_interval_ms:
                flush()
        flush()
        return summary.message()

    def RecordBatch(self, request, context):
        events = request.events
        if not events:
            raise InvalidArgument("events", "at least one event is required", reason="MISSING")
        if len(events) > self.config.max_batch_events:
            raise InvalidArgument("events", f"{len(events)} events; at most {self.config.max_batch_events} per batch",
                                  reason="BATCH_TOO_LARGE")
        errors = []
        for index, event in enumerate(events):
            if not event.project_id:
                event.project_id = request.project_id
            elif request.project_id and event.project_id != request.project_id:
                errors.append(InvalidArgument(f"events[{index}].project_id", "must be empty or the batch's project_id",
                                              reason="PROJECT_MISMATCH"))
                continue
            _own_start(event)
            problem = check_event(event, f"events[{index}]")
            if problem is not None:
                errors.append(problem)
            else:
                normalise(event)
        if errors:
            _refuse(context, errors)
        admission = self._step(list(events), list(range(len(events))), all_or_nothing=True)
        denied = [error for error in admission.errors if isinstance(error, PermissionDenied)]
        if denied:  # nothing of the batch was accepted
            raise PermissionDenied(f"{denied[0].message}; nothing of this batch was accepted", field=denied[0].field,
                                   reason=denied[0].reason)
        if admission.errors:
            _refuse(context, admission.errors)
        summary = _Summary()
        summary.received = len(events)
        summary.add(admission, {event.session_id for event in events})
        return summary.message()

    # ---- queries

    def GetSession(self, request, context):
        session, stats = queries.get_session(self.engine, request.project_id, request.session_id)
        return pb.ByproductsGetSessionResponse(session=session, stats=stats)

    def ListSessions(self, request, context):
        sessions, page = queries.list_sessions(self.engine, request.project_id, request.filter, request.page)
        return pb.ListSessionsResponse(sessions=sessions, page=page)

    def ListEvents(self, request, context):
        events, page = queries.list_events(self.engine, request)
        return pb.ListEventsResponse(events=events, page=page)

    def GetSignals(self, request, context):
        return pb.GetSignalsResponse(signals=queries.get_signals(
            self.engine, request.project_id, request.session_id, self.config.idle_threshold_ms))

    def ListSignals(self, request, context):
        signals, page = queries.list_signals(self.engine, request.project_id, request.filter, request.page)
        return pb.ListSignalsResponse(signals=signals, page=page)

    # ---- exports

    def ExportJsonl(self, request, context):
        lines = export.jsonl_lines(self.engine, request.project_id, request.filter, list(request.kinds),
                                   request.include_signals, self.config.idle_threshold_ms)
        yield from _chunked(lines, self.config.export_chunk_bytes, pb.ExportJsonlResponse)

    def ExportLuab(self, request, context):
        if not 0 <= request.mouse_weight <= 1:
            raise InvalidArgument("mouse_weight", "must be in [0, 1]")
        if request.heatmap_size > 512:
            raise InvalidArgument("heatmap_size", "at most 512 cells")
        if request.heatmap_sigma < 0:
            raise InvalidArgument("heatmap_sigma", "must be >= 0")
        spec = luab.HeatmapSpec(size=request.heatmap_size or 64, sigma=request.heatmap_sigma or 2.0,
                                mouse_weight=request.mouse_weight)
        lines = luab.lines(self.engine, request.project_id, request.filter, spec)
        yield from _chunked(lines, self.config.export_chunk_bytes, pb.ExportLuabResponse)


def _chunked(lines: Iterable[bytes], max_bytes: int, message) -> Iterator:
    """Chunks with ``last`` set on the final one (an empty export is one empty last chunk)."""
    previous = None
    for data, count in export.chunks(lines, max_bytes):
        if previous is not None:
            yield message(data=previous[0], line_count=previous[1], last=False)
        previous = (data, count)
    data, count = previous or (b"", 0)
    yield message(data=data, line_count=count, last=True)


def register(server: grpc.Server, kit: Kit) -> None:
    byproducts_pb2_grpc.add_ByproductsServicer_to_server(ByproductsServicer(kit), server)


if __name__ == "__main__":
    serve("byproducts", register)

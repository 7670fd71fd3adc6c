"""Ingest through the real server, queue, worker and SQLite: semantics of Record and RecordBatch."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from sqlalchemy import func, select

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from services.common import annotation_events
from services.common.masks import encode_rle
from tests.byproducts.conftest import bearer, key_id
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def stored(engine, session_id: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(EventRow).where(EventRow.session_id == session_id))


def details(error: grpc.RpcError) -> list[common_pb2.ErrorDetail]:
    out = []
    for any_detail in rpc_status.from_call(error).details:
        detail = common_pb2.ErrorDetail()
        any_detail.Unpack(detail)
        out.append(detail)
    return out


def test_a_streamed_session_is_stored_once_with_stats_and_signals(stub, worker, keys, engine):
    events = session_events("s-stream", "p1", 2500)
    summary = stub.Record(iter(events), metadata=bearer(keys["annotator"]), timeout=60)
    assert (summary.received, summary.accepted, summary.duplicates) == (2500, 2500, 0)
    assert not summary.gaps
    wait_until(lambda: stored(engine, "s-stream") == 2500, 30, "all events stored")
    again = stub.Record(iter(events), metadata=bearer(keys["annotator"]), timeout=60)  # a replay
    assert (again.accepted, again.duplicates) == (0, 2500)
    reply = stub.GetSession(pb.ByproductsGetSessionRequest(project_id="p1", session_id="s-stream"),
                            metadata=bearer(keys["reviewer"]), timeout=10)
    assert reply.session.annotator_id == key_id(keys["annotator"]) and reply.session.image.image_id == "img-1"
    assert reply.session.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED
    assert (reply.stats.event_count, reply.stats.last_seq, len(reply.stats.missing)) == (2500, 2500, 0)

    def signals():
        try:
            return stub.GetSignals(pb.GetSignalsRequest(project_id="p1", session_id="s-stream"),
                                   metadata=bearer(keys["reviewer"]), timeout=10).signals
        except grpc.RpcError:
            return None
    found = wait_until(lambda: (s := signals()) is not None and s.complete and s, 30, "signals stored")
    assert found.click_count == sum(e.HasField("click") for e in events)
    assert found.time_to_first_click_ms == next(e.t_ms for e in events if e.HasField("click"))
    assert found.mouse_path_length > 0 and found.total_time_ms == events[-1].t_ms
    page = stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id="s-stream", from_seq=10,
                                                kinds=[pb.EVENT_KIND_CLICK], page=common_pb2.PageRequest(page_size=7)),
                           metadata=bearer(keys["reviewer"]), timeout=10)
    assert len(page.events) == 7 and all(e.HasField("click") for e in page.events)
    assert [e.seq for e in page.events] == sorted(e.seq for e in page.events) and page.events[0].seq >= 10
    following = stub.ListEvents(pb.ListEventsRequest(
        project_id="p1", session_id="s-stream", from_seq=10, kinds=[pb.EVENT_KIND_CLICK],
        page=common_pb2.PageRequest(page_size=7, page_token=page.page.next_page_token)),
        metadata=bearer(keys["reviewer"]), timeout=10)
    assert following.events[0].seq > page.events[-1].seq
    assert following.events[0] == events[following.events[0].seq - 1]  # stored losslessly


def test_batch_with_invalid_events_is_refused_whole_naming_each_field(stub, worker, keys, engine):
    events = session_events("s-batch", "p1", 50)
    events[3].mouse.points[1].x = 1.5
    events[7].event_id = ""
    events[9].ClearField(events[9].WhichOneof("payload"))
    events[12].session_id = ""
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [d.field for d in details(err.value)]
    assert fields == ["events[3].mouse.points[1].x", "events[7].event_id", "events[9].payload",
                      "events[12].session_id"]
    assert "nothing of this batch was accepted" in err.value.details()
    good = session_events("s-batch", "p1", 50)
    summary = stub.RecordBatch(pb.EventBatch(project_id="p1", events=good), metadata=bearer(keys["annotator"]),
                               timeout=10)
    assert summary.accepted == 50  # nothing of the refused batch had been recorded
    wait_until(lambda: stored(engine, "s-batch") == 50, 20, "stored")


def test_batch_checks_that_need_session_state(stub, worker, keys):
    events = session_events("s-state", "p1", 30)
    stub.RecordBatch(pb.EventBatch(project_id="p1", events=events[:20]), metadata=bearer(keys["annotator"]), timeout=10)
    unknown = session_events("s-nostart", "p1", 5)[1:]
    conflict = pb.Event()
    conflict.CopyFrom(events[5])
    conflict.event_id = "another-id"
    backwards = pb.Event()
    backwards.CopyFrom(events[20])
    backwards.t_ms = events[19].t_ms - 1
    if backwards.HasField("mouse"):
        backwards.mouse.points[-1].t_ms = backwards.t_ms
        for point in backwards.mouse.points:
            point.t_ms = min(point.t_ms, backwards.t_ms)
    batch = [unknown[0], conflict, backwards, events[21]]
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=batch), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = {(d.field, d.reason) for d in details(err.value)}
    assert found == {("events[0].session_id", "UNKNOWN_SESSION"), ("events[1].seq", "SEQ_CONFLICT"),
                     ("events[2].t_ms", "TIME_BACKWARDS")}


def test_oversize_and_empty_batches_are_invalid(stub, keys):
    events = session_events("s-big", "p1", 5001)
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["annotator"]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(d.field, d.reason) for d in details(err.value)] == [("events", "BATCH_TOO_LARGE")]
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordBatch(pb.EventBatch(project_id="p1"), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_keeps_the_events_before_the_first_invalid_one(stub, worker, keys, engine):
    events = session_events("s-partial", "p1", 40)
    events[25].click.x = -0.1 if events[25].HasField("click") else 0
    if not events[25].HasField("click"):
        events[25].mouse.points[0].y = float("nan")
    with pytest.raises(grpc.RpcError) as err:
        stub.Record(iter(events), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0].field in ("events[25].click.x", "events[25].mouse.points[0].y")
    assert "the 25 events before it were accepted" in err.value.details()
    wait_until(lambda: stored(engine, "s-partial") == 25, 20, "the valid prefix stored")
    fixed = session_events("s-partial", "p1", 40)
    summary = stub.Record(iter(fixed), metadata=bearer(keys["annotator"]), timeout=10)  # replay whole
    assert (summary.accepted, summary.duplicates) == (15, 25)
    wait_until(lambda: stored(engine, "s-partial") == 40, 20, "all stored")


def test_gaps_are_reported_then_closed(stub, worker, keys, engine):
    events = session_events("s-gaps", "p1", 30)
    first = [e for e in events if e.seq not in (5, 6, 7, 20)]
    summary = stub.RecordBatch(pb.EventBatch(project_id="p1", events=first), metadata=bearer(keys["annotator"]),
                               timeout=10)
    assert [(g.session_id, [(r.first, r.last) for r in g.missing]) for g in summary.gaps] == \
        [("s-gaps", [(5, 7), (20, 20)])]
    wait_until(lambda: stored(engine, "s-gaps") == 26, 20, "stored")
    request = pb.ByproductsGetSessionRequest(project_id="p1", session_id="s-gaps")
    stats = stub.GetSession(request, metadata=bearer(keys["reviewer"]), timeout=10).stats
    assert [(r.first, r.last) for r in stats.missing] == [(5, 7), (20, 20)]
    signals = stub.GetSignals(pb.GetSignalsRequest(project_id="p1", session_id="s-gaps"),
                              metadata=bearer(keys["reviewer"]), timeout=10).signals
    assert not signals.complete
    late = [e for e in events if e.seq in (5, 6, 7, 20)]
    summary = stub.RecordBatch(pb.EventBatch(project_id="p1", events=late), metadata=bearer(keys["annotator"]),
                               timeout=10)
    assert summary.accepted == 4 and not summary.gaps
    wait_until(lambda: not stub.GetSession(request, metadata=bearer(keys["reviewer"]), timeout=10).stats.missing,
               20, "gaps closed")
    wait_until(lambda: stub.GetSignals(pb.GetSignalsRequest(project_id="p1", session_id="s-gaps"),
                                       metadata=bearer(keys["reviewer"]), timeout=10).signals.complete,
               20, "signals recomputed as complete")


def test_roles_and_projects_are_enforced(stub, keys):
    request = pb.ByproductsGetSessionRequest(project_id="p1", session_id="x")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSession(request, metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    other = session_events("s-other", "p2", 5)
    with pytest.raises(grpc.RpcError) as err:
        stub.Record(iter(other), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:  # a batch of p1 smuggling events of p2
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=other), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0].field == "events[0].project_id"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSession(request, metadata=bearer(keys["reviewer"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_full_queue_refuses_with_resource_exhausted(bp_settings, start_server, keys, monkeypatch):
    """No worker consumes; the queue limit is 2 messages and the wait 0.3 s."""
    monkeypatch.setenv("ANNOT_BYPRODUCTS_MAX_QUEUE_MESSAGES", "2")
    monkeypatch.setenv("ANNOT_BYPRODUCTS_BACKPRESSURE_WAIT_S", "0.3")
    start_server(bp_settings)
    with grpc.insecure_channel(bp_settings.service_address("byproducts")) as channel:
        from annotation.v1 import byproducts_pb2_grpc  # noqa: PLC0415

        stub = byproducts_pb2_grpc.ByproductsStub(channel)
        for n in range(3):
            events = session_events(f"s-full-{n}", "p1", 10)
            stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["annotator"]),
                             timeout=10)
        events = session_events("s-full-3", "p1", 10)
        with pytest.raises(grpc.RpcError) as err:
            stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["annotator"]),
                             timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "backlog holds 3 batches not stored yet" in err.value.details()


def finished_session(session_id: str, outcome: int = common_pb2.SESSION_OUTCOME_SUBMITTED) -> dict:
    """A finished segmentation session as FinishSession sends it (``AnnotationSubmitted``, encoded)."""
    event = common_pb2.AnnotationSubmitted(
        project_id="p1", annotation_id=session_id, session_id=session_id, task_id="t-9", annotator_id="ann-9",
        image=common_pb2.ImageRef(image_id="img-9", width=200, height=100), label="cat",
        mask=common_pb2.Mask(size=[100, 200], counts=encode_rle(np.ones((100, 200), bool))[1]),
        model_version="clickseg:1", total_time_ms=4500,
        clicks=[common_pb2.Click(x=50, y=25, positive=True, t_ms=900, index=0),
                common_pb2.Click(x=150, y=75, positive=False, t_ms=0, index=1)],
        steps=[common_pb2.AnnotationSubmitted.Step(iou_with_previous=0.0, model_latency_ms=3.0),
               common_pb2.AnnotationSubmitted.Step(iou_with_previous=0.9, model_latency_ms=3.0)],
        outcome=outcome)
    event.submit_time.FromSeconds(1_760_000_004)
    return annotation_events.encode(event)


def test_a_finished_segmentation_session_is_kept_once(bp_settings, stub, worker, keys, engine):
    from services.common.celery_app import make_celery  # noqa: PLC0415

    celery = make_celery("byproducts", bp_settings)
    # A repeated message stores nothing twice. One worker process takes the queue in order (FIFO list,
    # concurrency 1, prefetch 1), so once the sentinel sent after both copies is stored, both copies
    # have been handled: no sleep hoping that the second one has. (A copy retried after an error would
    # come back after the sentinel; that could hide a double store, never fail the test wrongly.)
    skipped = finished_session("seg-3", common_pb2.SESSION_OUTCOME_SKIPPED)
    malformed = {**finished_session("seg-4"), "mask": {"size": [100, 201], "counts": "0"}}  # not the image's size
    refused = celery.send_task("byproducts.annotation_submitted", args=[malformed], queue="byproducts")
    for payload in (finished_session("seg-1"), finished_session("seg-1"), skipped, finished_session("seg-2")):
        celery.send_task("byproducts.annotation_submitted", args=[payload], queue="byproducts")
    wait_until(lambda: stored(engine, "seg-2") == 5, 30, "the sentinel stored after both copies")
    assert stored(engine, "seg-1") == 5 and stored(engine, "seg-3") == 5 and stored(engine, "seg-4") == 0
    refused.get(timeout=10, propagate=False)
    assert refused.state == "FAILURE" and "InvalidEvent: mask.size:" in refused.traceback, refused.traceback
    reply = stub.GetSession(pb.ByproductsGetSessionRequest(project_id="p1", session_id="seg-1"),
                            metadata=bearer(keys["reviewer"]), timeout=10)
    assert reply.session.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED and reply.session.annotator_id == "ann-9"
    assert reply.session.start_time.ToMilliseconds() == 1_760_000_004_000 - 4500
    clicks = stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id="seg-1", kinds=[pb.EVENT_KIND_CLICK]),
                             metadata=bearer(keys["reviewer"]), timeout=10).events
    assert [(c.click.x, c.click.y, c.click.positive, c.t_ms) for c in clicks] == [(0.25, 0.25, True, 900),
                                                                                  (0.75, 0.75, False, 900)]
    assert clicks[1].click.iou_change == pytest.approx(0.1)
    submit = stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id="seg-1", kinds=[pb.EVENT_KIND_SUBMIT]),
                             metadata=bearer(keys["reviewer"]), timeout=10).events
    assert [e.submit.labels for e in submit] == [["cat"]] and submit[0].t_ms == 4500
    skip = stub.GetSession(pb.ByproductsGetSessionRequest(project_id="p1", session_id="seg-3"),
                           metadata=bearer(keys["reviewer"]), timeout=10)
    assert skip.session.outcome == common_pb2.SESSION_OUTCOME_SKIPPED
    kinds = stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id="seg-3"),
                            metadata=bearer(keys["reviewer"]), timeout=10).events
    assert [e.WhichOneof("payload") for e in kinds][-2:] == ["skip", "session_end"]


def test_a_full_broker_on_publish_is_resource_exhausted_not_unavailable(settings, redis_server):
    """Kombu wraps Redis' OOM on the Celery publish in OperationalError; it must still read as a full
    broker (retry later), the way Ingestor reports OOM on its own writes."""
    from redis import Redis as RedisClient

    from services.byproducts.ingest import Ingestor
    from services.byproducts.server import send_batch
    from services.common.celery_app import make_celery
    from services.common.errors import ResourceExhausted, Unavailable

    celery = make_celery("byproducts", settings)
    client = RedisClient.from_url(settings.redis_url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # below what Redis already uses: every write is refused
    try:
        with pytest.raises(ResourceExhausted) as full:
            Ingestor._call(lambda: send_batch(celery, "batch-1"))
        assert full.value.reason == "BROKER_FULL" and "out of memory" in full.value.message
    finally:
        client.config_set("maxmemory", 0)
    redis_server.stop()  # a broker that is gone is still UNAVAILABLE
    with pytest.raises(Unavailable):
        Ingestor._call(lambda: send_batch(celery, "batch-2"))


def box_session(session_id: str) -> list[pb.Event]:
    """A session as the web annotator logs a box prompt: the box's step as the click it became (its
    centre, index 0), then the box itself, then a correcting click."""
    session = pb.Session(image=common_pb2.ImageRef(image_id="img-box", width=200, height=100))
    payloads = [
        (0, {"session_start": pb.SessionStart(session=session)}),
        (900, {"mouse": pb.MouseTrajectory(points=[pb.TrajectoryPoint(x=0.1, y=0.2, t_ms=400),
                                                   pb.TrajectoryPoint(x=0.7, y=0.8, t_ms=900)])}),
        (1000, {"click": pb.ClickEvent(x=0.4, y=0.5, positive=True, click_index=0, iou_change=1.0)}),
        (1000, {"box": pb.BoxEvent(x0=0.1, y0=0.2, x1=0.7, y1=0.8, click_index=0)}),
        (2500, {"click": pb.ClickEvent(x=0.65, y=0.75, positive=False, click_index=1, iou_change=0.1)}),
        (4000, {"submit": pb.SubmitEvent(labels=["cat"], click_count=2)}),
        (4000, {"session_end": pb.SessionEnd(outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)}),
    ]
    return [pb.Event(project_id="p1", session_id=session_id, event_id=f"{session_id}-{n}", seq=n, t_ms=t_ms, **payload)
            for n, (t_ms, payload) in enumerate(payloads, start=1)]


def test_a_box_prompt_round_trips_as_a_box_event(stub, worker, keys, engine):
    events = box_session("s-box")
    summary = stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["annotator"]),
                               timeout=10)
    assert (summary.accepted, summary.duplicates) == (7, 0)
    wait_until(lambda: stored(engine, "s-box") == 7, 20, "the box session stored")
    reviewer = bearer(keys["reviewer"])

    def listed(*kinds: int) -> list[pb.Event]:
        return list(stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id="s-box", kinds=kinds),
                                    metadata=reviewer, timeout=10).events)
    assert listed(pb.EVENT_KIND_BOX) == [events[3]]  # stored as a box, losslessly
    assert listed(pb.EVENT_KIND_CORRECTION) == []  # not a correction with the corners in a string
    assert [e.WhichOneof("payload") for e in listed()] == ["session_start", "mouse", "click", "box", "click",
                                                            "submit", "session_end"]
    signals = wait_until(lambda: (s := stub.GetSignals(pb.GetSignalsRequest(project_id="p1", session_id="s-box"),
                                                       metadata=reviewer, timeout=10).signals).complete and s,
                         20, "signals of the ended session")
    assert (signals.click_count, signals.correction_count) == (2, 0)
    exported = b"".join(chunk.data for chunk in stub.ExportJsonl(
        pb.ExportJsonlRequest(project_id="p1", filter=pb.SessionFilter(session_id="s-box"), kinds=[pb.EVENT_KIND_BOX]),
        metadata=reviewer, timeout=10))
    lines = [json.loads(line) for line in exported.splitlines()]
    assert [line["type"] for line in lines] == ["session", "event"]
    assert lines[1]["box"] == {"x0": pytest.approx(0.1), "y0": pytest.approx(0.2), "x1": pytest.approx(0.7),
                               "y1": pytest.approx(0.8)}  # click_index 0 is the proto3 JSON default: left out
    luab = b"".join(chunk.data for chunk in stub.ExportLuab(
        pb.ExportLuabRequest(project_id="p1", filter=pb.SessionFilter(session_id="s-box"), heatmap_size=8),
        metadata=reviewer, timeout=10))
    image = json.loads(luab)
    assert image["image_id"] == "img-box"
    assert image["boxes"] == [[pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.7), pytest.approx(0.8), 1000]]


def test_bad_boxes_are_refused_naming_the_edge(stub, worker, keys, engine):
    inverted = box_session("s-badbox")
    inverted[3].box.x1 = 0.05  # left of x0
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=inverted), metadata=bearer(keys["annotator"]),
                         timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(d.field, d.reason) for d in details(err.value)] == [("events[3].box.x1", "INVERTED")]
    outside = box_session("s-badbox")
    outside[3].box.y0 = 1.5
    with pytest.raises(grpc.RpcError) as err:
        stub.Record(iter(outside), metadata=bearer(keys["annotator"]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(d.field, d.reason) for d in details(err.value)] == [("events[3].box.y0", "OUT_OF_RANGE")]
    assert "the 3 events before it were accepted" in err.value.details()
    wait_until(lambda: stored(engine, "s-badbox") == 3, 20, "the events before the bad box stored")
    summary = stub.Record(iter(box_session("s-badbox")), metadata=bearer(keys["annotator"]), timeout=10)
    assert (summary.accepted, summary.duplicates) == (4, 3)

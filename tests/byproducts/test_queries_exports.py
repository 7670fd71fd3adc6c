"""Queries with filters and paging, JSON Lines and LUAB exports, through the real server and worker."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts.synthetic import session_events
from tests.byproducts.conftest import bearer
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = 1_760_000_000_000


@pytest.fixture
def recorded(stub, worker, keys):
    """Four sessions: three submitted (two on img-a, one on img-b, two annotators), one skipped."""
    specs = [("s-a1", "img-a", "alice", T0), ("s-a2", "img-a", "bob", T0 + DAY),
             ("s-b1", "img-b", "alice", T0 + 2 * DAY), ("s-b2", "img-b", "bob", T0 + 3 * DAY)]
    for n, (sid, image, annotator, start) in enumerate(specs):
        events = session_events(sid, "p1", 120, seed=n, image_id=image, annotator_id=annotator, start_ms=start)
        if sid == "s-b2":
            events[-2].ClearField("submit")
            events[-2].skip.reason = "blurry"
            events[-1].session_end.outcome = common_pb2.SESSION_OUTCOME_SKIPPED
        # recorded for alice and bob: an admin's key may name annotators (an annotator's names only itself)
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=events), metadata=bearer(keys["admin"]), timeout=10)

    def all_signals():
        reply = stub.ListSignals(pb.ListSignalsRequest(project_id="p1"), metadata=bearer(keys["reviewer"]), timeout=10)
        return len(reply.signals) == 4
    wait_until(all_signals, 30, "signals of the four sessions")
    return specs


def _ts(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def test_list_sessions_filters_and_pages(stub, keys, recorded):
    meta = bearer(keys["reviewer"])
    reply = stub.ListSessions(pb.ListSessionsRequest(project_id="p1", page=common_pb2.PageRequest(page_size=3)),
                              metadata=meta, timeout=10)
    assert [s.session_id for s in reply.sessions] == ["s-b2", "s-b1", "s-a2"]  # newest first
    assert reply.page.total_size == 4 and reply.page.next_page_token
    rest = stub.ListSessions(pb.ListSessionsRequest(project_id="p1", page=common_pb2.PageRequest(
        page_size=3, page_token=reply.page.next_page_token)), metadata=meta, timeout=10)
    assert [s.session_id for s in rest.sessions] == ["s-a1"] and not rest.page.next_page_token
    by_alice = stub.ListSessions(pb.ListSessionsRequest(project_id="p1", filter=pb.SessionFilter(
        annotator_id="alice")), metadata=meta, timeout=10)
    assert {s.session_id for s in by_alice.sessions} == {"s-a1", "s-b1"}
    window = common_pb2.TimeRange(start=_ts(T0 + DAY), end=_ts(T0 + 3 * DAY))
    in_window = stub.ListSessions(pb.ListSessionsRequest(project_id="p1", filter=pb.SessionFilter(
        time_range=window)), metadata=meta, timeout=10)
    assert [s.session_id for s in in_window.sessions] == ["s-b1", "s-a2"]
    skipped = stub.ListSignals(pb.ListSignalsRequest(project_id="p1", filter=pb.SessionFilter(
        outcome=common_pb2.SESSION_OUTCOME_SKIPPED)), metadata=meta, timeout=10)
    assert [s.session_id for s in skipped.signals] == ["s-b2"]
    assert skipped.signals[0].outcome == common_pb2.SESSION_OUTCOME_SKIPPED and skipped.signals[0].complete
    import grpc  # noqa: PLC0415

    with pytest.raises(grpc.RpcError) as err:  # a token used with other filters
        stub.ListSessions(pb.ListSessionsRequest(project_id="p1", filter=pb.SessionFilter(annotator_id="bob"),
                                                 page=common_pb2.PageRequest(page_token=reply.page.next_page_token)),
                          metadata=meta, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_jsonl_export_holds_sessions_events_and_signals(stub, keys, recorded):
    chunks = list(stub.ExportJsonl(pb.ExportJsonlRequest(project_id="p1", filter=pb.SessionFilter(
        annotator_id="alice"), include_signals=True), metadata=bearer(keys["reviewer"]), timeout=30))
    assert chunks[-1].last and not any(c.last for c in chunks[:-1])
    lines = [json.loads(line) for c in chunks for line in c.data.decode().splitlines()]
    assert sum(c.line_count for c in chunks) == len(lines) == 2 * (1 + 120 + 1)
    assert [line["type"] for line in lines[:2]] == ["session", "event"] and lines[121]["type"] == "signals"
    assert lines[0]["sessionId"] == "s-b1" and lines[1]["seq"] == "1" and "sessionStart" in lines[1]
    clicks_only = list(stub.ExportJsonl(pb.ExportJsonlRequest(project_id="p1", kinds=[pb.EVENT_KIND_CLICK]),
                                        metadata=bearer(keys["reviewer"]), timeout=30))
    events = [json.loads(line) for c in clicks_only for line in c.data.decode().splitlines()]
    assert all("click" in e for e in events if e["type"] == "event")


def test_luab_export_gives_a_point_and_a_heatmap_per_image(stub, keys, recorded):
    chunks = list(stub.ExportLuab(pb.ExportLuabRequest(project_id="p1", heatmap_size=32, heatmap_sigma=1.5,
                                                       mouse_weight=0.1), metadata=bearer(keys["reviewer"]), timeout=30))
    images = [json.loads(line) for c in chunks for line in c.data.decode().splitlines()]
    assert [i["image_id"] for i in images] == ["img-a", "img-b"]
    a, b = images
    assert a["sessions"] == ["s-a1", "s-a2"] and b["sessions"] == ["s-b1"]  # the skipped session is left out
    assert a["width"] == 640 and a["labels"] == ["object"] and a["category_histories"] is not None
    grid = np.frombuffer(base64.b64decode(a["heatmap"]["data"]), dtype=np.uint8).reshape(a["heatmap"]["size"])
    assert grid.shape == (32, 32) and grid.max() == 255
    firsts = []
    for sid in a["sessions"]:
        events = stub.ListEvents(pb.ListEventsRequest(project_id="p1", session_id=sid, kinds=[pb.EVENT_KIND_CLICK]),
                                 metadata=bearer(keys["reviewer"]), timeout=10).events
        first = next(e.click for e in events if e.click.positive)
        firsts.append((first.x, first.y))
    assert a["point"] == pytest.approx(np.mean(firsts, axis=0), abs=1e-6)
    assert len(a["clicks"]) == sum(1 for _ in a["clicks"]) and all(len(c) == 4 for c in a["clicks"])

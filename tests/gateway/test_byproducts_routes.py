"""REST for byproducts through the gateway, against the real byproducts server, worker and Redis."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from google.protobuf.json_format import MessageToDict

from services.byproducts.synthetic import session_events
from services.common.keys import KeyStore, Role
from services.common.probes import grpc_health
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from tests.conftest import PYTHON, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(settings):
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    return {role: store.create(role.name, role, ["p1"])[1] for role in (Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN)}


@pytest.fixture
def client(settings, tokens, spawn):
    spawn([PYTHON, "-m", "services.byproducts.server"], settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.byproducts.worker:app", "worker", "-Q", "byproducts", "-n",
           "gw-bp@%h", "--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "WARNING"], settings)
    wait_until(lambda: grpc_health(settings.service_address("byproducts"), 0.5) == "SERVING", 30, "SERVING")
    return TestClient(create_app(settings))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_json(events) -> list[dict]:
    return [MessageToDict(e) for e in events]


def test_rest_ingest_query_and_export(client, tokens):
    events = session_events("rest-1", "p1", 60)
    reply = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": as_json(events)},
                        headers=auth(tokens[Role.ANNOTATOR]))
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == "60"  # uint64 in the proto3 JSON mapping is a string
    again = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": as_json(events[:10])},
                        headers=auth(tokens[Role.ANNOTATOR]))
    assert again.json()["duplicates"] == "10"
    reviewer = auth(tokens[Role.REVIEWER])

    def session():
        got = client.get("/v1/byproducts/sessions/rest-1", params={"project_id": "p1"}, headers=reviewer)
        return got.status_code == 200 and got.json()
    found = wait_until(session, 30, "session stored")
    annotator = tokens[Role.ANNOTATOR].removeprefix("ak_").partition(".")[0]  # the recording key's own id
    assert found["session"]["annotator_id"] == annotator and found["stats"]["event_count"] == "60"
    listed = client.get("/v1/byproducts/sessions", params={"project_id": "p1", "annotator_id": annotator},
                        headers=reviewer).json()
    assert [s["session_id"] for s in listed["sessions"]] == ["rest-1"]
    clicks = client.get("/v1/byproducts/sessions/rest-1/events",
                        params={"project_id": "p1", "kinds": 3, "page_size": 1}, headers=reviewer).json()
    assert len(clicks["events"]) == 1 and all("click" in e for e in clicks["events"])
    assert clicks["page"]["next_page_token"]
    signals = wait_until(lambda: client.get("/v1/byproducts/signals", params={"project_id": "p1"},
                                            headers=reviewer).json().get("signals"), 30, "signals")
    assert signals[0]["session_id"] == "rest-1" and signals[0]["click_count"] > 0
    exported = client.get("/v1/byproducts/export.jsonl", params={"project_id": "p1", "include_signals": True},
                          headers=reviewer)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [line["type"] for line in lines].count("event") == 60 and lines[-1]["type"] == "signals"
    luab = client.get("/v1/byproducts/luab.jsonl", params={"project_id": "p1", "heatmap_size": 16},
                      headers=reviewer)
    image = json.loads(luab.text.splitlines()[0])
    assert image["image_id"] == "img-1" and image["heatmap"]["size"] == [16, 16]


def test_rest_errors_keep_the_fields_and_codes(client, tokens):
    events = session_events("rest-2", "p1", 10)
    body = as_json(events)
    body[4]["mouse"]["points"][0]["x"] = 2.0
    del body[6]["eventId"]
    reply = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": body},
                        headers=auth(tokens[Role.ANNOTATOR]))
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == "events[4].mouse.points[0].x"
    assert [d["field"] for d in error["details"]] == ["events[4].mouse.points[0].x", "events[6].event_id"]
    unparsable = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": [{"seq": "x"}]},
                             headers=auth(tokens[Role.ANNOTATOR]))
    assert unparsable.status_code == 422 and unparsable.json()["error"]["field"] == "events"
    assert client.get("/v1/byproducts/sessions/nope", params={"project_id": "p1"},
                      headers=auth(tokens[Role.REVIEWER])).status_code == 404
    assert client.get("/v1/byproducts/sessions", params={"project_id": "p1"},
                      headers=auth(tokens[Role.ANNOTATOR])).status_code == 403
    assert client.get("/v1/byproducts/sessions", params={"project_id": "p1"}).status_code == 401


def recorded_box_session(session_id: str, x1: float = 0.85) -> list[dict]:
    """Events as services/gateway/static/byproducts.js sends them after a box prompt (``click`` then ``box``)."""
    def event(seq: int, t_ms: int, **payload) -> dict:
        return {"project_id": "p1", "session_id": session_id, "event_id": f"{session_id}-{seq}", "seq": seq,
                "t_ms": t_ms, **payload}
    return [
        event(1, 0, session_start={"session": {"image": {"image_id": "img-box", "width": 200, "height": 100}}}),
        event(2, 700, click={"x": 0.475, "y": 0.5, "positive": True, "click_index": 0, "iou_change": 1}),
        event(3, 700, box={"x0": 0.1, "y0": 0.1, "x1": x1, "y1": 0.9, "click_index": 0}),
        event(4, 2000, submit={"labels": ["cat"], "click_count": 1}),
        event(5, 2000, session_end={"outcome": "SESSION_OUTCOME_SUBMITTED"}),
    ]


def test_rest_ingest_keeps_a_box_prompt_as_a_box_event(client, tokens):
    annotator, reviewer = auth(tokens[Role.ANNOTATOR]), auth(tokens[Role.REVIEWER])
    inverted = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": recorded_box_session(
        "rest-box", x1=0.05)}, headers=annotator)
    assert inverted.status_code == 422, inverted.text
    error = inverted.json()["error"]
    assert error["field"] == "events[2].box.x1" and [d["field"] for d in error["details"]] == ["events[2].box.x1"]
    reply = client.post("/v1/byproducts/events", json={"project_id": "p1", "events": recorded_box_session("rest-box")},
                        headers=annotator)
    assert reply.status_code == 200 and reply.json()["accepted"] == "5", reply.text

    def boxes():  # EventKind 13 = EVENT_KIND_BOX
        got = client.get("/v1/byproducts/sessions/rest-box/events", params={"project_id": "p1", "kinds": 13},
                         headers=reviewer)
        return got.status_code == 200 and got.json()["events"]
    found = wait_until(boxes, 30, "the box event stored")
    assert [{k: round(v, 4) for k, v in e["box"].items()} for e in found] == \
        [{"x0": 0.1, "y0": 0.1, "x1": 0.85, "y1": 0.9, "click_index": 0}]
    corrections = client.get("/v1/byproducts/sessions/rest-box/events", params={"project_id": "p1", "kinds": 6},
                             headers=reviewer).json()["events"]
    assert corrections == []  # the box is not logged as a correction

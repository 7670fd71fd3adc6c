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

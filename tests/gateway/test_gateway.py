"""The gateway seed: /healthz against real Redis, auth and key management through REST."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings):
    migrate(settings.resolved_database_url)
    return TestClient(create_app(settings))


@pytest.fixture
def tokens(settings, client):
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    return {role: store.create(role.name, role, ["p1"])[1] for role in (Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN)}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz_is_503_and_names_what_is_down(client):
    reply = client.get("/healthz")
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "degraded"
    assert body["parts"]["redis"] == "SERVING"
    assert body["parts"]["selection"] == "UNREACHABLE"
    assert body["parts"]["triton"] == "UNREACHABLE"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer ak_00.nope"])
def test_missing_or_wrong_key_is_401(client, header):
    reply = client.get("/v1/whoami", headers={"Authorization": header} if header else {})
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHENTICATED"


def test_whoami_reports_role_and_projects(client, tokens):
    reply = client.get("/v1/whoami", headers=auth(tokens[Role.REVIEWER]))
    assert reply.status_code == 200
    assert reply.json()["role"] == "reviewer" and reply.json()["projects"] == ["p1"]


def test_only_admins_manage_keys(client, tokens):
    assert client.get("/v1/keys", headers=auth(tokens[Role.REVIEWER])).status_code == 403
    body = {"name": "labeller", "role": "annotator", "projects": ["p1"]}
    assert client.post("/v1/keys", json=body, headers=auth(tokens[Role.ANNOTATOR])).status_code == 403
    created = client.post("/v1/keys", json=body, headers=auth(tokens[Role.ADMIN]))
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert client.get("/v1/whoami", headers=auth(new_key)).json()["role"] == "annotator"
    listed = client.get("/v1/keys", headers=auth(tokens[Role.ADMIN])).json()
    assert created.json()["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert client.delete(f"/v1/keys/{created.json()['id']}", headers=auth(tokens[Role.ADMIN])).status_code == 204
    assert client.get("/v1/whoami", headers=auth(new_key)).status_code == 401


def test_bad_key_request_is_422_naming_the_field(client, tokens):
    reply = client.post("/v1/keys", json={"name": "x", "role": "superuser", "projects": ["p1"]},
                        headers=auth(tokens[Role.ADMIN]))
    assert reply.status_code == 422
    assert reply.json()["error"]["field"] == "role"
    reply = client.post("/v1/keys", json={"name": "x", "role": "admin", "projects": []},
                        headers=auth(tokens[Role.ADMIN]))
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "projects"


def test_revoking_an_unknown_key_is_404(client, tokens):
    reply = client.delete("/v1/keys/doesnotexist", headers=auth(tokens[Role.ADMIN]))
    assert reply.status_code == 404 and reply.json()["error"]["field"] == "key_id"

"""Text that PostgreSQL cannot store (NUL characters) in every path parameter, query and JSON body
field, and in upload file names, against the gateway on a real PostgreSQL server: refused with 422
naming where it was, never a 500 from the driver."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.access import RULES
from services.gateway.app import create_app
from services.simulation.stack import free_port
from tests.hardening.conftest import bearer, gateway_settings, hardening_settings

pytestmark = pytest.mark.integration

BODIES = {
    "/v1/keys": {"name": "n", "role": "admin", "projects": ["p1"]},
    "/v1/projects": {"project_id": "p3", "name": "n", "labels": ["a", "b"]},
    "/v1/projects/p1/sessions": {"task_id": "", "image_id": "i", "label": "l"},
    "/v1/projects/p1/sessions/s/finish": {"outcome": "submitted", "label": "l"},
    "/v1/byproducts/events": {"project_id": "p1", "events": [{"event_id": "e", "session_id": "s"}]},
}


@pytest.fixture(scope="module")
def pg_client(postgres_url, tmp_path_factory):
    settings = hardening_settings(tmp_path_factory.mktemp("pg"), free_port()).model_copy(
        update={"database_url": postgres_url})
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = bearer(store.create("admin", Role.ADMIN, ["*"])[1])
    with TestClient(create_app(settings, gateway_settings()), raise_server_exceptions=False) as client:
        assert client.post("/v1/projects", json={"project_id": "p1"}, headers=admin).status_code == 201
        yield client, admin


def _strings(value, path=""):
    """(path, setter) of every string in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path


def _with_nul(document, target: str):
    import copy  # noqa: PLC0415
    document = copy.deepcopy(document)
    parts = re.findall(r"[^.\[\]]+", target)
    holder = document
    for part in parts[:-1]:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    last = int(parts[-1]) if isinstance(holder, list) else parts[-1]
    holder[last] = holder[last] + "\x00x"
    return document


def test_nul_in_every_path_parameter_and_query(pg_client):
    client, admin = pg_client
    for (method, path), rule in sorted(RULES.items()):
        if rule.public:
            continue
        for name in re.findall(r"\{([a-z_]+)\}", path) or [None]:
            url = path.replace("{" + name + "}", "a%00b") if name else path
            url = re.sub(r"\{project_id\}", "p1", url)
            url = re.sub(r"\{[a-z_]+\}", "x", url)
            reply = client.request(method, url, headers=admin)
            assert reply.status_code != 500, (method, url, reply.text)
            if name:
                assert reply.status_code == 422 and reply.json()["error"]["field"] == "path", (url, reply.text)
            reply = client.request(method, url.replace("a%00b", "a") + "?project_id=p1%00&annotator_id=a%00",
                                   headers=admin)
            assert reply.status_code == 422 and reply.json()["error"]["field"] == "project_id", (url, reply.text)


@pytest.mark.parametrize("path", sorted(BODIES))
def test_nul_in_every_json_string(pg_client, path):
    client, admin = pg_client
    for target in _strings(BODIES[path]):
        document = json.dumps(_with_nul(BODIES[path], target)).encode()
        for media_type in ({"Content-Type": "application/json"}, {"Content-Type": "application/merge-patch+json"}, {}):
            reply = client.post(path, content=document, headers={**admin, **media_type})  # FastAPI reads all three
            assert reply.status_code == 422, (path, target, media_type, reply.text)
            assert reply.json()["error"]["field"] == target


def test_control_characters_in_upload_names_are_dropped(pg_client):
    client, admin = pg_client
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(buffer, "PNG")
    # by hand: httpx would percent-encode the name; a hostile client sends the raw bytes
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\x00b\x01c.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + buffer.getvalue() + b"\r\n--B--\r\n")
    reply = client.post("/v1/projects/p1/images", content=body,
                        headers={**admin, "Content-Type": "multipart/form-data; boundary=B"})
    assert reply.status_code in (201, 422), reply.text
    if reply.status_code == 201:
        assert reply.json()["images"][0]["filename"] == "abc.png"

"""Projects and keys end, and a one-label project is a normal project (issue 19, item 5), against the real
app in process: DELETE a project (admin) takes its rows, files and videos and its place in every key's scope
(keys scoped to it alone are revoked, so a later project of the same id does not fall to them); DELETE a
key (admin) ends it and its web sessions; the selection pool of a one-label project is background + label.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from annotation.v1 import selection_pb2
from services.common.keys import Role
from services.common.storage import make_engine, make_session_factory
from services.gateway.routes_projects import pool_classes
from services.selection.pool import PoolStore
from tests.hardening.conftest import bearer

pytestmark = pytest.mark.integration


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 30, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_delete_a_project(client, platform, projects):
    admin = bearer(platform.keys["admin"])
    assert client.post("/v1/projects", json={"project_id": "gone", "labels": ["cup"]}, headers=admin).status_code == 201
    only = platform.store.create("only-gone", Role.ANNOTATOR, ["gone"])
    both = platform.store.create("gone-and-p1", Role.REVIEWER, ["gone", "p1"])
    uploaded = client.post("/v1/projects/gone/images", files=[("files", ("a.png", png(1), "image/png"))], headers=admin)
    stored = platform.settings.var_dir / "images"
    before = set(stored.iterdir())
    assert uploaded.status_code == 201
    assert client.post("/v1/projects/gone/questions/next", headers=bearer(only[1])).json()["exhausted"] is False

    reply = client.delete("/v1/projects/gone", headers=admin)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"project_id": "gone", "images": 1, "tasks": 1, "annotations": 0, "videos": 0,
                            "keys_revoked": 1, "keys_rescoped": 1}
    assert client.get("/v1/projects/gone", headers=admin).status_code == 404
    assert len(before - set(stored.iterdir())) == 1  # the image file went too
    assert client.get("/v1/whoami", headers=bearer(only[1])).status_code == 401
    assert client.get("/v1/whoami", headers=bearer(both[1])).json()["projects"] == ["p1"]
    assert client.delete("/v1/projects/gone", headers=admin).status_code == 404

    # made again with the same id: the old keys do not come back with it
    assert client.post("/v1/projects", json={"project_id": "gone"}, headers=admin).status_code == 201
    assert client.get("/v1/projects/gone", headers=bearer(both[1])).status_code == 403
    assert client.get("/v1/projects/gone", headers=bearer(only[1])).status_code == 401


def test_only_an_admin_of_the_project_deletes_it(client, platform, projects):
    for name in ("reviewer_p1", "annotator_p1", "admin_p2"):
        assert client.delete("/v1/projects/p1", headers=bearer(platform.keys[name])).status_code == 403
    assert client.get("/v1/projects/p1", headers=bearer(platform.keys["admin"])).status_code == 200


def test_delete_a_key(client, platform, projects):
    admin_p1 = bearer(platform.keys["admin_p1"])
    made = client.post("/v1/keys", json={"name": "temp", "role": "annotator", "projects": ["p1"]}, headers=admin_p1)
    key_id, token = made.json()["id"], made.json()["key"]
    assert client.get("/v1/whoami", headers=bearer(token)).status_code == 200
    assert client.delete(f"/v1/keys/{key_id}", headers=bearer(platform.keys["annotator_p1"])).status_code == 403
    assert client.delete(f"/v1/keys/{key_id}", headers=admin_p1).status_code == 204
    assert client.get("/v1/whoami", headers=bearer(token)).status_code == 401
    assert key_id not in {k["id"] for k in client.get("/v1/keys", headers=admin_p1).json()}
    assert client.delete("/v1/keys/nope", headers=admin_p1).status_code == 404


def test_pool_classes_put_background_first():
    assert pool_classes(["object"]) == ["background", "object"]
    assert pool_classes(["cup", "plate"]) == ["background", "cup", "plate"]
    assert pool_classes(["background", "cup"]) == ["background", "cup"]
    assert pool_classes(["background"]) == ["background", "object"]


def test_a_one_label_project_gets_a_selection_pool(client, platform, projects, monkeypatch):
    """What the gateway asks of selection for the CLI's default project (one label) is a pool the
    selection service's own store accepts; before, it refused: 'class_names: needs at least 2'."""
    sent = []
    upstream = client.app.state.upstream
    real = upstream.call

    def recording(service, method, message, key, timeout_s=None):
        if method == "CreatePool":
            sent.append(message)
        return real(service, method, message, key, timeout_s)
    monkeypatch.setattr(upstream, "call", recording)
    admin = bearer(platform.keys["admin"])
    for project_id, body in (("one", {"labels": ["cup"]}), ("default", {})):
        assert client.post("/v1/projects", json={"project_id": project_id, **body}, headers=admin).status_code == 201
    assert [list(m.class_names) for m in sent] == [["background", "cup"], ["background", "object"]]
    assert all(isinstance(m, selection_pb2.CreatePoolRequest) for m in sent)
    pools = PoolStore(make_session_factory(make_engine(platform.settings.resolved_database_url)))
    for message in sent:
        pool = pools.create_pool(message.project_id, message.pool_id, message.display_name, list(message.class_names))
        assert pool.class_names == list(message.class_names)

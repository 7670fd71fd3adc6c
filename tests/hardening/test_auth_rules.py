"""Every REST route and every gRPC method has an explicit access rule, and each rule holds.

REST rules live in ``services/gateway/access.py`` (one table); gRPC rules in the protos
(``option (annotation.v1.required_role)``). Both sets are enumerated from the running app and the
generated descriptors, so a new route or RPC without a rule fails here. Each is then driven
exhaustively, in process, against a real gRPC server with the kit's interceptors: no key -> 401 /
UNAUTHENTICATED; a key one role too low -> 403 / PERMISSION_DENIED; a key of another project ->
403 / PERMISSION_DENIED; the right key -> past authentication (whatever the behaviour then says).
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from annotation.v1 import (
    byproducts_pb2,
    common_pb2,
    dialog_pb2,
    operations_pb2,
    quality_pb2,
    segmentation_pb2,
    selection_pb2,
    video_pb2,
)
from services.common.errors import PermissionDenied
from services.common.interceptors import PUBLIC_SERVICES, required_role
from services.common.keys import Role
from services.gateway.access import RULES, rest_routes
from services.gateway.app import create_app
from tests.hardening.conftest import bearer, gateway_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROTO_FILES = (byproducts_pb2, dialog_pb2, operations_pb2, quality_pb2, segmentation_pb2, selection_pb2, video_pb2,
               common_pb2)
# The key one role too low for a rule, all scoped to project p1; None: no lower role exists.
LOWER = {Role.ANNOTATOR: None, Role.REVIEWER: "annotator_p1", Role.ADMIN: "reviewer_p1"}
EXACT = {Role.ANNOTATOR: "annotator_p1", Role.REVIEWER: "reviewer_p1", Role.ADMIN: "admin_p1"}
OTHER_PROJECT = "admin_p2"  # the highest role, on project p2 only
# Routes whose right-key call would destroy what the rest of the audit uses (project p1 and the keys scoped
# to it): that call goes to a project of its own, with a key of the rule's role scoped to it.
DESTRUCTIVE = {("DELETE", "/v1/projects/{project_id}")}


# --- REST ------------------------------------------------------------------------------------------

def test_every_rest_route_has_exactly_one_rule(platform):
    app = create_app(platform.settings, gateway_settings())
    routes = set(rest_routes(app))
    missing = sorted(routes - RULES.keys())
    assert not missing, f"REST routes without an access rule in services/gateway/access.py: {missing}"
    stale = sorted(RULES.keys() - routes)
    assert not stale, f"access rules for routes the app does not have: {stale}"


def test_rules_of_forwarded_routes_match_the_rpc_roles():
    for (method, path), rule in RULES.items():
        if rule.rpc:
            assert required_role("/" + rule.rpc) == rule.role, f"{method} {path}: rule {rule.role} vs proto"


def _url(path: str, rule, project: str = "p1") -> str:
    url = re.sub(r"\{project_id\}", project, path)
    url = re.sub(r"\{[a-z_]+\}", "x", url)
    if url == "/static":
        url = "/static/api.js"
    if rule.scope == "query":
        url += "?project_id=p1"
    return url


def _body(method: str, path: str, project: str = "p1") -> dict | None:
    if path == "/v1/projects":
        return {"project_id": project}
    if path.endswith("/events"):
        return {"project_id": project, "events": []}
    return None


def _call(client, method: str, url: str, key: str | None, body: dict | None = None):
    headers = bearer(key) if key else {}
    return client.request("GET" if method == "*" else method, url, headers=headers, json=body)


ROUTES = sorted(RULES.items())


@pytest.mark.parametrize(("route", "rule"), ROUTES, ids=[f"{m} {p}" for (m, p), _ in ROUTES])
def test_rest_route_follows_its_rule(client, platform, projects, route, rule):
    method, path = route
    url, keys = _url(path, rule), platform.keys
    anonymous = _call(client, method, url, None, _body(method, path))
    if rule.public:
        assert anonymous.status_code not in (401, 403, 500), anonymous.text
        return
    assert anonymous.status_code == 401, (route, anonymous.text)
    assert anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    lower = LOWER[rule.role]
    if lower is not None:
        reply = _call(client, method, url, keys[lower], _body(method, path))
        assert reply.status_code == 403, (route, lower, reply.text)
        assert reply.json()["error"]["code"] == "PERMISSION_DENIED"
    if rule.scope in ("path", "body", "query"):
        reply = _call(client, method, url, keys[OTHER_PROJECT], _body(method, path))
        assert reply.status_code == 403, (route, reply.text)
        assert reply.json()["error"]["field"] in ("project_id", "")
    right = keys[EXACT[rule.role]] if rule.scope != "none" else keys["admin"] if rule.role == Role.ADMIN \
        else keys["annotator_p1"]
    if route in DESTRUCTIVE:
        assert client.post("/v1/projects", json={"project_id": "doomed"}, headers=bearer(keys["admin"])).status_code == 201
        right, url = platform.store.create("doomed", rule.role, ["doomed"])[1], _url(path, rule, "doomed")
    reply = _call(client, method, url, right, _body(method, path))
    assert reply.status_code not in (401, 403, 500), (route, reply.status_code, reply.text)


def test_key_scoped_listing_shows_only_the_keys_projects(client, platform, projects):
    listed = client.get("/v1/projects", headers=bearer(platform.keys["admin_p2"])).json()
    assert [p["project_id"] for p in listed] == ["p2"]


def test_a_project_admin_cannot_mint_keys_beyond_its_projects(client, platform, projects):
    """Key management by an admin scoped to p1 stays inside p1: no global or other-project keys,
    no listing or revoking of keys outside its projects."""
    admin_p1 = bearer(platform.keys["admin_p1"])
    for projects_asked in (["*"], ["p2"], ["p1", "p2"]):
        reply = client.post("/v1/keys", json={"name": "x", "role": "admin", "projects": projects_asked},
                            headers=admin_p1)
        assert reply.status_code == 403 and reply.json()["error"]["field"] == "projects", reply.text
    created = client.post("/v1/keys", json={"name": "ok", "role": "annotator", "projects": ["p1"]}, headers=admin_p1)
    assert created.status_code == 201
    listed = {k["name"] for k in client.get("/v1/keys", headers=admin_p1).json()}
    assert "ok" in listed and not listed & {"admin", "admin_p2"}
    other = next(p for p, _c, _r in platform.store.list() if p.name == "admin_p2")
    reply = client.delete(f"/v1/keys/{other.key_id}", headers=admin_p1)
    assert reply.status_code == 403 and reply.json()["error"]["field"] == "key_id"
    assert client.get("/v1/whoami", headers=bearer(platform.keys["admin_p2"])).status_code == 200
    assert client.delete(f"/v1/keys/{created.json()['id']}", headers=admin_p1).status_code == 204


# --- gRPC ------------------------------------------------------------------------------------------

def _methods():
    for module in PROTO_FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield method


METHODS = sorted(_methods(), key=lambda m: m.full_name)


def test_every_rpc_declares_a_role():
    assert len(METHODS) > 40  # every service's API is enumerated
    files = {f"annotation/v1/{p.name}" for p in (REPO / "protos" / "annotation" / "v1").glob("*.proto")}
    assert files == {module.DESCRIPTOR.name for module in PROTO_FILES}, "a .proto missing from PROTO_FILES"
    for method in METHODS:
        role = method.GetOptions().Extensions[common_pb2.required_role]
        assert role != common_pb2.ROLE_UNSPECIFIED, f"{method.full_name} has no (annotation.v1.required_role)"
        assert required_role(f"/{method.containing_service.full_name}/{method.name}") == Role(role)


def test_an_rpc_without_a_rule_is_refused():
    with pytest.raises(PermissionDenied):
        required_role("/annotation.v1.Selection/NoSuchMethod")
    assert required_role("/grpc.health.v1.Health/Check") is None and "grpc.health.v1.Health" in PUBLIC_SERVICES


def _invoke(channel, method, key: str | None, project: str | None):
    request_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(method.input_type.full_name))
    response_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(method.output_type.full_name))
    request = request_class()
    if project is not None and "project_id" in request.DESCRIPTOR.fields_by_name:
        request.project_id = project
    if "timeout_ms" in request.DESCRIPTOR.fields_by_name:
        request.timeout_ms = 1
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
    rpc = getattr(channel, kind)(path, request_serializer=request_class.SerializeToString,
                                 response_deserializer=response_class.FromString)
    payload = iter([request]) if method.client_streaming else request
    metadata = [("authorization", f"Bearer {key}")] if key else []
    try:
        reply = rpc(payload, metadata=metadata, timeout=3)
        if method.server_streaming:
            list(reply)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(platform):
    with grpc.insecure_channel(platform.grpc_address) as channel:
        yield channel


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
def test_rpc_follows_its_rule(channel, platform, method):
    role = Role(method.GetOptions().Extensions[common_pb2.required_role])
    keys = platform.keys
    assert _invoke(channel, method, None, "p1") == grpc.StatusCode.UNAUTHENTICATED
    assert _invoke(channel, method, "ak_0.not-a-key", "p1") == grpc.StatusCode.UNAUTHENTICATED
    if LOWER[role] is not None:
        assert _invoke(channel, method, keys[LOWER[role]], "p1") == grpc.StatusCode.PERMISSION_DENIED
    if "project_id" in method.input_type.fields_by_name:
        assert _invoke(channel, method, keys[OTHER_PROJECT], "p1") == grpc.StatusCode.PERMISSION_DENIED
        # a key scoped to projects must name one; a NUL in it is refused before any store sees it
        assert _invoke(channel, method, keys[EXACT[role]], "") == grpc.StatusCode.INVALID_ARGUMENT
        assert _invoke(channel, method, keys["admin"], "p\x00") == grpc.StatusCode.INVALID_ARGUMENT
    code = _invoke(channel, method, keys[EXACT[role]], "p1")
    assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), code


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
def test_undecodable_request_bytes_are_invalid_argument_naming_request(channel, platform, method):
    """Bytes that are no message of the method's input type, on the real server: INVALID_ARGUMENT
    with an ErrorDetail naming ``request``, never INTERNAL."""
    from grpc_status import rpc_status  # noqa: PLC0415

    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
    rpc = getattr(channel, kind)(path, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    garbage = b"\x0a\xff\xff\xff\xff\x0f\x00"  # a length-delimited field 1 claiming 4 GiB
    key = platform.keys["admin"]
    with pytest.raises(grpc.RpcError) as failed:
        reply = rpc(iter([garbage]) if method.client_streaming else garbage, timeout=5,
                    metadata=[("authorization", f"Bearer {key}")])
        if method.server_streaming:
            list(reply)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value
    detail = common_pb2.ErrorDetail()
    rpc_status.from_call(failed.value).details[0].Unpack(detail)
    assert detail.field == "request"

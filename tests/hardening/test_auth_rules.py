"""Every REST route and every gRPC method has an explicit access rule, and each rule holds.

REST rules live in ``services/gateway/access.py`` (one table); gRPC rules in the protos
(``option (annotation.v1.required_role)``). Both sets are enumerated from the running app and the
generated descriptors, so a new route or RPC without a rule fails here. Each is then driven
exhaustively, in process, against a real gRPC server with the kit's interceptors: no key -> 401 /
UNAUTHENTICATED; a key one role too low -> 403 / PERMISSION_DENIED; a key of another project ->
403 / PERMISSION_DENIED; the right key -> past authentication (whatever the behaviour then says).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict

from annotation.v1 import (
    byproducts_pb2,
    byproducts_pb2_grpc,
    common_pb2,
    dialog_pb2,
    dialog_pb2_grpc,
    operations_pb2,
    quality_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
    selection_pb2,
    training_pb2,
    video_pb2,
)
from services.common import service_identity
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.grpc_server import ServiceServer
from services.common.interceptors import PUBLIC_SERVICES, identity_paths, required_role
from services.common.keys import SERVICE_GRANTS, KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.access import RULES, rest_routes
from services.gateway.app import create_app
from services.simulation.stack import free_port
from tests.hardening.conftest import bearer, gateway_settings, hardening_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROTO_FILES = (byproducts_pb2, dialog_pb2, operations_pb2, quality_pb2, segmentation_pb2, selection_pb2, training_pb2,
               video_pb2, common_pb2)
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


# --- annotators separated within a project (issue 19, item 2) ------------------------------------
# An annotator's identity is the key: a request naming another annotator is refused (generic, in the
# interceptor, for every field named annotator_id of every RPC), and an annotator reaches only their own
# sessions, tasks, questions and byproduct events; reviewers and admins reach all in their projects. The
# tables below name every route and RPC that reaches one annotator's thing; a new one that names a session,
# task or question fails here until it is listed, and each listed one is driven with two annotators' keys.

P = "/v1/projects/{project_id}"
# Fields (anywhere in a request) that address one annotator's thing.
ADDRESSES = ("session_id", "task_id", "question_id")
# RPCs open to annotators that address one annotator's thing: each is driven below (OWNER_DRIVERS).
OWNER_SCOPED_RPCS = {
    "annotation.v1.Segmentation.GetSession", "annotation.v1.Segmentation.AddClick", "annotation.v1.Segmentation.Undo",
    "annotation.v1.Segmentation.AddBox",
    "annotation.v1.Segmentation.Redo", "annotation.v1.Segmentation.FinishSession",
    "annotation.v1.Byproducts.Record", "annotation.v1.Byproducts.RecordBatch", "annotation.v1.Dialog.RecordAnswer",
}
# RPCs open to annotators whose addressing fields reach nothing of another annotator, and why.
NOT_OWNER_SCOPED = {
    "annotation.v1.Segmentation.StartSession": "session_id asks for a new id (ALREADY_EXISTS if taken, so no "
                                               "takeover); task_id is a label the gateway checks",
}


def _addressing(descriptor, prefix: str = "", seen: frozenset = frozenset()):
    for field in descriptor.fields:
        if field.name in ADDRESSES or any(field.name.endswith(f"_{name}") for name in ADDRESSES):
            yield prefix + field.name
        if field.type == field.TYPE_MESSAGE and field.message_type.full_name not in seen \
                and not field.message_type.full_name.startswith("google."):
            yield from _addressing(field.message_type, f"{prefix}{field.name}.", seen | {descriptor.full_name})


def _annotator_methods():
    return [m for m in METHODS if m.GetOptions().Extensions[common_pb2.required_role] == common_pb2.ROLE_ANNOTATOR]


def test_every_annotator_rpc_addressing_a_session_task_or_question_is_owner_scoped():
    addressing = {m.full_name for m in _annotator_methods() if any(_addressing(m.input_type))}
    unlisted = sorted(addressing - OWNER_SCOPED_RPCS - NOT_OWNER_SCOPED.keys())
    assert not unlisted, f"RPCs open to annotators that address a session, task or question, in neither " \
                         f"OWNER_SCOPED_RPCS nor NOT_OWNER_SCOPED: {unlisted}"
    assert not (OWNER_SCOPED_RPCS | NOT_OWNER_SCOPED.keys()) - addressing, "stale entries"


# POST routes ending in /sessions whose body names no task or session, and why they are not owner-scoped.
REST_NOT_OWNER_SCOPED = {
    ("POST", f"{P}/videos/{{video_id}}/frames/{{index}}/sessions"): "a new session on a frame every annotator "
    "of the project may annotate; its later calls are owner-scoped",
}


def test_every_annotator_route_addressing_a_session_or_task_is_owner_scoped():
    for (method, path), rule in RULES.items():
        addresses = "{session_id}" in path or "{task_id}" in path or \
            method == "POST" and path.endswith(("/sessions", "/events")) \
            and (method, path) not in REST_NOT_OWNER_SCOPED  # a task or session named in the body
        if rule.role == Role.ANNOTATOR and addresses:
            assert rule.owner, f"{method} {path} reaches one annotator's thing: mark it owner=True and drive it"
    assert {route for route, rule in RULES.items() if rule.owner} == REST_OWNER_ROUTES.keys()


IDENTITY_CASES = [(m, ".".join(f.name for f in path)) for m in _annotator_methods()
                  for path in identity_paths(m.input_type.full_name)]


def test_identity_fields_are_found():
    found = {(m.full_name, path) for m, path in IDENTITY_CASES}
    assert {("annotation.v1.Segmentation.StartSession", "annotator_id"),
            ("annotation.v1.Byproducts.RecordBatch", "events.session_start.session.annotator_id"),
            ("annotation.v1.Byproducts.Record", "session_start.session.annotator_id"),
            ("annotation.v1.Dialog.NextQuestion", "annotator_id"), ("annotation.v1.Dialog.RecordAnswer", "annotator_id"),
            ("annotation.v1.Selection.ReportLabels", "labels.annotator_id")} <= found


def _message_with(type_name: str, dotted: str, value: str):
    """A request of ``type_name`` with the field at ``dotted`` set (one element in each repeated field
    on the way) and the name of that field as an ErrorDetail gives it (``events[0]...``)."""
    message = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(type_name))()
    if "project_id" in message.DESCRIPTOR.fields_by_name:
        message.project_id = "p1"
    node, named = message, []
    *parents, last = dotted.split(".")
    for name in parents:
        if node.DESCRIPTOR.fields_by_name[name].is_repeated:
            node, name = getattr(node, name).add(), f"{name}[0]"
        else:
            node = getattr(node, name)
        named.append(name)
    setattr(node, last, value)
    return message, ".".join([*named, last])


def _rpc_call(channel, method, message, key: str):
    """(code, ErrorDetail field) of one call with ``message`` as the request (or the stream's one message)."""
    from grpc_status import rpc_status  # noqa: PLC0415

    response_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(method.output_type.full_name))
    kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
    rpc = getattr(channel, kind)(f"/{method.containing_service.full_name}/{method.name}",
                                 request_serializer=type(message).SerializeToString,
                                 response_deserializer=response_class.FromString)
    try:
        reply = rpc(iter([message]) if method.client_streaming else message, timeout=10,
                    metadata=[("authorization", f"Bearer {key}")])
        if method.server_streaming:
            list(reply)
    except grpc.RpcError as error:
        status, field = rpc_status.from_call(error), ""
        if status is not None and status.details:
            detail = common_pb2.ErrorDetail()
            status.details[0].Unpack(detail)
            field = detail.field
        return error.code(), field
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(("method", "path"), IDENTITY_CASES, ids=[f"{m.full_name}:{p}" for m, p in IDENTITY_CASES])
def test_an_annotator_may_not_name_another_annotator(channel, platform, method, path):
    """StartSession by A with annotator_id B stored B: every annotator_id of every RPC is now the key's own
    or empty (empty: the key); a reviewer or admin may act for an annotator explicitly."""
    message, named = _message_with(method.input_type.full_name, path, "someone-else")
    assert _rpc_call(channel, method, message, platform.keys["annotator_p1"]) == \
        (grpc.StatusCode.PERMISSION_DENIED, named)
    own = platform.store.verify(platform.keys["annotator_p1"]).key_id
    for key, value in ((platform.keys["annotator_p1"], own), (platform.keys["reviewer_p1"], "someone-else")):
        message, _ = _message_with(method.input_type.full_name, path, value)
        code, _ = _rpc_call(channel, method, message, key)
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), code


# --- service keys (issue 19, item 4) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dialog_key(platform) -> str:
    return service_identity.provision(platform.store, platform.settings, "dialog")


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
def test_a_service_key_calls_only_the_rpcs_granted_to_its_service(channel, dialog_key, method):
    full = f"/{method.containing_service.full_name}/{method.name}"
    code = _invoke(channel, method, dialog_key, "p1")
    if full in SERVICE_GRANTS["dialog"]:
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), code
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED, code


def test_a_service_key_may_not_use_the_gateway_nor_be_minted_there(client, platform, projects, dialog_key):
    for (method, path), rule in ROUTES:
        if not rule.public:  # refused before any route runs, so DELETE routes destroy nothing
            reply = _call(client, method, _url(path, rule), dialog_key, _body(method, path))
            assert reply.status_code == 403, (method, path, reply.text)
    reply = client.post("/v1/keys", json={"name": "service:dialog", "role": "service", "projects": ["*"]},
                        headers=bearer(platform.keys["admin"]))
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "role", reply.text
    with pytest.raises(InvalidArgument):
        Role.parse("service")


# --- two annotators on live services ---------------------------------------------------------------
# The real segmentation, byproducts, dialog and selection servicers behind the kit's interceptors in one
# server (Triton absent: a click that passes the checks answers UNAVAILABLE), real Redis, the real gateway.

def _register_live(server, kit) -> None:
    from services.byproducts import server as byproducts  # noqa: PLC0415 - heavy imports, only here
    from services.dialog import server as dialog  # noqa: PLC0415
    from services.segmentation import server as segmentation  # noqa: PLC0415
    from services.selection import server as selection  # noqa: PLC0415

    for service in (segmentation, byproducts, dialog, selection):
        service.register(server, kit)


@dataclass
class Live:
    channel: grpc.Channel
    client: TestClient
    keys: dict[str, str]  # a, b: annotators of p1; reviewer: of p1; admin: all
    ids: dict[str, str]  # the keys' ids (the annotator ids)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    from tests.conftest import Redis  # noqa: PLC0415

    redis = Redis(tmp_path_factory.mktemp("redis"))
    redis.start()
    port = free_port()
    settings = hardening_settings(tmp_path_factory.mktemp("live"), port).model_copy(update={"redis_url": redis.url})
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    keys = {"a": store.create("annotator a", Role.ANNOTATOR, ["p1"])[1],
            "b": store.create("annotator b", Role.ANNOTATOR, ["p1"])[1],
            "reviewer": store.create("reviewer", Role.REVIEWER, ["p1"])[1],
            "admin": store.create("admin", Role.ADMIN, ["*"])[1]}
    ids = {name: store.verify(token).key_id for name, token in keys.items()}
    server = ServiceServer("dialog", _register_live, settings, port=port)  # named dialog: it holds a service key
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
                TestClient(create_app(settings, gateway_settings(fallback_timeout_s=10))) as client:
            yield Live(channel, client, keys, ids)
    finally:
        server.stop(0)
        redis.stop()


def _png(height: int = 24, width: int = 32) -> bytes:
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Owned:
    """What annotator a owns: a segmentation session, a byproducts session, a dialog question."""

    session_id: str
    byproducts_session_id: str
    question_id: str
    seq: itertools.count


@pytest.fixture(scope="module")
def owned(live) -> Owned:
    from services.byproducts.synthetic import session_events  # noqa: PLC0415

    a = [("authorization", f"Bearer {live.keys['a']}")]
    seg = segmentation_pb2_grpc.SegmentationStub(live.channel)
    started = seg.StartSession(segmentation_pb2.StartSessionRequest(
        project_id="p1", image=common_pb2.ImageRef(image_id="im-a"), image_data=_png()), metadata=a, timeout=10)
    assert started.session.annotator_id == live.ids["a"]  # empty: the key's own id
    bp_sid = f"bp-{uuid.uuid4().hex}"
    byproducts_pb2_grpc.ByproductsStub(live.channel).RecordBatch(byproducts_pb2.EventBatch(
        project_id="p1", events=session_events(bp_sid, "p1", 5, annotator_id="")[:3]), metadata=a, timeout=10)
    candidate = dialog_pb2.Candidate(region=common_pb2.Region(image_id="im-a", whole_image=common_pb2.Region.WholeImage()),
                                     image=common_pb2.ImageRef(image_id="im-a", width=32, height=24), selection_score=0.9)
    asked = dialog_pb2_grpc.DialogStub(live.channel).NextQuestion(dialog_pb2.NextQuestionRequest(
        project_id="p1", candidates=dialog_pb2.CandidateList(candidates=[candidate])), metadata=a, timeout=10)
    return Owned(started.session.session_id, bp_sid, asked.question.question_id, itertools.count(4))


def _event(owned: Owned) -> byproducts_pb2.Event:
    seq = next(owned.seq)
    event = byproducts_pb2.Event(project_id="p1", session_id=owned.byproducts_session_id,
                                 event_id=f"{owned.byproducts_session_id}-{seq}", seq=seq, t_ms=10_000 + seq,
                                 key_press=byproducts_pb2.KeyPressEvent(key="z", code="KeyZ"))
    event.time.GetCurrentTime()
    return event


# One call per owner-scoped RPC on what annotator a owns: {full name: (service, method, request builder)}.
OWNER_DRIVERS = {
    "annotation.v1.Segmentation.GetSession": lambda o: segmentation_pb2.SegmentationGetSessionRequest(
        project_id="p1", session_id=o.session_id),
    "annotation.v1.Segmentation.AddClick": lambda o: segmentation_pb2.AddClickRequest(
        project_id="p1", session_id=o.session_id, click=common_pb2.Click(x=3, y=3, positive=True)),
    "annotation.v1.Segmentation.AddBox": lambda o: segmentation_pb2.AddBoxRequest(
        project_id="p1", session_id=o.session_id, box=common_pb2.Box(x=1, y=1, width=4, height=4)),
    "annotation.v1.Segmentation.Undo": lambda o: segmentation_pb2.UndoRequest(project_id="p1", session_id=o.session_id),
    "annotation.v1.Segmentation.Redo": lambda o: segmentation_pb2.RedoRequest(project_id="p1", session_id=o.session_id),
    "annotation.v1.Segmentation.FinishSession": lambda o: segmentation_pb2.FinishSessionRequest(
        project_id="p1", session_id=o.session_id, outcome=common_pb2.SESSION_OUTCOME_ABANDONED),
    "annotation.v1.Byproducts.Record": _event,
    "annotation.v1.Byproducts.RecordBatch": lambda o: byproducts_pb2.EventBatch(project_id="p1", events=[_event(o)]),
    "annotation.v1.Dialog.RecordAnswer": lambda o: dialog_pb2.RecordAnswerRequest(
        project_id="p1", question_id=o.question_id, seconds_taken=1.0, skip=dialog_pb2.SkipAnswer(reason="test")),
}


def test_every_owner_scoped_rpc_has_a_driver():
    assert OWNER_DRIVERS.keys() == OWNER_SCOPED_RPCS


def test_an_annotator_reaches_only_their_own_sessions_questions_and_events(live, owned):
    """B can neither read, click, undo, redo nor finish A's session, answer A's question or post into A's
    byproducts session; A's session is untouched by B's tries; A and a reviewer pass the owner check."""
    methods = {m.full_name: m for m in METHODS}
    for name, build in OWNER_DRIVERS.items():
        field = {"Dialog": "question_id", "Segmentation": "session_id", "Byproducts": "events[0].session_id"}[
            name.split(".")[2]]
        assert _rpc_call(live.channel, methods[name], build(owned), live.keys["b"]) == \
            (grpc.StatusCode.PERMISSION_DENIED, field), name
    seg = segmentation_pb2_grpc.SegmentationStub(live.channel)
    mine = seg.GetSession(segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=owned.session_id),
                          metadata=[("authorization", f"Bearer {live.keys['a']}")], timeout=10).session
    assert mine.state == segmentation_pb2.SEGMENTATION_SESSION_STATE_ACTIVE and not mine.clicks
    for who in ("a", "reviewer"):
        for name, build in OWNER_DRIVERS.items():
            code, _ = _rpc_call(live.channel, methods[name], build(owned), live.keys[who])
            assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (who, name, code)


def test_a_byproducts_session_belongs_to_the_annotator_who_started_it(live):
    from services.byproducts.synthetic import session_events  # noqa: PLC0415

    sid = f"bp-{uuid.uuid4().hex}"
    events = session_events(sid, "p1", 6, annotator_id="")
    stub = byproducts_pb2_grpc.ByproductsStub(live.channel)
    auth = {who: [("authorization", f"Bearer {live.keys[who]}")] for who in live.keys}
    stub.RecordBatch(byproducts_pb2.EventBatch(project_id="p1", events=events[:2]), metadata=auth["a"], timeout=10)
    with pytest.raises(grpc.RpcError) as refused:  # B's start of A's session id is a takeover: refused
        stub.RecordBatch(byproducts_pb2.EventBatch(project_id="p1", events=events[:1]), metadata=auth["b"], timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # an admin may record for an annotator explicitly (an import): the session is then that annotator's
    other = f"bp-{uuid.uuid4().hex}"
    imported = session_events(other, "p1", 4, annotator_id=live.ids["b"])
    stub.RecordBatch(byproducts_pb2.EventBatch(project_id="p1", events=imported[:2]), metadata=auth["admin"], timeout=10)
    stub.RecordBatch(byproducts_pb2.EventBatch(project_id="p1", events=imported[2:]), metadata=auth["b"], timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Record(iter([_event(Owned("", other, "", itertools.count(10)))]), metadata=auth["a"], timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# REST routes reaching one annotator's thing: (method, path) -> (url, JSON body) of a call on a's.
REST_OWNER_ROUTES = {
    ("GET", f"{P}/tasks/{{task_id}}"): lambda t: (f"/v1/projects/p1/tasks/{t['task_id']}", None),
    ("POST", f"{P}/sessions"): lambda t: ("/v1/projects/p1/sessions", {"task_id": t["task_id"]}),
    ("GET", f"{P}/sessions/{{session_id}}"): lambda t: (f"/v1/projects/p1/sessions/{t['session_id']}", None),
    ("POST", f"{P}/sessions/{{session_id}}/clicks"): lambda t: (
        f"/v1/projects/p1/sessions/{t['session_id']}/clicks", {"x": 2, "y": 2}),
    ("POST", f"{P}/sessions/{{session_id}}/box"): lambda t: (
        f"/v1/projects/p1/sessions/{t['session_id']}/box", {"x": 1, "y": 1, "width": 4, "height": 4}),
    ("POST", f"{P}/sessions/{{session_id}}/undo"): lambda t: (f"/v1/projects/p1/sessions/{t['session_id']}/undo", None),
    ("POST", f"{P}/sessions/{{session_id}}/redo"): lambda t: (f"/v1/projects/p1/sessions/{t['session_id']}/redo", None),
    ("POST", f"{P}/sessions/{{session_id}}/finish"): lambda t: (
        f"/v1/projects/p1/sessions/{t['session_id']}/finish", {"outcome": "abandoned"}),
    # the session is checked before the video (unknown here: a's call then ends in 404, finishing nothing)
    ("POST", f"{P}/videos/{{video_id}}/sessions/{{session_id}}/finish"): lambda t: (
        f"/v1/projects/p1/videos/vid_0000000000000000/sessions/{t['session_id']}/finish", {"outcome": "abandoned"}),
    ("POST", f"{P}/tasks/{{task_id}}/answer"): lambda t: (
        f"/v1/projects/p1/tasks/{t['task_id']}/answer", {"skip": {}, "seconds": 1.0}),
    ("POST", "/v1/byproducts/events"): lambda t: ("/v1/byproducts/events", {"project_id": "p1", "events": [
        MessageToDict(t["event"]())]}),
}


def test_rest_an_annotator_reaches_only_their_own_tasks_and_sessions(live):
    client, keys = live.client, live.keys
    headers = {who: bearer(token) for who, token in keys.items()}
    assert client.post("/v1/projects", json={"project_id": "p1", "labels": ["cup", "cat"]},
                       headers=headers["admin"]).status_code in (201, 409)
    client.post("/v1/projects/p1/images", files=[("files", ("a.png", _png(), "image/png"))], headers=headers["admin"])
    task = client.post("/v1/projects/p1/questions/next", headers=headers["a"]).json()["task"]
    assert task["assignee"] == live.ids["a"]
    started = client.post("/v1/projects/p1/sessions", json={"task_id": task["task_id"]}, headers=headers["a"])
    assert started.status_code == 201, started.text
    session_id = started.json()["session_id"]
    owned = Owned("", session_id, "", itertools.count(2))
    start = MessageToDict(session_events_start(session_id))
    assert client.post("/v1/byproducts/events", json={"project_id": "p1", "events": [start]},
                       headers=headers["a"]).status_code == 200
    thing = {"task_id": task["task_id"], "session_id": session_id, "event": lambda: _event(owned)}
    for route, build in REST_OWNER_ROUTES.items():
        url, body = build(thing)
        reply = client.request(route[0], url, json=body, headers=headers["b"])
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "PERMISSION_DENIED", (route, reply.text)
    mine = client.get(f"/v1/projects/p1/sessions/{session_id}", headers=headers["a"]).json()
    assert mine["state"] == "active" and not mine["clicks"]
    for who in ("a", "reviewer"):
        for route, build in REST_OWNER_ROUTES.items():
            if route == ("POST", f"{P}/sessions"):
                continue  # the task already has its session: 422, which says nothing about ownership
            url, body = build(thing)
            reply = client.request(route[0], url, json=body, headers=headers[who])
            assert reply.status_code not in (401, 403, 500), (who, route, reply.text)


def session_events_start(session_id: str) -> byproducts_pb2.Event:
    from services.byproducts.synthetic import session_events  # noqa: PLC0415

    return session_events(session_id, "p1", 3, annotator_id="")[0]

"""Who may call each REST route of the gateway: one explicit rule per route, in one table.

The routes enforce their rules with the dependencies of ``auth.py`` (``require``, ``Annotator`` /
``Reviewer`` / ``Admin`` for routes under ``/v1/projects/{project_id}``) or, for the byproducts
routes, by forwarding the caller's key to the byproducts service, whose gRPC interceptor applies the
role that the RPC declares in its proto (``required_role``). This table states the rule of every
route; ``tests/hardening/test_auth_rules.py`` enumerates the app's routes, fails for a route missing
here, and drives every route with no key, a key of too low a role and a key of another project.

gRPC methods carry their rule in the proto (``option (annotation.v1.required_role)``), enforced by
``services/common/interceptors.py``; the same test enumerates them from the descriptors.

Within a project, annotators are separated: a rule with ``owner`` says the route reaches one annotator's
own thing (a task, a segmentation session, a byproducts session), which another annotator's key is
refused (403) and reviewers and admins reach. The audit fails for an annotator route naming a task or
session without that mark, and drives every marked route with two annotators' keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI

from services.common.keys import Role

# Where the project a request touches is named, and so where the key's project scope is checked:
#   none  - no project (public pages, key management, whoami);
#   path  - /v1/projects/{project_id}/...;
#   body  - the JSON body's project_id;
#   query - the ?project_id= query parameter (empty: only an unrestricted key, the service decides);
#   key   - the answer is filtered to the key's projects (GET /v1/projects).
Scope = Literal["none", "path", "body", "query", "key"]


@dataclass(frozen=True)
class Rule:
    role: Role | None  # None: public, no key needed
    scope: Scope = "none"
    rpc: str = ""  # routes checked by a service: the RPC whose proto role applies ("Service/Method")
    # Annotators reach only their own (task, session, events); reviewers and admins all in the project.
    # Checked by the gateway (tasks) or the service the route calls (sessions, byproducts events).
    owner: bool = False

    @property
    def public(self) -> bool:
        return self.role is None


PUBLIC = Rule(None)
A, R, D = Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN
P = "/v1/projects/{project_id}"
B = "/v1/byproducts"
BYPRODUCTS = "annotation.v1.Byproducts/"

RULES: dict[tuple[str, str], Rule] = {
    # public: the web pages, their static files, the API description, health and client config
    ("GET", "/"): PUBLIC,
    ("GET", "/review"): PUBLIC,
    ("GET", "/video"): PUBLIC,
    ("GET", "/project"): PUBLIC,
    ("*", "/static"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("*", "/docs/assets"): PUBLIC,  # Swagger UI's files, from the swagger-ui-bundle wheel
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/v1/config"): PUBLIC,
    # web sessions: login takes the key in its body (verified there); logout ends the cookie's session, if any
    ("POST", "/v1/login"): PUBLIC,
    ("POST", "/v1/logout"): PUBLIC,
    # keys
    ("GET", "/v1/whoami"): Rule(A),
    ("GET", "/v1/keys"): Rule(D),
    ("POST", "/v1/keys"): Rule(D),
    ("DELETE", "/v1/keys/{key_id}"): Rule(D),
    # projects, images, tasks
    ("POST", "/v1/projects"): Rule(D, "body"),
    ("GET", "/v1/projects"): Rule(A, "key"),
    ("GET", P): Rule(A, "path"),
    ("DELETE", P): Rule(D, "path"),
    ("POST", f"{P}/images"): Rule(D, "path"),
    ("GET", f"{P}/images"): Rule(A, "path"),
    ("GET", f"{P}/images/{{image_id}}"): Rule(A, "path"),
    ("GET", f"{P}/images/{{image_id}}/content"): Rule(A, "path"),
    ("GET", f"{P}/tasks"): Rule(A, "path"),
    ("GET", f"{P}/tasks/{{task_id}}"): Rule(A, "path", owner=True),
    # videos: uploads as image uploads (admin), reading and propagation as annotation, export as review
    ("POST", f"{P}/videos"): Rule(D, "path"),
    ("GET", f"{P}/videos"): Rule(A, "path"),
    ("GET", f"{P}/videos/{{video_id}}"): Rule(A, "path"),
    ("DELETE", f"{P}/videos/{{video_id}}"): Rule(D, "path"),
    ("GET", f"{P}/videos/{{video_id}}/frames/{{index}}"): Rule(A, "path"),
    ("PUT", f"{P}/videos/{{video_id}}/masks/{{index}}"): Rule(A, "path"),
    ("POST", f"{P}/videos/{{video_id}}/propagation"): Rule(A, "path"),
    ("GET", f"{P}/videos/{{video_id}}/propagation/{{operation_id}}"): Rule(A, "path"),
    ("GET", f"{P}/videos/{{video_id}}/propagation/{{operation_id}}/masks"): Rule(A, "path"),
    ("GET", f"{P}/videos/{{video_id}}/masks"): Rule(A, "path"),
    # selection's pick among a video's frames: asked of selection with the caller's key, so selection's own rule
    # for SelectBatch (admin, in the proto) applies as well: an annotator's or reviewer's call is refused there (403)
    ("GET", f"{P}/videos/{{video_id}}/selection"): Rule(A, "path"),
    # a click session on a frame: started by any annotator of the project; finished by its own annotator only
    ("POST", f"{P}/videos/{{video_id}}/frames/{{index}}/sessions"): Rule(A, "path"),
    ("POST", f"{P}/videos/{{video_id}}/sessions/{{session_id}}/finish"): Rule(A, "path", owner=True),
    ("GET", f"{P}/videos/{{video_id}}/exports/coco"): Rule(R, "path"),
    # the annotation loop
    ("POST", f"{P}/questions/next"): Rule(A, "path"),
    ("POST", f"{P}/sessions"): Rule(A, "path", owner=True),  # on a task: the task's assignee only
    ("GET", f"{P}/sessions/{{session_id}}"): Rule(A, "path", owner=True),
    ("POST", f"{P}/sessions/{{session_id}}/clicks"): Rule(A, "path", owner=True),
    ("POST", f"{P}/sessions/{{session_id}}/box"): Rule(A, "path", owner=True),  # as a click
    ("POST", f"{P}/sessions/{{session_id}}/undo"): Rule(A, "path", owner=True),
    ("POST", f"{P}/sessions/{{session_id}}/redo"): Rule(A, "path", owner=True),
    ("POST", f"{P}/sessions/{{session_id}}/finish"): Rule(A, "path", owner=True),
    ("POST", f"{P}/tasks/{{task_id}}/answer"): Rule(A, "path", owner=True),  # verify, labels, skip: the assignee
    ("GET", f"{P}/progress"): Rule(A, "path"),
    # review and exports
    ("GET", f"{P}/review"): Rule(R, "path"),
    ("POST", f"{P}/review/{{session_id}}"): Rule(R, "path"),
    ("GET", f"{P}/annotations/{{session_id}}"): Rule(R, "path"),
    ("GET", f"{P}/exports/coco"): Rule(R, "path"),
    ("GET", f"{P}/exports/masks.zip"): Rule(R, "path"),
    ("POST", f"{P}/imports/coco"): Rule(D, "path"),  # as image uploads
    # the loop's learning half: a training job costs minutes of CPU or GPU
    ("POST", f"{P}/training"): Rule(D, "path"),
    ("GET", f"{P}/training/versions"): Rule(D, "path"),
    ("POST", f"{P}/training/snapshots"): Rule(D, "path"),  # freezing a snapshot: what a job starts from
    # byproducts: a key is required here; role and project are checked by the service
    ("POST", f"{B}/events"): Rule(A, "body", BYPRODUCTS + "RecordBatch", owner=True),
    ("GET", f"{B}/sessions"): Rule(R, "query", BYPRODUCTS + "ListSessions"),
    ("GET", f"{B}/sessions/{{session_id}}"): Rule(R, "query", BYPRODUCTS + "GetSession"),
    ("GET", f"{B}/sessions/{{session_id}}/events"): Rule(R, "query", BYPRODUCTS + "ListEvents"),
    ("GET", f"{B}/sessions/{{session_id}}/signals"): Rule(R, "query", BYPRODUCTS + "GetSignals"),
    ("GET", f"{B}/signals"): Rule(R, "query", BYPRODUCTS + "ListSignals"),
    ("GET", f"{B}/export.jsonl"): Rule(R, "query", BYPRODUCTS + "ExportJsonl"),
    ("GET", f"{B}/luab.jsonl"): Rule(R, "query", BYPRODUCTS + "ExportLuab"),
}


def rest_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, included routers flattened; a mount is ("*", path).
    HEAD, which Starlette adds beside GET, is left out."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)  # FastAPI's included routers
        for item in (contexts() if contexts is not None else (route,)):
            methods = getattr(item, "methods", None) or {"*"}
            for method in sorted(methods - {"HEAD"} if methods != {"HEAD"} else methods):
                yield method, item.path

"""Authentication, role checks and per-key rate limits as FastAPI dependencies.

Two ways in: ``Authorization: Bearer <API key>`` (API clients, unchanged), or the web session cookie a
browser got from ``POST /v1/login`` (web_sessions.py). A request authenticated by the cookie that changes
state (any method but GET/HEAD/OPTIONS) must also carry the session's CSRF token in ``X-CSRF-Token``, and
its ``Origin`` (when the browser sends one) must be this gateway: a page of another site can make the
browser send the cookie (SameSite=Strict already stops most of that), but it can neither read the token
nor set the header without a CORS preflight, which this gateway never answers.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.keys import KeyStore, Principal, Role
from services.gateway.web_sessions import COOKIE, CSRF_HEADER, OpenSession


def keystore(request: Request) -> KeyStore:
    return request.app.state.keys


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(request: Request) -> bool:
    """Whether the browser's Origin (when it sends one) and Sec-Fetch-Site say this gateway's own page."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    # behind a proxy that rewrites Host, the public host is in X-Forwarded-Host (a browser cannot set it)
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "").split(",")[0].strip()}
    return urlsplit(origin).netloc.lower() in {host.lower() for host in hosts if host}


def check_csrf(request: Request, session: OpenSession) -> None:
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise PermissionDenied("cross-origin request refused for a session cookie", field="Origin")
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header (the token from POST /v1/login or "
                               "GET /v1/whoami) on a request authenticated by the session cookie", field=CSRF_HEADER)


def web_session(request: Request) -> OpenSession | None:
    """The web session that authenticated this request (None: a Bearer key did, or none yet)."""
    return getattr(request.state, "web_session", None)


def _token(request: Request) -> str:
    cached = getattr(request.state, "api_key", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <API key>'")
        token = token.strip()
    elif request.cookies.get(COOKIE):
        session = request.app.state.web_sessions.resolve(request.cookies[COOKIE])
        check_csrf(request, session)
        request.state.web_session = session
        token = session.key
    else:
        raise Unauthenticated("missing Authorization header ('Bearer <API key>') or session cookie (POST /v1/login)")
    request.state.api_key = token
    return token


def authenticated(request: Request, keys: Annotated[KeyStore, Depends(keystore)]) -> Principal:
    principal = keys.verify(_token(request))
    if principal.role == Role.SERVICE:  # a service's own key calls its granted RPCs only, never the front door
        raise PermissionDenied(f"a service key (of {principal.service!r}) may not use the gateway")
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        limiter.take(principal.key_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]


@dataclass(frozen=True)
class Caller:
    """The verified principal and its key, which the gateway forwards to the services."""

    principal: Principal
    key: str

    @property
    def annotator_id(self) -> str:
        return self.principal.key_id


def caller(request: Request, principal: CurrentPrincipal) -> Caller:
    return Caller(principal, _token(request))


CurrentCaller = Annotated[Caller, Depends(caller)]


def require(role: Role):
    """Dependency factory: the caller's key must hold ``role`` or higher."""

    def check(principal: CurrentPrincipal) -> Principal:
        principal.authorize(role)
        return principal

    return Depends(check)


def project_caller(role: Role):
    """Dependency factory for routes under /v1/projects/{project_id}: role on that project."""

    def check(project_id: str, who: CurrentCaller) -> Caller:
        who.principal.authorize(role, project_id)
        return who

    return Depends(check)


Annotator = Annotated[Caller, project_caller(Role.ANNOTATOR)]
Reviewer = Annotated[Caller, project_caller(Role.REVIEWER)]
Admin = Annotated[Caller, project_caller(Role.ADMIN)]

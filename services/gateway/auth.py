"""Authentication, role checks and per-key rate limits as FastAPI dependencies
(``Authorization: Bearer <API key>``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import Unauthenticated
from services.common.keys import KeyStore, Principal, Role


def keystore(request: Request) -> KeyStore:
    return request.app.state.keys


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("missing Authorization header ('Bearer <API key>')")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <API key>'")
    return token.strip()


def authenticated(request: Request, keys: Annotated[KeyStore, Depends(keystore)]) -> Principal:
    principal = keys.verify(_token(request))
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

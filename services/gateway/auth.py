"""Authentication and role checks as FastAPI dependencies (``Authorization: Bearer <API key>``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import Unauthenticated
from services.common.keys import KeyStore, Principal, Role


def keystore(request: Request) -> KeyStore:
    return request.app.state.keys


def authenticated(request: Request, keys: Annotated[KeyStore, Depends(keystore)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("missing Authorization header ('Bearer <API key>')")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <API key>'")
    return keys.verify(token.strip())


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]


def require(role: Role):
    """Dependency factory: the caller's key must hold ``role`` or higher."""

    def check(principal: CurrentPrincipal) -> Principal:
        principal.authorize(role)
        return principal

    return Depends(check)

"""FastAPI application of the gateway: health, auth, API-key management; later issues add routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.errors import DomainError
from services.common.keys import KeyStore, Principal, Role
from services.common.probes import platform_health
from services.common.settings import Settings, get_settings
from services.common.storage import make_engine, make_session_factory
from services.gateway.auth import CurrentPrincipal, require

READY_PARTS = ("redis", "selection", "segmentation", "byproducts", "quality", "dialog")


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["annotator", "reviewer", "admin"]
    projects: list[str] = Field(min_length=1, description="Project ids, or ['*'] for every project.")


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    projects: list[str]


def _key_out(principal: Principal) -> KeyOut:
    return KeyOut(id=principal.key_id, name=principal.name, role=principal.role.name.lower(),
                  projects=sorted(principal.projects))


def _error(status: int, code: str, message: str, field: str = "") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "field": field, "message": message}})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="Annotation platform gateway", version="0.1.0")
    app.state.settings = settings
    app.state.keys = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)),
                              settings.auth_cache_ttl_s)

    @app.exception_handler(DomainError)
    def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part != "body")
        return _error(422, "INVALID_ARGUMENT", first["msg"], field)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Each service's gRPC health and Redis/Triton reachability; 503 unless the core is up."""
        parts = platform_health(settings)
        ready = all(parts[name] == "SERVING" for name in READY_PARTS)
        return JSONResponse(status_code=200 if ready else 503,
                            content={"status": "ok" if ready else "degraded", "parts": parts})

    @app.get("/v1/whoami", tags=["auth"])
    def whoami(principal: CurrentPrincipal) -> KeyOut:
        return _key_out(principal)

    @app.get("/v1/keys", tags=["auth"], dependencies=[require(Role.ADMIN)])
    def list_keys(request: Request) -> list[KeyOut]:
        keys: KeyStore = request.app.state.keys
        return [_key_out(p) for p, _created, revoked in keys.list() if revoked is None]

    @app.post("/v1/keys", tags=["auth"], status_code=201, dependencies=[require(Role.ADMIN)])
    def create_key(request: Request, body: Annotated[KeyIn, Body()]) -> dict:
        """Returns the plaintext key once; only its hash is stored."""
        principal, token = request.app.state.keys.create(body.name, Role.parse(body.role), body.projects)
        return {**_key_out(principal).model_dump(), "key": token}

    @app.delete("/v1/keys/{key_id}", tags=["auth"], status_code=204, dependencies=[require(Role.ADMIN)])
    def revoke_key(request: Request, key_id: str) -> None:
        request.app.state.keys.revoke(key_id)

    return app

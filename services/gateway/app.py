"""FastAPI application of the gateway: health, auth, API-key management, the REST API of the loop
(projects, images, tasks, questions, sessions, review, exports) and the web annotator (static/)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import swagger_ui_bundle
from fastapi import Body, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common import service_identity
from services.common.errors import DomainError, PermissionDenied
from services.common.keys import KeyStore, Principal, Role
from services.common.metrics import HttpMetrics
from services.common.probes import platform_health
from services.common.settings import Settings, get_settings
from services.common.storage import make_engine, make_session_factory
from services.gateway import (
    byproducts_routes,
    routes_answers,
    routes_projects,
    routes_review,
    routes_sessions,
    routes_training,
    routes_videos,
)
from services.gateway.auth import CurrentPrincipal, check_csrf, require, same_origin, web_session
from services.gateway.catalog import Catalog
from services.gateway.config import GatewaySettings
from services.gateway.limits import (
    BodySizeLimit,
    NoNulCharacters,
    RateLimited,
    RateLimiter,
)
from services.gateway.security_headers import SecurityHeaders
from services.gateway.text import DisplayName
from services.gateway.upstream import Upstream
from services.gateway.videos import VideoStore
from services.gateway.web_sessions import COOKIE, OpenSession, WebSessionStore
from services.gateway.work import WorkStore

STATIC = Path(__file__).resolve().parent / "static"

READY_PARTS = ("redis", "selection", "segmentation", "byproducts", "quality", "dialog", "video")


class KeyIn(BaseModel):
    name: DisplayName = Field(min_length=1)
    role: Literal["annotator", "reviewer", "admin"]
    projects: list[str] = Field(min_length=1, description="Project ids, or ['*'] for every project.")


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    projects: list[str]


class LoginIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="The API key (ak_<id>.<secret>).")


class WebSessionOut(BaseModel):
    csrf_token: str = Field(description="Send back as X-CSRF-Token on every request that changes state.")
    expires_at: str


class WhoAmIOut(KeyOut):
    session: WebSessionOut | None = Field(None, description="The web session, when the cookie authenticated.")


def _session_out(session: OpenSession) -> WebSessionOut:
    return WebSessionOut(csrf_token=session.csrf_token, expires_at=session.expires_at.isoformat())


def _key_out(principal: Principal) -> KeyOut:
    return KeyOut(id=principal.key_id, name=principal.name, role=principal.role.name.lower(),
                  projects=sorted(principal.projects))


def _byproducts_ingest_path(app: FastAPI) -> str | None:
    """The POST route of the byproducts REST ingest (byproducts_routes.py), if the app has one."""
    for path, operations in app.openapi().get("paths", {}).items():
        if "post" in operations and path.startswith("/v1/byproducts") and path.rstrip("/").endswith("/events"):
            return path
    return None


# What every error answer looks like; documented in the OpenAPI in place of FastAPI's own 422 body
# ({"detail": [...]}), which this gateway never sends.
ERROR_SCHEMA = {
    "title": "Error", "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "field", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "field": {"type": "string", "description": "The offending field, dotted ('events[3].click.x')."},
                       "details": {"type": "array", "items": {"type": "object"}}}}},
}


def _document_error_envelope(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = ERROR_SCHEMA
        return app.openapi_schema

    app.openapi = openapi


def _error(status: int, code: str, message: str, field: str = "", details: list[dict] | None = None) -> JSONResponse:
    error = {"code": code, "field": field, "message": message}
    if details is not None:  # relayed from a service: its ErrorDetails, e.g. one per invalid event of a batch
        error["details"] = details
    return JSONResponse(status_code=status, content={"error": error})


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.upstream.close()


def create_app(settings: Settings | None = None, gateway: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    gateway = gateway or GatewaySettings()
    # /docs is served below from the pinned Swagger UI wheel (no CDN: it works offline, under the CSP);
    # ReDoc has no such package, so no /redoc.
    app = FastAPI(title="Annotation platform gateway", version="0.1.0", lifespan=_lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.gateway = gateway
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    app.state.keys = KeyStore(sessions, settings.auth_cache_ttl_s)
    # the gateway's own key, for the calls it makes for callers whose role the service would refuse
    app.state.service_key = service_identity.provision(app.state.keys, settings, "gateway")
    app.state.web_sessions = WebSessionStore(sessions, gateway.web_session_ttl_s)
    app.state.limiter = RateLimiter(gateway.rate_per_s, gateway.rate_burst)
    app.state.catalog = Catalog(sessions, settings.var_dir / "images", gateway.max_upload_bytes,
                                gateway.max_image_pixels)
    app.state.videos = VideoStore(settings.var_dir, gateway.max_video_upload_bytes, gateway.max_upload_bytes,
                                  gateway.max_image_pixels, gateway.max_video_frames)
    app.state.work = WorkStore(sessions)
    app.state.upstream = Upstream(settings, gateway.grpc_timeout_s)
    app.add_middleware(NoNulCharacters)  # inside the size limit: it buffers JSON bodies
    app.add_middleware(BodySizeLimit, max_bytes=gateway.max_request_bytes,
                       upload_limits={"/images": gateway.max_upload_bytes, "/videos": gateway.max_video_upload_bytes})
    app.add_middleware(HttpMetrics)  # outside the limits, so it also counts the size limit's 413s
    app.add_middleware(SecurityHeaders)  # outermost: every response, the 413s and 422s of the limits too
    app.include_router(routes_projects.router)
    app.include_router(routes_sessions.router)
    app.include_router(routes_review.router)
    app.include_router(routes_videos.router)
    app.include_router(byproducts_routes.router)
    app.include_router(routes_answers.router)
    app.include_router(routes_training.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.exception_handler(DomainError)
    def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        response = _error(exc.http_status, exc.code, exc.message, exc.field, exc.details)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.get("/", include_in_schema=False)
    def annotator_page() -> FileResponse:
        """The web annotator (the key is exchanged once for an HttpOnly session cookie: POST /v1/login)."""
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/review", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(STATIC / "review.html", headers={"Cache-Control": "no-cache"})

    @app.get("/video", include_in_schema=False)
    def video_page() -> FileResponse:
        """The video annotator: click sessions on frames, propagation, the frame slider (static/video.js)."""
        return FileResponse(STATIC / "video.html", headers={"Cache-Control": "no-cache"})

    @app.get("/project", include_in_schema=False)
    def project_page() -> FileResponse:
        """A project's data: images and labels, COCO JSON import, COCO and PNG-mask exports (static/project.js)."""
        return FileResponse(STATIC / "project.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> FileResponse:
        """Swagger UI from the swagger-ui-bundle wheel (/docs/assets) and static/docs.js: offline, no inline script."""
        return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-cache"})

    @app.exception_handler(RequestValidationError)
    def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        if first.get("type") == "json_invalid" or not field:  # the body as a whole: not JSON, not an object
            field = "body"
        return _error(422, "INVALID_ARGUMENT", first["msg"], field)

    @app.exception_handler(StarletteHTTPException)
    def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's and FastAPI's own errors (unknown route, a body that cannot be parsed, such as
        JSON nested past the parser's depth) in the same envelope as every other error."""
        code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(exc.status_code, "UNKNOWN")
        field = "body" if exc.status_code == 400 else "path" if exc.status_code in (404, 405) else ""
        response = _error(exc.status_code, code, str(exc.detail), field)
        response.headers.update(exc.headers or {})
        return response

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Each service's gRPC health and Redis/Triton reachability; 503 unless the core is up."""
        parts = platform_health(settings)
        ready = all(parts[name] == "SERVING" for name in READY_PARTS)
        return JSONResponse(status_code=200 if ready else 503,
                            content={"status": "ok" if ready else "degraded", "parts": parts})

    @app.get("/v1/config", tags=["health"])
    def client_config() -> dict:
        """What the web annotator needs to know about this gateway: where byproducts go (the
        byproducts ingest route, when the gateway has one; null otherwise) and the upload limits."""
        return {"byproducts_ingest": _byproducts_ingest_path(app), "max_upload_bytes": gateway.max_upload_bytes,
                "max_image_pixels": gateway.max_image_pixels, "max_video_upload_bytes": gateway.max_video_upload_bytes,
                "max_video_frames": gateway.max_video_frames}

    @app.get("/v1/whoami", tags=["auth"])
    def whoami(request: Request, principal: CurrentPrincipal, response: Response) -> WhoAmIOut:
        """The caller's key; with the session cookie, also the session's CSRF token and expiry."""
        session = web_session(request)
        response.headers["Cache-Control"] = "no-store"
        return WhoAmIOut(**_key_out(principal).model_dump(), session=session and _session_out(session))

    @app.post("/v1/login", tags=["auth"])
    def login(request: Request, body: Annotated[LoginIn, Body()], response: Response) -> WhoAmIOut:
        """Exchange an API key for a web session: an HttpOnly, SameSite=Strict cookie (Secure over https)
        that the browser sends from then on, so the page never keeps the key. Answers the CSRF token that
        requests changing state must send as X-CSRF-Token. API clients keep using Bearer keys."""
        if not same_origin(request):
            raise PermissionDenied("log in from this gateway's own page", field="Origin")
        keys: KeyStore = request.app.state.keys
        principal = keys.verify(body.key)
        request.app.state.limiter.take(principal.key_id)
        cookie, session = request.app.state.web_sessions.open(body.key, principal.key_id)
        secure = gateway.cookie_secure if gateway.cookie_secure is not None else request.url.scheme == "https"
        response.set_cookie(COOKIE, cookie, max_age=int(gateway.web_session_ttl_s), path="/", secure=secure,
                            httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return WhoAmIOut(**_key_out(principal).model_dump(), session=_session_out(session))

    @app.post("/v1/logout", tags=["auth"], status_code=204)
    def logout(request: Request) -> Response:
        """End the web session the cookie names (with its CSRF token) and clear the cookie; no-op without one."""
        response = Response(status_code=204)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            store: WebSessionStore = request.app.state.web_sessions
            try:
                session = store.resolve(cookie)
            except DomainError:  # ended or expired already: only the cookie is left to clear
                session = None
            if session is not None:
                check_csrf(request, session)
                store.close(cookie)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # An admin scoped to some projects manages only keys within them (no global key from a project admin).
    @app.get("/v1/keys", tags=["auth"])
    def list_keys(request: Request, admin: Annotated[Principal, require(Role.ADMIN)]) -> list[KeyOut]:
        keys: KeyStore = request.app.state.keys
        return [_key_out(p) for p, _created, revoked in keys.list() if revoked is None and admin.covers(p.projects)]

    @app.post("/v1/keys", tags=["auth"], status_code=201)
    def create_key(request: Request, body: Annotated[KeyIn, Body()],
                   admin: Annotated[Principal, require(Role.ADMIN)]) -> dict:
        """Returns the plaintext key once; only its hash is stored."""
        if not admin.covers(body.projects):
            raise PermissionDenied("an admin key may only create keys within its own projects", field="projects")
        principal, token = request.app.state.keys.create(body.name, Role.parse(body.role), body.projects)
        return {**_key_out(principal).model_dump(), "key": token}

    @app.delete("/v1/keys/{key_id}", tags=["auth"], status_code=204)
    def revoke_key(request: Request, key_id: str, admin: Annotated[Principal, require(Role.ADMIN)]) -> None:
        keys: KeyStore = request.app.state.keys
        if not admin.covers(keys.get(key_id).projects):
            raise PermissionDenied("an admin key may only revoke keys within its own projects", field="key_id")
        keys.revoke(key_id)
        request.app.state.web_sessions.close_for_key(key_id)

    _document_error_envelope(app)
    return app

"""API keys: roles (annotator < reviewer < admin) scoped to projects, stored as SHA-256 hashes.

A key reads ``ak_<id>.<secret>``; the id finds the row, the secret is compared by hash in constant
time. Secrets are 256-bit random, so a plain SHA-256 is enough (no password stretching needed),
and the plaintext exists only in the create() return value.

A fourth role, ``service``, is no person's and stands outside that order: a service key (named
``service:<service>``, see ``service_identity.py``) may call exactly the RPCs ``SERVICE_GRANTS`` lists for
its service and nothing else, no REST route and no RPC of people. It cannot be minted through the API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from sqlalchemy import JSON, DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from services.common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.common.storage import Base

ALL_PROJECTS = "*"


class Role(IntEnum):
    """Same numbers as ``annotation.v1.Role``; a higher role may do what a lower one may.

    SERVICE is outside that order (never compared with the others): see ``Principal.authorize_call``."""

    ANNOTATOR = 1
    REVIEWER = 2
    ADMIN = 3
    SERVICE = 100

    @classmethod
    def parse(cls, name: str) -> "Role":
        """A person's role by name; ``service`` is refused (service keys come from ``service_identity``)."""
        role = cls.__members__.get(name.upper())
        if role is None or role == cls.SERVICE:
            raise InvalidArgument("role", f"unknown role {name!r}; one of annotator, reviewer, admin")
        return role


SERVICE_PREFIX = "service:"
# Least privilege between services: the RPCs each calling service's key may call, by full method name
# ("/package.Service/Method"). A service that calls no other service has no key. The user's project
# scope was checked against the user's own key by the first service; the service key acts for any project.
SERVICE_GRANTS: dict[str, frozenset[str]] = {
    # NextQuestion over a pool: the dialog asks selection for the pool's next candidates, and segmentation
    # for live proposals from automatic clicks (stateless Predict only: no session, nothing stored).
    "dialog": frozenset({"/annotation.v1.Selection/SelectBatch", "/annotation.v1.Segmentation/Predict"}),
    # The video page marks selection's pick among a video's frames for any annotator of the project (the
    # gateway checked the caller's project first); selection's own rule for SelectBatch is admin.
    "gateway": frozenset({"/annotation.v1.Selection/SelectBatch"}),
}


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: Role
    projects: frozenset[str]

    def may_access(self, project_id: str) -> bool:
        return ALL_PROJECTS in self.projects or project_id in self.projects

    @property
    def service(self) -> str:
        """The service a service key belongs to; empty for a person's key."""
        return self.name.removeprefix(SERVICE_PREFIX) if self.role == Role.SERVICE else ""

    @property
    def owner_scope(self) -> str | None:
        """Whose sessions, questions and events this key may see and change: its own (an annotator:
        the key id, which is the annotator id everywhere), or None for all in its projects (reviewers,
        admins, and services acting for a user whose key the first service checked)."""
        return self.key_id if self.role == Role.ANNOTATOR else None

    def acting_as(self, annotator_id: str) -> str:
        """The annotator a request acts for: the key's own id when the request names none. Another id
        than the key's is refused for annotators (by the gRPC interceptor, for every field named
        ``annotator_id``); reviewers, admins and services may act for an annotator explicitly."""
        return annotator_id or self.key_id

    def authorize(self, required: Role, project_id: str = "") -> None:
        if self.role == Role.SERVICE:
            raise PermissionDenied(f"a service key (of {self.service!r}) may call only the RPCs granted to its "
                                   "service, never a route or RPC for people")
        if self.role < required:
            raise PermissionDenied(f"role {self.role.name.lower()} may not do this; needs {required.name.lower()}")
        if project_id and not self.may_access(project_id):
            raise PermissionDenied(f"key is not scoped to project {project_id!r}", field="project_id")

    def authorize_call(self, method: str, required: Role) -> None:
        """An RPC (``/package.Service/Method``): a service key by its service's grants, a person by role."""
        if self.role == Role.SERVICE:
            if method not in SERVICE_GRANTS.get(self.service, frozenset()):
                raise PermissionDenied(f"the service key of {self.service!r} is not granted {method}")
            return
        self.authorize(required)

    def authorize_project(self, project_id: str) -> None:
        if not self.may_access(project_id):
            raise PermissionDenied(f"key is not scoped to project {project_id!r}", field="project_id")

    def covers(self, projects) -> bool:
        """Whether a key scoped to ``projects`` stays within this key's projects (key management:
        an admin of some projects may not mint, see or revoke keys beyond them)."""
        return ALL_PROJECTS in self.projects or (ALL_PROJECTS not in projects and set(projects) <= self.projects)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[int] = mapped_column(Integer)
    projects: Mapped[list[str]] = mapped_column(JSON)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def principal(self) -> Principal:
        return Principal(self.id, self.name, Role(self.role), frozenset(self.projects))


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: sessionmaker, cache_ttl_s: float = 30.0) -> None:
        self._sessions = sessions
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: Role, projects: list[str]) -> tuple[Principal, str]:
        """Returns the principal and the plaintext key, which is shown once and never stored."""
        if not name.strip():
            raise InvalidArgument("name", "must not be empty")
        if not projects or any(not p.strip() for p in projects):
            raise InvalidArgument("projects", f"give one or more project ids, or {ALL_PROJECTS!r} for all")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = ApiKey(id=key_id, name=name, role=int(role), projects=sorted(set(projects)),
                     secret_sha256=_sha256(secret), created_at=datetime.now(UTC))
        with self._sessions.begin() as session:
            session.add(row)
        return row.principal(), f"ak_{key_id}.{secret}"

    def import_key(self, token: str, name: str, role: Role, projects: list[str]) -> Principal:
        """Store a key made elsewhere (a Kubernetes Secret seeding the first admin). Idempotent; a new
        secret for the same key id replaces the old one (rotation)."""
        key_id, _, secret = token.removeprefix("ak_").partition(".")
        if not token.startswith("ak_") or not key_id or len(secret) < 32 or not key_id.isalnum():
            raise InvalidArgument("token", "expected ak_<id>.<secret> with a secret of 32+ characters")
        if not projects or any(not p.strip() for p in projects):
            raise InvalidArgument("projects", f"give one or more project ids, or {ALL_PROJECTS!r} for all")
        with self._sessions.begin() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                row = ApiKey(id=key_id, created_at=datetime.now(UTC))
                session.add(row)
            row.name, row.role, row.projects = name, int(role), sorted(set(projects))
            row.secret_sha256, row.revoked_at = _sha256(secret), None
            principal = row.principal()
        with self._lock:
            self._cache.clear()
        return principal

    def verify(self, token: str) -> Principal:
        now = time.monotonic()
        digest = _sha256(token)
        with self._lock:
            cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        key_id, _, secret = token.removeprefix("ak_").partition(".")
        if not token.startswith("ak_") or not key_id or not secret:
            raise Unauthenticated("malformed API key")
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None or not hmac.compare_digest(
                row.secret_sha256, _sha256(secret)
            ):
                raise Unauthenticated("unknown or revoked API key")
            principal = row.principal()
        with self._lock:
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def get(self, key_id: str) -> Principal:
        with self._sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}", field="key_id")
            return row.principal()

    def revoke(self, key_id: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}", field="key_id")
            row.revoked_at = datetime.now(UTC)
        with self._lock:
            self._cache.clear()

    def list(self) -> list[tuple[Principal, datetime, datetime | None]]:
        with self._sessions() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            return [(r.principal(), r.created_at, r.revoked_at) for r in rows]

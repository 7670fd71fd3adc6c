"""Web sessions: a browser logs in once with its API key and from then on holds only an HttpOnly cookie.

The cookie reads ``<session_id>.<secret>``. The store keeps, per session, the SHA-256 of the secret, the
key's id, the API key sealed (Fernet: AES-128-CBC + HMAC-SHA256) with a key derived from the secret, the
CSRF token the page must send back on state-changing requests, and the expiry. So:

- a script injected into the page cannot read the key: it is not in the page, in localStorage or in any
  cookie a script can read, only sealed in the store;
- the store alone does not give the key (the secret is only in the browser); the cookie alone does not
  either (it must be presented to this gateway, which checks the expiry and the key again every time);
- logout, expiry and revoking the key end the session.

The gateway opens the sealed key per request to forward it to the services, exactly as a Bearer client's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete
from sqlalchemy.orm import sessionmaker

from services.common.errors import Unauthenticated
from services.gateway.tables import WebSession

COOKIE = "annot_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class OpenSession:
    session_id: str
    key: str  # the API key the session was opened with (never leaves the gateway)
    key_id: str
    csrf_token: str
    expires_at: datetime


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _fernet(secret: str) -> Fernet:
    derived = hashlib.sha256(b"annot web session key\x00" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _aware(value: datetime) -> datetime:  # SQLite hands back naive datetimes
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class WebSessionStore:
    def __init__(self, sessions: sessionmaker, ttl_s: float) -> None:
        self.sessions = sessions
        self.ttl = timedelta(seconds=ttl_s)

    def open(self, key: str, key_id: str) -> tuple[str, OpenSession]:
        """A new session for a verified key: (the cookie value, the session). Expired sessions are swept."""
        now = datetime.now(UTC)
        session_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
        row = WebSession(session_id=session_id, secret_sha256=_sha256(secret), key_id=key_id,
                         sealed_key=_fernet(secret).encrypt(key.encode()).decode(), csrf_token=secrets.token_urlsafe(32),
                         created_at=now, expires_at=now + self.ttl)
        with self.sessions.begin() as session:
            session.execute(delete(WebSession).where(WebSession.expires_at <= now))
            session.add(row)
        return f"{session_id}.{secret}", OpenSession(session_id, key, key_id, row.csrf_token, row.expires_at)

    def resolve(self, cookie: str) -> OpenSession:
        """The live session a cookie names, or Unauthenticated (unknown, ended, expired, tampered)."""
        session_id, _, secret = cookie.partition(".")
        if not session_id or not secret or len(cookie) > 200:
            raise Unauthenticated("malformed session cookie; log in again (POST /v1/login)")
        with self.sessions() as session:
            row = session.get(WebSession, session_id)
        if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
            raise Unauthenticated("unknown or ended session; log in again (POST /v1/login)")
        expires_at = _aware(row.expires_at)
        if expires_at <= datetime.now(UTC):
            self.close(cookie)
            raise Unauthenticated("session expired; log in again (POST /v1/login)")
        try:
            key = _fernet(secret).decrypt(row.sealed_key.encode()).decode()
        except InvalidToken:
            raise Unauthenticated("unknown or ended session; log in again (POST /v1/login)") from None
        return OpenSession(row.session_id, key, row.key_id, row.csrf_token, expires_at)

    def close(self, cookie: str) -> bool:
        """Ends the session a cookie names (logout); False when there was none."""
        session_id, _, secret = cookie.partition(".")
        with self.sessions.begin() as session:
            row = session.get(WebSession, session_id) if session_id else None
            if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
                return False
            session.delete(row)
        return True

    def close_for_key(self, key_id: str) -> int:
        """Ends every session opened with a key (the key was revoked)."""
        with self.sessions.begin() as session:
            return session.execute(delete(WebSession).where(WebSession.key_id == key_id)).rowcount

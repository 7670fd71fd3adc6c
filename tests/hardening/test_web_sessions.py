"""The browser's credentials and the page's defences (issue 19, item 1), in process against the real app.

A browser exchanges its API key once (``POST /v1/login``) for an HttpOnly, SameSite=Strict session cookie
(Secure over https); the key is stored nowhere a script can read, and sealed in the store. State-changing
requests authenticated by that cookie need the session's CSRF token and a same-origin Origin; Bearer
clients are unchanged. Every response carries a strict Content-Security-Policy and the usual headers, and
the pages have nothing inline that such a policy would have to allow.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.common.keys import Role
from services.common.storage import make_engine, make_session_factory
from services.gateway.access import RULES
from services.gateway.app import STATIC, create_app
from services.gateway.security_headers import CONTENT_SECURITY_POLICY
from services.gateway.tables import WebSession
from tests.hardening.conftest import bearer, gateway_settings
from tests.hardening.test_auth_rules import _body, _url

pytestmark = pytest.mark.integration

COOKIE = "annot_session"


@pytest.fixture
def web(platform, projects):
    """A fresh client (its own cookie jar) on the platform's store; projects p1 and p2 exist."""
    def make(base_url: str = "http://testserver", **overrides) -> TestClient:
        return TestClient(create_app(platform.settings, gateway_settings(**overrides)), base_url=base_url,
                          raise_server_exceptions=False)
    return make


def set_cookie(reply) -> str:
    (header,) = [v for k, v in reply.headers.multi_items() if k == "set-cookie"]
    return header


def login(client: TestClient, key: str) -> dict:
    reply = client.post("/v1/login", json={"key": key})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_login_sets_an_httponly_strict_cookie_that_holds_no_key(web, platform):
    key = platform.keys["admin_p1"]
    with web() as client:
        reply = client.post("/v1/login", json={"key": key})
        assert reply.status_code == 200, reply.text
        header = set_cookie(reply)
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
        assert {"httponly", "path", "max-age"} <= attributes and "samesite=strict" in header.lower()
        assert "secure" not in attributes  # plain http (loopback): a Secure cookie would never come back
        assert key not in header and key.split(".")[1] not in header
        body = reply.json()
        assert body["name"] == "admin_p1" and body["session"]["csrf_token"] and key not in reply.text
        assert reply.headers["cache-control"] == "no-store"
        # the cookie alone authenticates reads, and whoami hands the page its CSRF token again
        who = client.get("/v1/whoami")
        assert who.status_code == 200 and who.json()["session"] == body["session"]
        assert client.get("/v1/projects").json()[0]["project_id"] == "p1"


def test_the_store_keeps_the_key_sealed(web, platform):
    key = platform.keys["reviewer_p1"]
    with web() as client:
        cookie = login(client, key) and client.cookies[COOKIE]
    sessions = make_session_factory(make_engine(platform.settings.resolved_database_url))
    with sessions() as session:
        rows = session.scalars(select(WebSession)).all()
    assert rows
    for row in rows:
        stored = " ".join(str(getattr(row, column.key)) for column in WebSession.__table__.columns)
        assert key not in stored and key.split(".")[1] not in stored and cookie.split(".")[1] not in stored


def test_cookie_is_secure_over_https_or_when_configured(web, platform):
    with web(base_url="https://testserver") as client:
        assert "secure" in set_cookie(client.post("/v1/login", json={"key": platform.keys["annotator_p1"]})).lower()
    with web(cookie_secure=True) as client:
        assert "secure" in set_cookie(client.post("/v1/login", json={"key": platform.keys["annotator_p1"]})).lower()


def test_state_changing_requests_by_cookie_need_the_csrf_token_and_same_origin(web, platform):
    with web() as client:
        token = login(client, platform.keys["admin_p1"])["session"]["csrf_token"]
        body = {"project_id": "p1", "labels": ["cup"]}
        missing = client.post("/v1/keys", json={"name": "n", "role": "annotator", "projects": ["p1"]})
        assert missing.status_code == 403 and missing.json()["error"]["field"] == "X-CSRF-Token"
        wrong = client.post("/v1/keys", json={"name": "n", "role": "annotator", "projects": ["p1"]},
                            headers={"X-CSRF-Token": token[:-1] + "x"})
        assert wrong.status_code == 403 and wrong.json()["error"]["field"] == "X-CSRF-Token"
        for hostile in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}):
            reply = client.post("/v1/projects", json=body, headers={"X-CSRF-Token": token, **hostile})
            assert reply.status_code == 403 and reply.json()["error"]["field"] == "Origin", (hostile, reply.text)
        made = client.post("/v1/keys", json={"name": "by-cookie", "role": "annotator", "projects": ["p1"]},
                           headers={"X-CSRF-Token": token, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
        assert made.status_code == 201, made.text


def test_every_state_changing_route_refuses_a_cookie_without_the_csrf_token(web, platform):
    """The audit of item 1: enumerated from the rule table, so a new route is covered the day it lands."""
    unsafe = [(route, rule) for route, rule in sorted(RULES.items())
              if not rule.public and route[0] not in ("GET", "HEAD", "OPTIONS", "*")]
    assert len(unsafe) > 10
    with web() as client:
        login(client, platform.keys["admin"])
        for (method, path), rule in unsafe:
            reply = client.request(method, _url(path, rule), json=_body(method, path))
            assert reply.status_code == 403, (method, path, reply.status_code, reply.text)
            assert reply.json()["error"]["field"] == "X-CSRF-Token", (method, path, reply.text)


def test_bearer_clients_are_unchanged(web, platform):
    with web() as client:
        reply = client.post("/v1/keys", json={"name": "bearer", "role": "annotator", "projects": ["p1"]},
                            headers=bearer(platform.keys["admin_p1"]))
        assert reply.status_code == 201 and "set-cookie" not in reply.headers
        assert client.get("/v1/whoami", headers=bearer(platform.keys["admin_p1"])).json()["session"] is None
        assert client.get("/v1/whoami").status_code == 401


def test_login_refuses_wrong_keys_and_other_sites(web, platform):
    with web() as client:
        for key in ("", "ak_nope.nope", platform.keys["admin"] + "x"):
            reply = client.post("/v1/login", json={"key": key})
            assert reply.status_code in (401, 422) and "set-cookie" not in reply.headers, reply.text
        reply = client.post("/v1/login", json={"key": platform.keys["admin"]}, headers={"Origin": "https://evil.example"})
        assert reply.status_code == 403 and "set-cookie" not in reply.headers
        assert client.post("/v1/login", content=b"key=x", headers={"Content-Type": "text/plain"}).status_code == 422


def test_logout_ends_the_session(web, platform):
    with web() as client:
        token = login(client, platform.keys["annotator_p1"])["session"]["csrf_token"]
        cookie = client.cookies[COOKIE]
        assert client.post("/v1/logout").status_code == 403  # no token: a page elsewhere cannot log you out
        reply = client.post("/v1/logout", headers={"X-CSRF-Token": token})
        assert reply.status_code == 204 and f'{COOKIE}=""' in set_cookie(reply)
        assert client.get("/v1/whoami").status_code == 401
        client.cookies.set(COOKIE, cookie)  # the old cookie, replayed
        assert client.get("/v1/whoami").status_code == 401
        assert client.post("/v1/logout").status_code == 204  # nothing left to end: just clears the cookie


def test_sessions_expire_and_die_with_their_key(web, platform):
    with web(web_session_ttl_s=1) as client:
        login(client, platform.keys["annotator_p1"])
        assert client.get("/v1/whoami").status_code == 200
        cookie = client.cookies[COOKIE]
        time.sleep(1.2)
        client.cookies.set(COOKIE, cookie)  # the browser drops it at Max-Age; replayed, the server refuses it too
        expired = client.get("/v1/whoami")
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    _, token = platform.store.create("short-lived", Role.ANNOTATOR, ["p1"])
    with web() as client:
        who = login(client, token)
        admin = bearer(platform.keys["admin"])
        assert client.delete(f"/v1/keys/{who['id']}", headers=admin).status_code == 204
        assert client.get("/v1/whoami").status_code == 401


def test_a_tampered_cookie_is_refused(web, platform):
    with web() as client:
        login(client, platform.keys["annotator_p1"])
        session_id, secret = client.cookies[COOKIE].split(".", 1)
        for forged in (f"{session_id}.{secret[:-2]}AA", f"{session_id}.", "x" * 500, f"{'0' * 32}.{secret}"):
            client.cookies.set(COOKIE, forged)
            assert client.get("/v1/whoami").status_code == 401, forged


# --- headers and pages -------------------------------------------------------------------------------

REQUIRED_CSP = ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'")


def test_every_response_carries_the_security_headers(web, platform, client):
    oversize = b'{"a": "' + b"x" * (2 << 20) + b'"}'
    replies = [client.get("/"), client.get("/review"), client.get("/project"), client.get("/docs"),
               client.get("/static/api.js"),
               client.get("/docs/assets/swagger-ui-bundle.js"), client.get("/openapi.json"),
               client.get("/v1/config"), client.get("/v1/whoami"), client.get("/nope"),
               client.post("/v1/projects", content=oversize, headers={**bearer(platform.keys["admin"]),
                                                                       "Content-Type": "application/json"}),
               client.post("/v1/projects", json={"project_id": "a\x00"}, headers=bearer(platform.keys["admin"])),
               client.post("/v1/projects", json={"project_id": "bad id!"}, headers=bearer(platform.keys["admin"]))]
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 200, 200, 200, 200, 401, 404, 413, 422, 422]
    for reply in replies:
        csp = reply.headers["content-security-policy"]
        assert all(part in csp for part in REQUIRED_CSP), csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["x-frame-options"] == "DENY"
    assert replies[0].headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_pages_have_nothing_inline_and_build_no_html_from_strings():
    """What the CSP would have to allow ('unsafe-inline') is not there; and no script turns text into HTML."""
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page.name}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), f"{page.name}: inline event handler"
        assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE) and "<style" not in html, f"{page.name}: inline style"
        assert not re.search(r"(src|href)\s*=\s*\"(https?:)?//", html), f"{page.name}: a resource of another site"
    for script in STATIC.glob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "sessionStorage", "document.cookie", ".style."):
            assert sink not in source, f"{script.name} uses {sink}"
        assert re.findall(r"[a-zA-Z.]+\(\"annot\.key\"\)", source) in ([], ['localStorage.removeItem("annot.key")']), \
            f"{script.name} keeps the key"


def test_docs_are_served_from_the_pinned_wheel(client):
    """Swagger UI from swagger-ui-bundle (pinned in pyproject), not a CDN: /docs works offline."""
    page = client.get("/docs").text
    assert "cdn" not in page.lower() and "//" not in re.sub(r"<!doctype[^>]*>", "", page, flags=re.IGNORECASE)
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page):
        reply = client.get(asset)
        assert reply.status_code == 200 and len(reply.content) > 100, asset
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'"swagger-ui-bundle[-a-z0-9]*==[0-9.]+"', pyproject)
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN: not offered

"""Hostile requests to the real gateway app (in process, real key store, a real gRPC server behind):
oversize and deeply nested JSON, arbitrary JSON in every body, hostile query values, path traversal
in every path parameter and upload file name.

Invariant: never a 500; a 413 / 422 names the field in the error envelope
``{"error": {"code", "field", "message"}}``; nothing is written outside the image folder.
"""

from __future__ import annotations

import io
import json
import re

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.gateway.access import RULES
from tests.hardening.conftest import bearer

pytestmark = pytest.mark.integration

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON_ROUTES = ["/v1/projects", "/v1/keys", "/v1/projects/p1/sessions", "/v1/projects/p1/sessions/x/clicks",
               "/v1/projects/p1/sessions/x/finish", "/v1/byproducts/events"]
TRAVERSAL = ["..", "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
             "....//....//etc/passwd", "..\\..\\windows\\win.ini", "%00", "a%00.png", "/etc/passwd",
             "file:%2F%2F%2Fetc%2Fpasswd", "%C0%AE%C0%AE%2F", "x" * 5000, "%ff%fe", "~root", "$(id)", "*"]


def check(reply, *fields: str) -> None:
    """No 500; the error envelope on every error, naming the field on 413 and 422."""
    assert reply.status_code != 500 and reply.status_code < 600, (reply.status_code, reply.text[:300])
    if reply.status_code >= 400:
        error = reply.json()["error"]
        assert error["code"] and error["message"], reply.text
        if reply.status_code in (413, 422):
            assert error["field"], reply.text
            if fields:
                assert error["field"].split(".")[0].split("[")[0] in fields, (fields, reply.text)


@pytest.fixture(scope="module")
def admin(platform):
    return bearer(platform.keys["admin"])


def post_raw(client, path: str, body: bytes, headers: dict):
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_oversize_json_is_413_naming_the_body(client, projects, admin, path):
    check(post_raw(client, path, b'{"a": "' + b"x" * (2 << 20) + b'"}', admin), "body")

    def chunks():  # no Content-Length: counted while streaming
        yield b'{"a": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'
    reply = client.post(path, content=chunks(), headers={**admin, "Content-Type": "application/json"})
    assert reply.status_code == 413
    check(reply, "body")


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("depth", [64, 900, 5000, 200_000])
def test_deeply_nested_json_is_refused_naming_the_field(client, projects, admin, path, depth):
    arrays = b"[" * depth + b"]" * depth
    check(post_raw(client, path, arrays, admin))
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    reply = post_raw(client, path, objects, admin)
    check(reply)
    inside = b'{"project_id":"p1","events":[{"click":' + b'{"masks":' * depth + b"1" + b"}" * depth + b"}]}"
    check(post_raw(client, path, inside, admin))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
body_fields = st.sampled_from(["project_id", "name", "labels", "role", "projects", "task_id", "image_id", "label",
                               "x", "y", "positive", "t_ms", "outcome", "events"])


@SETTINGS
@given(path=st.sampled_from(JSON_ROUTES),
       body=json_values | st.dictionaries(body_fields, json_values, max_size=6))
@example(path="/v1/byproducts/events", body={"project_id": "p1", "events": [{"click": {"y": 10**400}}]})
def test_arbitrary_json_bodies_never_500(client, projects, admin, path, body):
    """Python's json.dumps writes NaN and Infinity, which Python's parser reads back: hostile too."""
    check(post_raw(client, path, json.dumps(body).encode(), admin))


@SETTINGS
@given(name=st.sampled_from(["offset", "limit", "page_size", "from_seq", "to_seq", "outcome", "kinds",
                             "heatmap_size", "heatmap_sigma", "mouse_weight", "start", "end", "state",
                             "page_token", "include_signals", "question_type"]),
       value=st.one_of(st.integers(-(2**80), 2**80).map(str), st.sampled_from(
           ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "1e400", "nan", "-0", "", "%00", "true"]),
           st.text(max_size=30)),
       path=st.sampled_from(["/v1/projects/p1/images", "/v1/projects/p1/tasks", "/v1/projects/p1/review",
                             "/v1/byproducts/sessions", "/v1/byproducts/sessions/s/events", "/v1/byproducts/signals",
                             "/v1/byproducts/export.jsonl", "/v1/byproducts/luab.jsonl"]))
@example(name="offset", value=str(2**64), path="/v1/projects/p1/images")
@example(name="offset", value=str(2**64), path="/v1/projects/p1/tasks")
@example(name="start", value="9999-12-31T23:59:59-05:00", path="/v1/byproducts/sessions")
@example(name="end", value="0001-01-01T00:00:00+05:00", path="/v1/byproducts/export.jsonl")
@example(name="from_seq", value=str(2**64), path="/v1/byproducts/sessions/s/events")
@example(name="kinds", value=str(2**40), path="/v1/byproducts/export.jsonl")
@example(name="page_size", value=str(2**40), path="/v1/projects/p1/review")
def test_hostile_query_values_never_500(client, projects, admin, name, value, path):
    check(client.get(path, params={name: value, "project_id": "p1"}, headers=admin), name)


def _paths_with_parameters():
    for (method, path), rule in sorted(RULES.items()):
        if "{" in path and not rule.public:
            yield method, path


@pytest.mark.parametrize(("method", "path"), list(_paths_with_parameters()))
def test_path_traversal_in_every_path_parameter(client, projects, admin, platform, method, path):
    for hostile in TRAVERSAL:
        for name in re.findall(r"\{([a-z_]+)\}", path):
            url = path.replace("{" + name + "}", hostile)
            url = re.sub(r"\{project_id\}", "p1", url)
            url = re.sub(r"\{[a-z_]+\}", "x", url)
            if method == "DELETE" and httpx.URL("http://x" + url).raw_path.decode().count("/") < url.count("/"):
                continue  # the client resolved ".." itself: ".../videos/.." is DELETE /v1/projects/p1, another route
            reply = client.request(method, url, headers=admin)
            check(reply)
            assert b"root:" not in reply.content  # /etc/passwd never served


def test_static_files_do_not_escape_their_folder(client):
    for hostile in TRAVERSAL + ["../app.py", "..%2Fapp.py", "%2e%2e/app.py"]:
        reply = client.get(f"/static/{hostile}")
        assert reply.status_code in (200, 400, 404, 405, 422) and b"create_app" not in reply.content
        assert b"root:" not in reply.content


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (4, 5, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


filenames = st.one_of(st.sampled_from([name.replace("%2F", "/") for name in TRAVERSAL] + [
    "", ".", "/", "\\", "a/b/c.png", "C:\\x.png", "x\x00.png", "\u202eevil.png", "con.png", "a" * 300 + ".png"]),
    st.text(max_size=300))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=filenames, seed=st.integers(0, 2**32 - 1))
def test_upload_file_names_never_touch_a_path(client, projects, admin, platform, name, seed):
    var_dir = platform.settings.var_dir
    before = {p for p in var_dir.rglob("*")}
    reply = client.post("/v1/projects/p1/images", files=[("files", (name, _png(seed), "image/png"))], headers=admin)
    check(reply)
    if reply.status_code == 201:
        stored = reply.json()["images"][0]
        assert "/" not in stored["filename"] and "\x00" not in stored["filename"] and len(stored["filename"]) <= 255
    new = {p for p in var_dir.rglob("*")} - before
    image_dir = (var_dir / "images").resolve()
    for path in new:
        if path.suffix in (".db", ".db-journal", ".db-wal", ".db-shm") or path == image_dir:
            continue
        assert path.resolve().parent == image_dir and re.fullmatch(r"[0-9a-f]{32}\.(png|jpg|webp|bmp|tif)", path.name), path


def test_hostile_image_uploads_name_the_file(client, projects, admin):
    """A bomb, a truncated image and garbage, uploaded beside a good one: refused naming files[i]."""
    from tests.hardening.test_hostile_images import png_bomb  # noqa: PLC0415

    for index, bad in ((1, png_bomb(30_000, 30_000)), (1, _png(1)[:30]), (1, b"\0" * 100)):
        files = [("files", ("good.png", _png(7), "image/png")), ("files", ("bad.png", bad, "image/png"))]
        reply = client.post("/v1/projects/p1/images", files=files, headers=admin)
        assert reply.status_code == 422
        check(reply)
        assert reply.json()["error"]["field"] == f"files[{index}]"

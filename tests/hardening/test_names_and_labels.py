"""Text people type and others see, and other hostile values of issue 19 (items 1 and 5), against the real
app in process: names and labels are bounded and free of control characters (422 naming the field); a
session's or finish's label must be one of the project's; coordinates are numbers, not booleans or
strings; an upload's display name is a base name whatever the separator; a non-image upload is refused
without a Python repr; a NaN in byproduct events is named where it is.
"""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from services.common.keys import Role
from tests.hardening.conftest import bearer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def admin(platform):
    return bearer(platform.keys["admin"])


def refused(reply, field: str) -> str:
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == field, reply.text
    return error["message"]


SEEDS = itertools.count()


def png() -> bytes:
    """Other bytes each call (the same bytes again would be a duplicate, which keeps its first name)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(next(SEEDS)).integers(0, 255, (30, 40, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("body", "field"), [
    ({"labels": ["x" * 100_000]}, "labels[0]"),
    ({"labels": ["cup", "x" * 101]}, "labels[1]"),
    ({"labels": ["cup", "pla\x07te"]}, "labels[1]"),
    ({"labels": ["cup", "a\u202eb"]}, "labels[1]"),
    ({"labels": ["cup", "line\u2028break"]}, "labels[1]"),
    ({"labels": ["cup", "\x85"]}, "labels[1]"),
    ({"labels": ["cup", "   "]}, "labels[1]"),
    ({"labels": ["", "cup"]}, "labels[0]"),
    ({"labels": []}, "labels"),
    ({"labels": ["cup", "cup"]}, "labels"),
    ({"labels": ["l"] * 1001}, "labels"),
    ({"labels": "cup"}, "labels"),
    ({"name": "x" * 201}, "name"),
    ({"name": "evil\x1b[31m"}, "name"),
    ({"name": "tab\tname"}, "name"),
    ({"name": "\ud800"}, "name"),
])
def test_project_names_and_labels_are_checked(client, projects, admin, body, field):
    raw = json.dumps({"project_id": "checked", **body}).encode()  # ASCII escapes: a lone surrogate travels too
    refused(client.post("/v1/projects", content=raw, headers={**admin, "Content-Type": "application/json"}), field)
    assert client.get("/v1/projects/checked", headers=admin).status_code == 404  # nothing half-made


def test_plain_unicode_names_and_labels_pass(client, projects, admin):
    reply = client.post("/v1/projects", json={"project_id": "unicode", "name": "Tasses — café 🍵 <b>",
                                              "labels": ["tasse à café", "猫", "x" * 100]}, headers=admin)
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == "Tasses — café 🍵 <b>"


def test_key_names_are_checked(client, projects, admin):
    for name, message in (("x" * 201, "name"), ("bad\x00", "name"), ("bad\nname", "name"), ("", "name")):
        reply = client.post("/v1/keys", json={"name": name, "role": "annotator", "projects": ["p1"]}, headers=admin)
        assert reply.status_code == 422 and reply.json()["error"]["field"] == message, reply.text


def test_a_label_outside_the_projects_labels_is_refused(client, projects, admin, platform):
    assert client.post("/v1/projects", json={"project_id": "labelled", "labels": ["cup", "plate"]},
                       headers=admin).status_code == 201
    annotator = bearer(platform.store.create("labeller", Role.ANNOTATOR, ["labelled"])[1])
    base = "/v1/projects/labelled/sessions"
    for label in ("dog", "x" * 100_000, "Cup"):
        reply = client.post(f"{base}/any/finish", json={"outcome": "submitted", "label": label}, headers=annotator)
        assert reply.status_code == 422 and reply.json()["error"]["field"] == "label", reply.text
        reply = client.post(base, json={"image_id": "img_x", "label": label}, headers=annotator)
        assert reply.status_code == 422 and reply.json()["error"]["field"] == "label", reply.text
    # a label of the project passes the check (then meets the segmentation service, not running here)
    reply = client.post(f"{base}/any/finish", json={"outcome": "submitted", "label": "plate"}, headers=annotator)
    assert reply.status_code not in (400, 422, 500), reply.text
    reply = client.post(f"{base}/any/finish", json={"outcome": "skipped"}, headers=annotator)
    assert reply.status_code not in (400, 422, 500), reply.text


@pytest.mark.parametrize(("click", "field"), [
    ({"x": True, "y": 3}, "x"), ({"x": 3, "y": False}, "y"), ({"x": "3", "y": 3}, "x"), ({"x": [3], "y": 3}, "x"),
    ({"x": None, "y": 3}, "x"), ({"x": 3, "y": 3, "t_ms": True}, "t_ms"), ({"x": 3, "y": 3, "t_ms": 2.5}, "t_ms"),
    ({"x": 3, "y": 3, "positive": 1}, "positive"), ({"x": 3, "y": 3, "positive": "false"}, "positive"),
])
def test_coordinates_are_numbers_not_booleans_or_strings(client, projects, admin, click, field):
    refused(client.post("/v1/projects/p1/sessions/any/clicks", json=click, headers=admin), field)


def test_nan_coordinates_are_refused_naming_the_field(client, projects, admin):
    body = b'{"x": NaN, "y": 3}'
    reply = client.post("/v1/projects/p1/sessions/any/clicks", content=body,
                        headers={**admin, "Content-Type": "application/json"})
    refused(reply, "x")


def test_integer_and_fractional_coordinates_still_pass(client, projects, admin):
    for click in ({"x": 3, "y": 4}, {"x": 3.5, "y": 4.25, "positive": False, "t_ms": 10}):
        reply = client.post("/v1/projects/p1/sessions/any/clicks", json=click, headers=admin)
        assert reply.status_code not in (400, 422, 500), reply.text  # then the segmentation service answers


@pytest.mark.parametrize(("filename", "shown"), [
    ("..\\..\\y.png", "y.png"), ("C:\\Users\\me\\Pictures\\cat.png", "cat.png"), ("a/b/../c.png", "c.png"),
    ("..\\..\\", None), ("..", None), ("...", None), ("\u202egnp.exe", "gnp.exe"),
])
def test_upload_display_names_are_base_names_by_either_separator(client, projects, admin, filename, shown):
    reply = client.post("/v1/projects/p1/images", files=[("files", (filename, png(), "image/png"))], headers=admin)
    assert reply.status_code == 201, reply.text
    stored = reply.json()["images"][0]
    assert not stored["duplicate"]
    if shown is None:  # nothing left but dots: the stored name is shown
        assert stored["filename"].endswith(".png") and len(stored["filename"]) == 36, stored
    else:
        assert stored["filename"] == shown, stored


@pytest.mark.parametrize("data", [b"%PDF-1.4 hello", b"GIF89a" + b"\0" * 50, b"not an image at all", b"\x89PNG\r\n"])
def test_a_non_image_upload_is_refused_without_a_python_repr(client, projects, admin, data):
    reply = client.post("/v1/projects/p1/images", files=[("files", ("x.png", data, "image/png"))], headers=admin)
    message = refused(reply, "files[0]")
    assert "0x" not in message and "<_io" not in message and "object at" not in message, message


@pytest.mark.parametrize(("events", "field"), [
    ('[{"session_id": "s", "event_id": "e", "seq": 1, "click": {"x": NaN, "y": 0.5}}]', "events[0].click.x"),
    (('[{"session_id": "s", "event_id": "e", "seq": 1}, {"session_id": "s", "event_id": "f", "seq": 2,'
      ' "mouse": {"points": [{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": Infinity}]}}]'), "events[1].mouse.points[1].y"),
    ('[{"session_id": "s", "event_id": "e", "seq": 1, "click": {"x": -Infinity}}]', "events[0].click.x"),
    ('[{"session_id": "s", "event_id": "e", "seq": 1, "click": {"x": "abc"}}]', "events[0].click.x"),
])
def test_byproduct_events_name_the_exact_field(client, projects, admin, events, field):
    body = f'{{"project_id": "p1", "events": {events}}}'.encode()
    reply = client.post("/v1/byproducts/events", content=body, headers={**admin, "Content-Type": "application/json"})
    refused(reply, field)

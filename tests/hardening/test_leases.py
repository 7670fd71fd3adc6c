"""Task leases from ``questions/next`` (issue 19, item 5), against the real app in process (the dialog and
segmentation services answer UNIMPLEMENTED here, so the fallback asks): a skip releases the lease, asking
again leaves a key holding one task, a failed session start or an abandoned session leaves no lease behind,
and a key that finds nothing free is told how many images other annotators hold rather than "nothing left".
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from services.common.keys import Role
from services.gateway.tables import Annotation
from services.gateway.work import Question
from tests.hardening.conftest import bearer

pytestmark = pytest.mark.integration
P = "/v1/projects/lease"


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 30, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lease(client, platform):
    """Project 'lease' with 3 images and annotators a, b, c, d. Returns (image ids, keys, key ids)."""
    admin = bearer(platform.keys["admin"])
    assert client.post("/v1/projects", json={"project_id": "lease"}, headers=admin).status_code == 201
    files = [("files", (f"{i}.png", png(i), "image/png")) for i in range(3)]
    images = [i["image_id"] for i in client.post(f"{P}/images", files=files, headers=admin).json()["images"]]
    keys, ids = {}, {}
    for name in "abcd":
        principal, token = platform.store.create(name, Role.ANNOTATOR, ["lease"])
        keys[name], ids[name] = bearer(token), principal.key_id
    return images, keys, ids


def ask(client, key, **body):
    reply = client.post(f"{P}/questions/next", headers=key, json=body or None)
    assert reply.status_code == 200, reply.text
    return reply.json()


def states(client, key) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in client.get(f"{P}/tasks", headers=key).json()["tasks"]}


def test_leases_skip_release_and_held_by_others(client, lease):
    images, keys, _ = lease
    a = ask(client, keys["a"])
    b = ask(client, keys["b"])
    c = ask(client, keys["c"])
    assert [q["image"]["image_id"] for q in (a, b, c)] == images
    assert (a["held_by_others"], b["held_by_others"], c["held_by_others"]) == (0, 1, 2)

    # d finds nothing free, and is told why: three images wait in others' leases, the first ends in ~15 min
    d = ask(client, keys["d"])
    assert d["exhausted"] is True and d["held_by_others"] == 3
    expires = datetime.fromisoformat(d["lease_expires_at"])
    assert 14 * 60 < (expires - datetime.now(UTC)).total_seconds() <= 15 * 60

    # asking again resumes the task one holds (a reload), without taking another image
    again = ask(client, keys["a"])
    assert again["task"]["task_id"] == a["task"]["task_id"] and again["held_by_others"] == 2

    # a skips: its lease goes at once, and the image is not asked of a again
    skipped = ask(client, keys["a"], skip=True)
    assert skipped["exhausted"] is True and skipped["held_by_others"] == 2
    assert states(client, keys["a"])[a["task"]["task_id"]] == "skipped"
    d = ask(client, keys["d"])
    assert d["exhausted"] is False and d["image"]["image_id"] == images[0]  # the skipped image, free again


def test_asking_again_leaves_a_key_holding_one_task(client, lease):
    images, keys, ids = lease
    work = client.app.state.work
    held = ask(client, keys["b"])["task"]
    extra = work.issue("lease", ids["b"], Question(image_id=images[2], policy="client"))  # e.g. a tool's session
    assert states(client, keys["b"])[extra.task_id] == "open"
    again = ask(client, keys["b"])
    assert again["task"]["task_id"] == held["task_id"]
    assert states(client, keys["b"])[extra.task_id] == "released"


def test_a_failed_session_start_leaves_no_lease(client, lease):
    images, keys, _ = lease
    reply = client.post(f"{P}/sessions", json={"image_id": images[1]}, headers=keys["a"])
    assert reply.status_code == 503, reply.text  # the segmentation service is not running here
    (task,) = [t for t in client.get(f"{P}/tasks", headers=keys["a"]).json()["tasks"] if t["image_id"] == images[1]]
    assert task["state"] == "released"


def test_an_abandoned_session_releases_its_lease(client, lease):
    images, _, ids = lease
    work = client.app.state.work
    task = work.issue("lease", ids["c"], Question(image_id=images[2]))
    work.record(Annotation(
        session_id="abandoned-1", project_id="lease", image_id=images[2], task_id=task.task_id,
        annotator_id=ids["c"], outcome="ABANDONED", label="", mask_height=20, mask_width=30, mask_counts="",
        area_px=0, click_count=0, seconds=1.0, quality_operation_id="", byproducts_operation_id="",
        created_at=datetime.now(UTC)))
    assert work.task("lease", task.task_id).state == "RELEASED"


def test_no_images_at_all_is_still_nothing_left(client, platform):
    admin = bearer(platform.keys["admin"])
    assert client.post("/v1/projects", json={"project_id": "empty"}, headers=admin).status_code == 201
    reply = client.post("/v1/projects/empty/questions/next", headers=admin).json()
    assert reply == {"exhausted": True, "task": None, "image": None, "held_by_others": 0, "lease_expires_at": None}
    assert client.post("/v1/projects/empty/questions/next", headers=admin, json={"skip": "yes"}).status_code == 422

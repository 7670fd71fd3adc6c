"""Answers without a segmentation session, through the gateway to the real dialog service (real server, Redis,
SQLite): a VERIFY question of the dialog issued as a task shows its proposal; no -> the dialog records the answer
with the measured seconds and the follow-up task starts from the proposal; yes -> the proposal is the image's
annotation; a skip is recorded; answers that do not fit the task, late answers, another annotator's, and an answer
while the dialog is down are refused (the task stays open)."""

from __future__ import annotations

import io
import threading

import grpc
import numpy as np
import pytest
import uvicorn
from PIL import Image
from pycocotools import mask as mask_utils
from redis import Redis
from sqlalchemy import select

from annotation.v1 import common_pb2, dialog_pb2, dialog_pb2_grpc
from services.common import annotation_events
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory
from services.dialog.tables import QuestionRow
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.work import Question, WorkStore, question_detail, region_detail
from services.training.registry import PROMOTED, Registry
from tests.browser import chromium
from tests.conftest import free_port, start_service, wait_until
from tests.segmentation.test_service import queued

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway():
    return GatewaySettings(_env_file=None, fallback_timeout_s=0.5)


def png(value: int, height: int = 40, width: int = 60) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def proposal() -> common_pb2.Mask:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 15:45] = 1
    return common_pb2.Mask(size=[40, 60], counts=mask_utils.encode(np.asfortranarray(mask))["counts"].decode())


@pytest.fixture
def platform(settings, client, keys, spawn):
    """The dialog server; project p1 with two images; a way to issue the dialog's own VERIFY questions as tasks."""
    dialog = start_service(spawn, "dialog", settings)
    admin = keys["admin"]
    assert client.post("/v1/projects", json={"project_id": "p1", "labels": ["cat", "dog"]}, headers=admin).status_code == 201
    images = client.post("/v1/projects/p1/images", headers=admin, files=[
        ("files", ("a.png", png(90), "image/png")), ("files", ("b.png", png(160), "image/png"))]).json()["images"]
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    store = KeyStore(sessions, 0)
    annotator = store.verify(keys["annotator"]["Authorization"].split()[1]).key_id
    neighbour = {"Authorization": f"Bearer {store.create('neighbour', Role.ANNOTATOR, ['p1'])[1]}"}
    channel = grpc.insecure_channel(settings.service_address("dialog"))
    stub = dialog_pb2_grpc.DialogStub(channel)

    def ask_verify(image_id: str) -> dict:
        """The dialog's question about a confident proposal (VERIFY), issued to the annotator as the gateway
        issues the dialog's questions (work.question_detail)."""
        candidate = dialog_pb2.Candidate(
            region=common_pb2.Region(image_id=image_id, whole_image=common_pb2.Region.WholeImage()),
            image=common_pb2.ImageRef(image_id=image_id, width=60, height=40), selection_score=0.9,
            proposal_mask=proposal(), proposal_score=0.95, proposed_label="cat", features={"mean_confidence": 0.97})
        q = stub.NextQuestion(dialog_pb2.NextQuestionRequest(
            project_id="p1", annotator_id=annotator, candidates=dialog_pb2.CandidateList(candidates=[candidate])),
            metadata=[("authorization", keys["annotator"]["Authorization"])]).question
        assert q.type == dialog_pb2.QUESTION_TYPE_VERIFY, q
        task = WorkStore(sessions).issue("p1", annotator, Question(
            image_id=image_id, question_type="VERIFY", question_id=q.question_id, policy=q.policy, reason=q.reason,
            prompt=q.prompt, detail=question_detail(q, 60, 40)))
        return client.get(f"/v1/projects/p1/tasks/{task.task_id}", headers=keys["annotator"]).json()

    def ask_region(image_id: str, width: int = 60, height: int = 40, size: int = 16) -> dict:
        """The dialog's question about a patch pick (LABEL_REGION), issued as the gateway issues it."""
        candidate = dialog_pb2.Candidate(
            region=common_pb2.Region(image_id=image_id, patch=common_pb2.Region.Patch(row=0, col=1, size_px=size)),
            image=common_pb2.ImageRef(image_id=image_id, width=width, height=height), selection_score=0.9)
        q = stub.NextQuestion(dialog_pb2.NextQuestionRequest(
            project_id="p1", annotator_id=annotator, candidates=dialog_pb2.CandidateList(candidates=[candidate])),
            metadata=[("authorization", keys["annotator"]["Authorization"])]).question
        assert q.type == dialog_pb2.QUESTION_TYPE_LABEL_REGION, q
        task = WorkStore(sessions).issue("p1", annotator, Question(
            image_id=image_id, question_type="LABEL_REGION", question_id=q.question_id, policy=q.policy,
            reason=q.reason, prompt=q.prompt, detail=question_detail(q, width, height)))
        return client.get(f"/v1/projects/p1/tasks/{task.task_id}", headers=keys["annotator"]).json()

    def recorded(question_id: str) -> QuestionRow:
        with sessions() as session:
            return session.scalars(select(QuestionRow).where(QuestionRow.question_id == question_id)).one()

    yield {"neighbour": neighbour, "images": images, "ask_verify": ask_verify, "ask_region": ask_region, "recorded": recorded, "dialog": dialog}
    channel.close()


def test_verify_no_then_yes_then_skip(client, keys, platform, settings):
    ann = keys["annotator"]
    first = platform["ask_verify"](platform["images"][0]["image_id"])
    assert first["question_type"] == "VERIFY" and first["region"] == {"kind": "whole_image"}
    assert first["proposal"]["mask"]["counts"] == proposal().counts and first["proposed_label"] == "cat"
    assert first["plan"][0] == "VERIFY" and first["plan"][-1] == "SEGMENT" and "outline" in first["prompt"]
    url = f"/v1/projects/p1/tasks/{first['task_id']}/answer"

    wrong = client.post(url, json={"labels": [], "seconds": 1.0}, headers=ann)
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "labels"
    both = client.post(url, json={"verify": {"accepted": True}, "skip": {}, "seconds": 1.0}, headers=ann)
    assert both.status_code == 422
    assert client.post(url, json={"verify": {"accepted": True}}, headers=ann).json()["error"]["field"] == "seconds"
    assert client.post(url, json={"verify": {"accepted": True}, "seconds": 1}, headers=platform["neighbour"]).status_code == 403

    no = client.post(url, json={"verify": {"accepted": False}, "seconds": 2.5}, headers=ann)
    assert no.status_code == 200, no.text
    body = no.json()
    assert body["dialog"] == "recorded" and body["task"]["state"] == "submitted"
    row = platform["recorded"](first["question_id"])
    assert row.answer_kind == "verify" and row.answer["accepted"] is False and row.seconds_taken == pytest.approx(2.5)
    follow = body["follow_up"]["task"]
    assert follow["question_type"] == "SEGMENT" and follow["question_id"] not in ("", first["question_id"])
    assert follow["proposal"]["mask"] == first["proposal"]["mask"]  # the correction starts from the proposal
    late = client.post(url, json={"verify": {"accepted": True}, "seconds": 1.0}, headers=ann)
    assert late.status_code == 409 and late.json()["error"]["field"] == "task_id"

    # the follow-up is skipped: the dialog records the skip of its follow-up question
    skipped = client.post(f"/v1/projects/p1/tasks/{follow['task_id']}/answer",
                          json={"skip": {"reason": "ambiguous"}, "seconds": 0.8}, headers=ann)
    assert skipped.status_code == 200 and skipped.json()["task"]["state"] == "skipped"
    assert platform["recorded"](follow["question_id"]).answer_kind == "skip"

    second = platform["ask_verify"](platform["images"][1]["image_id"])
    yes = client.post(f"/v1/projects/p1/tasks/{second['task_id']}/answer",
                      json={"verify": {"accepted": True}, "seconds": 1.2}, headers=ann)
    assert yes.status_code == 200 and yes.json()["follow_up"] is None
    assert platform["recorded"](second["question_id"]).answer["accepted"] is True
    # the dialog, told of the acceptance, sends the loop's event: selection and training hear of the mask (no
    # session: nothing for byproducts or quality); nobody runs those workers here, so the messages wait
    events = {queue: [(name, payload) for name, _, payload in queued(Redis.from_url(settings.redis_url), queue)
                      if payload["annotation_id"] == f"verify-{second['question_id']}"]
              for queue in ("selection", "training", "quality", "byproducts")}
    assert [name for name, _ in events["selection"]] == ["selection.annotation_submitted"]
    assert [name for name, _ in events["training"]] == ["training.annotation_submitted"]
    assert not events["quality"] and not events["byproducts"]
    event = annotation_events.decode(events["training"][0][1])
    assert (event.label, event.mask.counts, event.image.image_id) == ("cat", proposal().counts,
                                                                       platform["images"][1]["image_id"])
    stored = client.get(f"/v1/projects/p1/annotations/verify-{second['task_id']}", headers=keys["reviewer"]).json()
    assert stored["mask"] == second["proposal"]["mask"] and stored["label"] == "cat" and stored["click_count"] == 0
    coco = client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()
    assert [a["segmentation"]["counts"] for a in coco["annotations"]] == [proposal().counts]
    progress = client.get("/v1/projects/p1/progress", headers=ann).json()
    assert (progress["images"], progress["done"], progress["to_do"]) == (2, 1, 1)
    assert progress["model"] is None and "UNAVAILABLE" in progress["model_error"]  # no segmentation service here


def test_label_region(client, keys, platform):
    ann = keys["annotator"]
    task = platform["ask_region"](platform["images"][0]["image_id"])
    assert task["question_type"] == "LABEL_REGION" and task["region"]["kind"] == "patch"
    assert task["region"]["box"] == [16, 0, 16, 16] and "region" in task["prompt"]
    url = f"/v1/projects/p1/tasks/{task['task_id']}/answer"
    outside = client.post(url, json={"labels": [{"label": "cat", "box": [2, 2, 5, 5]}], "seconds": 3.0}, headers=ann)
    assert outside.status_code == 422 and outside.json()["error"]["field"] == "labels[0].box"
    unknown = client.post(url, json={"labels": [{"label": "cow", "box": [18, 2, 5, 5]}], "seconds": 3.0}, headers=ann)
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "labels[0].label"
    assert client.post(url, json={"verify": {"accepted": True}, "seconds": 1.0}, headers=ann).json()["error"]["field"] == "verify"
    done = client.post(url, json={"labels": [{"label": "cat", "box": [18, 2, 5, 5]}, {"label": "dog", "box": [20, 8, 6, 6]}],
                                  "seconds": 3.0}, headers=ann)
    assert done.status_code == 200 and done.json()["task"]["state"] == "submitted" and done.json()["follow_up"] is None
    row = platform["recorded"](task["question_id"])
    assert row.answer_kind == "labels" and [item["label"] for item in row.answer["labels"]] == ["cat", "dog"]
    assert row.seconds_taken == pytest.approx(3.0)


def test_dialog_down_keeps_the_task_open(client, keys, platform):
    task = platform["ask_verify"](platform["images"][0]["image_id"])
    platform["dialog"].stop()
    down = client.post(f"/v1/projects/p1/tasks/{task['task_id']}/answer",
                       json={"verify": {"accepted": True}, "seconds": 1.0}, headers=keys["annotator"])
    assert down.status_code == 503 and "dialog" in down.json()["error"]["message"]
    assert client.get(f"/v1/projects/p1/tasks/{task['task_id']}", headers=keys["annotator"]).json()["state"] == "open"


def test_region_geometry():
    patch = common_pb2.Region(image_id="i", patch=common_pb2.Region.Patch(row=1, col=1, size_px=32))
    assert region_detail(patch, 60, 40) == {"kind": "patch", "box": [32, 32, 28, 8]}  # clipped to the image
    box = common_pb2.Region(image_id="i", box=common_pb2.Box(x=1, y=2, width=3, height=4))
    assert region_detail(box, 60, 40) == {"kind": "box", "box": [1, 2, 3, 4]}
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 255
    superpixel = common_pb2.Region(image_id="i", superpixel=common_pb2.Region.Superpixel(segment_id=0, n_segments=2))
    detail = region_detail(superpixel, 60, 40, lambda: image)
    assert detail["kind"] == "superpixel" and detail["mask"]["size"] == [40, 60] and detail["box"][2] > 0


@pytest.fixture
def served(settings, gateway, client):
    """The same gateway app served over HTTP (uvicorn in a thread), for the browser."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, gateway), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, "gateway started")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.e2e
def test_label_region_in_the_browser(client, keys, platform, served):
    """What the person sees of a LABEL_REGION question: its type and prompt, the image dimmed outside the region,
    a box started outside refused with a message, boxes inside it each with the chosen label, Enter -> the dialog
    records the labels with the seconds."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    uploaded = client.post("/v1/projects/p1/images", headers=keys["admin"], files=[
        ("files", ("big.png", png(120, 160, 240), "image/png"))]).json()["images"][0]
    task = platform["ask_region"](uploaded["image_id"], 240, 160, 64)
    assert task["region"]["box"] == [64, 0, 64, 64]
    driver = chromium()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(served + "/?project=p1")
        wait.until(lambda d: d.find_element(By.ID, "key-input").is_displayed())
        driver.find_element(By.ID, "key-input").send_keys(keys["annotator"]["Authorization"].split()[1])
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(lambda d: d.execute_script("return document.body.dataset.mode") == "label_region")
        assert driver.find_element(By.ID, "question-type").text == "LABEL REGION"
        assert driver.find_element(By.ID, "prompt").text == task["prompt"]
        # only this question's tools: boxes are removed with Z; no yes/no, no click undo
        assert driver.find_element(By.ID, "remove-box").is_displayed()
        assert not driver.find_element(By.ID, "yes").is_displayed() and not driver.find_element(By.ID, "undo").is_displayed()
        canvas = driver.find_element(By.ID, "canvas")
        wait.until(lambda d: d.execute_script("return document.body.dataset.taskId") == task["task_id"])

        def pixel(x, y):
            return driver.execute_script("return Array.from(arguments[0].getContext('2d').getImageData("
                                         "arguments[1], arguments[2], 1, 1).data);", canvas, x, y)[:3]

        assert max(pixel(20, 100)) < 100 and pixel(96, 32) == [120, 120, 120]  # dimmed outside, as is inside
        rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", canvas)

        def at(x, y):  # image pixels -> offsets from the canvas centre, as ActionChains takes them
            return int(x * rect["width"] / 240 - rect["width"] / 2), int(y * rect["height"] / 160 - rect["height"] / 2)

        ActionChains(driver).move_to_element_with_offset(canvas, *at(20, 100)).click_and_hold() \
            .move_to_element_with_offset(canvas, *at(40, 120)).release().perform()
        assert "region" in driver.find_element(By.ID, "error").text and "Refused" in driver.find_element(By.ID, "error").text
        ActionChains(driver).move_to_element_with_offset(canvas, *at(70, 5)).click_and_hold() \
            .move_to_element_with_offset(canvas, *at(90, 30)).release().send_keys("2") \
            .move_to_element_with_offset(canvas, *at(95, 35)).click_and_hold() \
            .move_to_element_with_offset(canvas, *at(120, 60)).release().perform()
        info = driver.find_element(By.ID, "objects-info")
        wait.until(lambda d: info.get_attribute("data-objects") == "2")
        ActionChains(driver).send_keys("\ue007").perform()  # Enter
        wait.until(lambda d: d.execute_script("return document.body.dataset.lastAnswer"))
    finally:
        driver.quit()
    row = wait_until(lambda: (r := platform["recorded"](task["question_id"])).answer_kind and r, 10, "recorded")
    labels = row.answer["labels"]
    assert row.answer_kind == "labels" and [item["label"] for item in labels] == ["cat", "dog"]
    for item in labels:  # inside the region
        x, y, w, h = item["box"]
        assert w > 0 and h > 0 and x >= 64 and y >= 0 and x + w <= 128 and y + h <= 64, item
    assert row.seconds_taken > 0


def test_progress_names_the_projects_promoted_models(client, keys, platform, settings, spawn):
    """The annotator's progress line names the project's own models the loop promoted, with their figures."""
    before = client.get("/v1/projects/p1/progress", headers=keys["annotator"]).json()
    assert before["project_models"] == {} and "UNAVAILABLE" in before["project_models_error"]  # no training server
    start_service(spawn, "training", settings)
    registry = Registry(make_session_factory(make_engine(settings.resolved_database_url)))
    promoted = registry.register(project_id="p1", kind="interactive", operation_id="op-1", snapshot_id="s1",
                                 parent_version=0, command="test", config={}, class_names=[],
                                 artifact=lambda version: f"/nowhere/{version}")
    registry.update(promoted, state=PROMOTED, figures={"noc85": 2.1, "noc90": 2.9})
    registry.register(project_id="p1", kind="task", operation_id="op-2", snapshot_id="s1", parent_version=0,
                      command="test", config={}, class_names=["background", "cat"], artifact=lambda v: "/nowhere")
    # the gateway's channel reconnects after its backoff
    def reached() -> dict | None:
        progress = client.get("/v1/projects/p1/progress", headers=keys["annotator"]).json()
        return None if progress["project_models_error"] else progress

    after = wait_until(reached, 30, "the gateway reaches the training server")
    # the task candidate is not current: only the promoted interactive version is named
    assert after["project_models"] == {"interactive": {"version": 1, "figures": {"noc85": 2.1, "noc90": 2.9}}}

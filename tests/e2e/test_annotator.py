"""The loop a person uses, end to end on the real platform (`annot up`: Redis, tritonserver, every service and
worker, the gateway), in headless Debian Chromium, on one platform start for the module:

- the work comes from the dialog (never the fallback): its question, shown with its type; a VERIFY question
  shows the proposal over the image, N rejects it (the dialog records the answer) and clicks correct it from
  the proposal; a click tints the overlay inside the clicked object; Enter submits; the mask is stored, the
  byproducts, quality and the dialog hear of it; the next question is answered by its keys (Y, S); the help
  overlay and the progress line (done count, model version) show;
- the review page: a reviewer's accept is persisted by quality; a correction opened from the stored mask is
  recorded as corrected;
- a question about a video frame, in a project with only a video (`test_demo.py` walks `annot demo`).
"""

from __future__ import annotations

import io
import shutil
import zipfile

import cv2
import numpy as np
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data as samples
from sqlalchemy import select

from services.common.masks import decode_rle
from services.common.settings import Settings
from services.common.storage import make_engine, make_session_factory
from services.dialog.tables import QuestionRow
from services.gateway.client import GatewayClient
from tests.browser import chromium, log_in
from tests.conftest import (
    REPO,
    SHARED_DATA,
    wait_until,
)
from tests.e2e.annot_platform import annot_up

pytestmark = pytest.mark.e2e

# a point on the main object of each photo, in image pixels
OBJECT = {"coffee.png": (300, 180), "chelsea.png": (200, 170)}
PHOTOS = {"coffee.png": samples.coffee(), "chelsea.png": samples.chelsea()}
ARTIFACTS = REPO / "var" / "artifacts"
ENTER, ESCAPE = "\ue007", "\ue00c"  # selenium's Keys
CLIP, CLIP_FRAMES, CLIP_SIZE = SHARED_DATA / "video" / "car-shadow", 4, (320, 180)  # a short slice, (W, H)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with annot_up(tmp_path_factory.mktemp("platform"), ["cup", "plate"], PHOTOS) as running:
        yield running


def dialog_answer(settings: Settings, question_id: str) -> QuestionRow | None:
    """The dialog's record of its question, once answered (its own table, read as the dialog wrote it)."""
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with sessions() as session:
        row = session.scalars(select(QuestionRow).where(QuestionRow.question_id == question_id)).one()
    return row if row.answered_at is not None else None


class Page:
    """The web annotator in Chromium, logged in with the key."""

    def __init__(self, driver, url: str, key: str, path: str = "/?project=web") -> None:
        self.driver, self.by = driver, By
        self.wait = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        log_in(driver, url + "/", key)
        if path != "/":
            driver.get(url + path)

    def el(self, element_id: str):
        return self.driver.find_element(self.by.ID, element_id)

    def body(self, name: str) -> str | None:
        return self.driver.execute_script(f"return document.body.dataset.{name} || null")

    def task(self, client: GatewayClient, previous: str | None = None, project: str = "web") -> dict:
        """The task the page shows (waits for one other than ``previous``), as the API has it."""
        task_id = self.wait.until(lambda d: (t := self.body("taskId")) and t != previous and
                                  self.body("mode") not in (None, "idle") and t)
        return client.request("GET", f"/v1/projects/{project}/tasks/{task_id}")

    def key(self, keys: str) -> None:
        ActionChains(self.driver).send_keys(keys).perform()

    def pixel(self, x: int, y: int) -> np.ndarray:
        return np.array(self.driver.execute_script(
            "return Array.from(arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data);",
            self.el("canvas"), x, y)[:3], int)

    def click(self, x: int, y: int, image: dict) -> None:
        canvas = self.el("canvas")
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", canvas)
        dx = x * rect["width"] / image["width"] - rect["width"] / 2
        dy = y * rect["height"] / image["height"] - rect["height"] / 2
        ActionChains(self.driver).move_to_element_with_offset(canvas, int(dx) - 40, int(dy) - 30) \
            .move_to_element_with_offset(canvas, int(dx), int(dy)).click().perform()


def test_the_dialogs_questions_in_the_browser(platform, tmp_path):
    settings, url, key, images = platform["settings"], platform["url"], platform["key"], platform["images"]
    with GatewayClient(url, key) as client:
        config = client.config()
        assert config["byproducts_ingest"], "the gateway has no byproducts ingest route"
        driver = chromium()
        try:
            page = Page(driver, url, key)
            task = page.task(client)
            # the dialog's question about selection's pick, not the gateway's fallback
            assert task["policy"] != "fallback" and task["question_id"], task["reason"]
            assert "no question from the dialog" not in page.el("reason").text
            assert page.el("prompt").text == task["prompt"]
            assert page.el("question-type").text == task["question_type"].replace("_", " ")
            assert task["question_type"] in ("VERIFY", "SEGMENT"), task  # whole-image picks
            image = images[task["image_id"]]
            photo = PHOTOS[image["filename"]]
            x, y = OBJECT[image["filename"]]
            if task["question_type"] == "VERIFY":
                # the proposal is drawn over the image: tinted inside its mask, the photo as it is outside
                proposal = decode_rle(task["proposal"]["mask"]["size"], task["proposal"]["mask"]["counts"],
                                      photo.shape[:2], "proposal")
                rows, cols = np.nonzero(proposal)
                inside = (int(cols[len(cols) // 2]), int(rows[len(rows) // 2]))
                outside = next((c, r) for r, c in ((5, 5), (5, photo.shape[1] - 6), (photo.shape[0] - 6, 5))
                               if not proposal[r, c])
                assert np.abs(page.pixel(*inside) - photo[inside[1], inside[0]]).max() > 20
                assert np.abs(page.pixel(*outside) - photo[outside[1], outside[0]]).max() <= 3
                assert page.el("yes").is_displayed() and not page.el("undo").is_displayed()
                page.key("n")  # no: the dialog hears it, the clicks start from the proposal
                verify_id, shown = task["question_id"], task["proposal"]["mask"]
                task = page.task(client, previous=task["task_id"])
                assert task["question_type"] == "SEGMENT" and task["proposal"]["mask"] == shown, task
                row = wait_until(lambda: dialog_answer(settings, verify_id), 10, "the dialog recorded the no")
                assert row.answer_kind == "verify" and row.answer["accepted"] is False and row.seconds_taken > 0
            canvas = page.el("canvas")
            page.wait.until(lambda d: canvas.get_attribute("data-session-id"))
            session_id = canvas.get_attribute("data-session-id")
            assert page.el("undo").is_displayed() and not page.el("yes").is_displayed()
            page.click(x, y, image)
            info = page.el("mask-info")
            page.wait.until(lambda d: info.get_attribute("data-clicks") == "1")
            area = int(info.get_attribute("data-area"))
            # the overlay is drawn: inside the new mask, away from the click's marker, the canvas is tinted blue
            # unlike the photo there; outside it the photo is as it is
            now = client.request("GET", f"/v1/projects/web/sessions/{session_id}")["mask"]
            inside = decode_rle(now["size"], now["counts"], photo.shape[:2], "mask")
            rows, cols = np.nonzero(inside)
            far = (cols - x) ** 2 + (rows - y) ** 2 >= 15 ** 2
            nearest = np.argmin(np.where(far, (cols - x) ** 2 + (rows - y) ** 2, np.iinfo(np.int64).max))
            tx, ty = int(cols[nearest]), int(rows[nearest])
            pixel, original = page.pixel(tx, ty), photo[ty, tx]
            assert pixel[2] > original[2] and pixel[0] < original[0], (tx, ty, pixel, original)
            ox, oy = next((c, r) for r, c in ((3, 3), (3, photo.shape[1] - 4), (photo.shape[0] - 4, 3))
                          if not inside[r, c])
            assert np.abs(page.pixel(ox, oy) - photo[oy, ox]).max() <= 3
            driver.save_screenshot(str(tmp_path / "annotator.png"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "annotator.png", ARTIFACTS / "annotator-e2e.png")
            # N keeps this object (submitted) and starts another session on the same image; its overlay stays
            page.key("n")
            page.wait.until(lambda d: page.body("lastSession") == session_id)
            page.wait.until(lambda d: canvas.get_attribute("data-session-id") not in (None, session_id))
            assert page.el("objects-info").get_attribute("data-objects") == "1"
            assert page.el("mask-info").get_attribute("data-clicks") == "0"
            assert list(page.pixel(tx, ty)) == list(pixel)
            extra = canvas.get_attribute("data-session-id")
            page.key(ENTER)  # done with this image: the extra object, without clicks, is no answer
            page.wait.until(lambda d: page.body("lastSession") == extra)
            assert client.annotation("web", extra)["outcome"] == "abandoned"
            kept = page.el("byproducts-info")
            page.wait.until(lambda d: int(kept.get_attribute("data-sent") or 0) > 3)

            # the next question, with the help overlay and the progress line
            second = page.task(client, previous=task["task_id"])
            assert second["question_id"] and second["policy"] != "fallback", second
            assert page.el("question-type").text == second["question_type"].replace("_", " ")
            page.key("?")
            assert page.el("help").is_displayed() and "Y" in page.el("help").text
            page.key(ESCAPE)
            assert not page.el("help").is_displayed()
            progress = page.el("progress")
            page.wait.until(lambda d: progress.get_attribute("data-done") == "1")
            assert progress.get_attribute("data-model"), progress.text  # segmentation's model version
            page.key("y" if second["question_type"] == "VERIFY" else "s")  # yes, or skip
            second_row = wait_until(lambda: dialog_answer(settings, second["question_id"]), 30, "the dialog recorded it")
            if second["question_type"] == "VERIFY":
                assert second_row.answer_kind == "verify" and second_row.answer["accepted"] is True
            else:
                assert second_row.answer_kind == "skip"
        finally:
            driver.quit()

        stored = client.annotation("web", session_id)
        assert stored["outcome"] == "submitted" and stored["click_count"] == 1 and stored["area_px"] == area
        mask = decode_rle(stored["mask"]["size"], stored["mask"]["counts"], photo.shape[:2], "mask")
        assert mask[y, x]
        # the submitted mask, and an accepted proposal is the other image's annotation
        assert len(client.export_coco("web")["annotations"]) == 1 + (second["question_type"] == "VERIFY")
        assert wait_until(lambda: client.export_byproducts("web").count(session_id.encode()), 30, "byproducts stored")
        # quality scored the session: the review queue lists it
        wait_until(lambda: any(i["session_id"] == session_id for i in client.review("web")["items"]), 60,
                   "quality score of the session")
        # the dialog heard the segment answer of its question (through the session's event)
        segment_row = wait_until(lambda: dialog_answer(settings, task["question_id"]), 30, "the dialog's segment answer")
        assert segment_row.answer_kind == "segment"


def test_review_accept_and_correct(platform):
    url, key, images = platform["url"], platform["key"], platform["images"]
    with GatewayClient(url, key) as client:
        items = wait_until(lambda: client.review("web")["items"], 60, "a scored session")
        session_id = items[0]["session_id"]
        driver = chromium()
        try:
            page = Page(driver, url, key, "/review?project=web")
            row = page.wait.until(lambda d: d.find_element(page.by.CSS_SELECTOR, f"tr[data-session-id='{session_id}']"))
            row.find_element(page.by.CSS_SELECTOR, "button[data-action='accept']").click()
            page.wait.until(lambda d: row.get_attribute("data-verdict") == "accepted")
            reviewed = client.request("GET", "/v1/projects/web/review", params={"include_reviewed": True})["items"]
            assert {i["session_id"]: i["verdict"] for i in reviewed}[session_id] == "accepted"

            # correct: the annotator opens on the stored mask; one click and Enter record the correction
            driver.get(f"{url}/?project=web&correct={session_id}")
            canvas = page.el("canvas")
            page.wait.until(lambda d: canvas.get_attribute("data-session-id"))
            assert page.el("question-type").text == "CORRECT"
            image = images[items[0]["image_id"]]
            page.click(*OBJECT[image["filename"]], image)
            page.wait.until(lambda d: page.el("mask-info").get_attribute("data-clicks") == "1")
            page.key(ENTER)
            page.wait.until(lambda d: page.body("lastVerdict") == "corrected")
        finally:
            driver.quit()
        reviewed = client.request("GET", "/v1/projects/web/review", params={"include_reviewed": True})["items"]
        assert {i["session_id"]: i["verdict"] for i in reviewed}[session_id] == "corrected"


def car_clip() -> tuple[bytes, list[np.ndarray], list[np.ndarray]]:
    """A zip of the first CLIP_FRAMES frames of a DAVIS sequence (lossless PNG, made small), the frames (RGB) and
    their object masks."""
    names = sorted((CLIP / "frames").iterdir())[:CLIP_FRAMES]
    if not names:
        pytest.fail(f"{CLIP} is missing: the frame-question test reads a DAVIS sequence there")
    frames = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_COLOR), CLIP_SIZE, interpolation=cv2.INTER_AREA) for p in names]
    masks = [cv2.resize(cv2.imread(str(CLIP / "masks" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE), CLIP_SIZE,
                        interpolation=cv2.INTER_NEAREST) > 0 for p in names]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for t, frame in enumerate(frames):
            archive.writestr(f"{t:03d}.png", cv2.imencode(".png", frame)[1].tobytes())
    return buffer.getvalue(), [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames], masks


def deep_inside(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask's pixel farthest from its border."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def test_a_video_frame_question_in_the_browser(platform):
    """A project whose only data is a video: the dialog's question is about one of its frames (selection's pick;
    the fallback knows images only), shown and answered as an image's; the mask becomes the frame's human
    sample, the dialog hears the answer, the next question is about another frame, and a reviewer's correction
    opens on the frame."""
    settings, url, key = platform["settings"], platform["url"], platform["key"]
    data, frames, truth = car_clip()
    with GatewayClient(url, key) as client:
        client.create_project("clip", "Clip", ["car"])
        video = client.request("POST", "/v1/projects/clip/videos",
                               files={"file": ("clip.zip", data, "application/zip")})
        assert video["selection"] == "ok", video  # its frames are in selection's pool
        driver = chromium()
        try:
            page = Page(driver, url, key, "/?project=clip")
            task = page.task(client, project="clip")
            assert task["policy"] != "fallback" and task["question_id"], task["reason"]
            prefix, _, index = task["image_id"].rpartition("/")
            assert prefix == video["video_id"] and int(index) < CLIP_FRAMES, task
            assert task["frame"] == {"video_id": prefix, "frame_index": int(index)}, task
            index = int(index)
            assert page.body("frame") == task["image_id"]
            assert f"frame {index + 1} of {CLIP_FRAMES}" in page.el("picture").text
            frame, x, y = frames[index], *deep_inside(truth[index])
            if task["question_type"] == "VERIFY":  # no: the clicks correct the proposal
                page.key("n")
                task = page.task(client, previous=task["task_id"], project="clip")
            assert task["question_type"] == "SEGMENT" and task["image_id"] == f"{prefix}/{index}", task
            canvas = page.el("canvas")
            page.wait.until(lambda d: canvas.get_attribute("data-session-id"))
            session_id = canvas.get_attribute("data-session-id")
            # the frame is what the canvas shows (lossless: exactly, where no proposal is drawn)
            proposal = (task.get("proposal") or {}).get("mask")
            shown = decode_rle(proposal["size"], proposal["counts"], frame.shape[:2], "p") if proposal else \
                np.zeros(frame.shape[:2], bool)
            ox, oy = next((c, r) for r, c in ((3, 3), (3, CLIP_SIZE[0] - 4), (CLIP_SIZE[1] - 4, 3))
                          if not shown[r, c] and not truth[index][r, c])
            assert np.abs(page.pixel(ox, oy) - frame[oy, ox]).max() <= 3
            page.click(x, y, {"width": CLIP_SIZE[0], "height": CLIP_SIZE[1]})
            page.wait.until(lambda d: page.el("mask-info").get_attribute("data-clicks") == "1")
            now = client.request("GET", f"/v1/projects/clip/sessions/{session_id}")["mask"]
            inside = decode_rle(now["size"], now["counts"], frame.shape[:2], "mask")
            assert inside[y, x] and (inside & truth[index]).sum() > 0.5 * inside.sum(), "the mask misses the car"
            rows, cols = np.nonzero(inside)
            far = (cols - x) ** 2 + (rows - y) ** 2 >= 8 ** 2
            pick = int(np.argmax(far))
            tx, ty = int(cols[pick]), int(rows[pick])
            assert page.pixel(tx, ty)[2] > frame[ty, tx][2], "no overlay drawn over the frame's object"
            page.key(ENTER)
            page.wait.until(lambda d: page.body("lastSession") == session_id)
            # the next question is about another frame of the video
            second = page.task(client, previous=task["task_id"], project="clip")
            assert second["policy"] != "fallback" and second["image_id"].startswith(prefix + "/"), second
            assert second["image_id"] != task["image_id"], "the answered frame was asked again"
        finally:
            driver.quit()
        # the frame's human sample (what the next propagation uses), the annotation row, the dialog's record
        stored_video = client.request("GET", f"/v1/projects/clip/videos/{prefix}")
        assert index in stored_video["masked_frames"], stored_video
        stored = client.annotation("clip", session_id)
        assert stored["image"]["video_id"] == prefix and stored["image"]["frame_index"] == index
        row = wait_until(lambda: dialog_answer(settings, task["question_id"]), 30, "the dialog's answer")
        assert row.answer_kind == "segment"
        assert client.request("GET", "/v1/projects/clip/progress")["frames_done"] == 1

        # a reviewer's correction opens on the frame, from its stored mask
        wait_until(lambda: any(i["session_id"] == session_id for i in client.review("clip")["items"]), 60,
                   "quality score of the frame's session")
        driver = chromium()
        try:
            page = Page(driver, url, key, f"/?project=clip&correct={session_id}")
            canvas = page.el("canvas")
            page.wait.until(lambda d: canvas.get_attribute("data-session-id"))
            assert page.el("question-type").text == "CORRECT" and page.body("frame") == f"{prefix}/{index}"
            page.click(x, y, {"width": CLIP_SIZE[0], "height": CLIP_SIZE[1]})
            page.wait.until(lambda d: page.el("mask-info").get_attribute("data-clicks") == "1")
            page.key(ENTER)
            page.wait.until(lambda d: page.body("lastVerdict") == "corrected")
        finally:
            driver.quit()

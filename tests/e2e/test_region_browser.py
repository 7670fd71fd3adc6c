"""A LABEL_REGION question as a person meets it, in headless Debian Chromium, on real servers (selection server
and worker, dialog, the gateway as a process with ANNOT_GATEWAY_QUESTION_GRANULARITY=superpixel): once a task
model's predictions have scored the pool by superpixel, the dialog's question is a superpixel of selection's
pick; the page dims everything outside it and shows its pixels as they are; a box started on a pixel of the
bounding box that is not the superpixel's is refused; boxes over it, each with its label (keys 1, 2), are
drawn; Enter sends them, and the dialog records the labels."""

from __future__ import annotations

import io
import json

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data as samples

from annotation.v1 import common_pb2
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from tests.browser import chromium, log_in
from tests.conftest import PYTHON, start_gateway, start_service
from tests.region_scoring import score_pool

pytestmark = pytest.mark.e2e

SIZE, SUPERPIXELS = (320, 240), 12  # (W, H); SLIC segments: about 80 px across each
ENTER = "\ue007"


def photo(flip: bool) -> np.ndarray:
    image = cv2.resize(samples.coffee(), SIZE, interpolation=cv2.INTER_AREA)
    return image[:, ::-1].copy() if flip else image


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def platform(settings, spawn, monkeypatch):
    monkeypatch.setenv("ANNOT_GATEWAY_QUESTION_GRANULARITY", "superpixel")
    monkeypatch.setenv("ANNOT_GATEWAY_QUESTION_SUPERPIXELS", str(SUPERPIXELS))
    migrate(settings.resolved_database_url)
    start_service(spawn, "selection", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-region-browser@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    start_service(spawn, "dialog", settings)
    url = start_gateway(spawn, settings)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = store.create("admin", Role.ADMIN, ["*"])[1]
    annotator = store.create("annotator", Role.ANNOTATOR, ["p1"])[1]
    photos = {"coffee.png": photo(False), "flipped.png": photo(True)}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
        made = api.post("/v1/projects", json={"project_id": "p1", "labels": ["cup", "saucer"]})
        assert made.status_code == 201 and made.json()["selection"] == "ok", made.text
        uploaded = api.post("/v1/projects/p1/images", files=[("files", (name, png(p), "image/png"))
                                                             for name, p in photos.items()]).json()
        assert uploaded["selection"] == "ok", uploaded
        images = {i["image_id"]: photos[i["filename"]] for i in uploaded["images"]}
        # a task model's predictions, scored by superpixel (the training wing has selection do this)
        score_pool(settings, f"Bearer {admin}", "p1", list(images), SIZE[::-1], common_pb2.GRANULARITY_SUPERPIXEL,
                   classes=3, superpixel_counts=[SUPERPIXELS])
        yield {"url": url, "api": api, "key": annotator, "images": images}


class Page:
    def __init__(self, driver, url: str, key: str) -> None:
        self.driver = driver
        self.wait = WebDriverWait(driver, 60,
                                  ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        log_in(driver, url + "/", key)
        driver.get(url + "/?project=p1")

    def el(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def body(self, name: str) -> str | None:
        return self.driver.execute_script(f"return document.body.dataset.{name} || null")

    def canvas_rgb(self) -> np.ndarray:
        canvas = self.el("canvas")
        flat = self.driver.execute_script(
            "const c = arguments[0]; return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);",
            canvas)
        return np.array(flat, np.int16).reshape(SIZE[1], SIZE[0], 4)[..., :3]

    def drag(self, start: tuple[int, int], end: tuple[int, int]) -> None:
        canvas = self.el("canvas")
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", canvas)

        def offset(x: float, y: float) -> tuple[int, int]:  # image pixels -> CSS offset from the canvas centre
            return (round((x + 0.5) * rect["width"] / SIZE[0] - rect["width"] / 2),
                    round((y + 0.5) * rect["height"] / SIZE[1] - rect["height"] / 2))

        (x0, y0), (x1, y1) = offset(*start), offset(*end)
        chain = ActionChains(self.driver).move_to_element_with_offset(canvas, x0, y0).click_and_hold()
        for f in (0.5, 1.0):
            chain = chain.move_to_element_with_offset(canvas, round(x0 + f * (x1 - x0)), round(y0 + f * (y1 - y0)))
        chain.release().perform()

    def key(self, keys: str) -> None:
        ActionChains(self.driver).send_keys(keys).perform()


def inner_points(mask: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``count`` (x, y) points of the mask at least 6 px inside it, far apart."""
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(depth >= 6)
    assert len(xs) >= count, "the superpixel is too thin for the test"
    order = np.argsort(xs + ys * 0.001)
    picks = order[np.linspace(0, len(order) - 1, count).astype(int)]
    return [(int(xs[i]), int(ys[i])) for i in picks]


def test_label_region_question_in_the_browser(platform, tmp_path):
    url, api, images = platform["url"], platform["api"], platform["images"]
    driver = chromium()
    try:
        page = Page(driver, url, platform["key"])
        page.wait.until(lambda d: page.body("mode") == "label_region")
        task = api.get(f"/v1/projects/p1/tasks/{page.body('taskId')}").json()
        assert task["question_type"] == "LABEL_REGION" and task["policy"] != "fallback" and task["question_id"], task
        assert page.el("question-type").text == "LABEL REGION"
        region, image = task["region"], images[task["image_id"]]
        assert region["kind"] == "superpixel"
        inside = decode_rle(region["mask"]["size"], region["mask"]["counts"], SIZE[::-1], "region")
        x, y, w, h = (int(v) for v in region["box"])

        # what the person sees: the photo dimmed outside the region's box, as it is on the superpixel's pixels
        shown = page.canvas_rgb()
        outside = np.ones(inside.shape, bool)
        outside[max(0, y - 4):y + h + 4, max(0, x - 4):x + w + 4] = False
        assert outside.any()
        assert (shown[outside] <= image[outside] * 0.6 + 3).all(), "not dimmed outside the region"
        # away from its edges (the box's outline is drawn there; at the image's border too)
        core = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8), borderType=cv2.BORDER_CONSTANT,
                         borderValue=0) > 0
        assert core.any() and np.abs(shown[core] - image[core]).max() <= 3, "the region's pixels are not as they are"

        # a box started in the bounding box but on another superpixel's pixel: refused, nothing drawn
        gaps = np.argwhere(~inside[y + 2:y + h - 2, x + 2:x + w - 2])
        assert len(gaps), "the superpixel fills its bounding box"
        gy, gx = (int(v) for v in gaps[len(gaps) // 2])
        page.drag((x + 2 + gx, y + 2 + gy), (x + w - 1, y + h - 1))
        page.wait.until(lambda d: "highlighted region" in page.el("error").text)
        assert page.el("objects-info").get_attribute("data-objects") in (None, "", "0")

        # two boxes over the superpixel, "cup" then (key 2) "saucer"
        (ax, ay), (bx, by) = inner_points(inside, 2)
        page.drag((ax, ay), (min(x + w - 1, ax + 10), min(y + h - 1, ay + 10)))
        page.wait.until(lambda d: page.el("objects-info").get_attribute("data-objects") == "1")
        page.key("2")
        page.drag((bx, by), (max(x, bx - 10), max(y, by - 10)))
        page.wait.until(lambda d: page.el("objects-info").get_attribute("data-objects") == "2")
        drawn = page.canvas_rgb()
        assert (np.abs(drawn - shown).max(axis=-1) > 40).sum() > 40, "the boxes are not drawn"
        driver.save_screenshot(str(tmp_path / "region.png"))
        page.key(ENTER)
        answer = json.loads(page.wait.until(lambda d: page.body("lastAnswer")))
    finally:
        driver.quit()
    assert answer["dialog"] == "recorded" and answer["state"] == "submitted", answer
    assert [item["label"] for item in answer["labels"]] == ["cup", "saucer"]
    stored = api.get(f"/v1/projects/p1/tasks/{task['task_id']}").json()
    assert stored["state"] == "submitted"

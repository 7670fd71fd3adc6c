"""The box prompt as a person uses it, end to end on the real platform (`annot up`: Redis, tritonserver, every
service and worker, the gateway), in headless Debian Chromium: B arms the box tool, a drag around the object
draws the box and gets a mask that tints the object inside the box and leaves the photo as it is outside it;
Z undoes the box (the overlay goes), Y redoes it (the overlay is back, the same pixels); a click then corrects
the mask, and Enter submits the object with the box and the click as its two inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data as samples

from services.common.masks import decode_rle
from services.gateway.client import GatewayClient
from tests.browser import chromium, log_in
from tests.conftest import wait_until
from tests.e2e.annot_platform import annot_up

pytestmark = pytest.mark.e2e

PHOTOS = {"coffee.png": samples.coffee(), "chelsea.png": samples.chelsea()}
# a box (x, y, width, height) around the main object of each photo: the cup with its handle, the cat's head
BOXES = {"coffee.png": (170, 15, 245, 285), "chelsea.png": (5, 5, 390, 290)}
ENTER = "\ue007"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with annot_up(tmp_path_factory.mktemp("platform"), ["cup", "cat"], PHOTOS) as running:
        yield running


class Page:
    """The web annotator in Chromium, logged in with the key."""

    def __init__(self, driver, url: str, key: str) -> None:
        self.driver = driver
        self.wait = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        log_in(driver, url + "/", key)
        driver.get(url + "/?project=web")

    def el(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def body(self, name: str) -> str | None:
        return self.driver.execute_script(f"return document.body.dataset.{name} || null")

    def key(self, keys: str) -> None:
        ActionChains(self.driver).send_keys(keys).perform()

    def canvas_rgb(self) -> np.ndarray:
        """What the person sees: the canvas's pixels (H, W, 3)."""
        canvas = self.el("canvas")
        flat = self.driver.execute_script(
            "const c = arguments[0]; return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);",
            canvas)
        height, width = int(canvas.get_attribute("height")), int(canvas.get_attribute("width"))
        return np.array(flat, np.int16).reshape(height, width, 4)[..., :3]

    def offset(self, x: float, y: float, image: dict) -> tuple[int, int]:
        """Image pixels -> the offset from the canvas's centre in CSS pixels (what ActionChains takes)."""
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", self.el("canvas"))
        return (round(x * rect["width"] / image["width"] - rect["width"] / 2),
                round(y * rect["height"] / image["height"] - rect["height"] / 2))

    def drag(self, box: tuple[int, int, int, int], image: dict) -> None:
        canvas = self.el("canvas")
        (x0, y0), (x1, y1) = self.offset(box[0], box[1], image), self.offset(box[0] + box[2], box[1] + box[3], image)
        chain = ActionChains(self.driver).move_to_element_with_offset(canvas, x0, y0).click_and_hold()
        for f in (0.25, 0.5, 0.75, 1.0):  # the box is drawn while dragging
            chain = chain.move_to_element_with_offset(canvas, round(x0 + f * (x1 - x0)), round(y0 + f * (y1 - y0)))
        chain.release().perform()

    def click(self, x: int, y: int, image: dict, negative: bool = False) -> None:
        canvas = self.el("canvas")
        dx, dy = self.offset(x, y, image)
        chain = ActionChains(self.driver).move_to_element_with_offset(canvas, dx, dy)
        (chain.context_click() if negative else chain.click()).perform()


def inside_box(box, shape) -> np.ndarray:
    x, y, w, h = box
    region = np.zeros(shape, bool)
    region[y:y + h, x:x + w] = True
    return region


OVERLAY, ALPHA = np.array([30, 144, 255]), 120 / 255  # the first object's colour in the annotator (PALETTE[0])


def tinted(seen: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Where the canvas shows the overlay blended over the photo (and so unlike the photo)."""
    blend = photo * (1 - ALPHA) + OVERLAY * ALPHA
    return (np.abs(seen - blend).max(-1) <= 6) & (np.abs(seen - photo.astype(np.int16)).max(-1) > 15)


def test_a_box_starts_the_object_undo_redo_cover_it_and_a_click_corrects_it(platform):
    url, key, images = platform["url"], platform["key"], platform["images"]
    with GatewayClient(url, key) as client:
        driver = chromium()
        try:
            page = Page(driver, url, key)
            # to a segmentation session: a proposal is answered "no" (its correction is a session); others skipped
            for _ in range(6):
                page.wait.until(lambda d: page.body("mode") not in (None, "idle"))
                mode = page.body("mode")
                if mode == "segment":
                    break
                previous = page.body("taskId")
                page.key("n" if mode == "verify" else "s")
                page.wait.until(lambda d, previous=previous: page.body("taskId") != previous or page.body("mode") == "segment")
            assert page.body("mode") == "segment"
            canvas = page.el("canvas")
            session_id = page.wait.until(lambda d: canvas.get_attribute("data-session-id"))
            task = client.request("GET", f"/v1/projects/web/tasks/{page.body('taskId')}")
            image = images[task["image_id"]]
            photo, box = PHOTOS[image["filename"]], BOXES[image["filename"]]
            shape = photo.shape[:2]
            before = page.canvas_rgb()

            # B arms the box tool (listed in the help overlay); the drag draws the box and gets the mask
            page.key("?")
            assert "box" in page.el("help").text.lower() and "B" in page.el("help").text
            page.key("?")
            page.key("b")
            assert page.el("box-tool").get_attribute("aria-pressed") == "true"
            page.drag(box, image)
            info = page.el("mask-info")
            page.wait.until(lambda d: info.get_attribute("data-clicks") == "1")
            assert page.el("error").text == ""
            assert page.el("box-tool").get_attribute("aria-pressed") == "false"  # one box, then clicks
            session = client.request("GET", f"/v1/projects/web/sessions/{session_id}")
            drawn = session["box"]  # the drag's box, to a pixel (the mouse moves in whole CSS pixels)
            assert np.abs(np.array([drawn["x"], drawn["y"], drawn["width"], drawn["height"]]) - box).max() <= 2
            boxed = decode_rle(session["mask"]["size"], session["mask"]["counts"], shape, "mask")
            region = inside_box([int(drawn[k]) for k in ("x", "y", "width", "height")], shape)
            assert boxed.sum() > 0.1 * region.sum() and not (boxed & ~region).any()  # the mask stays in the box
            seen_boxed = page.canvas_rgb()
            # inside the object (away from the mask's edge and the box's outline) the overlay tints the photo;
            # outside the box the photo is as it is
            core = ndimage.binary_erosion(boxed, iterations=6)
            assert core.sum() > 100
            assert tinted(seen_boxed, photo)[core].mean() > 0.9
            outline = ndimage.binary_dilation(region, iterations=8)
            assert np.abs(seen_boxed[~outline] - photo[~outline]).max() <= 3
            assert np.abs(seen_boxed[core] - before[core]).max() > 20  # the person sees the change

            # Z removes the box's step: the overlay goes; Y brings it back, the same pixels
            page.key("z")
            page.wait.until(lambda d: info.get_attribute("data-clicks") == "0")
            undone = client.request("GET", f"/v1/projects/web/sessions/{session_id}")
            assert undone["box"] is None and undone["clicks"] == [] and undone["redo_depth"] == 1
            assert np.abs(page.canvas_rgb() - before).max() <= 3
            page.key("y")
            page.wait.until(lambda d: info.get_attribute("data-clicks") == "1")
            wait_until(lambda: np.array_equal(page.canvas_rgb(), seen_boxed), 10, "the box's overlay redrawn")

            # a click corrects it: positive where the box's mask misses most inside the box, else negative
            missed = ndimage.distance_transform_edt(np.pad(region & ~boxed, 1))[1:-1, 1:-1]
            extra = ndimage.distance_transform_edt(np.pad(boxed, 1))[1:-1, 1:-1]
            positive = missed.max() >= extra.max()
            ys, xs = np.nonzero((missed if positive else extra) == (missed if positive else extra).max())
            cx, cy = int(xs[0]), int(ys[0])
            page.click(cx, cy, image, negative=not positive)
            page.wait.until(lambda d: info.get_attribute("data-clicks") == "2")
            session = client.request("GET", f"/v1/projects/web/sessions/{session_id}")
            corrected = decode_rle(session["mask"]["size"], session["mask"]["counts"], shape, "mask")
            changed = corrected != boxed
            assert changed.sum() > 50, "the click did not change the mask"
            seen = page.canvas_rgb()
            far = np.ones(shape, bool)
            far[max(0, cy - 12):cy + 12, max(0, cx - 12):cx + 12] = False  # the click's marker
            # what changed may be a thin band (GrabCut's own sampling varies): judged pixel by pixel, most of it
            now_in, now_out = changed & corrected & far, changed & ~corrected & far
            assert now_in.sum() + now_out.sum() > 20
            if now_in.sum() > 20:
                assert tinted(seen, photo)[now_in].mean() > 0.8
            if now_out.sum() > 20:
                assert (np.abs(seen[now_out] - photo[now_out]).max(axis=-1) <= 3).mean() > 0.8
            page.key(ENTER)
            page.wait.until(lambda d: page.body("lastSession") == session_id)
            kept = page.el("byproducts-info")
            page.wait.until(lambda d: int(kept.get_attribute("data-sent") or 0) > 3)
        finally:
            driver.quit()
        stored = client.annotation("web", session_id)
        assert stored["outcome"] == "submitted" and stored["click_count"] == 2
        stored_mask = decode_rle(stored["mask"]["size"], stored["mask"]["counts"], shape, "mask")
        assert (stored_mask == corrected).all()
        # the box is among the session's byproducts (the page logs it with its step)
        # as a box event of its own, not as a correction
        assert wait_until(lambda: re.search(rb'"box":\s*\{', client.export_byproducts("web")), 30,
                          "the box event in the byproducts")
        assert b"box x0=" not in client.export_byproducts("web")

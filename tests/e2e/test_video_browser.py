"""The video workflow a person uses, in headless Debian Chromium, on real servers (Redis, tritonserver, the
segmentation service, the video service and its Celery worker, the selection server, the gateway as a process):
open a video, click on the object in two frames (the image annotator's click session; the overlay tints the
clicked object), store them, propagate (the operation's progress reaches every frame), scrub with the slider to
frames no one annotated and see their propagated masks, see the suggested frames marked on the timeline, correct a
suggested frame (clicks start from its propagated mask), propagate again. Selection's pick among the frames (◆),
shown to the annotator (the gateway asks selection with its own service key), apart from the propagation's.
Asserted on the canvas's and the timeline's pixels and on what the gateway stored, not on text.
"""

from __future__ import annotations

import io
import shutil
import zipfile

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.video.tasks import VIDEO_QUEUE
from tests.browser import chromium, log_in
from tests.conftest import PYTHON, REPO, SHARED_DATA, start_gateway, start_service

pytestmark = pytest.mark.e2e

SEQUENCE = SHARED_DATA / "video" / "car-shadow"
FRAMES, SIZE = 6, (320, 180)  # a short slice, made small: (W, H)
SESSION, PROPAGATED = (30, 144, 255, 120), (255, 133, 27, 120)  # video.js's overlay colours
SUGGESTED, PICKED = (255, 220, 0), (225, 190, 231)  # video.css's timeline cells: the propagation's, selection's
ENTER, ESCAPE, HOME, END, RIGHT = "\ue007", "\ue00c", "\ue011", "\ue010", "\ue014"  # selenium's Keys
ARTIFACTS = REPO / "var" / "artifacts"


def davis(folder: str, flag: int) -> list[np.ndarray]:
    paths = sorted((SEQUENCE / folder).iterdir())[:FRAMES]
    if not paths:
        pytest.fail(f"{SEQUENCE} is missing: the video tests read the DAVIS sequences there")
    interpolation = cv2.INTER_AREA if flag == cv2.IMREAD_COLOR else cv2.INTER_NEAREST
    return [cv2.resize(cv2.imread(str(p), flag), SIZE, interpolation=interpolation) for p in paths]


def frames_zip() -> bytes:
    """PNG frames (lossless), so the canvas outside a mask is the frame's pixels exactly."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for t, frame in enumerate(davis("frames", cv2.IMREAD_COLOR)):
            archive.writestr(f"{t:03d}.png", cv2.imencode(".png", frame)[1].tobytes())
    return buffer.getvalue()


@pytest.fixture
def platform(settings, spawn, triton_server):
    settings = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                           "triton_http_port": triton_server.http_port})
    migrate(settings.resolved_database_url)
    start_service(spawn, "segmentation", settings)
    start_service(spawn, "video", settings)
    start_service(spawn, "selection", settings)  # the upload registers the frames in the project's pool
    spawn([PYTHON, "-m", "celery", "-A", "services.video.worker:app", "worker", "-Q", VIDEO_QUEUE,
           "-n", "video-browser@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    url = start_gateway(spawn, settings)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = store.create("admin", Role.ADMIN, ["*"])[1]
    annotator = store.create("annotator", Role.ANNOTATOR, ["cars"])[1]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    made = api.post("/v1/projects", json={"project_id": "cars", "labels": ["car"]})
    assert made.status_code == 201 and made.json()["selection"] == "ok", made.text
    reply = api.post("/v1/projects/cars/videos", files={"file": ("car-shadow.zip", frames_zip(), "application/zip")})
    assert reply.status_code == 201 and reply.json()["selection"] == "ok", reply.text
    yield {"url": url, "api": api, "key": annotator, "admin": admin, "video": reply.json()}
    api.close()


class Page:
    def __init__(self, driver, url: str, key: str) -> None:
        self.driver = driver
        self.wait = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        log_in(driver, url + "/video?project=cars", key)

    def el(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def data(self, element_id: str, name: str) -> str | None:
        return self.el(element_id).get_attribute(f"data-{name}")

    def key(self, keys: str) -> None:
        self.driver.execute_script("document.activeElement && document.activeElement.blur()")
        ActionChains(self.driver).send_keys(keys).perform()

    def on_frame(self, index: int, overlay: str) -> None:
        self.wait.until(lambda d: self.data("canvas", "frame") == str(index) and self.data("canvas", "overlay") == overlay)

    def pixel(self, x: int, y: int) -> np.ndarray:
        return np.array(self.driver.execute_script(
            "return Array.from(arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data);",
            self.el("canvas"), x, y)[:3], int)

    def click(self, x: float, y: float) -> None:
        canvas = self.el("canvas")
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", canvas)
        dx = x * rect["width"] / SIZE[0] - rect["width"] / 2
        dy = y * rect["height"] / SIZE[1] - rect["height"] / 2
        ActionChains(self.driver).move_to_element_with_offset(canvas, int(dx), int(dy)).click().perform()

    def cell_colour(self, index: int) -> np.ndarray:
        """What the timeline cell of frame ``index`` looks like: a pixel of its screenshot, off its ★."""
        cell = self.driver.find_element(By.CSS_SELECTOR, f"#timeline .cell[data-frame='{index}']")
        shot = np.asarray(Image.open(io.BytesIO(cell.screenshot_as_png)).convert("RGB"))
        return shot[4, 3].astype(int)


def blended(frame_rgb: np.ndarray, colour: tuple) -> np.ndarray:
    alpha = colour[3] / 255
    return frame_rgb * (1 - alpha) + np.array(colour[:3]) * alpha


def check_overlay(page: Page, frame_rgb: np.ndarray, mask: np.ndarray, colour: tuple, away: tuple | None = None):
    """The canvas shows ``mask`` tinted with ``colour`` over the frame: inside (off the click marker at ``away``),
    the pixel where the tint changes the frame most is the blend; outside, the frame as it is."""
    inside = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if away is not None:
        ys, xs = np.mgrid[:mask.shape[0], :mask.shape[1]]
        inside &= (xs - away[0]) ** 2 + (ys - away[1]) ** 2 >= 15 ** 2
    assert inside.any()
    change = np.abs(blended(frame_rgb, colour) - frame_rgb).max(axis=2)
    y, x = np.unravel_index(np.argmax(np.where(inside, change, -1)), mask.shape)
    pixel = page.pixel(int(x), int(y))
    assert change[y, x] > 20 and np.abs(pixel - blended(frame_rgb[y, x], colour)).max() <= 4, \
        (x, y, pixel, frame_rgb[y, x])
    outside = np.argwhere(~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool))
    for oy, ox in outside[:: max(1, len(outside) // 5)][:5]:
        assert np.abs(page.pixel(int(ox), int(oy)) - frame_rgb[oy, ox]).max() <= 3, (ox, oy)


def test_annotate_propagate_scrub_correct_propagate_again(platform, tmp_path):
    url, api, video = platform["url"], platform["api"], platform["video"]
    base = f"/v1/projects/cars/videos/{video['video_id']}"
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB).astype(int) for f in davis("frames", cv2.IMREAD_COLOR)]
    truth = [m > 0 for m in davis("masks", cv2.IMREAD_GRAYSCALE)]

    def on_car(t: int) -> tuple[float, float]:
        rows, cols = np.nonzero(cv2.erode(truth[t].astype(np.uint8), np.ones((9, 9), np.uint8)))
        i = np.argmin((cols - cols.mean()) ** 2 + (rows - rows.mean()) ** 2)
        return float(cols[i]), float(rows[i])

    def session_mask(session_id: str) -> np.ndarray:
        mask = api.get(f"/v1/projects/cars/sessions/{session_id}").json()["mask"]
        return decode_rle(mask["size"], mask["counts"], SIZE[::-1], "mask")

    def annotate(page: Page, t: int, undo_redo: bool = False) -> str:
        page.on_frame(t, "none")
        x, y = on_car(t)
        page.click(x, y)
        page.wait.until(lambda d: page.data("mask-info", "clicks") == "1")
        session_id = page.data("canvas", "session-id")
        if undo_redo:  # Z takes the click back (the frame shows no mask), Y puts it back
            page.key("z")
            page.wait.until(lambda d: page.data("mask-info", "clicks") == "0")
            page.on_frame(t, "none")
            page.key("y")
            page.wait.until(lambda d: page.data("mask-info", "clicks") == "1")
        mask = session_mask(session_id)
        assert mask[int(y), int(x)]
        check_overlay(page, frames[t], mask, SESSION, away=(x, y))  # the clicked object is tinted
        page.key(ENTER)  # stored as the frame's human sample
        page.wait.until(lambda d: page.driver.execute_script("return document.body.dataset.lastSession") == session_id)
        page.on_frame(t, "human")
        return session_id

    def propagated(operation_id: str) -> dict[int, dict]:
        frames_out = api.get(f"{base}/propagation/{operation_id}/masks").json()["frames"]
        return {f["frame_index"]: f for f in frames_out}

    driver = chromium(console_log=True)
    try:
        page = Page(driver, url, platform["key"])
        page.wait.until(lambda d: page.el("slider").get_attribute("max") == str(FRAMES - 1))
        page.on_frame(0, "none")
        # selection's pick is there for an annotator too (the gateway asks with its own service key)
        page.wait.until(lambda d: page.data("selection-info", "state") == "ok")
        assert not page.el("error").text
        page.key("p")  # nothing stored yet: the gateway refuses, and the page says why
        page.wait.until(lambda d: "Refused" in page.el("error").text and "samples" in page.el("error").text)

        first = annotate(page, 0, undo_redo=True)
        page.key(END)
        last = annotate(page, FRAMES - 1)
        assert api.get(base).json()["masked_frames"] == [0, FRAMES - 1]
        stored = {m["frame_index"]: m for m in api.get(f"{base}/masks").json()["masks"]}
        assert stored[0]["session_id"] == first and stored[FRAMES - 1]["session_id"] == last

        Select(page.el("method")).select_by_value("flowwarp")  # the quick method, for a test on CPUs
        page.key("p")
        page.wait.until(lambda d: page.data("propagation-info", "operation"))
        operation = page.data("propagation-info", "operation")
        WebDriverWait(driver, 240).until(lambda d: page.data("propagation-info", "state") in ("succeeded", "failed"))
        assert page.data("propagation-info", "state") == "succeeded", page.el("propagation-text").text
        assert page.data("propagation-info", "frames-done") == str(FRAMES)
        assert page.el("propagation-progress").get_attribute("value") == str(FRAMES)
        first_masks = propagated(operation)

        # scrub: the slider (dragged to its middle), then the arrow keys; frames no one annotated show their masks
        page.key(HOME)
        page.on_frame(0, "human")
        ActionChains(driver).click(page.el("slider")).perform()
        middle = int(page.el("slider").get_attribute("value"))
        assert 0 < middle < FRAMES - 1
        page.on_frame(middle, "propagated")
        for t in range(1, FRAMES - 1):
            page.key(HOME + RIGHT * t)
            page.on_frame(t, "propagated")
            mask = decode_rle(first_masks[t]["size"], first_masks[t]["counts"], SIZE[::-1], "mask")
            assert not first_masks[t]["human_annotated"] and mask.any()
            check_overlay(page, frames[t], mask, PROPAGATED)

        # the frames the video service suggests for the next round are marked on the timeline
        progress = api.get(f"{base}/propagation/{operation}").json()
        suggested = sorted({s["frame_index"] for s in progress["suggested_samples"]})
        assert suggested, progress
        assert sorted(int(t) for t in page.data("propagation-info", "suggested").split(",")) == suggested
        plain = next((t for t in range(FRAMES) if t not in suggested and t not in (0, FRAMES - 1)), None)
        for t in suggested:
            colour = page.cell_colour(t)
            assert np.abs(colour - SUGGESTED).max() <= 8, (t, colour)
            if plain is not None:
                assert np.abs(colour - page.cell_colour(plain)).max() > 40
        driver.save_screenshot(str(tmp_path / "video.png"))

        # correct a suggested frame: J jumps to it; the click session starts from its propagated mask
        target = next(t for t in suggested if t > 0)
        picked = {int(t) for t in (page.data("selection-info", "picked") or "").split(",") if t}
        marks = sorted((set(suggested) | picked) - {0})  # J walks through both kinds of mark
        page.key(HOME + "j" * (marks.index(target) + 1))
        page.on_frame(target, "propagated")
        x, y = on_car(target)
        page.click(x, y)
        page.wait.until(lambda d: page.data("mask-info", "clicks") == "1")
        corrected = page.data("canvas", "session-id")
        page.key(RIGHT)  # moving on would drop the clicks: refused, said, and the frame stays
        page.wait.until(lambda d: page.el("error").text.startswith("Refused"))
        assert page.data("canvas", "frame") == str(target)
        page.key(ENTER)
        page.on_frame(target, "human")
        stored = {m["frame_index"]: m for m in api.get(f"{base}/masks").json()["masks"]}
        assert sorted(stored) == sorted({0, target, FRAMES - 1}) and stored[target]["session_id"] == corrected
        assert stored[target]["clicks"] == 1

        # propagate again: a second operation, with the corrected frame among its human samples
        page.key("p")
        page.wait.until(lambda d: page.data("propagation-info", "operation") not in (None, "", operation))
        second = page.data("propagation-info", "operation")
        WebDriverWait(driver, 240).until(lambda d: page.data("propagation-info", "state") in ("succeeded", "failed"))
        assert page.data("propagation-info", "state") == "succeeded", page.el("propagation-text").text
        assert api.get(base).json()["propagations"] == [operation, second]
        second_masks = propagated(second)
        assert second_masks[target]["human_annotated"] and not first_masks[target]["human_annotated"]
        again = next(t for t in range(1, FRAMES - 1) if t != target)
        page.key(HOME + RIGHT * again)
        page.on_frame(again, "propagated")
        check_overlay(page, frames[again], decode_rle(second_masks[again]["size"], second_masks[again]["counts"],
                                                      SIZE[::-1], "mask"), PROPAGATED)

        # selection's pick (a uniform draw, no task model yet) marked ◆, apart from the ★; R asks again
        page.key("r")
        pick = api.get(f"{base}/selection", params={"count": 5}).json()
        picked = [f["frame_index"] for f in pick["frames"]]
        assert pick["strategy"] == "uniform" and picked, pick
        page.wait.until(lambda d: page.data("selection-info", "state") == "ok" and
                        page.data("selection-info", "picked") == ",".join(map(str, picked)))
        marked = driver.find_elements(By.CSS_SELECTOR, "#timeline .cell.picked")
        assert sorted(int(c.get_attribute("data-frame")) for c in marked) == sorted(picked)
        page.wait.until(lambda d: page.data("propagation-info", "state") == "succeeded")
        starred = {int(t) for t in (page.data("propagation-info", "suggested") or "").split(",") if t}
        for t in set(picked) - starred:
            assert np.abs(page.cell_colour(t) - PICKED).max() <= 8, (t, page.cell_colour(t))
        driver.save_screenshot(str(tmp_path / "video-selection.png"))
        page.key(HOME)
        page.on_frame(0, "human")
        page.key("j")  # J walks through both marks
        page.wait.until(lambda d: page.data("canvas", "frame") == str(min((set(picked) | starred) - {0})))

        page.key("?")
        assert page.el("help").is_displayed() and "Propagation" in page.el("help").text
        assert "selection" in page.el("help").text
        page.key(ESCAPE)
        assert not page.el("help").is_displayed()
        violations = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not violations, violations
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "video.png", ARTIFACTS / "video-e2e.png")
        shutil.copy(tmp_path / "video-selection.png", ARTIFACTS / "video-selection-e2e.png")
    finally:
        driver.quit()

"""The loop a person uses, end to end on the real platform (`annot up`: Redis, tritonserver, every
service and worker, the gateway): headless Debian Chromium opens the web annotator, clicks on the
cup of a real photo, sees the mask overlay, submits; the API shows the stored mask. Then
`annot demo --no-wait` walks its session on the same platform and stops everything."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from services.cli import local_platform
from services.common.masks import decode_rle
from services.common.settings import SERVICES, Settings
from services.gateway.client import GatewayClient, GatewayError
from tests.browser import chromium
from tests.conftest import (
    PYTHON,
    REPO,
    free_port,
    free_port_block,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

CUP = (300, 180)  # image pixels of a point on the cup in skimage's coffee (600 x 400)
ARTIFACTS = REPO / "var" / "artifacts"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def platform(tmp_path):
    settings = Settings(
        _env_file=None, env="test", var_dir=tmp_path / "var", redis_url=f"redis://127.0.0.1:{free_port()}/0",
        gateway_port=free_port(), metrics_port_base=free_port_block(), triton_http_port=free_port(),
        triton_grpc_url=f"127.0.0.1:{free_port()}", triton_metrics_port=free_port(),
        **{f"{name}_port": free_port() for name in SERVICES})
    env = {**os.environ, **settings_env(settings)}

    def annot(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "services.cli.main", *args], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    started = annot("up", "--timeout", "200")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield settings, annot
    finally:
        annot("down")
        assert local_platform.supervisor_pid(settings) is None


def test_annotate_in_the_browser_then_the_demo(platform, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    settings, annot = platform
    url = f"http://127.0.0.1:{settings.gateway_port}"
    key = (settings.var_dir / "admin.key").read_text().strip()
    with GatewayClient(url, key) as client:
        client.create_project("web", "Web test", ["cup", "plate"])
        (coffee,) = client.upload("web", [("coffee.png", png(samples.coffee()))])
        config = client.config()

    driver = chromium()
    try:
        driver.get(url + "/?project=web")
        wait = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        # log in once: the key is exchanged for an HttpOnly session cookie, the page keeps no key
        login = wait.until(lambda d: d.find_element(By.ID, "key-input") if d.find_element(By.ID, "key-input")
                           .is_displayed() else None)
        login.send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(lambda d: d.find_element(By.ID, "work").is_displayed())
        canvas = driver.find_element(By.ID, "canvas")
        wait.until(lambda d: canvas.get_attribute("data-session-id"))
        # the dialog's question, not the gateway's fallback (whose prompt is "Segment the main object...")
        assert "until the mask fits" in driver.find_element(By.ID, "prompt").text
        assert "no question from the dialog" not in driver.find_element(By.ID, "reason").text
        rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", canvas)
        dx = CUP[0] * rect["width"] / coffee["width"] - rect["width"] / 2
        dy = CUP[1] * rect["height"] / coffee["height"] - rect["height"] / 2
        ActionChains(driver).move_to_element_with_offset(canvas, int(dx) - 40, int(dy) - 30) \
            .move_to_element_with_offset(canvas, int(dx), int(dy)).click().perform()
        info = driver.find_element(By.ID, "mask-info")
        wait.until(lambda d: int(info.get_attribute("data-area") or 0) > 0)
        area = int(info.get_attribute("data-area"))
        # the overlay is drawn: the canvas pixel under the click is tinted blue, unlike the photo there
        pixel = driver.execute_script(
            "return Array.from(arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data);",
            canvas, CUP[0], CUP[1])
        original = samples.coffee()[CUP[1], CUP[0]]
        assert pixel[2] > original[2] and pixel[0] < original[0], (pixel, original)
        shot = tmp_path / "annotator.png"
        driver.save_screenshot(str(shot))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "annotator-e2e.png")
        session_id = canvas.get_attribute("data-session-id")
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.execute_script("return document.body.dataset.lastSession") == session_id)
        kept = driver.find_element(By.ID, "byproducts-info")
        wait.until(lambda d: int(kept.get_attribute("data-kept") or 0) + int(kept.get_attribute("data-sent") or 0) > 3)
        recorded = {name: int(kept.get_attribute(f"data-{name}") or 0) for name in ("kept", "sent")}
    finally:
        driver.quit()

    with GatewayClient(url, key) as client:
        stored = client.annotation("web", session_id)
        assert stored["outcome"] == "submitted" and stored["click_count"] == 1 and stored["area_px"] == area
        mask = decode_rle(stored["mask"]["size"], stored["mask"]["counts"], (400, 600), "mask")
        assert mask[CUP[1], CUP[0]]
        assert len(client.export_coco("web")["annotations"]) == 1
        if config["byproducts_ingest"]:  # the byproducts REST route has landed: the events are stored
            assert recorded["sent"] > 3
            lines = wait_until(lambda: client.export_byproducts("web").count(session_id.encode()), 30, "byproducts stored")
            assert lines > 0
        else:
            assert recorded["kept"] > 3
        try:  # quality: the review queue lists the session once the quality worker scored it
            wait_until(lambda: any(i["session_id"] == session_id for i in client.review("web")["items"]), 30,
                       "quality score of the session")
        except GatewayError as exc:
            assert exc.status == 503 and "quality" in exc.message  # the quality service has not landed

    demo = annot("demo", "--no-wait", timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for expected in ("question", "click +", "submitted as", "quality", "web annotator: http://"):
        assert expected in demo.stdout, demo.stdout
    assert local_platform.supervisor_pid(settings) is None  # the demo stopped what it (re)started
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=2)

"""The project data page a person uses, in headless Debian Chromium, on a real gateway process (Redis beside it; no
other service: the import and the exports need none, and the gateway tells selection best effort): an admin picks
a COCO JSON file with one RLE, one polygon and one box annotation on three uploaded images and imports it through
the page's file input; the page shows the gateway's report (annotations per kind, images matched) and the gateway's
export now holds those masks. Broken files (not JSON, a category that is no label, an image the project lacks) show
the gateway's own messages. The page's export buttons save real files into Chromium's download folder: the COCO JSON
with the imported masks and a zip with a PNG label map per annotated image. A reviewer's key may export, not import.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from tests.browser import chromium, log_in
from tests.conftest import REPO, start_gateway

pytestmark = pytest.mark.e2e

PROJECT, LABEL = "cups", "cup"
W, H = 64, 48
NAMES = ("rle.png", "polygon.png", "box.png")
ARTIFACTS = REPO / "var" / "artifacts"


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_masks() -> dict[str, np.ndarray]:
    """What each annotation of the COCO file covers, per file name."""
    disc = np.zeros((H, W), bool)
    ys, xs = np.mgrid[:H, :W]
    disc[(xs - 30) ** 2 + (ys - 20) ** 2 <= 12 ** 2] = True
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([POLYGON], H, W))).astype(bool)
    box = np.zeros((H, W), bool)
    box[8:8 + 20, 5:5 + 30] = True  # bbox [5, 8, 30, 20]
    return {"rle.png": disc, "polygon.png": polygon, "box.png": box}


POLYGON = [10.0, 5.0, 50.0, 8.0, 40.0, 40.0, 12.0, 30.0]


def coco_file() -> dict:
    masks = expected_masks()
    rle = mask_utils.encode(np.asfortranarray(masks["rle.png"].astype(np.uint8)))
    return {
        "images": [{"id": 10 + i, "file_name": name, "width": W, "height": H} for i, name in enumerate(NAMES)],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
            {"id": 2, "image_id": 11, "category_id": 7, "iscrowd": 0, "segmentation": [POLYGON]},
            {"id": 3, "image_id": 12, "category_id": 7, "iscrowd": 0, "bbox": [5, 8, 30, 20]},
        ],
        "categories": [{"id": 7, "name": LABEL}],
    }


@pytest.fixture
def platform(settings, spawn):
    migrate(settings.resolved_database_url)
    url = start_gateway(spawn, settings)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = store.create("admin", Role.ADMIN, ["*"])[1]
    reviewer = store.create("reviewer", Role.REVIEWER, [PROJECT])[1]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    assert api.post("/v1/projects", json={"project_id": PROJECT, "name": "Cups", "labels": [LABEL]}).status_code == 201
    reply = api.post(f"/v1/projects/{PROJECT}/images",
                     files=[("files", (name, png(i), "image/png")) for i, name in enumerate(NAMES)])
    assert reply.status_code == 201, reply.text
    images = {image["filename"]: image["image_id"] for image in reply.json()["images"]}
    yield {"url": url, "api": api, "admin": admin, "reviewer": reviewer, "images": images}
    api.close()


class Page:
    def __init__(self, driver, url: str, key: str) -> None:
        self.driver = driver
        self.wait = WebDriverWait(driver, 60,
                                  ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        log_in(driver, f"{url}/project?project={PROJECT}", key)
        self.wait.until(lambda d: self.el("image-count").get_attribute("data-count") != "")

    def el(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def result(self) -> dict[str, str]:
        names = ("state", "imported", "images", "rle", "polygon", "box", "unmatched")
        return {name: self.el("import-result").get_attribute(f"data-{name}") for name in names}

    def import_file(self, path: Path) -> dict[str, str]:
        """Picks ``path`` in the file input, clicks Import and waits for the gateway's answer."""
        self.el("import-file").send_keys(str(path))
        self.el("import").click()
        self.wait.until(lambda d: self.result()["state"] in ("done", "error"))
        return self.result()

    def export(self, button: str, folder: Path, name: str, key: str = "") -> Path:
        """Clicks an export button (or presses its ``key``); the file Chromium saved into ``folder``, once
        complete."""
        target = folder / name
        target.unlink(missing_ok=True)
        if key:
            ActionChains(self.driver).send_keys(key).perform()
        else:
            self.el(button).click()
        self.wait.until(lambda d: self.el("export-status").get_attribute("data-state") in ("done", "error"))
        assert self.el("export-status").get_attribute("data-state") == "done", self.el("export-error").text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if target.exists() and not list(folder.glob("*.crdownload")) and target.stat().st_size > 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"Chromium saved no {name} in {folder}: {sorted(p.name for p in folder.iterdir())}")
        assert int(self.el("export-status").get_attribute("data-bytes")) == target.stat().st_size
        return target


def allow_downloads(driver, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})


def masks_of(coco: dict, filenames: dict[int, str]) -> dict[str, np.ndarray]:
    out = {}
    for annotation in coco["annotations"]:
        segmentation = annotation["segmentation"]
        name = filenames[annotation["image_id"]]
        assert name not in out, f"two annotations on {name}"
        out[name] = decode_rle(segmentation["size"], segmentation["counts"], (H, W), "mask")
    return out


def test_import_coco_and_export_from_the_project_page(platform, tmp_path):
    url, api, images = platform["url"], platform["api"], platform["images"]
    expected = expected_masks()
    good = tmp_path / "existing.json"
    good.write_text(json.dumps(coco_file()))
    not_json = tmp_path / "broken.json"
    not_json.write_text("{this is not JSON")
    wrong_label = tmp_path / "wrong-label.json"
    wrong_label.write_text(json.dumps({**coco_file(), "categories": [{"id": 7, "name": "teapot"}]}))
    unknown_image = tmp_path / "elsewhere.json"
    unknown_image.write_text(json.dumps({"images": [{"id": 1, "file_name": "nowhere.png", "width": W, "height": H}],
                                         "annotations": [{"id": 1, "image_id": 1, "category_id": 7,
                                                          "bbox": [1, 1, 5, 5]}],
                                         "categories": [{"id": 7, "name": LABEL}]}))
    downloads = tmp_path / "downloads"

    def gateway_says(path: Path) -> str:
        """The message the gateway gives for this file posted as it is (the page must show the same)."""
        reply = api.post(f"/v1/projects/{PROJECT}/imports/coco", content=path.read_bytes(),
                         headers={"Content-Type": "application/json"})
        assert reply.status_code == 422, reply.text
        return reply.json()["error"]["message"]

    driver = chromium(console_log=True)
    try:
        allow_downloads(driver, downloads)
        page = Page(driver, url, platform["admin"])
        assert page.el("image-count").get_attribute("data-count") == "3"
        assert page.el("labels").text.split("\n") == [LABEL]
        assert api.get(f"/v1/projects/{PROJECT}/exports/coco").json()["annotations"] == []

        # a file that is not JSON: the gateway's refusal, as it words it
        result = page.import_file(not_json)
        assert result["state"] == "error" and result["imported"] == ""
        error = page.el("import-error").text
        assert gateway_says(not_json) in error and "Refused, invalid input" in error, error
        # a category that is no label of the project: refused, naming the annotation
        result = page.import_file(wrong_label)
        error = page.el("import-error").text
        assert result["state"] == "error" and gateway_says(wrong_label) in error and "annotations[0]" in error, error
        assert api.get(f"/v1/projects/{PROJECT}/exports/coco").json()["annotations"] == []  # nothing half-imported

        # an image the project does not have: nothing imported, and the page names it
        result = page.import_file(unknown_image)
        assert result == {"state": "done", "imported": "0", "images": "0", "rle": "0", "polygon": "0", "box": "0",
                          "unmatched": "1"}, result
        details = page.el("import-details").text
        assert "nowhere.png" in details and "not in this project" in details, details
        assert "Nothing was imported" in page.el("import-status").text

        # the existing COCO file: one RLE, one polygon, one box
        result = page.import_file(good)
        assert result == {"state": "done", "imported": "3", "images": "3", "rle": "1", "polygon": "1", "box": "1",
                          "unmatched": "0"}, result
        status, details = page.el("import-status").text, page.el("import-details").text
        assert "Imported 3 annotations" in status and "onto 3 images" in status, status
        assert "1 RLE, 1 polygon, 1 box" in details, details
        exported = api.get(f"/v1/projects/{PROJECT}/exports/coco").json()
        filenames = {image["id"]: image["file_name"] for image in exported["images"]}
        stored = masks_of(exported, filenames)
        assert sorted(stored) == sorted(NAMES)
        for name in NAMES:
            assert np.array_equal(stored[name], expected[name]), name
        assert {c["name"] for c in exported["categories"]} == {LABEL}

        # the page's exports: real files in Chromium's download folder
        coco_path = page.export("export-coco", downloads, f"{PROJECT}-coco.json")
        downloaded = json.loads(coco_path.read_text())
        assert downloaded["annotations"] == exported["annotations"]
        downloaded_masks = masks_of(downloaded, {i["id"]: i["file_name"] for i in downloaded["images"]})
        for name in NAMES:
            assert np.array_equal(downloaded_masks[name], expected[name]), name

        page.driver.execute_script("document.activeElement && document.activeElement.blur()")
        ActionChains(page.driver).send_keys("?").perform()  # the keys are listed
        assert page.el("help").is_displayed() and "PNG masks" in page.el("help").text
        ActionChains(page.driver).send_keys("\ue00c").perform()  # Escape
        assert not page.el("help").is_displayed()
        zip_path = page.export("export-masks", downloads, f"{PROJECT}-masks.zip", key="m")  # by its key
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            category = {c["name"]: c["id"] for c in json.loads(archive.read("coco.json"))["categories"]}[LABEL]
            pngs = [n for n in names if n.startswith("masks/") and n.endswith(".png")]
            assert len(pngs) == 3, names
            for name in NAMES:
                entry = f"masks/{name.rsplit('.', 1)[0]}_{images[name]}.png"
                assert entry in pngs, (entry, pngs)
                label_map = np.asarray(Image.open(io.BytesIO(archive.read(entry))))
                assert label_map.shape == (H, W)
                assert np.array_equal(label_map == category, expected[name]), name
                assert set(np.unique(label_map)) <= {0, category}

        # importing the same file again changes nothing (the route is idempotent)
        page.import_file(good)
        assert page.result()["imported"] == "3"
        assert len(api.get(f"/v1/projects/{PROJECT}/exports/coco").json()["annotations"]) == 3

        driver.save_screenshot(str(tmp_path / "project.png"))
        violations = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not violations, violations

        # a reviewer's key: export yes, import no (the page says so and offers no import)
        driver.delete_all_cookies()
        page = Page(driver, url, platform["reviewer"])
        assert not page.el("import").is_enabled()
        assert "admin" in page.el("import-access").text, page.el("import-access").text
        assert page.el("export-coco").is_enabled() and page.el("export-access").text == ""
        coco_path = page.export("export-coco", downloads, f"{PROJECT}-coco.json")
        assert len(json.loads(coco_path.read_text())["annotations"]) == 3
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "project.png", ARTIFACTS / "project-e2e.png")
    finally:
        driver.quit()

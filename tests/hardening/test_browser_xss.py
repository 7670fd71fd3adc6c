"""Issue 19, item 1, in a real browser (headless Debian Chromium) against the real gateway app on loopback.

A project admin names a project and its labels with HTML that would run a script; the global admin logs in
and opens the annotator and the review page. The names render literally as text and no script runs; the
key is nowhere a script can read (HttpOnly cookie, nothing in storage or in the page); even HTML injected
into the page by a script cannot run an inline handler (the Content-Security-Policy). The page's own
state-changing requests (questions/next, logout) go through with the cookie and the CSRF token, and it says
how many images other annotators' leases hold (item 5).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from services.common.keys import Role
from services.gateway.app import create_app
from services.simulation.stack import free_port
from tests.browser import chromium
from tests.hardening.conftest import bearer, gateway_settings

pytestmark = pytest.mark.e2e

TITLE = "Annotator · annotation platform"
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">"
HOSTILE_LABEL = "<svg onload=\"document.title='pwned-label'\"></svg>"
HOSTILE_KEY_NAME = "<b onmouseover=alert(1)>admin</b>"


@pytest.fixture(scope="module")
def gateway(platform):
    """The gateway app served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(platform.settings, gateway_settings()), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "gateway did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _png() -> bytes:
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile(gateway, platform):
    """Project 'xss' made by an admin scoped to it alone, with hostile name and labels; project 'busy' whose
    one image another annotator holds. Returns the global admin key (the victim's)."""
    project_admin = platform.store.create(HOSTILE_KEY_NAME, Role.ADMIN, ["xss", "busy"])[1]
    with httpx.Client(base_url=gateway, headers=bearer(project_admin), timeout=30) as api:
        made = api.post("/v1/projects", json={"project_id": "xss", "name": HOSTILE_NAME,
                                              "labels": [HOSTILE_LABEL, "cup"]})
        assert made.status_code == 201, made.text
        assert made.json()["name"] == HOSTILE_NAME  # stored as given: it is text, rendered as text
        assert api.post("/v1/projects", json={"project_id": "busy", "name": "busy"}).status_code == 201
        assert api.post("/v1/projects/busy/images", files=[("files", ("a.png", _png(), "image/png"))]).status_code == 201
        holder = platform.store.create("holder", Role.ANNOTATOR, ["busy"])[1]
        held = api.post("/v1/projects/busy/questions/next", headers=bearer(holder)).json()
        assert held["exhausted"] is False
    return platform.keys["admin"]


@pytest.fixture(scope="module")
def driver():
    chrome = chromium(console_log=True)
    yield chrome
    chrome.quit()


def waiter(driver):
    """A wait that outlives the page's reload after login (elements of the old page go stale)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def log_in(driver, gateway: str, key: str, page: str = "/?project=xss") -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.get(gateway + page)
    wait = waiter(driver)
    field = wait.until(lambda d: d.find_element(By.ID, "key-input") if d.find_element(By.ID, "key-input").is_displayed()
                       else None)
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(lambda d: d.find_element(By.ID, "work").is_displayed())


def test_hostile_names_render_as_text_and_no_script_runs(driver, gateway, hostile):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    key = hostile
    log_in(driver, gateway, key)
    wait = waiter(driver)
    wait.until(lambda d: "Nothing" in d.find_element(By.ID, "prompt").text)  # questions/next: cookie + CSRF token
    time.sleep(0.5)  # what an injected handler would have done has had its chance
    assert driver.title == TITLE
    options = driver.execute_script(
        "return Array.from(document.querySelectorAll('#project option, #label option'), o => o.textContent)")
    assert HOSTILE_NAME in options and f"1. {HOSTILE_LABEL}" in options, options
    assert driver.find_element(By.ID, "project").get_attribute("value") == "xss"
    assert driver.execute_script("return document.querySelectorAll('img, svg, b').length") == 0
    assert driver.find_element(By.ID, "prompt").text == "Nothing left to annotate in this project."

    driver.get(gateway + "/review?project=xss")  # the reviewer page renders the same names
    wait.until(lambda d: d.execute_script("return document.querySelectorAll('#project option').length") > 0)
    wait.until(lambda d: d.find_element(By.ID, "error").text)  # the review queue's 503: quality not running
    time.sleep(0.5)
    assert driver.title.startswith("Review queue") and "pwned" not in driver.title
    assert HOSTILE_NAME in driver.execute_script(
        "return Array.from(document.querySelectorAll('#project option'), o => o.textContent)")
    assert driver.execute_script("return document.querySelectorAll('img, svg, b').length") == 0


def test_no_script_can_read_the_key_and_the_csp_stops_injected_html(driver, gateway, hostile):
    key = hostile
    driver.get(gateway + "/?project=xss")
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    waiter(driver).until(lambda d: d.find_element(By.ID, "work").is_displayed())
    # the browser holds the session as an HttpOnly, SameSite=Strict cookie ...
    (cookie,) = [c for c in driver.get_cookies() if c["name"] == "annot_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert key not in cookie["value"]
    # ... which no script can read; and nothing a script can read holds the key
    seen = driver.execute_script("""
        const storage = (s) => Array.from({length: s.length}, (_, i) => s.key(i) + '=' + s.getItem(s.key(i))).join(';');
        return {cookie: document.cookie, local: storage(localStorage), session: storage(sessionStorage),
                html: document.documentElement.outerHTML};""")
    assert "annot_session" not in seen["cookie"]
    for where, text in seen.items():
        assert key not in text and key.split(".")[1] not in text, where
    # a script running in the page (as an XSS would) can use the session, but not take the key away
    answers = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(['/v1/whoami', '/v1/keys'].map((u) => fetch(u).then((r) => r.text()))).then(done);""")
    assert all(key not in a and key.split(".")[1] not in a for a in answers), answers
    # HTML injected by a script cannot run inline handlers or inline scripts: the CSP refuses them
    driver.execute_script("""
        document.body.insertAdjacentHTML('beforeend', '<img id="probe" src="x" onerror="document.title=\\'pwned\\'">');
        const s = document.createElement('script'); s.textContent = "document.title = 'pwned-inline'";
        document.body.appendChild(s);""")
    time.sleep(1)
    assert driver.title == TITLE
    violations = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert violations, "the CSP did not report the blocked inline handler"


def test_the_page_says_how_many_images_others_hold_and_logs_out(driver, gateway, hostile):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    wait = waiter(driver)
    driver.get(gateway + "/?project=busy")
    wait.until(lambda d: d.find_element(By.ID, "held").get_attribute("data-held") == "1")
    assert "1 image is held by other annotators" in driver.find_element(By.ID, "prompt").text
    assert "1 image held by others" in driver.find_element(By.ID, "held").text

    driver.find_element(By.ID, "logout").click()
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert not [c for c in driver.get_cookies() if c["name"] == "annot_session"]
    assert driver.title == TITLE

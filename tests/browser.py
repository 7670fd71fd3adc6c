"""Headless Debian Chromium driven through Selenium, for the tests that look at the web annotator."""

from __future__ import annotations

import os

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium(console_log: bool = False):
    """A new headless Chromium; ``console_log`` keeps the page's console (CSP reports among it)."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium missing: run `make browser-deps` (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1000"):
        options.add_argument(arg)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(driver, url: str, key: str) -> None:
    """Opens ``url`` (a page with the login form) and logs in with the API key: the key is exchanged for an
    HttpOnly session cookie, the page keeps no key; returns once the work area shows."""
    from selenium.common.exceptions import NoSuchElementException, WebDriverException  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    driver.get(url)
    # while the page loads, Chromium may answer for a node the page has just replaced (an inspector error)
    loading = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, WebDriverException))
    field = loading.until(lambda d: (found := d.find_element(By.ID, "key-input")).is_displayed() and found)
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    loading.until(lambda d: d.find_element(By.ID, "work").is_displayed())

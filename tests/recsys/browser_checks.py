"""Headless chromium for tests: found or skipped (failed under ``MECHREC_REQUIRE_BROWSER=1``).

Needs ``pip install selenium`` and chromium + chromedriver (Debian: ``apt-get install chromium
chromium-driver``); ``MECHREC_CHROMIUM`` / ``MECHREC_CHROMEDRIVER`` point at other binaries.
The browser runs with ``--no-sandbox --disable-gpu --disable-background-networking``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("MECHREC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MECHREC_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = ("install them with 'pip install selenium' and 'apt-get install chromium "
                "chromium-driver' (or point MECHREC_CHROMIUM / MECHREC_CHROMEDRIVER at the "
                "binaries)")


def missing_browser() -> str | None:
    """What is missing to drive a browser, or ``None``."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found"
    return None


def require_browser() -> None:
    """Skip the test without a browser (fail it when ``MECHREC_REQUIRE_BROWSER=1``)."""
    missing = missing_browser()
    if missing is None:
        return
    message = f"browser tests need selenium, chromium and chromedriver: {missing}; {INSTALL_HINT}"
    if os.environ.get("MECHREC_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1200) -> Iterator[Any]:
    """A selenium driver of headless chromium that keeps the page's console log."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()

"""The equalizer page in a real browser: headless Debian chromium driven by selenium.

A person's actions are replayed (typing a user id, moving a slider with the mouse-free
equivalents: setting its value and firing ``input``/``change``, or pressing arrow keys;
switching the method; pressing reset) and what the page shows is compared with the API's
answer for the same request.

Needs ``pip install selenium`` and chromium + chromedriver (Debian: ``apt-get install chromium
chromium-driver``). Without them the tests are skipped, unless ``MECHREC_REQUIRE_BROWSER=1``
(as in CI), where they fail.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from browser_checks import headless_chromium
from mechrec_recsys.equalizer import EqualizerSession, serve_in_background
from mechrec_recsys.experiment import Experiment

from mechrec.saes import NormalizedSAE

WAIT_SECONDS = 30
GENRE = "Comedy"  # a genre whose SAE feature moves lists on the session's small model


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def base_url(paper_experiment: Experiment, paper_sae: NormalizedSAE) -> Iterator[str]:
    with serve_in_background(EqualizerSession(paper_experiment, paper_sae), "127.0.0.1") as url:
        yield url


def api(base_url: str, **body: Any) -> dict[str, Any]:
    """The API's answer, fetched outside the browser."""
    req = urllib.request.Request(f"{base_url}/api/recommend", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def shown(driver: Any, list_id: str) -> list[int]:
    items = driver.find_elements("css selector", f"#{list_id} li")
    return [int(item.get_attribute("data-item-id")) for item in items]


def wait_rendered(driver: Any, *, user: Any, values: dict[str, float], method: str) -> None:
    """Wait until the page shows the lists of exactly this request and is idle."""
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d: Any) -> bool:
        rendered = d.execute_script("return document.body.dataset.rendered || null")
        if d.execute_script("return document.body.dataset.state") != "ready" or not rendered:
            return False
        body = json.loads(rendered)
        return (str(body["user"]) == str(user) and body["values"] == values
                and body["method"] == method)

    WebDriverWait(driver, WAIT_SECONDS).until(done)


def move_slider(driver: Any, genre: str, value: float) -> None:
    """Set a slider's value and fire the events a drag fires."""
    driver.execute_script(
        "const s = document.querySelector(`input.slider[data-genre=\"${arguments[0]}\"]`);"
        "s.value = String(arguments[1]);"
        "s.dispatchEvent(new Event('input', {bubbles: true}));"
        "s.dispatchEvent(new Event('change', {bubbles: true}));", genre, value)


def test_sliders_move_the_steered_list_like_the_api_says(driver: Any, base_url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    meta = json.loads(urllib.request.urlopen(f"{base_url}/api/meta", timeout=30).read())
    driver.get(base_url + "/")
    first = meta["users"]["examples"][0]
    wait_rendered(driver, user=first, values={}, method="sae")
    genres = [e.get_attribute("data-genre")
              for e in driver.find_elements(By.CSS_SELECTOR, "input.slider")]
    assert genres == [g["genre"] for g in meta["genres"]]
    unsteered = api(base_url, user=first, values={})
    assert shown(driver, "original-list") == [i["item_id"] for i in unsteered["original"]]
    assert shown(driver, "steered-list") == shown(driver, "original-list")

    # a user whose list the genre's slider changes, picked through the API
    user = next(u for u in meta["users"]["examples"]
                if api(base_url, user=u, values={GENRE: 10})["changed"])
    box = driver.find_element(By.ID, "user-input")
    box.clear()
    box.send_keys(str(user), Keys.ENTER)
    wait_rendered(driver, user=user, values={}, method="sae")
    original = [i["item_id"] for i in api(base_url, user=user, values={})["original"]]
    assert shown(driver, "original-list") == original == shown(driver, "steered-list")

    # move the slider: the steered list becomes the API's answer, the original stays
    move_slider(driver, GENRE, 10)
    wait_rendered(driver, user=user, values={GENRE: 10}, method="sae")
    expected = api(base_url, user=user, values={GENRE: 10})
    assert shown(driver, "steered-list") == [i["item_id"] for i in expected["steered"]]
    assert shown(driver, "steered-list") != original
    assert shown(driver, "original-list") == original
    new = [int(e.get_attribute("data-item-id"))
           for e in driver.find_elements(By.CSS_SELECTOR, "#steered-list li.new")]
    assert new == expected["entered"]
    row = driver.find_element(By.CSS_SELECTOR, f'.share-row[data-genre="{GENRE}"]')
    assert float(row.get_attribute("data-steered")) == pytest.approx(
        expected["shares"]["steered"][GENRE])
    assert float(row.get_attribute("data-original")) == pytest.approx(
        expected["shares"]["original"][GENRE])
    tags = driver.find_elements(By.CSS_SELECTOR, "#steered-list li:first-child .tag")
    assert [t.text for t in tags] == expected["steered"][0]["genres"]

    # the method toggle: same sliders, probe directions
    driver.find_element(By.ID, "method-probe").click()
    wait_rendered(driver, user=user, values={GENRE: 10}, method="probe")
    probe = api(base_url, user=user, values={GENRE: 10}, method="probe")
    assert shown(driver, "steered-list") == [i["item_id"] for i in probe["steered"]]
    driver.find_element(By.ID, "method-sae").click()
    wait_rendered(driver, user=user, values={GENRE: 10}, method="sae")

    # reset restores the original list and every slider
    driver.find_element(By.ID, "reset").click()
    wait_rendered(driver, user=user, values={}, method="sae")
    assert shown(driver, "steered-list") == original
    assert driver.find_elements(By.CSS_SELECTOR, "#steered-list li.new") == []
    values = driver.execute_script(
        "return [...document.querySelectorAll('input.slider')].map(s => Number(s.value))")
    assert values == [0] * len(genres)

    # the keyboard moves a slider too: two steps up
    slider = driver.find_element(By.CSS_SELECTOR, f'input.slider[data-genre="{GENRE}"]')
    slider.send_keys(Keys.ARROW_UP, Keys.ARROW_UP)
    step = meta["range"]["step"]
    wait_rendered(driver, user=user, values={GENRE: 2 * step}, method="sae")
    keyed = api(base_url, user=user, values={GENRE: 2 * step})
    assert shown(driver, "steered-list") == [i["item_id"] for i in keyed["steered"]]


def test_an_unknown_user_shows_the_servers_message(driver: Any, base_url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/")
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.state") == "ready")
    box = driver.find_element(By.ID, "user-input")
    box.clear()
    box.send_keys("no-such-user", Keys.ENTER)
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.state") == "error")
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and "unknown user 'no-such-user'" in error.text

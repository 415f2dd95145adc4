"""The report in a real headless Chromium: the slider moves through the recursion and the grid follows the data.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and the `browser`
extra (selenium, pillow); without them the test skips and says which one is missing.
"""

import io
import json
import shutil
import tempfile
from html.parser import HTMLParser

import pytest

from recur.report import build
from recur.report.collect import ALPHABET

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1600"]


def _browser_parts():
    """(chromium, chromedriver) paths, or a pytest skip naming what is missing."""
    pytest.importorskip("selenium", reason="the browser test needs selenium: pip install 'recur[test]'")
    pytest.importorskip("PIL", reason="the browser test needs pillow: pip install 'recur[test]'")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver")
    return chromium, driver


@pytest.fixture
def browser():
    chromium, driver_path = _browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="recur-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # a given driver: nothing is downloaded
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class _Data(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.inside, self.text = False, ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.inside = tag == "script" and dict(attrs).get("id") == "recur-data"

    def handle_data(self, data):
        if self.inside:
            self.text += data

    def handle_endtag(self, tag):
        self.inside = False


def test_slider_steps_through_the_recursion(browser, micro_run, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, _ = build([micro_run], tmp_path / "report.html", sample=8, device="cpu")
    data = json.loads(_Data(path.read_text()).text)  # what the page embeds
    puzzle = data["runs"][0]["sample"]["puzzles"][0]
    rows = [[ALPHABET.index(c) for c in row] for row in [puzzle["input"]] + puzzle["trace"]]
    # the last point at which some cell changes, and that cell (a late point catches an off-by-one in the page)
    v, pos = max((v, k) for v in range(1, len(rows)) for k in range(len(rows[v])) if rows[v][k] != rows[v - 1][k])

    browser.get(path.as_uri())
    slider = browser.find_element(By.ID, "slider")
    assert int(slider.get_attribute("max")) == len(puzzle["trace"])
    cell = lambda: browser.find_element(By.CSS_SELECTOR, f"#grid-answer td[data-pos='{pos}']")  # noqa: E731
    assert int(cell().get_attribute("data-token")) == rows[0][pos]
    slider.click()  # focus; a click may also move it, so go back to the start with Home
    slider.send_keys(Keys.HOME)
    for _ in range(v):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert slider.get_attribute("value") == str(v)
    shown = cell()
    assert int(shown.get_attribute("data-token")) == rows[v][pos]
    assert shown.text == (str(rows[v][pos] - 1) if rows[v][pos] >= 2 else "")  # Sudoku: token d+1 shows d
    assert "changed" in shown.get_attribute("class").split()
    wrong = puzzle["label"][pos] != puzzle["trace"][v - 1][pos]
    assert ("wrong" in shown.get_attribute("class").split()) == wrong
    assert f"point {v} of {len(puzzle['trace'])}" in browser.find_element(By.ID, "point-label").text

    browser.find_element(By.TAG_NAME, "h1").click()  # arrow keys on the page step too
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    assert slider.get_attribute("value") == str(v - 1)
    assert int(cell().get_attribute("data-token")) == rows[v - 1][pos]

    assert len(browser.find_elements(By.CSS_SELECTOR, "#curves svg")) == 5  # every training curve was drawn
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert len(shot.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 16  # not a blank page
    grid = browser.find_element(By.ID, "grid-answer")
    grid.screenshot(str(tmp_path / "grid.png"))
    assert len(Image.open(tmp_path / "grid.png").convert("RGB").getcolors(maxcolors=1 << 16)) > 2

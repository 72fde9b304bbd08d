"""The inspection page in a real headless browser: Debian's Chromium driven by Selenium against
the server run by uvicorn on a free localhost port. Uploading the bottle test image with a large
defect shows "anomalous", the overlay and a row in the history table; a good image then shows
"normal" above it, and a text file an error while the page goes on working.

Skipped, with the reason, where selenium, chromium or chromedriver is missing (`make test`
installs the Debian packages when it runs as root with apt-get). Selenium is given both paths,
so it never downloads a driver. ``DISTILAD_SERVE_SCREENSHOT=path.png`` keeps a screenshot of
the page after the first upload.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install -e '.[serve]')")
pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_serve import DEFECT, GOOD, fit_tiny_rd  # noqa: E402

from distilad.serve import create_app  # noqa: E402
from distilad.serve.server import BackgroundServer  # noqa: E402

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = ("chromedriver",)
WAIT_S = 15


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file()
                                       else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> webdriver.Chrome:
    chromium, driver = _find(CHROMIUM), _find(CHROMEDRIVER)
    if chromium is None or driver is None:
        pytest.skip("no headless browser: chromium and chromedriver are not installed (Debian: "
                    "apt-get install chromium chromium-driver; `make test` does it as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    b = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield b
    b.quit()


def _wait_text(browser: webdriver.Chrome, element_id: str, predicate) -> str:  # noqa: ANN001
    WebDriverWait(browser, WAIT_S).until(
        lambda b: predicate(b.find_element(By.ID, element_id).text))
    return browser.find_element(By.ID, element_id).text


def _history(browser: webdriver.Chrome) -> list[list[str]]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def test_page_flags_the_defect_and_shows_the_overlay(
        browser: webdriver.Chrome, _tiny_mvtec_master: Path, bottle_dir: Path,
        tmp_path: Path) -> None:
    det = fit_tiny_rd(_tiny_mvtec_master, bottle_dir)
    with BackgroundServer(create_app(det)) as server:
        browser.get(server.url + "/")
        model_line = _wait_text(browser, "model", lambda t: t.startswith("model: "))
        assert "rd" in model_line and f"{det.threshold:.4g}" in model_line

        upload = browser.find_element(By.ID, "file")
        upload.send_keys(str(bottle_dir / DEFECT))
        label = _wait_text(browser, "label", lambda t: t in ("anomalous", "normal"))
        assert label == "anomalous"
        overlay = browser.find_element(By.ID, "overlay")
        WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert overlay.is_displayed()
        assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 2 * 256 + 4
        assert "> threshold" in browser.find_element(By.ID, "score").text
        rows = _history(browser)
        assert len(rows) == 1 and rows[0][1] == "000.jpg" and rows[0][4] == "anomalous"
        shot = Path(os.environ.get("DISTILAD_SERVE_SCREENSHOT") or tmp_path / "page.png")
        assert browser.save_screenshot(str(shot))

        upload.send_keys(str(bottle_dir / GOOD))
        WebDriverWait(browser, WAIT_S).until(lambda b: len(_history(b)) == 2)
        assert browser.find_element(By.ID, "label").text == "normal"
        assert [r[4] for r in _history(browser)] == ["normal", "anomalous"]

        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        upload.send_keys(str(notes))
        error = _wait_text(browser, "error", lambda t: "notes.txt:" in t and "scoring" not in t)
        assert "not an image" in error
        assert len(_history(browser)) == 2  # a refused upload adds no row

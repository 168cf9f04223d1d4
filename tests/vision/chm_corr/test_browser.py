"""The page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via selenium.

Set ``CHM_CORR_SCREENSHOT=path.png`` to keep a screenshot of the page after the clicks.
"""
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("headless browser test needs Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
uvicorn = pytest.importorskip("uvicorn")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from vision.chm_corr.app import create_app  # noqa: E402
from vision.chm_corr.sessionlog import read_log  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("logs"), seed=0, queries=20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1250,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def _shown(driver):
    label = driver.find_element(By.ID, "prediction").get_attribute("data-label")
    items = [int(li.get_attribute("data-index")) for li in driver.find_elements(By.CSS_SELECTOR, "#exemplars li")]
    return label, items


def test_clicks_rerank_as_the_model_says_and_reach_the_log(server, browser):
    app, url = server
    study = app.state.study
    state = study.state(0)
    fg = study.test.foreground[study.order[0]]
    browser.get(url + "/?session=browser-test")
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))   # lists redraw
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    default = state.predict(state.default_mask())
    expected = (str(default.label), [int(i) for i in default.ranking[:5]])
    wait.until(lambda d: _shown(d) == expected)
    cells = browser.find_elements(By.CSS_SELECTOR, "#query-grid .cell")
    assert len(cells) == 49
    assert sum("on" in c.get_attribute("class") for c in cells) == int(state.default_mask().sum())

    browser.find_element(By.ID, "clear").click()
    mask = np.zeros(49, dtype=bool)
    for cell in np.flatnonzero(fg):                       # select the bird, one click per cell
        cells[cell].click()
        mask[cell] = True
        want = state.predict(mask)
        expected = (str(want.label), [int(i) for i in want.ranking[:5]])
        wait.until(lambda d: _shown(d) == expected)
    final = state.predict(fg)
    assert final.label != default.label                   # query 0: the bird fixes the background's mistake
    assert final.label == study.test.labels[study.order[0]]
    assert "on" in cells[int(np.flatnonzero(fg)[0])].get_attribute("class")
    if os.environ.get("CHM_CORR_SCREENSHOT"):
        browser.save_screenshot(os.environ["CHM_CORR_SCREENSHOT"])

    browser.find_element(By.ID, "accept").click()
    wait.until(lambda d: d.find_element(By.ID, "progress").text.startswith("2 /"))
    events = read_log(app.state.log_dir / "browser-test.jsonl")
    clicks = [e for e in events if e["event"] == "click"]
    assert [e["cell"] for e in clicks] == [None] + [int(c) for c in np.flatnonzero(fg)]
    assert clicks[-1]["prediction"] == final.label and clicks[-1]["mask"] == fg.astype(int).tolist()
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(decisions) == 1 and decisions[0]["accept"] is True and decisions[0]["ai_label"] == state.static().label

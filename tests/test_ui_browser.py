"""`jessy ui` in a real browser: the OS's headless Chromium driven by Selenium, against the
real command started in its own process on --port 0.

The first test needs no backend: a run the Runner finished after a fallback (both attempts and
the reason shown), and a run whose metrics.jsonl this test appends to while run.json says
running (the loss chart's point count, its data-points attribute, rises). The second trains
the tiny model with MLX for real and watches the dashboard follow it. Screenshots go to
$JESSY_ARTIFACTS (else the test's tmp_path).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ui_runs

ROOT = Path(__file__).resolve().parents[1]
CHROMEDRIVER = os.environ.get("JESSY_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("JESSY_CHROMIUM", "/usr/bin/chromium")

pytest.importorskip("flask")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMEDRIVER) or os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver; "
                    "scripts/setup does)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    if os.path.exists(CHROMIUM):
        options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(request, tmp_path):
    """Where screenshots go: $JESSY_ARTIFACTS/<test name>/, else tmp_path."""
    base = os.environ.get("JESSY_ARTIFACTS")
    folder = Path(base) / request.node.name if base else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def dashboard(*roots: Path):
    """The real `jessy ui` command on a free port; yields its URL; Ctrl-C at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from jessy_adapters.ui.command import ui; ui()",
         *[a for r in roots for a in ("--runs", str(r))], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError("jessy ui printed no URL within 60 s") from None
        match = re.fullmatch(r"jessy ui: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, (line, proc.poll())
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 130 and "Traceback" not in err, err


def wait(driver, condition, timeout=15.0, message=""):
    # the pages redraw: an element found a moment ago may be replaced, so look again
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(
        lambda d: condition(d) or None, message)


def row_text(driver, key: str) -> str | None:
    """The text of the runs list's row for KEY (the list redraws: look it up each time)."""
    try:
        rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-key="{key}"]')
        return rows[0].text if rows else None
    except StaleElementReferenceException:
        return None


def click(driver, css: str) -> bool:
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True
    except (StaleElementReferenceException, NoSuchElementException):
        return False


def console_errors(driver) -> list[str]:
    """The page's errors since the last call (a script that threw, a request that failed)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def text_of(driver, by, selector: str) -> str:
    """An element's text, looked up again if the page replaced it between find and read."""
    for _ in range(50):
        try:
            return driver.find_element(by, selector).text
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{selector} kept being replaced")


def points(driver) -> int:
    for _ in range(50):  # the chart element may be redrawn between find and read
        try:
            return int(driver.find_element(By.ID, "loss-chart").get_attribute("data-points")
                       or 0)
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError("the loss chart kept being replaced")


def status_on_disk(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["status"]


def test_fallback_run_and_a_live_chart_that_grows(tmp_path, browser, artifacts):
    console_errors(browser)  # forget what earlier tests left
    root = tmp_path / "runs"
    fallback = ui_runs.real_run(root, "fellback", "crash", "ok")
    live = ui_runs.running_run(root, steps_done=3, planned=12)
    fd = ui_runs.hold_lock(live)  # what a live jessy holds: the dashboard shows a time left
    try:
        with dashboard(root) as url:
            # the runs list: both runs, the fallback with its failure class
            browser.get(url)
            text = wait(browser, lambda d: row_text(d, f"0/{fallback.name}"), message="no row")
            assert "fake1" in text and "fake0 crashed" in text, text
            assert "5 / 8" in text  # steps done / planned (the fake stops at 5 of 8)
            wait(browser, lambda d: d.find_elements(
                By.CSS_SELECTOR, f'tr[data-key="0/{live.name}"][data-status="running"]'))
            browser.save_screenshot(str(artifacts / "runs-list.png"))

            # the finished run: both attempts, the reason, the crash's stderr
            wait(browser, lambda d: click(d, f'tr[data-key="0/{fallback.name}"] a'))
            def attempt_facts(d):
                """Both attempts as the page shows them, read in one go (the page redraws
                its attempts: an element found a moment ago may be gone)."""
                try:
                    items = d.find_elements(By.CSS_SELECTOR, "#attempts > li[data-attempt]")
                    if len(items) != 2:
                        return None
                    first, second = items
                    reason = first.find_element(By.CSS_SELECTOR, ".reason")
                    return {"backends": [i.get_attribute("data-backend") for i in items],
                            "statuses": [i.get_attribute("data-status") for i in items],
                            "kind": reason.get_attribute("data-kind"), "reason": reason.text,
                            "log": first.find_element(By.CSS_SELECTOR, "pre.log").text}
                except (StaleElementReferenceException, NoSuchElementException):
                    return None

            facts = wait(browser, attempt_facts, message="no two attempts")
            assert facts["backends"] == ["fake0", "fake1"]
            assert facts["statuses"] == ["failed", "succeeded"]
            assert facts["kind"] == "crashed"
            assert "exit code 1: RuntimeError: fake trainer exploded" in facts["reason"]
            # the stderr tail, open for a failure
            assert "RuntimeError: fake trainer exploded" in facts["log"]
            wait(browser, lambda d: points(d) == 7)  # 2 steps on fake0, 5 on fake1
            browser.save_screenshot(str(artifacts / "fallback-run.png"))

            # the running run: its chart grows as metrics.jsonl does
            browser.get(f"{url}run/0/{live.name}")
            wait(browser, lambda d: points(d) == 3, message="the 3 complete lines")
            assert text_of(browser, By.CSS_SELECTOR, "#run-status .pill") == "running"
            ui_runs.finish_partial(live, then=[ui_runs.event(5)])
            wait(browser, lambda d: points(d) == 5, message="the finished half line and one")
            assert status_on_disk(live) == "running"
            for step in (6, 7, 8):
                ui_runs.append_events(live, [ui_runs.event(step)])
                wait(browser, lambda d, n=step: points(d) == n, message=f"step {step}")
            assert status_on_disk(live) == "running"
            facts = text_of(browser, By.ID, "progress-facts")
            assert "8 / 12" in facts, facts
            eta = text_of(browser, By.CSS_SELECTOR, '[data-fact="eta"] dd')
            assert re.search(r"\d+(\.\d+)? s|min", eta), eta  # a time left, from the events
            browser.save_screenshot(str(artifacts / "live-run.png"))
            assert console_errors(browser) == []
    finally:
        os.close(fd)


def test_compare_and_sweep_pages(tmp_path, browser, artifacts):
    console_errors(browser)
    root = tmp_path / "runs"
    run = ui_runs.real_run(root / "plain", "plain", "ok")
    ui_runs.compare_folder(root, run)
    ui_runs.sweep_folder(root, run)
    with dashboard(root) as url:
        browser.get(url + "compare/0/compare-demo")
        wait(browser, lambda d: points(d) == 5, message="fake0's five losses")
        head = browser.find_element(By.CSS_SELECTOR, "#figures thead").text
        assert "fake0" in head and "fake1" in head
        assert "fake0 wins" in browser.find_element(By.ID, "verdict").text
        browser.save_screenshot(str(artifacts / "compare.png"))
        browser.get(url + "sweep/0/sweep-demo")
        rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#trials tbody tr"))
        assert [r.get_attribute("data-state") for r in rows] == ["COMPLETE", "PRUNED", None]
        assert "pruned" in rows[1].text
        browser.save_screenshot(str(artifacts / "sweep.png"))
        assert console_errors(browser) == []


def test_dashboard_follows_a_real_mlx_training(tmp_path, mlx_env, tiny_model, toy_data,
                                               browser, artifacts):
    """A real tiny MLX training in a background thread: the run appears, its chart's point
    count rises while run.json says running. Runner(timeout=...) bounds it: the window to
    watch is the same on a fast machine and a slow one; it ends as a timeout, shown too."""
    from jessy_adapters.contract import tiny_spec
    from jessy_adapters.plugins import load_registry
    from jessy_adapters.run.runner import Runner

    spec = tiny_spec(tmp_path, tiny_model, toy_data, "uilive",
                     {"max_steps": 5000, "logging_steps": 1, "eval_steps": 200})
    console_errors(browser)
    root = tmp_path / "runs"
    root.mkdir()
    runner = Runner(load_registry(), console=lambda m: None, timeout=20)
    box: dict = {}
    with dashboard(root) as url:
        browser.get(url)
        thread = threading.Thread(target=lambda: box.update(run=runner.run(spec, ["mlx"], root)),
                                  daemon=True)
        thread.start()
        try:
            def running_key(d):
                try:  # the list redraws: a row found a moment ago may be gone
                    rows = d.find_elements(By.CSS_SELECTOR, 'tr[data-status="running"]')
                    return rows[0].get_attribute("data-key") if rows else None
                except StaleElementReferenceException:
                    return None

            key = wait(browser, running_key, timeout=60,
                       message="the run never appeared as running")
            run = root / key.split("/", 1)[1]
            browser.get(url + "run/" + key)
            wait(browser, lambda d: points(d) > 0, timeout=60, message="no loss point")
            seen = points(browser)
            assert status_on_disk(run) == "running"

            def rose(d):
                n = points(d)
                return n > seen and status_on_disk(run) == "running" and n

            rose_to = wait(browser, rose, timeout=30,
                           message="the chart did not grow while the run was running")
            assert rose_to > seen
            browser.save_screenshot(str(artifacts / "mlx-live.png"))
        finally:
            thread.join(timeout=120)
        assert not thread.is_alive()
        manifest = box["run"].manifest
        assert manifest["attempts"][0]["failure"]["kind"] == "timeout", manifest["attempts"]
        wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#run-status .pill").text ==
             manifest["status"], timeout=20, message="the page never showed the end")
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        drawn = sum(1 for e in lines if (e.get("type") == "train" and e.get("loss") is not None)
                    or e.get("eval_loss") is not None)
        wait(browser, lambda d: points(d) == drawn, timeout=20,
             message=f"the chart should end with every point of metrics.jsonl ({drawn})")
        reason = browser.find_element(By.CSS_SELECTOR, "#attempts .reason")
        assert reason.get_attribute("data-kind") == "timeout"
        browser.save_screenshot(str(artifacts / "mlx-finished.png"))
        assert console_errors(browser) == []

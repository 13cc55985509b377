"""End to end: the dashboard served by ``streamlit run``, driven in Debian's headless chromium.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``); Playwright's own browser download
is never used. Set ``MECHSCOPE_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 120
#: The first page load imports torch and loads (or trains) the model on a busy machine.
PAGE_TIMEOUT_MS = 300_000
#: Text that only appears when the app failed (st.exception, a raw traceback).
FAILURE_TEXT = re.compile(r"Traceback|Something went wrong|StreamlitAPIException|Exception:")

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_health(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer on {url} in {SERVER_START_TIMEOUT}s")


@contextlib.contextmanager
def serve(tmp_path: Path, model: str) -> Iterator[str]:
    """``streamlit run`` on a free loopback port with ``model`` preselected; always stopped."""
    port = _free_port()
    log = tmp_path / f"streamlit-{port}.log"
    env = dict(os.environ, MECHSCOPE_DEFAULT_MODEL=model, PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    with serve(tmp_path, "task:sort") as url:
        yield url


@pytest.fixture
def rasp_server_url(tmp_path: Path) -> Iterator[str]:
    with serve(tmp_path, "rasp:reverse") as url:
        yield url


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MECHSCOPE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_until_drawn(page, settle: float = 2.0, limit: float = 120.0) -> None:
    """Wait until the app stops running and the number of drawn charts stays the same."""
    deadline = time.monotonic() + limit
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        running = page.locator("[data-testid='stStatusWidget']").count() > 0
        count = page.locator(".js-plotly-plot").count()
        if running or count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since > settle:
            return
        time.sleep(0.25)


def _assert_no_failure(page) -> None:
    text = page.locator("[data-testid='stMain']").inner_text()
    match = FAILURE_TEXT.search(text)
    assert match is None, f"failure text {match.group(0)!r} on the page:\n{text[:2000]}"
    assert page.locator("[data-testid='stException']").count() == 0


def test_home_page_shows_the_card_and_predicts(server_url: str, screenshot_dir: Path) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(server_url)
            main = page.locator("[data-testid='stMain']")
            # The model card: the first metric tile and the model's name.
            main.get_by_text("Layers", exact=True).wait_for()
            main.get_by_text("task:sort").first.wait_for()
            assert main.get_by_role("heading", name="mechscope").count() == 1
            _assert_no_failure(page)
            page.screenshot(path=str(screenshot_dir / "home.png"), full_page=True)

            box = main.get_by_role("textbox", name="Input tokens (space separated)")
            box.fill("3 1 2 0")
            box.press("Enter")
            table = main.locator("[data-testid='stTable']")
            output_row = table.locator("tr", has_text="output")
            sync_api.expect(output_row).to_contain_text("0123", timeout=60_000)
            input_row = table.locator("tr", has_text="input")
            assert re.sub(r"\s", "", input_row.inner_text()) == "input3120"
            assert re.sub(r"\s", "", output_row.inner_text()) == "output0123"
            _assert_no_failure(page)

            box.fill("3 banana")
            box.press("Enter")
            alert = main.locator("[data-testid='stAlert']")
            sync_api.expect(alert).to_contain_text("'banana'", timeout=60_000)
            assert main.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(screenshot_dir / "home-error.png"), full_page=True)
        finally:
            browser.close()


def test_every_analysis_page_draws_and_head_redraw_is_timed(
    rasp_server_url: str, screenshot_dir: Path
) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            for name in ("attention", "lens", "rasp"):
                page.goto(f"{rasp_server_url}/{name}")
                main = page.locator("[data-testid='stMain']")
                main.locator(".js-plotly-plot").first.wait_for()
                _wait_until_drawn(page)
                _assert_no_failure(page)
                page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)

            # Redraw time after choosing another head (results cached: only drawing is timed).
            page.goto(f"{rasp_server_url}/attention")
            main = page.locator("[data-testid='stMain']")
            main.get_by_text("L0H0 attention").first.wait_for()
            layer_box = main.get_by_label("Layer", exact=True)
            layer_box.fill("3")
            layer_box.press("Enter")
            main.get_by_text("L3H0 attention").first.wait_for()
            timings = []
            for layer in (0, 3, 0, 3):
                start = time.perf_counter()
                layer_box.fill(str(layer))
                layer_box.press("Enter")
                main.get_by_text(f"L{layer}H0 attention").first.wait_for()
                timings.append(time.perf_counter() - start)
            _assert_no_failure(page)
            (screenshot_dir / "redraw.json").write_text(
                json.dumps({"head_redraw_seconds": timings})
            )
            assert max(timings) < 30, timings
        finally:
            browser.close()

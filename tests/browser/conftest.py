"""The browser harness: the dashboard on a free port in a thread (`ui_server`), and a headless
Chromium page (`page`) driven by Playwright with the system's browser (Debian's `chromium`;
nothing downloads a browser). Tests skip, with the reason, when Chromium or Playwright is absent.

    def test_x(ui_server, page, tmp_path, shot):
        url = ui_server(tmp_path / "runs", allow_train=True)   # create_app's keyword arguments
        page.goto(url + "/")
        shot(page, "runs-table")                               # PNG under the artifacts directory

A page's uncaught JavaScript errors fail the test that opened it (`page.js_errors` lists them).
Screenshots: $TUNESMITH_UI_ARTIFACTS, else tests/browser/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ui_runs.py

CHROMIUM = os.environ.get("TUNESMITH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("TUNESMITH_UI_ARTIFACTS", Path(__file__).parent / "artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:PORT in a daemon thread, stopped by `stop()`."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"ui-{self.port}")
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the dashboard did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def ui_server():
    """start(runs_dir, **create_app kwargs) -> base URL; every server started is stopped after the test."""
    pytest.importorskip("fastapi", reason="the dashboard needs fastapi: pip install 'tunesmith[ui]'")
    from tunesmith.ui import create_app

    started: list[ServerThread] = []

    def start(runs_dir, **kwargs) -> str:
        server = ServerThread(create_app(runs_dir, **kwargs))
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TUNESMITH_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with Playwright: "
                                                                 "pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.js_errors = []
    pg.on("pageerror", lambda err: pg.js_errors.append(str(err)))
    yield pg
    context.close()
    if pg.js_errors:
        pytest.fail(f"JavaScript errors on the page: {pg.js_errors}")


@pytest.fixture
def shot():
    """shot(page, name) -> path of a full-page PNG under the artifacts directory."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(pg, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        pg.screenshot(path=str(path), full_page=full_page)
        return path

    return take

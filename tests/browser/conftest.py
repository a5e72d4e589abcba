"""
Browser tests: Debian's Chromium, driven by Playwright, against a real api-server on loopback.

Never skipped: a missing Chromium is a failure (``make browser-deps`` installs it). One site and
one browser per session keep the suite lean.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.browser.site import AirflowSite

CHROMIUM = os.environ.get("BFL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page or an element may take: Airflow's UI is a large script bundle, slow to start on a
#: busy 2-core machine (Playwright's default is 30 s).
UI_TIMEOUT_MS = 90_000
#: Where screenshots go: a temporary folder, or docs/ with ``make screenshots``.
SCREENSHOTS = Path(os.environ.get("BFL_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="bfl-screenshots-"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test also waits for the site to come up (migrate, api-server, the pipeline run)."""
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="package")
def site_emulator() -> Iterator[RunwareEmulator]:
    with RunwareEmulator(api_key="browser-test-key-7c1d") as emu:
        emu.configure(latency=0.1, blank_prompt_marker="stoneware mug", nsfw_marker="cognac leather")
        yield emu


@pytest.fixture(scope="package")
def site_starting(
    site_emulator: RunwareEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowSite]:
    """The site's pipeline run, started (Chromium launches while it makes the database and images)."""
    connection = json.dumps(
        {
            "conn_type": "bfl",
            "password": site_emulator.api_key,
            "host": site_emulator.base_url,
            "extra": {"poll_interval": 0.1, "poll_max_interval": 0.5},
        }
    )
    airflow_site = AirflowSite(tmp_path_factory.mktemp("site"), connection)
    try:
        airflow_site.prepare()
        airflow_site.start_pipeline_run()
        yield airflow_site
    finally:
        airflow_site.stop()


@pytest.fixture(scope="package")
def site(site_starting: AirflowSite) -> AirflowSite:
    """The api-server up and the pipeline run waiting for its reviewer."""
    site_starting.start_api_server()
    site_starting.wait_for_review()
    return site_starting


# Package scope, not session: Playwright's sync API runs an event loop in the main thread, which
# must be gone before the other suites' asyncio tests and dag.test() triggers run.
@pytest.fixture(scope="package")
def browser_context(site_starting: AirflowSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make browser-deps`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.set_default_navigation_timeout(UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page_as(browser_context: Any, site: AirflowSite) -> Iterator[Any]:
    """``page_as(user)``: a fresh tab carrying ``user``'s login cookie (None: anonymous)."""
    pages = []

    def open_as(user: str | None) -> Any:
        browser_context.clear_cookies()
        if user is not None:
            browser_context.add_cookies([{"name": "_token", "value": site.token(user), "url": site.base_url}])
        page = browser_context.new_page()
        pages.append(page)
        return page

    yield open_as
    for page in pages:
        page.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=False)
    return path

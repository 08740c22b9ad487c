"""The dashboard's Movement logs page in headless Chromium against a real ``conveyor serve``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import Server
from tests.workloads.movement_logs.conftest import SEED_BODY

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")


def test_the_page_shows_the_queue_runs_a_batch_and_lists_the_stored_logs(tmp_path: Path) -> None:
    """Queue length 3 on the page; "Run a batch now" moves them; the batch and the logs appear; no console error."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    server = Server(
        tmp_path / "serve",
        env={"CONVEYOR_WORKLOADS": "system,movement_logs", "CONVEYOR_SCHEDULER": "false", "CONVEYOR_CONCURRENCY": "1"},
    ).start(timeout=60)
    problems: list[str] = []
    try:
        r = httpx.post(f"{server.url}/api/logs/add-movement/", json=[SEED_BODY, SEED_BODY, SEED_BODY])
        assert r.status_code == 202
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = chromium.new_context(base_url=server.url).new_page()
            page.set_default_timeout(20_000)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto("/#/movement-logs")
            expect(page.get_by_role("heading", name="Movement logs", level=1)).to_be_visible()
            waiting = page.get_by_text("Waiting", exact=True).locator("xpath=following-sibling::dd[1]")
            expect(waiting).to_have_text("3")
            expect(page.get_by_text("No batch has moved anything yet.")).to_be_visible()
            page.get_by_role("button", name="Run a batch now").click()
            expect(page.get_by_text("Batch started: task")).to_be_visible()
            expect(waiting).to_have_text("0")
            expect(page.get_by_text("3 logs stored")).to_be_visible()
            expect(page.get_by_role("table", name="The latest logs, newest first").locator("tbody tr")).to_have_count(3)
            expect(page.get_by_role("table", name="The latest batches, newest first")).to_contain_text("3")
            chromium.close()
    finally:
        server.kill(signal.SIGTERM)
    assert not problems, problems

"""Browser tests: Debian's Chromium driven by Playwright against a real ``conveyor serve``.

Every page opened through ``open_page`` records console errors and uncaught
exceptions; the test fails if any were seen. Screenshots go to
``test-artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import REPO, Server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def start_server(tmp: Path, env: dict[str, str]) -> Server:
    # Fast flushes and polling: the dashboard should see every step of a short task.
    return Server(tmp, env={"CONVEYOR_CONCURRENCY": "3", "CONVEYOR_SCHEDULER": "false", **env}).start()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the browser tests (each test gets its own context).

    Package-scoped, not session-scoped: Playwright's sync API keeps an asyncio
    loop marked as running in this thread until it stops, and the async tests
    that come after the browser tests need the thread without it.
    """
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page and what it reported: console errors, uncaught exceptions, requests made."""

    page: Any
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    #: console errors that a test provokes on purpose (e.g. the 422 it checks)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_console_error(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(e.search(p) for e in self.expected)]


OpenPage = Callable[..., Tab]


@pytest.fixture
def open_page(browser: Any) -> Iterator[OpenPage]:
    """Open pages in fresh contexts; after the test, none may have logged an error."""
    opened: list[tuple[Any, Tab]] = []

    def factory(
        base_url: str,
        *,
        width: int = 1280,
        height: int = 900,
        color_scheme: str = "light",
        key: str | None = None,
    ) -> Tab:
        context = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}, color_scheme=color_scheme
        )
        context.set_default_timeout(15_000)
        if key is not None:
            context.add_init_script(f"sessionStorage.setItem('conveyor.apiKey', {key!r})")
        page = context.new_page()
        tab = Tab(page)
        page.on("console", lambda m: tab.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: tab.problems.append(f"pageerror: {e}"))
        page.on("request", lambda r: tab.requests.append(r.url))
        opened.append((context, tab))
        return tab

    yield factory
    problems = [p for _, tab in opened for p in tab.unexpected()]
    for context, _ in opened:
        context.close()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


def submit(base_url: str, task_type: str, params: dict[str, Any], key: str | None = None) -> str:
    """Submit through the API (not the page), for tests about what the page shows."""
    headers = {"X-API-Key": key} if key else {}
    r = httpx.post(f"{base_url}/api/v1/tasks", json={"task_type": task_type, "params": params}, headers=headers)
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_id"]
    return task_id


def task_state(base_url: str, task_id: str, key: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": key} if key else {}
    r = httpx.get(f"{base_url}/api/v1/tasks/{task_id}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def progress_values(tab: Tab, selector: str) -> list[float]:
    """Watch a progress bar in the page and return every value it took, until it reached 100."""
    values: list[float] = tab.page.evaluate(
        """(selector) => new Promise((resolve, reject) => {
            const seen = [];
            const started = Date.now();
            const timer = setInterval(() => {
                const bar = document.querySelector(selector);
                if (bar) {
                    const v = Number(bar.getAttribute("aria-valuenow"));
                    if (seen[seen.length - 1] !== v) seen.push(v);
                    if (v >= 100) { clearInterval(timer); resolve(seen); }
                }
                if (Date.now() - started > 20000) { clearInterval(timer); resolve(seen); }
            }, 25);
        })""",
        selector,
    )
    return values

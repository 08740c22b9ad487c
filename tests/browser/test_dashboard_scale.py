"""Ten thousand tasks in the store: the dashboard loads one page, quickly, and never the table."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from conveyor import Settings, Status, TaskRecord
from conveyor.stores import open_store
from tests.acceptance.server import Server
from tests.browser.conftest import OpenPage, start_server

pytestmark = pytest.mark.browser

TOTAL = 10_000
#: generous for a shared 2-core machine; an unpaged table takes far longer
FIRST_PAGE_SECONDS = 3.0


def fill_store(data_dir: object) -> dict[str, int]:
    """Write TOTAL finished tasks of the last hour straight into the server's SQLite file."""
    settings = Settings(data_dir=data_dir)  # type: ignore[arg-type]
    store = open_store(settings.resolved_database_url)
    store.open()
    rng = random.Random(5)
    now = time.time()
    counts: dict[str, int] = {}
    records = []
    for i in range(TOTAL):
        state = rng.choices([Status.SUCCESS, Status.FAILURE, Status.CANCELLED], weights=[90, 8, 2])[0]
        finished = now - rng.uniform(5, 3500)
        task_type = "system.sleep" if i % 3 else "system.ping"
        counts[task_type] = counts.get(task_type, 0) + 1
        records.append(
            TaskRecord(
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                type=task_type,
                state=state,
                progress=100.0 if state is Status.SUCCESS else 40.0,
                message={Status.SUCCESS: "Completed", Status.FAILURE: "boom", Status.CANCELLED: "Cancelled"}[state],
                created_at=finished - 2,
                started_at=finished - 1.5,
                finished_at=finished,
                updated_at=finished,
                expires_at=now + 86400,
                result={"n": i} if state is Status.SUCCESS else None,
                params={"seconds": 1.5} if task_type == "system.sleep" else {},
            )
        )
    for start in range(0, TOTAL, 2000):
        store.insert(records[start : start + 2000])
    store.close()
    return counts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, int]]]:
    tmp = tmp_path_factory.mktemp("dash-scale")
    counts = fill_store(tmp / "conveyor-data")
    srv = start_server(tmp, {"CONVEYOR_WORKLOADS": "system"})
    yield srv, counts
    srv.stop()


def task_list_requests(urls: list[str]) -> list[dict[str, list[str]]]:
    """The query of every task listing the page made; one without a limit would fail the test."""
    queries = [parse_qs(urlparse(u).query) for u in urls if urlparse(u).path.rstrip("/") == "/api/v1/tasks"]
    assert all("limit" in q for q in queries), queries
    return queries


def test_the_first_page_of_ten_thousand_tasks_renders_quickly_and_only_pages_are_fetched(
    server: tuple[Server, dict[str, int]], open_page: OpenPage
) -> None:
    """One page of rows is rendered within seconds; every list request asks for one page; paging and filters work."""
    srv, counts = server
    tab = open_page(srv.url)
    page = tab.page
    started = time.monotonic()
    page.goto("/#/tasks")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(50)
    elapsed = time.monotonic() - started
    expect(page.locator(".summary-row")).to_have_text("Showing 1–50 of 10,000 tasks")
    assert elapsed < FIRST_PAGE_SECONDS, f"first page took {elapsed:.2f} s"
    tab.shot("tasks-10000")

    page.get_by_role("button", name="Last page").click()
    expect(page.locator(".page-label")).to_have_text("Page 200 of 200")
    expect(rows).to_have_count(50)
    page.get_by_label("Type", exact=True).select_option("system.ping")
    expect(page.locator(".summary-row")).to_contain_text(f"of {counts['system.ping']:,} tasks")
    page.get_by_label("State", exact=True).select_option("FAILURE")
    expect(page.locator("table.tasks tbody tr .badge").first).to_contain_text("FAILURE")
    expect(page).to_have_url(re.compile(r".*#/tasks\?.*status=FAILURE"))

    requests = task_list_requests(tab.requests)
    assert len(requests) >= 4  # first page, last page, two filters
    for query in requests:
        assert int(query["limit"][0]) <= 100, query
    assert rows.count() == 50


def test_the_system_page_stays_quick_with_ten_thousand_tasks(
    server: tuple[Server, dict[str, int]], open_page: OpenPage
) -> None:
    """Queue counts and the hour's charts come from grouped queries: the page is drawn within seconds."""
    srv, _ = server
    tab = open_page(srv.url)
    page = tab.page
    started = time.monotonic()
    page.goto("/#/system")
    expect(page.locator("table.queues")).to_contain_text("default")
    expect(page.locator(".charts .legend").first).to_contain_text("Succeeded")
    elapsed = time.monotonic() - started
    assert elapsed < FIRST_PAGE_SECONDS, f"system page took {elapsed:.2f} s"
    expect(page.locator(".card", has_text="Last hour").locator(".summary")).to_have_text(
        "10,000 tasks finished in the last hour."
    )
    bars = page.locator(".chart svg rect.s-success")
    assert bars.count() >= 55  # finishes spread over the hour fill nearly every minute
    tab.shot("system-10000")

"""API keys in the dashboard: sign in, each tenant sees only its own tasks, sign out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.acceptance.server import Server
from tests.browser.conftest import OpenPage, start_server, submit

pytestmark = pytest.mark.browser

ALPHA, BETA = "key-alpha-1234", "key-beta-5678"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("dash-tenants"),
        {"CONVEYOR_WORKLOADS": "system", "CONVEYOR_API_KEYS": f"{ALPHA}=alpha,{BETA}=beta"},
    )
    yield srv
    srv.stop()


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_each_tenant_sees_only_its_own_tasks_and_can_sign_out(server: Server, open_page: OpenPage) -> None:
    """The key asked for is kept for the tab, sent on every call (and on the event stream), and scopes the table."""
    assert httpx.get(f"{server.url}/api/v1/tasks").status_code == 401
    mine = [submit(server.url, "system.ping", {"payload": f"alpha {i}"}, key=ALPHA) for i in range(3)]
    running = submit(server.url, "system.sleep", {"seconds": 30, "steps": 30}, key=ALPHA)
    theirs = [submit(server.url, "system.ping", {"payload": f"beta {i}"}, key=BETA) for i in range(2)]
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/tasks")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    tab.shot("signin")

    sign_in(page, "not-a-key")
    expect(page.get_by_role("alert")).to_contain_text("That key was not accepted")

    sign_in(page, ALPHA)
    expect(page.locator("#tenant")).to_have_text("alpha")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(4)
    shown = set(rows.evaluate_all("rows => rows.map(r => r.dataset.id)"))
    assert shown == {*mine, running}
    expect(page.locator(f'tr[data-id="{running}"] .badge')).to_contain_text("PROCESSING")
    streams = [u for u in tab.requests if "/api/v1/events?" in u]
    assert streams
    assert all("stream_token=" in u for u in streams)
    assert not any(ALPHA in u for u in tab.requests)  # the key itself is never in a URL
    assert all(running in u for u in streams)
    tab.shot("tasks-alpha")

    page.reload()  # the key lives in sessionStorage: still signed in
    expect(page.locator("#tenant")).to_have_text("alpha")
    expect(rows).to_have_count(4)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('conveyor.apiKey')") is None

    sign_in(page, BETA)
    expect(page.locator("#tenant")).to_have_text("beta")
    expect(rows).to_have_count(2)
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == set(theirs)
    page.goto(f"/#/tasks/{running}")  # alpha's task, asked for by beta
    expect(page.get_by_role("heading", name="Task not found")).to_be_visible()
    tab.expect_console_error(r"status of 404")
    tab.shot("tasks-beta")
    httpx.post(f"{server.url}/api/v1/tasks/{running}/cancel/", headers={"X-API-Key": ALPHA})


def test_a_second_tab_signed_in_as_another_tenant_has_its_own_key(server: Server, open_page: OpenPage) -> None:
    """Keys are per tab: two tabs, two tenants, side by side."""
    submit(server.url, "system.ping", {}, key=ALPHA)
    for _ in range(2):
        submit(server.url, "system.ping", {}, key=BETA)
    alpha = open_page(server.url, key=ALPHA)
    beta = open_page(server.url, key=BETA)
    alpha.page.goto("/#/tasks")
    beta.page.goto("/#/tasks")
    expect(alpha.page.locator("#tenant")).to_have_text("alpha")
    expect(beta.page.locator("#tenant")).to_have_text("beta")
    alpha_count = httpx.get(f"{server.url}/api/v1/tasks?limit=1", headers={"X-API-Key": ALPHA}).json()["count"]
    beta_count = httpx.get(f"{server.url}/api/v1/tasks?limit=1", headers={"X-API-Key": BETA}).json()["count"]
    expect(alpha.page.locator(".summary-row")).to_contain_text(f"of {alpha_count} task")
    expect(beta.page.locator(".summary-row")).to_contain_text(f"of {beta_count} task")


def test_a_tenant_sees_the_system_page_without_other_tenants_queues_or_workers(
    server: Server, open_page: OpenPage
) -> None:
    """Health and its own charts, and a plain note where the operator-only parts would be; no failed calls."""
    tab = open_page(server.url, key=ALPHA)
    page = tab.page
    page.goto("/#/system")
    expect(page.get_by_role("heading", name="System", level=1)).to_be_visible()
    expect(page.get_by_text("Shown to operators only.")).to_have_count(2)
    assert not [u for u in tab.requests if "/api/v1/queues" in u or "/api/v1/workers" in u]
    tab.shot("system-tenant")

"""The dashboard's tasks, task pages and submit form, in Chromium against a real server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.acceptance.server import Server
from tests.browser.conftest import OpenPage, progress_values, start_server, submit, task_state

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dash-tasks"), {"CONVEYOR_WORKLOADS": "system,tests.browser.workload"})
    yield srv
    srv.stop()


def wait_for_state(server: Server, task_id: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = task_state(server.url, task_id)
        if task["status"] in states or time.monotonic() > deadline:
            assert task["status"] in states, task
            return task
        time.sleep(0.1)


def test_a_sleep_submitted_through_the_generated_form_shows_progress_up_to_100(
    server: Server, open_page: OpenPage
) -> None:
    """The form is built from system.sleep's schema; its progress bar moves live to 100 % with no reload."""
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/submit")
    page.get_by_label("Task type", exact=True).select_option("system.sleep")
    expect(page.get_by_label("Fail", exact=True)).not_to_be_checked()
    page.get_by_label("Seconds", exact=True).fill("2.5")
    page.get_by_label("Steps", exact=True).fill("10")
    page.evaluate("window.__notReloaded = true")
    tab.shot("submit-form")
    page.get_by_role("button", name="Submit task").click()
    item = page.locator(".recent li").first
    expect(item).to_be_visible()

    values = progress_values(tab, ".recent li [role=progressbar]")

    assert any(0 < v < 100 for v in values), f"no intermediate progress seen: {values}"
    assert values[-1] == 100
    expect(item.locator(".badge")).to_contain_text("SUCCESS")
    assert page.evaluate("window.__notReloaded") is True
    tab.shot("submit-sleep-done")


def test_the_task_table_follows_a_running_task_through_server_sent_events(server: Server, open_page: OpenPage) -> None:
    """The row of a running task moves without reloading, fed by /api/v1/events for the page's ids."""
    task_id = submit(server.url, "system.sleep", {"seconds": 2.5, "steps": 10})
    tab = open_page(server.url)
    tab.page.goto("/#/tasks")
    row = tab.page.locator(f'tr[data-id="{task_id}"]')
    expect(row).to_be_visible()

    values = progress_values(tab, f'tr[data-id="{task_id}"] [role=progressbar]')

    assert any(0 < v < 100 for v in values), values
    expect(row.locator(".badge")).to_contain_text("SUCCESS")
    expect(tab.page.locator(".mode")).to_have_text("Live")
    assert any("/api/v1/events?ids=" in url and task_id in url for url in tab.requests)
    tab.shot("tasks-table")


def test_the_task_table_falls_back_to_polling_when_events_are_unavailable(server: Server, open_page: OpenPage) -> None:
    """With the SSE endpoint refused, the table says so and still follows the task by re-reading its page."""
    tab = open_page(server.url)
    tab.expect_console_error(r"status of 503")
    tab.page.route("**/api/v1/events**", lambda route: route.fulfill(status=503, body="no streams here"))
    task_id = submit(server.url, "system.sleep", {"seconds": 4, "steps": 8})
    tab.page.goto("/#/tasks")

    values = progress_values(tab, f'tr[data-id="{task_id}"] [role=progressbar]')

    expect(tab.page.locator(".mode")).to_have_text("Polling")
    assert any(0 < v < 100 for v in values), values
    expect(tab.page.locator(f'tr[data-id="{task_id}"] .badge')).to_contain_text("SUCCESS")
    tab.shot("tasks-table-polling")


def test_a_running_task_is_cancelled_from_its_page(server: Server, open_page: OpenPage) -> None:
    """Cancel on a running task's page ends it CANCELLED, in the page and in the store."""
    task_id = submit(server.url, "system.sleep", {"seconds": 30, "steps": 60})
    tab = open_page(server.url)
    page = tab.page
    page.goto(f"/#/tasks/{task_id}")
    badge = page.locator(".status-card .badge")
    expect(badge).to_contain_text("PROCESSING")
    expect(page.get_by_role("progressbar", name="Task progress")).not_to_have_attribute("aria-valuenow", "0")

    page.get_by_role("button", name="Cancel").click()

    expect(badge).to_contain_text("CANCELLED")
    expect(page.get_by_role("button", name="Retry")).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    assert task_state(server.url, task_id)["status"] == "CANCELLED"
    expect(page.locator(".timeline .badge").last).to_contain_text("CANCELLED")
    tab.shot("task-cancelled")


def test_a_failed_task_shows_its_error_and_runs_again_on_retry(server: Server, open_page: OpenPage) -> None:
    """A failure shows its message and traceback; Retry runs it a second time (two starts on the timeline)."""
    task_id = submit(server.url, "system.sleep", {"seconds": 1, "steps": 4, "fail": True})
    wait_for_state(server, task_id, {"FAILURE"})
    tab = open_page(server.url)
    page = tab.page
    page.goto(f"/#/tasks/{task_id}")
    badge = page.locator(".status-card .badge")
    expect(badge).to_contain_text("FAILURE")
    expect(page.locator(".error-message")).to_contain_text("RuntimeError: failed on purpose")
    page.get_by_text("Traceback", exact=True).click()
    expect(page.locator(".traceback pre")).to_contain_text('raise RuntimeError("failed on purpose (fail=true)")')
    tab.shot("task-failed")

    page.get_by_role("button", name="Retry").click()

    expect(badge).to_contain_text("PROCESSING")
    expect(badge).to_contain_text("FAILURE", timeout=20_000)
    starts = page.locator(".timeline li", has_text="Started")
    expect(starts).to_have_count(2)
    assert task_state(server.url, task_id)["attempts"] == 2
    tab.shot("task-retried")


def test_the_form_checks_params_before_sending_and_shows_the_servers_422_beside_the_field(
    server: Server, open_page: OpenPage
) -> None:
    """A value out of the schema's range is caught in the page; one only the server rejects comes back as 422."""
    tab = open_page(server.url)
    tab.expect_console_error(r"status of 422")
    page = tab.page
    page.goto("/#/submit?type=system.sleep")
    page.get_by_label("Seconds", exact=True).fill("-1")
    page.get_by_role("button", name="Submit task").click()
    seconds_error = page.locator('[data-field="seconds"] .field-error')
    expect(seconds_error).to_have_text("Must be at least 0.")
    expect(page.get_by_label("Seconds", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Seconds", exact=True)).to_be_focused()
    assert not [u for u in tab.requests if u.endswith("/api/v1/tasks")]

    page.get_by_label("Seconds", exact=True).fill("0.1")
    page.get_by_text("Options", exact=True).click()
    page.get_by_label("Priority", exact=True).fill("42")
    with page.expect_response("**/api/v1/tasks") as answer:
        page.get_by_role("button", name="Submit task").click()
    assert answer.value.status == 422
    expect(seconds_error).to_be_hidden()
    expect(page.get_by_label("Priority", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(
        page.locator(".field", has=page.get_by_label("Priority", exact=True)).locator(".field-error")
    ).to_contain_text("between 0 and 9")
    tab.shot("submit-422")


def test_a_form_is_generated_for_every_kind_of_param(server: Server, open_page: OpenPage) -> None:
    """Enums (inline and $ref), strings list, nullable int, bounded float, booleans reach the task as typed."""
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/submit?type=testing.form")
    expect(page.get_by_label("Mode", exact=True)).to_have_value("0")  # the default, "fast"
    page.get_by_role("textbox", name="Label (required)", exact=True).fill("x")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator('[data-field="label"] .field-error')).to_have_text("Must be at least 2 characters.")

    page.get_by_role("textbox", name="Label (required)", exact=True).fill("run-1")
    page.get_by_label("Mode", exact=True).select_option(label="careful")
    page.get_by_label("Tags", exact=True).fill("red\n\nblue\n")
    page.get_by_label("Limit", exact=True).fill("3")
    page.get_by_label("Ratio", exact=True).fill("0.25")
    page.get_by_label("Verbose", exact=True).check()
    page.get_by_label("Strict", exact=True).select_option(label="false")
    expect(page.get_by_label("Colour", exact=True)).to_have_value("0")  # "red", from the $ref'd enum's default
    page.get_by_label("Colour", exact=True).select_option(label="green")
    page.get_by_role("button", name="Submit task").click()
    link = page.locator(".recent li a").first
    expect(link).to_contain_text("testing.form")
    task_id = link.get_attribute("href").rsplit("/", 1)[-1]  # type: ignore[union-attr]

    task = wait_for_state(server, task_id, {"SUCCESS"})
    assert task["params"] == {
        "label": "run-1",
        "mode": "careful",
        "tags": ["red", "blue"],
        "limit": 3,
        "ratio": 0.25,
        "verbose": True,
        "strict": False,
        "colour": "green",
    }
    link.click()
    expect(page.locator(".status-card .badge")).to_contain_text("SUCCESS")
    expect(page.locator(".card", has_text="Params")).to_contain_text('"careful"')
    tab.shot("task-form-params")


def test_a_result_with_media_shows_the_image_and_an_audio_player_inline(server: Server, open_page: OpenPage) -> None:
    """A data: URI image, base64 audio with a content type and a file URL are rendered as such, beside the JSON."""
    task_id = submit(server.url, "testing.media", {})
    wait_for_state(server, task_id, {"SUCCESS"})
    tab = open_page(server.url)
    page = tab.page
    page.goto(f"/#/tasks/{task_id}")
    image = page.locator(".media-list img")
    expect(image).to_be_visible()
    page.wait_for_function("() => document.querySelector('.media-list img').naturalWidth === 24")
    audio = page.locator(".media-list audio")
    expect(audio).to_have_attribute("src", re.compile(r"^data:audio/wav;base64,UklGR"))
    page.wait_for_function("() => document.querySelector('.media-list audio').readyState >= 1")
    expect(page.get_by_role("link", name="Download task-types")).to_have_attribute("href", "/api/v1/task-types")
    expect(page.locator(".json")).to_contain_text("of data")  # the data URI is summarised in the tree
    tab.shot("task-media-result")


def test_the_system_page_shows_health_queues_workers_and_the_last_hours_charts(
    server: Server, open_page: OpenPage
) -> None:
    """Health parts, a queue row, the local pool's processes, and bars for finished tasks are drawn."""
    ok = submit(server.url, "system.ping", {})
    failed = submit(server.url, "system.sleep", {"seconds": 0, "steps": 1, "fail": True})
    wait_for_state(server, ok, {"SUCCESS"})
    wait_for_state(server, failed, {"FAILURE"})
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/system")
    expect(page.locator('[data-part="database"] .badge')).to_have_text("ok")
    expect(page.locator('[data-part="executor"] .badge')).to_have_text("ok")
    expect(page.locator("table.queues")).to_contain_text("default")
    # one row per worker process the API lists: every lane's processes (forked at start)
    listed = httpx.get(f"{server.url}/api/v1/workers").json()
    assert listed["count"] >= 2
    expect(page.locator("table.workers tbody tr")).to_have_count(listed["count"])
    expect(page.locator(".chart svg rect.s-success").first).to_be_attached()
    expect(page.locator(".chart svg rect.s-failure").first).to_be_attached()
    expect(page.locator(".chart svg path.rate-line")).to_be_attached()
    stats = httpx.get(f"{server.url}/api/v1/stats").json()
    expect(page.locator(".legend").first).to_contain_text(f"Succeeded {stats['totals']['success']}")
    tab.shot("system")


def test_every_control_has_a_label_and_the_pages_are_reachable_by_keyboard(server: Server, open_page: OpenPage) -> None:
    """Inputs are labelled, and Tab moves through real links and buttons with a visible focus ring."""
    tab = open_page(server.url)
    page = tab.page
    for route in ("/#/tasks", "/#/submit"):
        page.goto(route)
        page.locator("main h1").wait_for()
        page.wait_for_function("() => document.querySelectorAll('main select, main input').length > 2")
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter(el => el.type !== 'hidden' && !el.labels.length && !el.getAttribute('aria-label'))
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], unlabelled
    page.goto("about:blank")
    page.goto("/#/tasks")  # a fresh load: focus starts at the top of the document
    page.locator("main h1").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Tasks"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_have_text("Submit")
    expect(page.locator("main h1")).to_be_focused()


@pytest.mark.parametrize(("width", "scheme"), [(375, "light"), (375, "dark"), (1280, "dark")])
def test_every_page_fits_a_narrow_screen_and_reads_in_dark_mode(
    server: Server, open_page: OpenPage, width: int, scheme: str
) -> None:
    """At 375 px nothing scrolls sideways; in dark mode the page is dark with light text."""
    done = submit(server.url, "system.sleep", {"seconds": 0.2, "steps": 2, "fail": True})
    wait_for_state(server, done, {"FAILURE"})
    tab = open_page(server.url, width=width, height=800, color_scheme=scheme)
    page = tab.page
    for name, route, ready in [
        ("tasks", "/#/tasks", "table.tasks tbody tr"),
        ("task", f"/#/tasks/{done}", ".timeline li"),
        ("submit", "/#/submit", ".schema-fields .field"),
        ("system", "/#/system", ".chart svg"),
    ]:
        page.goto(route)
        page.locator(ready).first.wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at {width} px"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        text = page.evaluate("getComputedStyle(document.body).color")
        if scheme == "dark":
            assert _luminance(background) < 0.1 < _luminance(text), (name, background, text)
        else:
            assert _luminance(background) > 0.8 > _luminance(text), (name, background, text)
        tab.shot(f"{name}-{width}px-{scheme}")


def _luminance(css_color: str) -> float:
    """Relative luminance (WCAG) of an ``rgb(r, g, b)`` colour."""
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css_color)[:3])

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

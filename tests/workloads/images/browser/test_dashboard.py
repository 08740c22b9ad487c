"""The images page of the dashboard in Chromium: pick images, submit, watch the bar, see the result and its mask."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cv2")
pytest.importorskip("playwright")

from playwright.sync_api import expect

from tests.acceptance.server import Server
from tests.browser.conftest import CHROMIUM, LAUNCH_ARGS, OpenPage, open_page, start_server
from tests.workloads.images import samples

__all__ = ["open_page"]  # the page fixture of the browser tests, used here by name

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for this module only: Playwright's sync API holds the thread's event loop while it runs,
    and the tests after these (anyio.run) need the thread back."""
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dash-images"), {"CONVEYOR_WORKLOADS": "system,images"})
    yield srv
    srv.stop()


def test_a_background_removal_from_the_images_page_shows_the_cut_out_and_its_mask(
    server: Server, open_page: OpenPage, tmp_path: Path
) -> None:
    """Choose the type and a photo, submit: the bar reaches 100 and the RGBA result and the mask appear."""
    img, _ = samples.composite(samples.astronaut(), samples.chelsea(), (200, 300), (150, 100), (60, 70))
    photo = tmp_path / "composite.png"
    photo.write_bytes(samples.png_bytes(img))
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/images")
    expect(page.get_by_role("heading", name="Images")).to_be_visible()
    page.get_by_label("Task type").select_option("background_removal")
    page.get_by_label("image", exact=True).set_input_files(str(photo))
    expect(page.get_by_alt_text("Preview of image")).to_be_visible()
    page.get_by_role("button", name="Submit").click()
    bar = page.get_by_role("progressbar", name="Task progress")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=30_000)
    expect(page.get_by_alt_text("Result image")).to_be_visible(timeout=30_000)
    expect(page.get_by_alt_text("Mask (alpha)")).to_be_visible(timeout=30_000)
    expect(page.locator(".images-result figcaption").first).to_have_text("300 × 200 · border-seeded-grabcut")
    tab.shot("images-background-removal")


def test_a_generation_from_the_images_page_says_it_is_procedural_and_a_bad_size_is_named(
    server: Server, open_page: OpenPage
) -> None:
    """The default type generates an image of the chosen size; a width that is no multiple of 8 shows the field."""
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/images")
    page.get_by_label("Width").fill("256")
    page.get_by_label("Height").fill("128")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".images-result figcaption").first).to_have_text("256 × 128 · procedural", timeout=30_000)
    expect(page.get_by_text("Prompt used: beautiful sunset")).to_be_visible(timeout=30_000)
    tab.expect_console_error("422")
    page.get_by_label("Width").fill("250")
    # The browser's own step check would stop the form; the server's answer is what this checks.
    page.locator("form.images-form").evaluate("f => f.setAttribute('novalidate', '')")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("alert")).to_contain_text("parameters.width: must be a multiple of 8", timeout=30_000)

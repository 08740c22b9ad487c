"""The media page in the dashboard: upload a photo and a recording, see them corrected with figures and previews."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("cv2", reason="the media extra is not installed: pip install 'conveyor[media]'")
pytest.importorskip("playwright", reason="playwright is not installed")

from playwright.sync_api import expect

from tests.acceptance.server import Server
from tests.browser.conftest import OpenPage, start_server
from tests.workloads.media import samples

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dash-media"), {"CONVEYOR_WORKLOADS": "system,media"})
    yield srv
    srv.stop()


def test_a_photo_and_a_recording_are_corrected_from_the_media_page(
    server: Server, open_page: OpenPage, tmp_path: Path
) -> None:
    """Each card reaches SUCCESS with its before/after table, an image preview and an audio player that load."""
    photo = tmp_path / "holiday.jpg"
    samples.cast_and_rotated_jpeg(photo)
    recording = samples.noisy_quiet_speech(tmp_path / "memo.wav")
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/media")
    expect(page.locator("main h1")).to_have_text("Media corrections")
    for path in (photo, recording):
        page.get_by_label("File", exact=True).set_input_files(str(path))
        page.get_by_role("button", name="Correct").click()
        expect(page.locator(".media-card", has_text=path.name)).to_be_visible()
    cards = page.locator(".media-card[data-status=SUCCESS]")
    expect(cards).to_have_count(2, timeout=60_000)
    image_card = page.locator(".media-card", has_text="holiday.jpg")
    expect(image_card.locator(".media-figures")).to_contain_text("Colour cast")
    img = image_card.locator(".media-preview img")
    expect(img).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 256", arg=img.element_handle())
    audio_card = page.locator(".media-card", has_text="memo.wav")
    expect(audio_card.locator(".media-figures")).to_contain_text("LUFS")
    expect(audio_card.locator("audio")).to_have_count(1)
    src = audio_card.locator("audio").get_attribute("src")
    assert src is not None
    assert page.request.get(server.url + src).status == 200
    tab.shot("media-corrected")

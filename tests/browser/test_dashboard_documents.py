"""The documents workload in the dashboard: upload with progress, then read the chunks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.acceptance.server import Server
from tests.browser.conftest import OpenPage, start_server
from tests.documents_samples import ENGLISH, make_pdf

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dash-docs"), {"CONVEYOR_WORKLOADS": "system,documents"})
    yield srv
    srv.stop()


def start_upload(page: Page, path: Path) -> None:
    page.goto("/#/submit")
    page.get_by_label("Document", exact=True).set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()


def test_an_uploaded_text_file_becomes_ready_and_its_chunks_can_be_read(
    server: Server, open_page: OpenPage, tmp_path: Path
) -> None:
    """The bar goes from the upload to "ready"; the link opens the document's chunks."""
    notes = tmp_path / "field-notes.txt"
    notes.write_text("Harbour lanterns glow at dusk.\n\n" + ENGLISH, encoding="utf-8")
    tab = open_page(server.url)
    page = tab.page
    start_upload(page, notes)
    bar = page.get_by_role("progressbar", name="Upload and processing")
    expect(bar).to_be_visible()
    stage = page.locator(".upload .stage")
    expect(stage).to_have_text(re.compile(r"^Ready: \d+ chunks?$"), timeout=30_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    count = int(stage.inner_text().split()[1])
    assert count >= 2  # the text is longer than one chunk
    tab.shot("upload-ready")

    page.get_by_role("link", name="View chunks").click()

    expect(page.locator("main h1")).to_have_text("field-notes.txt")
    chunks = page.locator(".chunk")
    expect(chunks).to_have_count(count)
    expect(chunks.first).to_contain_text("Harbour lanterns glow at dusk.")
    expect(page.locator(".document .facts")).to_contain_text("text")
    expect(page.locator(".document .facts")).to_contain_text("en")
    tab.shot("document-chunks")


def test_an_uploaded_pdf_shows_its_pages_and_its_task_renders_the_document(
    server: Server, open_page: OpenPage, tmp_path: Path
) -> None:
    """A generated PDF's chunks name their pages; the documents.process task page lists the chunks as well."""
    pdf = make_pdf(tmp_path / "report.pdf", 3)
    tab = open_page(server.url)
    page = tab.page
    start_upload(page, pdf)
    expect(page.locator(".upload .stage")).to_contain_text("Ready", timeout=30_000)
    page.get_by_role("link", name="View chunks").click()
    expect(page.locator(".chunk").first).to_contain_text("Page 1 begins here.")
    expect(page.locator(".chunk-meta").first).to_contain_text("pages 1")

    page.locator(".document .facts a").click()  # the processing task

    expect(page.locator("main h1")).to_have_text("documents.process")
    expect(page.locator(".status-card .badge")).to_contain_text("SUCCESS")
    result = page.locator("section.card", has=page.get_by_role("heading", name="Result"))
    expect(result.locator(".chunk").first).to_contain_text("Page 1 begins here.")
    expect(result.locator(".facts")).to_contain_text("report.pdf")
    tab.shot("task-document-result")


def test_a_file_that_is_not_a_document_is_refused_with_a_message(
    server: Server, open_page: OpenPage, tmp_path: Path
) -> None:
    """A 415 from the upload is shown beside the file field."""
    junk = tmp_path / "noise.bin"
    junk.write_bytes(bytes(range(256)) * 40)
    tab = open_page(server.url)
    tab.expect_console_error(r"status of 415")
    page = tab.page
    start_upload(page, junk)
    error = page.locator(".upload .field-error")
    expect(error).to_contain_text("unsupported document type")
    expect(page.get_by_label("Document", exact=True)).to_have_attribute("aria-invalid", "true")
    tab.shot("upload-refused")

"""The browser tier's fixtures (a Chromium browser, pages that fail on console errors) for the media page test."""

from __future__ import annotations

from tests.browser.conftest import browser, open_page

__all__ = ["browser", "open_page"]

"""``conveyor serve`` writes no access line per request unless asked (CONVEYOR_ACCESS_LOG), and masks credentials."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.acceptance.server import Server


def test_serve_writes_no_access_line_by_default(tmp_path: Path) -> None:
    """At the default log level a request costs no log write: the line is not there."""
    with Server(tmp_path, args=["--log-level", "info"]) as server:
        assert httpx.get(f"{server.url}/livez").status_code == 200
        assert httpx.get(f"{server.url}/api/v1/tasks/x/events?api_key=s3cret").status_code == 404
    log = server.log.read_text()
    assert "Application startup complete" in log  # the info level is on...
    assert "GET /livez" not in log  # ...and no access line was written


def test_the_access_log_when_turned_on_masks_credentials(tmp_path: Path) -> None:
    with Server(tmp_path, args=["--log-level", "info"], env={"CONVEYOR_ACCESS_LOG": "true"}) as server:
        httpx.get(f"{server.url}/livez")
        httpx.get(f"{server.url}/api/v1/tasks/x/events?api_key=s3cret")
    log = server.log.read_text()
    assert "GET /livez" in log
    assert "api_key=***" in log
    assert "s3cret" not in log

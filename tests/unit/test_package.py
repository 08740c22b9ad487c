"""The package's public face: what `import conveyor` gives and what it does not pull in."""

from __future__ import annotations

import subprocess
import sys

import conveyor


def test_the_public_api_is_re_exported_from_the_package() -> None:
    for name in ("task", "TaskContext", "Status", "Conveyor", "Settings", "get_task_manager", "errors", "TaskQuery"):
        assert name in conveyor.__all__
        assert hasattr(conveyor, name)


def test_importing_conveyor_pulls_in_no_broker_driver_or_heavy_library() -> None:
    """Optional parts load lazily: a user of the embedded default never imports Celery or OpenCV."""
    heavy = [
        "celery",
        "kombu",
        "redis",
        "psycopg",
        "cv2",
        "pypdf",
        "docx",
        "tiktoken",
        "numpy",
        "sqlalchemy",
        "fastapi",
        "uvicorn",
    ]
    code = f"import sys, conveyor; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_status_is_an_api_string() -> None:
    assert [s.value for s in conveyor.Status] == ["PENDING", "PROCESSING", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]
    assert str(conveyor.Status.SUCCESS) == "SUCCESS"

"""The package's public face: what `import conveyor` gives and what it does not pull in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import conveyor


def test_the_public_api_is_re_exported_from_the_package() -> None:
    """``__all__`` is exactly the documented public names, and each is there."""
    assert sorted(conveyor.__all__) == [
        "AsyncTaskManager",
        "Conveyor",
        "ConveyorError",
        "PeriodicJob",
        "Registry",
        "Retry",
        "Settings",
        "Status",
        "SubmitRequest",
        "TaskCancelled",
        "TaskContext",
        "TaskFailed",
        "TaskHandle",
        "TaskManager",
        "TaskQuery",
        "TaskRecord",
        "TaskType",
        "Workload",
        "__version__",
        "errors",
        "get_conveyor",
        "get_task_manager",
        "task",
    ]
    for name in conveyor.__all__:
        assert hasattr(conveyor, name), name


def test_the_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert conveyor.__version__ == version("conveyor")


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


def test_no_user_facing_text_names_the_seeds(tmp_path: Path) -> None:
    """OpenAPI summaries, tags and descriptions speak of the product, not of the systems it replaced."""
    import json
    import re

    from conveyor.api.main import create_app
    from conveyor.workloads import BUILTIN

    settings = conveyor.Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=tmp_path)
    app = conveyor.Conveyor(settings)
    assert set(BUILTIN) <= set(app.workloads.names())  # every workload's routes are in the document
    text = json.dumps(create_app(app, manage=False).openapi())
    # (a param named "seed", image generation's random seed, is fine)
    assert not re.findall(r"(?i)\bseed(?: \d{3}|'s|s\b)[^\"]{0,40}", text)


def test_every_error_a_client_can_receive_is_one_hierarchy() -> None:
    """Each workload's HTTP-facing errors are ConveyorErrors; every 503 is an ``Unavailable`` (Retry-After, dependency).

    Found by walking the workloads' ``errors`` modules, so a new workload's errors are held to it too.
    """
    import importlib
    import inspect
    import pkgutil

    import conveyor.workloads
    from conveyor.errors import ConveyorError, Unavailable

    checked = []
    for info in pkgutil.walk_packages(conveyor.workloads.__path__, "conveyor.workloads."):
        if not info.name.endswith(".errors"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not hasattr(cls, "status_code"):
                continue
            checked.append(cls.__name__)
            assert issubclass(cls, ConveyorError), cls
            if cls.status_code == 503:
                assert issubclass(cls, Unavailable), f"{cls.__name__} answers 503 outside Unavailable"
    assert {"DocumentsUnavailable", "SpeechUnavailable", "LogQueueUnavailable"} <= set(checked)

"""The Celery executor, split by the process each part runs in.

``executor.py`` runs in the API process (sends, reaps, asks the workers);
``worker.py`` inside a Celery worker (claims and runs a task); ``app.py``
builds the Celery app both use; ``beat.py`` is the beat scheduler over the
periodic-job table and ``cluster.py`` the ``conveyor worker|beat|flower|inspect``
commands. ``conveyor.worker`` stays the module ``celery -A`` loads.
"""

from __future__ import annotations

from conveyor.executors.celery.app import create_celery_app
from conveyor.executors.celery.executor import CeleryExecutor

__all__ = ["CeleryExecutor", "create_celery_app"]

"""The Celery app module: ``celery -A conveyor.worker worker|beat|inspect|flower``.

Celery's command line needs an app at module level, so this module builds one
Conveyor from the environment (``CONVEYOR_*``) on import. Nothing else in the
package does that.
"""

from __future__ import annotations

from conveyor.app import Conveyor, set_default_conveyor
from conveyor.executors.celery import CeleryExecutor
from conveyor.settings import Settings

__all__ = ["app", "conveyor"]

# A worker is a Celery worker whatever the API process uses (local, celery or
# hybrid): it runs every task type that reaches it, and never a local pool.
_settings = Settings().model_copy(update={"executor": "celery"})
conveyor = Conveyor(_settings)
# Task code that submits more work (``fn.delay()``) goes through this app's store.
set_default_conveyor(conveyor)
_executor = conveyor.executor
assert isinstance(_executor, CeleryExecutor)
app = _executor.app

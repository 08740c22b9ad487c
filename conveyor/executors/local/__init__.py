"""The local executor: a pool of worker processes owned by this process.

``pool.py`` is the scheduler that runs in the API process, ``child.py`` the
forked worker process, ``messages.py`` what they send each other over their
pipes and ``workers.py`` the pool's handle on each process.
"""

from __future__ import annotations

from conveyor.executors.local.pool import LocalExecutor
from conveyor.executors.local.workers import local_worker_id

__all__ = ["LocalExecutor", "local_worker_id"]

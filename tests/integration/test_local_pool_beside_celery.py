"""The local pool in a process that also talks to a Celery broker (the hybrid set-up).

kombu closes its pooled broker connections after a fork; done on a socket
shared with the parent, that blocked each new local worker forever. These
tests keep the local pool working in such a process.
"""

from __future__ import annotations

import pytest

from conveyor import Status
from tests.conftest import AppFactory, broker_url

pytestmark = pytest.mark.redis


def test_local_workers_start_and_run_after_the_process_has_polled_a_redis_broker(make_app: AppFactory) -> None:
    """A Celery app that has waited for replies on Redis leaves a channel mid-poll; new local workers still run."""
    from celery import Celery

    celery_app = Celery("probe", broker=broker_url("redis"), set_as_current=False)
    # Waiting for replies leaves a channel in the connection pool, in the middle of a BRPOP.
    celery_app.control.inspect(timeout=0.3).ping()
    try:
        app = make_app(concurrency=2)
        task_id = app.manager.submit("system.ping", payload="after celery")
        record = app.manager.wait(task_id, timeout=20)
        assert record.state is Status.SUCCESS
        assert record.result["payload"] == "after celery"
    finally:
        celery_app.close()

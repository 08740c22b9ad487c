"""Celery's producer verbs on Conveyor task types: ``fn.delay()``, ``fn.apply_async()`` and the handle.

Code written against Celery migrates by changing an import: the handle reads
the store, ``.get()`` re-raises a failure, ``.revoke()`` cancels a queued task.
The same assertions run on the local executor and on Celery workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.errors import InvalidParams, TaskFailed
from conveyor.records import Status
from conveyor.testing import task_context
from conveyor.workloads.system import ping, sleep
from tests.conftest import AppFactory, CeleryWorkers, broker_url


@pytest.fixture(params=["local", pytest.param("celery", marks=[pytest.mark.postgres, pytest.mark.redis])])
def app(request: pytest.FixtureRequest, make_app: AppFactory) -> Iterator[Conveyor]:
    if request.param == "local":
        conveyor = make_app(database_url="memory://")
    else:
        url: str = request.getfixturevalue("clean_postgres_url")
        workers: CeleryWorkers = request.getfixturevalue("celery_workers")
        broker = broker_url("redis")
        workers.start(broker, url)
        conveyor = make_app(executor="celery", broker_url=broker, database_url=url)
    with conveyor.as_default():
        yield conveyor


def test_delay_returns_a_handle_whose_get_is_the_result(app: Conveyor) -> None:
    """Positional and keyword arguments fill the params; the handle's state and info come from the store."""
    handle = ping.delay("hello")
    assert handle.get(timeout=30)["payload"] == "hello"
    assert handle.state == handle.status == "SUCCESS"
    assert handle.ready()
    assert handle.successful()
    assert not handle.failed()
    assert handle.info["pong"] is True
    assert app.manager.get(handle.id).params == {"payload": "hello"}


def test_get_re_raises_a_failure_with_its_message(app: Conveyor) -> None:
    handle = sleep.delay(seconds=0, steps=1, fail=True)
    with pytest.raises(TaskFailed, match="failed on purpose"):
        handle.get(timeout=30)
    assert handle.failed()
    assert handle.get(timeout=1, propagate=False)["message"] == "failed on purpose (fail=true)"


def test_revoke_cancels_a_task_still_waiting_for_its_countdown(app: Conveyor) -> None:
    handle = sleep.apply_async(kwargs={"seconds": 0, "steps": 1}, countdown=60)
    assert handle.state == "PENDING"
    handle.revoke()
    assert app.manager.get(handle.id).state is Status.CANCELLED
    with pytest.raises(TaskFailed, match="CANCELLED"):
        handle.get(timeout=5)


def test_apply_async_takes_a_task_id_queue_and_priority(app: Conveyor) -> None:
    """A chosen id names the task (submitting it twice is one task); bad params answer at once."""
    first = ping.apply_async(("x",), task_id="my-own-id-1", priority=7)
    again = ping.apply_async(("x",), task_id="my-own-id-1")
    assert first.id == again.id == "my-own-id-1"
    assert first.get(timeout=30)["payload"] == "x"
    assert app.manager.get("my-own-id-1").priority == 7
    with pytest.raises(InvalidParams):
        ping.delay(payload=["not", "a", "string"])
    with pytest.raises(InvalidParams, match="task_id"):
        ping.apply_async(task_id="../etc/passwd")


def test_a_task_function_is_still_a_plain_function() -> None:
    """Calling it runs the body in this process, as before the decorator gained verbs."""
    assert ping(task_context(workdir_root=Path("/tmp")), payload="p")["payload"] == "p"
    assert ping.name == "system.ping"
    assert ping.__name__ == "ping"

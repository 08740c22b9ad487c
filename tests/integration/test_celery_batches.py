"""A batch of submits on RabbitMQ: one wait for all its publisher confirms, and still no task left without a message.

``submit_many`` (and ``POST /api/v1/tasks/batch``) hands the whole batch to
``CeleryExecutor.dispatch_many``: published on a confirm-mode channel of its
own, the broker's acks awaited once. A batch the broker does not wholly
confirm is refused whole, each task ending FAILURE "not dispatched".
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from conveyor import SubmitRequest, task
from conveyor.errors import ExecutorError
from conveyor.executors.celery import CeleryExecutor
from conveyor.records import Status, TaskRecord
from conveyor.stores.base import TaskQuery
from conveyor.transitions import never_dispatched
from tests.conftest import AppFactory, CeleryWorkers, broker_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _records(results: list[TaskRecord | Exception]) -> list[TaskRecord]:
    assert all(isinstance(r, TaskRecord) for r in results), results
    return [r for r in results if isinstance(r, TaskRecord)]


def test_a_batch_on_rabbitmq_is_confirmed_once_and_every_task_runs(
    clean_postgres_url: str, celery_workers: CeleryWorkers, make_app: AppFactory
) -> None:
    url = broker_url("amqp")
    celery_workers.start(url, clean_postgres_url)
    app = make_app(executor="celery", broker_url=url, database_url=clean_postgres_url)
    executor = app.executor
    assert isinstance(executor, CeleryExecutor)
    for _ in range(2):  # the second batch reuses the channel and its count of delivery tags
        records = _records(app.manager.submit_many([SubmitRequest("system.ping", {"payload": "b"})] * 150))
        for r in records:
            assert app.manager.wait(r.id, timeout=60).state is Status.SUCCESS
    batches = executor._batches
    assert batches is not None
    assert batches._published == batches._confirmed == 300  # every message confirmed, on one channel


@pytest.fixture
def nacking_queue() -> Iterator[str]:
    """A queue RabbitMQ refuses (nacks) messages to past its second: a policy, so no declare argument conflicts."""
    name = f"nack-test-{uuid.uuid4().hex[:8]}"
    broker_url("amqp")
    policy = f"conveyor-{name}"
    subprocess.run(
        [
            "rabbitmqctl",
            "set_policy",
            policy,
            f"^{name}$",
            '{"max-length": 2, "overflow": "reject-publish"}',
            "--apply-to",
            "queues",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield name
    finally:
        subprocess.run(["rabbitmqctl", "clear_policy", policy], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "delete_queue", name], capture_output=True, timeout=60)


def test_a_batch_the_broker_refuses_in_part_is_refused_whole_and_nothing_waits_forever(
    nacking_queue: str, clean_postgres_url: str, make_app: AppFactory
) -> None:
    name = f"tests.nacked_{nacking_queue[-8:]}"

    @task(name, queue=nacking_queue)
    def nacked() -> None:
        return None

    app = make_app(executor="celery", broker_url=broker_url("amqp"), database_url=clean_postgres_url)
    # The queue exists (declared by a first message) before the batch, which it cannot hold whole.
    assert isinstance(app.manager.submit_many([SubmitRequest(name)])[0], TaskRecord)
    results = app.manager.submit_many([SubmitRequest(name)] * 4)
    assert all(isinstance(r, ExecutorError) for r in results), results
    counts = [int(m.group(1)) for m in (re.search(r"refused (\d+) messages", str(r)) for r in results) if m]
    assert len(counts) == 4, [str(r) for r in results]
    assert set(counts) <= {3, 4}  # one frame may nack them all
    failed = app.store.query(TaskQuery(types=[name], states=[Status.FAILURE], limit=10)).items
    assert len(failed) == 4  # each ends FAILURE "not dispatched", none waits for a message
    assert all(never_dispatched(r) for r in failed)
    # The channel was dropped with its unknown tags; the next batch opens a new one and goes through.
    subprocess.run(["rabbitmqctl", "purge_queue", nacking_queue], check=True, capture_output=True, timeout=60)
    assert all(isinstance(r, TaskRecord) for r in app.manager.submit_many([SubmitRequest(name)] * 2))


def test_a_batch_to_a_dead_rabbitmq_answers_an_error_for_each_task(
    clean_postgres_url: str, make_app: AppFactory
) -> None:
    app = make_app(executor="celery", broker_url="amqp://guest:guest@127.0.0.1:1//", database_url=clean_postgres_url)
    results = app.manager.submit_many([SubmitRequest("system.ping")] * 3)
    assert all(isinstance(r, ExecutorError) for r in results), results
    stored = app.store.query(TaskQuery(types=["system.ping"], limit=10)).items
    assert len(stored) == 3
    assert all(never_dispatched(r) for r in stored)

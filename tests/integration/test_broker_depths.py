"""Queue depths read from the broker itself, on Redis (priority lists) and RabbitMQ (queue_declare)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.services import fresh_broker


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.rabbitmq)]
)
def idle_broker(request: pytest.FixtureRequest) -> str:
    """A broker namespace no worker consumes from, emptied."""
    return fresh_broker(request.param, "conveyor-depths", redis_db=13)


def test_queued_messages_are_counted_by_the_broker_per_queue_and_priority(
    make_app: AppFactory, idle_broker: str, tmp_path: object
) -> None:
    """Three waiting messages on `default` (two of them at other priorities) and one on `cpu`, with no worker."""
    app = make_app(start=False, executor="celery", broker_url=idle_broker)
    with TestClient(create_app(app, scheduler=False)) as client:
        for body in (
            {"task_type": "system.ping"},
            {"task_type": "system.ping", "priority": 5},
            {"task_type": "system.ping", "priority": 9},
            {"task_type": "system.ping", "queue": "cpu"},
        ):
            assert client.post("/api/v1/tasks", json=body).status_code == 202
        queues = {q["queue"]: q for q in client.get("/api/v1/queues").json()["data"]}
        assert queues["default"]["broker_depth"] == 3
        assert queues["default"]["depth"] == 3  # the store agrees: three PENDING
        assert queues["cpu"]["broker_depth"] == 1
        metrics = client.get("/metrics").text
        assert 'conveyor_broker_queue_depth{queue="default"} 3.0' in metrics

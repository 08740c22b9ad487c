"""The Celery app of a Conveyor, the same in the API process (which sends) and in a worker (which runs).

Its tasks are the registry's task types, by the same names; its queues are
every queue a task type names. No result backend: the store keeps results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import MissingExtra
from conveyor.executors.celery.worker import install_tasks
from conveyor.workload import declared_queues

if TYPE_CHECKING:
    from celery import Celery

    from conveyor.app import Conveyor

__all__ = ["REDIS_PRIORITY_STEPS", "SEND_CONFIRM_TIMEOUT", "SEND_RETRY", "create_celery_app", "is_amqp"]

#: Redis has no native priorities: Celery emulates them with one list per step
REDIS_PRIORITY_STEPS = list(range(10))
#: how a send connects: one retry, quickly (kombu's failover options)
SEND_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
#: seconds a send on RabbitMQ waits for the broker's confirm before it is an error
SEND_CONFIRM_TIMEOUT = 5.0


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp", "pyamqp"))


def _celery() -> Any:
    try:
        import celery
    except ImportError as e:  # pragma: no cover - installed with the extra
        raise MissingExtra("celery", "celery") from e
    return celery


def create_celery_app(conveyor: Conveyor) -> Celery:
    """A Celery app whose tasks are the registry's task types, by the same names."""
    celery = _celery()
    from kombu.entity import Queue as KombuQueue

    queue_cls: Any = KombuQueue

    s = conveyor.settings
    app = celery.Celery("conveyor", broker=s.broker_url, set_as_current=False)
    amqp = is_amqp(s.broker_url)
    queues = sorted(declared_queues(conveyor.registry, conveyor.workloads))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # the store keeps results; no result backend
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=s.celery_prefetch,
        # Task events cost a publish per task state; Flower switches them on
        # in the workers when it starts (its --enable-events, the default).
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        task_default_queue="default",
        task_queues=[
            queue_cls(q, routing_key=q, queue_arguments={"x-max-priority": 9} if amqp else None) for q in queues
        ],
        task_default_priority=0,
        # Every queue on RabbitMQ takes priorities, also one a worker creates from its -Q for a
        # workload it has not loaded: declared without the argument, it would clash with the same
        # queue declared by a process that has (PRECONDITION_FAILED), and that worker would not start.
        task_queue_max_priority=9 if amqp else None,
        # Sending gives up after one quick reconnect: a submit during a broker
        # outage answers 503 (or falls back) at once instead of after kombu's
        # default retries. Consumers reconnect on their own, unaffected.
        broker_connection_timeout=s.broker_timeout,
        broker_transport_options={
            **SEND_RETRY,
            **(
                {
                    # A hung Redis answers nothing: without a socket timeout a
                    # publish waits forever. Above BRPOP's 1 s, so consumers are unaffected.
                    "socket_timeout": max(s.broker_timeout, 2.0),
                    "socket_connect_timeout": s.broker_timeout,
                    "priority_steps": REDIS_PRIORITY_STEPS,
                    "sep": ":",
                    "queue_order_strategy": "priority",
                    "visibility_timeout": 12 * 3600,
                }
                if not amqp
                # Publisher confirms: a send returns once RabbitMQ has taken the
                # message, and one it refused or never took raises instead.
                else {"confirm_publish": True}
            ),
        },
        task_routes={t.name: {"queue": t.queue} for t in conveyor.registry},
        timezone="UTC",
        enable_utc=True,
    )
    install_tasks(app, conveyor)
    app.conveyor = conveyor
    return app

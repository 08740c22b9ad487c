"""The no-op task of each peer. Each one INCRs a Redis counter: the harness watches it to know when
all tasks ran, and every peer pays the same small cost for it."""

from __future__ import annotations

import os

import redis

BROKER = os.environ.get("PEER_BROKER", "redis://127.0.0.1:6379/11")  # Celery's; the others use Redis
REDIS = "redis://127.0.0.1:6379/11"
QUEUE = os.environ.get("PEER_QUEUE", "peer-bench")
COUNTER = os.environ.get("PEER_COUNTER", "peer-bench:done")
_counter = redis.Redis.from_url(os.environ.get("PEER_COUNTER_URL", "redis://127.0.0.1:6379/11"))


def count() -> None:
    _counter.incr(COUNTER)


# -- Celery
from celery import Celery  # noqa: E402

celery_app = Celery("peer", broker=BROKER)
# PEER_SAFE=1: the delivery guarantees Conveyor's Celery app runs with (late
# acks, requeue on a lost worker, prefetch 1), to separate their cost from ours.
SAFE = os.environ.get("PEER_SAFE") == "1"
# PEER_BACKEND=1: also a Redis result backend that records STARTED, as every
# seed runs Celery (their progress endpoints read it); Conveyor's store replaces it.
BACKEND = os.environ.get("PEER_BACKEND") == "1"
if BACKEND:
    celery_app.conf.update(result_backend="redis://127.0.0.1:6379/12", task_track_started=True, result_expires=600)
celery_app.conf.update(
    task_ignore_result=not BACKEND,
    worker_prefetch_multiplier=1 if SAFE else 4,
    task_acks_late=SAFE,
    task_reject_on_worker_lost=SAFE,
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
)


@celery_app.task(name="peer.noop")
def celery_noop() -> None:
    count()


# -- Dramatiq
import dramatiq  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

dramatiq.set_broker(RedisBroker(url=REDIS))


@dramatiq.actor(queue_name=QUEUE)
def dramatiq_noop() -> None:
    count()


# -- Huey
from huey import RedisHuey  # noqa: E402

huey = RedisHuey(QUEUE, url=REDIS, results=False)


@huey.task()
def huey_noop() -> None:
    count()


# -- RQ
def rq_noop() -> None:
    count()

"""The bare FastAPI apps ``bench.http`` runs beside ``conveyor serve``: what a user would write instead.

``empty``: an endpoint that does nothing (the ceiling of FastAPI + uvicorn
here). ``lpush``: one Redis ``LPUSH`` of the task (redis.asyncio, on the
loop). ``celery``: Celery ``delay()`` of the peers' no-op task
(``bench.peers.apps``), in a sync route as the seeds wrote it. Each answers
202 with an id, like the submit it stands beside.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from fastapi import FastAPI

REDIS = os.environ.get("PEER_COUNTER_URL", "redis://127.0.0.1:6379/11")
LIST = os.environ.get("PEER_LIST", "http-bench:lpush")

empty = FastAPI()


@empty.post("/tasks", status_code=202)
async def empty_submit(body: dict[str, Any]) -> dict[str, str]:
    return {"task_id": "0", "status": "PENDING"}


@empty.get("/tasks/{task_id}/status/")
async def empty_status(task_id: str) -> dict[str, str]:
    return {"task_id": task_id, "status": "SUCCESS"}


lpush = FastAPI()


@lpush.post("/tasks", status_code=202)
async def lpush_submit(body: dict[str, Any]) -> dict[str, str]:
    task_id = uuid.uuid4().hex
    await _redis().lpush(LIST, json.dumps({"id": task_id, **body}))
    return {"task_id": task_id, "status": "PENDING"}


_client: Any = None


def _redis() -> Any:
    global _client
    if _client is None:
        import redis.asyncio

        _client = redis.asyncio.Redis.from_url(REDIS)
    return _client


celery = FastAPI()


@celery.post("/tasks", status_code=202)
def celery_submit(body: dict[str, Any]) -> dict[str, str]:
    from bench.peers.apps import celery_noop

    result = celery_noop.delay()
    return {"task_id": result.id, "status": "PENDING"}

"""The peer for submit latency: what the seeds wrote by hand, a FastAPI route calling Celery.

A record of the task is kept by Celery's Redis backend only when a worker
runs it; the route just sends the message and answers with the id.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from fastapi import FastAPI

celery_app = Celery("bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/7"))
app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/tasks", status_code=202)
def submit(body: dict[str, Any]) -> dict[str, str]:
    result = celery_app.send_task("bench.noop", kwargs={}, queue="bench-latency")
    return {"task_id": result.id, "status": "PENDING"}

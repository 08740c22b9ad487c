"""/api/v1/stats: how many of the caller's tasks finished, and how, per time bucket."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Query

from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import iso
from conveyor.errors import InvalidParams
from conveyor.stores.base import Throughput

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/stats", tags=["system"])

#: more buckets than this make a chart nobody can read and a response nobody needs
MAX_BUCKETS = 1440


@router.get("", summary="Tasks finished per time bucket (SUCCESS, FAILURE, CANCELLED)")
async def stats(
    app: App,
    tenant: Tenant,
    window: Annotated[int, Query(ge=60, le=86_400, description="seconds back from now")] = 3600,
    bucket: Annotated[int, Query(ge=1, le=86_400, description="seconds per bucket")] = 60,
) -> dict[str, Any]:
    """Every bucket of the window, oldest first, empty ones included; the last one is still filling."""
    if bucket > window:
        raise InvalidParams.for_field("bucket", "must not be longer than the window")
    n = -(-window // bucket)
    if n > MAX_BUCKETS:
        raise InvalidParams.for_field("bucket", f"window/bucket must be at most {MAX_BUCKETS} buckets")
    current = (int(time.time()) // bucket) * bucket
    since = float(current - (n - 1) * bucket)
    found = await anyio.to_thread.run_sync(app.store.throughput, tenant, since, bucket)
    by_start = {int(b.start): b for b in found}
    buckets = [by_start.get(since_i, Throughput(float(since_i))) for since_i in range(int(since), current + 1, bucket)]
    success = sum(b.success for b in buckets)
    failure = sum(b.failure for b in buckets)
    cancelled = sum(b.cancelled for b in buckets)
    return {
        "window": window,
        "bucket": bucket,
        "since": iso(since),
        "until": iso(current + bucket),
        "data": [
            {
                "start": iso(b.start),
                "timestamp": b.start,
                "success": b.success,
                "failure": b.failure,
                "cancelled": b.cancelled,
                "total": b.total,
                "failure_rate": _rate(b.failure, b.total),
            }
            for b in buckets
        ],
        "totals": {
            "success": success,
            "failure": failure,
            "cancelled": cancelled,
            "total": success + failure + cancelled,
        },
        "failure_rate": _rate(failure, success + failure + cancelled),
    }


def _rate(failed: int, finished: int) -> float | None:
    """The share of finished tasks that failed; None when nothing finished."""
    return round(failed / finished, 4) if finished else None

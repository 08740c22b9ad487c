"""Settings of the movement logs workload (``CONVEYOR_MOVEMENT_LOGS_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MovementLogsSettings"]


class MovementLogsSettings(BaseSettings):
    """Where the log queue lives, how big a batch is and how often one runs."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_MOVEMENT_LOGS_", extra="ignore")

    #: ``redis://host:port/db`` of the log queue; empty: the broker's or store's Redis when
    #: one is in use, else the durable queue table in the SQL database
    redis_url: str = ""
    #: ``auto`` (as above), or force ``redis`` / ``sql``
    queue_backend: Literal["auto", "redis", "sql"] = "auto"
    #: the Redis list producers push to; seed 003's operators run ``redis-cli LLEN movement_logs``
    queue_name: str = Field(default="movement_logs", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    #: logs one batch moves at most (M)
    batch_size: int = Field(default=10_000, ge=1, le=100_000)
    #: seconds between scheduled batches (N)
    interval: float = Field(default=10.0, gt=0, le=86_400)
    #: batches one scheduled run moves at most (it stops as soon as the queue is empty)
    batches_per_run: int = Field(default=20, ge=1, le=10_000)
    #: logs one POST may carry as a JSON list
    max_list: int = Field(default=1000, ge=1, le=100_000)
    #: a claimed batch whose worker has not finished it within this many seconds is taken over
    lease_seconds: float = Field(default=60.0, gt=0, le=86_400)
    #: rows per multi-row INSERT inside a batch (progress is reported after each)
    chunk_size: int = Field(default=1000, ge=1, le=100_000)

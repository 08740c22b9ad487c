"""Prometheus metrics of one Conveyor, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conveyor.records import Status
from conveyor.stores.base import Change, QueueStats

__all__ = ["Metrics"]

_OUTCOMES = {
    Status.SUCCESS: "succeeded",
    Status.FAILURE: "failed",
    Status.RETRY: "retried",
    Status.CANCELLED: "cancelled",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = Counter(
            "conveyor_tasks",
            "Tasks by type and event (submitted, started, succeeded, failed, retried, cancelled)",
            ["task_type", "event"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "conveyor_task_duration_seconds",
            "Run time of finished attempts",
            ["task_type"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "conveyor_queue_depth", "Tasks waiting to run, by queue", ["queue"], registry=self.registry
        )
        self.in_flight = Gauge(
            "conveyor_tasks_in_flight", "Tasks running now, by queue", ["queue"], registry=self.registry
        )
        self.by_state = Gauge(
            "conveyor_tasks_stored",
            "Task records in the store, by queue and state (the same on every API replica)",
            ["queue", "state"],
            registry=self.registry,
        )
        self.broker_depth = Gauge(
            "conveyor_broker_queue_depth",
            "Messages waiting in the broker, by queue (Celery only)",
            ["queue"],
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str], Any] = {}
        self._types: dict[str, str] = {}
        self._started: dict[str, float] = {}

    def _count(self, task_type: str, event: str, n: int = 1) -> None:
        # labels() costs a lock and a dict build; a hot path keeps the children.
        child = self._counters.get((task_type, event))
        if child is None:
            child = self._counters[(task_type, event)] = self.tasks.labels(task_type, event)
        child.inc(n)

    def submitted(self, task_type: str, n: int = 1) -> None:
        self._count(task_type, "submitted", n)

    def remember(self, task_id: str, task_type: str) -> None:
        self._types[task_id] = task_type

    def record_changes(self, changes: Sequence[Change], type_of: Callable[[str], str | None] | None = None) -> None:
        """Count state changes as they are written (called after each flush)."""
        for change in changes:
            for event in change.events:
                if event.kind != "state":
                    continue
                task_type = (
                    self._types.get(change.task_id) or (type_of(change.task_id) if type_of else None) or "unknown"
                )
                if event.state is Status.PROCESSING:
                    self._count(task_type, "started")
                    self._started[change.task_id] = event.at
                    continue
                label = _OUTCOMES.get(event.state)
                if label:
                    self._count(task_type, label)
                started = self._started.pop(change.task_id, None)
                if started is not None and event.state is not Status.PENDING:
                    self.duration.labels(task_type).observe(max(0.0, event.at - started))
                if event.state is not Status.RETRY:
                    self._types.pop(change.task_id, None)

    def set_queues(self, stats: Sequence[QueueStats], broker_depths: dict[str, int] | None = None) -> None:
        """Gauges read from the store (and broker) at scrape time, so they hold whichever process ran the tasks."""
        for q in stats:
            self.queue_depth.labels(q.queue).set(q.depth)
            self.in_flight.labels(q.queue).set(q.counts.get("PROCESSING", 0))
            for state in Status:
                self.by_state.labels(q.queue, state.value).set(q.counts.get(state.value, 0))
        for queue, depth in (broker_depths or {}).items():
            self.broker_depth.labels(queue).set(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)

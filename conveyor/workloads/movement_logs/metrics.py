"""Movement logs figures in ``/metrics``: read from the queue and the batch history at scrape time.

Batches run in worker processes, so nothing is counted in the API's memory:
every figure comes from Redis (or the queue table) and ``movement_logs_batches``,
the same on every API replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.workloads.movement_logs import db
from conveyor.workloads.movement_logs.service import open_queue, workload_settings

if TYPE_CHECKING:
    from conveyor.app import Conveyor

__all__ = ["LogsCollector", "install"]

log = logging.getLogger("conveyor.movement_logs")


class LogsCollector(Collector):
    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor

    def collect(self) -> Iterator[Metric]:
        app = self.conveyor
        wl = workload_settings(app)
        labels = ["queue", "backend"]
        up = GaugeMetricFamily(
            "conveyor_movement_logs_queue_up", "1 when the log queue answered this scrape", labels=labels
        )
        try:
            queue = open_queue(app.settings, wl, app.store.engine)
            values = [queue.name, queue.kind]
            length = queue.length()
            processing = queue.processing()
            dead = queue.dead_letters()
            oldest = queue.oldest_enqueued_at()
        except Exception as e:  # a scrape reports the queue down; it never fails
            log.warning("movement logs metrics: the queue did not answer: %s", e)
            up.add_metric([wl.queue_name, "unknown"], 0)
            yield up
            return
        up.add_metric(values, 1)
        yield up
        for name, doc, value in (
            ("conveyor_movement_logs_queue_length", "Logs waiting in the queue", length),
            ("conveyor_movement_logs_processing", "Logs taken by a batch and not yet committed", processing),
            ("conveyor_movement_logs_dead_letters", "Queue items that were not movement logs, set aside", dead),
            (
                "conveyor_movement_logs_oldest_age_seconds",
                "Age of the oldest waiting log (0 when none waits)",
                max(0.0, time.time() - oldest) if oldest is not None else 0.0,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            gauge.add_metric(values, float(value))
            yield gauge
        engine = app.store.engine
        if engine is None:
            return
        try:
            totals = db.batch_totals(engine)
            last = db.batch_history(engine, 1)
        except Exception as e:
            log.warning("movement logs metrics: the batch history could not be read: %s", e)
            return
        for key, doc in (
            ("batches", "Batches that moved anything"),
            ("moved", "Logs written into movement_logs"),
            ("duplicates", "Logs a batch found already stored (re-runs after a crash)"),
            ("invalid", "Queue items that were not movement logs"),
            ("recovered", "Batches that took over the items of a worker that died"),
        ):
            counter = CounterMetricFamily(f"conveyor_movement_logs_{key}", doc)
            counter.add_metric([], totals[key])
            yield counter
        if last:
            b = last[0]
            for name, doc, value in (
                ("conveyor_movement_logs_last_batch_size", "Logs the latest batch moved", b["moved"]),
                (
                    "conveyor_movement_logs_last_batch_seconds",
                    "How long the latest batch took",
                    b["finished_at"] - b["started_at"],
                ),
                (
                    "conveyor_movement_logs_last_batch_timestamp_seconds",
                    "When the latest batch finished",
                    b["finished_at"],
                ),
            ):
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], float(value))
                yield gauge


def install(conveyor: Conveyor) -> None:
    """Add the collector to this Conveyor's metrics registry, once."""
    metrics = conveyor.metrics
    if getattr(metrics, "_movement_logs_collector", None) is None:
        collector = LogsCollector(conveyor)
        metrics.registry.register(collector)
        metrics._movement_logs_collector = collector  # type: ignore[attr-defined]

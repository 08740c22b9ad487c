"""The reliability table's rows: every fault test records what it measured.

A fault test ends with one :class:`FaultRow` per scenario it ran and hands it
to the ``fault_report`` fixture. The row is checked (0 lost, one outcome per
task, 0 5xx, 0 cross-tenant reads unless the test says what it expects) by the
test itself; the fixture only keeps it. When ``CONVEYOR_FAULT_REPORT`` names a
file, rows are appended to it as JSON lines, and ``scripts/faults`` turns that
file into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class FaultRow:
    """One fault scenario and its figures. ``None`` means "not measured by this scenario"."""

    fault: str  # what was done, e.g. "SIGKILL of a Celery worker mid-burst"
    setup: str  # executor / store / broker, e.g. "celery+redis broker, postgres store"
    submitted: int | None = None
    accepted: int | None = None
    completed_once: int | None = None  # tasks with exactly one final outcome
    lost: int | None = None  # accepted tasks with no final outcome at the end
    max_executions: int | None = None  # most body runs seen for one task
    recovery_s: float | None = None  # from the fault's end to the backlog drained / service healthy
    http_statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    other_tenant_p50_ms: float | None = None
    other_tenant_p99_ms: float | None = None
    baseline_p50_ms: float | None = None
    baseline_p99_ms: float | None = None
    #: what the other tenant may wait beyond +20 % of its baseline p99, by design (a running task
    #: is not preempted: with every worker busy, a new task waits for one to end)
    allowance_ms: float = 0.0
    cross_tenant_reads: int | None = None
    notes: str = ""
    test: str = ""  # filled by the fixture
    at: float = dataclasses.field(default_factory=time.time)

    def count_statuses(self, statuses: Iterable[int | str]) -> FaultRow:
        counts = Counter(str(s) for s in statuses)
        for status, n in counts.items():
            self.http_statuses[status] = self.http_statuses.get(status, 0) + n
        return self

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.http_statuses.items() if status.startswith("5") and status != "503")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRow:
        """A row read back from the report file; keys a newer writer added are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def verdicts(self) -> list[str]:
        """What this row breaks of the suite's promises (empty when it keeps them all)."""
        broken = []
        if self.lost:
            broken.append(f"{self.lost} lost")
        if self.accepted is not None and self.completed_once is not None and self.completed_once != self.accepted:
            broken.append(f"{self.accepted - self.completed_once} without exactly one outcome")
        # max_executions > 1 breaks nothing: execution is at-least-once, the outcome exactly once.
        if self.server_errors:
            broken.append(f"{self.server_errors} 5xx")
        if self.cross_tenant_reads:
            broken.append(f"{self.cross_tenant_reads} cross-tenant reads")
        baseline = self.baseline_p99_ms
        if (
            self.other_tenant_p99_ms is not None
            and baseline
            and self.other_tenant_p99_ms > 1.2 * baseline + self.allowance_ms
        ):
            extra = f" + {self.allowance_ms:g} ms" if self.allowance_ms else ""
            broken.append(f"other tenant's p99 past +20 % of its baseline{extra}")
        return broken


def fault_scale() -> int:
    """``CONVEYOR_FAULT_SCALE``: how many times the default counts a scenario runs (1 in CI, 5 for the table)."""
    return max(1, int(os.environ.get("CONVEYOR_FAULT_SCALE", "1")))


def percentiles_ms(samples_s: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies given in seconds, in milliseconds."""
    if not samples_s:
        return (float("nan"), float("nan"))
    ordered = sorted(samples_s)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000
    return (p50, p99)


class FaultReport:
    """What the ``fault_report`` fixture yields: ``fault_report.add(row)``."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[FaultRow] = []
        target = os.environ.get("CONVEYOR_FAULT_REPORT")
        self.path = Path(target) if target else None

    def add(self, row: FaultRow) -> FaultRow:
        row.test = self.test
        self.rows.append(row)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(row.to_json()) + "\n")
        return row

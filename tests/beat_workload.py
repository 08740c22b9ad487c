"""A workload for the beat tests: one periodic job a second, on the built-in ping.

Loaded with ``CONVEYOR_WORKLOADS=system,tests.beat_workload`` (and the repository
on ``PYTHONPATH``).
"""

from __future__ import annotations

from conveyor.scheduler import PeriodicJob

__all__ = ["periodic_jobs"]

periodic_jobs = [PeriodicJob("tick", "system.ping", every=1, params={"payload": "beat"})]

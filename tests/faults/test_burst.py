"""A burst of tasks over HTTP on the embedded default: every accepted task completes, once, and no 5xx.

``conveyor serve`` on SQLite in a subprocess, as ``pip install && conveyor
serve`` runs it; 2,000 submits by default (``CONVEYOR_FAULT_SCALE=5``: the
10,000 of the reliability table) from 100 concurrent clients.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import Server
from tests.faults.figures import served_store, store_figures
from tests.faults.report import FaultReport, FaultRow, fault_scale

pytestmark = pytest.mark.slow

CLIENTS = 100


async def burst(url: str, count: int) -> tuple[list[str], Counter[int | str]]:
    """``count`` submits of ``system.ping``, ``CLIENTS`` at a time: the ids accepted and every status seen.

    A request that got no answer at all (connection refused or reset, read timeout) counts as "no answer".
    """
    statuses: Counter[int | str] = Counter()
    accepted: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        todo = iter(range(count))

        async def sender() -> None:
            for i in todo:
                body = {"task_type": "system.ping", "params": {"payload": str(i)}}
                try:
                    r = await client.post("/api/v1/tasks", json=body)
                except httpx.TransportError as e:
                    statuses[f"no answer ({type(e).__name__})"] += 1
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 202:
                    accepted.append(r.json()["task_id"])

        await asyncio.gather(*(sender() for _ in range(CLIENTS)))
    return accepted, statuses


def wait_drained(url: str, expected: int, timeout: float) -> None:
    """Until the server counts ``expected`` finished tasks (the list's ``count`` under each final state)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            done = sum(
                client.get("/api/v1/tasks", params={"status": s, "limit": 1}).json()["count"]
                for s in ("SUCCESS", "FAILURE", "CANCELLED")
            )
            if done >= expected:
                return
            assert time.monotonic() < deadline, f"{done} of {expected} finished after {timeout}s"
            time.sleep(0.5)


def test_a_burst_over_http_completes_every_accepted_task_once_with_no_5xx(
    tmp_path: Path, fault_report: FaultReport
) -> None:
    count = 2_000 * fault_scale()
    with Server(tmp_path) as server:
        started = time.monotonic()
        accepted, statuses = asyncio.run(burst(server.url, count))
        submitted_s = time.monotonic() - started
        wait_drained(server.url, len(accepted), timeout=60 + count / 20)
        drained_s = time.monotonic() - started
    with served_store(tmp_path) as store:
        figures = store_figures(store, accepted)
        succeeded = sum(r.state.value == "SUCCESS" for r in store.get_many(accepted[:500]))
    row = fault_report.add(
        FaultRow(
            fault=f"a burst of {count:,} submits from {CLIENTS} clients",
            setup="conveyor serve (subprocess), local pool, SQLite",
            submitted=count,
            accepted=len(accepted),
            notes=f"submitted in {submitted_s:.0f} s, all finished {drained_s:.0f} s after the first submit",
            **figures,
        ).count_statuses(statuses.elements())
    )
    assert len(set(accepted)) == len(accepted) == count, statuses  # no 4xx/503 and no request unanswered
    assert row.completed_once == row.accepted
    assert row.lost == 0
    assert row.max_executions == 1
    assert row.server_errors == 0
    assert succeeded == min(500, len(accepted))

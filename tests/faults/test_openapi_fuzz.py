"""Schemathesis over ``/openapi.json``: every operation, valid and invalid input, with a tenant's key: no 5xx.

The live app (its executor and workloads running) is fuzzed in process with
the examples schemathesis draws from each operation's schema, in its
positive and negative modes; a 503 is allowed (a dependency may be
unavailable), any other 5xx is a failure that names the operation and the
``curl`` to repeat it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.report import FaultReport, FaultRow, fault_scale

#: endless by design (the tenant's live stream); its answers are tested in tests/integration
SKIPPED = {"GET /api/v1/events"}
#: query parameters that make a route wait: capped so that one example takes at most a second
WAITS = {"timeout": 1.0}
HEADERS = {"X-API-Key": "fuzz-key"}

pytestmark = pytest.mark.slow


@pytest.fixture
def app(make_app: AppFactory) -> Iterator[FastAPI]:
    conveyor = make_app(start=False, api_keys={"fuzz-key": "fuzzer", "other-key": "other"}, concurrency=4)
    api = create_app(conveyor, scheduler=False)
    with TestClient(api):  # the lifespan: executor and workloads started, as under `conveyor serve`
        yield api


def fuzz(operation: Any, mode: GenerationMode, examples: int, statuses: Counter[int], errors: list[str]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        for name, cap in WAITS.items():
            if isinstance(case.query, dict) and isinstance(case.query.get(name), int | float):
                case.query[name] = min(case.query[name], cap)
        try:
            response = case.call(headers=HEADERS, timeout=30)
        except Exception as e:  # the app raised through the ASGI transport: a 500 to a real client
            statuses[500] += 1
            errors.append(f"{operation.label} raised {type(e).__name__}: {e} — {case.as_curl_command()}")
            return
        statuses[response.status_code] += 1
        if response.status_code >= 500 and response.status_code != 503:
            errors.append(f"{operation.label} {response.status_code}: {response.text[:200]} — {case.as_curl_command()}")

    # Unsatisfiable: nothing of this mode to draw (an operation with no input cannot be made invalid).
    with contextlib.suppress(Unsatisfiable):
        run()


def test_schemathesis_finds_no_server_error_on_any_operation(app: FastAPI, fault_report: FaultReport) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    examples = 4 * fault_scale()
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.label not in SKIPPED]
    for operation in fuzzed:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, examples, statuses, errors)
    row = fault_report.add(
        FaultRow(
            fault="schemathesis over /openapi.json (positive and negative examples)",
            setup="in-process API with a tenant's key, local pool, SQLite, every default workload",
            submitted=sum(statuses.values()),
            notes=f"{len(fuzzed)} of {len(operations)} operations, up to {examples} examples each per mode "
            f"(skipped: {', '.join(sorted(SKIPPED))}, an endless stream)"
            + (f"; server errors: {' | '.join(errors[:5])}" if errors else ""),
        ).count_statuses(statuses.elements())
    )
    assert errors == []
    assert row.server_errors == 0
    assert len(fuzzed) > 40  # every workload's routes are described, not only the core's

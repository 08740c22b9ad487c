"""Fixtures of the fault suite."""

from __future__ import annotations

import pytest

from tests.faults.report import FaultReport


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    """Where a fault test leaves its figures (see ``tests/faults/report.py``)."""
    return FaultReport(request.node.nodeid)

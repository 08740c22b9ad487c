"""Turn the fault suite's rows (``CONVEYOR_FAULT_REPORT``, JSON lines) into ``docs/reliability.md``.

``scripts/faults`` runs it after pytest::

    python -m tests.faults.render build/faults.jsonl --junit build/faults.xml \\
        --command "scripts/faults" --output docs/reliability.md

The page is generated: edit the text here, not the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from tests.faults.report import FaultRow

GUARANTEES = """\
## What Conveyor promises, and what this page checks

- **Nothing accepted is lost.** A task answered `202` is in the store before
  the answer leaves; it ends in a final state (SUCCESS, FAILURE or CANCELLED)
  whatever process, broker or database dies meanwhile. Column *lost*: accepted
  tasks with no final outcome when the scenario ends.
- **At-least-once execution, exactly-once outcome.** A task whose worker or
  server dies mid-body runs again (its lease lapses and recovery hands it to
  another worker), so a body may run more than once — write bodies that may be
  repeated (idempotent side effects, or keyed on the task id). Its *outcome*
  is recorded once: one final state on its timeline, and every execution
  counted in `attempts`. Columns *completed once* (tasks with exactly one
  final state) and *max executions* (most body runs seen for one task).
- **A dependency that fails answers 503, never 500.** A stopped or hung
  database, broker or Redis answers `503` with `Retry-After`; recovery needs
  no restart. Column *HTTP statuses*; the verdict counts 5xx other than 503.
- **Tenants do not see each other.** Another tenant's ids answer 404 as if
  unknown (column *cross-tenant reads*). One tenant's flood makes another
  tenant's task wait for a running task to end at most, never for the
  flood's backlog (the verdict allows one flood task beyond +20 % of the
  baseline p99); with `CONVEYOR_TENANT_MAX_WORKERS` below the lane's size,
  a worker is always left to other tenants and their p99 stays within +20 %
  of its baseline.
- **Hostile input is a 4xx JSON answer.** Schemathesis over `/openapi.json`
  and the hostile-upload set find no 5xx and store nothing.

## How to run it

```bash
scripts/faults                           # every scenario (make faults), writes this page
scripts/faults --fast                    # the CI subset (tests not marked slow), into build/
CONVEYOR_FAULT_SCALE=5 scripts/faults    # five times the default counts (the 10,000-task burst)
scripts/faults -k burst                  # extra arguments go to pytest
```

Each scenario is a test in `tests/faults/` that runs on private instances
(its own `conveyor serve`, `redis-server`, PostgreSQL cluster or
`rabbitmq-server`; the Redis-store row takes a fresh vhost of the shared
RabbitMQ, which it never stops), asserts the correctness figures itself, and records a
row (`tests/faults/report.py`). CI runs them as part of `tests/` at the
default scale.
"""


def _cell(value: object, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _statuses(row: FaultRow) -> str:
    if not row.http_statuses:
        return "–"
    return ", ".join(f"{status}×{n}" for status, n in sorted(row.http_statuses.items()))


def _latency(row: FaultRow) -> str:
    if row.other_tenant_p50_ms is None and row.other_tenant_p99_ms is None:
        return "–"
    text = f"{_cell(row.other_tenant_p50_ms)} / {_cell(row.other_tenant_p99_ms)}"
    if row.baseline_p50_ms is not None or row.baseline_p99_ms is not None:
        text += f" vs {_cell(row.baseline_p50_ms)} / {_cell(row.baseline_p99_ms)}"
    if row.allowance_ms:
        text += f" (+{row.allowance_ms:g} ms allowed)"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Iterable[FaultRow]) -> str:
    head = (
        "| fault | setup | submitted | accepted | completed once | lost | max executions | recovery (s) "
        "| HTTP statuses | other tenant p50 / p99 ms (vs baseline) | cross-tenant reads | verdict |"
    )
    lines = [head, "|" + "---|" * 12]
    for row in rows:
        broken = row.verdicts()
        verdict = "ok" if not broken else "**" + "; ".join(broken) + "**"
        cells = [
            _escape(row.fault),
            _escape(row.setup),
            _cell(row.submitted),
            _cell(row.accepted),
            _cell(row.completed_once),
            _cell(row.lost),
            _cell(row.max_executions),
            _cell(row.recovery_s),
            _statuses(row),
            _latency(row),
            _cell(row.cross_tenant_reads),
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _junit_summary(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    text = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    return text + f" in {float(suite.get('time', '0')):.0f} s"


def _failed_tests(path: Path | None) -> list[str]:
    if path is None or not path.exists():
        return []
    failed = []
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return failed


def render(
    rows: list[FaultRow], *, command: str, uptime: str, scale: int, junit: Path | None, when: datetime.datetime
) -> str:
    broken = [r for r in rows if r.verdicts()]
    lost = sum(r.lost or 0 for r in rows)
    server_errors = sum(r.server_errors for r in rows)
    cross = sum(r.cross_tenant_reads or 0 for r in rows)
    outcomes = sum(
        (r.accepted - r.completed_once) for r in rows if r.accepted is not None and r.completed_once is not None
    )
    parts = [
        "# Reliability: the fault suite's figures",
        "",
        "<!-- generated by tests/faults/render.py from a run of scripts/faults; do not edit by hand -->",
        "",
        f"- **Run:** {when:%Y-%m-%d %H:%M} UTC, `{command}` (`CONVEYOR_FAULT_SCALE={scale}`)",
        f"- **Machine:** `{uptime}`",
    ]
    summary = _junit_summary(junit)
    if summary:
        parts.append(f"- **Tests:** {summary}")
    parts += [
        f"- **Verdicts over {len(rows)} rows:** {lost} lost, {outcomes} tasks without exactly one outcome, "
        f"{server_errors} 5xx (other than 503), {cross} cross-tenant reads"
        + (" — every row keeps every promise." if not broken else f" — {len(broken)} rows break one (in bold)."),
        "",
    ]
    failed = _failed_tests(junit)
    if failed:
        parts += ["Failed tests in this run (their rows, if any, are above what they asserted):", ""]
        parts += [f"- `{name}`" for name in failed]
        parts.append("")
    parts += [
        table(rows),
        "",
        "`–`: not measured by that scenario. *Recovery*: from the fault's end to the service healthy and the "
        "backlog drained. *HTTP statuses*: every answer the scenario's clients saw, by status. "
        "Notes per row:",
        "",
    ]
    parts += [f"- *{_escape(r.fault)}* (`{r.test}`): {_escape(r.notes)}" for r in rows if r.notes]
    parts += ["", GUARANTEES]
    return "\n".join(parts)


def read_rows(path: Path) -> list[FaultRow]:
    if not path.exists():
        return []
    rows = [FaultRow.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return sorted(rows, key=lambda r: (r.test, r.at))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="the JSON-lines file the tests appended to")
    parser.add_argument("--output", type=Path, default=Path("docs/reliability.md"))
    parser.add_argument("--junit", type=Path, default=None, help="pytest's --junitxml file, for the pass counts")
    parser.add_argument("--command", default="scripts/faults")
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args(argv)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    text = render(
        read_rows(args.report),
        command=args.command,
        uptime=uptime,
        scale=args.scale,
        junit=args.junit,
        when=datetime.datetime.now(datetime.UTC),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"faults: {args.output} written from {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

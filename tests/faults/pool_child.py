"""A ``conveyor serve``-like process for recovery tests: a local pool that queues a backlog, then waits to be killed.

    python -m tests.faults.pool_child DATABASE_URL DATA_DIR N MARKS SECONDS

Prints ``queued`` once every task is submitted, then sleeps until SIGKILLed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    url, data_dir, n, marks, seconds = sys.argv[1:6]
    from conveyor import Conveyor, Settings, SubmitRequest

    settings = Settings(
        database_url=url,
        data_dir=Path(data_dir),
        concurrency=2,
        scheduler=False,
        max_unfinished_per_tenant=10**7,
        workloads=["system", "tests.faults.recovery_workload"],
    )
    app = Conveyor(settings).start()
    request = SubmitRequest("tests.mark", {"path": marks, "seconds": float(seconds)})
    total = int(n)
    for i in range(0, total, 1000):
        for answer in app.manager.submit_many([request] * min(1000, total - i)):
            if not hasattr(answer, "id"):
                raise SystemExit(f"refused: {answer!r}")
    print("queued", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()

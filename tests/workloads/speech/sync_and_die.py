"""A sync of the impression counters that SIGKILLs itself at a chosen point (run by the race test).

    python -m tests.workloads.speech.sync_and_die DATABASE_URL REDIS_URL POINT

POINT: ``after_move`` (the live hash renamed to a batch, nothing in SQL yet),
``after_commit`` (the batch committed to SQL, its Redis key not yet deleted),
or ``loop`` (sync again and again until the test kills the process).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import sqlalchemy as sa

from conveyor.workloads.speech import db
from conveyor.workloads.speech.impressions import counter_for


def main() -> None:
    database_url, redis_url, point = sys.argv[1:4]
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    real_apply = db.apply_impression_batch

    def apply(engine: sa.Engine, batch_id: str, counts: Any) -> bool:
        if point == "after_move":
            os.kill(os.getpid(), signal.SIGKILL)
        applied = real_apply(engine, batch_id, counts)
        if point == "after_commit":
            os.kill(os.getpid(), signal.SIGKILL)
        return applied

    db.apply_impression_batch = apply  # type: ignore[assignment]
    counter = counter_for(engine, redis_url)
    print("ready", flush=True)
    while True:
        counter.sync()
        if point != "loop":
            return  # nothing was pending: the kill point was never reached


if __name__ == "__main__":
    main()

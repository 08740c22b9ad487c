"""Sends to RabbitMQ with publisher confirms: one at a time beside one batch, messages per second.

    python -m bench.rabbitmq_sends [--messages 500] [--rounds 3]

``CeleryExecutor.dispatch`` waits for the broker's confirm after each message;
``dispatch_many`` publishes a batch and waits once for all its confirms
(``conveyor/executors/celery/confirms.py``). Both go to a throwaway queue on
the local RabbitMQ (deleted afterwards), nothing consumes them: this is the
submit side alone, what a ``submit_many`` or ``POST /api/v1/tasks/batch``
caller waits for.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    from conveyor import Conveyor, Settings, task
    from conveyor.executors.celery import CeleryExecutor
    from conveyor.records import TaskRecord, new_task_id, now

    queue = f"bench-sends-{uuid.uuid4().hex[:8]}"

    @task("bench.sends_probe", queue=queue)
    def probe() -> None:
        return None

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="conveyor-sends-")),
        database_url="memory://",
        executor="celery",
        broker_url=args.broker,
        workloads=["system"],
        scheduler=False,
    )
    app = Conveyor(settings)
    executor = app.executor
    assert isinstance(executor, CeleryExecutor)

    def records() -> list[TaskRecord]:
        t = now()
        return [
            TaskRecord(
                id=new_task_id(), type=probe.name, queue=queue, tenant="bench", params={}, created_at=t, updated_at=t
            )
            for _ in range(args.messages)
        ]

    executor.send(records()[0])  # connect and declare the queue first
    single, batch = [], []
    try:
        for _ in range(args.rounds):
            rs = records()
            t0 = time.perf_counter()
            for r in rs:
                executor.dispatch(r)
            single.append(len(rs) / (time.perf_counter() - t0))
            rs = records()
            t0 = time.perf_counter()
            errors = executor.dispatch_many(rs)
            batch.append(len(rs) / (time.perf_counter() - t0))
            assert not any(errors), errors
    finally:
        executor.stop()
        subprocess.run(["rabbitmqctl", "delete_queue", queue], capture_output=True, timeout=60)
    one, many = statistics.median(single), statistics.median(batch)
    print(f"# rabbitmq_sends  messages={args.messages}  rounds={args.rounds}  (median)")
    print(f"dispatch() one at a time, a confirm each        {one:8.0f} messages/s")
    print(f"dispatch_many() one batch, its confirms at once  {many:8.0f} messages/s   {many / one:5.2f}×")


if __name__ == "__main__":
    main()

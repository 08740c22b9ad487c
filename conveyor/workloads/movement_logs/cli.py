"""``conveyor logs check|sample|process``: seed 003's ``manage.py test_redis_celery`` as CLI verbs.

They act in this process on the configuration in the environment (the same
``CONVEYOR_*`` variables the server and workers read), as the seed's
management command did inside Django: no server needs to be running.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from conveyor.app import Conveyor

__all__ = ["app"]

app = typer.Typer(help="Movement logs: check the queue, add sample logs, run a batch.", no_args_is_help=True)
console = Console()

STATES = ("walking", "standing", "browsing", "queueing", "leaving")
STORES = ("Store A", "Store B", "Store C")


def _conveyor(*, executor: bool) -> Conveyor:
    from conveyor.app import Conveyor
    from conveyor.settings import Settings

    settings = Settings()
    # None loads every built-in workload that can load here; a list given by name must include this one.
    if settings.workloads is not None and "movement_logs" not in settings.workloads:
        settings = settings.model_copy(update={"workloads": [*settings.workloads, "movement_logs"]})
    if executor and settings.executor == "local":
        # One worker process is enough for a round trip.
        settings = settings.model_copy(update={"concurrency": 1})
    return Conveyor(settings).start(executor=executor)


def _check_redis(conveyor: Conveyor) -> tuple[bool, str]:
    from conveyor.workloads.movement_logs.queue import QueueUnavailable
    from conveyor.workloads.movement_logs.service import open_queue, workload_settings

    wl = workload_settings(conveyor)
    try:
        queue = open_queue(conveyor.settings, wl, conveyor.store.engine)
        queue.ping()
        length = queue.length()
    except QueueUnavailable as e:
        return False, str(e)
    where = getattr(queue, "url", "the SQL queue table")
    return True, f"{queue.kind} queue {queue.name!r} at {where}: {length} waiting, {queue.processing()} processing"


def _check_db(conveyor: Conveyor) -> tuple[bool, str]:
    from conveyor.workloads.movement_logs import db

    try:
        conveyor.store.ping()
        engine = conveyor.store.engine
        if engine is None:
            return False, f"the store is {conveyor.store.kind}; movement logs need SQL"
        return True, f"{engine.dialect.name}: {db.count_logs(engine)} movement logs stored"
    except Exception as e:
        return False, f"{type(e).__name__}: {str(e)[:300]}"


def _check_celery(conveyor: Conveyor, timeout: float) -> tuple[bool, str]:
    from conveyor.errors import ConveyorError

    t0 = time.perf_counter()
    try:
        record = conveyor.manager.submit_task("system.ping", {"payload": "conveyor logs check"})
        done = conveyor.manager.wait(record.id, timeout=timeout)
    except ConveyorError as e:
        return False, e.message
    ms = (time.perf_counter() - t0) * 1000
    if done.state.value != "SUCCESS":
        return False, f"{conveyor.settings.executor}: ping ended {done.state.value} after {ms:.0f} ms"
    host = (done.result or {}).get("host") if isinstance(done.result, dict) else None
    return True, f"{conveyor.settings.executor}: a worker on {host} answered in {ms:.0f} ms"


@app.command()
def check(
    all_: Annotated[bool, typer.Option("--all", help="every component (the default)")] = False,
    redis: Annotated[bool, typer.Option("--redis", help="the log queue (Redis, or the SQL queue table)")] = False,
    celery: Annotated[bool, typer.Option("--celery", help="a task round trip through the executor")] = False,
    database: Annotated[bool, typer.Option("--db", help="the database")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a worker")] = 15.0,
) -> None:
    """Test the log queue, the executor and the database (seed 003's --test-all / --test-redis / --test-celery)."""
    if all_ or not (redis or celery or database):
        redis = celery = database = True
    conveyor = _conveyor(executor=celery)
    rows: list[tuple[str, bool, str]] = []
    try:
        if redis:
            rows.append(("redis", *_check_redis(conveyor)))
        if database:
            rows.append(("database", *_check_db(conveyor)))
        if celery:
            rows.append(("celery", *_check_celery(conveyor, timeout)))
    finally:
        conveyor.stop(graceful=False)
    table = Table(title="Movement logs: checks")
    table.add_column("component")
    table.add_column("ok")
    table.add_column("detail")
    for name, ok, detail in rows:
        table.add_row(name, "[green]✓[/green]" if ok else "[red]✗[/red]", detail)
    console.print(table)
    if not all(ok for _, ok, _ in rows):
        raise typer.Exit(1)


@app.command()
def sample(
    count: Annotated[int, typer.Argument(min=1, max=1_000_000, help="how many sample logs")] = 10,
    tenant: Annotated[str | None, typer.Option(help="whose logs (default: the local tenant)")] = None,
) -> None:
    """Queue sample movement logs, as a camera would send them (seed 003's --add-sample-data)."""
    from conveyor.workloads.movement_logs.models import MovementIn, encode_item
    from conveyor.workloads.movement_logs.service import open_queue, workload_settings

    conveyor = _conveyor(executor=False)
    try:
        wl = workload_settings(conveyor)
        queue = open_queue(conveyor.settings, wl, conveyor.store.engine)
        owner = tenant or conveyor.settings.local_tenant
        rng = random.Random()
        length = 0
        for start in range(0, count, 1000):
            now = time.time()
            items = []
            for i in range(start, min(count, start + 1000)):
                x, y = rng.randint(0, 1800), rng.randint(0, 1000)
                log = MovementIn(
                    user_id=f"USER{rng.randint(1, 999):03d}",
                    track_id=i + 1,
                    bbox=[x, y, x + rng.randint(20, 120), y + rng.randint(40, 240)],
                    state=rng.choice(STATES),
                    store=rng.choice(STORES),
                )
                items.append(encode_item(log, owner, now)[1])
            length = queue.push(items, now)
    finally:
        conveyor.stop(graceful=False)
    console.print(f"Queued [bold]{count}[/bold] sample logs on the {queue.kind} queue {queue.name!r}; length {length}")


@app.command()
def process(
    max_batches: Annotated[int, typer.Option(min=1, max=10_000, help="batches in this run")] = 1,
    batch_size: Annotated[int | None, typer.Option(min=1, max=100_000, help="logs per batch")] = None,
    submit: Annotated[bool, typer.Option(help="run it on the workers (logs.process_batch) and wait")] = False,
    timeout: Annotated[float, typer.Option(help="with --submit: seconds to wait")] = 300.0,
) -> None:
    """Move queued logs into the table now (seed 003's --process-queue)."""
    conveyor = _conveyor(executor=submit)
    try:
        if submit:
            record = conveyor.manager.submit_task(
                "logs.process_batch",
                {"max_batches": max_batches, **({"batch_size": batch_size} if batch_size else {})},
            )
            done = conveyor.manager.wait(record.id, timeout=timeout)
            if done.state.value != "SUCCESS":
                console.print(f"[red]logs.process_batch {record.id} ended {done.state.value}[/red]: {done.error}")
                raise typer.Exit(1)
            result: dict[str, Any] = dict(done.result or {})
        else:
            result = _inline(conveyor, max_batches, batch_size)
    finally:
        conveyor.stop(graceful=False)
    keys = ("batches", "claimed", "moved", "duplicates", "invalid", "recovered", "duration_ms", "queue_length")
    table = Table(title="Movement logs: batch")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(str(result.get(k, "")) for k in keys))
    console.print(table)


def _inline(conveyor: Conveyor, max_batches: int, batch_size: int | None) -> dict[str, Any]:
    from rich.progress import Progress

    from conveyor.workloads.movement_logs.batch import BatchResult, run_batches
    from conveyor.workloads.movement_logs.service import open_queue, workload_settings

    wl = workload_settings(conveyor)
    engine = conveyor.store.engine
    if engine is None:
        console.print(f"[red]movement logs need a SQL store; this one is {conveyor.store.kind}[/red]")
        raise typer.Exit(1)
    queue = open_queue(conveyor.settings, wl, engine)
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("Moving logs", total=None)

        def report(total: BatchResult, done: int, of: int) -> None:
            bar.update(job, description=f"Batch {total.batches + 1}: {done}/{of}", completed=total.moved + done)

        result = run_batches(
            engine,
            queue,
            max_items=batch_size or wl.batch_size,
            max_batches=max_batches,
            chunk_size=wl.chunk_size,
            progress=report,
        )
    out = result.to_dict()
    out["queue_length"] = queue.length()
    return out

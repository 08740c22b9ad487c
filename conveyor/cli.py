"""The ``conveyor`` command: serve, submit and follow tasks, run the Celery side, manage the database."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.client import ApiError, Client
from conveyor.errors import ConveyorError
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.executors.celery import CeleryExecutor

app = typer.Typer(help="Conveyor: asynchronous tasks with progress you can watch.", no_args_is_help=True)
db_app = typer.Typer(help="The task database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

Url = Annotated[str, typer.Option("--url", envvar="CONVEYOR_URL", help="the server to talk to")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="CONVEYOR_API_KEY", help="your API key")]
DEFAULT_URL = "http://127.0.0.1:8000"
STATE_STYLE = {"SUCCESS": "green", "FAILURE": "red", "CANCELLED": "yellow", "PROCESSING": "cyan", "RETRY": "magenta"}


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _client(url: str, api_key: str | None) -> Client:
    return Client(url, api_key=api_key)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [default: 8000]")] = None,
    concurrency: Annotated[int | None, typer.Option("-c", "--concurrency", help="worker processes")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="where the database and files live")] = None,
    database_url: Annotated[str | None, typer.Option(help="sqlite:///…, postgresql://…")] = None,
    insecure: Annotated[bool, typer.Option(help="allow a public address without API keys")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the API, the dashboard, the local workers and the scheduler in one process."""
    import uvicorn

    from conveyor.api.main import create_app
    from conveyor.app import Conveyor

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "concurrency": concurrency,
            "data_dir": data_dir,
            "database_url": database_url,
        }.items()
        if v is not None
    }
    if insecure:
        overrides["insecure"] = True
    settings = Settings(**overrides)
    if not settings.api_keys and not _is_loopback(settings.host) and not settings.insecure:
        _fail(
            f"refusing to serve on {settings.host} with no API keys: anyone could submit work. "
            "Set CONVEYOR_API_KEYS=key=tenant,... or pass --insecure.",
            code=2,
        )
    conveyor = Conveyor(settings)
    err.print(
        f"Conveyor on http://{settings.host}:{settings.port}  "
        f"(store: {settings.resolved_database_url.split('://')[0]}, executor: {settings.executor}, "
        f"data: {settings.data_dir})"
    )
    uvicorn.run(
        create_app(conveyor),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) + 5,
    )


def _parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as e:
            _fail(f"--json is not valid JSON: {e.msg}", code=2)
        if not isinstance(loaded, dict):
            _fail("--json must be a JSON object", code=2)
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"-p takes key=value, not {pair!r}", code=2)
        try:
            params[key] = json.loads(value)  # numbers, true/false, lists...
        except json.JSONDecodeError:
            params[key] = value  # ...and anything else as a string
    return params


@app.command()
def submit(
    task_type: Annotated[str, typer.Argument(help="e.g. system.sleep")],
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="key=value (value parsed as JSON)")] = None,
    params_json: Annotated[str | None, typer.Option("--json", help="all params as a JSON object")] = None,
    priority: Annotated[int | None, typer.Option(min=0, max=9)] = None,
    queue: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow it with a progress bar")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Submit a task; with --wait, show its progress live and print the result."""
    params = _parse_params(param or [], params_json)
    with _client(url, api_key) as client:
        try:
            created = client.submit(task_type, params, priority=priority, queue=queue)
        except ApiError as e:
            _fail(_describe(e))
        task_id = created["task_id"]
        if not wait:
            console.print(task_id)
            return
        final = _follow(client, task_id)
    _print_outcome(final)
    if final["status"] != "SUCCESS":
        raise typer.Exit(1)


def _follow(client: Client, task_id: str) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        row = bar.add_task(task_id, total=100, state="PENDING", message="")
        try:
            for update in client.events(task_id):
                bar.update(row, completed=update["progress"], state=update["status"], message=update["message"])
        except ApiError as e:
            _fail(_describe(e))
    return client.get(task_id)


def _print_outcome(record: dict[str, Any]) -> None:
    status = record["status"]
    err.print(f"[{STATE_STYLE.get(status, 'white')}]{status}[/] {record['task_id']} — {record['message']}")
    if status == "SUCCESS":
        console.print_json(json.dumps(record.get("result")))
    elif record.get("error"):
        err.print(record["error"].get("traceback") or record["error"].get("message"))


def _describe(e: ApiError) -> str:
    text = f"{e.message} ({e.status_code} {e.code})"
    if isinstance(e.details, list):
        text += "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in e.details if isinstance(d, dict))
    return text


@app.command()
def status(
    task_id: str,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow it until it ends")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a task's state, progress and message."""
    with _client(url, api_key) as client:
        try:
            record = _follow(client, task_id) if watch else client.get(task_id)
        except ApiError as e:
            _fail(_describe(e))
    console.print_json(json.dumps(record))


@app.command()
def cancel(
    task_id: str,
    terminate: Annotated[bool, typer.Option(help="kill a running task instead of asking it to stop")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a task (at once if it waits, cooperatively if it runs, or killed with --terminate)."""
    with _client(url, api_key) as client:
        try:
            answer = client.cancel(task_id, terminate=terminate)
        except ApiError as e:
            _fail(_describe(e))
    console.print(f"{answer['status']}: {answer['message']}")


@app.command()
def retry(task_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Run a failed or cancelled task again."""
    with _client(url, api_key) as client:
        try:
            answer = client.retry(task_id)
        except ApiError as e:
            _fail(_describe(e))
    console.print(f"{answer['status']}: {answer['task_id']}")


@app.command()
def tasks(
    state: Annotated[str | None, typer.Option("--status", "-s", help="e.g. FAILURE or PENDING,RETRY")] = None,
    task_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List your most recent tasks."""
    with _client(url, api_key) as client:
        try:
            page = client.list(status=state, type=task_type, limit=limit)
        except ApiError as e:
            _fail(_describe(e))
    table = Table(title=f"{len(page['data'])} of {page['count']} tasks")
    for column in ("id", "type", "status", "progress", "message", "created"):
        table.add_column(column)
    for t in page["data"]:
        table.add_row(
            t["task_id"],
            t["type"],
            f"[{STATE_STYLE.get(t['status'], 'white')}]{t['status']}[/]",
            f"{t['progress']:.0f}%",
            (t["message"] or "")[:50],
            (t["created_at"] or "")[:19],
        )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[str | None, typer.Option(help="defaults to CONVEYOR_DATABASE_URL")] = None,
) -> None:
    """Bring the SQL database to the newest schema (Alembic)."""
    from conveyor.stores.sql import create_engine_for, upgrade

    chosen: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = Settings(**chosen)
    if settings.store_kind != "sql":
        console.print(f"the {settings.store_kind} store has no schema to migrate")
        return
    url = settings.resolved_database_url
    engine = create_engine_for(url)
    try:
        upgrade(engine)
    except Exception as e:
        _fail(f"migration failed: {e}")
    finally:
        engine.dispose()
    console.print(f"database at {url.split('@')[-1]} is up to date")


# -- the Celery side: worker, beat, flower, inspect -------------------------------------

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


class Pool(StrEnum):
    prefork = "prefork"
    threads = "threads"
    solo = "solo"


class LogLevel(StrEnum):
    debug = "DEBUG"
    info = "INFO"
    warning = "WARNING"
    error = "ERROR"
    critical = "CRITICAL"


class InspectView(StrEnum):
    all = "all"
    workers = "workers"
    active = "active"
    queues = "queues"
    beat = "beat"


LogLevelOption = Annotated[LogLevel, typer.Option("-l", "--loglevel", case_sensitive=False)]


def _need_celery() -> None:
    import importlib.util

    if importlib.util.find_spec("celery") is None:
        _fail("Celery is not installed: pip install 'conveyor[celery]'", code=2)


@app.command(context_settings=PASS_THROUGH)
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option("-Q", "--queues", help="comma-separated (default: every queue the app knows)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("-c", "--concurrency", min=1, help="pool size (default: the CPU count)")
    ] = None,
    pool: Annotated[Pool, typer.Option("-P", "--pool", case_sensitive=False)] = Pool.prefork,
    name: Annotated[str | None, typer.Option("-n", "--hostname", help="node name, e.g. media@%h")] = None,
    loglevel: LogLevelOption = LogLevel.info,
) -> None:
    """Run a Celery worker for Conveyor's task types; SIGTERM is a warm shutdown.

    Options after the known ones go to `celery worker` as they are,
    e.g. `conveyor worker -Q media --max-tasks-per-child 50`.
    """
    from conveyor.executors.celery import cluster

    _need_celery()
    chosen = [q.strip() for q in (queues or "").split(",") if q.strip()]
    cluster.exec_argv(
        cluster.worker_argv(
            queues=chosen,
            concurrency=concurrency,
            pool=pool.value,
            name=name,
            loglevel=loglevel.value,
            extra=ctx.args,
        )
    )


@app.command(context_settings=PASS_THROUGH)
def beat(
    ctx: typer.Context,
    loglevel: LogLevelOption = LogLevel.info,
    max_interval: Annotated[
        float | None, typer.Option(min=0.1, help="longest sleep between schedule checks, seconds (default: 15)")
    ] = None,
) -> None:
    """Run Celery beat over the workloads' periodic jobs (the table `serve` runs in-process).

    Each slot is submitted through the task manager with an idempotency key,
    so running it beside `serve`'s scheduler, or twice, submits a slot once.
    """
    from conveyor.executors.celery import cluster

    _need_celery()
    cluster.exec_argv(cluster.beat_argv(loglevel=loglevel.value, max_interval=max_interval, extra=ctx.args))


@app.command(context_settings=PASS_THROUGH)
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    unauthenticated_api: Annotated[
        bool, typer.Option("--unauthenticated-api", help="let Flower's /api answer without authentication")
    ] = False,
) -> None:
    """Run Flower, Celery's live monitor, on Conveyor's app."""
    from conveyor.executors.celery import cluster

    _need_celery()
    env = dict(os.environ)
    if unauthenticated_api:
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
        if not _is_loopback(address):
            err.print(f"[yellow]warning:[/yellow] Flower's API is open to anyone who reaches {address}:{port}")
    cluster.exec_argv(cluster.flower_argv(port=port, address=address, extra=ctx.args), env)


@app.command("inspect")
def inspect_cluster(
    view: Annotated[InspectView, typer.Argument(case_sensitive=False, help="what to show")] = InspectView.all,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for workers to answer")] = 1.0,
    max_age: Annotated[float, typer.Option(min=1, help="beat: a heartbeat older than this is dead")] = 60.0,
) -> None:
    """Workers, the tasks they run, queue depths on the broker, and beat's heartbeat.

    Exits 1 when `workers` finds none alive or `beat` finds no fresh heartbeat,
    so either makes a health check.
    """
    from conveyor.executors.celery import cluster

    report: dict[str, Any] = {}
    failed = ""
    if view is InspectView.beat:
        report["beat"] = cluster.beat_report(Settings().data_dir, max_age=max_age)
        if not report["beat"]["alive"]:
            failed = report["beat"]["reason"]
    else:
        executor = _celery_executor()
        from kombu.utils.url import maybe_sanitize_url

        report["broker"] = maybe_sanitize_url(executor.settings.broker_url)
        broker = executor.broker_health()
        if broker["status"] != "ok":
            _fail(f"the broker at {report['broker']} cannot be reached: {broker.get('error')}")
        if view in (InspectView.all, InspectView.workers):
            report["workers"] = cluster.workers_report(executor, timeout)
            if view is InspectView.workers and not report["workers"]:
                failed = f"no worker answered within {timeout:g}s"
        if view in (InspectView.all, InspectView.active):
            report["active"] = cluster.active_report(executor, timeout)
        if view in (InspectView.all, InspectView.queues):
            try:
                report["queues"] = cluster.queues_report(executor)
            except ConveyorError as e:
                _fail(e.message)
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        cluster.print_report(report, console)
    if failed:
        if as_json or view is not InspectView.beat:  # the beat table already says why
            err.print(f"[red]{failed}[/red]")
        raise typer.Exit(1)


def _celery_executor() -> CeleryExecutor:
    _need_celery()
    try:
        # the same module `celery -A conveyor.worker` loads: one app, one set of queues
        from conveyor.worker import conveyor as worker_conveyor
    except ConveyorError as e:
        _fail(e.message, code=2)
    from conveyor.executors.celery import CeleryExecutor

    executor = worker_conveyor.executor
    assert isinstance(executor, CeleryExecutor)
    return executor


def _mount_workload_commands() -> None:
    """Each built-in workload's own verbs (``conveyor logs ...``), from its declaration."""
    from conveyor.workload import command_lines

    for name, sub in command_lines():
        app.add_typer(sub, name=name)


_mount_workload_commands()


def main() -> None:
    # `python -m conveyor` and the console script both land here.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app(prog_name="conveyor")
    sys.exit(0)


if __name__ == "__main__":
    main()

"""The ``conveyor`` command: serve, submit and follow tasks, manage the database."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.client import ApiError, Client
from conveyor.settings import Settings

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
def cancel(task_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Cancel a task (at once if it waits, cooperatively if it runs)."""
    with _client(url, api_key) as client:
        try:
            answer = client.cancel(task_id)
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


def main() -> None:
    # `python -m conveyor` and the console script both land here.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app(prog_name="conveyor")
    sys.exit(0)


if __name__ == "__main__":
    main()

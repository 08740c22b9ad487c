"""Every query of the movement logs tables, in one place (routes, the batch task and the CLI use it)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from conveyor.workloads.movement_logs.codec import loads
from conveyor.workloads.movement_logs.tables import batches_table, logs_table

__all__ = [
    "COLUMNS",
    "LogFilter",
    "batch_history",
    "batch_totals",
    "copy_new_items_pg",
    "count_logs",
    "list_logs",
    "record_batch",
    "write_rows",
]

#: the columns a batch writes, in COPY order
COLUMNS = (
    "event_id",
    "tenant",
    "user_id",
    "track_id",
    "bbox",
    "state",
    "store",
    "timestamp",
    "received_at",
    "stored_at",
    "batch_id",
)
_INSERT_SQLITE = (
    f"INSERT INTO movement_logs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (tenant, event_id) DO NOTHING"
)
_TEMP_PG = (
    "CREATE TEMP TABLE IF NOT EXISTS movement_logs_incoming "
    "(LIKE movement_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_FROM_TEMP_PG = (
    f"INSERT INTO movement_logs ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM movement_logs_incoming "
    "ON CONFLICT (tenant, event_id) DO NOTHING"
)


def write_rows(
    conn: sa.Connection,
    rows: Sequence[dict[str, Any]],
    *,
    batch_id: str,
    stored_at: float,
    chunk_size: int = 1000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Insert ``rows`` inside the caller's transaction; returns how many were new.

    PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT ...
    ON CONFLICT DO NOTHING. SQLite: one prepared INSERT ... ON CONFLICT DO
    NOTHING run over the rows (SQLite has no round trip to save). A row whose
    event id is already stored is skipped either way, which is what makes a
    re-run batch harmless. ``on_chunk(rows_done)`` is called after each chunk.
    """
    if not rows:
        return 0
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        return _write_pg(raw, rows, batch_id, stored_at, chunk_size, on_chunk)
    cur = raw.cursor()
    inserted = 0
    try:
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            cur.executemany(
                _INSERT_SQLITE,
                [
                    (
                        r["event_id"],
                        r["tenant"],
                        r["user_id"],
                        r["track_id"],
                        json.dumps(r["bbox"]),
                        r["state"],
                        r["store"],
                        r["timestamp"],
                        r["received_at"],
                        stored_at,
                        batch_id,
                    )
                    for r in chunk
                ],
            )
            # sqlite3 sums the changes of an executemany: conflicts (duplicates) add nothing
            inserted += max(0, cur.rowcount)
            if on_chunk is not None:
                on_chunk(start + len(chunk))
    finally:
        cur.close()
    return inserted


def _copy_text(value: Any) -> str:
    r"""One value in COPY's text format (tabs, newlines and backslashes escaped; None is \N)."""
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _write_pg(
    raw: Any,
    rows: Sequence[dict[str, Any]],
    batch_id: str,
    stored_at: float,
    chunk_size: int,
    on_chunk: Callable[[int], None] | None,
) -> int:
    stored = repr(stored_at)
    with raw.cursor() as cur:
        cur.execute(_TEMP_PG)
        # A pooled connection may hold rows of a batch that failed before its rollback emptied them.
        cur.execute("TRUNCATE movement_logs_incoming")
        with cur.copy(f"COPY movement_logs_incoming ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for start in range(0, len(rows), chunk_size):
                buf = io.StringIO()
                for r in rows[start : start + chunk_size]:
                    buf.write(
                        "\t".join(
                            (
                                _copy_text(r["event_id"]),
                                _copy_text(r["tenant"]),
                                _copy_text(r["user_id"]),
                                str(r["track_id"]),
                                _copy_text(json.dumps(r["bbox"])),
                                _copy_text(r["state"]),
                                _copy_text(r["store"]),
                                repr(float(r["timestamp"])),
                                repr(float(r["received_at"])),
                                stored,
                                batch_id,
                            )
                        )
                    )
                    buf.write("\n")
                copy.write(buf.getvalue())
                if on_chunk is not None:
                    on_chunk(start + min(chunk_size, len(rows) - start))
        cur.execute(_FROM_TEMP_PG)
        return int(cur.rowcount)


def _line(row: dict[str, Any], stored: str, batch_id: str, escape: bool) -> str:
    """One row of COPY text; ``escape`` when a value may hold a backslash, tab or newline."""
    bbox = row["bbox"]
    box = f"[{bbox[0]!r},{bbox[1]!r},{bbox[2]!r},{bbox[3]!r}]" if len(bbox) == 4 else "[]"
    if not escape:
        return (
            f"{row['event_id']}\t{row['tenant']}\t{row['user_id']}\t{row['track_id']}\t{box}\t{row['state']}\t"
            f"{row['store']}\t{row['timestamp']!r}\t{row['received_at']!r}\t{stored}\t{batch_id}\n"
        )
    return (
        "\t".join(
            (
                _copy_text(row["event_id"]),
                _copy_text(row["tenant"]),
                _copy_text(row["user_id"]),
                _copy_text(row["track_id"]),
                _copy_text(json.dumps(bbox)),
                _copy_text(row["state"]),
                _copy_text(row["store"]),
                _copy_text(row["timestamp"]),
                _copy_text(row["received_at"]),
                stored,
                batch_id,
            )
        )
        + "\n"
    )


def _shaped(data: Any) -> bool:
    """The API's own item: nine fields of the types ``models.encode_item`` writes (values are the table's to check)."""
    return (
        type(data) is dict
        and len(data) == 9
        and type(data.get("event_id")) is str
        and data["event_id"] != ""  # the primary key's columns: the table checks every other emptiness
        and type(data.get("tenant")) is str
        and data["tenant"] != ""
        and type(data.get("user_id")) is str
        and type(data.get("track_id")) is int
        and type(data.get("bbox")) is list
        and type(data.get("state")) is str
        and type(data.get("store")) is str
        and type(data.get("timestamp")) is float
        and type(data.get("received_at")) is float
    )


def copy_new_items_pg(
    conn: sa.Connection,
    items: Sequence[str],
    *,
    batch_id: str,
    stored_at: float,
    parse: Callable[[str], dict[str, Any] | None],
    chunk_size: int = 1000,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[int, list[str]]:
    """COPY the items straight into ``movement_logs``: (rows written, items that are not movement logs).

    The fast path of a batch whose items are new, as nearly every batch's
    are. The API's own items are split into columns here without being
    checked again: the table checks them (column types and lengths, the
    ``ck_movement_logs_valid`` CHECK, the primary key). Any other item goes
    through ``parse`` (a full check); what it refuses is returned. If any row
    is refused by the table, or its event id is already stored (a re-run
    batch, a client's retry with its own id), the COPY fails as a whole: the
    caller rolls back to a savepoint and writes the batch with
    :func:`write_rows`, which skips stored ids.
    PostgreSQL works on one chunk while Python prepares the next.
    """
    stored = repr(stored_at)
    bad: list[str] = []
    written = 0
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY movement_logs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for start in range(0, len(items), chunk_size):
            lines: list[str] = []
            chunk = items[start : start + chunk_size]
            for text in chunk:
                try:
                    data = loads(text)
                except ValueError:
                    data = None
                if _shaped(data):
                    lines.append(_line(data, stored, batch_id, "\\" in text))
                    continue
                row = parse(text)
                if row is None:
                    bad.append(text)
                else:
                    lines.append(_line(row, stored, batch_id, True))
            copy.write("".join(lines))
            written += len(lines)
            if on_chunk is not None:
                on_chunk(start + len(chunk))
    return written, bad


def record_batch(conn: sa.Connection, **values: Any) -> None:
    """One row of batch history, in the batch's own transaction."""
    conn.execute(batches_table.insert().values(**values))


@dataclass(frozen=True)
class LogFilter:
    tenant: str
    user_id: str | None = None
    store: str | None = None
    state: str | None = None
    track_id: int | None = None
    since: float | None = None
    until: float | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        c = logs_table.c
        cond: list[sa.ColumnElement[bool]] = [c.tenant == self.tenant]
        if self.user_id is not None:
            cond.append(c.user_id == self.user_id)
        if self.store is not None:
            cond.append(c.store == self.store)
        if self.state is not None:
            cond.append(c.state == self.state)
        if self.track_id is not None:
            cond.append(c.track_id == self.track_id)
        if self.since is not None:
            cond.append(c.timestamp >= self.since)
        if self.until is not None:
            cond.append(c.timestamp < self.until)
        return cond


def list_logs(engine: sa.Engine, flt: LogFilter, *, limit: int, offset: int) -> tuple[int, list[sa.Row[Any]]]:
    """(how many match, one page of them newest first)."""
    c = logs_table.c
    cond = flt.conditions()
    with engine.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(logs_table).where(*cond)).scalar_one())
        rows = conn.execute(
            logs_table.select().where(*cond).order_by(c.timestamp.desc(), c.event_id.desc()).limit(limit).offset(offset)
        ).all()
    return total, list(rows)


def count_logs(engine: sa.Engine, tenant: str | None = None) -> int:
    cond = [logs_table.c.tenant == tenant] if tenant is not None else []
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(logs_table).where(*cond)).scalar_one())


def batch_history(engine: sa.Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The latest batches that moved anything, newest first."""
    b = batches_table.c
    with engine.connect() as conn:
        rows = conn.execute(batches_table.select().order_by(b.finished_at.desc(), b.id).limit(limit)).all()
    return [dict(r._mapping) for r in rows]


def batch_totals(engine: sa.Engine) -> dict[str, int]:
    """Sums over every recorded batch: for /metrics, whichever process ran them."""
    b = batches_table.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(b.claimed), 0),
                sa.func.coalesce(sa.func.sum(b.moved), 0),
                sa.func.coalesce(sa.func.sum(b.duplicates), 0),
                sa.func.coalesce(sa.func.sum(b.invalid), 0),
                sa.func.coalesce(sa.func.sum(b.recovered), 0),
            )
        ).one()
    return dict(zip(("batches", "claimed", "moved", "duplicates", "invalid", "recovered"), map(int, row), strict=True))

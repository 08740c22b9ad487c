"""The SQL store's batch of changes: the writer's one transaction per flush. ``SqlStore`` inherits it.

Every change is conditional on its task being unfinished: the batch first
reads (and on PostgreSQL locks, in id order) which of its tasks still are,
then updates those alone, one statement per set of fields, and appends their
timeline steps. So an outcome applies once, however often a task is
redelivered, and a finished task's timeline is closed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.records import FINAL_STATES, Status
from conveyor.stores.base import Change
from conveyor.stores.sql_commit import Unnest, unnest_insert, unnest_params, unnest_update
from conveyor.stores.sql_schema import events_table, tasks_table

__all__ = ["JSON_COLUMNS", "SqlChanges", "raw_value"]

_FINAL = [s.value for s in FINAL_STATES]
JSON_COLUMNS = frozenset({"meta", "params", "result", "error"})
_EVENT_COLUMNS = ("task_id", "at", "kind", "state", "progress", "message")
_FINAL_SQL = ", ".join(f"'{s}'" for s in sorted(_FINAL))
_EVENTS_UNNEST = unnest_insert(events_table, without=("seq",))


class SqlChanges:
    """``apply``: the writer's batch, on SQLite's raw write connection or PostgreSQL's upkeep engine."""

    kind: str
    _update_cache: dict[tuple[str, ...], sa.Update]
    _unnest_cache: dict[tuple[str, ...], Unnest]
    _raw_sql: dict[tuple[str, ...], str]
    _raw_write: Callable[[], contextlib.AbstractContextManager[Any]]
    _upkeep_write: Callable[[], contextlib.AbstractContextManager[sa.Connection]]

    def _update_unnest(self, keys: tuple[str, ...]) -> Unnest:
        stmt = self._unnest_cache.get(keys)
        if stmt is None:
            stmt = self._unnest_cache[keys] = unnest_update(tasks_table, keys, _FINAL_SQL)
        return stmt

    @staticmethod
    def _unnest_columns(keys: tuple[str, ...], rows: list[dict[str, Any]]) -> dict[str, Any]:
        values = {k: [row[f"_v_{k}"] for row in rows] for k in keys}
        values = {k: [json.dumps(v) for v in vs] if k in JSON_COLUMNS else vs for k, vs in values.items()}
        return {"_id": [row["_id"] for row in rows], **values}

    def _update_for(self, keys: tuple[str, ...]) -> sa.Update:
        stmt = self._update_cache.get(keys)
        if stmt is None:
            t = tasks_table.c
            stmt = (
                tasks_table.update()
                # Spelled out: an expanding NOT IN cannot be used with executemany.
                .where(t.id == sa.bindparam("_id"), *(t.state != s for s in _FINAL))
                .values({k: sa.bindparam(f"_v_{k}") for k in keys})
            )
            self._update_cache[keys] = stmt
        return stmt

    def apply(self, changes: Sequence[Change]) -> set[str]:
        if self.kind == "sqlite":
            return self._apply_raw(changes)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for change in changes:
            keys = tuple(sorted(change.fields))
            params = {"_id": change.task_id}
            for k in keys:
                v = change.fields[k]
                params[f"_v_{k}"] = v.value if isinstance(v, Status) else v
            groups.setdefault(keys, []).append(params)
        with self._upkeep_write() as conn:
            ids = sorted({c.task_id for c in changes})
            # Rows locked in one order by every writer (see renew_leases): two
            # batches touching the same tasks in different orders deadlock. The
            # lock also fixes which tasks are unfinished until the commit.
            t = tasks_table.c
            live = set(
                conn.execute(
                    sa.select(t.id).where(t.id.in_(ids), t.state.notin_(_FINAL)).order_by(t.id).with_for_update()
                ).scalars()
            )
            for keys, rows in groups.items():
                rows = [row for row in rows if row["_id"] in live]
                if not keys or not rows:
                    continue  # a timeline step alone
                if len(rows) > 1 and len({row["_id"] for row in rows}) == len(rows):
                    self._update_unnest(keys).execute(conn, self._unnest_columns(keys, rows))
                else:
                    conn.execute(self._update_for(keys), rows)
            events = _event_rows(changes, live)
            if events:
                _EVENTS_UNNEST.execute(conn, unnest_params(events, _EVENT_COLUMNS, ()))
        return live

    def _apply_raw(self, changes: Sequence[Change]) -> set[str]:
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        with self._raw_write() as cur:
            live = self._unfinished_raw(cur, sorted({c.task_id for c in changes}))
            for change in changes:
                keys = tuple(sorted(change.fields))
                if keys and change.task_id in live:
                    row = (*tuple(raw_value(k, change.fields[k]) for k in keys), change.task_id)
                    groups.setdefault(keys, []).append(row)
            for keys, rows in groups.items():
                sql = self._raw_sql.get(keys)
                if sql is None:
                    assignments = ", ".join(f"{k} = ?" for k in keys)
                    sql = f"UPDATE conveyor_tasks SET {assignments} WHERE id = ? AND state NOT IN ({_FINAL_SQL})"
                    self._raw_sql[keys] = sql
                cur.executemany(sql, rows)
            events = [tuple(e[c] for c in _EVENT_COLUMNS) for e in _event_rows(changes, live)]
            if events:
                cur.executemany(
                    f"INSERT INTO conveyor_task_events ({', '.join(_EVENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", events
                )
        return live

    @staticmethod
    def _unfinished_raw(cur: Any, ids: list[str]) -> set[str]:
        """Which of ``ids`` are unfinished, read inside the write transaction (SQLite has one writer)."""
        if not cur.connection.in_transaction:
            # Take the write lock now, so no other process finishes one of them before our updates.
            cur.execute("BEGIN IMMEDIATE")
        live: set[str] = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ", ".join("?" * len(part))
            cur.execute(f"SELECT id FROM conveyor_tasks WHERE id IN ({marks}) AND state NOT IN ({_FINAL_SQL})", part)
            live.update(row[0] for row in cur.fetchall())
        return live


def raw_value(name: str, value: Any) -> Any:
    """A value as SQLAlchemy would have bound it for SQLite."""
    if name in JSON_COLUMNS:
        return None if value is None else json.dumps(value)
    if isinstance(value, Status):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def _event_rows(changes: Sequence[Change], live: set[str]) -> list[dict[str, Any]]:
    """The timeline steps of the changes that applied: a finished task's timeline is closed."""
    return [
        {
            "task_id": e.task_id,
            "at": e.at,
            "kind": e.kind,
            "state": e.state.value,
            "progress": e.progress,
            "message": e.message,
        }
        for change in changes
        if change.task_id in live
        for e in change.events
    ]

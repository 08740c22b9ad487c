"""Notifier: tells every process of a deployment which tasks changed.

A Celery worker writes a task's outcome from its own process. The API
process serving the client's ``wait()``, ``.get()`` or SSE stream has its own
:class:`~conveyor.hub.EventHub`, which only hears of changes written in that
process; without a word from the worker it would find the outcome on its
next poll of the store, half a second later. So every writer flush publishes
the ids it wrote on one channel, and every API process listens and wakes its
hub with them.

A message carries task ids and nothing else: the woken waiter re-reads the
store, so a lost or late message costs one poll interval, never a wrong
answer, and a message from an unknown process wakes nobody who does not wait
on those ids. After the listener loses its connection it wakes every waiter
once, since messages may have been missed meanwhile.

The channel: Redis pub/sub where the deployment has Redis (the store, else
the broker), PostgreSQL ``LISTEN``/``NOTIFY`` where the store is PostgreSQL
and the broker is not Redis. Publishing runs on a thread of its own: a hung
Redis or database holds that thread, never the writer.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.settings import Settings

__all__ = ["CHANNEL", "Notifier", "PostgresNotifier", "RedisNotifier", "notifier_for"]

log = logging.getLogger("conveyor.notify")

#: the Redis channel and PostgreSQL notification channel
CHANNEL = "conveyor_changed"
#: ids in one message at most; a flush that changed more wakes every waiter instead
#: (PostgreSQL's payload limit is 8,000 bytes; a task id is at most 36 characters)
MAX_IDS = 200
#: seconds between attempts to reconnect a lost listener
RECONNECT_DELAY = 1.0

#: what a listener is told: the ids that changed, or None for "maybe any"
OnChanged = Callable[[list[str] | None], None]


class Notifier:
    """Publishes changed task ids from this process and hands other processes' ids to a listener."""

    kind = "none"

    def __init__(self, timeout: float = 2.0) -> None:
        #: marks this process's messages, which its own hub has already seen
        self.sender = uuid.uuid4().hex[:12]
        self.timeout = timeout
        self._lock = threading.Lock()
        self._due: set[str] = set()
        self._overflow = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._publisher: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        #: other processes' messages handed to the listener
        self.received = 0

    # -- publishing ----------------------------------------------------------

    def publish(self, task_ids: Collection[str]) -> None:
        """Queue ``task_ids`` for the next message; returns at once (the publisher thread sends)."""
        if not task_ids:
            return
        with self._lock:
            if not self._overflow:
                self._due.update(task_ids)
                if len(self._due) > MAX_IDS:
                    self._overflow, self._due = True, set()
            if self._publisher is None or not self._publisher.is_alive():
                self._stop.clear()
                self._publisher = threading.Thread(target=self._publish_loop, name="conveyor-notify", daemon=True)
                self._publisher.start()
        self._wake.set()

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                ids, overflow = self._due, self._overflow
                self._due, self._overflow = set(), False
            if not ids and not overflow:
                continue
            payload = f"{self.sender} {'*' if overflow else ' '.join(sorted(ids))}"
            try:
                self._send(payload)
            except Exception as e:  # waiters fall back to polling the store
                log.debug("could not publish %d changed task ids: %s", len(ids), e)
                self._reset_sender()

    def _send(self, payload: str) -> None:
        raise NotImplementedError

    def _reset_sender(self) -> None:
        """Drop the publishing connection after an error; the next send opens a new one."""

    # -- listening -----------------------------------------------------------

    def listen(self, on_changed: OnChanged) -> None:
        """Hand every other process's changed ids to ``on_changed``, from a thread of its own."""
        if self._listener is not None and self._listener.is_alive():
            return
        self._stop.clear()
        self._listener = threading.Thread(
            target=self._listen_loop, args=(on_changed,), name="conveyor-listen", daemon=True
        )
        self._listener.start()

    def _listen_loop(self, on_changed: OnChanged) -> None:
        connected_once = False
        while not self._stop.is_set():
            try:
                self._listen(on_changed, first=not connected_once)
            except Exception as e:
                log.debug("change listener lost its connection: %s", e)
            connected_once = True
            self._stop.wait(RECONNECT_DELAY)

    def _listen(self, on_changed: OnChanged, *, first: bool) -> None:
        raise NotImplementedError

    def _received(self, payload: str, on_changed: OnChanged) -> None:
        sender, _, rest = payload.partition(" ")
        if sender == self.sender or not rest:
            return
        self.received += 1
        try:
            on_changed(None if rest == "*" else rest.split(" "))
        except Exception:  # a listener's bug must not stop the thread
            log.exception("change listener failed")

    def _subscribed(self, on_changed: OnChanged, *, first: bool) -> None:
        """(Re)subscribed: after a gap, wake every waiter once, since messages may have been missed."""
        if not first:
            on_changed(None)

    # -- lifecycle -----------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: the parent's threads and connections are not ours."""
        self.sender = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._due, self._overflow = set(), False
        self._wake, self._stop = threading.Event(), threading.Event()
        self._publisher = self._listener = None
        self._reset_sender()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._publisher, self._listener):
            if thread is not None:
                thread.join(self.timeout + 1)
        self._publisher = self._listener = None
        self._reset_sender()


class RedisNotifier(Notifier):
    kind = "redis"

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        self.url = url
        self._client: Any = None

    def _redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)

    def _send(self, payload: str) -> None:
        if self._client is None:
            self._client = self._redis()
        self._client.publish(CHANNEL, payload)

    def _reset_sender(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _listen(self, on_changed: OnChanged, *, first: bool) -> None:
        import redis

        # No read timeout on the subscription: it is quiet for as long as nothing changes.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=self.timeout, health_check_interval=30)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis-py
        try:
            pubsub.subscribe(CHANNEL)
            self._subscribed(on_changed, first=first)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    self._received(data.decode() if isinstance(data, bytes) else str(data), on_changed)
        finally:
            pubsub.close()
            client.close()


class PostgresNotifier(Notifier):
    kind = "postgresql"

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        # psycopg takes libpq's URL, without SQLAlchemy's driver name.
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self.timeout)))

    def _send(self, payload: str) -> None:
        if self._conn is None:
            self._conn = self._connect()
            self._conn.execute(f"SET statement_timeout = {int(self.timeout * 1000)}")
        self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def _reset_sender(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as e:
                log.debug("closing the notify connection: %s", e)

    def _listen(self, on_changed: OnChanged, *, first: bool) -> None:
        conn = self._connect()
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            self._subscribed(on_changed, first=first)
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    self._received(note.payload, on_changed)
        finally:
            conn.close()


def notifier_for(settings: Settings) -> Notifier | None:
    """The channel this deployment's processes share, or None where one process does everything.

    The local executor runs and watches its tasks in one process: its hub
    hears every change already.
    """
    if settings.executor == "local":
        return None
    timeout = settings.store_statement_timeout
    store = settings.store_kind
    if store == "redis":
        return RedisNotifier(settings.resolved_database_url, timeout)
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisNotifier(settings.broker_url, timeout)
    if store == "sql" and settings.resolved_database_url.startswith("postgresql"):
        return PostgresNotifier(settings.resolved_database_url, timeout)
    return None

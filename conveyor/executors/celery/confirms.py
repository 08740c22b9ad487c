"""Many sends to RabbitMQ, one wait for all their publisher confirms.

A single send on RabbitMQ waits for the broker's confirm (``confirm_publish``):
one network round trip a message, which made a batch of 500 submits spend
most of its time waiting — about 1,000 sends a second where the broker takes
several thousand. A batch is published on a channel of its own in confirm
mode without waiting after each message; then the acks of the whole batch
are awaited once (RabbitMQ acks several messages in one frame). The promise
stays the same: the batch returns only when the broker has taken every
message, and raises otherwise, so the caller refuses the batch's tasks
rather than leave them waiting for a message that may not exist.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.records import TaskRecord

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["BatchNotConfirmed", "ConfirmedBatches"]


class BatchNotConfirmed(Exception):
    """The broker refused (nacked) messages of a batch, or did not confirm them in time."""


class ConfirmedBatches:
    """A dedicated RabbitMQ channel in confirm mode, for ``CeleryExecutor.dispatch_many``."""

    def __init__(self, app: Celery, *, timeout: float, connect_timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None
        self._producer: Any = None
        #: delivery tags: the last one published on this channel, and the last one the broker confirmed
        self._published = 0
        self._confirmed = 0
        self._singles: set[int] = set()
        self._nacked = 0

    def send(self, records: Sequence[TaskRecord], options: Callable[[TaskRecord], dict[str, Any]]) -> None:
        """Publish every record's message; return once the broker has confirmed them all."""
        with self._lock:
            try:
                self._send(records, options)
            except BaseException:
                # A channel left mid-batch has unknown tags in flight: the next batch opens a new one.
                self._reset()
                raise

    def _open(self) -> tuple[Any, Any]:
        if self._channel is None:
            conn = self.app.connection_for_write()
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=self.connect_timeout)
            channel = conn.channel()
            # py-amqp's own flag, so that its one-message confirm never selects the mode a second time.
            channel._confirm_selected = True
            channel.confirm_select()
            # Counted from the channel's own ack/nack events, which see every confirm frame, also one
            # read while kombu waits on this channel for something else (a declare's answer).
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            self._conn, self._channel = conn, channel
            self._producer = self.app.amqp.Producer(channel)
            self._published = self._confirmed = self._nacked = 0
            self._singles.clear()
        return self._channel, self._producer

    def _send(self, records: Sequence[TaskRecord], options: Callable[[TaskRecord], dict[str, Any]]) -> None:
        channel, producer = self._open()
        # The channel's plain publish: confirm mode stays on, but no wait after each message.
        channel.basic_publish = channel._basic_publish
        try:
            for r in records:
                self.app.send_task(r.type, args=[r.id], task_id=r.id, producer=producer, retry=False, **options(r))
                self._published += 1
        finally:
            channel.basic_publish = channel.basic_publish_confirm
        self._await_confirms(channel)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._answered(delivery_tag, multiple, refused=False)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._answered(delivery_tag, multiple, refused=True)

    def _answered(self, delivery_tag: int, multiple: bool, *, refused: bool) -> None:
        # One frame may answer for every outstanding message up to its tag (``multiple``).
        if refused:
            self._nacked += (
                sum(1 for t in range(self._confirmed + 1, delivery_tag + 1) if t not in self._singles)
                if multiple
                else 1
            )
        if multiple:
            self._confirmed = max(self._confirmed, delivery_tag)
        else:
            self._singles.add(delivery_tag)
        while self._confirmed + 1 in self._singles:
            self._confirmed += 1
            self._singles.discard(self._confirmed)
        self._singles = {t for t in self._singles if t > self._confirmed}

    def _await_confirms(self, channel: Any) -> None:
        from amqp import spec  # type: ignore[import-untyped]

        # The deadline is for the broker's silence, as one message's confirm has it: each frame of
        # acks restarts it. A broker that answers slowly (a loaded one, a long batch) is waited for;
        # one that answers nothing for ``timeout`` seconds fails the batch.
        deadline = time.monotonic() + self.timeout
        while self._confirmed < self._published:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=left)  # the events count it
            except TimeoutError:
                raise BatchNotConfirmed(
                    f"no answer within its deadline: {self._published - self._confirmed} messages not confirmed"
                ) from None
            deadline = time.monotonic() + self.timeout
        if self._nacked:
            raise BatchNotConfirmed(f"the broker refused {self._nacked} messages")

    def _reset(self) -> None:
        conn, self._conn, self._channel, self._producer = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close; it is dropped either way
                conn.release()

    def close(self) -> None:
        with self._lock:
            self._reset()

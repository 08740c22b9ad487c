"""The batch confirm's deadline is for the broker's silence, not for the whole batch.

The channel here is scripted (the broker's pace is what is under test); the real
RabbitMQ paths are in tests/integration/test_celery_batches.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conveyor.executors.celery.confirms import BatchNotConfirmed, ConfirmedBatches


class PacedChannel:
    """Acks one delivery tag per ``pace`` seconds, or stays silent once ``silent_after`` tags are acked.

    As py-amqp does, each ack frame goes to the channel's ``basic_ack`` listener.
    """

    def __init__(self, batches: ConfirmedBatches, pace: float, silent_after: int | None = None) -> None:
        self.batches = batches
        self.pace = pace
        self.silent_after = silent_after
        self.tag = 0

    def wait(self, methods: Any, timeout: float) -> None:
        if self.silent_after is not None and self.tag >= self.silent_after:
            time.sleep(timeout)
            raise TimeoutError("timed out")  # what py-amqp's socket read raises
        if self.pace > timeout:
            time.sleep(timeout)
            raise TimeoutError("timed out")
        time.sleep(self.pace)
        self.tag += 1
        self.batches._on_ack(self.tag, False)


def batches(published: int) -> ConfirmedBatches:
    b = ConfirmedBatches(None, timeout=0.1, connect_timeout=1.0)  # type: ignore[arg-type]
    b._published = published
    return b


def test_a_broker_that_keeps_answering_is_waited_for_past_the_deadline() -> None:
    """Eight acks 50 ms apart: 0.4 s in all, four times the 0.1 s deadline, and the batch is confirmed."""
    b = batches(8)
    started = time.monotonic()
    b._await_confirms(PacedChannel(b, pace=0.05))
    assert b._confirmed == 8
    assert time.monotonic() - started > 0.3


def test_a_broker_that_falls_silent_fails_the_batch_within_the_deadline() -> None:
    b = batches(8)
    started = time.monotonic()
    with pytest.raises(BatchNotConfirmed, match="5 messages not confirmed"):
        b._await_confirms(PacedChannel(b, pace=0.01, silent_after=3))
    assert time.monotonic() - started < 0.5

"""A movement log as clients send it (seed 003's body) and as the queue holds it."""

from __future__ import annotations

import json
import math
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from conveyor.errors import InvalidParams
from conveyor.workloads.movement_logs.codec import dumps

__all__ = ["MovementIn", "encode_item", "new_event_id", "parse_body", "parse_item", "to_epoch"]

#: what an event id may look like when a client brings its own (to make its retries idempotent)
EVENT_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"


class MovementIn(BaseModel):
    """A movement event: ``{"user_id", "track_id", "bbox": [x1, y1, x2, y2], "state", "store"}``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str = Field(min_length=1, max_length=100)
    track_id: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
    bbox: list[Any] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] with x1 < x2 and y1 < y2")
    state: str = Field(min_length=1, max_length=50)
    store: str = Field(min_length=1, max_length=200)
    #: when the movement happened: ISO-8601 (UTC unless it says otherwise) or epoch seconds; default: now
    timestamp: datetime | None = None
    #: a client that retries a POST may send its own id: the log is then stored once however often it arrives
    event_id: str | None = Field(default=None, pattern=EVENT_ID_PATTERN)

    @field_validator("user_id", "state", "store")
    @classmethod
    def _text(cls, value: str) -> str:
        # Neither can be stored: PostgreSQL refuses NUL in text, and a lone surrogate is not UTF-8.
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
        return value

    @field_validator("bbox")
    @classmethod
    def _box(cls, value: list[Any]) -> list[Any]:
        for i, v in enumerate(value):
            # ints stay ints (the seed sends [100, 100, 200, 200] and reads back the same); bools are not numbers
            if type(v) not in (int, float):
                raise ValueError(f"bbox[{i}] must be a number, not {type(v).__name__}")
        if not all(math.isfinite(v) and abs(v) <= 1e9 for v in value):
            raise ValueError("bbox values must be finite numbers within ±1e9")
        x1, y1, x2, y2 = value
        if not x1 < x2:
            raise ValueError("bbox must be [x1, y1, x2, y2] with x1 < x2")
        if not y1 < y2:
            raise ValueError("bbox must be [x1, y1, x2, y2] with y1 < y2")
        return value

    @field_validator("timestamp")
    @classmethod
    def _when(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not 946_684_800 <= value.timestamp() <= 4_102_444_800:  # 2000-01-01 .. 2100-01-01
            raise ValueError("timestamp must be between 2000 and 2100")
        return value


def to_epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def new_event_id() -> str:
    """32 hex digits, time first: new ids land at the end of the primary key index, not all over it.

    The 72 random bits need to be unique, not unguessable (a client may name
    its own ids): ``random`` is seeded from the OS per process and again in a
    forked child, and unlike ``secrets`` it does not make a system call that
    lets the producer route's thread lose the GIL on every log.
    """
    return f"{time.time_ns() // 1000:014x}{random.getrandbits(72):018x}"


def encode_item(log: MovementIn, tenant: str, received_at: float) -> tuple[str, str]:
    """(event id, queue item text) of one accepted log."""
    event_id = log.event_id or new_event_id()
    item = {
        "event_id": event_id,
        "tenant": tenant,
        "user_id": log.user_id,
        "track_id": log.track_id,
        "bbox": log.bbox,
        "state": log.state,
        "store": log.store,
        "timestamp": to_epoch(log.timestamp) if log.timestamp else received_at,
        "received_at": received_at,
    }
    return event_id, dumps(item).decode()


#: the seed's body exactly: the keys :func:`_plain` takes without pydantic
_SEED_KEYS = frozenset(("user_id", "track_id", "bbox", "state", "store"))


def _text_ok(value: Any, most: int) -> bool:
    """ASCII (so no lone surrogate), no NUL, nothing pydantic would strip, within length."""
    return (
        type(value) is str
        and 0 < len(value) <= most
        and value.isascii()
        and "\x00" not in value
        and not value[0].isspace()
        and not value[-1].isspace()
    )


def _plain(data: dict[str, Any]) -> MovementIn | None:
    """The seed's body when every field is plainly right, built without running the validators; else None.

    Producers send thousands of these a second, and pydantic's field validators
    (Python functions) are most of a request's own cost. This accepts only a
    subset of what :class:`MovementIn` accepts and yields the same values
    (``model_construct``); anything else (a timestamp, an event id, non-ASCII
    text, whitespace to strip, any doubt) goes through ``model_validate``,
    which also names what is wrong.
    """
    if data.keys() != _SEED_KEYS:
        return None
    user_id, track_id, bbox, state, store = (
        data["user_id"],
        data["track_id"],
        data["bbox"],
        data["state"],
        data["store"],
    )
    if not (
        type(track_id) is int
        and 0 <= track_id <= 2**63 - 1
        and type(bbox) is list
        and len(bbox) == 4
        and _text_ok(user_id, 100)
        and _text_ok(state, 50)
        and _text_ok(store, 200)
    ):
        return None
    for v in bbox:
        if not ((type(v) is int or type(v) is float) and -1e9 <= v <= 1e9):  # NaN fails both comparisons
            return None
    if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        return None
    return MovementIn.model_construct(
        user_id=user_id, track_id=track_id, bbox=bbox, state=state, store=store, timestamp=None, event_id=None
    )


def _validate(data: dict[str, Any]) -> MovementIn:
    return _plain(data) or MovementIn.model_validate(data)


def _details(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_context=False):
        field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or "body"
        message = err["msg"].removeprefix("Value error, ")
        out.append({"field": field, "message": message, "type": err["type"]})
    return out


def parse_body(data: Any, max_list: int) -> tuple[list[MovementIn], bool]:
    """The logs of one request body (an object, or a list of up to ``max_list``) and whether it was a list.

    Every item is checked before any is queued: one bad item refuses the whole list.
    """
    from conveyor.errors import PayloadTooLarge

    if isinstance(data, dict):
        try:
            return [_validate(data)], False
        except ValidationError as e:
            named = _details(e, "")
            raise InvalidParams(
                f"Invalid movement log: {', '.join(d['field'] for d in named)}", details=named
            ) from None
    if isinstance(data, list):
        if not data:
            raise InvalidParams.for_field("body", "the list is empty; send at least one movement log")
        if len(data) > max_list:
            raise PayloadTooLarge(
                f"the list has {len(data)} movement logs; at most {max_list} fit in one request",
                details={"field": "body", "count": len(data), "max_list": max_list},
            )
        logs: list[MovementIn] = []
        details: list[dict[str, Any]] = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                details.append({"field": str(i), "message": "must be a JSON object", "type": "dict_type"})
                continue
            try:
                logs.append(_validate(item))
            except ValidationError as e:
                details.extend(_details(e, str(i)))
            if len(details) >= 50:  # enough to fix the client; a 10,000-item list of errors is not read
                break
        if details:
            fields = ", ".join(d["field"] for d in details[:10])
            raise InvalidParams(f"Invalid movement logs (nothing was queued): {fields}", details=details)
        return logs, True
    raise InvalidParams.for_field("body", "must be a movement log object or a list of them")


def _fast_row(data: dict[str, Any]) -> dict[str, Any] | None:
    """The row of an item this API queued itself, checked without pydantic (the batch's hot path)."""
    try:
        event_id, tenant, user_id, track_id = data["event_id"], data["tenant"], data["user_id"], data["track_id"]
        bbox, state, store, when, received = (
            data["bbox"],
            data["state"],
            data["store"],
            data["timestamp"],
            data["received_at"],
        )
    except KeyError:
        return None
    if not (
        len(data) == 9
        and type(event_id) is str
        and 0 < len(event_id) <= 64
        and type(tenant) is str
        and 0 < len(tenant) <= 200
        and type(user_id) is str
        and 0 < len(user_id) <= 100
        and type(track_id) is int
        and 0 <= track_id < 2**63
        and type(bbox) is list
        and len(bbox) == 4
        and all(type(v) in (int, float) and math.isfinite(v) for v in bbox)
        and bbox[0] < bbox[2]
        and bbox[1] < bbox[3]
        and type(state) is str
        and 0 < len(state) <= 50
        and type(store) is str
        and 0 < len(store) <= 200
        and type(when) in (int, float)
        and type(received) in (int, float)
        and "\x00" not in f"{event_id}{tenant}{user_id}{state}{store}"
    ):
        return None
    return {
        "event_id": event_id,
        "tenant": tenant,
        "user_id": user_id,
        "track_id": track_id,
        "bbox": bbox,
        "state": state,
        "store": store,
        "timestamp": float(when),
        "received_at": float(received),
    }


def parse_item(raw: str, *, now: float, default_tenant: str = "local") -> dict[str, Any] | None:
    """A queue item as a row of ``movement_logs`` (without ``stored_at``), or None if it is not a movement log.

    Items pushed by hand (``redis-cli LPUSH movement_logs '{...}'``) are checked
    like a POST body; one without an event id gets one derived from its text,
    so re-processing it stores it once.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    row = _fast_row(data)
    if row is not None:
        return row
    tenant = data.pop("tenant", None)
    received = data.pop("received_at", None)
    try:
        log = MovementIn.model_validate(data)
    except ValidationError:
        return None
    received_at = float(received) if type(received) in (int, float) else now
    if log.event_id:
        event_id = log.event_id
    else:
        import hashlib

        event_id = "raw-" + hashlib.sha256(raw.encode()).hexdigest()[:40]
    return {
        "event_id": event_id,
        "tenant": tenant[:200] if isinstance(tenant, str) and tenant else default_tenant,
        "user_id": log.user_id,
        "track_id": log.track_id,
        "bbox": log.bbox,
        "state": log.state,
        "store": log.store,
        "timestamp": to_epoch(log.timestamp) if log.timestamp else received_at,
        "received_at": received_at,
    }

"""A movement log's validation: each bad field named, a list all or none, queue items read back intact."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.errors import InvalidParams, PayloadTooLarge
from conveyor.workloads.movement_logs.models import encode_item, new_event_id, parse_body, parse_item
from tests.workloads.movement_logs.conftest import SEED_BODY


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"bbox": [100, 100, 200]}, "bbox", "at least 4"),
        ({"bbox": [100, 100, 200, 200, 300]}, "bbox", "at most 4"),
        ({"bbox": [200, 100, 100, 200]}, "bbox", "x1 < x2"),
        ({"bbox": [100, 200, 200, 100]}, "bbox", "y1 < y2"),
        ({"bbox": [100, "a", 200, 200]}, "bbox", "bbox[1] must be a number"),
        ({"bbox": [100, True, 200, 200]}, "bbox", "bbox[1] must be a number"),
        ({"bbox": [100, 100, 1e10, 200]}, "bbox", "within ±1e9"),
        ({"bbox": "100,100,200,200"}, "bbox", "list"),
        ({"track_id": "1"}, "track_id", "integer"),
        ({"track_id": -1}, "track_id", "greater than or equal to 0"),
        ({"track_id": True}, "track_id", "integer"),
        ({"user_id": ""}, "user_id", "at least 1"),
        ({"user_id": "u" * 101}, "user_id", "at most 100"),
        ({"state": "s" * 51}, "state", "at most 50"),
        ({"store": 5}, "store", "string"),
        ({"store": "Store\x00A"}, "store", "NUL"),
        ({"user_id": "U\ud800"}, "user_id", "unicode"),
        ({"timestamp": "yesterday"}, "timestamp", "datetime"),
        ({"timestamp": "1990-01-01T00:00:00Z"}, "timestamp", "between 2000 and 2100"),
        ({"event_id": "has spaces"}, "event_id", "pattern"),
        ({"camera": "c1"}, "camera", "Extra inputs"),
    ],
)
def test_each_malformed_field_is_named_in_the_error(change: dict[str, Any], field: str, words: str) -> None:
    """The 422's details name the field and say what is wrong with it."""
    with pytest.raises(InvalidParams) as info:
        parse_body({**SEED_BODY, **change}, 100)
    details = info.value.details
    assert any(d["field"] == field and words in d["message"] for d in details), details


@pytest.mark.parametrize("missing", ["user_id", "track_id", "bbox", "state", "store"])
def test_a_missing_field_is_named(missing: str) -> None:
    """Every field of the seed's body is required."""
    body = {k: v for k, v in SEED_BODY.items() if k != missing}
    with pytest.raises(InvalidParams) as info:
        parse_body(body, 100)
    assert [d["field"] for d in info.value.details] == [missing]


def test_a_list_with_one_bad_item_is_refused_whole_naming_its_index() -> None:
    """Item 2's bbox is wrong: the error says ``2.bbox`` and nothing of the list is accepted."""
    items = [SEED_BODY, SEED_BODY, {**SEED_BODY, "bbox": [1, 1, 0, 0]}, "not an object"]
    with pytest.raises(InvalidParams) as info:
        parse_body(items, 100)
    assert [d["field"] for d in info.value.details] == ["2.bbox", "3"]
    assert "nothing was queued" in info.value.message


def test_a_list_longer_than_the_limit_is_413_and_an_empty_one_422() -> None:
    """The limit names itself; an empty list names the body."""
    with pytest.raises(PayloadTooLarge) as info:
        parse_body([SEED_BODY] * 11, 10)
    assert info.value.details["max_list"] == 10
    with pytest.raises(InvalidParams):
        parse_body([], 10)
    with pytest.raises(InvalidParams):
        parse_body("a string", 10)


def test_a_queued_item_reads_back_as_the_row_it_was() -> None:
    """Encoded by the API, parsed by the batch: every field intact, the client's time kept."""
    (log,), _ = parse_body({**SEED_BODY, "timestamp": "2026-12-01T10:00:00+01:00"}, 10)
    event_id, text = encode_item(log, "alpha", 1_800_000_000.5)
    row = parse_item(text, now=0)
    assert row == {
        "event_id": event_id,
        "tenant": "alpha",
        "user_id": "USER123",
        "track_id": 1,
        "bbox": [100, 100, 200, 200],
        "state": "walking",
        "store": "Store A",
        "timestamp": 1796115600.0,
        "received_at": 1_800_000_000.5,
    }
    assert json.loads(text)["event_id"] == event_id


def test_new_event_ids_are_unique_and_sort_by_time() -> None:
    """Time-first ids: later ids sort after earlier ones (index locality), and never repeat."""
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert [i[:14] for i in ids] == sorted(i[:14] for i in ids)


def _suffixes(n: int) -> list[str]:
    return [new_event_id()[14:] for _ in range(n)]


def test_a_forked_worker_makes_other_ids_than_its_parent() -> None:
    """Random parts come from ``random``, which a forked child reseeds: a pool child that queues logs
    at the same microsecond as its parent still makes another id."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply(_suffixes, (1000,))
    parent = _suffixes(1000)
    assert not set(child) & set(parent)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"bbox": [0.5, 1e-3, 1e9, 2.5]},
        {"bbox": [-1e9, -5, 0, 0.0]},
        {"track_id": 2**63 - 1},
        {"user_id": " padded "},
        {"store": "Store\u00e9"},
        {"store": "Store\x00A"},
        {"state": "\u2003walking"},
        {"user_id": "u" * 101},
        {"bbox": [1, 1, 1, 2]},
        {"bbox": [1, 2, 3, float("nan")]},
        {"bbox": [1, 2, 3, True]},
        {"bbox": [1, 2, 3, 4e9]},
        {"track_id": True},
        {"track_id": 1.0},
        {"event_id": "cam-1:7"},
        {"timestamp": 1796119200},
    ],
)
def test_the_plain_seed_body_shortcut_accepts_only_what_the_model_accepts_with_the_same_values(
    change: dict[str, Any],
) -> None:
    """``parse_body`` skips pydantic's validators for a plainly right body: the log is the one the model builds."""
    from pydantic import ValidationError

    from conveyor.workloads.movement_logs.models import MovementIn

    body = {**SEED_BODY, **change}
    try:
        expected: MovementIn | None = MovementIn.model_validate(body)
    except ValidationError:
        expected = None
    try:
        (got,), _is_list = parse_body(body, 10)
    except InvalidParams:
        got = None
    assert got == expected
    if expected is not None:
        assert encode_item(got, "t", 1.0)[1].split(",", 1)[1] == encode_item(expected, "t", 1.0)[1].split(",", 1)[1]

"""Task types: the decorator, params validation, positional binding, backoff."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor import Registry, TaskContext
from conveyor.errors import ConfigurationError, InvalidParams, UnknownTaskType


def test_params_are_validated_against_the_model_and_each_bad_field_is_named() -> None:
    """InvalidParams lists every failing field with a message."""
    registry = Registry()

    class Resize(BaseModel):
        width: int
        height: int

    @registry.task("img.resize", params=Resize)
    def resize(ctx: TaskContext, width: int, height: int) -> None: ...

    with pytest.raises(InvalidParams) as info:
        registry.get("img.resize").validate({"width": "wide"})
    fields = {d["field"] for d in info.value.details}
    assert fields == {"width", "height"}
    assert info.value.status_code == 422


def test_a_params_model_is_built_from_the_signature_when_none_is_given() -> None:
    """Keyword parameters after ctx become fields; defaults make them optional; extras are refused."""
    registry = Registry()

    @registry.task("math.add")
    def add(ctx: TaskContext, a: int, b: int = 2) -> int:
        return a + b

    tt = registry.get("math.add")
    assert tt.validate({"a": "3"}) == {"a": 3, "b": 2}
    with pytest.raises(InvalidParams):
        tt.validate({"a": 1, "c": 5})
    assert tt.schema()["required"] == ["a"]


def test_positional_arguments_fill_fields_in_order() -> None:
    """Seed 002 submits with positional args: submit("process", resource_id, chunks)."""
    registry = Registry()

    @registry.task("speech.process")
    def process(ctx: TaskContext, resource_id: str, chunks: list[str], user: str = "anon") -> None: ...

    tt = registry.get("speech.process")
    assert tt.bind(("r1", ["a"]), {"user": "bo"}) == {"resource_id": "r1", "chunks": ["a"], "user": "bo"}
    with pytest.raises(InvalidParams):
        tt.bind(("r1", ["a"], "bo", "extra"), {})
    with pytest.raises(InvalidParams):
        tt.bind(("r1",), {"resource_id": "r2"})


def test_an_unknown_type_lists_the_known_ones() -> None:
    registry = Registry()
    registry.task("a.one")(lambda ctx: None)
    with pytest.raises(UnknownTaskType) as info:
        registry.get("a.two")
    assert info.value.details["known_types"] == ["a.one"]


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    registry = Registry()
    registry.task("t.flaky", retry_backoff=2, retry_backoff_max=10, max_retries=5)(lambda ctx: None)
    tt = registry.get("t.flaky")
    for attempt, full in [(1, 2), (2, 4), (3, 8), (4, 10), (9, 10)]:
        delays = [tt.retry_delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_contradictory_options_are_refused_at_definition() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError):
        registry.task("t.x", soft_time_limit=10, time_limit=5)
    with pytest.raises(ConfigurationError):
        registry.task("t.x", priority=12)


def test_two_functions_under_one_name_is_an_error() -> None:
    registry = Registry()
    registry.task("t.same")(lambda ctx: 1)

    def other(ctx: TaskContext) -> int:
        return 2

    with pytest.raises(ConfigurationError):
        registry.task("t.same")(other)


def test_a_task_defined_inside_a_function_gets_its_params_model() -> None:
    """Postponed annotations of ctx and the return type may name local imports; only params are resolved."""
    registry = Registry()

    def define() -> None:
        from conveyor import TaskContext as LocalContext

        @registry.task("t.inner")
        def inner(ctx: LocalContext, n: int = 1) -> LocalContext:  # type: ignore[empty-body]
            ...

    define()
    assert registry.get("t.inner").validate({"n": "4"}) == {"n": 4}


def test_an_unresolvable_param_annotation_is_a_clear_error() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="cannot resolve the annotation of 'thing'"):

        @registry.task("t.broken")
        def broken(ctx: TaskContext, thing: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            ...

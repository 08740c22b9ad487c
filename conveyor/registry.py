"""Task types: the ``@task`` decorator and the registry that holds them."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from conveyor.errors import ConfigurationError, InvalidParams, UnknownTaskType

if TYPE_CHECKING:
    from conveyor.handle import TaskHandle

__all__ = ["QUEUES", "Registry", "TaskFunction", "TaskType", "Visibility", "default_registry", "task"]

#: the core's own queues; a workload declares its own (its task types', ``Workload.queues``)
QUEUES = ("default", "maintenance")

P = ParamSpec("P")
R = TypeVar("R")

#: ``public``: tenants submit it over HTTP and see it in /api/v1/task-types;
#: ``internal``: only the scheduler, operators and Python code may submit it
#: (over HTTP a tenant gets the 404 of an unknown type)
Visibility = Literal["public", "internal"]


def _params_from_signature(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    """A params model built from the function's keyword parameters (after ``ctx``)."""
    fields: dict[str, Any] = {}
    sig = inspect.signature(fn)
    raw = inspect.get_annotations(fn)
    # Only the params' annotations are evaluated: ``ctx`` and the return type
    # may name things the defining scope imported locally.
    scope = {**getattr(fn, "__globals__", {}), **inspect.getclosurevars(fn).nonlocals}
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = raw.get(p.name, Any)
        if isinstance(annotation, str):
            try:
                # eval of the function's own annotation text, as typing.get_type_hints does
                annotation = eval(annotation, scope)
            except Exception as e:
                raise ConfigurationError(
                    f"task {name!r}: cannot resolve the annotation of {p.name!r} ({annotation}): {e}; "
                    "import its type at module level or pass params=<a pydantic model>"
                ) from e
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, default)
    model_name = "".join(part.title() for part in name.replace(".", "_").split("_")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors(include_url=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or "params"
        details.append({"field": field, "message": err["msg"], "type": err["type"]})
    return details


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskType:
    """A registered function and the options every run of it gets."""

    name: str
    fn: Callable[..., Any]
    params: type[BaseModel]
    queue: str = "default"
    description: str = ""
    #: attempts after the first; each waits ``retry_backoff * 2**(n-1)`` seconds (jittered)
    max_retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    #: exceptions that earn a retry; others fail at once
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    #: seconds: the soft limit raises SoftTimeLimitExceeded in the task, the hard one kills it
    soft_time_limit: float | None = None
    time_limit: float | None = None
    #: 0 (lowest) to 9 (highest)
    priority: int = 0
    #: seconds a finished record is kept; None means the settings' default
    result_ttl: float | None = None
    #: heavy tasks go to Celery under the hybrid executor
    heavy: bool = False
    #: other names clients may submit it by (a seed's own task names)
    aliases: tuple[str, ...] = ()
    visibility: Visibility = "public"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Params checked against the model, as JSON-ready values; InvalidParams names each bad field."""
        if not isinstance(params, Mapping):
            raise InvalidParams.for_field(
                "params", "must be an object", type="dict_type", summary="params must be a JSON object"
            )
        try:
            model = self.params.model_validate(dict(params))
        except ValidationError as exc:
            details = _field_errors(exc)
            fields = ", ".join(d["field"] for d in details)
            raise InvalidParams(f"Invalid params for {self.name}: {fields}", details=details) from None
        return model.model_dump(mode="json")

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Positional arguments mapped onto the params model's fields, in order."""
        names = list(self.params.model_fields)
        if len(args) > len(names):
            raise InvalidParams.for_field(
                "params",
                "too many positional arguments",
                type="too_many",
                summary=f"{self.name} takes {len(names)} params but {len(args)} were given",
            )
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise InvalidParams.for_field(
                    key, "given twice", type="duplicate", summary=f"{self.name} got {key!r} twice"
                )
            bound[key] = value
        return bound

    def retry_delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, capped, with equal jitter."""
        delay = min(self.retry_backoff_max, self.retry_backoff * float(2 ** max(0, attempt - 1)))
        if self.retry_jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay

    def schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()


class Registry:
    """Task types by name."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}
        self._aliases: dict[str, str] = {}

    def task(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        params: type[BaseModel] | None = None,
        description: str | None = None,
        max_retries: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 600.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        priority: int = 0,
        result_ttl: float | None = None,
        heavy: bool = False,
        aliases: Sequence[str] = (),
        visibility: Visibility = "public",
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register ``fn(ctx, **params)`` as a task type.

        ``params`` is a pydantic model validated at submit time; without one the
        model is built from the function's signature.
        """
        if not 0 <= priority <= 9:
            raise ConfigurationError(f"priority must be 0..9, not {priority}")
        if soft_time_limit and time_limit and soft_time_limit >= time_limit:
            raise ConfigurationError("soft_time_limit must be below time_limit")

        if visibility not in ("public", "internal"):
            raise ConfigurationError(f"visibility must be 'public' or 'internal', not {visibility!r}")

        def decorate(fn: Callable[P, R]) -> TaskFunction[P, R]:
            task_name = name or f"{fn.__module__}.{fn.__qualname__}"
            model = params or _params_from_signature(task_name, fn)
            doc = description if description is not None else inspect.getdoc(fn) or ""
            self.add(
                TaskType(
                    name=task_name,
                    fn=fn,
                    params=model,
                    queue=queue,
                    description=doc.strip().split("\n\n")[0],
                    max_retries=max_retries,
                    retry_backoff=retry_backoff,
                    retry_backoff_max=retry_backoff_max,
                    retry_jitter=retry_jitter,
                    retry_on=retry_on,
                    soft_time_limit=soft_time_limit,
                    time_limit=time_limit,
                    priority=priority,
                    result_ttl=result_ttl,
                    heavy=heavy,
                    aliases=tuple(aliases),
                    visibility=visibility,
                )
            )
            return TaskFunction(fn, task_name, self)

        return decorate

    def add(self, task_type: TaskType) -> None:
        existing = self._types.get(task_type.name)
        if existing is not None and existing.fn is not task_type.fn:
            same_place = (
                existing.fn.__module__ == task_type.fn.__module__
                and existing.fn.__qualname__ == task_type.fn.__qualname__
            )
            # A module imported twice (reload, test collection) re-registers the
            # same function; two different functions under one name is a bug.
            if not same_place:
                raise ConfigurationError(f"task type {task_type.name!r} is registered twice")
        for alias in task_type.aliases:
            owner = self._aliases.get(alias, task_type.name)
            if owner != task_type.name or (alias in self._types and alias != task_type.name):
                raise ConfigurationError(f"alias {alias!r} of {task_type.name!r} is already a task type's name")
        self._types[task_type.name] = task_type
        for alias in task_type.aliases:
            self._aliases[alias] = task_type.name

    def get(self, name: str) -> TaskType:
        """The task type registered under ``name`` or one of its aliases."""
        try:
            return self._types[self._aliases.get(name, name)]
        except KeyError:
            raise UnknownTaskType(name, self.names()) from None

    def names(self, *, public: bool = False) -> list[str]:
        """Every type's name; with ``public`` only those tenants may submit."""
        return sorted(n for n, t in self._types.items() if not public or t.visibility == "public")

    def get_public(self, name: str) -> TaskType:
        """The type a tenant may submit by ``name``; an internal one answers as an unknown one does."""
        tt = self._types.get(self._aliases.get(name, name))
        if tt is None or tt.visibility != "public":
            raise UnknownTaskType(name, self.names(public=True))
        return tt

    def __contains__(self, name: object) -> bool:
        return name in self._types or name in self._aliases

    def __iter__(self) -> Iterator[TaskType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._types)

    def copy(self) -> Registry:
        clone = Registry()
        clone._types = dict(self._types)
        clone._aliases = dict(self._aliases)
        return clone


#: the registry ``@task`` writes to; a Conveyor app uses it unless given another
default_registry = Registry()


class TaskFunction(Generic[P, R]):
    """A registered task function: call it as before, or submit it with Celery's producer verbs.

    ``fn.delay(*args, **kwargs)`` and ``fn.apply_async(args, kwargs, ...)``
    submit through the process's default task manager (``get_task_manager``)
    and return a ``TaskHandle`` shaped like Celery's ``AsyncResult``, so code
    written against Celery migrates by changing an import.
    """

    def __init__(self, fn: Callable[P, R], name: str, registry: Registry) -> None:
        self.fn = fn
        self.name = name
        self.registry = registry
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def task_type(self) -> TaskType:
        return self.registry.get(self.name)

    def delay(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Submit with these params (positional ones fill the params in order)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        tenant: str | None = None,
    ) -> TaskHandle:
        """Celery's ``apply_async``: ``countdown`` seconds or an ``eta``; ``task_id`` names the new task.

        Submitting again with the same ``task_id`` returns that task (no second run).
        """
        from conveyor.app import get_task_manager
        from conveyor.handle import TaskHandle

        manager = get_task_manager()
        if eta is not None:
            moment = eta if eta.tzinfo else eta.replace(tzinfo=datetime.UTC)
            countdown = max(0.0, (moment - datetime.datetime.now(datetime.UTC)).total_seconds())
        params = self.task_type.bind(tuple(args), dict(kwargs or {}))
        record = manager.submit_task(
            self.name,
            params,
            tenant=tenant,
            priority=priority,
            queue=queue,
            delay=countdown,
            task_id=task_id,
        )
        return TaskHandle(record.id, manager, tenant=record.tenant)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def task(name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Register a task type in the default registry. See ``Registry.task``."""
    return default_registry.task(name, **options)

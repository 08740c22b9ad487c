"""Workload: one folder's declaration of everything it adds to Conveyor.

A workload is a package under ``conveyor/workloads/`` (or any importable
package) whose ``__init__`` defines ``workload = Workload(...)``: its task
modules, HTTP router, periodic jobs, settings model, Alembic branch,
dashboard page, and what it needs to run (an extra's modules, a SQL store).
The core reads these declarations and names no workload itself.

``__init__`` must import without the workload's extra installed: everything
heavy is named by a string and imported only when the workload loads, so
``conveyor serve`` can say why a workload is missing instead of crashing.

A plain module named in ``CONVEYOR_WORKLOADS`` (``myapp.tasks``) is a
workload too: importing it registers its task types, and its ``router`` and
``periodic_jobs`` attributes are used when present.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from conveyor.errors import ConfigurationError, MissingExtra
from conveyor.registry import QUEUES, Registry
from conveyor.scheduler import PeriodicJob

__all__ = [
    "LoadedWorkload",
    "Workload",
    "WorkloadSet",
    "builtin_names",
    "command_lines",
    "declaration",
    "load_workloads",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    """What one workload adds; see the module docstring."""

    name: str
    description: str = ""
    #: ``pip install 'conveyor[<extra>]'`` installs what ``requires`` names
    extra: str | None = None
    #: import names the extra provides; when one is missing the workload cannot load
    requires: tuple[str, ...] = ()
    #: it has tables of its own, so the store must be SQL
    needs_sql: bool = False
    #: modules imported at load: their ``@task`` calls register the workload's task types
    modules: tuple[str, ...] = ()
    #: ``"package.module:attribute"`` of a FastAPI APIRouter
    router: str | None = None
    periodic_jobs: tuple[PeriodicJob, ...] = ()
    #: a pydantic(-settings) model read from ``CONVEYOR_<NAME>_*``
    settings: type[BaseModel] | None = None
    #: a folder of Alembic revisions: a branch of its own (``down_revision = None``)
    migrations: Path | None = None
    #: a folder holding ``page.js`` (an ES module exporting ``nav`` and ``routes``)
    dashboard: Path | None = None
    #: queues its tasks may be sent to besides their task types' own (a route that picks a
    #: queue per request): names, or a function of the workload's loaded settings
    queues: tuple[str, ...] | Callable[[Any], Iterable[str]] = ()
    #: ``"package.module:attribute"`` of a typer app, mounted as ``conveyor <cli_name>``
    cli: str | None = None
    #: the command it is mounted as (default: the workload's name)
    cli_name: str | None = None

    def missing(self, store_kind: str) -> str | None:
        """Why this workload cannot load here, or None when it can."""
        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if absent:
            install = f"pip install 'conveyor[{self.extra}]'" if self.extra else "install them"
            return f"needs {', '.join(absent)}: {install}"
        if self.needs_sql and store_kind != "sql":
            return f"its tables need a SQL store (the store is {store_kind})"
        return None


@dataclasses.dataclass(frozen=True)
class LoadedWorkload:
    """A workload whose modules are imported: what the app, the API and the scheduler use."""

    declaration: Workload
    router: Any
    settings: BaseModel | None

    @property
    def name(self) -> str:
        return self.declaration.name


def builtin_names() -> tuple[str, ...]:
    from conveyor.workloads import BUILTIN

    return BUILTIN


def _import(name: str) -> ModuleType:
    """``conveyor.workloads.<name>`` for a built-in name, else the module of that name (``notes``, ``myapp.tasks``)."""
    candidates = [name] if "." in name else [f"conveyor.workloads.{name}", name]
    for module_name in candidates:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
    raise ConfigurationError(f"unknown workload {name!r} (no module {' or '.join(candidates)})")


def declaration(name: str) -> Workload:
    """The ``Workload`` a name stands for: the package's declaration, or one made for a plain module."""
    module = _import(name)
    declared = getattr(module, "workload", None)
    if isinstance(declared, Workload):
        return declared
    router = f"{module.__name__}:router" if getattr(module, "router", None) is not None else None
    return Workload(
        name=name,
        description=(module.__doc__ or "").strip().split("\n")[0],
        modules=(module.__name__,),
        router=router,
        periodic_jobs=tuple(getattr(module, "periodic_jobs", ())),
    )


def command_lines() -> list[tuple[str, Any]]:
    """``(command, typer app)`` of every built-in workload that has one and whose extra is installed.

    Read when the CLI starts, before any settings say which workloads a server
    loads: a workload's verbs are there wherever its code can run.
    """
    found = []
    for name in builtin_names():
        w = declaration(name)
        if w.cli is None or any(importlib.util.find_spec(m) is None for m in w.requires):
            continue
        found.append((w.cli_name or w.name, _attribute(w.cli)))
    return found


def _attribute(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _settings_for(w: Workload, overrides: Mapping[str, Any] | BaseModel | None) -> BaseModel | None:
    if w.settings is None:
        if overrides:
            raise ConfigurationError(f"workload {w.name!r} has no settings to override")
        return None
    if isinstance(overrides, BaseModel):
        return overrides
    try:
        return w.settings(**dict(overrides or {}))
    except Exception as e:  # pydantic's ValidationError names the variable
        raise ConfigurationError(f"settings of workload {w.name!r}: {e}") from e


class WorkloadSet:
    """The workloads one Conveyor loaded, and those it left out with the reason."""

    def __init__(self, loaded: Sequence[LoadedWorkload], skipped: Mapping[str, str]) -> None:
        self.loaded = list(loaded)
        self.skipped = dict(skipped)
        self._by_name = {w.name: w for w in self.loaded}

    def __iter__(self) -> Any:
        return iter(self.loaded)

    def __len__(self) -> int:
        return len(self.loaded)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return [w.name for w in self.loaded]

    def get(self, name: str) -> LoadedWorkload:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigurationError(f"workload {name!r} is not loaded") from None

    def periodic_jobs(self) -> list[PeriodicJob]:
        return [job for w in self.loaded for job in w.declaration.periodic_jobs]

    def migrations(self) -> dict[str, Path]:
        """Each loaded workload's Alembic folder, by workload name."""
        return {w.name: w.declaration.migrations for w in self.loaded if w.declaration.migrations is not None}

    def status(self) -> dict[str, dict[str, str]]:
        """``{name: {"status": "loaded"}}`` and ``{name: {"status": "not loaded", "reason": ...}}``."""
        report: dict[str, dict[str, str]] = {name: {"status": "loaded"} for name in self.names()}
        for name, reason in self.skipped.items():
            report[name] = {"status": "not loaded", "reason": reason}
        return report


def load_workloads(
    names: Sequence[str] | None,
    *,
    store_kind: str,
    settings: Mapping[str, Mapping[str, Any] | BaseModel] | None = None,
) -> WorkloadSet:
    """Import the named workloads (None: every built-in one that can load here).

    A workload asked for by name that cannot load is a configuration error
    naming what to install; a default one is left out, with its reason kept
    for ``/health`` and the start-up log.
    """
    explicit = names is not None
    chosen = list(names) if names is not None else ["system", *builtin_names()]
    settings = settings or {}
    loaded: list[LoadedWorkload] = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(chosen):
        w = declaration(name)
        reason = w.missing(store_kind)
        if reason is not None:
            if explicit:
                if w.extra and reason.startswith("needs"):
                    raise MissingExtra(", ".join(w.requires), w.extra)
                raise ConfigurationError(f"workload {name!r} cannot load: {reason}")
            skipped[w.name] = reason
            continue
        for module in w.modules:
            importlib.import_module(module)
        router = _attribute(w.router) if w.router else None
        loaded.append(LoadedWorkload(w, router, _settings_for(w, settings.get(w.name))))
    unknown = set(settings) - {w.name for w in loaded} - set(skipped)
    if unknown:
        raise ConfigurationError(f"settings given for workloads that are not loaded: {', '.join(sorted(unknown))}")
    return WorkloadSet(loaded, skipped)


def declared_queues(registry: Registry, workloads: Iterable[LoadedWorkload] = ()) -> set[str]:
    """Every queue a task may be sent to: the core's, the registered task types', the workloads' own.

    Any other name would be taken by a broker and served by no worker, so a
    submit naming one is refused. The Celery app declares exactly these.
    """
    names = set(QUEUES) | {t.queue for t in registry}
    for w in workloads:
        q = w.declaration.queues
        names.update(q(w.settings) if callable(q) else q)
    return names

"""/api/v1/task-types: what can be submitted, with each type's params schema."""

from __future__ import annotations

from conveyor.api.deps import App, Who
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import TaskTypePublic, TaskTypesPublic

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/task-types", tags=["task types"])


@router.get("", response_model=TaskTypesPublic, summary="The task types the caller may submit")
def list_task_types(app: App, caller: Who) -> TaskTypesPublic:
    """Public types for a tenant; an operator sees the internal ones too."""
    types = [TaskTypePublic.of(t) for t in app.registry if caller.operator or t.visibility == "public"]
    return TaskTypesPublic(data=types, count=len(types))


@router.get("/{name}", response_model=TaskTypePublic, summary="One task type")
def get_task_type(name: str, app: App, caller: Who) -> TaskTypePublic:
    return TaskTypePublic.of(app.registry.get(name) if caller.operator else app.registry.get_public(name))

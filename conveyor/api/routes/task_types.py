"""/api/v1/task-types: what can be submitted, with each type's params schema."""

from __future__ import annotations

from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import TaskTypePublic, TaskTypesPublic

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/task-types", tags=["task types"])


@router.get("", response_model=TaskTypesPublic, summary="Every registered task type")
def list_task_types(app: App, _tenant: Tenant) -> TaskTypesPublic:
    types = [TaskTypePublic.of(t) for t in app.registry]
    return TaskTypesPublic(data=types, count=len(types))


@router.get("/{name}", response_model=TaskTypePublic, summary="One task type")
def get_task_type(name: str, app: App, _tenant: Tenant) -> TaskTypePublic:
    return TaskTypePublic.of(app.registry.get(name))

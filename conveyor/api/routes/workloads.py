"""/api/v1/workloads: what is loaded here, for clients and the dashboard to discover."""

from __future__ import annotations

from typing import Any

from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter

__all__ = ["DASHBOARD_PREFIX", "router"]

router = SlashRouter(prefix="/api/v1/workloads", tags=["system"])

#: where a workload's dashboard folder is served: ``/workloads/<name>/page.js``
DASHBOARD_PREFIX = "/workloads"


@router.get("", summary="Loaded workloads: their task types and dashboard pages")
def workloads(app: App, _tenant: Tenant) -> dict[str, Any]:
    """Each loaded workload with its task types and, when it has one, its dashboard page module."""
    by_module: dict[str, list[str]] = {}
    for tt in app.registry:
        by_module.setdefault(tt.fn.__module__, []).append(tt.name)
    data = []
    for w in app.workloads:
        d = w.declaration
        names = sorted(n for module in d.modules for m, ns in by_module.items() if m.startswith(module) for n in ns)
        folder = d.dashboard
        base = f"{DASHBOARD_PREFIX}/{d.name}"
        page = f"{base}/page.js" if folder and (folder / "page.js").is_file() else None
        css = f"{base}/page.css" if folder and page and (folder / "page.css").is_file() else None
        data.append(
            {"name": d.name, "description": d.description, "task_types": names, "page": page, "stylesheet": css}
        )
    return {"data": data, "count": len(data), "not_loaded": app.workloads.skipped}

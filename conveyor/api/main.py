"""create_app: the FastAPI application of one Conveyor."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI, Request

from conveyor import __version__
from conveyor.api import accesslog, route_index
from conveyor.api.errors import install_error_handlers
from conveyor.api.guard import InputGuardMiddleware
from conveyor.api.limits import BodyLimitMiddleware, TenantLimits
from conveyor.api.routes import batch, session, stats, system, task_types, tasks, workloads
from conveyor.api.shared_reads import SharedReads
from conveyor.app import Conveyor

__all__ = ["create_app"]

log = logging.getLogger("conveyor.api")


def create_app(conveyor: Conveyor | None = None, *, manage: bool = True, scheduler: bool | None = None) -> FastAPI:
    """The HTTP API (and dashboard) over ``conveyor``.

    With ``manage`` the app starts the Conveyor on startup and drains it on
    shutdown; pass False when the caller owns its lifecycle.
    """
    conveyor = conveyor or Conveyor()
    run_scheduler = conveyor.settings.scheduler if scheduler is None else scheduler

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking calls run in worker threads: 40 by default is too few for
        # a burst of uploads and submits, each of which touches the store.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 100
        if manage:
            conveyor.start(scheduler=run_scheduler)
        try:
            yield
        finally:
            if manage:
                await anyio.to_thread.run_sync(conveyor.stop)

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        summary="Asynchronous tasks with progress you can watch",
        lifespan=lifespan,
    )
    app.state.conveyor = conveyor
    settings = conveyor.settings
    app.state.limits = TenantLimits(settings.tenant_rate, settings.tenant_burst, settings.tenant_max_streams)
    app.state.shared_reads = SharedReads(conveyor.store, conveyor.hub)
    accesslog.install()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=conveyor.settings.max_body_bytes)
    app.add_middleware(InputGuardMiddleware)
    app.include_router(batch.router)
    app.include_router(tasks.router)
    app.include_router(tasks.legacy_router)
    app.include_router(task_types.router)
    app.include_router(system.router)
    app.include_router(stats.router)
    app.include_router(session.router)
    app.include_router(workloads.router)
    for w in conveyor.workloads:
        if w.router is not None:
            app.include_router(w.router)
    _answer_unknown_api_paths(app)
    _mount_dashboard(app, conveyor)
    route_index.install(app.router)
    return app


def _answer_unknown_api_paths(app: FastAPI) -> None:
    """Under /api/ the dashboard's static mount never answers: a wrong method is a JSON 405 with the
    route's own ``Allow``, an unknown path a JSON 404 (the mount would say ``Allow: GET, HEAD``)."""
    from starlette.exceptions import HTTPException
    from starlette.routing import Match, Mount

    from conveyor.api.route_index import RouteIndex

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    async def unknown(request: Request) -> None:
        # The static mounts (dashboard, workload pages) would match any path.
        routes = [
            r
            for r in app.router.routes
            if not isinstance(r, Mount | RouteIndex) and getattr(r, "endpoint", None) is not unknown
        ]
        allowed = [
            m for m in methods if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)
        ]
        if allowed:
            raise HTTPException(405, f"{request.method} is not allowed here", headers={"Allow": ", ".join(allowed)})
        raise HTTPException(404, f"no API route at {request.url.path}")

    app.add_api_route("/api/{rest:path}", unknown, methods=methods, include_in_schema=False)


def _mount_dashboard(app: FastAPI, conveyor: Conveyor) -> None:
    from pathlib import Path

    from fastapi.staticfiles import StaticFiles

    # Each workload's page folder first: the dashboard's own mount at / takes every other path.
    for w in conveyor.workloads:
        folder = w.declaration.dashboard
        if folder is not None and folder.is_dir():
            app.mount(f"{workloads.DASHBOARD_PREFIX}/{w.name}", StaticFiles(directory=folder), name=f"page-{w.name}")
    static = Path(__file__).resolve().parent.parent / "dashboard" / "static"
    if (static / "index.html").exists():
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    else:

        @app.get("/", include_in_schema=False)
        def root() -> dict[str, str]:
            return {"name": "Conveyor", "version": __version__, "docs": "/docs"}

"""Write a workload: one folder, loaded by name, serving, migrating and in the dashboard.

This test is the recipe in docs/architecture.md ("Write a workload"). It writes
a throwaway package ``notes`` into a temporary folder — a task, a route, a
table with its migration, a periodic job, settings and a dashboard page — and
starts a real ``conveyor serve`` with ``CONVEYOR_WORKLOADS=system,notes`` and
that folder on ``PYTHONPATH``. No file of Conveyor's own is touched.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.acceptance.server import REPO, Server
from tests.browser.conftest import OpenPage, submit, task_state

pytestmark = pytest.mark.browser

FILES = {
    "notes/__init__.py": '''
        """Notes: a workload in one folder."""

        from __future__ import annotations

        from pathlib import Path

        from conveyor.scheduler import PeriodicJob
        from conveyor.workload import Workload
        from notes.config import NotesSettings

        _here = Path(__file__).resolve().parent

        workload = Workload(
            name="notes",
            description="Short notes, kept in a table of their own",
            requires=("sqlalchemy",),
            needs_sql=True,
            modules=("notes.tasks",),
            router="notes.routes:router",
            # the scheduler submits as the tenant a job names ("system" unless told)
            periodic_jobs=(PeriodicJob("notes-tick", "notes.tick", every=1, tenant="local"),),
            settings=NotesSettings,
            migrations=_here / "migrations",
            dashboard=_here / "dashboard",
        )
    ''',
    "notes/config.py": """
        from pydantic_settings import BaseSettings, SettingsConfigDict


        class NotesSettings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="CONVEYOR_NOTES_", extra="ignore")

            #: written in front of every note
            prefix: str = "note"
    """,
    "notes/tables.py": """
        import sqlalchemy as sa

        metadata = sa.MetaData()
        notes = sa.Table(
            "notes",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("tenant", sa.String(200), nullable=False),
            sa.Column("text", sa.Text, nullable=False),
        )
    """,
    "notes/migrations/n0001_notes.py": """
        import sqlalchemy as sa
        from alembic import op

        revision = "notes_0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.create_table(
                "notes",
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("tenant", sa.String(200), nullable=False),
                sa.Column("text", sa.Text, nullable=False),
            )


        def downgrade() -> None:
            op.drop_table("notes")
    """,
    "notes/tasks.py": """
        from conveyor import TaskContext, task
        from notes.tables import notes


        @task("notes.add", queue="default")
        def add(ctx: TaskContext, text: str) -> dict:
            config = ctx.resources.workload_settings("notes")
            ctx.progress(50, "Writing the note")
            with ctx.resources.engine.begin() as conn:
                conn.execute(notes.insert().values(tenant=ctx.tenant, text=f"{config.prefix}: {text}"))
            return {"saved": True}


        @task("notes.tick", queue="default", visibility="internal")
        def tick(ctx: TaskContext) -> dict:
            return {"tick": True}
    """,
    "notes/routes.py": """
        import sqlalchemy as sa

        from conveyor.api.deps import App, Tenant
        from conveyor.api.routing import SlashRouter
        from notes.tables import notes

        router = SlashRouter(prefix="/api/notes", tags=["notes"])


        @router.get("")
        def list_notes(app: App, tenant: Tenant) -> dict:
            with app.engine.connect() as conn:
                rows = conn.execute(sa.select(notes.c.text).where(notes.c.tenant == tenant).order_by(notes.c.id))
                texts = [r.text for r in rows]
            return {"data": texts, "count": len(texts)}
    """,
    "notes/dashboard/page.js": """
        import { api } from "/js/api.js";
        import { h } from "/js/dom.js";

        export const nav = { href: "#/notes", label: "Notes" };

        function notesView(root) {
          const list = h("ul", { class: "notes" });
          root.append(h("h1", {}, "Notes"), list);
          api("/api/notes").then((page) => list.append(...page.data.map((t) => h("li", {}, t))));
          return null;
        }

        export const routes = [{ re: /^\\/notes$/, view: notesView, title: "Notes" }];
    """,
    "notes/dashboard/page.css": """
        .notes li { font-weight: 600; }
    """,
}


def write_workload(root: Path) -> None:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("workload")
    write_workload(root / "pkg")
    srv = Server(
        root / "run",
        env={
            "PYTHONPATH": f"{root / 'pkg'}:{REPO}",
            "CONVEYOR_WORKLOADS": "system,notes",
            "CONVEYOR_NOTES_PREFIX": "memo",
        },
    ).start()
    yield srv
    srv.stop()


def test_a_workload_in_one_folder_serves_migrates_and_runs_its_periodic_job(server: Server) -> None:
    """Its task writes to its own migrated table with its own setting; its route reads it; its job fires."""
    task_id = submit(server.url, "notes.add", {"text": "buy lanterns"})
    deadline = time.monotonic() + 20
    while task_state(server.url, task_id)["status"] != "SUCCESS":
        assert time.monotonic() < deadline, task_state(server.url, task_id)
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/api/notes").json() == {"data": ["memo: buy lanterns"], "count": 1}

    listing = httpx.get(f"{server.url}/api/v1/workloads").json()
    notes = next(w for w in listing["data"] if w["name"] == "notes")
    assert notes["task_types"] == ["notes.add", "notes.tick"]
    assert notes["page"] == "/workloads/notes/page.js"
    assert httpx.get(server.url + notes["page"]).status_code == 200
    assert httpx.get(f"{server.url}/health").json()["workloads"]["notes"] == {"status": "loaded"}

    # The periodic job (every second) fires through the in-process scheduler.
    deadline = time.monotonic() + 20
    while True:
        ticks = httpx.get(f"{server.url}/api/v1/tasks", params={"type": "notes.tick"}).json()
        if ticks.get("count"):
            break
        assert time.monotonic() < deadline, "the periodic job never ran"
        time.sleep(0.2)


def test_a_workload_page_appears_in_the_dashboard_nav(server: Server, open_page: OpenPage) -> None:
    """The shell finds the page from /api/v1/workloads: a nav entry, its route, its stylesheet."""
    submit(server.url, "notes.add", {"text": "fold the map"})
    tab = open_page(server.url)
    page = tab.page
    page.goto("/#/tasks")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Notes").click()
    expect(page.get_by_role("heading", name="Notes", level=1)).to_be_visible()
    expect(page.get_by_text("memo: fold the map")).to_be_visible()
    assert page.locator("link[data-workload='notes']").count() == 1
    tab.shot("workload-notes")

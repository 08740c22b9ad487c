"""Alembic environment for Conveyor's tables.

Conveyor runs its migrations itself (``SqlStore.open()``, ``conveyor db
upgrade``) and hands the connection in through ``config.attributes``; no
alembic.ini is needed. The version table has its own name so that it never
clashes with an application's own Alembic history in the same database.
"""

from __future__ import annotations

from alembic import context

from conveyor.stores.sql_schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - run through `alembic -x url=...`
    import sqlalchemy as sa

    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database as: alembic -x url=postgresql+psycopg://... upgrade head")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, version_table=VERSION_TABLE, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(
        connection=connection,
        # the core's history, or one workload's (each has a version table of its own)
        version_table=context.config.attributes.get("version_table", VERSION_TABLE),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()

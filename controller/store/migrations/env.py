"""Alembic environment: migrates the connection handed over by ``migrate.upgrade``.

Offline mode (``alembic upgrade --sql``) renders SQL for the URL in ``sqlalchemy.url``.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import context

from controller.store.migrate import PG_MIGRATION_LOCK_KEY
from controller.store.schema import metadata

LOCK_POLL_S = 0.2


def _run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            _take_turns(connection)
        context.run_migrations()


def _take_turns(connection: sa.Connection) -> None:
    """Sites that start together must not race to create the central tables: wait for the
    migration lock by polling, so every statement answers at once and a forwarder waiting
    here is not mistaken for one stalled on a hung server."""
    take = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    while not connection.execute(take, {"key": PG_MIGRATION_LOCK_KEY}).scalar_one():
        time.sleep(LOCK_POLL_S)


def _main() -> None:
    if context.is_offline_mode():
        _run_offline()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection handed over and no sqlalchemy.url set")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _run_online(conn)
    finally:
        engine.dispose()


_main()

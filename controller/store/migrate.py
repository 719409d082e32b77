"""Bring a journal database (local SQLite or central PostgreSQL) to the newest schema."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from controller.store.sqlite import sqlite_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

PG_MIGRATION_LOCK_KEY = 0x43474A4E
"""PostgreSQL advisory lock held while migrating, so sites starting together take turns."""

# Alembic's context is process-global: one migration at a time in this process.
_lock = threading.Lock()


def alembic_config() -> Config:
    """An Alembic configuration built in code: no ``alembic.ini`` is needed at run time."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions in {MIGRATIONS_DIR}")
    return head


def current_revision(bind: str | sa.Engine) -> str | None:
    """The revision a database is at, or None when it was never migrated. Blocking."""
    engine, owned = _engine(bind)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def upgrade(url: str | sa.Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on the database; a no-op when it is already there.

    Blocking: call it from a worker thread, never on the event loop. For SQLite the file and
    its parent folders are created, and the whole upgrade runs in one transaction (SQLite
    and PostgreSQL both have transactional DDL), so a failed upgrade leaves nothing behind.
    ``revision`` other than head is for tests and benchmarks that need an older schema.
    """
    engine, owned = _engine(url)
    try:
        wanted = head_revision() if revision == "head" else revision
        if current_revision(engine) == wanted:
            return
        writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        with _lock, writer.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if owned:
            engine.dispose()


def _engine(bind: str | sa.Engine) -> tuple[sa.Engine, bool]:
    if isinstance(bind, sa.Engine):
        return bind, False
    url = sa.make_url(bind)
    if url.get_backend_name() == "sqlite":
        return sqlite_engine(url, create_parent=True), True
    return sa.create_engine(url, poolclass=sa.pool.NullPool), True

"""Alembic migrations: a fresh SQLite file and a fresh PostgreSQL database reach head."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controller.store import migrate
from controller.store.schema import metadata

PROJECT_ROOT = Path(__file__).resolve().parents[1]

JOURNAL_COLUMNS = {
    "site",
    "seq",
    "ts",
    "wall_time",
    "kind",
    "line",
    "tracking_id",
    "hawb",
    "state_from",
    "state_to",
    "destination",
    "lane",
    "reasons",
    "policy_version",
    "data",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'journal.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def inspect(url: str) -> tuple[dict[str, set[str]], dict[str, set[str]], list[str]]:
    """(columns per table, index names per table, primary key of journal)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        insp = sa.inspect(engine)
        tables = {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
        indexes = {t: {i["name"] or "" for i in insp.get_indexes(t)} for t in tables}
        pk = insp.get_pk_constraint("journal")["constrained_columns"]
        return tables, indexes, pk
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema(db_url: str) -> None:
    assert migrate.current_revision(db_url) is None
    migrate.upgrade(db_url)
    tables, indexes, pk = inspect(db_url)
    assert {"journal", "forward_state", "alembic_version"} <= set(tables)
    assert tables["journal"] == JOURNAL_COLUMNS
    assert tables["forward_state"] == {"target", "last_seq", "updated_at"}
    assert pk == ["site", "seq"]
    assert {"ix_journal_hawb", "ix_journal_line_tracking_id"} <= indexes["journal"]
    assert migrate.current_revision(db_url) == migrate.head_revision()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                metadata.tables["forward_state"].insert(),
                {"target": "t", "last_seq": 7, "updated_at": datetime.now(UTC)},
            )
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT last_seq FROM forward_state")).scalar() == 7
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert versions == [(migrate.head_revision(),)]
    finally:
        engine.dispose()


def test_models_match_the_migrations(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_upgrade_needs_no_ini_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "alembic.ini").exists()
    migrate.upgrade("sqlite:///relative/journal.sqlite")
    assert (tmp_path / "relative" / "journal.sqlite").is_file()
    assert migrate.current_revision("sqlite:///relative/journal.sqlite") == "0001"


def test_migration_files_ship_with_the_package() -> None:
    folder = migrate.MIGRATIONS_DIR
    assert (folder / "__init__.py").is_file()
    assert (folder / "env.py").is_file()
    assert (folder / "script.py.mako").is_file()
    assert (folder / "versions" / "__init__.py").is_file()
    assert (folder / "versions" / "0001_initial.py").is_file()


@pytest.mark.postgres
def test_processes_upgrading_one_postgres_database_take_turns(pg_url: str) -> None:
    """Sites starting together queue on an advisory lock instead of racing to create tables."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    code = "import sys; from controller.store import migrate; migrate.upgrade(sys.argv[1])"
    waiting = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        with engine.connect() as holder:
            holder.execute(
                sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrate.PG_MIGRATION_LOCK_KEY}
            )
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", code, pg_url], cwd=PROJECT_ROOT, stderr=subprocess.PIPE
                )
                for _ in range(2)
            ]
            deadline = time.monotonic() + 30
            with engine.connect() as probe:
                while probe.execute(waiting).scalar_one() < len(procs):
                    assert time.monotonic() < deadline, "migrations never queued on the lock"
                    assert all(p.poll() is None for p in procs), "a migration did not wait"
                    time.sleep(0.05)
            holder.execute(
                sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.PG_MIGRATION_LOCK_KEY}
            )
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err.decode()
    finally:
        engine.dispose()
    assert migrate.current_revision(pg_url) == migrate.head_revision()

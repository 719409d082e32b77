"""Alembic migrations: a fresh SQLite file and a fresh PostgreSQL database reach head."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controller.core.domain import EntryKind, JournalEntry
from controller.core.lifecycle import ParcelState
from controller.recovery import recover
from controller.store import chain, migrate
from controller.store.forwarder import JournalForwarder, target_name
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries, read_open_set
from controller.store.rows import entry_to_row
from controller.store.schema import journal_table, metadata
from tests.test_recovery import DECIDED, IN_INSPECTION, RECIRCULATING, SITE, Script, write

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
    "prev_hash",
    "hash",
}

OPEN_PARCEL_COLUMNS = {
    "site",
    "opened_seq",
    "line",
    "tracking_id",
    "hawb",
    "state",
    "laps",
    "arrived_wall",
    "updated_seq",
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
    assert {"journal", "forward_state", "open_parcels", "active_holds", "alembic_version"} <= set(
        tables
    )
    assert tables["journal"] == JOURNAL_COLUMNS
    assert tables["forward_state"] == {"target", "last_seq", "updated_at"}
    assert tables["open_parcels"] == OPEN_PARCEL_COLUMNS
    assert tables["active_holds"] == {
        "site",
        "hawb",
        "placed_by",
        "reason",
        "placed_at",
        "placed_seq",
    }
    assert pk == ["site", "seq"]
    assert {"ix_journal_hawb", "ix_journal_line_tracking_id"} <= indexes["journal"]
    assert "ix_open_parcels_site_line_tracking_id" in indexes["open_parcels"]
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
    assert migrate.current_revision("sqlite:///relative/journal.sqlite") == migrate.head_revision()


def test_migration_files_ship_with_the_package() -> None:
    folder = migrate.MIGRATIONS_DIR
    assert (folder / "__init__.py").is_file()
    assert (folder / "env.py").is_file()
    assert (folder / "script.py.mako").is_file()
    assert (folder / "versions" / "__init__.py").is_file()
    assert (folder / "versions" / "0001_initial.py").is_file()
    assert (folder / "versions" / "0002_open_parcels_and_holds.py").is_file()
    assert (folder / "versions" / "0004_journal_hash_chain.py").is_file()


@pytest.mark.postgres
def test_processes_upgrading_one_postgres_database_take_turns(pg_url: str) -> None:
    """Sites starting together queue on an advisory lock instead of racing to create tables;
    they poll for it, so no statement of theirs hangs (a forwarder would call that a stall)."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    code = "import sys; from controller.store import migrate; migrate.upgrade(sys.argv[1])"
    polling = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND strpos(query, 'pg_try_advisory_xact_lock') > 0"
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
                while probe.execute(polling).scalar_one() < len(procs):
                    probe.rollback()  # statistics views are a snapshot per transaction
                    assert time.monotonic() < deadline, "migrations never queued on the lock"
                    assert all(p.poll() is None for p in procs), "a migration did not wait"
                    time.sleep(0.05)
            time.sleep(0.5)
            assert all(p.poll() is None for p in procs), "a migration did not wait"
            assert migrate.current_revision(pg_url) is None
            holder.execute(
                sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.PG_MIGRATION_LOCK_KEY}
            )
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err.decode()
    finally:
        engine.dispose()
    assert migrate.current_revision(pg_url) == migrate.head_revision()


# --- 0002: open_parcels and active_holds, backfilled from the journal -------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def old_rows(entries: list[JournalEntry], site: str = SITE) -> list[dict[str, Any]]:
    """Rows as the previous releases' writer made them: no hash chain."""
    wall = datetime.now(UTC)
    return [
        {**entry_to_row(e), "site": site, "seq": seq, "wall_time": wall}
        for seq, e in enumerate(entries, start=1)
    ]


def write_the_old_way(url: str, entries: list[JournalEntry], site: str = SITE) -> None:
    """Rows as the previous release's writer inserted them: journal rows and nothing else."""
    insert_rows(url, old_rows(entries, site))


def insert_rows(url: str, rows: list[dict[str, Any]], table: sa.Table = journal_table) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)
    finally:
        engine.dispose()


def scenario() -> Script:
    """Open, closed, lapped and reused-id parcels, holds and lifts, accepted and refused."""
    return (
        Script()
        .scan("L1", 1, "H1")
        .move("L1", 1, "H1", ParcelState.SCANNED, DECIDED, RECIRCULATING)
        .move("L1", 1, "H1", RECIRCULATING, ParcelState.SCANNED, DECIDED)
        .scan("L1", 2, "H2")
        .move("L1", 2, "H2", ParcelState.SCANNED, DECIDED, IN_INSPECTION)
        .scan("L1", 2, "H3")
        .move("L1", 2, "H3", ParcelState.SCANNED, DECIDED, ParcelState.RELEASED)
        .scan("L2", 3, "H4")
        .move("L2", 3, "H4", ParcelState.SCANNED, DECIDED)
        .move("L2", 3, "H4", DECIDED, ParcelState.RELEASED, kind=EntryKind.ILLEGAL_TRANSITION)
        .hold("H7", "alice", "x-ray anomaly")
        .hold("H8", "alice", "papers")
        .lift("H8", "bob", "papers arrived")
        .hold("H9", "eve", "refused", accepted=False)
    )


def test_a_journal_of_the_previous_release_recovers_after_the_upgrade(tmp_path: Path) -> None:
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    entries = scenario().entries
    migrate.upgrade(f"sqlite:///{old}", "0001")
    write_the_old_way(f"sqlite:///{old}", entries)
    asyncio.run(write(new, entries, one_by_one=True))  # the same rows, written by this release

    async def reopen() -> None:  # the journal migrates the file when it opens it
        async with SqliteJournal(old, SITE):
            pass

    asyncio.run(reopen())
    assert migrate.current_revision(f"sqlite:///{old}") == migrate.head_revision()
    result = recover(old, SITE, 100.0, datetime.now(UTC), 24.0)
    assert {(p.line, p.tracking_id, p.hawb): (p.state.value, p.laps) for p in result.parcels} == {
        ("L1", 1, "H1"): ("decided", 1),
        ("L1", 2, "H2"): ("in_inspection", 0),
        ("L2", 3, "H4"): ("decided", 0),
    }
    assert [(h.hawb, h.user, h.reason) for h in result.holds] == [("H7", "alice", "x-ray anomaly")]
    # backfilled and kept by the writer: the same tables, wall times apart
    backfilled, kept = read_open_set(old, SITE), read_open_set(new, SITE)
    assert [replace(p, arrived_wall=EPOCH) for p in backfilled[0]] == [
        replace(p, arrived_wall=EPOCH) for p in kept[0]
    ]
    assert [replace(h, placed_at=EPOCH) for h in backfilled[1]] == [
        replace(h, placed_at=EPOCH) for h in kept[1]
    ]


def test_upgrading_a_journal_with_rows_from_0001(db_url: str) -> None:
    """Both backends migrate a journal that already holds rows; only SQLite backfills (the
    central database's copy is not maintained, so it stays empty there)."""
    migrate.upgrade(db_url, "0001")
    assert migrate.current_revision(db_url) == "0001"
    write_the_old_way(db_url, scenario().entries)
    write_the_old_way(db_url, Script().scan("L9", 1, "OTHER").entries, site="OTHER")
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision()
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            counts = {
                table: conn.execute(
                    sa.text(f"SELECT site, count(*) FROM {table} GROUP BY site ORDER BY site")
                ).all()
                for table in ("open_parcels", "active_holds")
            }
            journal_rows: int = conn.execute(sa.text("SELECT count(*) FROM journal")).scalar_one()
    finally:
        engine.dispose()
    assert journal_rows == len(scenario().entries) + 1
    if db_url.startswith("sqlite"):
        assert counts == {
            "open_parcels": [("HUB1", 3), ("OTHER", 1)],
            "active_holds": [("HUB1", 1)],
        }
    else:
        assert counts == {"open_parcels": [], "active_holds": []}


# --- 0004: the hash chain, from the first row written after the upgrade ----------------------


def test_0004_leaves_the_old_rows_unsealed(db_url: str) -> None:
    """Adding the columns is all it does (instant on any journal): the rows already there
    verify as a prefix that predates the chain."""
    migrate.upgrade(db_url, "0003")
    write_the_old_way(db_url, scenario().entries)
    write_the_old_way(db_url, Script().scan("L9", 1, "OTHER").entries, site="OTHER")
    migrate.upgrade(db_url)
    n = len(scenario().entries)
    assert [(c.site, c.entries, c.unsealed, c.ok) for c in chain.verify(db_url)] == [
        (SITE, n, n, True),
        ("OTHER", 1, 1, True),
    ]


async def test_the_chain_starts_after_the_rows_that_predate_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    entries = scenario().entries
    migrate.upgrade(f"sqlite:///{path}", "0003")
    write_the_old_way(f"sqlite:///{path}", entries)
    async with SqliteJournal(path, SITE) as journal:  # migrates, then starts the chain
        await journal.write(entries[:2])
    async with SqliteJournal(path, SITE) as journal:  # and carries it on after a restart
        await journal.write(entries[2:3])
    rows = read_entries(path, site=SITE)
    n = len(entries)
    assert [r["hash"] for r in rows[:n]] == [None] * n
    assert rows[n]["prev_hash"] == chain.GENESIS
    assert rows[n + 1]["prev_hash"] == rows[n]["hash"]
    assert rows[n + 2]["prev_hash"] == rows[n + 1]["hash"]
    assert [(c.entries, c.unsealed, c.ok) for c in chain.verify(path)] == [(n + 3, n, True)]


@pytest.mark.postgres
async def test_0004_keeps_the_local_journal_and_the_central_copy_alike(
    tmp_path: Path, pg_url: str
) -> None:
    """Both copies leave the same old rows unsealed; the forwarder ships the chain that
    starts after them, and the central copy verifies like the local one."""
    local = tmp_path / "journal.sqlite"
    local_url = f"sqlite:///{local}"
    entries = scenario().entries
    rows = old_rows(entries)
    shipped = len(rows) - 4  # the previous release had shipped all but the last four
    for url, part in ((local_url, rows), (pg_url, rows[:shipped])):
        migrate.upgrade(url, "0003")
        insert_rows(url, part)
    insert_rows(
        local_url,
        [{"target": target_name(pg_url), "last_seq": shipped, "updated_at": datetime.now(UTC)}],
        table=metadata.tables["forward_state"],
    )
    async with SqliteJournal(local, SITE) as journal:  # migrates the local file
        await journal.write(entries[:3])
        async with JournalForwarder(local, pg_url, SITE) as forwarder:  # migrates central
            assert await forwarder.forward_once() == 7
    assert read_entries(pg_url) == read_entries(local)
    for copy in (pg_url, local):
        assert [(c.entries, c.unsealed, c.ok) for c in chain.verify(copy)] == [
            (len(rows) + 3, len(rows), True)
        ]

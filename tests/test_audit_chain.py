"""The journal's hash chain: written by the journal, carried by the forwarder, and every kind
of after-the-fact edit caught by ``cargogate audit verify`` at the right ``seq``."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from controller.app.audit_cli import audit_app
from controller.core.domain import EntryKind, JournalEntry
from controller.core.reasons import Reason
from controller.store import chain, migrate
from controller.store.forwarder import JournalForwarder
from controller.store.journal import JournalError, SqliteJournal
from controller.store.read import read_entries
from controller.store.schema import journal_table
from tests.test_migrations import write_the_old_way

SITE = "HUB1"
ROWS = 12
runner = CliRunner()


def entry(tracking_id: int) -> JournalEntry:
    return JournalEntry(
        ts=700.0 + tracking_id / 8,
        kind=EntryKind.DECISION,
        line="L1",
        tracking_id=tracking_id,
        hawb=f"H{tracking_id:06d}",
        state_from="scanned",
        state_to="decided",
        destination="inspection",
        lane=2,
        reasons=(Reason.RISK_RED,),
        policy_version="p1",
        data={"score": tracking_id / 3, "why": {"ünïcode": "✓", "n": [1, 2.5, None]}},
    )


async def write_journal(path: Path, site: str = SITE) -> None:
    """``ROWS`` entries in several commits over two openings of the file (a restart)."""
    async with SqliteJournal(path, site) as journal:
        await journal.write([entry(i) for i in range(5)])
        await asyncio.gather(*(journal.write([entry(i)]) for i in range(5, 8)))
    async with SqliteJournal(path, site) as journal:
        await journal.write([entry(i) for i in range(8, ROWS)])


@pytest.fixture
async def local(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    await write_journal(path)
    return path


@pytest.fixture(
    params=["local sqlite", pytest.param("central postgresql", marks=pytest.mark.postgres)]
)
async def copy(request: pytest.FixtureRequest, local: Path) -> AsyncIterator[str]:
    """A journal holding the ``local`` rows: the local file itself, or the central
    PostgreSQL copy the forwarder made of it."""
    if request.param == "local sqlite":
        yield f"sqlite:///{local}"
        return
    url: str = request.getfixturevalue("pg_url")
    async with JournalForwarder(local, url, SITE) as forwarder:
        assert await forwarder.forward_once() == ROWS
    yield url


def run(source: str | Path, *args: str) -> Result:
    return runner.invoke(audit_app, ["verify", str(source), *args], terminal_width=300)


def execute(url: str, statement: str, **params: object) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def swap(url: str, a: int, b: int) -> None:
    """Swap two rows' contents, hashes included, leaving their ``seq`` where they were."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    j = journal_table.c
    try:
        with engine.begin() as conn:
            rows = {
                r["seq"]: {k: v for k, v in r.items() if k not in ("site", "seq")}
                for r in conn.execute(
                    sa.select(journal_table).where(j.site == SITE, j.seq.in_([a, b]))
                ).mappings()
            }
            for seq, other in ((a, b), (b, a)):
                conn.execute(
                    sa.update(journal_table)
                    .where(j.site == SITE, j.seq == seq)
                    .values(**rows[other])
                )
    finally:
        engine.dispose()


def forge(url: str) -> None:
    """What a careful forger does: edit seq 5, then recompute that row's own hash."""
    execute(url, "UPDATE journal SET destination = 'release' WHERE seq = 5")
    row = next(r for r in read_entries(url, site=SITE) if r["seq"] == 5)
    execute(url, "UPDATE journal SET hash = :h WHERE seq = 5", h=chain.entry_hash(row))


# --- what the writer stores ------------------------------------------------------------------


async def test_each_entry_is_sealed_to_the_one_before(local: Path) -> None:
    rows = read_entries(local, site=SITE)
    assert [r["seq"] for r in rows] == list(range(1, ROWS + 1))
    assert rows[0]["prev_hash"] == chain.GENESIS
    for before, row in itertools.pairwise(rows):
        assert row["prev_hash"] == before["hash"]
    for row in rows:
        assert row["hash"] == chain.entry_hash(row)
        assert len(row["hash"]) == 64


def test_the_canonical_form_is_pinned() -> None:
    """The documented serialisation, byte for byte: changing it orphans every journal."""
    row: dict[str, Any] = {
        "site": "HUB1",
        "seq": 1,
        "prev_hash": chain.GENESIS,
        "wall_time": datetime(2026, 12, 8, 9, 30, 0, 123456, tzinfo=UTC),
        "ts": 12.5,
        "kind": "decision",
        "line": "L1",
        "tracking_id": 42,
        "hawb": "H1",
        "state_from": "scanned",
        "state_to": "decided",
        "destination": "release",
        "lane": None,
        "reasons": [201],
        "policy_version": "p1",
        "data": {"b": 1.0, "a": "é"},
    }
    assert chain.canonical(row) == (
        b'["cargogate-journal-v1","HUB1",1,"' + chain.GENESIS.encode() + b'",'
        b'"2026-12-08T09:30:00.123456Z",12.5,"decision","L1",42,"H1","scanned","decided",'
        b'"release",null,[201],"p1",{"a":"\\u00e9","b":1.0}]'
    )
    assert chain.entry_hash(row) == (
        "971f0894f250eef92a188aa1fcc89fb95238db9a4ec86a415a436f053cf4ff73"
    )


async def test_a_failed_commit_leaves_the_chain_whole(tmp_path: Path) -> None:
    """A batch that rolls back must not move the writer's chain head on."""
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE, group_commit_ms=20) as journal:
        await journal.write([entry(1)])
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal WHEN NEW.hawb = 'H000002' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
        other.commit()
        with pytest.raises(JournalError):
            await journal.write([entry(2), entry(3)])
        other.execute("DROP TRIGGER refuse")
        other.commit()
        other.close()
        await journal.write([entry(4)])
    assert [(c.entries, c.ok) for c in chain.verify(path)] == [(2, True)]


# --- verification ----------------------------------------------------------------------------


async def test_an_untouched_journal_verifies_after_a_restart(local: Path) -> None:
    result = run(local)
    assert result.exit_code == 0, result.output
    assert result.output == f"{SITE}: OK {ROWS} entries (seq 1..{ROWS})\n"


async def test_the_central_copy_carries_the_chain_and_verifies(copy: str, local: Path) -> None:
    assert read_entries(copy) == read_entries(local)  # hashes included, verbatim
    result = run(copy)
    assert result.exit_code == 0, result.output
    assert f"{SITE}: OK {ROWS} entries" in result.output


Tamper = Callable[[str], None]
TAMPERING: dict[str, tuple[Tamper, int, str]] = {
    "edit": (
        lambda url: execute(url, "UPDATE journal SET hawb = 'FORGED' WHERE seq = 5"),
        5,
        "hash does not match the row's contents",
    ),
    "edit and rehash": (forge, 6, "prev_hash does not match the hash of seq 5"),
    "delete": (
        lambda url: execute(url, "DELETE FROM journal WHERE seq = 5"),
        5,
        "missing (the next row present is seq 6)",
    ),
    "swap": (lambda url: swap(url, 4, 7), 4, "prev_hash does not match the hash of seq 3"),
    "unhash": (
        lambda url: execute(url, "UPDATE journal SET hash = NULL WHERE seq = 9"),
        9,
        "not sealed: the row has no hash",
    ),
    "pass off as older than the chain": (
        lambda url: execute(url, "UPDATE journal SET hash = NULL, prev_hash = NULL WHERE seq < 4"),
        4,
        "prev_hash does not match the genesis value",
    ),
    "restart the chain": (
        lambda url: execute(
            url, "UPDATE journal SET prev_hash = :g WHERE seq = 6", g=chain.GENESIS
        ),
        6,
        "prev_hash does not match the hash of seq 5",
    ),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_tampering_is_caught_at_its_seq(copy: str, tampering: str) -> None:
    tamper, seq, problem = TAMPERING[tampering]
    tamper(copy)
    [found] = chain.verify(copy)
    assert found.broken is not None
    assert (found.site, found.broken.seq) == (SITE, seq)
    assert problem in found.broken.problem
    assert found.entries == seq - 1
    result = run(copy)
    assert result.exit_code == 1
    assert result.output.startswith(f"{SITE}: BROKEN at seq {seq}: ")
    assert problem in result.output
    assert len(result.output.splitlines()) == 1


async def test_a_cut_tail_is_caught_against_the_forwarder_watermark(
    local: Path, tmp_path: Path
) -> None:
    """Removing the newest rows leaves no broken hash; the watermark shows them gone."""
    central = f"sqlite:///{tmp_path / 'central.sqlite'}"
    async with JournalForwarder(local, central, SITE) as forwarder:
        assert await forwarder.forward_once() == ROWS
    execute(f"sqlite:///{local}", f"DELETE FROM journal WHERE seq > {ROWS - 2}")
    [found] = chain.verify(local)
    assert found.broken is not None
    assert found.broken.seq == ROWS - 1
    assert "the forwarder shipped up to seq 12" in found.broken.problem
    assert chain.verify(central)[0].ok  # the central copy still has them


async def test_long_journals_are_read_in_chunks(
    local: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "CHUNK_ROWS", 5)
    assert [(c.entries, c.ok) for c in chain.verify(local)] == [(ROWS, True)]
    execute(f"sqlite:///{local}", "UPDATE journal SET kind = 'alarm' WHERE seq = 11")
    execute(f"sqlite:///{local}", "UPDATE journal SET data = '{' WHERE seq = 12")
    [found] = chain.verify(local)
    assert found.broken == chain.Break(
        11, "hash does not match the row's contents (the row was changed)"
    )
    execute(f"sqlite:///{local}", "DELETE FROM journal WHERE seq = 11")
    [found] = chain.verify(local)
    assert found.broken is not None
    assert found.broken.seq == 11
    execute(f"sqlite:///{local}", "UPDATE journal SET seq = 11 WHERE seq = 12")
    [found] = chain.verify(local)
    assert found.broken is not None
    assert (found.broken.seq, found.broken.problem.split(":")[0]) == (11, "unreadable")


async def test_an_undecodable_row_is_named(local: Path) -> None:
    execute(f"sqlite:///{local}", "UPDATE journal SET data = '{not json' WHERE seq = 3")
    [found] = chain.verify(local)
    assert found.broken is not None
    assert found.broken.seq == 3
    assert found.broken.problem.startswith("unreadable")


async def test_sites_are_verified_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    await write_journal(path, "HUB1")
    await write_journal(path, "HUB2")
    execute(f"sqlite:///{path}", "UPDATE journal SET lane = 3 WHERE site = 'HUB2' AND seq = 2")
    result = run(path)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"HUB1: OK {ROWS} entries (seq 1..{ROWS})"
    assert lines[1].startswith("HUB2: BROKEN at seq 2: ")
    only = run(path, "--site", "HUB1")
    assert (only.exit_code, only.output.count("\n")) == (0, 1)
    unknown = run(path, "--site", "NOPE")
    assert unknown.exit_code == 1
    assert "NOPE: BROKEN at seq 1: no entries for this site" in unknown.output


def not_a_journal(tmp_path: Path) -> str:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    return str(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (lambda tmp: str(tmp / "missing.sqlite"), "no journal database at"),
        (lambda tmp: str(tmp), "no journal database at"),
        (not_a_journal, "not a CargoGate journal"),
        (lambda tmp: "mysql://u@localhost/db", "unsupported database 'mysql'"),
        (lambda tmp: "postgresql://:::", "not a database URL"),
        (lambda tmp: "postgresql://u:secret@127.0.0.1:9/central", "cannot read"),
    ],
)
def test_a_bad_path_or_url_is_one_clear_line(
    tmp_path: Path, source: Callable[[Path], str], message: str
) -> None:
    result = run(source(tmp_path))
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    assert "secret" not in result.output


async def test_rows_older_than_the_chain_are_shown_unsealed(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    await asyncio.to_thread(migrate.upgrade, f"sqlite:///{path}", "0003")
    await asyncio.to_thread(write_the_old_way, f"sqlite:///{path}", [entry(i) for i in range(4)])
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([entry(4), entry(5)])
    result = run(path)
    assert result.exit_code == 0, result.output
    assert (
        result.output
        == f"{SITE}: OK 6 entries (seq 1..6; seq 1..4 predate the chain and are unsealed)\n"
    )


async def test_a_journal_from_before_the_chain_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    await asyncio.to_thread(migrate.upgrade, f"sqlite:///{path}", "0003")
    result = run(path)
    assert result.exit_code == 2
    assert "no hash chain yet" in result.output


def test_verifying_changes_nothing(tmp_path: Path) -> None:
    """Not even the journal mode: the file is opened read-only (a copy taken off a site for
    an audit comes back as it went)."""
    path = tmp_path / "journal.sqlite"
    asyncio.run(write_journal(path))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    conn.close()
    before = path.read_bytes()
    assert run(path).exit_code == 0
    assert path.read_bytes() == before

"""The local SQLite journal: durable before return, group commit, contiguous seq, no loop lag."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.core.domain import EntryKind, JournalEntry, LaneKind
from controller.core.ports import Journal
from controller.core.reasons import Reason
from controller.store.journal import JournalClosedError, JournalError, SqliteJournal
from controller.store.read import count_entries, read_entries, read_open_set
from controller.store.sqlite import sqlite_engine
from tests.support import max_loop_lag

SITE = "HUB1"


def entry(tracking_id: int, **fields: object) -> JournalEntry:
    return JournalEntry(
        ts=1000.0 + tracking_id / 1000,
        kind=EntryKind.DECISION,
        line="L1",
        tracking_id=tracking_id,
        **fields,  # type: ignore[arg-type]
    )


def seqs(path: Path) -> list[int]:
    return [row["seq"] for row in read_entries(path, site=SITE)]


def count_in_other_connection(path: Path, tracking_id: int) -> int:
    """Reads through a plain sqlite3 connection that shares nothing with the journal."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT count(*) FROM journal WHERE tracking_id = ?", (tracking_id,)
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


async def test_concurrent_writes_all_land_with_contiguous_seq(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"

    async def producer(p: int) -> None:
        for i in range(20):
            base = p * 1000 + i * 10
            await journal.write([entry(base + k) for k in range(1 + (i % 3))])

    async with SqliteJournal(path, SITE) as journal:
        await asyncio.gather(*(producer(p) for p in range(50)))
        expected = sum(1 + (i % 3) for i in range(20)) * 50
        assert journal.rows_written == expected
        assert journal.last_seq == expected

    rows = read_entries(path, site=SITE)
    assert [row["seq"] for row in rows] == list(range(1, expected + 1))
    ids = [row["tracking_id"] for row in rows]
    assert len(set(ids)) == expected
    # the entries of one write call are stored together and in order
    by_seq = {row["tracking_id"]: row["seq"] for row in rows}
    assert by_seq[1011] == by_seq[1010] + 1
    assert by_seq[1022] == by_seq[1021] + 1 == by_seq[1020] + 2


async def test_reopening_continues_seq(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([entry(1), entry(2), entry(3)])
    async with SqliteJournal(path, SITE) as journal:
        assert journal.last_seq == 3
        await journal.write([entry(4)])
        assert journal.last_seq == 4
    async with SqliteJournal(path, "OTHER") as journal:
        await journal.write([entry(5)])
    assert seqs(path) == [1, 2, 3, 4]
    assert [row["seq"] for row in read_entries(path, site="OTHER")] == [1]


async def test_start_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deep" / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([entry(1)])
    assert path.is_file()
    assert count_entries(path) == 1


async def test_write_returns_only_when_readable_from_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    seen_after_return: list[int] = []

    async def write_then_check(tracking_id: int) -> None:
        await journal.write([entry(tracking_id)])
        seen_after_return.append(
            await asyncio.to_thread(count_in_other_connection, path, tracking_id)
        )

    async with SqliteJournal(path, SITE, group_commit_ms=5) as journal:
        for tracking_id in range(5):
            await write_then_check(tracking_id)
        await asyncio.gather(*(write_then_check(t) for t in range(100, 150)))
    assert seen_after_return == [1] * 55


async def test_group_commit_groups_concurrent_writes(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "journal.sqlite", SITE, group_commit_ms=2) as journal:
        await asyncio.gather(*(journal.write([entry(i)]) for i in range(500)))
        assert journal.rows_written == 500
        assert journal.commits <= 50, f"{journal.commits} commits for 500 writes"


async def test_lone_write_commits_without_waiting_for_company(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "journal.sqlite", SITE, group_commit_ms=2) as journal:
        started = time.perf_counter()
        for i in range(20):
            await journal.write([entry(i)])
        assert journal.commits == 20
        assert time.perf_counter() - started < 2.0


async def test_event_loop_is_not_blocked_while_writing(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal:

        async def work() -> None:
            for burst in range(20):
                await asyncio.gather(
                    *(journal.write([entry(burst * 1000 + i)]) for i in range(500))
                )

        lag = await max_loop_lag(work)
        assert journal.rows_written == 10_000
    assert lag < 0.1, f"event loop stalled for {lag * 1000:.0f} ms"


async def test_fields_reasons_and_data_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    original = JournalEntry(
        ts=1234.5678,
        kind=EntryKind.TRANSITION,
        line="L2",
        tracking_id=2**40 + 7,
        hawb="HAWB123456",
        state_from="scanned",
        state_to="decided",
        destination=LaneKind.INSPECTION.value,
        lane=12,
        reasons=(Reason.RISK_RED, Reason.XRAY_ALARM),
        policy_version="p-2026.11",
        data=MappingProxyType(
            {
                "risk": {"channel": "RED", "score": 0.91},
                "xray": MappingProxyType({"firearm": 0.4, "blade": math.nan}),
                "lane_kind": LaneKind.INSPECTION,
                "reasons": (Reason.RISK_RED,),
                "flags": [True, None, "ünïcode ✓"],
            }
        ),
    )
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([original, entry(2)])
    first, second = read_entries(path, site=SITE)
    assert first["kind"] == "transition"
    assert first["line"] == "L2"
    assert first["tracking_id"] == 2**40 + 7
    assert first["hawb"] == "HAWB123456"
    assert (first["state_from"], first["state_to"]) == ("scanned", "decided")
    assert first["destination"] == "inspection"
    assert first["lane"] == 12
    assert first["ts"] == 1234.5678
    assert first["reasons"] == [201, 210]
    assert first["policy_version"] == "p-2026.11"
    assert first["data"] == {
        "risk": {"channel": "RED", "score": 0.91},
        "xray": {"firearm": 0.4, "blade": "NaN"},
        "lane_kind": "inspection",
        "reasons": [201],
        "flags": [True, None, "ünïcode ✓"],
    }
    assert first["wall_time"].tzinfo is not None
    assert first["wall_time"].utcoffset().total_seconds() == 0
    assert second["lane"] is None
    assert second["reasons"] == []
    assert second["data"] == {}


async def test_unstorable_entry_fails_its_own_call_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE, group_commit_ms=20) as journal:
        results = await asyncio.gather(
            journal.write([entry(1)]),
            journal.write([entry(2, hawb="AB\x00CD")]),
            journal.write([entry(3, data={1: "int key"})]),
            journal.write([entry(4, data={"obj": object()})]),
            journal.write([entry(5)]),
            return_exceptions=True,
        )
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert "hawb" in str(results[1])
    assert isinstance(results[2], TypeError)
    assert isinstance(results[3], TypeError)
    assert results[4] is None
    assert [row["tracking_id"] for row in read_entries(path)] == [1, 5]
    assert seqs(path) == [1, 2]


async def test_a_time_that_is_not_finite_fails_its_own_call_only(tmp_path: Path) -> None:
    """SQLite would store NaN as NULL (and refuse the whole batch); the hash chain's JSON
    has no NaN either: such an entry is refused before it joins a batch."""
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE, group_commit_ms=20) as journal:
        results = await asyncio.gather(
            journal.write([entry(1)]),
            journal.write([entry(2)._replace(ts=math.nan)]),
            journal.write([entry(3)._replace(ts=math.inf)]),
            journal.write([entry(4)]),
            return_exceptions=True,
        )
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert "ts" in str(results[1])
    assert isinstance(results[2], ValueError)
    assert results[3] is None
    assert [row["tracking_id"] for row in read_entries(path)] == [1, 4]


async def test_failed_commit_reaches_every_writer_of_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE, group_commit_ms=50) as journal:
        await journal.write([entry(1)])
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal WHEN NEW.hawb = 'POISON' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
        other.commit()
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                journal.write([entry(10)]),
                journal.write([entry(11, hawb="POISON")]),
                journal.write([entry(12), entry(13)]),
                return_exceptions=True,
            )
        assert all(isinstance(r, JournalError) for r in results), results
        assert "refused by test trigger" in str(results[0])
        assert journal.failed_batches == 1

        other.execute("DROP TRIGGER refuse")
        other.commit()
        other.close()
        await journal.write([entry(20)])
    rows = read_entries(path, site=SITE)
    assert [(r["seq"], r["tracking_id"]) for r in rows] == [(1, 1), (2, 20)]


async def test_a_failed_commit_leaves_the_open_parcels_as_they_were(tmp_path: Path) -> None:
    """The open-parcel and hold tables change in the journal's transaction or not at all."""
    path = tmp_path / "journal.sqlite"

    def transition(tracking_id: int, state_from: str, state_to: str, hawb: str) -> JournalEntry:
        return JournalEntry(
            ts=1.0,
            kind=EntryKind.TRANSITION,
            line="L1",
            tracking_id=tracking_id,
            hawb=hawb,
            state_from=state_from,
            state_to=state_to,
        )

    def scan(tracking_id: int, hawb: str = "H") -> JournalEntry:
        return transition(tracking_id, "", "scanned", hawb)

    hold = JournalEntry(
        ts=1.0,
        kind=EntryKind.COMMAND,
        line="",
        tracking_id=0,
        hawb="H9",
        data={"command": "hold", "user": "u", "reason": "r", "accepted": True},
    )
    async with SqliteJournal(path, SITE, group_commit_ms=50) as journal:
        await journal.write([scan(1)])
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal WHEN NEW.hawb = 'POISON' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
        other.commit()
        other.close()
        close_1 = transition(1, "scanned", "exception", "H")
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                journal.write([scan(2), close_1]),
                journal.write([hold]),
                journal.write([scan(3, hawb="POISON")]),
                return_exceptions=True,
            )
        assert all(isinstance(r, JournalError) for r in results), results
    parcels, holds = read_open_set(path, SITE)
    assert [(p.tracking_id, p.state.value) for p in parcels] == [(1, "scanned")]
    assert holds == []

    # Now fail the same transaction after the open set was applied: the writer's
    # in-memory mirror must not keep what was rolled back.
    async with SqliteJournal(path, SITE, group_commit_ms=50) as journal:
        other = sqlite3.connect(path)
        other.execute("DROP TRIGGER refuse")
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON open_parcels WHEN NEW.hawb = 'POISON' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
        other.commit()
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                journal.write([scan(2), close_1]),
                journal.write([hold]),
                journal.write([scan(3, hawb="POISON")]),
                return_exceptions=True,
            )
        assert all(isinstance(r, JournalError) for r in results), results
        other.execute("DROP TRIGGER refuse")
        other.commit()
        other.close()
        await journal.write([scan(4)])
    parcels, holds = read_open_set(path, SITE)
    assert [(p.tracking_id, p.state.value) for p in parcels] == [(1, "scanned"), (4, "scanned")]
    assert holds == []
    assert [row["tracking_id"] for row in read_entries(path, site=SITE)] == [1, 4]


async def test_dropped_table_surfaces_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([entry(1)])
        other = sqlite3.connect(path)
        other.execute("DROP TABLE journal")
        other.commit()
        other.close()
        async with asyncio.timeout(5):
            with pytest.raises(JournalError, match="journal"):
                await journal.write([entry(2)])
            with pytest.raises(JournalError):
                await journal.write([entry(3)])


async def test_close_flushes_writes_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = SqliteJournal(path, SITE, group_commit_ms=50)
    await journal.start()
    tasks = [asyncio.create_task(journal.write([entry(i)])) for i in range(200)]
    await asyncio.sleep(0)  # every task has handed its entries over
    await journal.close()
    await asyncio.gather(*tasks)
    assert count_entries(path) == 200
    with pytest.raises(JournalClosedError):
        await journal.write([entry(999)])
    await journal.close()


async def test_write_before_start_is_refused(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.sqlite", SITE)
    with pytest.raises(JournalClosedError):
        await journal.write([entry(1)])
    await journal.write([])


def test_implements_the_journal_port(tmp_path: Path) -> None:
    journal: Journal = SqliteJournal(tmp_path / "journal.sqlite", SITE)
    assert callable(journal.write)


def test_sqlite_connections_are_wal_and_synchronous_full(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "j.sqlite")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()

"""The audit search over real journal rows: every filter, paging, the CSV export, PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.console.export import COLUMNS, records_csv
from controller.core.audit import MAX_LIMIT, AuditPage, AuditQuery, AuditRecord
from controller.core.domain import EntryKind, JournalEntry
from controller.core.ports import AuditLog
from controller.core.reasons import Reason
from controller.store.audit import SqlAuditLog
from controller.store.forwarder import JournalForwarder
from controller.store.journal import SqliteJournal
from tests.support import max_loop_lag

SITE = "HUB1"


def decision(
    line: str, tracking_id: int, hawb: str, reasons: tuple[int, ...], **data: object
) -> JournalEntry:
    return JournalEntry(
        ts=100.0 + tracking_id,
        kind=EntryKind.DECISION,
        line=line,
        tracking_id=tracking_id,
        hawb=hawb,
        state_from="scanned",
        state_to="decided",
        destination="inspection",
        lane=2,
        reasons=reasons,  # type: ignore[arg-type]  # plain ints: codes a later release may add
        policy_version="p1",
        data=data,
    )


def command(
    user: str, name: str, hawb: str = "", tracking_id: int = 0, **data: object
) -> JournalEntry:
    return JournalEntry(
        ts=200.0,
        kind=EntryKind.COMMAND,
        line="L1",
        tracking_id=tracking_id,
        hawb=hawb,
        data={"user": user, "command": name, **data},
    )


def alarm(source: str, message: str, *, active: bool) -> JournalEntry:
    return JournalEntry(
        ts=300.0,
        kind=EntryKind.ALARM,
        line=source.split("/", 1)[0],
        tracking_id=0,
        state_to="active" if active else "cleared",
        data={"source": source, "message": message},
    )


@dataclass(frozen=True)
class Written:
    path: Path
    before: datetime
    """A time between the first batch (seq 1-3) and the rest (seq 4-11)."""


BATCH_ONE = [
    decision("L1", 11, "H0001", (Reason.RISK_RED, Reason.RISK_SCORE_HIGH), score=0.9),  # 1
    decision("L1", 12, "H0002", (Reason.LOW_RISK_CLEAN_XRAY,), score=0.1),  # 2
    alarm("L1/plc", "PLC link lost", active=True),  # 3
]
BATCH_TWO = [
    command("alice", "hold", hawb="H0002", reason='=HYPERLINK("http://x")', accepted=True),  # 4
    command("bob", "close", tracking_id=12, reason="found on floor", accepted=True),  # 5
    JournalEntry(  # 6: the effect of bob's close
        ts=201.0,
        kind=EntryKind.TRANSITION,
        line="L1",
        tracking_id=12,
        hawb="H0002",
        state_from="recirculating",
        state_to="exception",
        reasons=(Reason.OPERATOR_CLOSED,),
        data={"user": "bob", "command": "close", "reason": "found on floor"},
    ),
    alarm("L1/lane9", "lane 9 above 95% full", active=True),  # 7
    decision("L2", 13, "H0003", (130, 3), note="routed via Zürich"),  # 8
    decision("L2", 14, "H0004", (30,)),  # 9
    decision("L2", 15, "-H0005", (Reason.RISK_RED,), note="@SUM(A1:A9)"),  # 10
    command("alice", "ack", source="L1/plc", comment="+cleaning crew called", accepted=True),  # 11
]
ALL = [*BATCH_ONE, *BATCH_TWO]
NEWEST_FIRST = list(range(len(ALL), 0, -1))


async def write_journal(path: Path, site: str = SITE) -> datetime:
    """Write the two batches as ``site``; return a wall time between them."""
    async with SqliteJournal(path, site) as journal:
        await journal.write(BATCH_ONE)
        await asyncio.sleep(0.01)
        between = datetime.now(UTC)
        await asyncio.sleep(0.01)
        await journal.write(BATCH_TWO)
    return between


@pytest.fixture
async def written(tmp_path: Path) -> Written:
    path = tmp_path / "journal.sqlite"
    between = await write_journal(path)
    async with SqliteJournal(path, "OTHER") as other:  # a second site in the same file
        await other.write([alarm("X1/plc", "PLC link lost", active=True)])
    return Written(path, between)


@pytest.fixture
async def audit(written: Written) -> AsyncIterator[SqlAuditLog]:
    async with SqlAuditLog(written.path, SITE) as log:
        yield log


async def seqs(log: AuditLog, **query: object) -> list[int]:
    page = await log.search(AuditQuery(**query))  # type: ignore[arg-type]
    assert page.total == len(page.records), "the query should fit one page"
    return [record.seq for record in page.records]


async def test_newest_first_with_total(audit: SqlAuditLog) -> None:
    page = await audit.search(AuditQuery())
    assert page.total == len(ALL)
    assert [r.seq for r in page.records] == NEWEST_FIRST


async def test_records_carry_the_rows_decoded(audit: SqlAuditLog, written: Written) -> None:
    page = await audit.search(AuditQuery(tracking_id=11))
    (record,) = page.records
    assert record.kind is EntryKind.DECISION
    assert (record.line, record.hawb, record.lane, record.policy_version) == (
        "L1",
        "H0001",
        2,
        "p1",
    )
    assert (record.state_from, record.state_to, record.destination) == (
        "scanned",
        "decided",
        "inspection",
    )
    assert record.reasons == (201, 203)
    assert record.data == {"score": 0.9}
    assert record.ts == 111.0
    assert record.wall_time.tzinfo is not None
    assert record.wall_time.utcoffset() == timedelta(0)
    assert record.wall_time < written.before
    assert record.user == ""
    (alarm_record,) = (await audit.search(AuditQuery(text="95%"))).records
    assert alarm_record.lane is None
    assert alarm_record.data == {"source": "L1/lane9", "message": "lane 9 above 95% full"}


async def test_paging_covers_every_match_once(audit: SqlAuditLog) -> None:
    pages: list[AuditPage] = []
    for offset in range(0, len(ALL), 3):
        pages.append(await audit.search(AuditQuery(limit=3, offset=offset)))
    assert {page.total for page in pages} == {len(ALL)}
    assert [len(page.records) for page in pages] == [3, 3, 3, 2]
    assert [r.seq for page in pages for r in page.records] == NEWEST_FIRST

    past_the_end = await audit.search(AuditQuery(limit=3, offset=len(ALL)))
    assert past_the_end == AuditPage(records=(), total=len(ALL))
    counted_only = await audit.search(AuditQuery(kinds=(EntryKind.ALARM,), limit=0))
    assert counted_only == AuditPage(records=(), total=2)


async def test_keyset_pages_stay_put_while_the_journal_grows(audit: SqlAuditLog) -> None:
    first = await audit.search(AuditQuery(limit=3))
    rest = await audit.search(AuditQuery(limit=100, before_seq=first.records[-1].seq))
    assert [r.seq for r in (*first.records, *rest.records)] == NEWEST_FIRST
    assert rest.total == len(ALL) - 3


async def test_filters_by_wall_time(audit: SqlAuditLog, written: Written) -> None:
    assert await seqs(audit, until=written.before) == [3, 2, 1]
    assert await seqs(audit, since=written.before) == NEWEST_FIRST[:-3]
    assert await seqs(audit, since=written.before + timedelta(days=1)) == []
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await seqs(audit, since=written.before, until=later, kinds=(EntryKind.ALARM,)) == [7]


async def test_filters_by_kind_line_hawb_and_tracking_id(audit: SqlAuditLog) -> None:
    assert await seqs(audit, kinds=(EntryKind.ALARM,)) == [7, 3]
    assert await seqs(audit, kinds=(EntryKind.ALARM, EntryKind.TRANSITION)) == [7, 6, 3]
    assert await seqs(audit, line="L2") == [10, 9, 8]
    assert await seqs(audit, hawb="H0002") == [6, 4, 2]
    assert await seqs(audit, hawb="H000") == []  # exact, not a prefix
    assert await seqs(audit, tracking_id=12) == [6, 5, 2]
    assert await seqs(audit, tracking_id=0, kinds=(EntryKind.ALARM,)) == [7, 3]
    assert await seqs(audit, line="", hawb="") == NEWEST_FIRST  # empty leaves it open


async def test_reason_filter_matches_whole_codes_only(audit: SqlAuditLog) -> None:
    assert await seqs(audit, reason=Reason.RISK_RED) == [10, 1]
    assert await seqs(audit, reason=Reason.RISK_SCORE_HIGH) == [1]  # last in its list
    assert await seqs(audit, reason=30) == [9]  # not 305 (seq 6) nor 130 (seq 8)
    assert await seqs(audit, reason=305) == [6]
    assert await seqs(audit, reason=130) == [8]
    assert await seqs(audit, reason=3) == [8]  # not 30, 130, 305, 201 or 203
    assert await seqs(audit, reason=13) == []
    assert await seqs(audit, reason=20) == []


async def test_filters_by_user(audit: SqlAuditLog) -> None:
    assert await seqs(audit, user="alice") == [11, 4]
    assert await seqs(audit, user="bob") == [6, 5]  # the command and its effect
    assert await seqs(audit, user="bob", kinds=(EntryKind.COMMAND,)) == [5]
    assert await seqs(audit, user="ali") == []
    assert await seqs(audit, user="Alice") == []


async def test_filters_by_text_in_data(audit: SqlAuditLog) -> None:
    assert await seqs(audit, text="link lost") == [3]
    assert await seqs(audit, text="PLC LINK") == [3]  # case-insensitive
    assert await seqs(audit, text="l1/plc") == [11, 3]
    assert await seqs(audit, text="95%") == [7]
    assert await seqs(audit, text="%") == [7]  # a literal percent sign, not a wildcard
    assert await seqs(audit, text="lin_ lost") == []  # nor is the underscore
    assert await seqs(audit, text="Zürich") == [8]  # stored as JSON with \u00fc
    assert await seqs(audit, text='HYPERLINK("http') == [4]  # stored with \" escapes
    assert await seqs(audit, text="found on floor", line="L1") == [6, 5]


async def test_site_scoping(written: Written) -> None:
    async with SqlAuditLog(written.path, "OTHER") as other:
        assert await seqs(other) == [1]
    async with SqlAuditLog(str(written.path), None) as every_site:
        page = await every_site.search(AuditQuery(text="PLC link lost"))
        assert page.total == 2
        assert [r.line for r in page.records] == ["L1", "X1"]  # seq 3 then 1
    async with SqlAuditLog(f"sqlite:///{written.path}", SITE) as by_url:
        assert (await by_url.search(AuditQuery())).total == len(ALL)


async def test_missing_file_is_an_empty_journal_until_written(tmp_path: Path) -> None:
    path = tmp_path / "later" / "journal.sqlite"
    async with SqlAuditLog(path, SITE) as log:
        assert await log.search(AuditQuery()) == AuditPage(records=(), total=0)
        assert await log.search(AuditQuery(reason=201, text="x", user="u")) == AuditPage((), 0)
        assert not path.exists(), "searching must never create the journal"
        await write_journal(path)
        assert (await log.search(AuditQuery())).total == len(ALL)


async def test_file_without_a_journal_yet_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.touch()  # the journal writer created the file and has not migrated it yet
    async with SqlAuditLog(path, SITE) as log:
        assert await log.search(AuditQuery(text="x")) == AuditPage((), 0)


async def test_rejects_bad_queries(audit: SqlAuditLog) -> None:
    with pytest.raises(ValueError, match="limit"):
        await audit.search(AuditQuery(limit=-1))
    with pytest.raises(ValueError, match="offset"):
        await audit.search(AuditQuery(offset=-1))
    with pytest.raises(ValueError, match="naive"):
        await audit.search(AuditQuery(since=datetime(2024, 1, 1)))
    with pytest.raises(ValueError, match="SQLite file"):
        SqlAuditLog("sqlite:///:memory:", SITE)
    with pytest.raises(ValueError, match="one of"):
        SqlAuditLog("mysql://db/journal", SITE)


async def test_closed_log_refuses_searches(written: Written) -> None:
    log = SqlAuditLog(written.path, SITE)
    assert (await log.search(AuditQuery(limit=1))).total == len(ALL)
    await log.aclose()
    await log.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await log.search(AuditQuery())


async def test_limit_is_capped_and_the_loop_keeps_running(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    many = MAX_LIMIT + 5
    async with SqliteJournal(path, SITE) as journal:
        await journal.write(
            [alarm(f"L1/lane{i}", f"lane {i} full", active=True) for i in range(many)]
        )
    async with SqlAuditLog(path, SITE) as log:
        pages: list[AuditPage] = []

        async def search() -> None:
            pages.append(await log.search(AuditQuery(limit=1_000_000)))

        worst = await max_loop_lag(search, tick_s=0.01)
    (page,) = pages
    assert page.total == many
    assert len(page.records) == MAX_LIMIT
    assert page.records[0].seq == many
    assert worst < 0.1, f"event loop stalled for {worst * 1000:.0f} ms"


async def test_abandoned_searches_keep_their_slot_until_done(audit: SqlAuditLog) -> None:
    searches = [asyncio.create_task(audit.search(AuditQuery())) for _ in range(6)]
    await asyncio.sleep(0)
    for task in searches[::2]:
        task.cancel()
    results = await asyncio.gather(*searches, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3
    assert all(r.total == len(ALL) for r in results if isinstance(r, AuditPage))
    assert (await audit.search(AuditQuery(limit=1))).total == len(ALL)


# --- CSV ---------------------------------------------------------------------------------


async def test_csv_export_parses_back_with_formulas_defused(audit: SqlAuditLog) -> None:
    records = (await audit.search(AuditQuery())).records
    chunks = list(records_csv(records))
    assert chunks[0] == ",".join(COLUMNS) + "\r\n"
    rows = list(csv.DictReader(io.StringIO("".join(chunks), newline="")))
    assert len(rows) == len(ALL)
    by_seq = {int(row["seq"]): row for row in rows}
    assert list(by_seq) == NEWEST_FIRST

    first = by_seq[1]
    assert first["kind"] == "decision"
    assert first["reasons"] == "201 203"
    assert first["lane"] == "2"
    assert first["wall_time"].endswith("Z")
    wall = datetime.fromisoformat(first["wall_time"])
    assert wall == records[-1].wall_time
    assert json.loads(first["data"]) == {"score": 0.9}
    assert by_seq[3]["lane"] == ""
    assert by_seq[5]["user"] == "bob"

    assert by_seq[10]["hawb"] == "'-H0005"  # leading minus
    assert json.loads(by_seq[4]["data"])["reason"] == '=HYPERLINK("http://x")'  # inside JSON
    for row in rows:
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@")), (name, cell)


def test_csv_guards_every_formula_start() -> None:
    risky = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "plain", ""]
    records = [
        AuditRecord(
            seq=i,
            wall_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            ts=0.0,
            kind=EntryKind.COMMAND,
            line=value,
            tracking_id=0,
            hawb=value,
            state_from="",
            state_to="",
            destination="",
            lane=None,
            reasons=(),
            policy_version=value,
            data={"user": value},
        )
        for i, value in enumerate(risky, start=1)
    ]
    rows = list(csv.DictReader(io.StringIO("".join(records_csv(records)), newline="")))
    expected = ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\t=1", "'\r=1", "plain", ""]
    for field in ("line", "hawb", "policy_version", "user"):
        assert [row[field] for row in rows] == expected, field
    assert rows[0]["wall_time"] == "2024-05-01T12:00:00.000000Z"
    assert rows[0]["reasons"] == ""


def test_csv_streams_in_chunks() -> None:
    record = AuditRecord(
        seq=1,
        wall_time=datetime(2024, 5, 1, tzinfo=UTC),
        ts=0.0,
        kind=EntryKind.ALARM,
        line="L1",
        tracking_id=0,
        hawb="",
        state_from="",
        state_to="active",
        destination="",
        lane=None,
        reasons=(),
        policy_version="",
        data={"message": "x" * 1000},
    )
    chunks = list(records_csv([record] * 500))
    assert len(chunks) > 3
    assert len(list(csv.reader(io.StringIO("".join(chunks), newline="")))) == 501
    assert list(records_csv([])) == [",".join(COLUMNS) + "\r\n"]


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgresql_central_copy(tmp_path: Path, pg_url: str) -> None:
    """The same searches over rows the forwarder shipped to PostgreSQL (skipped without
    CARGOGATE_TEST_PG_URL; the fixture gives each run its own database, and the site id is
    unique too, so a rerun never sees an earlier run's rows)."""
    site = f"PG{secrets.token_hex(4)}"
    path = tmp_path / "journal.sqlite"
    between = await write_journal(path, site)
    async with SqlAuditLog(pg_url, site) as log:  # central not migrated yet: no table
        assert await log.search(AuditQuery()) == AuditPage((), 0)
    async with JournalForwarder(path, pg_url, site) as forwarder:
        while await forwarder.forward_once():
            pass
    async with SqlAuditLog(pg_url, site) as log:
        page = await log.search(AuditQuery())
        assert page.total == len(ALL)
        assert [r.seq for r in page.records] == NEWEST_FIRST
        assert page.records[-1].wall_time.utcoffset() == timedelta(0)
        assert await seqs(log, reason=30) == [9]
        assert await seqs(log, reason=3) == [8]
        assert await seqs(log, reason=Reason.RISK_RED) == [10, 1]
        assert await seqs(log, user="bob", kinds=(EntryKind.COMMAND,)) == [5]
        assert await seqs(log, text="PLC LINK") == [3]
        assert await seqs(log, text="%") == [7]
        assert await seqs(log, text="Zürich") == [8]
        assert await seqs(log, until=between) == [3, 2, 1]
        assert await seqs(log, hawb="H0002", line="L1") == [6, 4, 2]
        paged = await log.search(AuditQuery(limit=4, offset=4))
        assert (paged.total, [r.seq for r in paged.records]) == (len(ALL), NEWEST_FIRST[4:8])
    async with SqlAuditLog(pg_url, f"{site}-none") as empty:
        assert await empty.search(AuditQuery()) == AuditPage((), 0)

"""A line's journal on a full disk, with the real SQLite journal: nothing the tracker recorded
is lost, the journal keeps the tracker's order, one alarm is raised and cleared once, and the
controller keeps serving.

The disk fills for real as far as SQLite can tell: while the switch is on, the journal's own
connection is held to the pages its file already has (``PRAGMA max_page_count``), so every
write that needs a new page fails with SQLITE_FULL, "database or disk is full", exactly as on
a full file system; switching it off gives the space back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from controller.alarms import Alarms
from controller.app.site import SiteConfig
from controller.core.clock import MonotonicClock
from controller.core.commands import ForceClose
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    EntryKind,
    JournalEntry,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.lifecycle import Parcel, ParcelState
from controller.core.reasons import Reason
from controller.lines import Controller, LineController
from controller.recovery import recover
from controller.store.journal import JournalError, SqliteJournal
from controller.store.read import read_entries
from plc_adapters.inprocess import InProcessSorter
from tests.support import CLEAN, DictRisk, site

SITE = "TEST"
EXCEPTION_LANE = 9


class InstantXray:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, CLEAN, "instant")


@contextmanager
def disk(path: Path) -> Iterator[Callable[[bool], None]]:
    """A switch that fills (True) or frees (False) the disk under the journal at ``path``."""
    full = [False]

    def on_begin(conn: sa.Connection) -> None:
        if conn.engine.url.database == str(path):
            # A page count below the file's size means "no more pages than it has now".
            conn.exec_driver_sql(f"PRAGMA max_page_count = {1 if full[0] else 2**31 - 2}")

    event.listen(sa.Engine, "begin", on_begin)
    try:
        yield lambda on: full.__setitem__(0, on)
    finally:
        event.remove(sa.Engine, "begin", on_begin)


async def fill_up(journal: SqliteJournal) -> None:
    """With the disk full, take up the room still free in the journal's pages with the
    smallest rows it stores, so the next write of any entry is refused."""
    filler = JournalEntry(ts=0.0, kind=EntryKind.ALARM, line="", tracking_id=0)
    for _ in range(10_000):
        try:
            await journal.write([filler])
        except JournalError:
            return
    raise AssertionError("the disk never filled")


async def until(condition: Callable[[], object], within_s: float = 10.0) -> None:
    """Return once ``condition()`` holds, polled on the wall clock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@dataclass
class Line:
    controller: Controller
    line: LineController
    sorter: InProcessSorter
    journal: SqliteJournal
    alarms: Alarms
    clock: MonotonicClock
    replies: list[DestinationReply]
    recorded: list[JournalEntry]
    task: asyncio.Task[None]

    async def parcel(self, tracking_id: int) -> ParcelState:
        """Scan a parcel, wait for its decision (or the miss), confirm what the PLC did with
        it (its lane, or the default lane without a reply) and wait until it is closed."""
        tracker = self.line.tracker
        self.sorter.request(tracking_id, f"H{tracking_id}", self.clock.now())
        settled = (ParcelState.DECIDED, ParcelState.DEFAULTED)
        parcel = await self.opened(tracking_id)
        await until(lambda: parcel.state in settled)
        state = parcel.state
        if state is ParcelState.DECIDED:
            await until(lambda: any(r.tracking_id == tracking_id for r in self.replies))
            (reply,) = [r for r in self.replies if r.tracking_id == tracking_id]
            self.sorter.confirm(tracking_id, reply.lane, DivertStatus.DIVERTED)
        else:
            self.sorter.confirm(tracking_id, EXCEPTION_LANE, DivertStatus.DEFAULTED)
        await until(lambda: tracking_id not in tracker.on_belt)
        return state

    def replied(self, tracking_id: int) -> Callable[[], bool]:
        """Whether the sorter has a reply for ``tracking_id`` yet."""
        return lambda: any(r.tracking_id == tracking_id for r in self.replies)

    async def opened(self, tracking_id: int) -> Parcel:
        tracker = self.line.tracker
        await until(lambda: tracking_id in tracker.on_belt)
        return tracker.on_belt[tracking_id]


@asynccontextmanager
async def running(path: Path, config: SiteConfig) -> AsyncIterator[Line]:
    clock = MonotonicClock()
    replies: list[DestinationReply] = []
    sorter = InProcessSorter("L1", on_reply=replies.append)
    risk = DictRisk()
    for tracking_id in range(1, 200):
        hawb = f"H{tracking_id}"
        risk.results[hawb] = RiskResult(hawb, RiskChannel.GREEN, 0.05, "books")
    async with SqliteJournal(path, SITE, group_commit_ms=1.0) as journal:
        alarms = Alarms(journal, clock.now)
        controller = Controller(
            config, {"L1": sorter}, risk, InstantXray(), journal, clock, alarms=alarms
        )
        line = controller.lines["L1"]
        recorded: list[JournalEntry] = []
        record = line.record

        def watched(
            entries: Sequence[JournalEntry], *, for_telegram: bool = False
        ) -> asyncio.Future[str]:
            """What the tracker recorded, in the order it did (the order the journal owes)."""
            recorded.extend(entries)
            return record(entries, for_telegram=for_telegram)

        line.record = watched  # type: ignore[method-assign]
        task = asyncio.create_task(controller.run())
        try:
            yield Line(controller, line, sorter, journal, alarms, clock, replies, recorded, task)
        finally:
            sorter.close()
            await asyncio.wait_for(task, 15)
            await alarms.drain()


def rows_of(path: Path) -> list[dict[str, Any]]:
    return read_entries(f"sqlite:///{path}", SITE)


def key(kind: str, tracking_id: int, state_to: str, data: object) -> tuple[str, int, str, str]:
    return (kind, tracking_id, state_to, json.dumps(data, sort_keys=True, default=str))


def same_as_journalled(entries: Sequence[JournalEntry]) -> list[tuple[str, int, str, str]]:
    """Recorded entries as :func:`key` reads journal rows (alarms left out: the board's go
    past :meth:`LineController.record`)."""
    return [
        key(e.kind.value, e.tracking_id, e.state_to, json.loads(json.dumps(dict(e.data))))
        for e in entries
        if e.kind is not EntryKind.ALARM
    ]


async def test_a_full_disk_loses_no_entry_keeps_the_order_and_alarms_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with disk(path) as disk_full:
        async with running(path, site()) as line:
            assert [await line.parcel(t) for t in range(1, 6)] == [ParcelState.DECIDED] * 5

            disk_full(True)
            during = [await line.parcel(t) for t in range(6, 26)]
            # decisions could not be made durable: the PLC's default lane stood (fail secure)
            assert during.count(ParcelState.DEFAULTED) >= 15
            assert line.journal.failed_batches > 0
            assert "L1/journal" in line.alarms.active
            assert "database or disk is full" in line.alarms.active["L1/journal"].message
            assert line.line.view().journal_backlog > 0  # kept in memory, in order
            assert not line.task.done()  # still serving

            disk_full(False)
            await until(lambda: line.line.view().journal_backlog == 0, within_s=5)
            await until(lambda: "L1/journal" not in line.alarms.active, within_s=5)
            assert [await line.parcel(t) for t in range(26, 31)] == [ParcelState.DECIDED] * 5

    rows = rows_of(path)
    # The journal holds everything the tracker recorded, in the tracker's order.
    parcel_rows = [r for r in rows if r["kind"] != "alarm"]
    assert [key(r["kind"], r["tracking_id"], r["state_to"], r["data"]) for r in parcel_rows] == (
        same_as_journalled(line.recorded)
    )
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    # Every parcel has its complete record: a decision made durable before its reply, or a
    # decision kept through the outage followed by the miss and the PLC's default lane.
    for tracking_id in range(1, 31):
        kinds = [r["kind"] for r in parcel_rows if r["tracking_id"] == tracking_id]
        assert kinds in (
            ["transition", "decision", "confirmation"],
            ["transition", "decision", "deadline_miss", "confirmation"],
        ), (tracking_id, kinds)
        last = [r for r in parcel_rows if r["tracking_id"] == tracking_id][-1]
        assert last["state_to"] in ("released", "exception")
    missed = [r for r in parcel_rows if r["kind"] == "deadline_miss"]
    assert len(missed) == during.count(ParcelState.DEFAULTED)
    assert all("journal write failed" in r["data"]["why"] for r in missed)
    # One alarm, raised at the first failure and cleared once the backlog was written.
    alarm_rows = [r for r in rows if r["kind"] == "alarm" and r["data"]["source"] == "L1/journal"]
    assert [r["state_to"] for r in alarm_rows] == ["active", "cleared"]
    raised, cleared = alarm_rows
    assert raised["seq"] > max(r["seq"] for r in parcel_rows if r["tracking_id"] <= 5)
    outage_rows = [r["seq"] for r in parcel_rows if 6 <= r["tracking_id"] <= 25]
    assert cleared["seq"] > max(outage_rows)
    assert cleared["seq"] < min(r["seq"] for r in parcel_rows if r["tracking_id"] >= 26)
    assert [h[3] for h in line.alarms.history if h[1] == "L1/journal"] == [True, False]
    # Nothing is left open for a restart to take back.
    recovered = recover(path, SITE, 0.0, datetime.now(UTC), 24.0)
    assert recovered.parcels == []


async def test_at_the_backlog_cap_telegrams_wait_and_other_entries_are_logged_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A telegram's entries are never left out of the journal, so its acknowledgement means
    "journalled": at the cap the line takes no further telegram (the PLC's mailbox holds
    them) until the journal takes the backlog. Entries that come later for a parcel already
    handled (its decision, its deadline miss) are logged in full and counted instead."""
    path = tmp_path / "journal.sqlite"
    config = site()
    small = config.lines[0].model_copy(update={"journal_backlog_max": 12})
    config = config.model_copy(update={"lines": [small]})
    caplog.set_level(logging.INFO, logger="controller.lines")
    parcels = range(2, 21)
    with disk(path) as disk_full:
        async with running(path, config) as line:
            await line.parcel(1)
            await until(lambda: line.sorter.acknowledged == 2)
            disk_full(True)
            await fill_up(line.journal)
            for tracking_id in parcels:
                line.sorter.request(tracking_id, f"H{tracking_id}", line.clock.now())
            await until(lambda: line.line.holding_telegrams)
            await until(lambda: "L1/journal-overflow" in line.alarms.active)
            await asyncio.sleep(0.2)
            tracker = line.line.tracker
            held = [t for t in parcels if t not in tracker.on_belt]
            assert held, "every request was taken past the cap"
            assert line.line.view().journal_backlog <= 12 + 3  # the cap, one telegram's, alarms
            assert line.sorter.acknowledged == 2  # nothing journalled since, nothing acknowledged
            assert not line.task.done()

            disk_full(False)
            await until(lambda: all(t in tracker.on_belt for t in parcels))
            settled = (ParcelState.DECIDED, ParcelState.DEFAULTED)
            await until(lambda: all(tracker.on_belt[t].state in settled for t in parcels))
            for tracking_id in parcels:
                if tracker.on_belt[tracking_id].state is ParcelState.DECIDED:
                    await until(line.replied(tracking_id))
                    lane = next(r.lane for r in line.replies if r.tracking_id == tracking_id)
                    line.sorter.confirm(tracking_id, lane, DivertStatus.DIVERTED)
                else:
                    line.sorter.confirm(tracking_id, EXCEPTION_LANE, DivertStatus.DEFAULTED)
            await until(lambda: not tracker.on_belt)
            await until(lambda: line.sorter.acknowledged == 2 + 2 * len(parcels))
            await until(lambda: not line.alarms.active, within_s=5)

    logged = [
        json.loads(record.getMessage().split(": ", 2)[2])
        for record in caplog.records
        if "journal entry not journalled" in record.getMessage()
    ]
    assert logged, "no entry went past the cap"
    # only entries that came after their telegram was handled
    assert {e["kind"] for e in logged} <= {"decision", "deadline_miss"}
    rows = [r for r in rows_of(path) if r["kind"] != "alarm"]
    # every telegram's own entries are journalled: each parcel scanned and confirmed, once
    for tracking_id in (1, *parcels):
        mine = [r for r in rows if r["tracking_id"] == tracking_id]
        assert [r["state_to"] for r in mine if r["state_from"] == ""].count("scanned") == 1
        assert [r["kind"] for r in mine].count("confirmation") == 1
    journalled = [key(r["kind"], r["tracking_id"], r["state_to"], r["data"]) for r in rows]
    left_out = [key(e["kind"], e["tracking_id"], e["state_to"], e["data"]) for e in logged]
    # Every entry the tracker recorded is in the journal or, in full, in the log.
    assert sorted(journalled + left_out) == sorted(same_as_journalled(line.recorded))
    # Raised and cleared per episode (the held telegrams, taken at once, may make a second);
    # the clearings count every entry that went to the log.
    overflow = [h for h in line.alarms.history if h[1] == "L1/journal-overflow"]
    assert [h[3] for h in overflow] == [True, False] * (len(overflow) // 2)
    counted = [re.search(r"(\d+) entries were logged in full", h[2]) for h in overflow[1::2]]
    assert sum(int(m.group(1)) for m in counted if m) == len(logged)


async def test_a_command_the_journal_cannot_take_is_journalled_once_as_refused(
    tmp_path: Path,
) -> None:
    """Refused because the outage began with its own row, or because the outage was known:
    either way the journal shows the command once, refused, and nothing changed."""
    path = tmp_path / "journal.sqlite"
    with disk(path) as disk_full:
        async with running(path, site()) as line:
            tracker = line.line.tracker
            for tracking_id in (1, 2):
                line.sorter.request(tracking_id, f"H{tracking_id}", line.clock.now())
                await until(line.replied(tracking_id))
            await until(
                lambda: line.sorter.acknowledged == 2 and not line.line.view().journal_backlog
            )
            disk_full(True)
            await fill_up(line.journal)
            assert "L1/journal" not in line.alarms.active  # its own row meets the full disk
            first = await line.controller.execute(
                ForceClose(user="kim", line="L1", tracking_id=1, reason="off the belt")
            )
            assert "L1/journal" in line.alarms.active
            second = await line.controller.execute(
                ForceClose(user="kim", line="L1", tracking_id=2, reason="off the belt")
            )
            for result in (first, second):
                assert not result.accepted
                assert "could not journal the command, nothing changed" in result.message
            assert tracker.on_belt[1].state is tracker.on_belt[2].state is ParcelState.DECIDED

            disk_full(False)
            await until(lambda: "L1/journal" not in line.alarms.active)
            again = await line.controller.execute(
                ForceClose(user="kim", line="L1", tracking_id=1, reason="off the belt")
            )
            assert again.accepted
            assert 1 not in tracker.on_belt
            (reply,) = [r for r in line.replies if r.tracking_id == 2]
            line.sorter.confirm(2, reply.lane, DivertStatus.DIVERTED)
            await until(lambda: not tracker.on_belt)

    commands = [r for r in rows_of(path) if r["kind"] == "command"]
    assert [(r["tracking_id"], r["data"]["accepted"]) for r in commands] == [
        (1, False),
        (2, False),
        (1, True),
    ]
    for refused in commands[:2]:
        assert "database or disk is full" in refused["data"]["refused"]
        assert (refused["data"]["user"], refused["hawb"]) == ("kim", f"H{refused['tracking_id']}")
    closing = [r for r in rows_of(path) if r["state_to"] == "exception"]
    assert [(r["tracking_id"], r["seq"] > commands[-1]["seq"]) for r in closing] == [(1, True)]


async def test_an_entry_the_journal_cannot_store_holds_up_nothing_behind_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad entry is refused for good (ValueError/TypeError), not retried for ever: it is
    logged in full and the entries around it are journalled in order."""
    path = tmp_path / "journal.sqlite"
    caplog.set_level(logging.INFO, logger="controller.lines")
    async with running(path, site()) as line:
        good = JournalEntry(ts=1.0, kind=EntryKind.ALARM, line="L1", tracking_id=1)
        bad = good._replace(tracking_id=2, data={"not json": object()})
        after = good._replace(tracking_id=3)
        outcomes = line.line.record([good]), line.line.record([bad]), line.line.record([after])
        first, second, third = await asyncio.gather(*outcomes)
        assert (first, third) == ("", "")
        assert "cannot store" in second
        assert await line.parcel(4) is ParcelState.DECIDED  # the line goes on
        assert "L1/journal" not in line.alarms.active
    assert [r["tracking_id"] for r in rows_of(path)][:2] == [1, 3]
    logged = [r.getMessage() for r in caplog.records if "entry not journalled" in r.getMessage()]
    assert len(logged) == 1
    assert '"tracking_id": 2' in logged[0]


async def test_a_journal_outage_does_not_count_against_parcels_waiting_for_the_plc(
    tmp_path: Path,
) -> None:
    """While the journal refuses writes no telegram is acknowledged, so the PLC's mailbox
    fills and its confirmations wait: that silence is not lost tracking."""
    path = tmp_path / "journal.sqlite"
    belt = {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5, "loop_s": 6.5}
    config = site()
    quick = config.lines[0].model_copy(
        update={"confirm_timeout_s": 7.0, "belt": config.lines[0].belt.model_copy(update=belt)}
    )
    config = config.model_copy(update={"lines": [quick]})
    with disk(path) as disk_full:
        async with running(path, config) as line:
            disk_full(True)
            scanned = 0
            while "L1/journal" not in line.alarms.active:  # until the journal refuses
                scanned += 1
                line.sorter.request(scanned, f"H{scanned}", line.clock.now())
                await line.opened(scanned)
                await asyncio.sleep(0.05)
            await asyncio.sleep(quick.confirm_timeout + 2 * LineController.TICK_S)
            assert "L1/journal" in line.alarms.active
            # still waiting for their confirmations, none closed as lost tracking
            assert all(t in line.line.tracker.on_belt for t in range(1, scanned + 1))
            assert "L1/lost-tracking" not in line.alarms.active
            disk_full(False)
            for t in range(1, scanned + 1):
                line.sorter.confirm(t, EXCEPTION_LANE, DivertStatus.DEFAULTED)
            await until(lambda: not line.line.tracker.on_belt)
    timed_out = [
        r for r in rows_of(path) if int(Reason.CONFIRMATION_TIMEOUT) in (r["reasons"] or [])
    ]
    assert timed_out == []

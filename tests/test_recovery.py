"""Start-up recovery from the open-parcel and hold tables the journal writer keeps.

Everything is written through the real :class:`SqliteJournal` into a SQLite file and read
back with :func:`controller.recovery.recover`; nothing folds journal rows at recovery.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.core.domain import EntryKind, JournalEntry
from controller.core.lifecycle import ParcelState
from controller.recovery import Recovered, recover
from controller.store import migrate
from controller.store.journal import SqliteJournal
from controller.store.openset import fold_journal
from controller.store.read import count_entries, read_open_set
from controller.store.sqlite import sqlite_engine

SITE = "HUB1"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

S = ParcelState
SCANNED, DECIDED, DEFAULTED = S.SCANNED, S.DECIDED, S.DEFAULTED
RECIRCULATING, IN_INSPECTION = S.RECIRCULATING, S.IN_INSPECTION


class Script:
    """Journal entries shaped the way ``controller/lines.py`` and the command channel write
    them, on a controller clock that advances half a second per entry."""

    def __init__(self, t0: float = 1000.0) -> None:
        self.ts = t0
        self.entries: list[JournalEntry] = []

    def _add(self, entry: JournalEntry) -> None:
        self.entries.append(entry)
        self.ts += 0.5

    def scan(self, line: str, tid: int, hawb: str, waited_s: float = 4.0) -> Script:
        """A first scan: opens a parcel that arrived ``waited_s`` clock seconds ago."""
        data = {"seq": len(self.entries), "scan_time": self.ts, "arrived_at": self.ts - waited_s}
        self._add(
            JournalEntry(
                self.ts, EntryKind.TRANSITION, line, tid, hawb, state_to=SCANNED, data=data
            )
        )
        return self

    def move(
        self,
        line: str,
        tid: int,
        hawb: str,
        *states: ParcelState,
        kind: EntryKind = EntryKind.CONFIRMATION,
        data: Mapping[str, object] | None = None,
    ) -> Script:
        """One entry per step along ``states`` (the first is where the parcel is now)."""
        for frm, to in pairwise(states):
            self._add(
                JournalEntry(
                    self.ts, kind, line, tid, hawb, state_from=frm, state_to=to, data=data or {}
                )
            )
        return self

    def command(self, hawb: str, **data: object) -> Script:
        self._add(JournalEntry(self.ts, EntryKind.COMMAND, "", 0, hawb, data=data))
        return self

    def hold(self, hawb: str, user: str, reason: str, accepted: bool = True) -> Script:
        return self.command(hawb, command="hold", user=user, reason=reason, accepted=accepted)

    def lift(self, hawb: str, user: str, reason: str, accepted: bool = True) -> Script:
        return self.command(hawb, command="lift", user=user, reason=reason, accepted=accepted)


async def write(path: Path, entries: list[JournalEntry], one_by_one: bool = False) -> None:
    """Write through the real journal: each entry its own commit, or all in one batch."""
    async with SqliteJournal(path, SITE) as journal:
        if one_by_one:
            for entry in entries:
                await journal.write([entry])
        else:
            await journal.write(entries)


def recovered(path: Path, horizon_h: float = 24.0, now: float = 5000.0) -> Recovered:
    return recover(path, SITE, now, datetime.now(UTC), horizon_h)


def states(result: Recovered) -> dict[tuple[str, int, str], tuple[ParcelState, int]]:
    """``(line, tracking_id, hawb) -> (state, laps)`` of the recovered parcels."""
    out = {(p.line, p.tracking_id, p.hawb): (p.state, p.laps) for p in result.parcels}
    assert len(out) == len(result.parcels), "two recovered parcels with one key"
    return out


# --- the state rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "one-commit-each"])
async def test_open_parcels_come_back_in_their_last_state(tmp_path: Path, one_by_one: bool) -> None:
    script = (
        Script()
        .scan("L1", 1, "H1")
        .move("L1", 1, "H1", SCANNED, DECIDED, RECIRCULATING, kind=EntryKind.TRANSITION)
        .move("L1", 1, "H1", RECIRCULATING, SCANNED, DECIDED)  # a second lap
        .scan("L1", 2, "H2")
        .move("L1", 2, "H2", SCANNED, DECIDED, S.RELEASED)
        .scan("L2", 9, "H9")
        .move("L2", 9, "H9", SCANNED, DEFAULTED, kind=EntryKind.DEADLINE_MISS)
        .scan("L2", 10, "H10")  # its decision was in flight
        .scan("L2", 11, "H11")
        .move("L2", 11, "H11", SCANNED, DECIDED, RECIRCULATING, SCANNED, S.EXCEPTION)
        .scan("L1", 12, "H12")
        .move("L1", 12, "H12", SCANNED, DECIDED, IN_INSPECTION)
        .scan("L1", 13, "H13")
        .move("L1", 13, "H13", SCANNED, DECIDED, IN_INSPECTION)
        .move(
            "L1",
            13,
            "H13",
            IN_INSPECTION,
            S.CLEARED_AFTER_INSPECTION,
            kind=EntryKind.INSPECTION_RESULT,
        )
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries, one_by_one)
    result = recovered(path)
    assert states(result) == {
        ("L1", 1, "H1"): (DECIDED, 1),
        ("L2", 9, "H9"): (DEFAULTED, 0),
        ("L2", 10, "H10"): (SCANNED, 0),
        ("L1", 12, "H12"): (IN_INSPECTION, 0),
    }
    assert [p.tracking_id for p in result.parcels] == [1, 9, 10, 12]  # the order they opened
    assert result.beyond_horizon == 0


@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "one-commit-each"])
async def test_a_no_read_read_on_a_later_lap_comes_back_with_its_hawb(
    tmp_path: Path, one_by_one: bool
) -> None:
    """Its officer closes it by that HAWB after a restart (the open-parcel row is updated)."""
    script = (
        Script()
        .scan("L1", 4, "")
        .move("L1", 4, "", SCANNED, DECIDED, RECIRCULATING, kind=EntryKind.TRANSITION)
        .move("L1", 4, "H4", RECIRCULATING, SCANNED, DECIDED, IN_INSPECTION)
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries, one_by_one)
    assert states(recovered(path)) == {("L1", 4, "H4"): (IN_INSPECTION, 1)}


async def test_illegal_transitions_alarms_and_refused_commands_move_nothing(tmp_path: Path) -> None:
    refused = {"command": "close", "user": "op1", "reason": "off belt", "accepted": False}
    script = (
        Script()
        .scan("L1", 1, "H1")
        .move("L1", 1, "H1", SCANNED, DECIDED)
        # refused by the lifecycle: state_to is the state that was wanted, not reached
        .move("L1", 1, "H1", DECIDED, SCANNED, kind=EntryKind.ILLEGAL_TRANSITION)
        .move("L1", 1, "H1", DECIDED, S.RELEASED, kind=EntryKind.ILLEGAL_TRANSITION)
        .move("L1", 1, "H1", DECIDED, S.EXCEPTION, kind=EntryKind.ALARM)
        .move("L1", 1, "H1", DECIDED, S.EXCEPTION, kind=EntryKind.COMMAND, data=refused)
        .scan("L1", 2, "H2")
        .move("L1", 2, "H2", SCANNED, DECIDED, IN_INSPECTION)
        .move("L1", 2, "H2", IN_INSPECTION, S.SEIZED, kind=EntryKind.COMMAND, data=refused)
        # a command row without "accepted": true is not an accepted command either
        .move("L1", 2, "H2", IN_INSPECTION, S.SEIZED, kind=EntryKind.COMMAND)
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries)
    assert states(recovered(path)) == {
        ("L1", 1, "H1"): (DECIDED, 0),
        ("L1", 2, "H2"): (IN_INSPECTION, 0),
    }


async def test_accepted_commands_move_parcels_like_any_transition(tmp_path: Path) -> None:
    inspect = {"command": "inspect", "user": "officer", "outcome": "seized", "accepted": True}
    close = {"command": "close", "user": "op1", "reason": "found off belt", "accepted": True}
    script = (
        Script()
        .scan("L1", 1, "H1")
        .move("L1", 1, "H1", SCANNED, DECIDED, IN_INSPECTION)
        .move("L1", 1, "H1", IN_INSPECTION, S.SEIZED, kind=EntryKind.COMMAND, data=inspect)
        .scan("L1", 2, "H2")
        .move("L1", 2, "H2", SCANNED, DECIDED, RECIRCULATING)
        .move("L1", 2, "H2", RECIRCULATING, S.EXCEPTION, kind=EntryKind.COMMAND, data=close)
        .scan("L1", 3, "H3")
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries)
    assert states(recovered(path)) == {("L1", 3, "H3"): (SCANNED, 0)}


async def test_a_reused_tracking_id_keeps_both_parcels_apart(tmp_path: Path) -> None:
    script = (
        Script()
        # H1 waits at inspection when tracking id 7 comes back for H2
        .scan("L1", 7, "H1")
        .move("L1", 7, "H1", SCANNED, DECIDED, IN_INSPECTION)
        .scan("L1", 7, "H2")
        .move("L1", 7, "H2", SCANNED, DECIDED)
        # the officer clears H1: H2 on the belt must stay open
        .move(
            "L1",
            7,
            "H1",
            IN_INSPECTION,
            S.CLEARED_AFTER_INSPECTION,
            kind=EntryKind.INSPECTION_RESULT,
        )
        # the other way round: H3 waits at inspection, H4 on the belt is released
        .scan("L2", 8, "H3")
        .move("L2", 8, "H3", SCANNED, DECIDED, IN_INSPECTION)
        .scan("L2", 8, "H4")
        .move("L2", 8, "H4", SCANNED, DECIDED, S.RELEASED)
        # two parcels of one HAWB at inspection under one id: the oldest is opened first
        .scan("L3", 5, "H5")
        .move("L3", 5, "H5", SCANNED, DECIDED, IN_INSPECTION)
        .scan("L3", 5, "H5")
        .move("L3", 5, "H5", SCANNED, DECIDED, RECIRCULATING, SCANNED, DECIDED, IN_INSPECTION)
        .move("L3", 5, "H5", IN_INSPECTION, S.REFERRED, kind=EntryKind.INSPECTION_RESULT)
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries)
    result = recovered(path)
    assert states(result) == {
        ("L1", 7, "H2"): (DECIDED, 0),
        ("L2", 8, "H3"): (IN_INSPECTION, 0),
        ("L3", 5, "H5"): (IN_INSPECTION, 1),  # the younger one, which went round once
    }


async def test_a_new_first_scan_supersedes_a_forgotten_parcel_on_the_belt(tmp_path: Path) -> None:
    """The controller only opens a parcel on an id it no longer tracks on the belt."""
    script = (
        Script()
        .scan("L1", 4, "OLD")
        .move("L1", 4, "OLD", SCANNED, DECIDED)
        .scan("L1", 4, "NEW")
        .move("L1", 4, "NEW", SCANNED, DECIDED, S.RELEASED)
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries)
    assert recovered(path).parcels == []


async def test_active_holds_are_the_last_accepted_hold_of_each_hawb(tmp_path: Path) -> None:
    script = (
        Script()
        .hold("H20", "alice", "x-ray anomaly")
        .hold("H21", "alice", "manifest mismatch")
        .lift("H21", "bob", "papers arrived")
        .hold("H22", "eve", "no reason", accepted=False)
        .hold("H23", "alice", "sniffer dog")
        .lift("H23", "mallory", "not allowed", accepted=False)
        .hold("H24", "alice", "first")
        .hold("H24", "bob", "second")
        .lift("H25", "bob", "never held")
        .hold("H26", "carol", "a day")
        .lift("H26", "carol", "done")
        .hold("H26", "carol", "again")
    )
    path = tmp_path / "journal.sqlite"
    before = datetime.now(UTC)
    await write(path, script.entries[:4])
    await write(path, script.entries[4:])  # across a restart of the writer
    after = datetime.now(UTC)
    holds = recovered(path).holds
    assert [(h.hawb, h.user, h.reason) for h in holds] == [
        ("H20", "alice", "x-ray anomaly"),
        ("H23", "alice", "sniffer dog"),
        ("H24", "bob", "second"),
        ("H26", "carol", "again"),
    ]
    assert all(before <= h.placed_at <= after for h in holds)


async def test_arrival_is_carried_onto_the_new_clock(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    before = datetime.now(UTC)
    await write(path, Script().scan("L1", 1, "H1", waited_s=30.0).entries)
    after = datetime.now(UTC)
    wall_now = after + timedelta(seconds=100)
    (parcel,) = recover(path, SITE, now=7.0, wall_now=wall_now, horizon_h=24).parcels
    # arrived 30 clock seconds before the row was written, 100..100+write seconds ago
    earliest = 7.0 - (wall_now - before).total_seconds() - 30.0
    latest = 7.0 - (wall_now - after).total_seconds() - 30.0
    assert earliest - 1e-3 <= parcel.arrived_at <= latest + 1e-3


async def test_parcels_older_than_the_horizon_are_left_out_and_counted(tmp_path: Path) -> None:
    script = (
        Script()
        .scan("L1", 1, "STALE", waited_s=30 * 3600)
        .scan("L1", 2, "FRESH", waited_s=20 * 3600)
        .move("L1", 2, "FRESH", SCANNED, DECIDED, IN_INSPECTION)
    )
    path = tmp_path / "journal.sqlite"
    await write(path, script.entries)
    result = recovered(path, horizon_h=24)
    assert [p.hawb for p in result.parcels] == ["FRESH"]
    assert result.beyond_horizon == 1
    assert recovered(path, horizon_h=31).beyond_horizon == 0


async def test_sites_sharing_a_file_recover_apart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    await write(path, Script().scan("L1", 1, "MINE").hold("HX", "a", "b").entries)
    async with SqliteJournal(path, "OTHER") as other:
        await other.write(
            Script().scan("L1", 1, "THEIRS").move("L1", 1, "THEIRS", SCANNED, DECIDED).entries
        )
    result = recovered(path)
    assert [p.hawb for p in result.parcels] == ["MINE"]
    assert [h.hawb for h in result.holds] == ["HX"]
    assert [p.hawb for p in recover(path, "OTHER", 0.0, datetime.now(UTC), 24).parcels] == [
        "THEIRS"
    ]


def test_recovery_refuses_a_missing_or_unmigrated_journal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        recovered(tmp_path / "absent.sqlite")
    path = tmp_path / "old.sqlite"
    migrate.upgrade(f"sqlite:///{path}", "0001")
    with pytest.raises(RuntimeError, match="revision 0001"):
        recovered(path)
    with pytest.raises(ValueError, match="horizon_h"):
        recover(path, SITE, 0.0, datetime.now(UTC), 0)


# --- the tables never disagree with the journal ----------------------------------------------

_KILLED_WRITER = r"""
import asyncio, random, sys
from pathlib import Path
from controller.core.domain import EntryKind, JournalEntry
from controller.store.journal import SqliteJournal

STEPS = [("", "scanned"), ("scanned", "decided"), ("decided", "recirculating"),
         ("recirculating", "scanned"), ("scanned", "decided"), ("decided", "in_inspection"),
         ("in_inspection", "cleared_after_inspection")]

async def line(journal, name, rng):
    tid = 0
    while True:
        tid = (tid + 1) % 50  # ids come back while older parcels still wait at inspection
        hawb = f"{name}-{rng.randrange(10**9)}"
        stop = rng.randrange(1, len(STEPS) + 1)
        for frm, to in STEPS[:stop]:
            data = {"arrived_at": 0.0} if frm == "" else {}
            await journal.write([JournalEntry(1.0, EntryKind.TRANSITION, name, tid, hawb,
                                              state_from=frm, state_to=to, data=data)])
        if rng.random() < 0.2:
            await journal.write([JournalEntry(1.0, EntryKind.COMMAND, "", 0, hawb,
                data={"command": rng.choice(["hold", "lift"]), "user": "u", "reason": "r",
                      "accepted": rng.random() < 0.8})])

async def main():
    async with SqliteJournal(Path(sys.argv[1]), "HUB1", group_commit_ms=1) as journal:
        print("ready", flush=True)
        lines = (line(journal, f"L{i}", random.Random(f"{sys.argv[2]}/{i}")) for i in range(8))
        await asyncio.gather(*lines)

asyncio.run(main())
"""


def _run_and_kill(path: Path, round_: int, rows: int) -> None:
    """Start a writer on ``path``, let it add ``rows`` rows, then kill -9 it mid-stream."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(round_)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        target = count_entries(path, SITE) + rows
        deadline = time.monotonic() + 30
        while count_entries(path, SITE) < target:
            assert time.monotonic() < deadline, "the writer did not get going"
            time.sleep(0.02)
        time.sleep(random.Random(round_).uniform(0, 0.02))  # land anywhere in a commit
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def test_after_kill_9_the_tables_agree_with_the_journal(tmp_path: Path) -> None:
    """A writer killed mid-commit, five times over: each time the tables hold exactly what
    a fold of the journal's committed rows gives."""
    path = tmp_path / "journal.sqlite"
    for round_ in range(5):
        _run_and_kill(path, round_, rows=800)
        assert (tmp_path / "journal.sqlite-wal").exists()  # killed, not closed
        parcels, holds = read_open_set(path, SITE)
        engine = sqlite_engine(path)
        try:
            with engine.connect() as conn:
                folded = fold_journal(conn, SITE)[SITE]
        finally:
            engine.dispose()
        assert parcels == list(folded.parcels.values()), f"round {round_}"
        assert sorted(holds, key=lambda h: h.hawb) == sorted(
            folded.holds.values(), key=lambda h: h.hawb
        ), f"round {round_}"
        assert any(p.state is IN_INSPECTION for p in parcels)
        assert any(p.state is not IN_INSPECTION for p in parcels)
        assert holds


# --- a real site, stopped and recovered -------------------------------------------------------


async def test_a_stopped_site_recovers_every_parcel_it_had_open(tmp_path: Path) -> None:
    """The twin runs the demo site for two seconds; what its lines held open at the stop is
    what :func:`recover` gives back (moved here from tests/test_site.py's restart test)."""
    from controller.app.assembly import Site
    from tests.test_site import demo_config

    config = demo_config(
        tmp_path,
        truth={"contraband_rate": 0.2},
        inspection={
            "shifts": [{"from_h": 0, "to_h": 1, "stations": 2}],
            "service_time": {"dist": "exponential", "mean": 600.0},
        },
    )
    first = Site(config)
    stop = asyncio.Event()

    async def stop_soon() -> None:
        await asyncio.sleep(2.0)
        stop.set()

    await asyncio.gather(first.run(stop=stop), stop_soon())
    held = {
        (line_id, p.tracking_id, p.hawb): p
        for line_id, line in first.controller.lines.items()
        for p in [
            *line.tracker.on_belt.values(),
            *(q for d in line.tracker.in_inspection.values() for q in d),
        ]
    }
    assert any(p.state is IN_INSPECTION for p in held.values())

    result = await asyncio.to_thread(
        recover, config.store.journal_path, config.site.id, 0.0, datetime.now(UTC), 24.0
    )
    back = states(result)
    assert back.keys() == held.keys()
    for key, (state, laps) in back.items():
        assert not state.terminal
        assert laps == held[key].laps
        if held[key].state is not SCANNED:  # a decision cut short may be journalled or not
            assert state is held[key].state
    assert result.beyond_horizon == 0


def test_recovery_reads_the_tables_not_the_journal(tmp_path: Path) -> None:
    """Emptying the journal table leaves recovery unchanged: it never folds journal rows."""
    path = tmp_path / "journal.sqlite"
    asyncio.run(write(path, Script().scan("L1", 1, "H1").hold("H9", "a", "b").entries))
    engine = sqlite_engine(path)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM journal"))
    finally:
        engine.dispose()
    result = recovered(path)
    assert [(p.hawb, p.state) for p in result.parcels] == [("H1", SCANNED)]
    assert [h.hawb for h in result.holds] == ["H9"]

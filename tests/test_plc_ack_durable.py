"""A telegram is acknowledged to the PLC (``TelAck``) only once its journal entries are durable.

With a larger ``group_commit_ms``, a controller killed between acknowledging telegrams and
journalling them lost their records: the PLC had moved on. Now ``TelAck`` waits for the
journal, so a killed controller leaves the telegrams in the ring, and the next one reads them
again: those the journal already has are skipped (nothing doubled), the others are journalled
(nothing lost). Each test runs a real controller on a real SQLite file against the emulated
PLC over OPC UA and Modbus (docs/plc-interface.md, sections 4.1 and 6).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    JournalEntry,
    LaneStatus,
    Telegram,
)
from controller.core.reasons import Reason
from controller.core.views import SorterHealth
from controller.store.journal import JournalError, SqliteJournal
from plc_adapters.layout import header
from plc_adapters.wire_sorter import WireSorter
from tests.plc.controlled import controlled, end_stream, rows
from tests.plc.rigs import Rig, open_rig, wait_for

WIRES = ("opcua", "modbus")


class Gate:
    """The journal behind a gate: while closed, writes wait (a slow disk, a long group commit)
    or, with ``refuse``, fail as a journal that cannot write."""

    def __init__(self, journal: SqliteJournal, refuse: bool = False) -> None:
        self.journal = journal
        self.refuse = refuse
        self.open = asyncio.Event()

    async def write(self, entries: list[JournalEntry]) -> None:
        if self.refuse and not self.open.is_set():
            raise JournalError("disk unavailable")
        await self.open.wait()
        await self.journal.write(entries)


class Dying:
    """The wire adapter of a controller about to die: once ``dying``, the acknowledgements
    the controller gives (its entries are durable) never reach the PLC, as when it is killed
    between making entries durable and writing ``TelAck``."""

    def __init__(self, adapter: WireSorter) -> None:
        self.adapter = adapter
        self.line = adapter.line
        self.dying = False
        self.lost = 0

    def telegrams(self) -> AsyncIterator[Telegram]:
        return self.adapter.telegrams()

    async def reply(self, reply: DestinationReply) -> None:
        await self.adapter.reply(reply)

    def acknowledge(self, telegram: Telegram) -> None:
        if self.dying:
            self.lost += 1
        else:
            self.adapter.acknowledge(telegram)

    def lane_status(self) -> Mapping[int, LaneStatus]:
        return self.adapter.lane_status()

    def health(self) -> SorterHealth:
        return self.adapter.health()


def tel(rig: Rig, name: str) -> int:
    value = rig.plc.mem[header(name)]
    assert isinstance(value, int)
    return value


def journalled(path: Path, tracking_id: int, state: str) -> bool:
    return any(r["tracking_id"] == tracking_id and r["state_to"] == state for r in rows(path))


def single(path: Path) -> dict[str, Any]:
    """What the journal says per parcel, and everything that would show a doubled telegram."""
    journal = rows(path)
    opened = Counter(
        r["tracking_id"] for r in journal if (r["state_from"], r["state_to"]) == ("", "scanned")
    )
    laps = Counter(r["tracking_id"] for r in journal if r["kind"] == "decision")
    confirmed = Counter(
        (r["tracking_id"], r["data"]["seq"]) for r in journal if r["kind"] == "confirmation"
    )
    closing = {Reason.LOST_TRACKING, Reason.TRACKING_ID_REUSED}
    lost = [r for r in journal if closing & set(r["reasons"])]
    return {
        "opened": opened,
        "decided": laps,
        "confirmations": confirmed,
        "illegal": [r for r in journal if r["kind"] == "illegal_transition"],
        "lost": lost,
        "alarms": [r["data"]["source"] for r in journal if r["kind"] == "alarm"],
        "last": {r["tracking_id"]: r["state_to"] for r in journal if r["state_to"]},
    }


@pytest.mark.parametrize("wire", WIRES)
async def test_telack_waits_until_the_entries_of_the_telegram_are_durable(
    wire: str, tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    async with open_rig(wire, read=False) as rig, controlled(rig.sorter, path, rig.clock) as run:
        gate = Gate(run.journal)
        run.controller.lines[rig.sorter.line].journal = gate
        await wait_for(lambda: not rig.plc.safe_state, "the controller owns the PLC")
        rig.plc.request(1, "CG1", rig.clock.now())
        line = run.controller.lines[rig.sorter.line]
        await wait_for(lambda: 1 in line.tracker.on_belt, "the request at the controller")
        await asyncio.sleep(0.5)  # many polls: an acknowledgement would have been written
        assert (tel(rig, "tel_write"), tel(rig, "tel_ack")) == (1, 0)
        assert not journalled(path, 1, "scanned")
        gate.open.set()
        await wait_for(lambda: tel(rig, "tel_ack") == 1, "the acknowledgement")
        assert journalled(path, 1, "scanned")
        await end_stream(rig.adapter)


@pytest.mark.parametrize("wire", WIRES)
async def test_a_controller_killed_between_durable_and_acknowledged_loses_and_doubles_nothing(
    wire: str, tmp_path: Path
) -> None:
    """The first controller journals its last telegrams but dies before their acknowledgement
    reaches the PLC: a closing confirmation, a recirculating parcel's second lap, an inspection
    diversion, a no-read and a new parcel. The next controller reads them again, journals none
    of them twice (nor closes or doubles a parcel for them), then serves new telegrams."""
    path = tmp_path / "journal.db"
    async with open_rig(wire, read=False) as rig:
        plc = rig.plc
        first = Dying(rig.adapter)
        async with controlled(first, path, rig.clock):
            await wait_for(lambda: not plc.safe_state, "the first controller owns the PLC")
            for tracking_id in (1, 2, 3, 4):
                plc.request(tracking_id, f"A{tracking_id}", rig.clock.now())
            await wait_for(lambda: len(rig.replies) == 4, "4 replies at the PLC")
            plc.confirm(2, 1, DivertStatus.LANE_FULL)  # recirculates
            await wait_for(lambda: journalled(path, 2, "recirculating"), "parcel 2 round")
            await wait_for(lambda: tel(rig, "tel_ack") == 5, "5 telegrams acknowledged")

            first.dying = True
            plc.confirm(1, 1, DivertStatus.DIVERTED)  # released: closed
            plc.confirm(4, 2, DivertStatus.DIVERTED)  # to inspection
            plc.request(2, "A2", rig.clock.now())  # its second lap
            plc.request(5, "", rig.clock.now())  # a no-read
            plc.request(6, "A6", rig.clock.now())
            await wait_for(lambda: len(rig.replies) == 7, "3 more replies at the PLC")
            await wait_for(lambda: first.lost == 5, "5 acknowledgements given (and lost)")
            assert journalled(path, 1, "released")
            assert journalled(path, 4, "in_inspection")
            assert (tel(rig, "tel_write"), tel(rig, "tel_ack")) == (10, 5)
            await end_stream(rig.adapter)
        before = single(path)

        second = rig.second_adapter(rig.alarms)
        async with controlled(second, path, rig.clock):
            await wait_for(lambda: tel(rig, "tel_ack") == 10, "the 5 read again acknowledged")
            plc.confirm(3, 1, DivertStatus.DIVERTED)
            plc.request(7, "A7", rig.clock.now())
            await wait_for(lambda: journalled(path, 3, "released"), "parcel 3 released")
            await wait_for(lambda: single(path)["decided"][7] == 1, "parcel 7 decided")
            await wait_for(lambda: tel(rig, "tel_ack") == 12, "the new telegrams acknowledged")
            await end_stream(second)

    after = single(path)
    parcels = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}
    assert before["opened"] == Counter(parcels)
    assert after["opened"] == Counter({**parcels, 7: 1})
    assert after["decided"] == Counter({**parcels, 2: 2, 7: 1})
    assert [key[0] for key, n in after["confirmations"].items() if n == 1] == [2, 1, 4, 3]
    assert sum(after["confirmations"].values()) == 4
    assert after["illegal"] == []
    assert after["lost"] == []
    assert not [s for s in after["alarms"] if s.endswith(("/unknown-parcel", "/unknown-lane"))]
    last = after["last"]
    assert [last[i] for i in range(1, 8)] == [
        "released",
        "decided",  # its second lap
        "released",
        "in_inspection",
        "decided",  # to exception
        "decided",
        "decided",
    ]


@pytest.mark.parametrize("wire", WIRES)
async def test_telegrams_a_controller_could_not_journal_are_journalled_by_the_next(
    wire: str, tmp_path: Path
) -> None:
    """The journal refuses every write; the controller stops with nothing durable. No
    telegram was acknowledged, so the next controller journals each of them, once."""
    path = tmp_path / "journal.db"
    async with open_rig(wire, read=False) as rig:
        plc = rig.plc
        async with controlled(rig.sorter, path, rig.clock) as run:
            line = run.controller.lines[rig.sorter.line]
            line.journal = Gate(run.journal, refuse=True)
            line.DRAIN_LIMIT_S = 0.5  # the journal never comes back: do not wait long
            await wait_for(lambda: not plc.safe_state, "the first controller owns the PLC")
            plc.request(1, "B1", rig.clock.now())
            plc.request(2, "B2", rig.clock.now())
            plc.confirm(1, 1, DivertStatus.DIVERTED)
            await wait_for(lambda: 1 not in line.tracker.on_belt, "the telegrams handled")
            await asyncio.sleep(0.5)  # barriers fail and are retried; nothing acknowledged
            assert (tel(rig, "tel_write"), tel(rig, "tel_ack")) == (3, 0)
            await end_stream(rig.adapter)
        assert rows(path) == []

        second = rig.second_adapter(rig.alarms)
        async with controlled(second, path, rig.clock):
            await wait_for(lambda: tel(rig, "tel_ack") == 3, "the 3 telegrams acknowledged")
            await wait_for(lambda: journalled(path, 1, "released"), "parcel 1 released")
            await wait_for(lambda: single(path)["decided"][2] == 1, "parcel 2 decided")
            await end_stream(second)

    after = single(path)
    assert after["opened"] == Counter({1: 1, 2: 1})
    assert after["last"][1] == "released"
    assert after["illegal"] == []
    assert after["lost"] == []

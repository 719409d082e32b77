"""Faults and bad input from the PLC, over every adapter (in-process, OPC UA and Modbus TCP on
loopback, real servers and clients): sequence numbers that wrap, jump or restart, PLC cold
starts with and without slot memory, telegrams of unknown kind, barcodes too long for their
field, and what the adapters log about it."""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertStatus,
    LaneStatus,
    Telegram,
)
from controller.core.reasons import Reason
from plc_adapters.layout import Layout, PackMLState, TelegramKind
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.opcua_server import OpcUaHost
from plc_adapters.opcua_wire import OpcUaTransport
from plc_adapters.telegrams import RESYNC_AFTER, RawTelegram
from plc_adapters.transport import PROTOCOL_LOGGERS
from tests.plc.controlled import controlled, end_stream, rows
from tests.plc.rigs import NAMESPACE, PLC_TIMING, PROTOCOLS, Rig, open_rig, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
REQUEST, CONFIRMATION = TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION
WIRES = ("opcua", "modbus")
OLD_LANE, NEW_LANE = 2, 1  # replies decided before a cold start steer to 2, after it to 1


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def opcua_host() -> AsyncIterator[OpcUaHost]:
    host = OpcUaHost("127.0.0.1", 0, NAMESPACE)
    yield host
    await host.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def rig(protocol: str, opcua_host: OpcUaHost) -> AsyncIterator[Rig]:
    async with open_rig(protocol, opcua_host=opcua_host if protocol == "opcua" else None) as r:
        yield r


async def settled(rig: Rig) -> None:
    if rig.wire:
        await wait_for(lambda: rig.adapter.connected and rig.adapter.plc_heartbeat_ok, "link up")
        await wait_for(lambda: not rig.plc.safe_state, "controller heartbeat seen by the PLC")


def requests(telegrams: list[Telegram]) -> list[DestinationRequest]:
    return [t for t in telegrams if isinstance(t, DestinationRequest)]


def raised(rig: Rig, what: str) -> list[bool]:
    source = f"{rig.sorter.line}/{what}"
    return [active for _, s, _, active in rig.alarms.history if s == source]


# --- sequence numbers ------------------------------------------------------------------------


async def test_sequence_wrap_delivers_every_telegram_clean(rig: Rig) -> None:
    """Seq wraps from 4 294 967 295 to 0 (section 2): every telegram after the wrap is new,
    requests and confirmations alike, and no alarm is left."""
    first = 0xFFFF_FFF6
    for k in range(20):
        seq = (first + k) & 0xFFFF_FFFF
        if k % 2 == 0:
            rig.inject(RawTelegram(seq, REQUEST, 100 + k, barcode=b"WRAP%d" % k))
        else:
            rig.inject(RawTelegram(seq, CONFIRMATION, 100 + k - 1, lane=1, status=0))
    received = await rig.receive(20)
    assert [t.seq for t in received] == [(first + k) & 0xFFFF_FFFF for k in range(20)]
    assert [r.fault for r in requests(received)] == [""] * 10
    assert [getattr(t, "status", None) for t in received[1::2]] == [DivertStatus.DIVERTED] * 10
    assert rig.sorter.checker.faults == 0
    assert not rig.alarms.active


@pytest.mark.parametrize("wire", WIRES)
async def test_ring_counters_and_seq_wrap_together_over_the_wire(wire: str) -> None:
    """The ring counters and Seq both pass 2**32 during a run; requests arrive in order and
    every reply is taken by the PLC exactly once."""
    async with open_rig(wire, ring_size=8, first_counter=0xFFFF_FFFB) as rig:
        rig.plc.set_next_seq(0xFFFF_FFFD)
        await settled(rig)
        for i in range(40):
            rig.plant.request(1 + i, f"W{i}", rig.clock.now())
        received = await rig.receive(40)
        assert [t.seq for t in received] == [(0xFFFF_FFFD + k) & 0xFFFF_FFFF for k in range(40)]
        assert [r.fault for r in requests(received)] == [""] * 40
        for request in requests(received):
            reply = DestinationReply(request.line, request.tracking_id, 2, Reason.RISK_RED)
            await rig.sorter.reply(reply)
        await wait_for(lambda: len(rig.replies) >= 40, "every reply at the PLC")
        await asyncio.sleep(0.2)
        assert sorted(r.tracking_id for r in rig.replies) == list(range(1, 41))
        assert rig.plc.lane_for(40) == (2, DivertStatus.DIVERTED)
        assert not rig.alarms.active
        assert rig.adapter.restarts == 0


async def test_one_wild_jump_ahead_costs_no_good_parcel(rig: Rig) -> None:
    """One telegram 1,000 ahead: delivered (it may be sound), alarmed, and the PLC's next
    telegrams, which go on from before it, are all clean (section 6.1)."""
    for k in range(1, 11):
        rig.inject(RawTelegram(k, REQUEST, k, barcode=b"GOOD"))
    rig.inject(RawTelegram(1010, REQUEST, 999, barcode=b"WILD"))
    for k in range(11, 41):
        rig.inject(RawTelegram(k, REQUEST, k, barcode=b"GOOD"))
    received = await rig.receive(41)
    assert [t.tracking_id for t in received] == [*range(1, 11), 999, *range(11, 41)]
    assert [r.fault for r in requests(received)] == [""] * 41
    assert rig.sorter.checker.faults == 0
    assert rig.sorter.checker.lost == 0
    assert raised(rig, "telegram-sequence") == [True, False]
    assert not rig.alarms.active


async def test_a_renumbering_plc_costs_a_bounded_number_of_parcels(rig: Rig) -> None:
    """The PLC starts its numbering again without touching the ring counters: the first
    telegrams look backwards (exception), then the checker follows the PLC, alarms once and
    clears; nothing after that is a fault."""
    for k in range(500, 510):
        rig.inject(RawTelegram(k, REQUEST, k, barcode=b"OLD"))
    for k in range(1, 31):
        rig.inject(RawTelegram(k, REQUEST, 1000 + k, barcode=b"NEW"))
    received = await rig.receive(40)
    faults = [r.fault for r in requests(received)[10:]]
    assert all("went backwards" in f for f in faults[: RESYNC_AFTER - 1])
    assert faults[RESYNC_AFTER - 1 :] == [""] * (31 - RESYNC_AFTER)
    assert rig.sorter.checker.faults == RESYNC_AFTER - 1
    assert raised(rig, "telegram-sequence") == [True, False]
    assert raised(rig, "malformed-telegram") == [True, False]
    assert not rig.alarms.active


# --- bad input -------------------------------------------------------------------------------


async def test_an_unknown_kind_is_alarmed_and_skipped_not_delivered(rig: Rig) -> None:
    rig.plant.request(1, "GOOD1", rig.clock.now())
    for kind in (7, 0):
        rig.inject(RawTelegram(rig.plant.next_seq(), kind, 50 + kind))
    rig.plant.request(2, "GOOD2", rig.clock.now())
    received = await rig.receive(2)
    await asyncio.sleep(0.2)  # an unknown kind delivered anyway would arrive by now
    assert len(rig.received) == 2
    assert [(t.tracking_id, getattr(t, "fault", "")) for t in received] == [(1, ""), (2, "")]
    assert (rig.sorter.checker.faults, rig.sorter.checker.skipped) == (2, 2)
    assert rig.sorter.checker.lost == 0  # their numbers counted
    assert raised(rig, "malformed-telegram") == [True, False]


async def test_a_barcode_too_long_for_its_field_is_malformed_not_truncated(rig: Rig) -> None:
    """A 40-character HAWB cut to 32 could name another parcel: it must reach the core as
    malformed (exception), over every wire (OPC UA carries it whole, Modbus marks it)."""
    rig.plant.request(1, "CG" + "4" * 38, rig.clock.now())
    rig.plant.request(2, "CG" + "3" * 30, rig.clock.now())  # exactly 32: fine
    long, fits = requests(await rig.receive(2))
    assert long.tracking_id == 1
    assert "32" in long.fault
    assert (fits.barcode, fits.fault) == ("CG" + "3" * 30, "")


# --- PLC cold starts -------------------------------------------------------------------------


async def answer(rig: Rig, request: DestinationRequest, lane: int) -> None:
    reason = Reason.RISK_RED if lane == OLD_LANE else Reason.LOW_RISK_CLEAN_XRAY
    await rig.sorter.reply(DestinationReply(request.line, request.tracking_id, lane, reason))


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("keep_slots", [True, False], ids=["slots-kept", "slots-zeroed"])
@pytest.mark.parametrize("link", ["link-up", "link-down"])
async def test_a_cold_start_never_gives_a_new_parcel_an_old_decision(
    wire: str, keep_slots: bool, link: str
) -> None:
    """Parcels 1..5 are decided and taken by the PLC, 6..8 are still being decided when the
    PLC cold-starts; the new run reuses tracking ids 1..8. No reply decided before the restart
    may reach the PLC after it, every new parcel goes where its own reply says, and the
    restart leaves no alarm behind (section 6.2)."""
    async with open_rig(wire) as rig:
        plc, adapter = rig.plc, rig.adapter
        credited: list[DestinationReply] = []
        plc.on_reply = credited.append
        await settled(rig)
        now = rig.clock.now()
        for i in range(1, 9):
            plc.request(i, f"OLD{i}", now)
        old = requests(await rig.receive(8))
        for request in old[:5]:
            await answer(rig, request, OLD_LANE)
        await wait_for(lambda: adapter.replies_waiting == 0, "5 replies seen taken")
        taken_before, credited_before = len(rig.replies), len(credited)

        if link == "link-down":
            await plc.stop_server()
            for request in old[5:]:  # decided while the link is down: held by the adapter
                await answer(rig, request, OLD_LANE)
        plc.cold_start(keep_slots=keep_slots)
        for i in range(1, 6):  # the new run numbers its parcels from 1 again
            plc.request(i, f"NEW{i}", rig.clock.now())
        if link == "link-down":
            await asyncio.sleep(0.2)
            await plc.start()
        new = requests(await rig.receive(13))[8:]
        assert [(r.tracking_id, r.barcode, r.seq) for r in new] == [
            (i, f"NEW{i}", i) for i in range(1, 6)
        ]
        assert adapter.restarts == 1
        if link == "link-up":
            for request in old[5:]:  # decided after the restart was seen: too late
                await answer(rig, request, OLD_LANE)
        for i in range(6, 9):
            plc.request(i, f"NEW{i}", rig.clock.now())
        new += requests(await rig.receive(16))[13:]
        for request in new:
            await answer(rig, request, NEW_LANE)
        await wait_for(lambda: len(credited) - credited_before >= 8, "8 new replies credited")
        await asyncio.sleep(0.3)  # a stale reply written late would be taken by now

        taken = rig.replies[taken_before:]
        assert [r.lane for r in taken] == [NEW_LANE] * 8, "a reply from before the restart"
        assert [r.lane for r in credited[credited_before:]] == [NEW_LANE] * 8
        for i in range(1, 9):
            assert plc.lane_for(i) == (NEW_LANE, DivertStatus.DIVERTED)
        assert adapter.replies_dropped == 3
        assert plc.replies_unmatched == 0
        assert raised(rig, "plc-restart") == [True, False]
        assert raised(rig, "plc-reply-error") == []
        assert [s for s in rig.alarms.active if not s.endswith("/plc-link")] == []
        await wait_for(lambda: not rig.alarms.active, "no alarm left")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_cold_start_seen_only_in_the_controllers_own_counters_is_followed(
    wire: str,
) -> None:
    """No reply was ever acknowledged and the new run publishes past the old position, so
    only ``TelAck`` (the controller's own, zeroed by the PLC) shows the restart. The adapter
    follows the PLC from its counters: no new request is skipped."""
    async with open_rig(wire) as rig:
        await settled(rig)
        rig.plc.request(1, "OLD1", rig.clock.now())
        await rig.receive(1)
        await wait_for(lambda: rig.plc.mem[("header", 0, "tel_ack")] == 1, "telegram acked")
        rig.plc.cold_start(keep_slots=True)
        for i in range(1, 4):
            rig.plc.request(i, f"NEW{i}", rig.clock.now())
        new = requests(await rig.receive(4))[1:]
        assert [(r.tracking_id, r.barcode) for r in new] == [(1, "NEW1"), (2, "NEW2"), (3, "NEW3")]
        assert rig.adapter.restarts == 1
        assert rig.sorter.checker.faults == 0


@pytest.mark.parametrize("wire", WIRES)
async def test_a_reply_error_latched_by_a_restart_is_cleared_by_the_resync(wire: str) -> None:
    """A PLC that keeps bit 3 latched across its restart (it zeroes only the counters): the
    controller clears its alarm once it has resynchronised the reply ring, and raises it
    again only if the bit drops and sets anew."""
    async with open_rig(wire) as rig:
        plc = rig.plc
        await settled(rig)
        source = f"{rig.sorter.line}/plc-reply-error"
        plc.request(1, "A", rig.clock.now())
        (request,) = requests(await rig.receive(1))
        await answer(rig, request, OLD_LANE)
        await wait_for(lambda: len(rig.replies) == 1, "the reply at the PLC")
        plc.latch_reply_error()
        await wait_for(lambda: source in rig.alarms.active, "the reply-error alarm")
        plc.cold_start(keep_slots=True, keep_flags=True)
        await wait_for(lambda: rig.adapter.restarts == 1, "the restart seen")
        await wait_for(lambda: source not in rig.alarms.active, "the alarm cleared")
        plc.request(2, "B", rig.clock.now())
        (request,) = requests(await rig.receive(2))[1:]
        await answer(rig, request, NEW_LANE)
        await wait_for(lambda: len(rig.replies) == 2, "the new reply at the PLC")
        assert plc.lane_for(2) == (NEW_LANE, DivertStatus.DIVERTED)
        assert raised(rig, "plc-reply-error") == [True, False]


# --- logs ------------------------------------------------------------------------------------


@pytest.fixture
def unset_protocol_loggers() -> Iterator[None]:
    """The protocol libraries' loggers as a fresh process has them (no level of their own)."""
    loggers = [logging.getLogger(name) for name in PROTOCOL_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("unset_protocol_loggers")
async def test_building_a_transport_defaults_the_protocol_loggers_to_warning() -> None:
    ModbusTransport("127.0.0.1", 1, 1, Layout(8, 8))
    assert logging.getLogger("pymodbus").level == logging.WARNING
    assert logging.getLogger("asyncua").level == logging.WARNING
    logging.getLogger("asyncua").setLevel(logging.DEBUG)  # an operator debugging the link
    OpcUaTransport("opc.tcp://127.0.0.1:1", NAMESPACE, "L1", Layout(8, 8))
    assert logging.getLogger("asyncua").level == logging.DEBUG


@pytest.mark.usefixtures("unset_protocol_loggers")
async def test_a_running_opcua_link_does_not_narrate_every_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with open_rig("opcua") as rig:
        await settled(rig)
        caplog.clear()
        for i in range(20):
            rig.plant.request(1 + i, f"Q{i}", rig.clock.now())
            await asyncio.sleep(0.05)
        await rig.receive(20)
        chatter = [r for r in caplog.records if r.name.startswith("asyncua")]
        assert [r.getMessage() for r in chatter if r.levelno < logging.WARNING] == []


async def test_a_bad_lane_status_word_is_logged_once_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="plc_adapters.wire_sorter")
    async with open_rig("modbus") as rig:
        await settled(rig)
        rig.plc.set_lane_word(2, 7)
        await wait_for(lambda: rig.sorter.lane_status().get(2) is LaneStatus.BLOCKED, "blocked")
        await asyncio.sleep(0.5)  # about 10 lane-table reads
        rig.plc.set_lane_status(2, LaneStatus.AVAILABLE)
        await wait_for(lambda: rig.sorter.lane_status().get(2) is LaneStatus.AVAILABLE, "free")
        lines = [(r.levelno, r.getMessage()) for r in caplog.records if "lane 2" in r.getMessage()]
        assert [level for level, _ in lines] == [logging.ERROR, logging.WARNING]
        assert "status word is 7" in lines[0][1]
        reads = int(lines[1][1].split("was read ")[1].split(" ")[0])
        assert reads >= 5
        assert "now available" in lines[1][1]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_plc_in_its_safe_state_before_the_controller_comes_raises_no_alarm(
    wire: str, opcua_host: OpcUaHost
) -> None:
    """A PLC is in its safe state until a controller owns it (section 4.5): connecting to
    one, even long after it started, is no fault. Staying there would be."""
    async with open_rig(
        wire, opcua_host=opcua_host if wire == "opcua" else None, read=False
    ) as rig:
        assert rig.plc.safe_state
        await asyncio.sleep(PLC_TIMING.heartbeat_timeout_s + 0.2)  # no controller meanwhile
        rig.start_reading()
        await settled(rig)
        await asyncio.sleep(PLC_TIMING.heartbeat_timeout_s + 0.2)  # past the connect grace
        assert raised(rig, "plc-safe-state") == []
        rig.adapter.suspend_heartbeat()
        await wait_for(lambda: f"{rig.sorter.line}/plc-safe-state" in rig.alarms.active, "alarm")


@pytest.mark.parametrize("wire", WIRES)
async def test_packml_held_and_aborted_raise_an_alarm_once_and_clear_it_once(
    wire: str, opcua_host: OpcUaHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plc_adapters.wire_sorter")
    async with open_rig(wire, opcua_host=opcua_host if wire == "opcua" else None) as rig:
        await settled(rig)
        active = rig.alarms.active
        for state, what in ((PackMLState.HELD, "plc-held"), (PackMLState.ABORTED, "plc-aborted")):
            source = f"{rig.sorter.line}/{what}"
            rig.plc.set_line_state(state)
            await wait_for(partial(operator.contains, active, source), what)
            await asyncio.sleep(0.2)  # many header reads in that state
            rig.plc.set_line_state(PackMLState.EXECUTE)
            await wait_for(lambda: not any(s.endswith("-held") for s in active), "cleared")
            await wait_for(lambda: not any(s.endswith("-aborted") for s in active), "cleared")
        assert raised(rig, "plc-held") == [True, False]
        assert raised(rig, "plc-aborted") == [True, False]
        changes = [r.getMessage() for r in caplog.records if "PLC line state" in r.getMessage()]
        assert [m.split("PLC line state ")[1] for m in changes] == [
            "EXECUTE (was not read yet)",
            "HELD (was EXECUTE)",
            "EXECUTE (was HELD)",
            "ABORTED (was EXECUTE)",
            "EXECUTE (was ABORTED)",
        ]


async def test_confirmations_the_controller_cannot_place_raise_alarms_with_source_and_state(
    tmp_path: Path,
) -> None:
    """A confirmation for a tracking id no parcel has, or naming a lane not in the line's
    configuration: each raises its alarm once (source and state, as every alarm row) and
    clears it with the next confirmation it can place; the journal keeps each telegram."""
    path = tmp_path / "journal.db"
    async with open_rig("inprocess", read=False) as rig, controlled(rig.sorter, path, rig.clock):
        plant = rig.plant
        plant.confirm(99, 1, DivertStatus.DIVERTED)
        plant.confirm(98, 1, DivertStatus.DIVERTED)
        for tracking_id in (1, 2, 3):
            plant.request(tracking_id, f"U{tracking_id}", rig.clock.now())
        await wait_for(lambda: len(rig.replies) == 3, "3 replies")
        plant.confirm(1, 7, DivertStatus.DIVERTED)  # lane 7 is not the line's
        plant.confirm(2, 7, DivertStatus.DIVERTED)
        plant.confirm(3, 1, DivertStatus.DIVERTED)
        await wait_for(lambda: journalled_state(path, 3) == "released", "parcel 3 released")
        await end_stream(rig.sorter)
    journal = rows(path)
    line = rig.sorter.line
    alarms = [(r["data"]["source"], r["state_to"]) for r in journal if r["kind"] == "alarm"]
    assert alarms == [
        (f"{line}/unknown-parcel", "active"),
        (f"{line}/unknown-parcel", "cleared"),
        (f"{line}/unknown-lane", "active"),
        (f"{line}/unknown-lane", "cleared"),
    ]
    unplaced = [r for r in journal if r["kind"] == "confirmation" and r["tracking_id"] > 90]
    assert [(r["tracking_id"], r["lane"], r["state_to"]) for r in unplaced] == [
        (99, 1, ""),
        (98, 1, ""),
    ]
    closed = {r["tracking_id"]: r for r in journal if r["kind"] == "confirmation"}
    assert (closed[1]["state_to"], closed[1]["reasons"]) == ("exception", [303])


def journalled_state(path: Path, tracking_id: int) -> str:
    states = [r["state_to"] for r in rows(path) if r["tracking_id"] == tracking_id]
    return states[-1] if states else ""

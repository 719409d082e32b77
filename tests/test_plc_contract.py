"""The sorter adapter contract, one set of test bodies run against every implementation:
the in-process sorter, OPC UA on loopback and Modbus TCP on loopback (real servers, real
clients). Tests that need a wire (restart, heartbeats, mailbox) skip the in-process sorter
with that reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    LaneStatus,
)
from controller.core.reasons import Reason
from plc_adapters.layout import TelegramKind
from plc_adapters.opcua_server import OpcUaHost
from plc_adapters.telegrams import RawTelegram
from tests.plc.rigs import NAMESPACE, PROTOCOLS, Rig, open_rig, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
BURST = 1000


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def opcua_host() -> AsyncIterator[OpcUaHost]:
    """One OPC UA server for the module (its start-up is slow); each test gets its own line."""
    host = OpcUaHost("127.0.0.1", 0, NAMESPACE)
    yield host
    await host.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def rig(protocol: str, opcua_host: OpcUaHost) -> AsyncIterator[Rig]:
    async with open_rig(protocol, opcua_host=opcua_host if protocol == "opcua" else None) as r:
        yield r


def needs_wire(rig: Rig) -> None:
    if not rig.wire:
        pytest.skip("the in-process sorter has no wire: no server, heartbeat or mailbox")


async def settled(rig: Rig) -> None:
    """Wait until the link is up and both heartbeats run (start-up alarms are over)."""
    if rig.wire:
        await wait_for(lambda: rig.adapter.connected and rig.adapter.plc_heartbeat_ok, "link up")
        await wait_for(lambda: not rig.plc.safe_state, "controller heartbeat seen by the PLC")
        await wait_for(lambda: not rig.adapter.plc_flags, "PLC flags clear")


async def test_burst_keeps_order_and_loses_nothing(rig: Rig) -> None:
    now = rig.clock.now()
    for i in range(BURST // 2):
        rig.plant.request(10_000 + i, f"HAWB{i:06d}", now)
        rig.plant.confirm(10_000 + i, 1, DivertStatus.DIVERTED)
    received = await rig.receive(BURST)
    assert [t.seq for t in received] == list(range(1, BURST + 1))
    assert [type(t) for t in received] == [DestinationRequest, DivertConfirmation] * (BURST // 2)
    assert [t.tracking_id for t in received] == [10_000 + i // 2 for i in range(BURST)]
    requests = [t for t in received if isinstance(t, DestinationRequest)]
    assert [t.barcode for t in requests] == [f"HAWB{i:06d}" for i in range(BURST // 2)]
    assert all(t.fault == "" for t in requests)
    for request in requests:
        await rig.sorter.reply(
            DestinationReply(request.line, request.tracking_id, 2, Reason.RISK_RED)
        )
    await wait_for(lambda: len(rig.replies) >= BURST // 2, "every reply at the plant")
    await asyncio.sleep(0.3)  # a doubled reply would arrive within a few cycles
    assert Counter(r.tracking_id for r in rig.replies) == Counter(t.tracking_id for t in requests)
    assert {(r.lane, r.reason) for r in rig.replies} == {(2, Reason.RISK_RED)}
    assert len(rig.received) == BURST  # nothing delivered twice


async def test_request_scan_time_is_never_later_than_reality(rig: Rig) -> None:
    await settled(rig)
    for i in range(20):
        scanned = rig.clock.now()
        rig.plant.request(500 + i, "SCAN", scanned)
        (telegram,) = (await rig.receive(i + 1))[i:]
        assert isinstance(telegram, DestinationRequest)
        assert telegram.scan_time <= scanned + 1e-9
        assert scanned - telegram.scan_time < 0.5  # and not uselessly early
        await asyncio.sleep(0.01)


async def test_duplicates_are_ignored(rig: Rig) -> None:
    now = rig.clock.now()
    first = rig.plant.request(1, "A", now)
    second = rig.plant.confirm(1, 1, DivertStatus.DIVERTED)
    await rig.receive(2)
    for seq in (first, second, second):
        resend(rig, seq)
    rig.plant.request(2, "B", now)
    received = await rig.receive(3)
    assert [(t.seq, t.tracking_id) for t in received] == [(1, 1), (2, 1), (3, 2)]
    assert rig.sorter.checker.duplicates == 3
    assert rig.sorter.checker.faults == 0
    await asyncio.sleep(0.2)
    assert len(rig.received) == 3


def resend(rig: Rig, seq: int) -> None:
    if rig.wire:
        rig.plc.resend(seq)
        return
    telegram = rig.received[seq - 1]
    if isinstance(telegram, DestinationRequest):
        raw = RawTelegram(seq, TelegramKind.DESTINATION_REQUEST, telegram.tracking_id, barcode=b"A")
        rig.inject(raw)
    else:
        kind = TelegramKind.DIVERT_CONFIRMATION
        rig.inject(
            RawTelegram(seq, kind, telegram.tracking_id, lane=telegram.lane, status=telegram.status)
        )


async def test_malformed_values_are_reported_and_the_adapter_keeps_running(rig: Rig) -> None:
    line = rig.sorter.line
    now = rig.clock.now()
    good = rig.plant.request(100, "GOOD1", now)
    request, confirmation = TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION
    rig.inject(RawTelegram(rig.plant.next_seq(), request, 101, barcode=b"CG\xc3\xa9001"))
    rig.inject(RawTelegram(rig.plant.next_seq(), confirmation, 102, lane=0, status=0))
    rig.inject(RawTelegram(rig.plant.next_seq(), confirmation, 103, lane=1, status=77))
    rig.inject(RawTelegram(good, request, 104, barcode=b"OTHER"))  # seq goes backwards
    rig.plant.request(105, "GOOD2", now)
    received = await rig.receive(6)

    first, non_ascii, lane_zero, bad_status, backwards, last = received
    assert isinstance(first, DestinationRequest)
    assert first.fault == ""
    assert isinstance(non_ascii, DestinationRequest)
    assert non_ascii.tracking_id == 101
    assert "byte 2 is 0xC3" in non_ascii.fault
    assert "printable ASCII" in non_ascii.fault
    for telegram, tracking_id in ((lane_zero, 102), (bad_status, 103)):
        assert isinstance(telegram, DivertConfirmation)
        assert (telegram.tracking_id, telegram.status) == (tracking_id, DivertStatus.LOST_TRACKING)
    assert isinstance(backwards, DestinationRequest)
    assert backwards.tracking_id == 104
    assert "went backwards: 1 after 4" in backwards.fault
    assert isinstance(last, DestinationRequest)
    assert (last.tracking_id, last.fault) == (105, "")
    assert rig.sorter.checker.faults == 4
    sources = [source for _, source, _, _ in rig.alarms.history]
    assert sources.count(f"{line}/malformed-telegram") == 2  # raised once, cleared once
    assert f"{line}/malformed-telegram" not in rig.alarms.active


async def test_lane_status_reaches_the_controller(rig: Rig) -> None:
    rig.plant.set_lane_status(2, LaneStatus.FULL)
    rig.plant.set_lane_status(9, LaneStatus.BLOCKED)
    await wait_for(lambda: rig.sorter.lane_status().get(2) is LaneStatus.FULL, "lane 2 full")
    await wait_for(lambda: rig.sorter.lane_status().get(9) is LaneStatus.BLOCKED, "lane 9 blocked")
    rig.plant.set_lane_status(2, LaneStatus.AVAILABLE)
    await wait_for(lambda: rig.sorter.lane_status().get(2) is LaneStatus.AVAILABLE, "lane 2 free")


async def test_server_restarted_mid_burst_loses_nothing(protocol: str) -> None:
    if protocol == "inprocess":
        pytest.skip("the in-process sorter has no server to restart")
    async with open_rig(protocol) as rig:  # its own server: the restart stops the endpoint
        await settled(rig)
        answered: set[int] = set()

        async def respond() -> None:
            while True:
                for t in list(rig.received):
                    if isinstance(t, DestinationRequest) and t.tracking_id not in answered:
                        answered.add(t.tracking_id)
                        await rig.sorter.reply(
                            DestinationReply(t.line, t.tracking_id, 1, Reason.LOW_RISK_CLEAN_XRAY)
                        )
                await asyncio.sleep(0.005)

        async def produce() -> None:
            for i in range(BURST):
                rig.plant.request(1 + i, f"R{i}", rig.clock.now())
                if i % 20 == 19:
                    await asyncio.sleep(0.01)

        responder = asyncio.create_task(respond())
        producer = asyncio.create_task(produce())
        await wait_for(lambda: len(rig.received) >= 300, "300 telegrams before the restart")
        connects = rig.adapter.connects
        await rig.restart_server()
        await producer
        received = await rig.receive(BURST)
        await wait_for(lambda: len(rig.replies) >= BURST, "every reply after the restart")
        await asyncio.sleep(0.3)
        responder.cancel()
        assert rig.adapter.connects > connects  # it really lost and regained the link
        assert [t.seq for t in received] == list(range(1, BURST + 1))
        assert len(rig.received) == BURST
        assert Counter(r.tracking_id for r in rig.replies) == Counter(range(1, BURST + 1))


async def test_controller_heartbeat_loss_puts_the_plc_in_its_safe_state(rig: Rig) -> None:
    needs_wire(rig)
    await settled(rig)
    source = f"{rig.sorter.line}/plc-safe-state"
    before = len(rig.alarms.history)
    rig.adapter.suspend_heartbeat()
    await wait_for(lambda: rig.plc.safe_state, "the PLC's safe state")
    await wait_for(lambda: source in rig.alarms.active, "the safe-state alarm")

    rig.plant.request(7, "SAFE", rig.clock.now())
    (request,) = await rig.receive(1)
    await rig.sorter.reply(DestinationReply(request.line, 7, 1, Reason.LOW_RISK_CLEAN_XRAY))
    await wait_for(lambda: len(rig.replies) == 1, "the reply at the PLC")
    assert rig.plc.lane_for(7) == (9, DivertStatus.DEFAULTED)  # in time, but no heartbeat

    rig.adapter.suspend_heartbeat(False)
    await wait_for(lambda: not rig.plc.safe_state, "the PLC leaving its safe state")
    await wait_for(lambda: source not in rig.alarms.active, "the recovery record")
    rig.plant.request(8, "BACK", rig.clock.now())
    (request,) = (await rig.receive(2))[1:]
    await rig.sorter.reply(DestinationReply(request.line, 8, 1, Reason.LOW_RISK_CLEAN_XRAY))
    await wait_for(lambda: len(rig.replies) == 2, "the second reply at the PLC")
    assert rig.plc.lane_for(8) == (1, DivertStatus.DIVERTED)
    records = [(s, active) for _, s, _, active in rig.alarms.history[before:]]
    assert records == [(source, True), (source, False)]  # one alarm, one recovery


async def test_plc_heartbeat_loss_raises_one_alarm_and_one_recovery(rig: Rig) -> None:
    needs_wire(rig)
    await settled(rig)
    source = f"{rig.sorter.line}/plc-heartbeat"
    before = len(rig.alarms.history)
    healthy = rig.adapter.health()
    assert (healthy.link, healthy.line_state) == ("up", "execute")
    assert healthy.heartbeat_age_s is not None
    assert healthy.heartbeat_age_s < 1.0
    rig.plc.freeze_heartbeat()
    await wait_for(lambda: source in rig.alarms.active, "the PLC heartbeat alarm")
    assert not rig.adapter.plc_heartbeat_ok
    stalled = rig.adapter.health()
    assert stalled.link == "degraded"  # the floor sees the stall, not just the log
    assert stalled.heartbeat_age_s is not None
    assert stalled.heartbeat_age_s > rig.adapter.timing.heartbeat_timeout_s
    await asyncio.sleep(0.5)  # still stalled: no second record
    rig.plc.freeze_heartbeat(False)
    await wait_for(lambda: source not in rig.alarms.active, "the recovery record")
    records = [(s, active) for _, s, _, active in rig.alarms.history[before:]]
    assert records == [(source, True), (source, False)]


async def test_mailbox_full_holds_telegrams_in_order(protocol: str) -> None:
    if protocol == "inprocess":
        pytest.skip("the in-process sorter has no mailbox to fill")
    async with open_rig(protocol, ring_size=8) as rig:
        await settled(rig)
        source = f"{rig.sorter.line}/plc-mailbox-full"
        await rig.plc.stop_server()  # the controller cannot acknowledge: the ring fills
        for i in range(50):
            rig.plant.request(i + 1, f"M{i}", rig.clock.now())
        await wait_for(lambda: rig.plc.mailbox_full, "mailbox full at the PLC")
        assert rig.plc.backlog == 50 - 8
        await rig.plc.start()
        received = await rig.receive(50)
        assert [t.tracking_id for t in received] == list(range(1, 51))
        await wait_for(lambda: not rig.plc.mailbox_full, "the mailbox draining")
        await wait_for(lambda: source not in rig.alarms.active, "the mailbox alarm clearing")
        assert [a for _, s, _, a in rig.alarms.history if s == source] == [True, False]

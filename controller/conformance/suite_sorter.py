"""The sorter port's suite: bursts, scan times, duplicates, malformed values, lane status, a
PLC restart, heartbeat loss both ways, a full mailbox.

Each test plays one rule (:mod:`controller.conformance.rules`) against the adapter that the
integrator's fixture ``cargogate_sorter`` builds (:class:`~controller.conformance.harness.
SorterKit`). The kit reads the adapter's telegrams and acknowledges each at once, as a
controller whose journal is instant would. Alarm sources are those of docs/plc-interface.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from controller.alarms import Alarms
from controller.conformance.harness import (
    EXCEPTION_LANE,
    INSPECTION_LANE,
    RELEASE_LANE,
    HeartbeatControls,
    MailboxControls,
    RestartControls,
    Settles,
    SorterContext,
    SorterHarness,
    SorterKit,
    TelegramCounts,
)
from controller.conformance.rules import (
    SORTER_BURST,
    SORTER_CONTROLLER_HEARTBEAT,
    SORTER_DUPLICATES,
    SORTER_LANE_STATUS,
    SORTER_MAILBOX,
    SORTER_MALFORMED,
    SORTER_PLC_HEARTBEAT,
    SORTER_RESTART,
    SORTER_SCAN_TIME,
    Rule,
    covers,
)
from controller.conformance.running import missing, play, wait_for
from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    LaneStatus,
    Telegram,
)
from controller.core.link import LinkState
from controller.core.reasons import Reason

BURST = 1000
MAILBOX_SLOTS = 8


class Line:
    """One opened harness, with the kit's telegram reader and the alarms the adapter raised."""

    def __init__(self, harness: SorterHarness, alarms: Alarms) -> None:
        self.harness = harness
        self.sorter = harness.sorter
        self.plant = harness.plant
        self.alarms = alarms
        self.received: list[Telegram] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.sorter.line

    async def receive(self, count: int) -> list[Telegram]:
        """Wait until ``count`` telegrams in all have arrived; the first ``count``."""
        await wait_for(lambda: len(self.received) >= count, f"{count} telegrams")
        return self.received[:count]

    async def settle(self) -> None:
        """Wait until the link is up and both heartbeats run (start-up alarms are over)."""
        if isinstance(self.harness, Settles):
            await wait_for(self.harness.settled, "the link to settle (up, heartbeats, no flag)")

    def counts(self) -> dict[str, int] | None:
        if isinstance(self.harness, TelegramCounts):
            return dict(self.harness.telegram_counts())
        return None

    def records(self, source: str, since: int = 0) -> list[bool]:
        """The alarm records of ``source`` since history entry ``since``: True raised."""
        return [active for _, s, _, active in self.alarms.history[since:] if s == source]

    async def _read(self) -> None:
        async for telegram in self.sorter.telegrams():
            self.received.append(telegram)
            self.sorter.acknowledge(telegram)

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def opened(kit: SorterKit, mailbox_slots: int = 64) -> AsyncIterator[Line]:
    alarms = Alarms(None, time.monotonic)
    async with kit.open(SorterContext(alarms, mailbox_slots)) as harness:
        line = Line(harness, alarms)
        line.start()
        try:
            yield line
        finally:
            await line.stop()


def _play(
    kit: SorterKit, rule: Rule, body: Callable[[Line], Awaitable[None]], mailbox_slots: int = 64
) -> None:
    async def scenario() -> None:
        async with opened(kit, mailbox_slots) as line:
            await body(line)

    play(kit, rule, scenario)


# --- the rules -------------------------------------------------------------------------------


@covers(SORTER_BURST)
def test_burst_keeps_order_and_loses_nothing(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_BURST, _burst)


async def _burst(line: Line) -> None:
    plant, now = line.plant, line.plant.now()
    sent = []
    for i in range(BURST // 2):
        sent.append(plant.request(10_000 + i, f"HAWB{i:06d}", now))
        sent.append(plant.confirm(10_000 + i, RELEASE_LANE, DivertStatus.DIVERTED))
    received = await line.receive(BURST)
    assert [t.seq for t in received] == sent, "telegrams out of PLC order, lost or doubled"
    assert [type(t) for t in received] == [DestinationRequest, DivertConfirmation] * (BURST // 2)
    assert [t.tracking_id for t in received] == [10_000 + i // 2 for i in range(BURST)]
    requests = [t for t in received if isinstance(t, DestinationRequest)]
    assert [t.barcode for t in requests] == [f"HAWB{i:06d}" for i in range(BURST // 2)]
    assert [t.fault for t in requests if t.fault] == [], "well-formed requests with a fault"
    for request in requests:
        reply = DestinationReply(
            request.line, request.tracking_id, INSPECTION_LANE, Reason.RISK_RED
        )
        await line.sorter.reply(reply)
    await wait_for(lambda: len(plant.replies) >= BURST // 2, "every reply at the PLC")
    await asyncio.sleep(0.3)  # a doubled reply would arrive within a few cycles
    assert Counter(r.tracking_id for r in plant.replies) == Counter(
        t.tracking_id for t in requests
    ), "a reply lost or doubled on its way to the PLC"
    assert {(r.lane, r.reason) for r in plant.replies} == {(INSPECTION_LANE, Reason.RISK_RED)}
    assert len(line.received) == BURST, "a telegram delivered twice"


@covers(SORTER_SCAN_TIME)
def test_request_scan_time_is_never_later_than_reality(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_SCAN_TIME, _scan_time)


async def _scan_time(line: Line) -> None:
    await line.settle()
    for i in range(20):
        scanned = line.plant.now()
        line.plant.request(500 + i, "SCAN", scanned)
        (telegram,) = (await line.receive(i + 1))[i:]
        assert isinstance(telegram, DestinationRequest)
        assert telegram.scan_time <= scanned + 1e-9, (
            f"scan time {telegram.scan_time} is later than the scan at {scanned}"
        )
        assert scanned - telegram.scan_time < 0.5, (
            f"scan time {telegram.scan_time} is {scanned - telegram.scan_time:.3f} s early"
        )
        await asyncio.sleep(0.01)


@covers(SORTER_DUPLICATES)
def test_duplicates_are_ignored(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_DUPLICATES, _duplicates)


async def _duplicates(line: Line) -> None:
    plant, now = line.plant, line.plant.now()
    first = plant.request(1, "A", now)
    second = plant.confirm(1, RELEASE_LANE, DivertStatus.DIVERTED)
    await line.receive(2)
    for seq in (first, second, second):
        plant.resend(seq)
    third = plant.request(2, "B", now)
    received = await line.receive(3)
    assert [(t.seq, t.tracking_id) for t in received] == [(first, 1), (second, 1), (third, 2)]
    counts = line.counts()
    if counts is not None:
        assert (counts["duplicates"], counts["faults"]) == (3, 0), counts
    await asyncio.sleep(0.2)
    assert len(line.received) == 3, "a repeated telegram was delivered again"


@covers(SORTER_MALFORMED)
def test_malformed_values_are_reported_and_the_adapter_keeps_running(
    cargogate_sorter: SorterKit,
) -> None:
    _play(cargogate_sorter, SORTER_MALFORMED, _malformed)


async def _malformed(line: Line) -> None:
    plant, now = line.plant, line.plant.now()
    good = plant.request(100, "GOOD1", now)
    plant.send_raw_request(None, 101, b"CG\xc3\xa9001")  # not ASCII
    plant.send_raw_confirmation(None, 102, 0, DivertStatus.DIVERTED)  # lane 0
    before = plant.send_raw_confirmation(None, 103, RELEASE_LANE, 77)  # no such status
    plant.send_raw_request(good, 104, b"OTHER")  # its sequence number goes backwards
    plant.request(105, "GOOD2", now)
    received = await line.receive(6)

    first, non_ascii, lane_zero, bad_status, backwards, last = received
    assert isinstance(first, DestinationRequest)
    assert first.fault == ""
    assert isinstance(non_ascii, DestinationRequest)
    assert non_ascii.tracking_id == 101
    assert "0xC3" in non_ascii.fault, (
        f"the fault should name the offending byte: {non_ascii.fault!r}"
    )
    for telegram, tracking_id in ((lane_zero, 102), (bad_status, 103)):
        assert isinstance(telegram, DivertConfirmation)
        assert (telegram.tracking_id, telegram.status) == (tracking_id, DivertStatus.LOST_TRACKING)
    assert isinstance(backwards, DestinationRequest)
    assert backwards.tracking_id == 104
    for seq in (good, before):
        assert re.search(rf"\b{seq}\b", backwards.fault), (
            f"the fault should name both sequence numbers ({good} after {before}): "
            f"{backwards.fault!r}"
        )
    assert isinstance(last, DestinationRequest)
    assert (last.tracking_id, last.fault) == (105, "")
    counts = line.counts()
    if counts is not None:
        assert counts["faults"] == 4, counts
    assert line.records(f"{line.id}/malformed-telegram") == [True, False], (
        "malformed-telegram must be raised once and cleared once"
    )


@covers(SORTER_LANE_STATUS)
def test_lane_status_reaches_the_controller(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_LANE_STATUS, _lane_status)


async def _lane_status(line: Line) -> None:
    plant, sorter = line.plant, line.sorter
    plant.set_lane_status(INSPECTION_LANE, LaneStatus.FULL)
    plant.set_lane_status(EXCEPTION_LANE, LaneStatus.BLOCKED)
    await wait_for(lambda: sorter.lane_status().get(INSPECTION_LANE) is LaneStatus.FULL, "full")
    await wait_for(
        lambda: sorter.lane_status().get(EXCEPTION_LANE) is LaneStatus.BLOCKED, "blocked"
    )
    plant.set_lane_status(INSPECTION_LANE, LaneStatus.AVAILABLE)
    await wait_for(
        lambda: (
            sorter.lane_status().get(INSPECTION_LANE, LaneStatus.AVAILABLE) is LaneStatus.AVAILABLE
        ),
        "the lane available again",
    )


@covers(SORTER_RESTART)
def test_server_restarted_mid_burst_loses_nothing(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_RESTART, _restart)


async def _restart(line: Line) -> None:
    link = line.harness
    if not isinstance(link, RestartControls):
        raise missing(link, RestartControls, SORTER_RESTART)
    await line.settle()
    plant = line.plant
    answered: set[int] = set()

    async def respond() -> None:
        while True:
            for t in list(line.received):
                if isinstance(t, DestinationRequest) and t.tracking_id not in answered:
                    answered.add(t.tracking_id)
                    reply = DestinationReply(
                        t.line, t.tracking_id, RELEASE_LANE, Reason.LOW_RISK_CLEAN_XRAY
                    )
                    await line.sorter.reply(reply)
            await asyncio.sleep(0.005)

    async def produce() -> list[int]:
        sent = []
        for i in range(BURST):
            sent.append(plant.request(1 + i, f"R{i}", plant.now()))
            if i % 20 == 19:
                await asyncio.sleep(0.01)
        return sent

    responder = asyncio.create_task(respond())
    producer = asyncio.create_task(produce())
    try:
        await wait_for(lambda: len(line.received) >= 300, "300 telegrams before the restart")
        connects = link.connects
        await link.restart_plc_server()
        sent = await producer
        received = await line.receive(BURST)
        await wait_for(lambda: len(plant.replies) >= BURST, "every reply after the restart")
        await asyncio.sleep(0.3)
    finally:
        responder.cancel()
        producer.cancel()
        await asyncio.gather(responder, producer, return_exceptions=True)
    assert link.connects > connects, "the link was never lost: the restart did not happen"
    assert [t.seq for t in received] == sent, "telegrams out of order or lost over the restart"
    assert len(line.received) == BURST, "a telegram delivered twice over the restart"
    assert Counter(r.tracking_id for r in plant.replies) == Counter(range(1, BURST + 1))


@covers(SORTER_CONTROLLER_HEARTBEAT)
def test_controller_heartbeat_loss_puts_the_plc_in_its_safe_state(
    cargogate_sorter: SorterKit,
) -> None:
    _play(cargogate_sorter, SORTER_CONTROLLER_HEARTBEAT, _controller_heartbeat)


async def _controller_heartbeat(line: Line) -> None:
    beats = line.harness
    if not isinstance(beats, HeartbeatControls):
        raise missing(beats, HeartbeatControls, SORTER_CONTROLLER_HEARTBEAT)
    await line.settle()
    plant, source = line.plant, f"{line.id}/plc-safe-state"
    before = len(line.alarms.history)
    beats.suspend_controller_heartbeat(True)
    await wait_for(beats.plc_safe_state, "the PLC's safe state")
    await wait_for(lambda: source in line.alarms.active, "the safe-state alarm")

    plant.request(7, "SAFE", plant.now())
    (request,) = await line.receive(1)
    await line.sorter.reply(
        DestinationReply(request.line, 7, RELEASE_LANE, Reason.LOW_RISK_CLEAN_XRAY)
    )
    await wait_for(lambda: len(plant.replies) == 1, "the reply at the PLC")
    assert beats.divert(7) == (EXCEPTION_LANE, DivertStatus.DEFAULTED), (
        "in its safe state the PLC must send every parcel to its default lane"
    )

    beats.suspend_controller_heartbeat(False)
    await wait_for(lambda: not beats.plc_safe_state(), "the PLC leaving its safe state")
    await wait_for(lambda: source not in line.alarms.active, "the recovery record")
    plant.request(8, "BACK", plant.now())
    (request,) = (await line.receive(2))[1:]
    await line.sorter.reply(
        DestinationReply(request.line, 8, RELEASE_LANE, Reason.LOW_RISK_CLEAN_XRAY)
    )
    await wait_for(lambda: len(plant.replies) == 2, "the second reply at the PLC")
    assert beats.divert(8) == (RELEASE_LANE, DivertStatus.DIVERTED)
    assert line.records(source, before) == [True, False], "one alarm, one recovery"


@covers(SORTER_PLC_HEARTBEAT)
def test_plc_heartbeat_loss_raises_one_alarm_and_one_recovery(
    cargogate_sorter: SorterKit,
) -> None:
    _play(cargogate_sorter, SORTER_PLC_HEARTBEAT, _plc_heartbeat)


async def _plc_heartbeat(line: Line) -> None:
    beats = line.harness
    if not isinstance(beats, HeartbeatControls):
        raise missing(beats, HeartbeatControls, SORTER_PLC_HEARTBEAT)
    await line.settle()
    source, timeout_s = f"{line.id}/plc-heartbeat", beats.heartbeat_timeout_s
    before = len(line.alarms.history)
    healthy = line.sorter.health()
    assert healthy.link == LinkState.UP, healthy
    assert healthy.line_state in ("execute", ""), f"a running line in state {healthy.line_state!r}"
    assert healthy.heartbeat_age_s is not None, "health() must give the PLC heartbeat's age"
    assert healthy.heartbeat_age_s < timeout_s, healthy
    beats.freeze_plc_heartbeat(True)
    await wait_for(lambda: source in line.alarms.active, "the PLC heartbeat alarm")
    stalled = line.sorter.health()
    assert stalled.link == LinkState.DEGRADED, "the floor must see the stall, not just the log"
    assert stalled.heartbeat_age_s is not None
    assert stalled.heartbeat_age_s > timeout_s, stalled
    await asyncio.sleep(0.5)  # still stalled: no second record
    beats.freeze_plc_heartbeat(False)
    await wait_for(lambda: source not in line.alarms.active, "the recovery record")
    assert line.records(source, before) == [True, False], "one alarm, one recovery"


@covers(SORTER_MAILBOX)
def test_mailbox_full_holds_telegrams_in_order(cargogate_sorter: SorterKit) -> None:
    _play(cargogate_sorter, SORTER_MAILBOX, _mailbox, mailbox_slots=MAILBOX_SLOTS)


async def _mailbox(line: Line) -> None:
    mailbox = line.harness
    if not isinstance(mailbox, MailboxControls):
        raise missing(mailbox, MailboxControls, SORTER_MAILBOX)
    await line.settle()
    plant, source = line.plant, f"{line.id}/plc-mailbox-full"
    await mailbox.stop_plc_server()  # the adapter cannot take telegrams: the mailbox fills
    for i in range(50):
        plant.request(i + 1, f"M{i}", plant.now())
    await wait_for(mailbox.mailbox_full, "the PLC's mailbox full")
    assert mailbox.backlog() == 50 - MAILBOX_SLOTS
    await mailbox.start_plc_server()
    received = await line.receive(50)
    assert [t.tracking_id for t in received] == list(range(1, 51))
    await wait_for(lambda: not mailbox.mailbox_full(), "the mailbox draining")
    await wait_for(lambda: source not in line.alarms.active, "the mailbox alarm clearing")
    assert line.records(source) == [True, False], "mailbox-full raised once, cleared once"

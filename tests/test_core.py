"""The controller core driven in simulated time through its ports."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from controller.app.site import SiteConfig
from controller.core.clock import ManualClock
from controller.core.commands import PlaceHold, RecordInspection, RecordVerdict
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    EntryKind,
    InspectionOutcome,
    JournalEntry,
    LaneStatus,
    ReviewOutcome,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.lifecycle import ParcelState
from controller.core.reasons import Reason
from controller.lines import Controller, LineController
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.layout import TelegramKind
from plc_adapters.telegrams import RawTelegram
from tests.support import CLEAN, DictRisk, MemoryJournal, ScriptedReview, ScriptedXray, site

WINDOW = 12 / 2.0 - 0.5  # scan_to_divert_m / speed_m_s - plc_margin_s in tests.support.site()


@dataclass
class Plant:
    clock: ManualClock
    controller: Controller
    sorters: dict[str, InProcessSorter]
    journal: MemoryJournal
    risk: DictRisk
    xray: ScriptedXray
    review: ScriptedReview
    replies: list[tuple[float, DestinationReply]] = field(default_factory=list)

    @property
    def sorter(self) -> InProcessSorter:
        return self.sorters["L1"]

    def scan(self, tracking_id: int, hawb: str, line: str = "L1") -> None:
        self.sorters[line].request(tracking_id, hawb, self.clock.now())

    def reply_for(self, tracking_id: int) -> DestinationReply:
        matches = [r for _, r in self.replies if r.tracking_id == tracking_id]
        assert len(matches) == 1, f"expected one reply for {tracking_id}, got {matches}"
        return matches[0]

    def green(self, hawb: str, declared: str = "books") -> None:
        self.risk.results[hawb] = RiskResult(hawb, RiskChannel.GREEN, 0.05, declared)


@asynccontextmanager
async def plant(config: SiteConfig | None = None, with_review: bool = True) -> AsyncIterator[Plant]:
    config = config or site()
    clock = ManualClock(start=1000.0)
    replies: list[tuple[float, DestinationReply]] = []
    sorters = {
        line.id: InProcessSorter(line.id, on_reply=lambda r: replies.append((clock.now(), r)))
        for line in config.lines
    }
    journal, risk = MemoryJournal(), DictRisk()
    xray, review = ScriptedXray(clock), ScriptedReview(clock)
    controller = Controller(
        config, sorters, risk, xray, journal, clock, review=review if with_review else None
    )
    p = Plant(clock, controller, sorters, journal, risk, xray, review, replies)
    task = asyncio.create_task(controller.run())
    try:
        yield p
    finally:
        for sorter in sorters.values():
            sorter.close()
        await p.clock.advance(60)
        await asyncio.wait_for(task, 5)


async def test_clean_green_parcel_is_released_before_its_deadline() -> None:
    async with plant() as p:
        p.green("H1")
        p.scan(7, "H1")
        scanned_at = p.clock.now()
        await p.clock.advance(WINDOW)
        reply = p.reply_for(7)
        assert (reply.lane, reply.reason) == (1, Reason.LOW_RISK_CLEAN_XRAY)
        replied_at = p.replies[0][0]
        assert replied_at <= scanned_at + WINDOW
        # the decision was durable before the reply reached the sorter
        kinds = [e.kind for e in p.journal.for_parcel(7)]
        assert kinds == [EntryKind.TRANSITION, EntryKind.DECISION]
        decision = p.journal.for_parcel(7)[1]
        assert decision.reasons == (Reason.LOW_RISK_CLEAN_XRAY,)
        assert decision.policy_version == p.controller.policy.version
        assert decision.data["risk"] == {"channel": "GREEN", "score": 0.05, "declared": "books"}

        p.sorter.confirm(7, 1, DivertStatus.DIVERTED)
        await p.clock.advance(1)
        assert p.controller.lines["L1"].tracker.on_belt == {}
        snap = p.controller.kpis.snapshot(p.clock.now())
        assert snap["buckets"] == {"<=150s": 1, "150-300s": 0, ">300s": 0}
        assert snap["share_within_target"] == 1.0
        assert snap["by_state"] == {"released": 1}
        assert p.journal.for_parcel(7)[-1].state_to == ParcelState.RELEASED.value


async def test_risk_and_xray_are_gathered_concurrently() -> None:
    async with plant() as p:
        p.green("H1")
        p.xray.delay_s = 0.2
        p.scan(1, "H1")
        await p.clock.advance(0.2)
        assert p.reply_for(1).lane == 1  # answered at the X-ray's latency, not risk + X-ray


@pytest.mark.parametrize(
    ("setup", "lane", "reasons"),
    [
        ("unknown hawb", 2, (Reason.RISK_MISSING,)),
        ("late x-ray", 2, (Reason.XRAY_LATE,)),
        ("x-ray raises", 2, (Reason.XRAY_FAILED,)),
        ("no-read", 9, (Reason.NO_READ,)),
        ("held", 2, (Reason.OFFICER_HOLD,)),
        ("firearm", 2, (Reason.XRAY_ALARM,)),
    ],
)
async def test_fail_secure_paths_answer_in_time(
    setup: str, lane: int, reasons: tuple[Reason, ...]
) -> None:
    async with plant() as p:
        hawb = "H1"
        if setup != "unknown hawb":
            p.green(hawb)
        if setup == "late x-ray":
            p.xray.delay_s = WINDOW * 3
        if setup == "x-ray raises":

            async def broken(line: str, tracking_id: int, hawb: str) -> XrayResult:
                raise RuntimeError("session died")

            p.xray.analyse = broken  # type: ignore[method-assign]
        if setup == "held":
            p.controller.holds.hold(hawb, "tip-off")
        if setup == "firearm":
            p.xray.results[hawb] = XrayResult(XrayStatus.OK, {**CLEAN, "firearm": 0.97}, "m")
        p.scan(3, "" if setup == "no-read" else hawb)
        start = p.clock.now()
        await p.clock.advance(WINDOW)
        reply = p.reply_for(3)
        assert reply.lane == lane
        assert p.replies[0][0] <= start + WINDOW
        decision = next(e for e in p.journal.for_parcel(3) if e.kind is EntryKind.DECISION)
        assert decision.reasons == reasons
        assert reply.reason == reasons[0]


async def test_officer_review_clears_a_yellow_parcel_while_time_remains() -> None:
    async with plant() as p:
        p.risk.results["Y1"] = RiskResult("Y1", RiskChannel.YELLOW, 0.1, "books")
        p.review.outcomes = {"Y1": ReviewOutcome.CLEAR}
        p.review.delay_s = 2.0
        p.scan(1, "Y1")
        await p.clock.advance(WINDOW)
        assert len(p.review.requests) == 1
        assert p.reply_for(1).lane == 1
        assert p.reply_for(1).reason == Reason.OFFICER_CLEARED
        assert p.replies[0][0] == pytest.approx(1000.0 + 0.2 + 2.0)


async def test_slow_officer_review_gives_way_to_the_deadline() -> None:
    async with plant() as p:
        p.risk.results["Y1"] = RiskResult("Y1", RiskChannel.YELLOW, 0.1, "books")
        p.review.outcomes = {"Y1": ReviewOutcome.CLEAR}
        p.review.delay_s = 30.0
        p.scan(1, "Y1")
        await p.clock.advance(WINDOW)
        reply = p.reply_for(1)
        assert (reply.lane, reply.reason) == (2, Reason.RISK_YELLOW_UNREVIEWED)
        assert p.replies[0][0] <= 1000.0 + WINDOW


async def test_no_review_is_asked_for_parcels_a_clear_would_not_release() -> None:
    async with plant() as p:
        p.risk.results["R1"] = RiskResult("R1", RiskChannel.RED, 0.9, "books")
        p.green("G1")
        p.scan(1, "R1")
        p.scan(2, "G1")
        await p.clock.advance(WINDOW)
        assert p.review.requests == []


async def test_journal_failure_means_no_reply_and_the_plc_default_stands() -> None:
    async with plant() as p:
        p.green("H1")
        p.journal.fail = OSError("disk full")
        p.scan(5, "H1")
        await p.clock.advance(WINDOW + 1)
        assert p.replies == []
        parcel = p.controller.lines["L1"].tracker.on_belt[5]
        assert parcel.state is ParcelState.DEFAULTED
        assert p.controller.kpis.deadline_misses == 1
        assert p.journal.for_parcel(5) == []
        assert p.controller.lines["L1"].view().journal_backlog == 3  # kept, not dropped
        p.journal.fail = None
        p.sorter.confirm(5, 9, DivertStatus.DEFAULTED)
        await p.clock.advance(3)  # the next retry (backoff at most 2 s) writes the backlog
        kinds = [e.kind for e in p.journal.for_parcel(5)]
        assert kinds == [
            EntryKind.TRANSITION,
            EntryKind.DECISION,  # written once the journal took writes again, in order
            EntryKind.DEADLINE_MISS,
            EntryKind.CONFIRMATION,
        ]
        last = p.journal.for_parcel(5)[-1]
        assert (last.state_from, last.state_to) == ("defaulted", "exception")
        assert last.reasons == (Reason.PLC_DEFAULTED,)
        assert p.controller.lines["L1"].view().journal_backlog == 0


async def test_confirmation_before_reply_records_the_miss() -> None:
    async with plant() as p:
        p.green("H1")
        p.xray.delay_s = 100
        p.scan(5, "H1")
        await p.clock.advance(1)
        p.sorter.confirm(5, 9, DivertStatus.DEFAULTED)
        await p.clock.advance(WINDOW)
        assert p.replies == []
        kinds = [(e.kind, e.state_to) for e in p.journal.for_parcel(5)]
        assert (EntryKind.DEADLINE_MISS, "defaulted") in kinds
        assert kinds[-1] == (EntryKind.CONFIRMATION, "exception")


async def test_missed_divert_recirculates_and_the_lap_limit_sends_to_exception() -> None:
    async with plant() as p:  # lap_limit is 2 in tests.support.site()
        p.green("H1")
        for lap in range(3):
            p.scan(8, "H1")
            await p.clock.advance(WINDOW)
            if lap < 2:
                p.sorter.confirm(8, 1, DivertStatus.MISSED)
                await p.clock.advance(60)
        lanes = [(r.lane, r.reason) for _, r in p.replies]
        assert lanes == [
            (1, Reason.LOW_RISK_CLEAN_XRAY),
            (1, Reason.LOW_RISK_CLEAN_XRAY),
            (9, Reason.LAP_LIMIT),
        ]
        assert p.controller.kpis.recirculations == 2
        p.sorter.confirm(8, 9, DivertStatus.DIVERTED)
        await p.clock.advance(1)
        states = [e.state_to for e in p.journal.for_parcel(8) if e.state_to]
        assert states == [
            "scanned", "decided", "recirculating",
            "scanned", "decided", "recirculating",
            "scanned", "decided", "exception",
        ]  # fmt: skip


async def test_a_no_read_read_on_its_next_lap_is_decided_and_inspected_by_its_hawb() -> None:
    """A parcel the scanner missed on one lap and read on the next takes its HAWB: its risk
    result decides it and an officer closes it by that HAWB. A parcel read on one lap and
    missed on the next keeps its HAWB (the PLC tracks it by id). Before, the first kept no
    HAWB: its decision saw no risk result and the officer's inspection was refused, leaving
    it open for good; the second went to exception as a no-read."""
    async with plant() as p:
        for hawb in ("R1", "R2"):
            p.risk.results[hawb] = RiskResult(hawb, RiskChannel.RED, 0.9, "books")
        p.scan(5, "")
        p.scan(6, "R2")
        await p.clock.advance(WINDOW)
        p.sorter.confirm(5, 9, DivertStatus.MISSED)
        p.sorter.confirm(6, 2, DivertStatus.LANE_FULL)
        await p.clock.advance(60)
        p.scan(5, "R1")
        p.scan(6, "")  # not read this lap: still R2
        await p.clock.advance(WINDOW)
        replies = [(r.tracking_id, r.lane, r.reason) for _, r in p.replies]
        assert replies == [
            (5, 9, Reason.NO_READ),
            (6, 2, Reason.RISK_RED),
            (5, 2, Reason.RISK_RED),
            (6, 3, Reason.RISK_RED),
        ]
        p.sorter.confirm(5, 2, DivertStatus.DIVERTED)
        p.sorter.confirm(6, 3, DivertStatus.DIVERTED)
        await p.clock.advance(1)
        for hawb in ("R1", "R2"):
            done = RecordInspection(user="officer1", hawb=hawb, outcome=InspectionOutcome.CLEARED)
            assert (await p.controller.execute(done)).accepted
        await p.clock.advance(1)
        for tid in (5, 6):
            assert p.journal.for_parcel(tid)[-1].state_to == "cleared_after_inspection"
        scans = [
            e.data.get("read_on_lap") for e in p.journal.for_parcel(5) if e.state_to == "scanned"
        ]
        assert scans == [None, 1]
        assert p.controller.open_parcels() == 0


async def test_a_decision_settled_at_once_is_journalled_before_a_confirmation_behind_it() -> None:
    """A controller that fell behind reads a no-read's request and the PLC's confirmation in
    one turn: the journal keeps them in the order they happened (scan, decision, miss,
    exception), so recovery does not find the parcel still open. Before, the decision's rows
    were queued from a task and landed after the confirmation's."""
    async with plant() as p:
        p.scan(4, "")
        p.sorter.confirm(4, 9, DivertStatus.DEFAULTED)
        await p.clock.advance(1)
        rows = [(e.kind, e.state_to) for e in p.journal.for_parcel(4)]
        assert rows == [
            (EntryKind.TRANSITION, "scanned"),
            (EntryKind.DECISION, "decided"),
            (EntryKind.DEADLINE_MISS, "defaulted"),
            (EntryKind.CONFIRMATION, "exception"),
        ]


async def test_lane_full_recirculates_and_full_lanes_are_avoided() -> None:
    async with plant() as p:
        p.risk.results["R1"] = RiskResult("R1", RiskChannel.RED, 0.9, "books")
        p.sorter.set_lane_status(2, LaneStatus.FULL)
        p.scan(1, "R1")
        await p.clock.advance(WINDOW)
        assert p.reply_for(1).lane == 3  # second inspection lane
        p.sorter.set_lane_status(3, LaneStatus.BLOCKED)
        p.scan(2, "R1")
        await p.clock.advance(WINDOW)
        reply = p.reply_for(2)
        assert (reply.lane, reply.reason) == (9, Reason.LANE_UNAVAILABLE)
        p.sorter.confirm(1, 3, DivertStatus.LANE_FULL)
        await p.clock.advance(1)
        assert p.controller.lines["L1"].tracker.on_belt[1].state is ParcelState.RECIRCULATING


async def test_lost_tracking_ends_in_exception() -> None:
    async with plant() as p:
        p.green("H1")
        p.scan(4, "H1")
        await p.clock.advance(WINDOW)
        p.sorter.confirm(4, 0, DivertStatus.LOST_TRACKING)
        await p.clock.advance(1)
        assert p.controller.kpis.by_state["exception"] == 1
        assert p.journal.for_parcel(4)[-1].reasons == (Reason.LOST_TRACKING,)


async def test_inspection_result_closes_the_parcel_and_stops_the_clock() -> None:
    async with plant() as p:
        p.risk.results["R1"] = RiskResult("R1", RiskChannel.RED, 0.9, "books")
        p.scan(1, "R1")
        await p.clock.advance(WINDOW)
        p.sorter.confirm(1, 2, DivertStatus.DIVERTED)
        await p.clock.advance(200)
        cleared = RecordInspection(user="officer1", hawb="R1", outcome=InspectionOutcome.CLEARED)
        assert (await p.controller.execute(cleared)).accepted
        assert not (await p.controller.execute(cleared)).accepted
        await p.clock.advance(1)
        snap = p.controller.kpis.snapshot(p.clock.now())
        assert snap["buckets"]["150-300s"] == 1
        assert snap["share_within_target"] == 0.0
        assert p.journal.for_parcel(1)[-1].state_to == "cleared_after_inspection"


async def test_a_request_again_before_the_confirmation_closes_the_old_parcel_as_lost() -> None:
    """A PLC restart reuses tracking ids (or a parcel comes round unconfirmed): the open parcel
    closes as lost tracking, no illegal transition, and the new request is served normally."""
    async with plant() as p:
        p.green("H1")
        p.green("H2")
        p.scan(6, "H1")
        await p.clock.advance(WINDOW)
        p.scan(6, "H2")  # the PLC restarted and gave tracking id 6 to another parcel
        await p.clock.advance(WINDOW)
        entries = p.journal.for_parcel(6)
        assert not [e for e in entries if e.kind is EntryKind.ILLEGAL_TRANSITION]
        assert p.controller.kpis.illegal_transitions == 0
        closed = next(e for e in entries if e.state_to == "exception")
        assert (closed.hawb, closed.state_from) == ("H1", "decided")
        assert closed.reasons == (Reason.LOST_TRACKING, Reason.TRACKING_ID_REUSED)
        reopened = entries[entries.index(closed) + 1]
        assert (reopened.hawb, reopened.state_from, reopened.state_to) == ("H2", "", "scanned")
        assert [r.lane for _, r in p.replies] == [1, 1]  # the new parcel got its own decision
        assert p.controller.lines["L1"].tracker.on_belt[6].hawb == "H2"


async def test_unknown_confirmation_raises_an_alarm_not_a_crash() -> None:
    async with plant() as p:
        p.sorter.confirm(99, 1, DivertStatus.DIVERTED)
        await p.clock.advance(1)
        # kept as it came, moving no parcel; its alarm goes to the board (none here: the log)
        entries = [(e.kind, e.tracking_id, e.state_to) for e in p.journal.entries]
        assert entries == [(EntryKind.CONFIRMATION, 99, "")]
        p.green("H1")
        p.scan(1, "H1")
        await p.clock.advance(WINDOW)
        assert p.reply_for(1).lane == 1  # still serving


async def test_several_lines_run_in_one_process_with_independent_tracking() -> None:
    two_lines = site(
        lines=[
            {
                "id": line,
                "lanes": [
                    {"id": 1, "kind": "release"},
                    {"id": 2, "kind": "inspection"},
                    {"id": 9, "kind": "exception"},
                ],
            }
            for line in ("L1", "L2")
        ]
    )
    async with plant(two_lines) as p:
        p.green("A")
        p.scan(1, "A", line="L1")
        p.scan(1, "B", line="L2")  # same tracking id, other line, unknown hawb
        await p.clock.advance(10)
        by_line = {r.line: r.lane for _, r in p.replies}
        assert by_line == {"L1": 1, "L2": 2}


async def test_missing_sorter_for_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="L1"):
        Controller(
            site(), {}, DictRisk(), ScriptedXray(ManualClock()), MemoryJournal(), ManualClock()
        )


async def test_malformed_telegram_goes_to_exception_with_its_fault_recorded() -> None:
    async with plant() as p:
        p.green("CG1")
        kind = TelegramKind.DESTINATION_REQUEST
        raw = RawTelegram(p.sorter.next_seq(), kind, 11, barcode=b"CG\xff1")
        p.sorter.inject(raw, scan_time=p.clock.now())  # as a wire adapter would deliver it
        await p.clock.advance(WINDOW)
        reply = p.reply_for(11)
        assert (reply.lane, reply.reason) == (9, Reason.MALFORMED_TELEGRAM)
        decision = next(e for e in p.journal.for_parcel(11) if e.kind is EntryKind.DECISION)
        assert "0xFF" in str(decision.data["fault"])
        assert p.xray.calls == 0


async def test_a_malformed_barcode_never_names_a_parcel_read_on_no_lap_yet() -> None:
    """A no-read parcel whose next lap's barcode is malformed keeps no HAWB, so a clean read
    on the lap after is the same parcel (not a reused tracking id closed as lost)."""
    async with plant() as p:
        p.scan(12, "")
        await p.clock.advance(WINDOW)
        p.sorter.confirm(12, 9, DivertStatus.MISSED)
        await p.clock.advance(60)
        raw = RawTelegram(
            p.sorter.next_seq(), TelegramKind.DESTINATION_REQUEST, 12, barcode=b"CG\xff1"
        )
        p.sorter.inject(raw, scan_time=p.clock.now())
        await p.clock.advance(WINDOW)
        assert p.controller.lines["L1"].tracker.on_belt[12].hawb == ""
        p.sorter.confirm(12, 9, DivertStatus.MISSED)
        await p.clock.advance(60)
        p.scan(12, "CG1")
        await p.clock.advance(WINDOW)
        reasons = [r.reason for _, r in p.replies]
        assert reasons == [Reason.NO_READ, Reason.MALFORMED_TELEGRAM, Reason.LAP_LIMIT]
        assert all(Reason.TRACKING_ID_REUSED not in e.reasons for e in p.journal.for_parcel(12))


async def test_parcels_are_spread_over_lanes_by_spare_capacity() -> None:
    config = site(
        lines=[
            {
                "id": "L1",
                "lanes": [
                    {"id": 1, "kind": "release"},
                    {"id": 2, "kind": "inspection", "capacity_per_h": 600},
                    {"id": 3, "kind": "inspection", "capacity_per_h": 1200},
                    {"id": 9, "kind": "exception"},
                ],
            }
        ]
    )
    async with plant(config) as p:
        for i in range(30):
            p.risk.results[f"R{i}"] = RiskResult(f"R{i}", RiskChannel.RED, 0.9, "books")
            p.scan(i + 1, f"R{i}")
            await p.clock.advance(1)
        lanes = Counter(r.lane for _, r in p.replies)
        assert lanes == {2: 10, 3: 20}


async def test_a_shutdown_does_not_wait_forever_for_a_stuck_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LineController, "DRAIN_LIMIT_S", 0.2)
    config = site()
    clock = ManualClock(start=0.0)  # never advanced: the decision waits on its deadline
    sorter = InProcessSorter("L1")
    xray = ScriptedXray(clock, delay_s=100)
    controller = Controller(config, {"L1": sorter}, DictRisk(), xray, MemoryJournal(), clock)
    serving = asyncio.create_task(controller.run())
    sorter.request(1, "H1", clock.now())
    await asyncio.sleep(0.05)
    sorter.close()
    await asyncio.wait_for(serving, 5)  # returns after the drain limit, not never
    assert sorter.replies == []


class GatedJournal(MemoryJournal):
    """Holds every write that carries an operator command until ``gate`` is set, so a test
    can let the plant move on while a command is being journalled."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def write(self, entries: list[JournalEntry]) -> None:
        if any(e.kind is EntryKind.COMMAND for e in entries):
            await self.gate.wait()
        await super().write(entries)


async def test_a_verdict_whose_cutoff_passes_while_it_is_journalled_is_refused() -> None:
    async with plant() as p:
        journal = GatedJournal()
        for line in p.controller.lines.values():
            line.journal = journal
        p.controller.journal = journal
        p.review.delay_s = 60.0  # the officer on screen never answers in time
        p.risk.results["Y1"] = RiskResult("Y1", RiskChannel.YELLOW, 0.1, "books")
        p.scan(1, "Y1")
        await p.clock.advance(0.5)
        assert p.review.requests, "the parcel was not sent for review"
        verdict = RecordVerdict(user="lee", line="L1", tracking_id=1, outcome=ReviewOutcome.CLEAR)
        answer = asyncio.create_task(p.controller.execute(verdict))
        await p.clock.advance(WINDOW)  # the cutoff passes while the verdict waits on the journal
        journal.gate.set()
        result = await answer
        assert not result.accepted
        assert "cutoff" in result.message
        assert all(r.reason is not Reason.OFFICER_CLEARED for _, r in p.replies)
        decision = next(e for e in journal.entries if e.kind is EntryKind.DECISION)
        assert decision.data["review"] is None  # decided at the cutoff, without the verdict
        commands = [e.data for e in journal.entries if e.kind is EntryKind.COMMAND]
        assert [(c["command"], c["accepted"]) for c in commands] == [
            ("verdict", True),
            ("verdict", False),
        ]


async def test_a_hold_placed_during_a_review_stops_the_release() -> None:
    async with plant() as p:
        p.review.delay_s = 1.0
        p.review.outcomes = {"Y2": ReviewOutcome.CLEAR}
        p.risk.results["Y2"] = RiskResult("Y2", RiskChannel.YELLOW, 0.1, "books")
        p.scan(2, "Y2")
        await p.clock.advance(0.5)  # under review now
        hold = PlaceHold(user="kim", hawb="Y2", reason="tip-off during the review")
        assert (await p.controller.execute(hold)).accepted
        await p.clock.advance(WINDOW)
        reply = p.reply_for(2)
        assert reply.lane in (2, 3)
        assert reply.reason is Reason.OFFICER_HOLD

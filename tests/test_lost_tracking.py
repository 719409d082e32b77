"""Parcels the PLC never confirms, and tracking ids it reuses, close as lost tracking.

The tracker's rules are tested as plain calls (it is sans-IO: time is the ``now`` it is
given); then the whole path once through the asyncio controller and the real SQLite journal,
where the controller's own ticks close a parcel with no traffic at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.alarms import Alarms
from controller.app.site import SiteConfig
from controller.core.clock import ManualClock
from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    EntryKind,
    JournalEntry,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Holds
from controller.core.kpi import Kpis
from controller.core.lifecycle import ParcelState
from controller.core.link import LinkState
from controller.core.policy import DecisionPolicy
from controller.core.reasons import Reason
from controller.core.settings import ConfigError
from controller.core.tracker import Abandon, Alarm, Effect, Gather, LineTracker, Record, Reply
from controller.core.views import SorterHealth
from controller.lines import Controller
from controller.recovery import recover
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries
from plc_adapters.inprocess import InProcessSorter
from tests.support import CLEAN, DictRisk, MemoryJournal, ScriptedXray, site

TIMEOUT = 120.0  # the default: two loops of the belt (loop_s 60 in tests.support.site())
GREEN = RiskResult("H", RiskChannel.GREEN, 0.05, "books")
OK = XrayResult(XrayStatus.OK, CLEAN, "test-model")


def make_tracker(config: SiteConfig | None = None) -> LineTracker:
    config = config or site()
    kpis = Kpis(config.clearance.target_s, tuple(config.clearance.windows_s))
    return LineTracker(config.lines[0], DecisionPolicy(config.policy), kpis, Holds(), dict)


def request(tracker: LineTracker, tracking_id: int, hawb: str, now: float) -> list[Effect]:
    return tracker.request(DestinationRequest("L1", 0, tracking_id, hawb, now), now)


def decide(tracker: LineTracker, tracking_id: int, hawb: str, now: float) -> DestinationReply:
    """Scan a green parcel with a clean image and carry its decision through to the reply."""
    request(tracker, tracking_id, hawb, now)
    (durable,) = tracker.evidence(tracking_id, GREEN._replace(hawb=hawb), OK, now + 0.2)
    assert isinstance(durable, Record)
    assert durable.awaiting == tracking_id
    (reply,) = tracker.journalled(tracking_id, now + 0.21)
    assert isinstance(reply, Reply)
    return reply.reply


def confirm(tracker: LineTracker, tracking_id: int, lane: int, now: float) -> list[Effect]:
    status = DivertStatus.DIVERTED
    return tracker.confirm(DivertConfirmation("L1", 0, tracking_id, lane, status), now)


def entries(effects: Sequence[Effect]) -> list[JournalEntry]:
    return [entry for e in effects if isinstance(e, Record) for entry in e.entries]


def alarms(effects: Sequence[Effect]) -> list[Alarm]:
    return [e for e in effects if isinstance(e, Alarm)]


def test_a_decided_parcel_never_confirmed_closes_as_lost_tracking_at_its_timeout() -> None:
    tracker = make_tracker()
    decide(tracker, 7, "H7", 0.0)  # replied at 0.21
    assert tracker.tick(1.0) == []
    assert tracker.tick(TIMEOUT + 0.2) == []
    effects = tracker.tick(TIMEOUT + 0.3)
    (closed,) = entries(effects)
    assert (closed.kind, closed.tracking_id, closed.hawb) == (EntryKind.TRANSITION, 7, "H7")
    assert (closed.state_from, closed.state_to) == ("decided", "exception")
    assert closed.reasons == (Reason.LOST_TRACKING, Reason.CONFIRMATION_TIMEOUT)
    assert closed.data["confirm_timeout_s"] == TIMEOUT
    (alarm,) = alarms(effects)
    assert (alarm.what, alarm.active) == ("lost-tracking", True)
    assert "parcel 7 (H7)" in alarm.message
    assert tracker.on_belt == {}
    assert tracker.kpis.view(TIMEOUT).by_state == {"exception": 1}
    assert tracker.tick(2 * TIMEOUT) == []  # closed once


def test_a_defaulted_or_recirculating_parcel_is_watched_too() -> None:
    tracker = make_tracker()
    request(tracker, 1, "H1", 0.0)
    tracker.journalled(1, 1.0, "disk full")  # nothing pending: no effect
    tracker.evidence(1, GREEN, OK, 0.2)
    tracker.journalled(1, 0.3, "disk full")  # the PLC's default lane stands
    assert tracker.on_belt[1].state is ParcelState.DEFAULTED
    decide(tracker, 2, "H2", 0.0)
    missed = DivertConfirmation("L1", 0, 2, 1, DivertStatus.MISSED)
    tracker.confirm(missed, 30.0)  # recirculates: back within a loop, or lost
    assert tracker.on_belt[2].state is ParcelState.RECIRCULATING
    lost = entries(tracker.tick(TIMEOUT + 1))
    assert [(e.tracking_id, e.state_from) for e in lost] == [(1, "defaulted")]
    lost = entries(tracker.tick(30 + TIMEOUT + 1))
    assert [(e.tracking_id, e.state_from) for e in lost] == [(2, "recirculating")]


def test_news_of_a_parcel_restarts_its_watch() -> None:
    tracker = make_tracker()
    decide(tracker, 3, "H3", 0.0)
    missed = DivertConfirmation("L1", 0, 3, 1, DivertStatus.MISSED)
    tracker.confirm(missed, 100.0)
    assert tracker.tick(TIMEOUT + 50) == []  # silent for 20 s only since the confirmation
    request(tracker, 3, "H3", 150.0)  # its next lap: the same parcel, no loss
    assert tracker.on_belt[3].laps == 1
    assert tracker.tick(150 + TIMEOUT - 1) == []


def test_time_the_line_stands_still_does_not_count() -> None:
    tracker = make_tracker()
    decide(tracker, 4, "H4", 0.0)
    tracker.tick(1.0)
    tracker.tick(61.0, running=False)  # 60 s of link down or line stopped
    assert tracker.tick(TIMEOUT + 1, running=True) == []  # only 61 s of running line
    assert tracker.tick(TIMEOUT + 50, running=True) == []
    assert entries(tracker.tick(TIMEOUT + 61, running=True))[0].tracking_id == 4


def test_the_alarm_is_raised_once_per_episode_and_cleared_once_confirmations_flow() -> None:
    tracker = make_tracker()
    decide(tracker, 1, "H1", 0.0)
    decide(tracker, 2, "H2", 5.0)
    raised = alarms(tracker.tick(TIMEOUT + 1))
    assert [a.active for a in raised] == [True]
    last_loss = TIMEOUT + 6
    assert alarms(tracker.tick(last_loss)) == []  # the second loss: the same episode
    reply = decide(tracker, 3, "H3", last_loss + 4)
    confirm(tracker, 3, reply.lane, last_loss + 7)
    assert alarms(tracker.tick(last_loss + 8)) == []  # confirmed, but losses are recent
    assert alarms(tracker.tick(last_loss + TIMEOUT - 1)) == []
    (cleared,) = alarms(tracker.tick(last_loss + TIMEOUT))
    assert not cleared.active
    assert "2 closed as lost tracking" in cleared.message
    decide(tracker, 4, "H4", 1000.0)
    assert [a.active for a in alarms(tracker.tick(1000 + TIMEOUT + 1))] == [True]  # a new one
    # no confirmation since: the alarm stays however long it is quiet
    assert alarms(tracker.tick(5000.0)) == []


def test_a_reused_tracking_id_closes_the_old_parcel_and_serves_the_new_one() -> None:
    tracker = make_tracker()
    decide(tracker, 5, "OLD", 0.0)
    effects = request(tracker, 5, "NEW", 3.0)  # the PLC restarted and reuses id 5
    written = entries(effects)
    assert [(e.hawb, e.state_from, e.state_to) for e in written] == [
        ("OLD", "decided", "exception"),
        ("NEW", "", "scanned"),
    ]
    assert written[0].reasons == (Reason.LOST_TRACKING, Reason.TRACKING_ID_REUSED)
    assert not [e for e in written if e.kind is EntryKind.ILLEGAL_TRANSITION]
    assert tracker.kpis.illegal_transitions == 0
    assert [e.hawb for e in effects if isinstance(e, Gather)] == ["NEW"]  # served normally
    assert [a.active for a in alarms(effects)] == [True]
    assert tracker.on_belt[5].hawb == "NEW"


def test_a_recirculating_parcel_requested_with_another_barcode_is_another_parcel() -> None:
    """Its evidence must be the new parcel's, never the old one's."""
    tracker = make_tracker()
    decide(tracker, 6, "OLD", 0.0)
    tracker.confirm(DivertConfirmation("L1", 0, 6, 1, DivertStatus.MISSED), 10.0)
    effects = request(tracker, 6, "NEW", 60.0)
    assert [e.hawb for e in effects if isinstance(e, Gather)] == ["NEW"]
    assert entries(effects)[0].reasons == (Reason.LOST_TRACKING, Reason.TRACKING_ID_REUSED)
    assert tracker.on_belt[6].laps == 0
    tracker.confirm(DivertConfirmation("L1", 0, 6, 1, DivertStatus.MISSED), 100.0)
    effects = request(tracker, 6, "", 160.0)  # a no-read on its next lap: the same parcel
    assert tracker.on_belt[6].laps == 1
    assert not [e for e in entries(effects) if e.state_to == "exception"]


def test_a_write_owed_to_the_old_parcel_never_releases_the_new_one() -> None:
    """The old parcel's decision was being journalled when its id was reused: the driver's
    journalled() call for it must not reply for the new parcel, whose own entry is not
    durable yet."""
    tracker = make_tracker()
    request(tracker, 8, "OLD", 0.0)
    tracker.evidence(8, GREEN, OK, 0.2)  # the old decision is being journalled
    effects = request(tracker, 8, "NEW", 0.3)
    assert Abandon(8) in effects
    (durable,) = tracker.evidence(8, GREEN._replace(hawb="NEW"), OK, 0.4)
    assert isinstance(durable, Record)
    assert durable.entries[-1].hawb == "NEW"
    assert tracker.journalled(8, 0.41) == []  # the old write: owed to the closed parcel
    (reply,) = tracker.journalled(8, 0.42)  # the new one's
    assert isinstance(reply, Reply)
    assert reply.reply.tracking_id == 8
    assert tracker.on_belt[8].hawb == "NEW"


def test_the_timeout_is_validated_and_defaults_to_two_loops() -> None:
    config = site()
    assert config.lines[0].confirm_timeout == 2 * config.lines[0].belt.loop_s
    raw = config.lines[0].model_dump(mode="json")
    with pytest.raises(ConfigError, match=r"confirm_timeout_s 45\.0 must exceed one loop"):
        site(lines=[{**raw, "confirm_timeout_s": 45}])
    assert site(lines=[{**raw, "confirm_timeout_s": 90}]).lines[0].confirm_timeout == 90


# --- through the controller ------------------------------------------------------------------


class HeldSorter(InProcessSorter):
    """An in-process sorter whose line state and mailbox flag the test sets (a PLC reports
    its PackML state, and says when its telegram mailbox is full)."""

    line_state = "execute"
    mailbox_full = False

    def health(self) -> SorterHealth:
        return SorterHealth(LinkState.UP, self.line_state, mailbox_full=self.mailbox_full)


async def test_a_stopped_line_keeps_its_parcels_open_through_the_controllers_ticks() -> None:
    config = site()
    clock = ManualClock(start=1000.0)
    replies: list[DestinationReply] = []
    sorter = HeldSorter("L1", on_reply=replies.append)
    risk = DictRisk({"H1": GREEN._replace(hawb="H1")})
    journal = MemoryJournal()
    controller = Controller(config, {"L1": sorter}, risk, ScriptedXray(clock), journal, clock)
    task = asyncio.create_task(controller.run())
    tracker = controller.lines["L1"].tracker
    sorter.request(1, "H1", clock.now())
    await clock.advance(1)
    assert [r.tracking_id for r in replies] == [1]
    sorter.line_state = "held"  # an emergency stop: nothing moves, nothing is confirmed
    await clock.advance(3 * TIMEOUT)
    assert tracker.on_belt[1].state is ParcelState.DECIDED
    sorter.line_state = "execute"
    await clock.advance(TIMEOUT - 10)
    assert 1 in tracker.on_belt
    await clock.advance(20)  # no telegram, no traffic: the controller's own ticks close it
    assert 1 not in tracker.on_belt
    assert journal.for_parcel(1)[-1].reasons == (Reason.LOST_TRACKING, Reason.CONFIRMATION_TIMEOUT)
    sorter.close()
    await asyncio.wait_for(task, 5)


async def test_a_full_plc_mailbox_keeps_the_parcels_open_until_it_drains() -> None:
    """While the PLC's mailbox is full its news (a confirmation, a parcel's next request)
    waits in its backlog: that time does not count against the parcels on the belt, else a
    parcel would be closed as lost and then reopened by its late request."""
    config = site()
    clock = ManualClock(start=1000.0)
    replies: list[DestinationReply] = []
    sorter = HeldSorter("L1", on_reply=replies.append)
    risk = DictRisk({"H1": GREEN._replace(hawb="H1")})
    journal = MemoryJournal()
    controller = Controller(config, {"L1": sorter}, risk, ScriptedXray(clock), journal, clock)
    task = asyncio.create_task(controller.run())
    tracker = controller.lines["L1"].tracker
    sorter.request(1, "H1", clock.now())
    await clock.advance(1)
    assert [r.tracking_id for r in replies] == [1]
    sorter.mailbox_full = True  # the controller is behind; the line itself runs
    await clock.advance(3 * TIMEOUT)
    assert tracker.on_belt[1].state is ParcelState.DECIDED
    sorter.mailbox_full = False  # drained: the watch goes on where it stood
    await clock.advance(TIMEOUT - 10)
    assert 1 in tracker.on_belt
    await clock.advance(20)
    assert 1 not in tracker.on_belt
    assert journal.for_parcel(1)[-1].reasons == (Reason.LOST_TRACKING, Reason.CONFIRMATION_TIMEOUT)
    sorter.close()
    await asyncio.wait_for(task, 5)


async def test_a_plc_that_reports_no_line_state_counts_as_running() -> None:
    """A PLC that reports no PackML state ("") is taken as running: its silent parcels are
    watched, not kept open for ever."""
    config = site()
    clock = ManualClock(start=1000.0)
    replies: list[DestinationReply] = []
    sorter = HeldSorter("L1", on_reply=replies.append)
    sorter.line_state = ""
    risk = DictRisk({"H1": GREEN._replace(hawb="H1")})
    journal = MemoryJournal()
    controller = Controller(config, {"L1": sorter}, risk, ScriptedXray(clock), journal, clock)
    task = asyncio.create_task(controller.run())
    tracker = controller.lines["L1"].tracker
    sorter.request(1, "H1", clock.now())
    await clock.advance(1)
    assert [r.tracking_id for r in replies] == [1]
    await clock.advance(TIMEOUT + 2)
    assert 1 not in tracker.on_belt
    assert journal.for_parcel(1)[-1].reasons == (Reason.LOST_TRACKING, Reason.CONFIRMATION_TIMEOUT)
    sorter.close()
    await asyncio.wait_for(task, 5)


async def until(condition: Callable[[], object], within_s: float = 10.0) -> None:
    """Return once ``condition()`` holds, polled on the wall clock (journal writes take
    wall time while the line's clock stands)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_lost_parcels_close_in_the_real_journal_and_the_alarm_comes_and_goes(
    tmp_path: Path,
) -> None:
    config = site()
    path = tmp_path / "journal.sqlite"
    clock = ManualClock(start=1000.0)
    replies: list[DestinationReply] = []
    sorter = InProcessSorter("L1", on_reply=replies.append)
    risk = DictRisk({h: GREEN._replace(hawb=h) for h in ("H1", "H3", "H3b", "H4")})
    async with SqliteJournal(path, "TEST", group_commit_ms=1.0) as journal:
        board = Alarms(journal, clock.now)
        controller = Controller(
            config, {"L1": sorter}, risk, ScriptedXray(clock), journal, clock, alarms=board
        )
        task = asyncio.create_task(controller.run())
        tracker = controller.lines["L1"].tracker

        async def decided(tracking_id: int, hawb: str) -> DestinationReply:
            before = len(replies)
            sorter.request(tracking_id, hawb, clock.now())
            await clock.advance(0.3)  # the X-ray answers after 0.2 s
            await until(lambda: len(replies) > before)
            (reply,) = replies[before:]
            assert reply.tracking_id == tracking_id
            return reply

        await decided(1, "H1")  # the PLC will forget it (a cold start)
        await decided(3, "H3")
        reply = await decided(3, "H3b")  # the restarted PLC hands out id 3 again
        sorter.confirm(3, reply.lane, DivertStatus.DIVERTED)
        await clock.advance(TIMEOUT + 1)  # no traffic: the controller's ticks find parcel 1
        assert tracker.on_belt == {}
        assert "L1/lost-tracking" in board.active
        reply = await decided(4, "H4")  # confirmations flow again ...
        sorter.confirm(4, reply.lane, DivertStatus.DIVERTED)
        await clock.advance(TIMEOUT + 1)  # ... and a whole timeout passes with none lost
        assert "L1/lost-tracking" not in board.active
        sorter.close()
        await asyncio.wait_for(task, 10)
        await board.drain()

    rows = read_entries(f"sqlite:///{path}", "TEST")
    assert not [r for r in rows if r["kind"] == "illegal_transition"]
    first = [r for r in rows if r["tracking_id"] == 1]
    assert [(r["kind"], r["state_to"]) for r in first] == [
        ("transition", "scanned"),
        ("decision", "decided"),
        ("transition", "exception"),
    ]
    assert first[-1]["reasons"] == [Reason.LOST_TRACKING, Reason.CONFIRMATION_TIMEOUT]
    old, new = (
        [r for r in rows if r["tracking_id"] == 3 and r["hawb"] == hawb] for hawb in ("H3", "H3b")
    )
    assert old[-1]["reasons"] == [Reason.LOST_TRACKING, Reason.TRACKING_ID_REUSED]
    assert old[-1]["seq"] < new[0]["seq"]
    assert [r["state_to"] for r in new] == ["scanned", "decided", "released"]
    alarm = [r for r in rows if r["kind"] == "alarm" and r["data"]["source"] == "L1/lost-tracking"]
    assert [r["state_to"] for r in alarm] == ["active", "cleared"]
    assert recover(path, "TEST", 0.0, datetime.now(UTC), 24.0).parcels == []

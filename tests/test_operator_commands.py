"""Operator and officer commands against the real SQLite journal: journalled with who and why
before they take effect, refused with a reason when the lifecycle does not allow them, and
still in force after the controller restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from controller.app.site import SiteConfig
from controller.core.clock import MonotonicClock
from controller.core.commands import (
    AcknowledgeAlarm,
    ForceClose,
    LiftHold,
    PlaceHold,
    RecordInspection,
    RecordVerdict,
)
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    InspectionOutcome,
    ReviewOutcome,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.lifecycle import ParcelState
from controller.core.ports import ReviewRequest
from controller.core.reasons import Reason
from controller.lines import Controller
from controller.recovery import hold_on_clock, recover
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries
from plc_adapters.inprocess import InProcessSorter
from tests.support import CLEAN, DictRisk, ScriptedXray, site

T = TypeVar("T")


class InstantXray:
    """An X-ray result at once, with no wait at all (as a missing scanner answers)."""

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, CLEAN, "instant")


class SilentOfficers:
    """A review room where nobody answers on screen: verdicts come only as commands."""

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@dataclass
class Running:
    controller: Controller
    sorter: InProcessSorter
    risk: DictRisk
    replies: list[DestinationReply]
    journal: SqliteJournal
    clock: MonotonicClock

    async def reply_for(self, tracking_id: int, within_s: float = 5.0) -> DestinationReply:
        return await _until(
            lambda: next((r for r in self.replies if r.tracking_id == tracking_id), None),
            within_s,
        )

    def scan(self, tracking_id: int, hawb: str) -> None:
        self.sorter.request(tracking_id, hawb, self.clock.now())


async def _until(probe: Callable[[], T | None], within_s: float) -> T:
    loop = asyncio.get_running_loop()
    until = loop.time() + within_s
    while (value := probe()) is None:
        assert loop.time() < until, "condition not reached in time"
        await asyncio.sleep(0.01)
    return value


@asynccontextmanager
async def controller_on(path: Path, config: SiteConfig) -> AsyncIterator[Running]:
    """A controller on the journal at ``path``, restored from it as at start-up."""
    clock = MonotonicClock()
    replies: list[DestinationReply] = []
    sorter = InProcessSorter("L1", on_reply=replies.append)
    risk = DictRisk()
    async with SqliteJournal(path, config.site.id, group_commit_ms=1.0) as journal:
        controller = Controller(
            config,
            {"L1": sorter},
            risk,
            ScriptedXray(clock, delay_s=0.01),  # type: ignore[arg-type]
            journal,
            clock,
            review=SilentOfficers(),
        )
        wall_now, now = datetime.now(UTC), clock.now()
        recovered = await asyncio.to_thread(recover, path, config.site.id, now, wall_now, 24.0)
        holds = [hold_on_clock(h, now, wall_now) for h in recovered.holds]
        controller.restore(recovered.parcels, holds)
        task = asyncio.create_task(controller.run())
        try:
            yield Running(controller, sorter, risk, replies, journal, clock)
        finally:
            sorter.close()
            await asyncio.wait_for(task, 10)


def _commands(path: Path) -> list[dict[str, object]]:
    return [row["data"] for row in read_entries(f"sqlite:///{path}") if row["kind"] == "command"]


@pytest.fixture
def config() -> SiteConfig:
    return site(policy={"audit_rate": 0.0, "min_audit_rate": 0.0, "review_yellow": True})


async def test_holds_inspections_and_verdicts_survive_a_restart(
    tmp_path: Path, config: SiteConfig
) -> None:
    path = tmp_path / "journal.sqlite"
    async with controller_on(path, config) as first:
        hold = PlaceHold(user="kim", hawb="HELD1", reason="tip-off from the airline")
        assert (await first.controller.execute(hold)).accepted
        # a parcel diverted to inspection, its outcome still to be recorded
        first.risk.results["RED1"] = RiskResult("RED1", RiskChannel.RED, 0.9, "books")
        first.scan(1, "RED1")
        assert (await first.reply_for(1)).lane in (2, 3)
        first.sorter.confirm(1, 2, DivertStatus.DIVERTED)
        # a yellow parcel released by an officer's on-screen verdict
        first.risk.results["YEL1"] = RiskResult("YEL1", RiskChannel.YELLOW, 0.1, "books")
        first.scan(2, "YEL1")
        tracker = first.controller.lines["L1"].tracker
        await _until(lambda: 2 in tracker.pending or None, 2.0)
        await _until(lambda: tracker.pending[2].phase.value == "reviewing" or None, 2.0)
        verdict = RecordVerdict(user="lee", line="L1", tracking_id=2, outcome=ReviewOutcome.CLEAR)
        assert (await first.controller.execute(verdict)).accepted
        reply = await first.reply_for(2)
        assert (reply.lane, reply.reason) == (1, Reason.OFFICER_CLEARED)
        await _until(lambda: first.controller.open_parcels() == 2 or None, 2.0)

    async with controller_on(path, config) as second:
        assert "HELD1" in second.controller.holds
        held = second.controller.holds.get("HELD1")
        assert held is not None
        assert (held.user, held.reason) == ("kim", "tip-off from the airline")
        assert held.since <= second.clock.now()
        # the hold still stops a clean green parcel
        second.risk.results["HELD1"] = RiskResult("HELD1", RiskChannel.GREEN, 0.01, "books")
        second.scan(10, "HELD1")
        reply = await second.reply_for(10)
        assert (reply.lane in (2, 3), reply.reason) == (True, Reason.OFFICER_HOLD)
        # the parcel at inspection came back and its outcome closes it
        tracker = second.controller.lines["L1"].tracker
        assert [p.hawb for q in tracker.in_inspection.values() for p in q] == ["RED1"]
        seized = RecordInspection(user="park", hawb="RED1", outcome=InspectionOutcome.SEIZED)
        assert (await second.controller.execute(seized)).accepted
        assert tracker.in_inspection == {}
        assert second.controller.kpis.by_state["seized"] == 1
        lift = LiftHold(user="kim", hawb="HELD1", reason="cleared by the airline")
        assert (await second.controller.execute(lift)).accepted
        again = await second.controller.execute(lift)
        assert not again.accepted
        assert "not held" in again.message

    async with controller_on(path, config) as third:
        assert "HELD1" not in third.controller.holds
        assert third.controller.lines["L1"].tracker.in_inspection == {}

    rows = await asyncio.to_thread(read_entries, f"sqlite:///{path}")
    verdicts = [r for r in rows if r["kind"] == "command" and r["data"]["command"] == "verdict"]
    assert [(v["data"]["user"], v["data"]["outcome"], v["tracking_id"]) for v in verdicts] == [
        ("lee", "clear", 2)
    ]
    decision = next(r for r in rows if r["kind"] == "decision" and r["tracking_id"] == 2)
    assert decision["data"]["review"] == "clear"
    closing = next(r for r in rows if r["hawb"] == "RED1" and r["state_to"] == "seized")
    assert (closing["kind"], closing["data"]["user"]) == ("inspection_result", "park")
    intent = next(r for r in rows if r["kind"] == "command" and r["hawb"] == "RED1")
    assert intent["seq"] < closing["seq"]  # who and why, journalled before the effect
    assert [(c["command"], c["user"], c["accepted"]) for c in _commands(path)] == [
        ("hold", "kim", True),
        ("verdict", "lee", True),
        ("inspect", "park", True),
        ("lift", "kim", True),
        ("lift", "kim", False),
    ]


async def test_commands_the_lifecycle_refuses_are_journalled_and_change_nothing(
    tmp_path: Path, config: SiteConfig
) -> None:
    path = tmp_path / "journal.sqlite"
    async with controller_on(path, config) as running:
        c = running.controller
        results = [
            await c.execute(
                RecordInspection(user="park", hawb="NOPE", outcome=InspectionOutcome.CLEARED)
            ),
            await c.execute(
                RecordVerdict(user="lee", line="L1", tracking_id=99, outcome=ReviewOutcome.CLEAR)
            ),
            await c.execute(ForceClose(user="kim", line="L9", tracking_id=1, reason="off belt")),
            await c.execute(AcknowledgeAlarm(user="kim", source="L1/link", comment="seen")),
        ]
        assert [r.accepted for r in results] == [False, False, False, False]
        assert "waits at inspection" in results[0].message
        assert "not awaiting a review" in results[1].message
        assert "'L9' is not on this site" in results[2].message
        assert "no active alarm" in results[3].message
        assert c.open_parcels() == 0
    refused = _commands(path)
    assert [(r["command"], r["accepted"]) for r in refused] == [
        ("inspect", False),
        ("verdict", False),
        ("close", False),
        ("ack", False),
    ]
    assert all(r["refused"] for r in refused)


async def test_an_operator_closes_a_parcel_the_sorter_lost_sight_of(
    tmp_path: Path, config: SiteConfig
) -> None:
    path = tmp_path / "journal.sqlite"
    async with controller_on(path, config) as running:
        running.risk.results["G1"] = RiskResult("G1", RiskChannel.GREEN, 0.01, "books")
        running.scan(5, "G1")
        await running.reply_for(5)
        tracker = running.controller.lines["L1"].tracker
        assert tracker.on_belt[5].state is ParcelState.DECIDED
        close = ForceClose(user="kim", line="L1", tracking_id=5, reason="found off the belt")
        assert (await running.controller.execute(close)).accepted
        assert 5 not in tracker.on_belt
        assert running.controller.kpis.by_state["exception"] == 1
        # a late confirmation for it is an alarm, not a second closure
        running.sorter.confirm(5, 1, DivertStatus.DIVERTED)
        await asyncio.sleep(0.05)
    rows = read_entries(f"sqlite:///{path}")
    closings = [r for r in rows if r["tracking_id"] == 5 and r["state_to"] == "exception"]
    assert len(closings) == 1
    assert closings[0]["reasons"] == [Reason.OPERATOR_CLOSED.value]
    assert closings[0]["data"]["reason"] == "found off the belt"
    late = [r for r in rows if r["kind"] == "confirmation" and r["tracking_id"] == 5]
    assert [r["state_to"] for r in late] == [""]  # journalled as it came: no parcel moved


async def test_the_open_set_agrees_with_the_tracker_when_evidence_is_instant(
    tmp_path: Path, config: SiteConfig
) -> None:
    """Every parcel's rows reach the journal in the order they happened, however fast the
    decision: a restart then sees each parcel in the state the tracker had it."""
    path = tmp_path / "journal.sqlite"
    async with controller_on(path, config) as running:
        running.controller.lines["L1"].xray = InstantXray()
        for tid in range(1, 201):
            running.risk.results[f"G{tid}"] = RiskResult(f"G{tid}", RiskChannel.GREEN, 0.01, "")
            running.scan(tid, f"G{tid}")
            await asyncio.sleep(0.001)  # scans a millisecond apart, as on a fast line
        await _until(lambda: len(running.replies) == 200 or None, 10.0)
        tracker = running.controller.lines["L1"].tracker
        states = {tid: p.state for tid, p in tracker.on_belt.items()}
        assert set(states.values()) == {ParcelState.DECIDED}
    wall_now = datetime.now(UTC)
    recovered = await asyncio.to_thread(recover, path, config.site.id, 0.0, wall_now, 24.0)
    assert {p.tracking_id: p.state for p in recovered.parcels} == states

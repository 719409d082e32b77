"""The emulated PLC's own duties, driven over a real Modbus link by the real adapter:
tracking, the default lane for late or missing replies, lane full, invalid lanes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.app.site import parse_config
from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertStatus,
    EntryKind,
    LaneStatus,
    XrayResult,
    XrayStatus,
)
from controller.core.reasons import Reason
from controller.lines import Controller
from plc_adapters.layout import TelegramKind
from plc_adapters.telegrams import RawTelegram
from tests.plc.rigs import Rig, line, open_rig, wait_for
from tests.support import DictRisk, MemoryJournal

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def answer(rig: Rig, count: int, lane: int) -> DestinationRequest:
    request = (await rig.receive(count))[-1]
    assert isinstance(request, DestinationRequest)
    await rig.sorter.reply(
        DestinationReply(request.line, request.tracking_id, lane, Reason.RISK_RED)
    )
    await wait_for(lambda: len(rig.replies) == count, f"reply {count} at the PLC")
    return request


async def test_lane_for_applies_replies_defaults_and_lane_full() -> None:
    async with open_rig("modbus") as rig:
        await wait_for(lambda: rig.adapter.connected and not rig.plc.safe_state, "link up")
        plc, now = rig.plc, rig.clock.now()

        plc.request(1, "IN-TIME", now)
        await answer(rig, 1, 2)
        assert plc.lane_for(1) == (2, DivertStatus.DIVERTED)
        assert plc.lane_for(1) == (9, DivertStatus.DEFAULTED)  # tracking entry consumed

        plc.request(2, "LATE", now - 10.0)  # its 5.5 s decision window closed long ago
        await answer(rig, 2, 2)
        assert plc.lane_for(2) == (9, DivertStatus.DEFAULTED)
        assert plc.replies_late == 1

        plc.set_lane_status(2, LaneStatus.FULL)
        plc.request(3, "FULL", now)
        await answer(rig, 3, 2)
        assert plc.lane_for(3) == (2, DivertStatus.LANE_FULL)

        plc.request(4, "BAD-LANE", now)
        await answer(rig, 4, 77)  # not a lane of this line
        assert plc.lane_for(4) == (9, DivertStatus.DEFAULTED)
        assert plc.replies_invalid == 1

        plc.request(5, "NO-REPLY", now)
        await rig.receive(5)
        assert plc.lane_for(5) == (9, DivertStatus.DEFAULTED)
        assert plc.lane_for(999) == (9, DivertStatus.DEFAULTED)  # never tracked


async def test_only_credited_replies_reach_the_plant_and_the_plc_keeps_its_rules() -> None:
    """``on_reply`` (what the plant acts on) gets only replies credited by the rulebook; the
    PLC's own lap limit, missed diverts and lost tracking come from the same rulebook."""
    async with open_rig("modbus") as rig:
        await wait_for(lambda: rig.adapter.connected and not rig.plc.safe_state, "link up")
        plc, credited = rig.plc, list[DestinationReply]()
        plc.on_reply = credited.append
        sent = 0

        async def lap(tracking_id: int, scanned: float) -> None:
            nonlocal sent
            sent += 1
            plc.request(tracking_id, f"P{tracking_id}", scanned)
            await answer(rig, sent, 2)

        await lap(1, rig.clock.now())
        await lap(2, rig.clock.now() - 10.0)  # its decision point passed long ago
        assert [r.tracking_id for r in credited] == [1]
        assert plc.replies_late == 1

        plc.set_lane_status(2, LaneStatus.FULL)
        for _ in range(6):  # lap_limit 3 + 2 spare laps: still steered by the reply
            await lap(3, rig.clock.now())
            assert plc.lane_for(3) == (2, DivertStatus.LANE_FULL)
        await lap(3, rig.clock.now())
        assert plc.lane_for(3) == (9, DivertStatus.DEFAULTED)  # the PLC's own lap limit

        plc.set_lane_status(2, LaneStatus.AVAILABLE)
        await lap(4, rig.clock.now())
        assert plc.lane_for(4, missed=True) == (2, DivertStatus.MISSED)
        await lap(5, rig.clock.now())
        plc.lose_tracking(5)
        assert plc.lane_for(5) == (9, DivertStatus.LOST_TRACKING)

        await rig.sorter.reply(DestinationReply(rig.sorter.line, 999, 2, Reason.RISK_RED))
        await wait_for(lambda: plc.replies_unmatched == 1, "the unmatched reply at the PLC")
        assert len(credited) == sent - 1  # all but the late one


async def test_the_plc_is_safe_until_a_controller_beats() -> None:
    async with open_rig("modbus") as rig:
        await rig.adapter.aclose()  # no controller at all
        await wait_for(lambda: rig.plc.safe_state, "safe state without a controller")
        rig.plc.request(1, "X", rig.clock.now())
        assert rig.plc.lane_for(1) == (9, DivertStatus.DEFAULTED)


class _NoImages:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult.fault(XrayStatus.MISSING, "no scanner in this test")


async def test_the_core_sends_a_malformed_request_to_exception_over_the_wire() -> None:
    """The real controller core behind the Modbus adapter: a non-ASCII barcode is journalled
    as malformed and replied with the exception lane; a sound parcel on the same link is not."""
    async with open_rig("modbus") as rig:
        await rig.stop()  # the core reads the telegrams itself
        config = parse_config(
            {
                "site": {"id": "WIRE"},
                "lines": [line(rig.sorter.line).model_dump(mode="json")],
                "policy": {"audit_rate": 0.0, "min_audit_rate": 0.0},
            }
        )
        journal = MemoryJournal()
        core = Controller(
            config, {rig.sorter.line: rig.sorter}, DictRisk(), _NoImages(), journal, rig.clock
        )
        serving = asyncio.create_task(core.run())
        try:
            plc = rig.plc
            await wait_for(lambda: rig.adapter.connected, "link up")
            plc.request(1, "CG000000001", rig.clock.now())
            kind = TelegramKind.DESTINATION_REQUEST
            plc.inject(RawTelegram(plc.next_seq(), kind, 2, plc.clock_ms(), barcode=b"CG\xff1"))
            await wait_for(lambda: len(rig.replies) == 2, "both replies at the PLC")
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        replies = {r.tracking_id: r for r in rig.replies}
        assert (replies[2].lane, replies[2].reason) == (9, Reason.MALFORMED_TELEGRAM)
        assert replies[1].lane == 2  # no risk result, no image: inspection, not exception
        decision = next(e for e in journal.for_parcel(2) if e.kind is EntryKind.DECISION)
        assert "0xFF" in str(decision.data["fault"])

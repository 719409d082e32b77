"""A reply answers one request: the one the core decided on, not whichever request for its
tracking id the adapter has read by the time the reply is handed over (docs/plc-interface.md,
section 4.2). The core names the request in the reply (``request_seq``); the wire adapter drops
a reply whose request is no longer its tracking id's latest, over real OPC UA and Modbus links.
"""

from __future__ import annotations

import asyncio

import pytest

from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Holds
from controller.core.kpi import Kpis
from controller.core.policy import DecisionPolicy
from controller.core.reasons import Reason
from controller.core.tracker import LineTracker, Record, Reply
from tests.plc.rigs import open_rig, wait_for
from tests.support import CLEAN, site

WIRES = ("opcua", "modbus")
OLD_LANE, NEW_LANE = 2, 1


def test_the_core_names_the_request_its_reply_answers() -> None:
    config = site()
    kpis = Kpis(config.clearance.target_s, tuple(config.clearance.windows_s))
    tracker = LineTracker(config.lines[0], DecisionPolicy(config.policy), kpis, Holds(), dict)
    now = 100.0
    tracker.request(DestinationRequest("L1", 41, 7, "H7", now), now)
    risk = RiskResult("H7", RiskChannel.GREEN, 0.05, "books")
    xray = XrayResult(XrayStatus.OK, CLEAN, "test-model")
    (durable,) = tracker.evidence(7, risk, xray, now + 0.2)
    assert isinstance(durable, Record)
    (reply,) = tracker.journalled(7, now + 0.21)
    assert isinstance(reply, Reply)
    assert reply.reply.request_seq == 41
    assert reply.reply.tracking_id == 7


@pytest.mark.parametrize("wire", WIRES)
async def test_a_reply_handed_over_after_a_newer_request_is_never_written(wire: str) -> None:
    """The parcel's next lap (or a new parcel under a reused id) is requested after the core
    decided the first request and before the reply reached the adapter: the first reply is
    dropped (logged, counted), not written to the ring where it would steer the new request;
    the reply to the new request is written."""
    async with open_rig(wire) as rig:
        await wait_for(lambda: rig.adapter.connected, "link up")
        plc, now = rig.plc, rig.clock.now()
        plc.request(7, "LAP1", now)
        (first,) = await rig.receive(1)
        plc.request(7, "LAP1", now + 0.5)  # the next request for the same tracking id
        second = (await rig.receive(2))[1]
        assert isinstance(first, DestinationRequest)
        assert isinstance(second, DestinationRequest)
        assert first.seq != second.seq

        old = DestinationReply(first.line, 7, OLD_LANE, Reason.RISK_RED, first.seq)
        new = DestinationReply(second.line, 7, NEW_LANE, Reason.LOW_RISK_CLEAN_XRAY, second.seq)
        await rig.sorter.reply(old)
        await rig.sorter.reply(new)
        await wait_for(lambda: len(rig.replies) >= 1, "the newer request's reply at the PLC")
        await asyncio.sleep(0.2)
        assert [(r.tracking_id, r.lane) for r in rig.replies] == [(7, NEW_LANE)]
        assert rig.adapter.replies_superseded == 1
        credited = plc.tracked[7].reply
        assert credited is not None
        assert credited.lane == NEW_LANE

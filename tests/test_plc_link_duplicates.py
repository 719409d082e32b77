"""A duplicate telegram is a duplicate across a controller restart too (docs/plc-interface.md,
sections 4.1 and 6.1): the next controller learns the acknowledged telegrams the PLC's ring
still holds when it connects, so one the PLC publishes again identically is ignored, as the
controller before it would have ignored it, instead of reaching the core as a new request
(which would close the journalled parcel as lost tracking and decide it again). Over real OPC
UA and Modbus links."""

from __future__ import annotations

import asyncio

import pytest

from controller.alarms import Alarms
from controller.core.domain import Telegram
from plc_adapters.layout import header
from tests.plc.rigs import open_rig, wait_for

WIRES = ("opcua", "modbus")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_telegram_published_again_after_a_controller_restart_is_a_duplicate(
    wire: str,
) -> None:
    async with open_rig(wire) as rig:
        plc = rig.plc
        for tracking_id in (1, 2, 3):
            plc.request(tracking_id, f"D{tracking_id}", rig.clock.now())
        await rig.receive(3)
        await wait_for(lambda: plc.mem[header("tel_ack")] == 3, "all three acknowledged")
        await rig.stop()
        await rig.adapter.aclose()  # the controller stops (and releases the PLC)

        alarms = Alarms(None, rig.clock.now)
        successor = rig.second_adapter(alarms)
        taken: list[Telegram] = []

        async def take() -> None:
            async for telegram in successor.telegrams():
                taken.append(telegram)
                successor.acknowledge(telegram)

        reader = asyncio.create_task(take())
        try:
            await wait_for(lambda: successor.connected, "the successor's link up")
            plc.resend(2)  # the PLC publishes an acknowledged telegram again, identical
            plc.request(4, "D4", rig.clock.now())
            await wait_for(lambda: len(taken) >= 1, "the new request")
            await wait_for(lambda: plc.mem[header("tel_ack")] == 5, "both slots acknowledged")
            await asyncio.sleep(0.1)
        finally:
            await successor.aclose()
            await asyncio.gather(reader, return_exceptions=True)
        assert [(t.seq, t.tracking_id) for t in taken] == [(4, 4)]
        assert successor.checker.duplicates == 1
        assert f"{successor.line}/telegrams-lost" not in alarms.active
        assert f"{successor.line}/malformed-telegram" not in alarms.active

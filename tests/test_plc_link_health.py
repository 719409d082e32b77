"""What the wire adapter's health tells the controller of its PLC, over real OPC UA and Modbus
links: a PLC that reports no PackML state (``LineState`` 0) counts as running, so the
lost-tracking watch stays on; a full telegram mailbox is reported while it lasts, so the
controller does not count the PLC's backlog against parcels waiting for news."""

from __future__ import annotations

import asyncio

import pytest

from controller.core.domain import Telegram
from controller.lines import RUNNING_STATES
from plc_adapters.layout import PackMLState, PlcFlags
from tests.plc.rigs import open_rig, wait_for

WIRES = ("opcua", "modbus")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_plc_reporting_no_line_state_counts_as_running(wire: str) -> None:
    async with open_rig(wire) as rig:
        adapter = rig.adapter
        await wait_for(lambda: adapter.line_state is PackMLState.EXECUTE, "Execute read")
        assert adapter.health().line_state == "execute"
        rig.plc.set_line_state(PackMLState.UNDEFINED)
        await wait_for(lambda: adapter.line_state is PackMLState.UNDEFINED, "Undefined read")
        assert adapter.health().line_state == ""
        assert adapter.health().line_state in RUNNING_STATES
        rig.plc.set_line_state(PackMLState.HELD)
        await wait_for(lambda: adapter.line_state is PackMLState.HELD, "Held read")
        assert adapter.health().line_state == "held"
        assert adapter.health().line_state not in RUNNING_STATES


@pytest.mark.parametrize("wire", WIRES)
async def test_a_full_mailbox_shows_in_health_until_it_drains(wire: str) -> None:
    """The controller takes the telegrams but acknowledges none (its journal is stuck): the
    ring fills, the PLC keeps the rest in its backlog and says so; once the controller
    acknowledges them, the backlog drains and the flag drops."""
    ring = 4
    async with open_rig(wire, ring_size=ring, read=False) as rig:
        adapter, plc = rig.adapter, rig.plc
        taken: list[Telegram] = []

        async def take_without_acknowledging() -> None:
            async for telegram in adapter.telegrams():
                taken.append(telegram)

        reader = asyncio.create_task(take_without_acknowledging())
        try:
            await wait_for(lambda: adapter.connected, "link up")
            assert adapter.health().mailbox_full is False
            for tracking_id in range(1, ring + 3):
                plc.request(tracking_id, f"MB{tracking_id}", rig.clock.now())
            await wait_for(lambda: plc.mailbox_full, "the PLC's mailbox full")
            await wait_for(lambda: adapter.health().mailbox_full, "mailbox full in health")
            assert PlcFlags.MAILBOX_FULL in adapter.plc_flags
            await wait_for(lambda: len(taken) == ring, "the ring's telegrams taken")
            await asyncio.sleep(0.1)
            assert len(taken) == ring  # the rest waits in the PLC's backlog

            acknowledged = 0

            def acknowledge_all() -> bool:
                nonlocal acknowledged
                for telegram in taken[acknowledged:]:
                    adapter.acknowledge(telegram)
                acknowledged = len(taken)
                return acknowledged == ring + 2

            await wait_for(acknowledge_all, "every telegram taken and acknowledged")
            await wait_for(lambda: not plc.mailbox_full, "the PLC's backlog drained")
            await wait_for(lambda: not adapter.health().mailbox_full, "mailbox full cleared")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

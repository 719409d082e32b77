"""One controller per PLC: a second one is refused and alarmed, over OPC UA and Modbus.

The PLC grants ``CtlOwner`` to one controller at a time and refuses another's claim while the
owner's heartbeat is alive; the controller claims before it writes anything else, writes
nothing to a PLC another controller owns, and stops as soon as the PLC shows another owner
(docs/plc-interface.md, section 4.5). Both sides enforce it: each test checks one.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from controller.alarms import Alarms
from plc_adapters.layout import header
from plc_adapters.transport import LinkRejectedError
from plc_adapters.wire_sorter import WireSorter
from tests.plc.rigs import Rig, open_rig, wait_for

WIRES = ("opcua", "modbus")


def owner(rig: Rig) -> int:
    value = rig.plc.mem[header("ctl_owner")]
    assert isinstance(value, int)
    return value


def raised(alarms: Alarms, source: str) -> list[bool]:
    return [active for _, s, _, active in alarms.history if s == source]


def lazy(adapter: WireSorter) -> WireSorter:
    """``adapter``, reading the PLC's header only when it connects (its poll never comes due):
    what it knows of the owner is what it saw then."""
    adapter.timing = replace(adapter.timing, poll_s=3600.0)
    return adapter


async def owns(rig: Rig, adapter: WireSorter) -> None:
    await wait_for(lambda: owner(rig) == adapter.owner_id, f"controller {adapter.owner_id} owns")
    await wait_for(lambda: not rig.plc.safe_state, "its heartbeat seen by the PLC")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_second_controller_is_refused_alarmed_and_takes_nothing(wire: str) -> None:
    async with open_rig(wire) as rig:
        await owns(rig, rig.adapter)
        alarms = Alarms(None, rig.clock.now)
        second = rig.second_adapter(alarms)
        taken = []

        async def take() -> None:
            async for telegram in second.telegrams():
                taken.append(telegram)

        reader = asyncio.create_task(take())
        source = f"{second.line}/plc-owner"
        try:
            await wait_for(lambda: source in alarms.active, "the second controller's alarm")
            rig.plc.request(1, "CG1", rig.clock.now())
            (request,) = await rig.receive(1)  # the owner still gets every telegram
            await asyncio.sleep(0.3)
            assert taken == []
            assert owner(rig) == rig.adapter.owner_id
            assert not second.connected
            assert (
                f"controller {rig.adapter.owner_id} owns the PLC" in alarms.active[source].message
            )
            assert raised(alarms, source) == [True]  # once, though it retries its claim
            assert request.tracking_id == 1
        finally:
            await second.aclose()
            await asyncio.gather(reader, return_exceptions=True)


@pytest.mark.parametrize("wire", WIRES)
async def test_the_plc_refuses_a_claim_while_its_owner_is_alive(wire: str) -> None:
    """A client that skips the controller's own check (a broken or foreign controller)
    still cannot take the PLC: the claim is refused and ``CtlOwner`` stays."""
    async with open_rig(wire) as rig:
        await owns(rig, rig.adapter)
        intruder = rig.second_adapter().transport
        await intruder.connect(lambda: None)
        try:
            with pytest.raises(LinkRejectedError):
                await intruder.write([(header("ctl_owner"), rig.adapter.owner_id ^ 0x5A5A)])
            assert (await intruder.read([header("ctl_owner")])) == [rig.adapter.owner_id]
        finally:
            await intruder.close()
        assert owner(rig) == rig.adapter.owner_id
        assert rig.plc.claims_refused == 1
        await rig.adapter.aclose()  # a controller that stops releases the PLC
        assert owner(rig) == 0
        await wait_for(lambda: rig.plc.safe_state, "no owner: the PLC's safe state")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_controller_stops_when_the_plc_shows_another_owner(wire: str) -> None:
    """A PLC that let another controller in (it does not enforce the claim): the adapter sees
    ``CtlOwner`` change at its next read and writes nothing more, not even its heartbeat, so
    the PLC goes to its safe state; it claims the PLC again only once that is so (here, the
    other owner never beats: its lease lapses)."""
    async with open_rig(wire) as rig:
        adapter = rig.adapter
        await owns(rig, adapter)
        other = adapter.owner_id ^ 0x5A5A
        rig.plc.mem[header("ctl_owner")] = other
        rig.plc.image.changed(header("ctl_owner"), other)
        await wait_for(lambda: not adapter.connected, "the adapter off the PLC")
        await wait_for(lambda: rig.plc.safe_state, "no more heartbeats: the PLC's safe state")
        assert owner(rig) == other
        await owns(rig, adapter)


@pytest.mark.parametrize("wire", WIRES)
async def test_the_next_controller_takes_over_once_the_owner_leaves_or_stalls(wire: str) -> None:
    """A waiting controller takes the PLC once its owner stalls (quietly: a predecessor that
    died is expected to lapse), and the stalled one, kept off by a live owner, alarms."""
    async with open_rig(wire) as rig:
        first = rig.adapter
        await owns(rig, first)
        alarms = Alarms(None, rig.clock.now)
        second = rig.second_adapter(alarms)
        second.start()
        try:
            await asyncio.sleep(0.5)  # it tries, and is kept off
            assert not second.connected
            first.suspend_heartbeat()  # stalls: the PLC goes to its safe state
            await owns(rig, second)  # and grants the waiting controller's next claim
            assert raised(alarms, f"{second.line}/plc-owner") == []
            first_source = f"{first.line}/plc-owner"
            await wait_for(lambda: first_source in rig.alarms.active, "the first one told")
            first.suspend_heartbeat(False)
            await asyncio.sleep(0.5)
            assert owner(rig) == second.owner_id  # the PLC stays with its live owner
        finally:
            await second.aclose()
        await owns(rig, first)  # released on close: the first one gets it at its next claim
        await wait_for(lambda: first_source not in rig.alarms.active, "its alarm cleared")


async def test_the_plc_grants_only_the_first_of_two_claims_before_its_next_scan() -> None:
    """A granted claim makes the PLC owned at once, not at its next scan: a second
    controller's claim right after it is refused (section 4.5)."""
    async with open_rig("modbus", read=False) as rig:
        plc = rig.plc
        assert plc.owner_id == 0
        assert plc.safe_state
        claim = header("ctl_owner")
        assert plc.written(claim, 101)  # no owner: granted
        assert not plc.written(claim, 202)  # the same instant, no scan in between: refused
        assert plc.owner_id == 101
        assert plc.claims_refused == 1


@pytest.mark.parametrize("wire", WIRES)
async def test_a_displaced_controller_leaves_the_new_owner_in_place_when_it_closes(
    wire: str,
) -> None:
    """A controller whose heartbeat stalled loses the PLC to another; it has not read the
    header since when it closes. Its release must not take the PLC from the live owner."""
    async with open_rig(wire, read=False) as rig:
        first, second = lazy(rig.second_adapter()), lazy(rig.adapter)
        first.start()
        try:
            await owns(rig, first)
            first.suspend_heartbeat()
            await wait_for(lambda: rig.plc.safe_state, "the first one's lease lapsed")
            second.start()
            await owns(rig, second)
            assert first.connected  # it has not looked since it connected
        finally:
            await first.aclose()
        assert owner(rig) == second.owner_id
        await asyncio.sleep(0.3)  # many PLC scans: the PLC stays owned
        assert owner(rig) == second.owner_id
        assert not rig.plc.safe_state

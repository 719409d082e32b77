"""Connected (plant side, sorter port) pairs for the adapter contract suite.

Each rig is a real pair: the in-process sorter, or an emulated PLC behind a real asyncua or
pymodbus server on loopback (port chosen by the OS) with the real controller-side adapter
connected to it. Timings are short but generous enough for a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from controller.alarms import Alarms
from controller.core.clock import Clock, MonotonicClock
from controller.core.domain import DestinationReply, Telegram
from controller.core.settings import Line
from plc_adapters.emulator import EmulatedPlc, PlcTiming
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.layout import Layout
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from plc_adapters.opcua_wire import Credentials, OpcUaTransport, Security
from plc_adapters.shutdown import cancel_and_wait
from plc_adapters.telegrams import RawTelegram
from plc_adapters.wire_sorter import LinkTiming, WireSorter

PROTOCOLS = ("inprocess", "opcua", "modbus")
NAMESPACE = "urn:cargogate:test"
WAIT_S = 30.0  # upper bound for any wait; a loaded CI machine is slow, never this slow

PLC_TIMING = PlcTiming(scan_s=0.002, heartbeat_period_s=0.1, heartbeat_timeout_s=1.5)


def link_timing(protocol: str) -> LinkTiming:
    return LinkTiming(
        poll_s=0.005 if protocol == "modbus" else 0.05,
        heartbeat_period_s=0.1,
        heartbeat_timeout_s=1.5,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        prefetch_slots=4 if protocol == "opcua" else 0,
    )


def line(line_id: str = "L1") -> Line:
    return Line.model_validate(
        {
            "id": line_id,
            "belt": {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5},
            "lanes": [
                {"id": 1, "kind": "release"},
                {"id": 2, "kind": "inspection"},
                {"id": 9, "kind": "exception"},
            ],
        }
    )


async def wait_for(condition: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Rig:
    """A connected pair, plus what the tests observe on each side."""

    protocol: str
    plant: InProcessSorter | EmulatedPlc
    sorter: InProcessSorter | WireSorter
    alarms: Alarms
    clock: Clock
    another: Callable[[Alarms], WireSorter] | None = None
    """Builds one more controller-side adapter for this rig's PLC (wire rigs only)."""
    received: list[Telegram] = field(default_factory=list)
    replies: list[DestinationReply] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def wire(self) -> bool:
        return self.protocol != "inprocess"

    @property
    def plc(self) -> EmulatedPlc:
        assert isinstance(self.plant, EmulatedPlc), "only wire rigs have an emulated PLC"
        return self.plant

    @property
    def adapter(self) -> WireSorter:
        assert isinstance(self.sorter, WireSorter), "only wire rigs have a wire adapter"
        return self.sorter

    def second_adapter(self, alarms: Alarms | None = None) -> WireSorter:
        """Another controller's adapter for the same PLC (not started)."""
        assert self.another is not None, "only wire rigs can connect another adapter"
        return self.another(alarms or Alarms(None, self.clock.now))

    def inject(self, raw: RawTelegram) -> None:
        if isinstance(self.plant, InProcessSorter):
            self.plant.inject(raw, self.clock.now())
        else:
            self.plant.inject(raw)

    async def receive(self, count: int) -> list[Telegram]:
        """Wait until ``count`` telegrams in all have arrived at the controller side."""
        await wait_for(lambda: len(self.received) >= count, f"{count} telegrams")
        return self.received[:count]

    async def restart_server(self, down_s: float = 0.3) -> None:
        await self.plc.stop_server()
        await asyncio.sleep(down_s)
        await self.plc.start()

    async def _read(self) -> None:
        """Take every telegram and acknowledge it at once, as a controller whose journal is
        instant would."""
        async for telegram in self.sorter.telegrams():
            self.received.append(telegram)
            self.sorter.acknowledge(telegram)

    def start_reading(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        await cancel_and_wait(self._reader, "rig telegram reader")


_line_ids = iter(f"T{i}" for i in range(1, 1_000_000))


@asynccontextmanager
async def open_rig(
    protocol: str,
    *,
    opcua_host: OpcUaHost | None = None,
    ring_size: int = 64,
    security: tuple[Security | None, Security | None] = (None, None),
    credentials: tuple[Credentials | None, Credentials | None] = (None, None),
    plc_line: Line | None = None,
    clock: Clock | None = None,
    first_counter: int = 0,
    read: bool = True,
) -> AsyncIterator[Rig]:
    """A connected rig; ``opcua_host`` shares one OPC UA server between tests (one line
    each); ``security`` and ``credentials`` are (server side, client side). ``plc_line``
    (default :func:`line` under a fresh id) and ``clock`` (default monotonic) are the PLC's;
    ``first_counter`` presets the PLC's four ring counters before anything connects. With
    ``read`` False nothing takes the adapter's telegrams (nor starts it): the test does."""
    clock = clock or MonotonicClock()
    alarms = Alarms(None, clock.now)
    line_id = plc_line.id if plc_line is not None else next(_line_ids)
    layout = Layout(ring_size, 8)
    if protocol == "inprocess":
        sorter = InProcessSorter(line_id, alarms=alarms)
        rig = Rig(protocol, sorter, sorter, alarms, clock)
        sorter.on_reply = rig.replies.append
        if read:
            rig.start_reading()
        try:
            yield rig
        finally:
            await rig.stop()
        return
    shared = opcua_host is not None
    if protocol == "opcua":
        host = opcua_host or OpcUaHost(
            "127.0.0.1",
            0,
            NAMESPACE,
            security=security[0],
            credentials=credentials[0],
        )
        image: OpcUaServerImage | ModbusServerImage = OpcUaServerImage(host, line_id, layout)
    else:
        image = ModbusServerImage("127.0.0.1", 0, 1, layout)
    plc = EmulatedPlc(plc_line or line(line_id), layout, image, clock, PLC_TIMING)
    plc.preset_counters(first_counter)
    await plc.start()

    def wire_adapter(alarms: Alarms) -> WireSorter:
        if protocol == "opcua":
            transport: OpcUaTransport | ModbusTransport = OpcUaTransport(
                host.endpoint,
                NAMESPACE,
                line_id,
                layout,
                timeout_s=5.0,
                security=security[1],
                credentials=credentials[1],
            )
        else:
            assert isinstance(image, ModbusServerImage)
            transport = ModbusTransport(
                "127.0.0.1", image.port, 1, layout, timeout_s=2.0, retries=1
            )
        assert clock is not None
        return WireSorter(line_id, transport, layout, clock, alarms, link_timing(protocol))

    adapter = wire_adapter(alarms)
    rig = Rig(protocol, plc, adapter, alarms, clock, wire_adapter)
    plc.on_reply_taken = rig.replies.append  # every reply at the PLC, credited or not
    if read:
        rig.start_reading()
    try:
        yield rig
    finally:
        await rig.stop()
        await adapter.aclose()
        await plc.aclose(stop_server=not shared)

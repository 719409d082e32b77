"""The sorter kits: the in-process sorter, and the wire sorter over OPC UA and over Modbus TCP
in front of the emulated PLC (real asyncua and pymodbus servers on loopback, ports chosen by the
OS). Timings are short but generous enough for a loaded two-core machine."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import plc_adapters
from controller.conformance.harness import (
    EXCEPTION_LANE,
    INSPECTION_LANE,
    RELEASE_LANE,
    SorterContext,
)
from controller.core.clock import Clock, MonotonicClock
from controller.core.domain import DestinationReply, DivertStatus, LaneStatus
from controller.core.settings import Line
from plc_adapters.emulator import EmulatedPlc, PlcTiming
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.layout import Layout, TelegramKind
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from plc_adapters.opcua_wire import OpcUaTransport
from plc_adapters.telegrams import RawTelegram
from plc_adapters.wire_sorter import LinkTiming, WireSorter

PROTOCOLS = ("inprocess", "opcua", "modbus")
NAMESPACE = "urn:cargogate:conformance"
PLC_TIMING = PlcTiming(scan_s=0.002, heartbeat_period_s=0.1, heartbeat_timeout_s=1.5)
REQUEST, CONFIRMATION = TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION
_line_ids = (f"K{i}" for i in itertools.count(1))


def link_timing(protocol: str) -> LinkTiming:
    return LinkTiming(
        poll_s=0.005 if protocol == "modbus" else 0.05,
        heartbeat_period_s=0.1,
        heartbeat_timeout_s=1.5,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        prefetch_slots=4 if protocol == "opcua" else 0,
    )


def kit_line(line_id: str) -> Line:
    """The kit's line: lanes 1 (release), 2 (inspection) and 9 (exception, the default)."""
    return Line.model_validate(
        {
            "id": line_id,
            "belt": {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5},
            "lanes": [
                {"id": RELEASE_LANE, "kind": "release"},
                {"id": INSPECTION_LANE, "kind": "inspection"},
                {"id": EXCEPTION_LANE, "kind": "exception"},
            ],
        }
    )


@dataclass(frozen=True)
class SorterKit:
    """One of this project's sorter adapters, by protocol."""

    protocol: str

    @property
    def checklist(self) -> Path:
        return Path(plc_adapters.__file__).parent / f"sorter-{self.protocol}.conformance.toml"

    def open(
        self, ctx: SorterContext
    ) -> AbstractAsyncContextManager[InProcessHarness | WireHarness]:
        if self.protocol == "inprocess":
            return open_inprocess(ctx)
        return open_wire(self.protocol, ctx)


# --- the in-process sorter -------------------------------------------------------------------


class InProcessPlant:
    """The plant side of the in-process sorter: telegrams are injected as a wire would carry
    them, through the sorter's own checks."""

    def __init__(self, sorter: InProcessSorter, clock: Clock) -> None:
        self.sorter = sorter
        self.clock = clock
        self.replies: list[DestinationReply] = []
        sorter.on_reply = self.replies.append
        self._sent: dict[int, tuple[RawTelegram, float]] = {}

    def now(self) -> float:
        return self.clock.now()

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        seq = self.sorter.request(tracking_id, barcode, scan_time)
        raw = RawTelegram(seq, REQUEST, tracking_id, barcode=barcode.encode())
        self._sent[seq] = (raw, scan_time)
        return seq

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        seq = self.sorter.confirm(tracking_id, lane, status)
        self._sent[seq] = (RawTelegram(seq, CONFIRMATION, tracking_id, lane=lane, status=status), 0)
        return seq

    def set_lane_status(self, lane: int, status: LaneStatus) -> None:
        self.sorter.set_lane_status(lane, status)

    def resend(self, seq: int) -> None:
        raw, scan_time = self._sent[seq]
        self.sorter.inject(raw, scan_time)

    def send_raw_request(self, seq: int | None, tracking_id: int, barcode: bytes) -> int:
        number = self.sorter.next_seq() if seq is None else seq
        self.sorter.inject(RawTelegram(number, REQUEST, tracking_id, barcode=barcode), self.now())
        return number

    def send_raw_confirmation(
        self, seq: int | None, tracking_id: int, lane: int, status: int
    ) -> int:
        number = self.sorter.next_seq() if seq is None else seq
        raw = RawTelegram(number, CONFIRMATION, tracking_id, lane=lane, status=status)
        self.sorter.inject(raw, self.now())
        return number


@dataclass
class InProcessHarness:
    sorter: InProcessSorter
    plant: InProcessPlant

    def telegram_counts(self) -> Mapping[str, int]:
        checker = self.sorter.checker
        return {"duplicates": checker.duplicates, "faults": checker.faults}


@asynccontextmanager
async def open_inprocess(ctx: SorterContext) -> AsyncIterator[InProcessHarness]:
    sorter = InProcessSorter(next(_line_ids), alarms=ctx.alarms)
    try:
        yield InProcessHarness(sorter, InProcessPlant(sorter, MonotonicClock()))
    finally:
        sorter.close()


# --- the wire sorter in front of the emulated PLC --------------------------------------------


class WirePlant:
    """The emulated PLC, serving its memory over OPC UA or Modbus TCP."""

    def __init__(self, plc: EmulatedPlc) -> None:
        self.plc = plc
        self.replies: list[DestinationReply] = []
        plc.on_reply_taken = self.replies.append  # every reply at the PLC, credited or not

    def now(self) -> float:
        return self.plc.clock.now()

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        return self.plc.request(tracking_id, barcode, scan_time)

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        return self.plc.confirm(tracking_id, lane, status)

    def set_lane_status(self, lane: int, status: LaneStatus) -> None:
        self.plc.set_lane_status(lane, status)

    def resend(self, seq: int) -> None:
        self.plc.resend(seq)

    def send_raw_request(self, seq: int | None, tracking_id: int, barcode: bytes) -> int:
        number = self.plc.next_seq() if seq is None else seq
        self.plc.inject(RawTelegram(number, REQUEST, tracking_id, barcode=barcode))
        return number

    def send_raw_confirmation(
        self, seq: int | None, tracking_id: int, lane: int, status: int
    ) -> int:
        number = self.plc.next_seq() if seq is None else seq
        self.plc.inject(RawTelegram(number, CONFIRMATION, tracking_id, lane=lane, status=status))
        return number


@dataclass
class WireHarness:
    """The wire sorter and the emulated PLC, with every control the wire rules drive."""

    sorter: WireSorter
    plant: WirePlant

    @property
    def plc(self) -> EmulatedPlc:
        return self.plant.plc

    def settled(self) -> bool:
        adapter = self.sorter
        return (
            adapter.connected
            and adapter.plc_heartbeat_ok
            and not self.plc.safe_state
            and not adapter.plc_flags
        )

    @property
    def connects(self) -> int:
        return self.sorter.connects

    async def restart_plc_server(self) -> None:
        await self.plc.stop_server()
        await asyncio.sleep(0.3)
        await self.plc.start()

    @property
    def heartbeat_timeout_s(self) -> float:
        return self.sorter.timing.heartbeat_timeout_s

    def suspend_controller_heartbeat(self, suspended: bool) -> None:
        self.sorter.suspend_heartbeat(suspended)

    def freeze_plc_heartbeat(self, frozen: bool) -> None:
        self.plc.freeze_heartbeat(frozen)

    def plc_safe_state(self) -> bool:
        return self.plc.safe_state

    def divert(self, tracking_id: int) -> tuple[int, DivertStatus]:
        return self.plc.lane_for(tracking_id)

    async def stop_plc_server(self) -> None:
        await self.plc.stop_server()

    async def start_plc_server(self) -> None:
        await self.plc.start()

    def mailbox_full(self) -> bool:
        return self.plc.mailbox_full

    def backlog(self) -> int:
        return self.plc.backlog

    def telegram_counts(self) -> Mapping[str, int]:
        checker = self.sorter.checker
        return {"duplicates": checker.duplicates, "faults": checker.faults}


@asynccontextmanager
async def open_wire(protocol: str, ctx: SorterContext) -> AsyncIterator[WireHarness]:
    line_id, clock = next(_line_ids), MonotonicClock()
    layout = Layout(ctx.mailbox_slots, 8)
    image: OpcUaServerImage | ModbusServerImage
    if protocol == "opcua":
        host = OpcUaHost("127.0.0.1", 0, NAMESPACE)
        image = OpcUaServerImage(host, line_id, layout)
    else:
        image = ModbusServerImage("127.0.0.1", 0, 1, layout)
    plc = EmulatedPlc(kit_line(line_id), layout, image, clock, PLC_TIMING)
    await plc.start()
    transport: OpcUaTransport | ModbusTransport
    if isinstance(image, OpcUaServerImage):
        transport = OpcUaTransport(image.endpoint, NAMESPACE, line_id, layout, timeout_s=5.0)
    else:
        transport = ModbusTransport("127.0.0.1", image.port, 1, layout, timeout_s=2.0, retries=1)
    adapter = WireSorter(line_id, transport, layout, clock, ctx.alarms, link_timing(protocol))
    try:
        yield WireHarness(adapter, WirePlant(plc))
    finally:
        await adapter.aclose()
        await plc.aclose()

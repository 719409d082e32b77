"""The soak's floor, run in a process of its own: one emulated PLC per line behind a real
asyncua or pymodbus server, the belts, the flight manifests and the officers at the
inspection stations, all on a scaled clock. ``bench/soak.py`` starts it and reads what it
wrote: every parcel's end on the floor (``fates``) and every officer's answer (``answers``).

The traffic model is stated here once, for the floor and for the check against the journal:
HAWB ``SK000000042`` is parcel 42; its manifest row, X-ray scores (``soak_rig``) and officer's
outcome are drawn from hashes of the HAWB, so any process can recompute them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import json
import logging
import math
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from ctypes import Array, c_longlong
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from controller.core.clock import Clock, ScaledClock
from controller.core.domain import DivertStatus
from controller.core.settings import Line
from plc_adapters import rulebook
from plc_adapters.emulator import EmulatedPlc, PlcTiming
from plc_adapters.layout import Layout, header, u32_diff
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage

PER_LINE_H = 20_000
"""Nominal parcels per hour per line: one simulated hour carries this many per line."""
FLIGHT = 5_000
"""Parcels per flight manifest (one CSV file in the risk-feed folder)."""
FLIGHTS_AHEAD = 2
"""Manifests are written this many flights before their parcels arrive."""
MISS_RATE = 0.005
"""Share of divert passes that miss the divert point (the parcel goes round again)."""
INSPECTION_S = (60.0, 300.0)
"""An officer records the outcome this many simulated seconds after the parcel reaches the
inspection lane (uniform): as many officers as that takes, none waits for a station."""
TICK_S = 0.005
"""Wall seconds between two steps of the floor."""
DRAIN_GRACE_S = 60.0
"""Wall seconds the floor waits, beyond the longest a parcel can take, for the controller to
take the last telegrams before it gives up (they are then still in a PLC mailbox)."""
NAMESPACE = "urn:cargogate:soak"
LAYOUT = Layout(64, 32)
"""The site's link: ring_size 64, lane_slots 32 (the defaults)."""
BELT = {"speed_m_s": 2.0, "induct_to_scan_m": 10, "scan_to_divert_m": 12, "plc_margin_s": 0.5}
LANES = [
    {"id": 1, "kind": "release"},
    {"id": 2, "kind": "inspection"},
    {"id": 9, "kind": "exception"},
]
INSPECTION_LANE = 2
LANE_STATE = {1: "released", 2: "in_inspection", 9: "exception"}
"""The journal state a parcel diverted into each lane ends in (inspection: until the officer)."""
OUTCOME_STATE = {"cleared": "cleared_after_inspection", "seized": "seized", "referred": "referred"}
"""The journal state each officer's outcome ends a parcel in."""

log = logging.getLogger("floor")


def hawb_of(n: int) -> str:
    return f"SK{n:09d}"


def manifest_row(n: int) -> tuple[str, str, str, str, str] | None:
    """Parcel ``n``'s manifest row, or None for the 1 % the manifests miss: 1 % RED, 2 %
    YELLOW, the rest GREEN with a score under the policy's release threshold."""
    hawb = hawb_of(n)
    draw = zlib.crc32(b"risk:" + hawb.encode())
    bucket = draw % 1000
    if bucket < 10:
        return None
    channel, score = "GREEN", (draw // 1000 % 250) / 1000
    if bucket < 20:
        channel, score = "RED", 0.9
    elif bucket < 40:
        channel, score = "YELLOW", 0.45
    return hawb, channel, f"{score:.3f}", "apparel", f"SK{n // FLIGHT:05d}"


def officer_outcome(n: int) -> str:
    """What the officer finds in parcel ``n``: 3 % seized, 7 % referred, the rest cleared."""
    draw = zlib.crc32(b"officer:" + hawb_of(n).encode()) % 100
    return "seized" if draw < 3 else "referred" if draw < 10 else "cleared"


def write_flight(folder: Path, flight: int, parcels: int) -> None:
    """Flight ``flight``'s manifest (if it carries any of the ``parcels``), written under a
    hidden name and renamed into place: the file feed skips hidden files."""
    first = flight * FLIGHT
    if first >= parcels:
        return
    path = folder / f"flight-{flight:06d}.csv"
    hidden = folder / f".{path.name}"
    with hidden.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("hawb", "channel", "score", "declared_goods", "flight"))
        for n in range(first, min(first + FLIGHT, parcels)):
            row = manifest_row(n)
            if row is not None:
                writer.writerow(row)
    hidden.replace(path)


def protocols(lines: int, protocol: str) -> dict[str, str]:
    """Each line's protocol; ``mixed`` puts the first half on OPC UA, the rest on Modbus."""
    ids = [f"L{i + 1}" for i in range(lines)]
    if protocol != "mixed":
        return dict.fromkeys(ids, protocol)
    half = (lines + 1) // 2
    return {line: "opcua" if i < half else "modbus" for i, line in enumerate(ids)}


def core_line(line: str) -> dict[str, Any]:
    """A line as the core's settings describe it (the site file adds its sorter)."""
    return {"id": line, "belt": BELT, "lanes": LANES}


@dataclass(frozen=True)
class FloorSpec:
    """What the floor process needs (picklable)."""

    protocols: dict[str, str]
    speed: float
    parcels: int
    manifests: Path
    fates: Path
    answers: Path
    seed: int = 7


@dataclass
class Belt:
    """One line: its PLC, its next arrival, the parcels between scan and divert, and those
    going round the loop (both queues in time order: every pass takes as long)."""

    plc: EmulatedPlc
    rng: random.Random
    next_at: float
    next_tid: int = 1
    on_belt: deque[tuple[float, int, int, int]] = field(default_factory=deque)
    """(divert at, tracking id, parcel, laps so far)"""
    looping: deque[tuple[float, int, int, int]] = field(default_factory=deque)
    """(scanned again at, tracking id, parcel, laps so far)"""
    safe_states: int = 0
    in_safe_state: bool = False


Row = Callable[[Iterable[object]], object]
"""A CSV writer's ``writerow``."""


class Officers:
    """The inspection stations' terminal: one connection to the controller's command
    socket (as ``cargogate inspect`` uses), commands written as they fall due, the answers
    read in order and written to ``answer`` (parcel, outcome, accepted)."""

    def __init__(self, path: Path, answer: Row) -> None:
        self.path = path
        self.answer = answer
        self.pending: deque[tuple[int, str]] = deque()
        self.accepted = 0
        self.refused = 0
        self.refusals: list[str] = []
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(str(self.path))
        self._reader = asyncio.create_task(self._read(reader))

    def record(self, n: int) -> None:
        """The officer at the station opened parcel ``n``: record the outcome."""
        assert self._writer is not None
        outcome = officer_outcome(n)
        command = {"command": "inspect", "hawb": hawb_of(n), "outcome": outcome}
        self._writer.write(json.dumps(command).encode() + b"\n")
        self.pending.append((n, outcome))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            n, outcome = self.pending.popleft()
            answer = json.loads(line)
            accepted = answer.get("accepted") is True
            if accepted:
                self.accepted += 1
            else:
                self.refused += 1
                if len(self.refusals) < 5:
                    self.refusals.append(f"{hawb_of(n)}: {answer}")
            self.answer((n, outcome, int(accepted)))

    async def close(self) -> None:
        """Close the connection once every answer came (the channel answers each line)."""
        if self._writer is not None:
            await self._writer.drain()
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reader is not None:
            with contextlib.suppress(OSError):  # answers still owed are dropped
                await self._reader


class Floor:
    """Every line's PLC, belt and inspection station, stepped every :data:`TICK_S`; each
    parcel's end on the floor goes to ``fate`` (parcel, line, tracking id, lane, divert
    status, laps)."""

    def __init__(
        self, spec: FloorSpec, plcs: Mapping[str, EmulatedPlc], clock: Clock, fate: Row
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.fate = fate
        line = Line.model_validate(core_line("L"))
        self.transit_s = line.belt.scan_to_divert_m / line.belt.speed_m_s
        self.loop_s = line.belt.loop_s
        self.longest_s = (
            self.transit_s + line.lap_limit * (self.loop_s + self.transit_s) + INSPECTION_S[1]
        )
        """Simulated seconds from a parcel's scan to its last event on the floor, at most."""
        self.rate = PER_LINE_H / 3600.0
        now = clock.now()
        self.belts = {
            line_id: Belt(plc, random.Random(spec.seed + i), now)
            for i, (line_id, plc) in enumerate(plcs.items())
        }
        self.officers: Officers | None = None
        self.inspections: list[tuple[float, int]] = []  # heap: (outcome due, parcel)
        self.inducted = 0
        self.finished = 0
        """Parcels whose story on the floor has ended (an officer's outcome sent included)."""
        self.missed = 0
        self.defaulted = 0
        self.next_flight = FLIGHTS_AHEAD + 1  # the run wrote the first flights before start

    def step(self) -> None:
        """Everything due by now: arrivals at the scan, rescans after a lap, diverts (where
        the PLC logic picks the lane), officers' outcomes."""
        now = self.clock.now()
        for line_id, belt in self.belts.items():
            plc = belt.plc
            while belt.next_at <= now and self.inducted < self.spec.parcels:
                n = self.inducted
                self.inducted += 1
                tid, belt.next_tid = belt.next_tid, belt.next_tid + 1
                plc.request(tid, hawb_of(n), now)
                belt.on_belt.append((now + self.transit_s, tid, n, 0))
                belt.next_at += belt.rng.expovariate(self.rate)
                if n % FLIGHT == 0:
                    self._manifests(n // FLIGHT)
            while belt.looping and belt.looping[0][0] <= now:
                _, tid, n, laps = belt.looping.popleft()
                plc.request(tid, hawb_of(n), now)
                belt.on_belt.append((now + self.transit_s, tid, n, laps))
            while belt.on_belt and belt.on_belt[0][0] <= now:
                self._divert(line_id, belt, now)
            if plc.safe_state and not belt.in_safe_state:
                belt.safe_states += 1
            belt.in_safe_state = plc.safe_state
        assert self.officers is not None
        while self.inspections and self.inspections[0][0] <= now:
            _, n = heapq.heappop(self.inspections)
            self.officers.record(n)
            self.finished += 1

    def _divert(self, line_id: str, belt: Belt, now: float) -> None:
        _, tid, n, laps = belt.on_belt.popleft()
        lane, status = belt.plc.lane_for(tid, missed=belt.rng.random() < MISS_RATE)
        belt.plc.confirm(tid, lane, status)
        if rulebook.recirculates(status):
            self.missed += 1
            belt.looping.append((now + self.loop_s, tid, n, laps + 1))
            return
        self.fate((n, line_id, tid, lane, int(status), laps))
        if status is DivertStatus.DEFAULTED:
            self.defaulted += 1
        if lane == INSPECTION_LANE and status is DivertStatus.DIVERTED:
            heapq.heappush(self.inspections, (now + belt.rng.uniform(*INSPECTION_S), n))
        else:
            self.finished += 1

    def _manifests(self, flight: int) -> None:
        """Write the manifest :data:`FLIGHTS_AHEAD` flights ahead; delete the one three
        flights back (its results stay in the controller's risk book)."""
        while self.next_flight <= flight + FLIGHTS_AHEAD:
            write_flight(self.spec.manifests, self.next_flight, self.spec.parcels)
            self.next_flight += 1
        (self.spec.manifests / f"flight-{flight - 3:06d}.csv").unlink(missing_ok=True)

    @property
    def drained(self) -> bool:
        """Every parcel inducted and ended on the floor, every officer answered, and every
        telegram taken and acknowledged by the controller (none left in a PLC mailbox)."""
        officers = self.officers
        return (
            self.inducted >= self.spec.parcels
            and not self.inspections
            and (officers is None or not officers.pending)
            and all(not b.on_belt and not b.looping for b in self.belts.values())
            and self.mailbox_left() == 0
        )

    def mailbox_left(self) -> int:
        """Telegrams a PLC still holds: queued, or in its ring and not acknowledged."""
        written, acked = header("tel_write"), header("tel_ack")
        return sum(
            b.plc.backlog + u32_diff(_int(b.plc.mem[written]), _int(b.plc.mem[acked]))
            for b in self.belts.values()
        )

    def stats(self) -> dict[str, Any]:
        plcs = [b.plc for b in self.belts.values()]
        officers = self.officers
        return {
            "inducted": self.inducted,
            "missed_diverts": self.missed,
            "plc_defaulted": self.defaulted,
            "plc_replies": sum(p.replies_received for p in plcs),
            "plc_replies_late": sum(p.replies_late for p in plcs),
            "plc_replies_invalid": sum(p.replies_invalid for p in plcs),
            "plc_replies_unmatched": sum(p.replies_unmatched for p in plcs),
            "plc_telegrams_dropped": sum(p.telegrams_dropped for p in plcs),
            "plc_safe_states": sum(b.safe_states for b in self.belts.values()),
            "plc_mailbox_left": self.mailbox_left(),
            "officer_accepted": officers.accepted if officers else 0,
            "officer_refused": officers.refused if officers else 0,
            "officer_refusals": officers.refusals if officers else [],
        }


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def floor_process(spec: FloorSpec, conn: Connection, progress: Array[c_longlong]) -> None:
    """The floor's process: serve, wait for the controller, carry the parcels, report.

    Talks to the run over ``conn``: sends the endpoints, then "linked" once every PLC sees
    the controller's heartbeat; receives the command socket's path (go), sends its counts
    once drained, and stops serving when told. ``progress`` holds (inducted, finished).
    """
    logging.basicConfig(level=logging.WARNING, format="floor: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # "no encryption" for each client
    asyncio.run(_floor(spec, conn, progress))


async def _floor(spec: FloorSpec, conn: Connection, progress: Array[c_longlong]) -> None:
    clock = ScaledClock(spec.speed)
    plcs: dict[str, EmulatedPlc] = {}
    for line_id, protocol in spec.protocols.items():
        image: OpcUaServerImage | ModbusServerImage
        if protocol == "opcua":
            image = OpcUaServerImage(OpcUaHost("127.0.0.1", 0, NAMESPACE), line_id, LAYOUT)
        else:
            image = ModbusServerImage("127.0.0.1", 0, 1, LAYOUT)
        line = Line.model_validate(core_line(line_id))
        plcs[line_id] = EmulatedPlc(line, LAYOUT, image, clock, PlcTiming())
    async with contextlib.AsyncExitStack() as stack:
        for plc in plcs.values():
            await stack.enter_async_context(plc)
        conn.send({line: plc.image.endpoint for line, plc in plcs.items()})
        beat = header("ctl_heartbeat")
        first = {line: plc.mem[beat] for line, plc in plcs.items()}
        while any(plc.mem[beat] == first[line] for line, plc in plcs.items()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # until the controller's heartbeat reaches every PLC
        conn.send("linked")
        socket_path = await asyncio.to_thread(conn.recv)
        with spec.fates.open("w", newline="") as fates, spec.answers.open("w", newline="") as ans:
            floor = Floor(spec, plcs, clock, csv.writer(fates).writerow)
            floor.officers = Officers(Path(socket_path), csv.writer(ans).writerow)
            await floor.officers.open()
            drain_by = math.inf  # wall time: a stuck link must not hang the run
            while not floor.drained and time.monotonic() < drain_by:
                floor.step()
                progress[0], progress[1] = floor.inducted, floor.finished
                if floor.inducted >= spec.parcels and drain_by == math.inf:
                    drain_by = time.monotonic() + floor.longest_s / spec.speed + DRAIN_GRACE_S
                await asyncio.sleep(TICK_S)
            if not floor.drained:
                log.warning("gave up waiting: %d telegram(s) left", floor.mailbox_left())
            await floor.officers.close()
            stats = {**floor.stats(), "drain_timed_out": not floor.drained}
        conn.send(stats)
        await asyncio.to_thread(conn.recv)  # the controller has stopped: stop serving

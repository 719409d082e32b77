"""The twin as adapters: the controller's ports implemented by the simulated plant.

:class:`PlantSideLink` plays the PLC side of every line through
:class:`plc_adapters.plant_side.PlantSide` only, so the in-process sorter and the OPC UA and
Modbus PLC emulations are interchangeable under it. :class:`TwinXray` and :class:`TwinReview`
are the scanner and the review room as :class:`controller.core.ports.XrayPort` and
:class:`controller.core.ports.ReviewQueue`; :class:`RecordingJournal` keeps entries in memory.
All of them wait on whatever :class:`controller.core.clock.Clock` the controller uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from controller.core.clock import Clock
from controller.core.commands import CommandResult, RecordInspection
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    InspectionOutcome,
    JournalEntry,
    LaneStatus,
    ReviewOutcome,
    XrayResult,
    XrayStatus,
)
from controller.core.ports import OperatorCommands, ReviewRequest
from controller.risk.book import RiskBook
from plc_adapters.plant_side import PlantSide
from simulation.plant import Item, Plant

InspectionSink = Callable[[str, InspectionOutcome], object]
"""Where an officer's inspection result goes (:class:`InspectionStations`)."""


class InspectionStations:
    """The twin's inspection officers as users of the command port: each result they record
    is a :class:`RecordInspection` command, journalled before it closes the parcel."""

    def __init__(self, commands: OperatorCommands | None = None, user: str = "twin-station"):
        self.commands = commands
        self.user = user
        self._pending: set[asyncio.Task[CommandResult]] = set()

    def __call__(self, hawb: str, outcome: InspectionOutcome) -> None:
        if self.commands is None:
            return
        command = RecordInspection(user=self.user, hawb=hawb, outcome=outcome)
        task = asyncio.get_running_loop().create_task(self.commands.execute(command))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


class PlantSideLink:
    """Implements :class:`simulation.plant.ControlLink` over one PlantSide per line.

    Risk results are added to ``book`` as each parcel arrives (manifests come before the
    aircraft lands; the twin loads them just in time to keep memory flat).
    """

    def __init__(
        self,
        sides: Mapping[str, PlantSide],
        inspection_sink: InspectionSink,
        book: RiskBook | None = None,
    ) -> None:
        self.sides = sides
        self.inspection_sink = inspection_sink
        self.book = book
        self.scanner: Callable[[Item], None] | None = None
        """Called at each scan when the twin hands images to scanner intake."""
        self._plant: Plant | None = None

    def attach(self, plant: Plant) -> None:
        self._plant = plant
        for side in self.sides.values():
            side.on_reply = self._on_reply

    def arriving(self, item: Item) -> None:
        if self.book is not None and item.spec.risk is not None:
            self.book.add([item.spec.risk])

    def request(self, item: Item, now: float) -> None:
        if self.scanner is not None:
            self.scanner(item)
        self.sides[item.spec.line].request(item.tracking_id, item.barcode, now)

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None:
        self.sides[item.spec.line].confirm(item.tracking_id, lane, status)

    def inspected(self, item: Item, outcome: InspectionOutcome, now: float) -> None:
        self.inspection_sink(item.spec.hawb, outcome)

    def lane_status(self, line: str, lane: int, status: LaneStatus) -> None:
        self.sides[line].set_lane_status(lane, status)

    def _on_reply(self, reply: DestinationReply) -> None:
        if self._plant is not None:
            self._plant.reply(reply.line, reply.tracking_id, reply.lane, reply.reason.name)


class TwinXray:
    """The scanner and its model: scores from the detector model, after the scan latency."""

    def __init__(self, plant: Plant, clock: Clock, model_version: str) -> None:
        self.plant = plant
        self.clock = clock
        self.model_version = model_version

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        item = self.plant.on_plant.get((line, tracking_id))
        if item is None:
            return XrayResult.fault(XrayStatus.MISSING, "no image for this tracking id")
        await self.clock.sleep_until(item.scan_s + item.xray_latency_s)
        return XrayResult(XrayStatus.OK, item.spec.scores, self.model_version)


class TwinReview:
    """The review room as the controller's ReviewQueue; a cancelled review frees its officer."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        item = self.plant.on_plant.get((request.line, request.tracking_id))
        if item is None:
            return ReviewOutcome.INSPECT
        future: asyncio.Future[ReviewOutcome] = asyncio.get_running_loop().create_future()

        def done(outcome: ReviewOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        ticket = self.plant.review.submit(item, request.deadline, done)
        try:
            return await future
        except asyncio.CancelledError:
            self.plant.review.withdraw(ticket)
            raise


class RecordingJournal:
    """The journal port in memory: the twin's audit trail (``keep=False`` only counts)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.entries: list[JournalEntry] = []
        self.rows = 0

    async def write(self, entries: list[JournalEntry]) -> None:
        self.rows += len(entries)
        if self.keep:
            self.entries.extend(entries)

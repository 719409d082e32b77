"""A small in-process plant for demos: parcels, sorters, scanner, officers — no SimPy.

It plays the PLC side of each line's :class:`plc_adapters.inprocess.InProcessSorter`, publishes
manifest risk results ahead of arrival, supplies X-ray scores from each parcel's ground truth,
staffs the on-screen review room and the inspection stations. The controller runs against it
through the same ports as in production; the full digital twin lives in the SimPy model.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from controller.clock import Clock
from controller.config import SiteConfig, StandinPlant
from controller.core import Controller
from controller.domain import (
    DestinationReply,
    DivertStatus,
    InspectionOutcome,
    LaneKind,
    ReviewOutcome,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.ports import ReviewRequest
from controller.risk import RiskBook
from plc_adapters.inprocess import InProcessSorter

THREATS = ("firearm", "blade", "narcotics_organic")
CLASSES = ("firearm", "blade", "lithium_battery", "liquid_container", "narcotics_organic")
LANE_TO_STATION_S = 10.0  # from the inspection divert down the lane to a station
GOODS = ("clothing", "books", "cosmetics", "electronics", "toys", "shoes", "phone accessories")


@dataclass(frozen=True, slots=True)
class Truth:
    hawb: str
    threat: str | None
    goods: str


class Plant:
    """The stand-in plant for every line of ``site``; call :meth:`attach` then :meth:`run`."""

    def __init__(self, site: SiteConfig, settings: StandinPlant, clock: Clock, book: RiskBook):
        self.site = site
        self.settings = settings
        self.clock = clock
        self.book = book
        self.rng = random.Random(settings.seed)
        self.sorters = {
            line.id: InProcessSorter(line.id, on_reply=self._on_reply) for line in site.lines
        }
        self.truth: dict[str, Truth] = {}
        self._replies: dict[tuple[str, int], DestinationReply] = {}
        self._ids = itertools.count(1)
        self._officers = asyncio.Semaphore(max(settings.officers, 1))
        self._stations = asyncio.Semaphore(settings.inspection_stations)
        self._tasks: set[asyncio.Task[None]] = set()
        self.controller: Controller | None = None
        self.inducted = 0
        self.threats_inducted = 0
        self.threats_released = 0

    def attach(self, controller: Controller) -> None:
        """Inspection results go back through the controller, as officers' terminals would."""
        self.controller = controller

    async def run(self, duration_s: float | None = None) -> None:
        """Induct parcels on every line until ``duration_s`` plant seconds have passed."""
        end = None if duration_s is None else self.clock.now() + duration_s
        async with asyncio.TaskGroup() as group:
            for line in self.site.lines:
                group.create_task(self._induct(line.id, end))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sorter in self.sorters.values():
            sorter.close()

    # --- scanner and officers (the controller's X-ray and review ports) --------------------

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        await self.clock.sleep_until(self.clock.now() + self.rng.uniform(0.15, 0.6))
        truth = self.truth.get(hawb)
        if truth is None:
            return XrayResult.fault(XrayStatus.MISSING, "no image for this parcel")
        scores = {name: self.rng.uniform(0.0, 0.04) for name in CLASSES}
        if truth.threat is not None:
            scores[truth.threat] = self.rng.uniform(0.2, 0.99)  # some look ambiguous
        if "electronics" in truth.goods or "phone" in truth.goods:
            scores["lithium_battery"] = self.rng.uniform(0.6, 0.95)
        return XrayResult(XrayStatus.OK, scores, "standin-scores")

    async def review(self, request: ReviewRequest) -> ReviewOutcome:
        async with self._officers:
            if self.settings.officers == 0:
                await asyncio.Event().wait()  # nobody in the review room
            delay = self.rng.expovariate(1 / self.settings.review_s)
            await self.clock.sleep_until(self.clock.now() + delay)
        truth = self.truth.get(request.hawb)
        return ReviewOutcome.INSPECT if truth is None or truth.threat else ReviewOutcome.CLEAR

    # --- the belt ----------------------------------------------------------------------------

    async def _induct(self, line: str, end: float | None) -> None:
        per_line = self.settings.parcels_per_h / 3600 / len(self.site.lines)
        next_at = self.clock.now()
        while end is None or next_at < end:
            next_at += self.rng.expovariate(per_line)
            await self.clock.sleep_until(next_at)
            self._spawn(self._carry(line, self._new_parcel()))

    def _new_parcel(self) -> Truth:
        s = self.settings
        threat = self.rng.choice(THREATS) if self.rng.random() < s.threat_rate else None
        truth = Truth(f"CG{next(self._ids):09d}", threat, self.rng.choice(GOODS))
        self.truth[truth.hawb] = truth
        self.inducted += 1
        self.threats_inducted += threat is not None
        # the manifest's risk result, loaded ahead of arrival; it sees threats only partly
        if self.rng.random() < 0.98:
            suspicious = threat is not None and self.rng.random() < 0.6
            channel = self._channel(suspicious)
            score = self.rng.uniform(0.6, 0.95) if suspicious else self.rng.uniform(0.0, 0.25)
            self.book.add([RiskResult(truth.hawb, channel, score, truth.goods)])
        return truth

    def _channel(self, suspicious: bool) -> RiskChannel:
        if suspicious:
            return RiskChannel.RED
        return RiskChannel.YELLOW if self.rng.random() < 0.08 else RiskChannel.GREEN

    async def _carry(self, line_id: str, truth: Truth) -> None:
        line = next(line for line in self.site.lines if line.id == line_id)
        sorter = self.sorters[line_id]
        tracking_id = self.rng.randrange(1, 2**32)
        belt = line.belt
        await self.clock.sleep_until(self.clock.now() + belt.induct_to_scan_s)
        no_read = self.rng.random() < self.settings.no_read_rate
        lap = 0
        while True:
            scanned = self.clock.now()
            sorter.request(tracking_id, "" if no_read else truth.hawb, scanned)
            await self.clock.sleep_until(scanned + belt.scan_to_divert_m / belt.speed_m_s)
            reply = self._replies.pop((line_id, tracking_id), None)
            if reply is None:
                default = line.lanes_of(LaneKind.EXCEPTION)[0].id
                sorter.confirm(tracking_id, default, DivertStatus.DEFAULTED)
                kind = LaneKind.EXCEPTION
                break
            if lap < line.lap_limit and self.rng.random() < 0.01:  # the tray did not tip
                sorter.confirm(tracking_id, reply.lane, DivertStatus.MISSED)
                await self.clock.sleep_until(self.clock.now() + belt.loop_s)
                lap += 1
                continue
            sorter.confirm(tracking_id, reply.lane, DivertStatus.DIVERTED)
            kind = next(lane.kind for lane in line.lanes if lane.id == reply.lane)
            break
        if kind is LaneKind.RELEASE:
            self.threats_released += truth.threat is not None
        elif kind is LaneKind.INSPECTION:
            await self._inspect(truth)

    async def _inspect(self, truth: Truth) -> None:
        await self.clock.sleep_until(self.clock.now() + LANE_TO_STATION_S)
        async with self._stations:
            delay = self.rng.expovariate(1 / self.settings.inspection_s)
            await self.clock.sleep_until(self.clock.now() + delay)
        outcome = InspectionOutcome.SEIZED if truth.threat else InspectionOutcome.CLEARED
        # an officer's terminal retries while the divert confirmation is still on its way
        for _attempt in range(60):
            if self.controller is None or self.controller.record_inspection(truth.hawb, outcome):
                return
            await self.clock.sleep_until(self.clock.now() + 1.0)

    def _on_reply(self, reply: DestinationReply) -> None:
        self._replies[(reply.line, reply.tracking_id)] = reply

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
